"""The shell without a cluster: fake backends and fake clients over socket pairs.

Everything here runs the real data plane -- ``Reactor``, ``BackendConnection``, ``SharedPool``,
``Router``, ``ClientSession`` -- in the test's own trio run. What is fake is only the other end of
each socket:

* a **fake backend** (``FakeBackend``) is one end of a ``socket.socketpair()``; the other end is
  handed to a real ``BackendConnection`` with ``conn.attach(sock)`` (past the connect and the
  handshake, as ``BackendConnection.connect`` would). The test reads what the proxy wrote and
  writes raw reply bytes, in chunks of any size;
* a **fake client** (``Peer``) is one end of a socket pair whose other end a ``ClientSession``
  serves, registered in the reactor as ``ProxyServer.admit`` does it.

Two set-ups:

* ``backend_bench()``: a reactor and backend connections reporting to a ``RecordingOwner`` (the
  ``rproxy.net.backend.Owner`` seam), with requests whose replies go to a ``ReplySink``: the
  backend connection alone;
* ``open_shell()``: a ``Shell``, the ``SessionHost`` of the sessions, with the real
  ``SharedPool`` and ``Router`` and a ``FakeNodes`` (``rproxy.net.pool.Nodes``) whose connections
  are fake backends, made on demand per address; a lost connection is replaced in the router
  by a new fake backend, as the cluster manager does.

Synchronisation, without sleeps: a write to a socket pair is in the other end's receive queue
when ``send`` returns, and the reactor handles what it reads and flushes what that produced
in one synchronous step. So "the proxy has consumed these bytes" (nothing unread on its end:
``FIONREAD``) means it has also acted on them, and what it sent in answer is already readable.
Every wait polls a condition under a deadline (``wait_until``) and fails with a message.

Resource handling: every socket made here is registered in ``Sockets`` and closed at the end
(after ``trio.lowlevel.notify_closing``); the proxy's ends are closed by the code under test
first (sessions and backend connections own them), then again harmlessly here.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import socket
import struct
import termios
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from rproxy.core.acl import Acl
from rproxy.core.client import ClientInfo
from rproxy.core.commands import CommandTable
from rproxy.core.config import Config
from rproxy.core.request import REPLY, Request, new_request
from rproxy.core.resp import encode_command
from rproxy.core.slots import SLOTS, key_slot
from rproxy.core.hotspots import HotSpots
from rproxy.core.slowlog import Latency, SlowLog
from rproxy.core.stats import Stats
from rproxy.core.topology import Addr
from rproxy.net.backend import CLOSED, BackendConnection, Owner
from rproxy.net.lease import LeasePool
from rproxy.net.pool import SharedPool
from rproxy.net.reactor import EPOLLIN, Reactor
from rproxy.net.router import Router
from rproxy.net.session import ClientSession

DEADLINE_S = 5.0

A: Addr = ("127.0.0.1", 7001)
B: Addr = ("127.0.0.1", 7002)
C: Addr = ("127.0.0.1", 7003)


def cmd(*args: bytes | str | int) -> bytes:
    """One command as a client (and the proxy, forwarding it) encodes it."""
    return encode_command([a if isinstance(a, bytes) else str(a).encode() for a in args])


def slot_of(key: bytes | str) -> int:
    return key_slot(key if isinstance(key, bytes) else key.encode())


async def wait_until(cond: Callable[[], object], what: str, timeout: float = DEADLINE_S) -> None:
    """Let the reactor run until ``cond()`` holds; fail after ``timeout`` seconds."""
    try:
        with trio.fail_after(timeout):
            spins = 0
            while not cond():
                spins += 1
                await trio.sleep(0 if spins < 200 else 0.001)
    except trio.TooSlowError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


def unread(sock: socket.socket) -> int:
    """Bytes in ``sock``'s receive queue (0 once it is closed)."""
    if sock.fileno() == -1:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", raw)[0])


class Sockets:
    """Every socket a test opens; ``close_all`` closes them."""

    def __init__(self) -> None:
        self._all: list[socket.socket] = []

    def pair(self) -> tuple[socket.socket, socket.socket]:
        """(the test's end, the proxy's end), both non-blocking."""
        mine, theirs = socket.socketpair()
        for s in (mine, theirs):
            s.setblocking(False)
            self._all.append(s)
        return mine, theirs

    def close_all(self) -> None:
        for s in self._all:
            if s.fileno() != -1:
                trio.lowlevel.notify_closing(s)
            s.close()
        self._all.clear()


class Peer:
    """The test's end of a socket pair (``sock``); the proxy serves ``far``."""

    def __init__(self, sock: socket.socket, far: socket.socket, name: str) -> None:
        self.sock = sock
        self.far = far
        self.name = name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # -- writing -----------------------------------------------------------------------------
    def send_now(self, data: bytes) -> None:
        """Write ``data`` in one ``send`` without yielding: the proxy reads it in one read."""
        n = self.sock.send(data)
        assert n == len(data), f"{self.name}: the socket took {n} of {len(data)} bytes"

    async def send(self, data: bytes, settle: bool = True) -> None:
        """Write all of ``data`` (waiting for room if needed); with ``settle``, wait until the
        proxy has read and handled it."""
        view = memoryview(data)
        try:
            with trio.fail_after(DEADLINE_S):
                while view:
                    try:
                        view = view[self.sock.send(view):]
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(self.sock)
        except trio.TooSlowError:
            raise AssertionError(
                f"{self.name}: the proxy took {len(data) - len(view)} of {len(data)} bytes "
                f"within {DEADLINE_S} s") from None
        if settle:
            await self.settle()

    async def settle(self) -> None:
        """Wait until the proxy has read everything written to it (and so acted on it)."""
        await wait_until(lambda: unread(self.far) == 0, f"the proxy to read from {self.name}")

    async def send_pieces(self, data: bytes, cuts: Iterable[int]) -> None:
        """Write ``data`` cut at the offsets ``cuts``: one read of the proxy per piece."""
        start = 0
        for cut in [*sorted(set(cuts)), len(data)]:
            if start < cut <= len(data):
                await self.send(data[start:cut])
                start = cut

    async def send_bytewise(self, data: bytes,
                            after_each: Callable[[int], object] | None = None) -> None:
        """Write ``data`` one byte at a time, each read by the proxy on its own;
        ``after_each(n)`` runs after the first ``n`` bytes have been handled."""
        for i in range(len(data)):
            await self.send(data[i:i + 1])
            if after_each is not None:
                after_each(i + 1)

    # -- reading -----------------------------------------------------------------------------
    async def recv_exactly(self, n: int) -> bytes:
        buf = bytearray()
        try:
            with trio.fail_after(DEADLINE_S):
                while len(buf) < n:
                    try:
                        chunk = self.sock.recv(n - len(buf))
                    except BlockingIOError:
                        await trio.lowlevel.wait_readable(self.sock)
                        continue
                    if not chunk:
                        raise AssertionError(
                            f"{self.name}: EOF after {bytes(buf)!r}, expected {n} bytes")
                    buf += chunk
        except trio.TooSlowError:
            raise AssertionError(
                f"{self.name}: got only {bytes(buf)!r} of {n} bytes within {DEADLINE_S} s"
            ) from None
        return bytes(buf)

    async def expect(self, data: bytes, eof: bool = False) -> None:
        """Exactly ``data`` arrives, and nothing after it (with ``eof``: then the end)."""
        got = await self.recv_exactly(len(data))
        assert got == data, f"{self.name} got {got!r}"
        if eof:
            await self.expect_eof()
        else:
            self.assert_nothing()

    def drain(self) -> bytes:
        """Whatever has arrived (without waiting)."""
        buf = bytearray()
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except BlockingIOError:
                return bytes(buf)
            if not chunk:
                return bytes(buf)
            buf += chunk

    def assert_nothing(self) -> None:
        """Nothing is waiting to be read (and the connection is not at EOF)."""
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        raise AssertionError(f"{self.name}: unexpected {'EOF' if not data else repr(data)}")

    async def expect_eof(self, reset_ok: bool = False) -> None:
        """The proxy closed its end, with nothing more sent. ``reset_ok``: a reset counts as
        the end too (the proxy's end was closed with bytes it had not read)."""
        try:
            with trio.fail_after(DEADLINE_S):
                while True:
                    try:
                        data = self.sock.recv(1 << 16)
                    except BlockingIOError:
                        await trio.lowlevel.wait_readable(self.sock)
                        continue
                    except ConnectionResetError:
                        if reset_ok:
                            return
                        raise
                    assert data == b"", f"{self.name}: got {data!r} where EOF was expected"
                    return
        except trio.TooSlowError:
            raise AssertionError(f"{self.name}: no EOF within {DEADLINE_S} s") from None

    def close(self) -> None:
        if self.sock.fileno() != -1:
            trio.lowlevel.notify_closing(self.sock)
        self.sock.close()


class FakeBackend(Peer):
    """A backend node played by the test: ``conn`` is the proxy's real connection to it."""

    def __init__(self, sock: socket.socket, far: socket.socket, conn: BackendConnection) -> None:
        super().__init__(sock, far, f"backend {conn.addr[0]}:{conn.addr[1]}")
        self.conn = conn

    def attach(self) -> None:
        """The connection comes up (connected, past the handshake) on the socket pair."""
        self.conn.attach(self.far)

    async def expect_commands(self, *commands: Sequence[bytes | str | int]) -> None:
        await self.expect(b"".join(cmd(*c) for c in commands))


# -- the backend connection alone --------------------------------------------------------------
@dataclass
class Lost:
    conn: BackendConnection
    written: list[Request]
    queued: list[Request]
    exc: BaseException
    connect_failed: bool


class RecordingOwner:
    """An ``Owner`` that records what the connection reports. ``take_errors`` says whether it
    takes care of an error reply itself (True) or lets it be delivered (False)."""

    def __init__(self, take_errors: bool | Callable[[bytes], bool] = False) -> None:
        self.take_errors = take_errors
        self.errors: list[tuple[BackendConnection, Request, bytes]] = []
        self.connected: list[BackendConnection] = []
        self.lost: list[Lost] = []

    def on_error_reply(self, conn: BackendConnection, req: Request, raw: bytes) -> bool:
        self.errors.append((conn, req, raw))
        take = self.take_errors
        return bool(take(raw)) if callable(take) else take

    def on_connected(self, conn: BackendConnection) -> None:
        self.connected.append(conn)

    def on_lost(self, conn: BackendConnection, written: list[Request], queued: list[Request],
                exc: BaseException, connect_failed: bool) -> None:
        self.lost.append(Lost(conn, list(written), list(queued), exc, connect_failed))


class ReplySink:
    """The client side of requests made by a test (a ``ReplyOwner``): the reactor flushes it
    like a session; it records the order in which its requests got their replies."""

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        self.dirty = False
        self.requests: list[Request] = []
        self.completion_order: list[int] = []
        self.flushes = 0

    def request(self, *args: bytes | str | int) -> Request:
        req = new_request(self, cmd(*args))
        self.requests.append(req)
        return req

    def wake(self) -> None:
        self.dirty = True
        self.reactor.dirty_clients.append(self)

    def flush(self) -> None:
        self.dirty = False
        self.flushes += 1
        seen = set(self.completion_order)
        for i, req in enumerate(self.requests):
            if req[REPLY] is not None and i not in seen:
                self.completion_order.append(i)

    @property
    def replies(self) -> list[bytes | None]:
        return [r[REPLY] for r in self.requests]


class BackendBench:
    """A reactor with fake backends whose connections report to recording owners."""

    def __init__(self, reactor: Reactor, sockets: Sockets) -> None:
        self.reactor = reactor
        self.sockets = sockets
        self.backends: list[FakeBackend] = []

    def backend(self, owner: Owner | None = None, addr: Addr = A,
                max_pending: int = 100_000, attach: bool = True) -> FakeBackend:
        mine, theirs = self.sockets.pair()
        conn = BackendConnection(addr, owner or RecordingOwner(), self.reactor, max_pending)
        fb = FakeBackend(mine, theirs, conn)
        self.backends.append(fb)
        if attach:
            fb.attach()
        return fb

    def sink(self) -> ReplySink:
        return ReplySink(self.reactor)

    def send(self, fb: FakeBackend, reqs: Iterable[Request]) -> None:
        """Queue ``reqs`` on ``fb``'s connection as the session does (``conn.send(req,
        data)``), then flush as trio-side code does after calling into the data plane."""
        for req in reqs:
            fb.conn.send(req, req[2])  # DATA
        self.reactor.flush()

    def close(self) -> None:
        for fb in self.backends:
            if fb.conn.state != CLOSED:
                fb.conn.owner = RecordingOwner()  # the test is over: report to nobody
                fb.conn.close()


# -- the whole shell: sessions, router, shared pool ---------------------------------------------
def _key_spec(flags: list[bytes], lastkey: int = 0) -> list[object]:
    return [
        b"flags", flags,
        b"begin_search", [b"type", b"index", b"spec", [b"index", 1]],
        b"find_keys", [b"type", b"range", b"spec",
                       [b"lastkey", lastkey, b"keystep", 1, b"limit", 0]],
    ]


# A Redis 7 ``COMMAND`` reply (RESP2, as hiredis decodes it) for the commands the tests send;
# the proxy's own commands (PING, QUIT, DBSIZE, MULTI, ...) come from its rules.
COMMAND_REPLY: list[object] = [
    [b"get", 2, [b"readonly", b"fast"], 1, 1, 1, [b"@read", b"@string", b"@fast"], [],
     [_key_spec([b"RO", b"access"])], []],
    [b"set", -3, [b"write", b"denyoom"], 1, 1, 1, [b"@write", b"@string", b"@slow"], [],
     [_key_spec([b"RW", b"access", b"update", b"variable_flags"])], []],
    [b"incr", 2, [b"write", b"denyoom", b"fast"], 1, 1, 1, [b"@write", b"@string", b"@fast"],
     [], [_key_spec([b"RW", b"access", b"update"])], []],
    [b"mget", -2, [b"readonly", b"fast"], 1, -1, 1, [b"@read", b"@string", b"@fast"],
     [b"request_policy:multi_shard"], [_key_spec([b"RO", b"access"], lastkey=-1)], []],
    [b"blpop", -3, [b"write", b"noscript", b"blocking"], 1, -2, 1,
     [b"@write", b"@list", b"@slow", b"@blocking"], [],
     [_key_spec([b"RW", b"access", b"delete"], lastkey=-2)], []],
    [b"dbsize", 1, [b"readonly", b"fast"], 0, 0, 0, [b"@keyspace", b"@read", b"@fast"],
     [b"request_policy:all_shards", b"response_policy:agg_sum"], [], []],
]


def command_table() -> CommandTable:
    return CommandTable.from_command_reply(COMMAND_REPLY)


class StubCluster:
    """The session's ``cluster``: ``all_nodes()`` (CONFIG SET fan-outs), and what a
    transaction's block needs to be sent again (``rproxy.net.transaction.Scheduler``): the
    fake nodes and the test's nursery."""

    resp3 = False  # the main (RESP2) manager; the fake nodes speak RESP2

    def __init__(self, nodes: FakeNodes, nursery: trio.Nursery | None = None) -> None:
        self.nodes = nodes
        self.nursery = nursery
        self.leases: LeasePool | None = None  # set by the Shell
        self.stats = Stats()  # (redirects followed by a block sent again are counted here)
        self.opened: list[FakeBackend] = []  # leased connections, in the order opened

    def open_connection(self, addr: Addr, owner: LeasePool) -> BackendConnection:
        """``rproxy.net.lease.Opener``: a new fake node connection owned by the lease pool."""
        fb = self.nodes.shell.backend(addr, owner=owner, register=False)
        self.opened.append(fb)
        return fb.conn

    def all_nodes(self) -> list[BackendConnection]:
        return []

    def conn_for_addr(self, addr: Addr) -> BackendConnection:
        return self.nodes.conn_for_addr(addr)

    def request_refresh(self) -> None:
        self.nodes.request_refresh()


class StubView:
    """A ``rproxy.core.local_commands.ProxyView`` with fixed values."""

    proxy_version = "0.0.0-test"
    run_id = "0" * 40
    arch_bits = 64
    redis_version = "7.0.0"
    port = 0
    os_name = "Linux"
    uptime_s = 0
    max_clients = 10000
    read_from = "master"
    masters = 2
    map_epoch = 0
    cross_slot_transactions = "refuse"
    cross_slot_writes = "refuse"
    cpu_seconds = (0.0, 0.0)

    def __init__(self) -> None:
        self.process_id = os.getpid()

    def stat(self, name: str) -> int:
        return 0

    def client(self, client_id: int) -> ClientInfo:
        raise KeyError(client_id)

    def clients(self) -> Sequence[ClientInfo]:
        return []

    def scan_order(self) -> list[int]:
        return []


class FakeNodes:
    """``rproxy.net.pool.Nodes``: one fake backend per address (made on demand, as the
    cluster manager opens a connection to a node it did not know); a lost connection is
    replaced in the router by a new fake backend, attached at once unless
    ``attach_replacements`` is False (then it waits, CONNECTING, for the test to attach it:
    the failover hold)."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.by_addr: dict[Addr, FakeBackend] = {}
        self.attach_replacements = True
        self.closing = False
        self.refreshes = 0
        self.up: list[BackendConnection] = []
        self.lost: list[tuple[BackendConnection, bool]] = []

    def conn_for_addr(self, addr: Addr) -> BackendConnection:
        fb = self.by_addr.get(addr)
        if fb is None or fb.conn.state == CLOSED:
            fb = self.shell.backend(addr)
        return fb.conn

    def request_refresh(self) -> None:
        self.refreshes += 1

    def connection_up(self, conn: BackendConnection) -> None:
        self.up.append(conn)

    def connection_lost(self, conn: BackendConnection, connect_failed: bool) -> None:
        self.lost.append((conn, connect_failed))
        if self.closing:
            return
        new = self.shell.backend(conn.addr, attach=self.attach_replacements)
        self.shell.router.replace(conn, new.conn)


class Shell:
    """The ``SessionHost`` of the test's sessions, with the real router and shared pool."""

    def __init__(self, reactor: Reactor, sockets: Sockets, config: Config) -> None:
        self.config = config
        self.reactor = reactor
        self.sockets = sockets
        self.router = Router(config.cluster.read_from)
        self.stats = Stats()
        self.hot = HotSpots()
        self.slowlog = SlowLog()
        self.latency = Latency()
        self.acl = Acl(config.auth.acl_users(), config.auth.acllog_max_len)
        self.view = StubView()
        self.now = time.monotonic()
        self.nodes = FakeNodes(self)
        self.cluster: Any = StubCluster(self.nodes)
        self.pool = SharedPool(config, reactor, self.router, self.stats, self.nodes)
        self.cluster.leases = LeasePool(self.cluster, self.pool, self.stats,
                                        config.cluster.max_leases_per_node)
        self.backends: list[FakeBackend] = []
        self.sessions: list[ClientSession] = []
        self.closed_sessions: list[ClientSession] = []
        self._ids = itertools.count(1)
        self.router.load_table(command_table())

    # -- SessionHost ---------------------------------------------------------------------------
    def on_session_closed(self, session: ClientSession) -> None:
        self.closed_sessions.append(session)

    def session_by_id(self, client_id: int) -> ClientSession | None:
        return next((s for s in self.sessions if s.id == client_id and not s.closed), None)

    # -- building ------------------------------------------------------------------------------
    def backend(self, addr: Addr, attach: bool = True, owner: Owner | None = None,
                register: bool = True) -> FakeBackend:
        """A fake node at ``addr`` (the newest one is ``nodes.by_addr[addr]``, unless not
        ``register``: a leased connection)."""
        mine, theirs = self.sockets.pair()
        conn = BackendConnection(addr, owner or self.pool, self.reactor,
                                 self.config.limits.max_pending_per_backend)
        fb = FakeBackend(mine, theirs, conn)
        self.backends.append(fb)
        if register:
            self.nodes.by_addr[addr] = fb
        if attach:
            fb.attach()
        return fb

    def serve(self, fb: FakeBackend, lo: int, hi: int) -> None:
        """``fb`` is the master of slots ``lo..hi``."""
        router = self.router
        router.slot_conn[lo:hi + 1] = [fb.conn] * (hi + 1 - lo)
        if fb.conn not in router.masters:
            router.masters.append(fb.conn)
            router.master_slots.append(lo)
        router.has_map = True

    def two_shards(self) -> tuple[FakeBackend, FakeBackend]:
        """Backend ``A`` serves slots 0-8191, ``B`` 8192-16383."""
        a, b = self.backend(A), self.backend(B)
        self.serve(a, 0, SLOTS // 2 - 1)
        self.serve(b, SLOTS // 2, SLOTS - 1)
        return a, b

    def client(self, session_cls: type[ClientSession] = ClientSession) -> Client:
        """A client connection, admitted as ``ProxyServer.admit`` does it."""
        mine, theirs = self.sockets.pair()
        client_id = next(self._ids)
        session = session_cls(self, theirs, f"fake-client:{client_id}", client_id)
        self.sessions.append(session)
        self.reactor.register(session.fd, EPOLLIN, session)
        return Client(mine, theirs, session)

    def close(self) -> None:
        self.nodes.closing = True
        for session in self.sessions:
            session.close()
        for fb in self.backends:
            if fb.conn.state != CLOSED:
                fb.conn.owner = RecordingOwner()  # the test is over: nothing is re-sent
                fb.conn.close()


class Client(Peer):
    """A client played by the test; ``session`` serves it."""

    def __init__(self, sock: socket.socket, far: socket.socket, session: ClientSession) -> None:
        super().__init__(sock, far, f"client {session.id}")
        self.session = session

    def send_commands(self, *commands: Sequence[bytes | str | int]) -> None:
        """Pipeline ``commands`` in one write: the session parses them in one read."""
        self.send_now(b"".join(cmd(*c) for c in commands))


async def leased(shell: Shell, n: int = 0) -> FakeBackend:
    """The ``n``-th leased connection opened, once it has answered the lease pool's
    ``CLIENT ID`` (its id on the node: ``100 + n``)."""
    await wait_until(lambda: len(shell.cluster.opened) > n, f"leased connection {n}")
    fb = shell.cluster.opened[n]
    ask = cmd("CLIENT", "ID")
    assert await fb.recv_exactly(len(ask)) == ask  # what follows it is the test's to read
    await fb.send(b":%d\r\n" % (100 + n))
    return fb


# -- running ----------------------------------------------------------------------------------
@asynccontextmanager
async def running_reactor() -> AsyncIterator[tuple[Reactor, Sockets, trio.Nursery]]:
    """A real reactor running in a nursery (``await nursery.start(reactor.run)``), cancelled
    at the end; then every socket is closed. An error of the test comes out as itself, not
    wrapped in the nursery's exception group."""
    reactor = Reactor(busy_poll_us=0)
    sockets = Sockets()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(reactor.run)
            try:
                yield reactor, sockets, nursery
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        inner = group.exceptions
        if len(inner) == 1 and not isinstance(inner[0], (BaseExceptionGroup, trio.Cancelled)):
            raise inner[0] from None
        raise
    finally:
        sockets.close_all()


@asynccontextmanager
async def backend_bench() -> AsyncIterator[BackendBench]:
    async with running_reactor() as (reactor, sockets, _nursery):
        bench = BackendBench(reactor, sockets)
        try:
            yield bench
        finally:
            bench.close()


@asynccontextmanager
async def open_shell(config: Config | None = None) -> AsyncIterator[Shell]:
    """A ``Shell`` over a running reactor, with the shared pool's retry task."""
    async with running_reactor() as (reactor, sockets, nursery):
        shell = Shell(reactor, sockets, config or Config().validate())
        shell.cluster.nursery = nursery
        nursery.start_soon(shell.pool.run_retries)
        try:
            yield shell
        finally:
            shell.close()
