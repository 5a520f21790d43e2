"""Backend connections: long-lived and pipelined, reporting to an owner.

A ``BackendConnection`` owns one non-blocking transport registered in the reactor. Requests are
appended to ``out`` (bytes) and ``fifo`` (who gets each reply) by the clients' readers; one
``send`` per reactor batch writes everything that accumulated. Replies are framed raw and handed
to the waiting requests in FIFO order.

What happens around that is the *owner*'s business (``Owner``, below): an error reply that may
be a redirect, the connection coming up, the connection lost with requests written and queued.
The shared pool (rproxy/net/pool.py) owns the multiplexed connections that every client shares
and resends what is safe to resend; a dedicated connection's owner (a transaction, a blocked
command, a subscription) tells its one client instead.

A connection counts as up only once the node answered ``PING`` (after ``READONLY`` on a
replica-read connection): a hung node accepts TCP connections but answers nothing. Until then
``out``/``fifo`` queue requests in order -- the failover hold (see rproxy/net/cluster.py).

Resource handling: the connection owns its transport and closes it in ``fail``/``close``. A client
that disconnects leaves its requests in the FIFO: their replies are still read and dropped, so
the connection stays in step for everyone else.
"""

from __future__ import annotations

import errno
import os
import socket
from collections import deque
from typing import Protocol

import structlog
import trio

from rproxy.core import errors
from rproxy.core.request import DISCARD, Request, complete
from rproxy.core.resp import BackendProtocolError, ReplyFramer, encode_command
from rproxy.net.reactor import EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, Reactor
from rproxy.net.transport import NodeAccess, Transport, recv_some, send_all, tls_connect

log = structlog.get_logger("rproxy.net.backend")

CONNECTING = 0
READY = 1
CLOSED = 2

RECV_SIZE = 256 * 1024
PING = encode_command([b"PING"])
READONLY = encode_command([b"READONLY"])
HELLO3 = encode_command([b"HELLO", b"3"])


class Owner(Protocol):
    """Who a backend connection reports to. Called synchronously from the reactor or from the
    connection's connect task; the reactor flushes what they send afterwards."""

    def on_error_reply(self, conn: BackendConnection, req: Request, raw: bytes) -> bool:
        """An error reply for ``req``: True if the owner took care of it (a redirect, a
        retry), False to deliver it to the request's client as it is."""
        ...

    def on_connected(self, conn: BackendConnection) -> None:
        """The node answered the handshake: the connection is up."""
        ...

    def on_lost(self, conn: BackendConnection, written: list[Request], queued: list[Request],
                exc: BaseException, connect_failed: bool) -> None:
        """The connection is closed (``exc`` says why). ``written`` went out without a reply,
        ``queued`` never left, each in order; both are the owner's to settle. Also called,
        with nothing pending, when an idle connection is closed on purpose."""
        ...


class BackendConnection:
    __slots__ = (
        "addr", "owner", "reactor", "transport", "fd", "state", "out", "fifo", "framer",
        "wbuf", "dirty", "replies", "stalled_since", "retiring", "max_pending", "replica",
        "blocking", "resp3", "access", "__weakref__",
    )

    def __init__(self, addr: tuple[str, int], owner: Owner, reactor: Reactor,
                 max_pending: int, replica: bool = False, resp3: bool = False,
                 access: NodeAccess | None = None) -> None:
        self.addr = addr
        # The cluster's AUTH (sent first in the handshake), and TLS for a TLS cluster
        self.access = access or NodeAccess()
        self.owner = owner
        self.reactor = reactor
        self.transport: Transport | None = None
        self.fd = -1
        self.state = CONNECTING
        self.out: list[bytes] = []  # encoded requests not yet written
        self.fifo: deque[Request] = deque()  # every request sent or queued, in order
        self.framer = ReplyFramer(resp3)
        self.wbuf = b""  # bytes a previous send could not write
        self.dirty = False
        self.replies = 0  # replies received (the op-timeout watchdog reads it)
        self.stalled_since = 0.0
        self.retiring = False  # no longer in the slot map: close once the FIFO is empty
        self.max_pending = max_pending  # limits.max_pending_per_backend
        self.replica = replica  # a READONLY connection for replica reads
        self.blocking = False  # a blocking command is waiting on it: no op-timeout
        self.resp3 = resp3  # speaks RESP3 (HELLO 3 in the handshake), for RESP3 clients

    def __repr__(self) -> str:
        return f"<BackendConnection {self.addr[0]}:{self.addr[1]} state={self.state}>"

    # -- the hot path -----------------------------------------------------------------------
    def send(self, req: Request, data: bytes) -> None:
        if len(self.fifo) >= self.max_pending:  # a stuck or slow node: fail fast, stay bounded
            complete(req, errors.BACKEND_BUSY)
            return
        self.out.append(data)
        self.fifo.append(req)
        if not self.dirty:
            self.dirty = True
            self.reactor.dirty_backends.append(self)

    def flush(self) -> None:
        self.dirty = False
        if self.state != READY or self.wbuf or not self.out:
            return
        out = self.out
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        try:
            n = self.transport.send(data)  # type: ignore[union-attr]
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self.fail(exc)
            return
        if n < len(data):
            self.wbuf = data[n:]
            self.reactor.modify(self.fd, EPOLLIN | EPOLLOUT)

    def on_event(self, events: int) -> None:
        if events & (EPOLLIN | EPOLLERR | EPOLLHUP):
            try:
                data = self.transport.recv(RECV_SIZE)  # type: ignore[union-attr]
            except BlockingIOError:
                data = None
            except OSError as exc:
                self.fail(exc)
                return
            if data == b"":
                self.fail(ConnectionResetError("backend closed the connection"))
                return
            if data:
                self.on_data(data)
        if events & EPOLLOUT and self.state == READY:
            self._write_more()

    def on_data(self, data: bytes) -> None:
        try:
            replies = self.framer.feed(data)
        except BackendProtocolError as exc:
            self.fail(exc)
            return
        if self.resp3:  # a push (DEBUG PROTOCOL push) answers no request: never forwarded
            replies = [r for r in replies if r[0] != 62]  # '>'
        fifo = self.fifo
        if len(replies) > len(fifo) - len(self.out):
            self.fail(BackendProtocolError("reply with no request"))
            return
        popleft = fifo.popleft
        dirty_clients = self.reactor.dirty_clients
        on_error = self.owner.on_error_reply
        self.replies += len(replies)
        for raw in replies:
            req = popleft()
            if req is DISCARD:
                continue
            if raw[0] == 45 and on_error(self, req, raw):  # '-': maybe a redirect
                continue
            parent = req[6]  # PARENT
            if parent is None:
                req[0] = raw  # REPLY
                owner = req[1]  # OWNER
                if owner is not None and not owner.dirty:
                    owner.dirty = True
                    dirty_clients.append(owner)
            else:
                parent.child_done(req[7], raw)  # INDEX
        if self.retiring and not fifo:
            self.close()

    def _write_more(self) -> None:
        try:
            n = self.transport.send(self.wbuf)  # type: ignore[union-attr]
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(exc)
            return
        self.wbuf = self.wbuf[n:]
        if not self.wbuf:
            self.reactor.modify(self.fd, EPOLLIN)
            if self.out:
                self.flush()

    # -- life cycle -------------------------------------------------------------------------
    async def connect(self, timeout_s: float, delay_s: float = 0.0) -> None:
        """Open the socket (in a trio task), then hand it to the reactor (``attach``). On
        failure every queued request goes to the owner (``Owner.on_lost``)."""
        if delay_s:
            await trio.sleep(delay_s)
        host, port = self.addr
        sock: socket.socket | None = None
        try:
            with trio.fail_after(timeout_s):
                infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                family, _, _, _, sockaddr = infos[0]
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setblocking(False)
                err = sock.connect_ex(sockaddr)
                if err not in (0, errno.EINPROGRESS):
                    raise OSError(err, os.strerror(err))
                await trio.lowlevel.wait_writable(sock)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                access = self.access
                transport: Transport = sock
                if access.tls is not None:  # (ssl.SSLError is an OSError)
                    transport = await tls_connect(sock, access.tls, access.hostname(host))
                await self._handshake(transport)
        except (OSError, trio.TooSlowError, BackendProtocolError) as exc:
            if sock is not None:
                sock.close()
            if self.state == CONNECTING:
                self.fail(exc if isinstance(exc, OSError) else TimeoutError("connect timed out"))
                self.reactor.flush()
            return
        except BaseException:  # cancelled (shutdown): the socket has no owner yet
            if sock is not None:
                sock.close()
            raise
        if self.state != CONNECTING:  # closed while connecting
            sock.close()
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.attach(transport)

    def attach(self, transport: Transport) -> None:
        """Serve on ``transport``, connected and past the handshake: register it in the
        reactor, tell the owner, send what queued meanwhile."""
        self.transport = transport
        self.fd = transport.fileno()
        self.state = READY
        self.reactor.register(self.fd, EPOLLIN, self)
        log.debug("backend_connected", node=f"{self.addr[0]}:{self.addr[1]}")
        self.owner.on_connected(self)
        self.flush()
        self.reactor.flush()

    async def _handshake(self, conn: Transport) -> None:
        """``[AUTH,] [HELLO 3,] [READONLY,] PING`` and their replies: the node takes the
        cluster's credentials, is alive and serving (and speaks RESP3, for RESP3 clients: a
        map answers HELLO)."""
        hello = (READONLY + PING) if self.replica else PING
        if self.resp3:
            hello = HELLO3 + hello
        auth = self.access.auth
        if auth:
            hello = encode_command(auth) + hello
        await send_all(conn, hello)
        framer = ReplyFramer(self.resp3)
        replies: list[bytes] = []
        while len(replies) < 1 + self.replica + self.resp3 + bool(auth):
            replies += framer.feed(await recv_some(conn, 4096))
        if auth:
            auth_reply = replies.pop(0)  # -WRONGPASS, -ERR AUTH ... (never the password)
            if auth_reply[:1] == b"-":
                raise ConnectionRefusedError("AUTH: " + auth_reply.rstrip().decode(
                    errors="replace")[1:])
        if self.resp3:
            hello_reply = replies.pop(0)
            if hello_reply[:1] != b"%":  # -NOPROTO: a server without RESP3
                raise ConnectionRefusedError(hello_reply.rstrip().decode(errors="replace"))
        for raw in replies:
            # -LOADING, -MASTERDOWN, ...: not serving yet. -BUSY: serving, but running a
            # script (or a function) for longer than its busy-reply-threshold; it answers
            # -BUSY to every command until the script ends, as it would to a client of its own.
            if raw[:1] != b"+" and not raw.startswith(b"-BUSY"):
                raise ConnectionRefusedError(raw.rstrip().decode(errors="replace"))

    def drop_queued(self, error: bytes) -> int:
        """Fail every request queued on a connection that is not up; returns how many."""
        pending = [r for r in self.fifo if r is not DISCARD]
        self.fifo.clear()
        self.out.clear()
        for req in pending:
            complete(req, error)
        return len(pending)

    def abort(self, exc: BaseException) -> None:
        self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        """The connection is unusable: close it and settle every request in its FIFO."""
        if self.state == CLOSED:
            return
        was_ready = self.state == READY
        self._close_socket()
        unsent = len(self.out)
        pending = list(self.fifo)
        self.fifo.clear()
        self.out.clear()
        self.wbuf = b""
        if was_ready or pending:
            log.warning("backend_lost", node=f"{self.addr[0]}:{self.addr[1]}",
                        error=str(exc) or type(exc).__name__, in_flight=len(pending))
        split = len(pending) - unsent
        self.owner.on_lost(self, pending[:split], pending[split:], exc,
                           connect_failed=not was_ready)

    def close(self) -> None:
        """Close an idle connection on purpose (no requests pending)."""
        if self.state == CLOSED:
            return
        if self.fifo:
            self.fail(ConnectionAbortedError("connection closed by the proxy"))
            return
        self._close_socket()
        self.owner.on_lost(self, [], [], ConnectionAbortedError("closed by the proxy"),
                           connect_failed=False)

    def _close_socket(self) -> None:
        self.state = CLOSED
        if self.transport is not None:
            self.reactor.unregister(self.fd)
            self.transport.close()
            self.transport = None

    @property
    def in_flight(self) -> int:
        return len(self.fifo)

