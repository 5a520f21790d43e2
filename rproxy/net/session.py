"""One client connection: parse, route, and reply in request order.

The reader takes a whole chunk, parses every complete command in it and routes each: a slot
computation and a list lookup give the backend connection; the encoded command goes to that
connection's buffer and the request to both its FIFO and this client's reply queue. Replies
leave in one send per reactor batch, as the completed prefix of the queue.

Back-pressure: with more than ``max_pending_per_client`` requests unanswered the session stops
reading; a client that does not read its replies is disconnected once its unsent replies pass
``output_buffer_limit``.

Modes: ``on_commands`` is the handler of a parsed batch for the mode the client is in. The
stateless mode's handler is ``route_batch``; a command that puts the client in another mode
(a transaction, a WATCH, a blocking command, WAIT: rproxy/net/stateful.py; the subscribed
mode, CLIENT REPLY OFF: here) swaps ``on_commands`` with ``enter_mode``, and the rest of the
same batch goes to the new handler (``hand_over``). The stateless path pays one call through
the attribute per batch for this, and one identity check per command that leaves the inline
fast path.

Resource handling: the session owns its transport (the socket); ``close`` unregisters and
closes it. Requests it leaves in backend FIFOs are completed into the void, keeping the shared
connections in step.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Protocol

import structlog

from rproxy.core import acl, errors, local_commands, resp
from rproxy.core.acl import Acl
from rproxy.core.admin import ConfigChange
from rproxy.core.client import REPLY_OFF, REPLY_ON, REPLY_SKIP_NEXT, ClientInfo, ClientState
from rproxy.core.commands import CommandInfo, Route
from rproxy.core.config import Config
from rproxy.core.emulate_reads import ReadPlan, plan_read
from rproxy.core.emulate_writes import WritePlan, plan_write
from rproxy.core.hotspots import KEY_EVERY, HotSpots
from rproxy.core.local_commands import (
    AllMasters,
    Kill,
    ProxyView,
    Subscribe,
    ToLease,
    ToSlot,
    Wait,
)
from rproxy.core.planner import Merge, fanout_merge, plan_cross_slot_split
from rproxy.core.pubsub import ALLOWED_SUBSCRIBED, as_push, subscribed_mode_error
from rproxy.core.request import DATA, REPLY, FanOut, Request, complete, new_request
from rproxy.core.resp import CLOSE_SILENTLY, RequestParser, decode_command, encode_command
from rproxy.core.resp3 import to_resp3
from rproxy.core.scripts import LEARNS
from rproxy.core.slots import CRC16 as _crc16
from rproxy.core.slots import CRC16_TABLE as _crc16_table
from rproxy.core.slots import SEVERAL_SLOTS, common_slot, key_slot
from rproxy.core.slowlog import REDACTS, Latency, SlowLog, redact
from rproxy.core.stats import Stats
from rproxy.core.topology import Addr
from rproxy.core.transaction import command_error, exec_aborted_by
from rproxy.net.backend import CLOSED, BackendConnection
from rproxy.net.blocking import BlockingCall
from rproxy.net.cluster import ClusterManager
from rproxy.net.reactor import EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, Reactor
from rproxy.net.router import Router
from rproxy.net.stateful import Batch, LeaseOverlay, StatefulModes
from rproxy.net.timing import Trace
from rproxy.net.transport import Transport, plain

log = structlog.get_logger("rproxy.net.session")

RECV_SIZE = 64 * 1024

# Route members as module globals: an enum attribute lookup per command is measurable.
_KEYED, _ANY, _LOCAL = Route.KEYED, Route.ANY, Route.LOCAL
_ALL_MASTERS, _ALL_NODES, _LEASED = Route.ALL_MASTERS, Route.ALL_NODES, Route.LEASED
_KILLS = frozenset({b"SCRIPT|KILL", b"FUNCTION|KILL"})  # on connections of their own
_WAITS = frozenset({b"WAIT", b"WAITAOF"})  # block by design: not in the slow log
_XREADS = frozenset({b"XREAD", b"XREADGROUP"})  # block with BLOCK: not in the slow log then
NO_AUTH = frozenset({b"AUTH", b"HELLO", b"QUIT", b"RESET"})  # Redis's no-auth commands
_USER_CHANGES = frozenset({b"AUTH", b"HELLO", b"RESET"})  # may change the client's ACL user
_DENIAL_REASONS = {acl.DENIED_CMD: b"command", acl.DENIED_KEY: b"key",
                   acl.DENIED_CHANNEL: b"channel"}


class SessionHost(Protocol):
    """What a session needs from the server that admitted it."""

    config: Config
    acl: Acl  # the users and ACL LOG (rproxy/core/acl.py)
    reactor: Reactor
    router: Router
    cluster: ClusterManager
    stats: Stats
    hot: HotSpots  # hot slots and keys, sampled
    slowlog: SlowLog  # the proxy's slow log (SLOWLOG)
    latency: Latency  # the sampled latency histograms
    now: float  # a cheap timestamp, at most 0.1 s old

    @property
    def view(self) -> ProxyView: ...  # for the commands the proxy answers itself

    def on_session_closed(self, session: ClientSession) -> None: ...

    def session_by_id(self, client_id: int) -> ClientSession | None: ...

    def set_config(self, key: str, value: str) -> bytes: ...  # PROXY CONFIG SET

    def all_sessions(self) -> list[ClientSession]: ...


class ClientSession(StatefulModes):
    __slots__ = (
        "host", "reactor", "router", "cluster", "transport", "fd", "id", "peer", "client",
        "parser", "queue", "dirty", "closed", "closing", "reading", "eof", "wbuf",
        "started", "last_active", "max_pending", "output_limit", "on_commands", "stats",
        "soft_limit", "soft_s", "soft_since",
        "silent", "outbox", "hot", "reads", "done", "slowlog", "latency", "command",
        "acl_user", "laddr",
    )  # and StatefulModes's

    def __init__(self, host: SessionHost, sock: socket.socket, peer: str, client_id: int,
                 transport: Transport | None = None) -> None:
        """``transport``: TLS (rproxy/net/transport.py), or None for the plain socket."""
        self.host = host
        self.reactor = host.reactor
        self.router = host.router
        self.cluster = host.cluster
        self.stats = host.stats
        self.hot = host.hot  # hot slots and keys, sampled (rproxy/core/hotspots.py)
        self.slowlog = host.slowlog
        self.latency = host.latency
        # The slow log's timing: one (sequence number of the last request it queued, when the
        # reactor started handling it) per read; ``done`` counts the replies written (or
        # dropped). A flush's first reply is timed by the oldest read it belongs to.
        self.reads: deque[tuple[int, float]] = deque()
        self.done = 0
        self.command = b""  # the command ``dispatch`` runs (encoded), for reply_local
        self.transport: Transport = transport or plain(sock)
        self.fd = sock.fileno()
        self.id = client_id
        self.peer = peer
        # The local address it came in on (the plain or the TLS listener): CLIENT LIST's laddr
        # (a Unix socket's path and 0, as Redis)
        local = sock.getsockname()
        self.laddr = f"{local[0]}:{local[1]}" if isinstance(local, tuple) else f"{local}:0"
        password = host.acl.auth_required
        default = host.acl.default
        self.client = ClientState(client_id, authenticated=not password, user=default)
        # The client's ACL user while its commands must be checked (``checked_dispatch``): a
        # restricted one. None for the others, whose commands take the fast path unchecked.
        self.acl_user = default if default.restricted else None
        limits = host.config.limits
        self.parser = RequestParser(replace(limits.request_limits(), unauthenticated=password))
        self.queue: deque[Request] = deque()
        self.dirty = False
        self.closed = False
        self.closing = False  # close once the queue is flushed (QUIT, protocol error)
        self.reading = True
        self.eof = False
        self.wbuf = bytearray()
        self.started = host.now
        self.last_active = host.now
        self.max_pending = limits.max_pending_per_client
        self.output_limit = limits.output_buffer_limit
        self.soft_limit = limits.output_buffer_soft_limit  # 0: off
        self.soft_s = limits.output_buffer_soft_s
        self.soft_since = 0.0  # since when its unsent replies are over the soft limit
        # How a parsed batch is handled: the stateless mode's batch loop (see the docstring),
        # or, with a password set, the commands before AUTH.
        self.on_commands: Callable[[Batch], None] = (
            self.auth_batch if password else self.route_batch)
        # The tables this client's commands are routed by: the router's, except while it holds
        # a lease (``use_lease``).
        self.slot_conn = self.router.slot_conn
        self.read_conn = self.router.read_conn
        self.leases: dict[Addr, BackendConnection] = {}  # its own connections (WATCH to EXEC)
        self.watched: set[bytes] = set()  # the keys it watches
        self.watch_broken = False  # the lease was lost, or a WATCH could not be placed
        self.held: Batch | None = None  # commands waiting for the replies before them (drain)
        self.held_error: bytes | None = None  # a protocol error that came after them
        self.blocked: BlockingCall | None = None  # its latest blocking command
        self.wrote: set[Addr] | None = None  # masters written to since its last WAIT
        self.silent: set[int] = set()  # ids of queued requests whose reply is dropped
        self.outbox: list[bytes] = []  # pub/sub messages to write, nothing queued before them
        self.special = False  # outbox, silent or wrote in use: flush takes _write_special

    # -- input ------------------------------------------------------------------------------
    def on_event(self, events: int) -> None:
        if events & EPOLLOUT:
            self._write_more()
        if events & (EPOLLERR | EPOLLHUP) and not self.reading:
            # epoll reports these whatever the mask: a paused client that hung up would
            # otherwise wake the reactor on every loop. Nobody is left to read the replies.
            self.close()
            return
        if events & (EPOLLIN | EPOLLERR | EPOLLHUP) and self.reading and not self.closed:
            try:
                data = self.transport.recv(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError:
                self.close()
                return
            if not data:
                self._on_eof()
                return
            self.last_active = self.host.now
            self.stats.client_input_bytes += len(data)
            self.on_data(data)

    def on_data(self, data: bytes) -> None:
        parser = self.parser
        commands = parser.parse(data)
        if commands:
            self.stats.total_commands_processed += len(commands)
            self.on_commands(commands)
            self.reads.append((self.done + len(self.queue), self.reactor.now))
            if self.closing:  # QUIT: nothing after it is read or run, not even a protocol
                # error in the same read (Redis's CLIENT_CLOSE_AFTER_REPLY, processInputBuffer)
                self._stop_reading(closing=True)
                return
        if parser.error is not None and self.held is not None:  # after the held commands
            self.held_error = parser.error
            self._stop_reading()
        elif parser.error is not None:
            if parser.error == CLOSE_SILENTLY:
                log.warning("query_buffer_limit", client_id=self.id)
                self.close()
                return
            self.reply_local(parser.error)
            self._stop_reading(closing=True)
        elif len(self.queue) >= self.max_pending:
            self._stop_reading()

    def route_batch(self, commands: Batch) -> None:
        """The stateless mode's batch loop. The common case -- a command with one key at a
        fixed position -- is routed inline: the general ``dispatch`` does the same with a
        function call, a table lookup, a slot function and a send call more per command,
        about a sixth of the proxy's CPU at pipeline 16. A restricted ACL user's commands go
        through ``checked_dispatch``, but for those it may run on any key (``Acl.fast_table``:
        a user with ``~*`` and command rules only), which are routed inline as here."""
        fast = self.router.fast
        dispatch = self.dispatch
        if self.acl_user is not None:
            fast = self.host.acl.fast_table(self.acl_user, self.router.table, fast)
            dispatch = self.checked_dispatch
        slot_conn = self.slot_conn
        read_conn = self.read_conn
        queue_append = self.queue.append
        dirty_backends = self.reactor.dirty_backends
        mode = self.on_commands
        batch = iter(commands)
        slot = -1
        req = None
        for argv, enc in batch:
            info = fast.get(argv[0])
            if info is not None:
                ki = info.single_key
                if len(argv) > ki:
                    key = argv[ki]
                    slot = key_slot(key) if 123 in key else _crc16(key, 0, _crc16_table) & 0x3FFF
                    readonly = info.readonly
                    conn = (read_conn if readonly else slot_conn)[slot]
                    if conn is not None and len(conn.fifo) < conn.max_pending:
                        info.calls += 1
                        req = [None, self, enc, slot, readonly, 0, None, 0]  # new_request, inlined
                        queue_append(req)
                        conn.out.append(enc)  # BackendConnection.send, inlined
                        conn.fifo.append(req)
                        if not conn.dirty:
                            conn.dirty = True
                            dirty_backends.append(conn)
                        continue
            dispatch(argv, enc)
            if self.closing:  # QUIT: later commands in the same read are not run
                break
            if self.on_commands is not mode:  # the command changed the client's mode
                self.hand_over(batch)
                break
        if slot >= 0:  # one sample per read: the last one-key command (HotSpots.add, inlined)
            hot = self.hot
            samples = hot.slots
            n = samples[slot] + 1
            samples[slot] = n
            if not n % KEY_EVERY:
                keys = hot.keys
                keys[key] = keys.get(key, 0) + 1
                if req is not None:  # ... and one read in KEY_EVERY has its last inline
                    self.trace(req)  # request timed

    def trace(self, req: Request) -> None:
        """Time ``req`` (rproxy/net/timing.py): it is the last request of this read, or near
        it; its place in the queue says when its reply has left (``done`` passes it)."""
        q = self.queue
        i = len(q) - 1
        while i >= 0 and q[i] is not req:
            i -= 1
        if i >= 0:
            Trace(req, self.done + i + 1, self.reactor.now, self.reactor, self.latency)

    def enter_mode(self, handler: Callable[[Batch], None]) -> None:
        """From the next command on (the rest of the current batch included), batches go to
        ``handler``."""
        self.on_commands = handler

    def leave_mode(self) -> None:
        """Back to the stateless mode (``route_batch``)."""
        self.on_commands = self.route_batch

    def hand_over(self, batch: Iterator[tuple[list[bytes], bytes]]) -> None:
        """A command changed the client's mode: the rest of its batch goes to the new one."""
        rest = list(batch)
        if rest:
            self.on_commands(rest)

    def dispatch(self, argv: list[bytes], enc: bytes) -> None:
        """Route one command (the general path). ``command`` notes it: the requests answering
        it carry it (``DATA``) for the slow log, an error rproxy answers is counted by it."""
        self.command = enc
        router = self.router
        info = router.table.lookup(argv)
        info.calls += 1
        route = info.route
        if route is _KEYED:
            if not router.table_loaded:
                self.reply_local(errors.NO_TOPOLOGY)
                return
            ki = info.single_key
            if ki:
                slot = key_slot(argv[ki]) if len(argv) > ki else -1
            else:
                if router.table.blocks(info, argv):  # XREAD ... BLOCK
                    self.call_blocking(info, argv, enc)
                    return
                if info.name in LEARNS:  # EVAL: remembered, to load where a node lacks it
                    self.cluster.pool.scripts.learn(info.name, argv)
                slot = common_slot([argv[pos] for pos in info.key_positions(argv)])
                if slot == SEVERAL_SLOTS:
                    self.cross_slot(argv, info)
                    return
            if slot >= 0:
                conn = (self.read_conn if info.readonly else self.slot_conn)[slot]
                if conn is None:
                    self.reply_local(router.no_conn_error(info.readonly))
                    return
            else:
                conn = router.any_master()
                if conn is None:
                    self.reply_local(errors.NO_TOPOLOGY)
                    return
            req = new_request(self, enc, slot, info.readonly)
            self.queue.append(req)
            conn.send(req, enc)
        elif route is _ANY:
            if not router.table_loaded:
                self.reply_local(errors.NO_TOPOLOGY)
                return
            conn = router.any_master()
            if conn is None:
                self.reply_local(errors.NO_TOPOLOGY)
                return
            req = new_request(self, enc, -1, info.readonly)
            self.queue.append(req)
            conn.send(req, enc)
        elif route is _LOCAL:
            self.answer_locally(info, argv)
        elif route is _LEASED:
            self.call_blocking(info, argv, enc)
        elif route is _ALL_MASTERS or route is _ALL_NODES:
            name = info.name
            if name in LEARNS:  # SCRIPT LOAD / FLUSH, FUNCTION LOAD / DELETE / FLUSH
                self.cluster.pool.scripts.learn(name, argv)
            if name in _KILLS:  # past a script running on a shared connection
                masters = router.masters
                if not masters:
                    self.reply_local(errors.NO_TOPOLOGY)
                    return
                self.queue.append(self.cluster.leases.on_own_connections(
                    self, enc, [m.addr for m in masters], fanout_merge(name, argv)))
                return
            result = self.fan_out(enc, fanout_merge(name, argv), info.readonly,
                                  route is _ALL_NODES)
            if isinstance(result, list):  # a request (FanOut)
                self.queue.append(result)
            else:
                self.reply_local(result)
        else:
            self.reply_local(errors.not_supported(argv[0], info.why))

    def answer_locally(self, info: CommandInfo, argv: list[bytes]) -> None:
        """A command the proxy answers itself (rproxy/core/local_commands.py): a function of
        the client's state, the arguments and a read-only view of the proxy; the session
        carries out what it returns."""
        subs = self.client.subs
        result = local_commands.run(self.client, info, argv, self.host.view)
        if (self.client.protocol == 3) != self.cluster.resp3:  # HELLO, RESET
            self._switch_protocol()
        if isinstance(result, bytes):
            self.reply_local(result)
        elif isinstance(result, Subscribe):
            self.subscription(result)
        elif isinstance(result, Wait):
            self.call_wait(result, argv)
        elif isinstance(result, Kill):
            self.kill_clients(result)
        elif isinstance(result, AllMasters):
            fan = self.fan_out(result.command, result.merge, result.readonly,
                               result.every_node)
            if isinstance(fan, list):  # a request (FanOut)
                self.queue.append(fan)
            else:
                self.reply_local(fan)
        elif isinstance(result, ToSlot):
            parent = FanOut(self, 1, result.merge)
            self.queue.append(parent)
            self.router.route(parent.child(0, result.command, result.slot, readonly=True))
        elif isinstance(result, ToLease):  # WATCH
            self.watch(result.parts, result.keys)
        elif isinstance(result, ConfigChange):  # PROXY CONFIG SET
            self.reply_local(self.host.set_config(result.key, result.value))
        else:
            self.unblock(result.client_id, result.error)
        if subs is not None and self.client.subs is None:  # RESET: every subscription goes
            self.cluster.pubsub.remove_all(self, subs)
        if self.client.quit:
            self.closing = True
        elif self.client.reply != REPLY_ON and self.on_commands == self.route_batch:
            self.enter_mode(self.quiet_batch)  # CLIENT REPLY OFF / SKIP
        elif (self.client.subscribed and self.client.protocol == 2) != (
                self.on_commands == self.pubsub_batch):  # (RESP3 has no subscribed mode)
            if self.client.subscribed and self.client.protocol == 2:
                self.enter_mode(self.pubsub_batch)
            else:
                self.leave_mode()
        elif self.client.multi is not None:  # MULTI: the transaction mode from now on
            self.enter_mode(self.tx_batch)
        elif self.client.watch_slot < 0 and (self.leases or self.watch_broken):
            self.end_watch(unwatch=True)  # UNWATCH, RESET
        self._output_limits()
        if self.client.authenticated == self.parser.limits.unauthenticated:
            # AUTH, HELLO AUTH, RESET: into or out of the unauthenticated mode
            self.parser.set_limits(replace(self.parser.limits,
                                           unauthenticated=not self.client.authenticated))
            if not self.client.authenticated:
                self.enter_mode(self.auth_batch)
            elif self.on_commands == self.auth_batch:
                self.leave_mode()
        if info.name in _USER_CHANGES:
            user = self.client.user
            acl_user = user if user.restricted else None
            if acl_user is not self.acl_user:
                self.acl_user = acl_user
                if self.on_commands == self.route_batch:
                    # A new bound method: the batch loop sees a new mode, and hands the rest
                    # of the batch over -- checked from now on (or no longer).
                    self.enter_mode(self.route_batch)

    def _switch_protocol(self) -> None:
        """The client switched between RESP2 and RESP3: from now on its commands go on the
        connections of its protocol (the cluster manager's RESP3 plane, or the main one), so
        that each reply reaches it as the node sent it. (A lease it holds stays in the
        protocol it was opened with until given back.)"""
        main = self.host.cluster
        cluster = main.resp3_plane() if self.client.protocol == 3 else main
        self.cluster = cluster
        self.router = router = cluster.router
        if isinstance(self.slot_conn, LeaseOverlay):
            self.slot_conn.base = router.slot_conn
        else:
            self.slot_conn = router.slot_conn
            self.read_conn = router.read_conn
        if self.queue and not self.client.subscribed:
            # Its next commands must not overtake those still on the other connections.
            self.start_drain([])
        else:
            self._reroute()

    # -- pub/sub: the subscribed mode (rproxy/core/pubsub.py, rproxy/net/pubsub.py) ----------
    def subscription(self, change: Subscribe) -> None:
        """(P|S)(UN)SUBSCRIBE: tell the proxy's shared subscriptions what changed. A new
        subscription is answered once the node confirmed it; the rest at once."""
        hub = self.cluster.pubsub
        if not change.subscribe:
            if change.names:
                hub.remove(self, change.kind, change.names)
            self.reply_local(change.reply)
            return
        req = new_request(self, b"", -1, True)
        self.queue.append(req)
        hub.add(self, change.kind, change.names, lambda: complete(req, change.reply))

    def pubsub_batch(self, commands: Batch) -> None:
        """The subscribed mode: only (P|S)(UN)SUBSCRIBE, PING, QUIT and RESET run; the rest
        of the batch goes back to the stateless mode once the last subscription is gone."""
        self.gated(commands, self._subscribed_refusal, self.pubsub_batch)

    def _subscribed_refusal(self, info: CommandInfo, argv: list[bytes]) -> bytes | None:
        error = command_error(info, argv)
        if error is None and self.acl_user is not None:  # (Redis checks the ACL first)
            error = self.acl_denial(info, argv)
        if error is None and info.name not in ALLOWED_SUBSCRIBED:
            error = subscribed_mode_error(info.name)
            if info.name == b"EXEC":  # Redis words any refusal of EXEC as an abort
                error = exec_aborted_by(error)
        return error

    def auth_batch(self, commands: Batch) -> None:
        """Before AUTH (a password is set): only AUTH, HELLO, QUIT and RESET run (Redis's
        ``no-auth`` commands); the others get NOAUTH -- after an unknown command's or a wrong
        arity's error, which Redis gives first. The rest of the batch goes to the stateless
        mode once the client has authenticated."""
        self.gated(commands, self._auth_refusal, self.auth_batch)

    def _auth_refusal(self, info: CommandInfo, argv: list[bytes]) -> bytes | None:
        error = command_error(info, argv) if self.router.table_loaded else None
        if error is None and info.name not in NO_AUTH and argv[0].upper() not in NO_AUTH:
            error = errors.NOAUTH
        return error

    def _acl_refusal(self, info: CommandInfo, argv: list[bytes]) -> bytes | None:
        """A restricted user's command: an unknown command's or a wrong arity's error first,
        as Redis, then the ACL's."""
        error = command_error(info, argv) if self.router.table_loaded else None
        return error if error is not None else self.acl_denial(info, argv)

    def acl_denial(self, info: CommandInfo, argv: list[bytes]) -> bytes | None:
        """None if the client's ACL user may run this command (Redis ACLCheckAllPerm), else
        Redis's NOPERM error, and the denial is in ACL LOG."""
        user = self.acl_user
        if user is None:
            return None
        if not self.router.table_loaded:  # (the rules are applied to the cluster's table)
            return errors.NO_TOPOLOGY
        host = self.host
        result, pos = host.acl.check(user, info, argv, self.router.table)
        if result == acl.OK:
            return None
        obj = info.name.lower() if result == acl.DENIED_CMD else argv[pos]
        host.acl.log.add(_DENIAL_REASONS[result],
                         acl.MULTI if self.client.multi is not None else acl.TOPLEVEL,
                         obj, user.name, local_commands.client_line(self.info()),
                         host.view.now_ms)
        if result == acl.DENIED_CMD:
            return errors.noperm_command(info.name)
        return errors.NOPERM_KEY if result == acl.DENIED_KEY else errors.NOPERM_CHANNEL

    def checked_dispatch(self, argv: list[bytes], enc: bytes) -> None:
        """``dispatch``, after the ACL check of a restricted user."""
        if self.acl_user is not None:
            info = self.router.table.lookup(argv)
            error = self._acl_refusal(info, argv)
            if error is not None:
                info.calls += 1
                self.reply_local(error, enc)
                return
        self.dispatch(argv, enc)

    def gated(self, commands: Batch,
              refusal: Callable[[CommandInfo, list[bytes]], bytes | None],
              mode: Callable[[Batch], None]) -> None:
        """The loop of a mode that lets only some commands run: ``refusal`` gives the error
        of one that may not (it is answered, and counted); the others are dispatched. The rest
        of the batch goes to the next mode once a command has left this one."""
        table = self.router.table
        batch = iter(commands)
        for argv, enc in batch:
            info = table.lookup(argv)
            error = refusal(info, argv)
            if error is not None:
                info.calls += 1
                self.reply_local(error, enc)
                continue
            self.dispatch(argv, enc)
            if self.closing:
                return
            if self.on_commands != mode:
                self.hand_over(batch)
                return

    # -- CLIENT REPLY OFF / SKIP, CLIENT KILL ---------------------------------------------------
    def quiet_batch(self, commands: Batch) -> None:
        """CLIENT REPLY OFF or SKIP: commands run as usual, their replies are dropped (all of
        them while OFF, the next command's after SKIP); back to the stateless mode at ON."""
        client = self.client
        batch = iter(commands)
        for argv, enc in batch:
            skip_next = client.reply == REPLY_SKIP_NEXT
            if skip_next:
                client.reply = REPLY_ON
            before = len(self.queue)
            self.checked_dispatch(argv, enc)
            if skip_next or client.reply == REPLY_OFF:  # (CLIENT REPLY ON is answered)
                queue = self.queue
                for i in range(before, len(queue)):
                    self.silent.add(id(queue[i]))
                self.special = True
            if self.closing:
                return
            if client.reply == REPLY_ON and self.on_commands == self.quiet_batch:
                self.leave_mode()
            if self.on_commands != self.quiet_batch:
                self.hand_over(batch)
                return

    def kill_clients(self, kill: Kill) -> None:
        """CLIENT KILL: close the matching clients (this one after its reply)."""
        host = self.host
        killed = 0
        close_me = False
        for session in host.all_sessions():
            if kill.addr is not None and session.peer.encode() != kill.addr:
                continue
            if kill.laddr is not None and session.laddr.encode() != kill.laddr:
                continue
            if kill.kind is not None and kill.kind != (
                    b"pubsub" if session.client.subscribed else b"normal"):
                continue
            if kill.client_id and session.id != kill.client_id:
                continue
            if kill.user is not None and session.client.user.name != kill.user:
                continue
            if session is self:
                if kill.skipme:
                    continue
                close_me = True
            else:
                session.close()
            killed += 1
        if kill.old_form:
            self.reply_local(resp.OK if killed else errors.error_reply(b"ERR No such client"))
        else:
            self.reply_local(resp.integer(killed))
        if close_me:
            self.closing = True

    def push(self, frame: bytes) -> None:
        """``Subscriber``: a message for this client, after the replies before it. With none
        pending (the common case) it goes to ``outbox``, written at the next flush: no
        request per message and subscriber (a third of the fan-out's cost)."""
        if self.closed:
            return
        if self.client.protocol == 3:
            frame = as_push(frame)
        if self.queue:
            self.reply_local(frame)
            return
        self.outbox.append(frame)
        self.special = True
        if not self.dirty:
            self.wake()

    def cross_slot(self, argv: list[bytes], info: CommandInfo) -> None:
        """Keys in several slots: split (MGET, MSET, DEL, ...), emulate a read-only command
        from per-key reads (SUNION, ZINTER, PFCOUNT, ...), or Redis's CROSSSLOT."""
        split = plan_cross_slot_split(info.name, argv)
        if isinstance(split, bytes):
            self.reply_local(split)
            return
        if split is not None:
            self.stats.cross_slot_splits += 1
            self.run_parts(split.parts, split.merge, info.readonly)
            return
        plan = plan_read(argv)
        writes = self.host.config.commands.cross_slot_writes == "emulate"
        if isinstance(plan, ReadPlan) or (plan is None and writes):
            if self.client.protocol == 3 and self.queue:
                # Computed on the RESP2 connections: after the client's earlier replies.
                self.defer(argv, encode_command(argv))
                return
        if plan is None and writes:
            steps = plan_write(argv)
            if isinstance(steps, bytes):
                self.reply_local(steps)
            elif steps is not None:
                self.stats.cross_slot_emulations += 1
                self.run_steps(steps, convert=self.converter(argv))
                # Its later rounds go out after the client's next commands would: those wait
                # for its reply, so that none overtakes it (a GET of the key it writes).
                self.start_drain([])
            else:
                self.reply_local(errors.CROSSSLOT)
            return
        if plan is None:
            self.reply_local(errors.CROSSSLOT)
        elif isinstance(plan, bytes):
            self.reply_local(plan)
        else:
            positions = info.key_positions(argv)
            if len(positions) != len(plan.reads):  # the table and the plan disagree: refuse
                self.reply_local(errors.CROSSSLOT)
                return
            parts = [(key_slot(argv[pos]), read) for pos, read in zip(positions, plan.reads)]
            self.stats.cross_slot_emulations += 1
            convert = self.converter(argv)
            if convert is None:
                self.run_parts(parts, plan.compute, True)
            else:
                compute = plan.compute
                self.run_parts(parts, lambda raw: convert(compute(raw)), True,
                               table=self.emulation_table())
                self.start_drain([])

    def converter(self, argv: list[bytes]) -> Callable[[bytes], bytes] | None:
        """For a RESP3 client, how a reply rproxy computes in RESP2 for ``argv`` becomes
        RESP3 (rproxy/core/resp3.py); None for a RESP2 client."""
        if self.client.protocol != 3:
            return None
        return lambda raw: to_resp3(argv, raw)

    def emulation_table(self) -> list[BackendConnection | None]:
        """Where the rounds of an emulated command go: the masters on RESP2 connections (the
        emulations read RESP2), on the client's leases if it holds any (RESP2 clients)."""
        return self.slot_conn if self.client.protocol == 2 else self.host.router.slot_conn

    def run_parts(self, parts: list[tuple[int, list[bytes]]], merge: Merge, readonly: bool,
                  parent: Request | None = None,
                  table: list[BackendConnection | None] | None = None) -> FanOut:
        """Send each (slot, argv) part to its master in parallel; ``merge`` builds the reply.
        Queued as this client's next reply unless it serves a multi-step ``parent``. Parts go
        to masters (Router.route, inlined) by ``table``: by default the client's, on its
        leases if it holds any (after the commands it sent there before)."""
        fan = FanOut(self if parent is None else None, len(parts), merge)
        if parent is None:
            fan[2] = self.command  # DATA: the client's command
            self.queue.append(fan)
        router = self.router
        slot_conn = self.slot_conn if table is None else table
        for i, (slot, sub) in enumerate(parts):
            data = encode_command(sub)
            child = [None, None, data, slot, readonly, 0, fan, i]  # fan.child, inlined
            conn = slot_conn[slot]
            if conn is None:
                router.route(child)  # it knows the error to give
            else:
                conn.send(child, data)
        return fan

    def run_steps(self, steps: WritePlan, parent: Request | None = None,
                  convert: Callable[[bytes], bytes] | None = None) -> None:
        """A multi-step plan (cross-slot write emulation): each batch it yields runs in
        parallel, its replies are sent back into the plan, until the plan returns the reply
        (``convert``: into the client's protocol). Commands of a batch with the same routing
        key go in order on one connection. The reply is the client's next one, or
        ``parent``'s (a command of a transaction)."""
        if parent is None:
            parent = new_request(self, self.command)
            self.queue.append(parent)
        table = self.emulation_table()

        def advance(replies: list[bytes] | None) -> bytes:
            try:
                batch = next(steps) if replies is None else steps.send(replies)
            except StopIteration as stop:
                complete(parent, stop.value if convert is None else convert(stop.value))
                return b""
            except Exception as exc:  # a plan must never take the proxy down
                log.exception("write_plan_failed", client_id=self.id)
                complete(parent, errors.not_supported(b"cross-slot write", type(exc).__name__))
                return b""
            parts = [(key_slot(key), argv) for key, argv in batch]
            self.run_parts(parts, advance, False, parent, table)
            return b""

        advance(None)

    def fan_out(self, enc: bytes, merge: Merge, readonly: bool,
                every_node: bool = False) -> Request | bytes:
        """Send ``enc`` to every master (or every node, replicas included); returns the
        request whose merged reply answers the client (the caller queues it), or an error.
        A master's part carries the master's first slot: re-sent after a failover, it goes
        to whoever serves that slot then."""
        router = self.router
        targets = self.cluster.all_nodes() if every_node else router.masters
        if not targets or not router.table_loaded:
            return errors.NO_TOPOLOGY
        slots = [-1] * len(targets) if every_node else router.master_slots
        parent = FanOut(self, len(targets), merge)
        parent[2] = self.command  # DATA: the client's command
        for i, conn in enumerate(targets):
            child = parent.child(i, enc, slots[i], readonly)
            if conn.state == CLOSED:  # the cluster already has a replacement queued
                router.route(child)
            else:
                conn.send(child, enc)
        return parent

    def reply_local(self, data: bytes, enc: bytes = b"") -> None:
        """A reply the proxy made to ``enc`` (default: the command ``dispatch`` runs); an
        error is counted by command and code (a node's error replies are counted by the shared
        pool: rproxy/net/pool.py)."""
        req = new_request(None, enc or self.command)
        if data[:1] == b"-":
            self.stats.errors.add(self.router.name_of(req[DATA]), data)
        req[REPLY] = data
        self.queue.append(req)
        if not self.dirty:
            self.wake()

    def wake(self) -> None:
        """Send the completed replies at the end of the reactor's batch (``ReplyOwner``)."""
        self.dirty = True
        self.reactor.dirty_clients.append(self)

    def info(self) -> ClientInfo:
        """This client's row of CLIENT LIST."""
        now = self.host.now
        client = self.client
        flags = b"P" if client.subscribed else b""
        if client.multi is not None:
            flags += b"x"
        if self.blocked is not None and self.blocked[REPLY] is None:
            flags += b"b"
        subs = client.subs.by_kind if client.subs is not None else ({}, {}, {})
        return ClientInfo(self.id, self.peer, self.fd, client.name, int(now - self.started),
                          int(now - self.last_active), self.parser.buffered, len(self.queue),
                          len(self.wbuf), self.laddr, flags or b"N", len(subs[0]),
                          len(subs[1]), len(subs[2]),
                          len(client.multi.commands) if client.multi is not None else -1,
                          client.protocol, client.user.name)

    # -- output -----------------------------------------------------------------------------
    def flush(self) -> None:
        self.dirty = False
        if self.closed:
            return
        q = self.queue
        if self.special:  # pub/sub messages, CLIENT REPLY OFF, WAIT: ``_write_special``
            self._write_special()
            if self.closed:
                return
        elif q and q[0][0] is not None:  # [0]: REPLY
            head = q.popleft()
            first = head[0]
            if q and q[0][0] is not None:
                out = [first]
                while q and q[0][0] is not None:
                    out.append(q.popleft()[0])
                self.timed(head, len(out))
                self._write(b"".join(out))  # type: ignore[arg-type]
            else:
                self.timed(head, 1)
                self._write(first)  # type: ignore[arg-type]
            if self.closed:
                return
        if not q and self.held is not None:
            self._end_drain()
            if self.closed or q:
                return
        if not q:
            if self.closing or self.eof:
                if not self.wbuf:
                    self.close()
                return
        if (not self.reading and not self.closing and not self.eof
                and len(q) <= self.max_pending // 2):
            self._resume_reading()

    def timed(self, head: Request, n: int) -> None:
        """``n`` replies are leaving, ``head`` first. Their read was ``reads[0]``'s (the
        oldest read not answered in full): if that was at least the slow log's threshold ago,
        ``head`` is logged -- the reply this flush waited for, the others queued behind it."""
        start = self.done
        self.done = done = start + n
        reads = self.reads
        while reads and reads[0][0] <= start:  # (reads that queued nothing)
            reads.popleft()
        if reads:
            elapsed = self.reactor.now - reads[0][1]
            if elapsed >= self.slowlog.slower_than:
                self.slow(head, elapsed)
            while reads and reads[0][0] <= done:
                reads.popleft()

    def slow(self, req: Request, elapsed: float) -> None:
        """A slow log entry for ``req``, unless it blocks by design (a blocking command,
        WAIT) or Redis keeps it out of its slow log (``skip_slowlog``: EXEC ...); secrets are
        redacted as Redis redacts them (AUTH, HELLO AUTH, CONFIG SET requirepass ...)."""
        data = req[DATA]
        if not data or req is self.blocked:
            return
        table = self.router.table
        info = table.lookup_encoded(data)
        if (b"skip_slowlog" in info.flags or info.route is _LEASED or info.name in _WAITS
                or (info.name in _XREADS and table.blocks(info, decode_command(data)))):
            return
        if info.name in REDACTS:  # never a password in the log, as Redis
            data = encode_command(redact(info.name, decode_command(data)))
        self.slowlog.push(data, int(elapsed * 1e6), int(time.time()), self.peer.encode(),
                          self.client.name or b"")

    def _write_special(self) -> None:
        """``flush``'s writing for a client with something more to do (``special``): pub/sub
        messages in the outbox go first (nothing was queued before them); the master of each
        reply is noted for a client that used WAIT (``note_writes``); the replies CLIENT REPLY
        OFF / SKIP silenced are dropped. The plain path pays one check for all three."""
        if self.outbox:
            out, self.outbox = self.outbox, []
            self._write(out[0] if len(out) == 1 else b"".join(out))
            if self.closed:
                return
        q, silent = self.queue, self.silent
        if self.wrote is not None and q and q[0][0] is not None:
            self.note_writes()
        replies = []
        head, n = None, 0
        while q and q[0][0] is not None:
            req = q.popleft()
            if head is None:
                head = req
            n += 1
            if silent and id(req) in silent:
                silent.discard(id(req))
            else:
                replies.append(req[0])
        self.special = bool(silent) or self.wrote is not None
        if head is not None:
            self.timed(head, n)
        if replies:
            self._write(b"".join(replies))

    def _output_limits(self) -> None:
        """The output buffer limits of the client's kind (a subscriber's or a normal one's)."""
        limits = self.host.config.limits
        if self.client.subscribed:
            self.output_limit = limits.pubsub_output_buffer_limit
            self.soft_limit = limits.pubsub_output_buffer_soft_limit
            self.soft_s = limits.pubsub_output_buffer_soft_s
        else:
            self.output_limit = limits.output_buffer_limit
            self.soft_limit = limits.output_buffer_soft_limit
            self.soft_s = limits.output_buffer_soft_s

    def _write(self, data: bytes) -> None:
        self.stats.client_output_bytes += len(data)
        if self.wbuf:
            self.wbuf += data
            size = len(self.wbuf)
            if size > self.output_limit:
                log.warning("output_buffer_limit", client_id=self.id, bytes=size)
                self.close()
            elif self.soft_limit and size > self.soft_limit:
                # The soft limit: over it for longer than soft_s (Redis's
                # client-output-buffer-limit <class> <hard> <soft> <seconds>)
                now = self.host.now
                if not self.soft_since:
                    self.soft_since = now
                elif now - self.soft_since > self.soft_s:
                    log.warning("output_buffer_soft_limit", client_id=self.id, bytes=size,
                                seconds=round(now - self.soft_since, 1))
                    self.close()
            else:
                self.soft_since = 0.0
            return
        try:
            n = self.transport.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            self.close()
            return
        if n < len(data):
            self.wbuf += memoryview(data)[n:]
            self._update_events()

    def _write_more(self) -> None:
        if not self.wbuf:
            return
        try:
            n = self.transport.send(self.wbuf)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        del self.wbuf[:n]
        if len(self.wbuf) <= self.soft_limit:
            self.soft_since = 0.0
        if not self.wbuf:
            self._update_events()
            if (self.closing or self.eof) and not self.queue:
                self.close()

    def _update_events(self) -> None:
        if self.closed:
            return
        events = (EPOLLIN if self.reading else 0) | (EPOLLOUT if self.wbuf else 0)
        self.reactor.modify(self.fd, events)

    def _stop_reading(self, closing: bool = False) -> None:
        if closing:
            self.closing = True
        if self.reading:
            self.reading = False
            self._update_events()
        if closing and not self.queue and not self.dirty:
            self.close()

    def _resume_reading(self) -> None:
        self.reading = True
        self._update_events()

    def _on_eof(self) -> None:
        """The client shut down its side: answer what it already sent, then close -- unless
        it is blocked: a block may last for ever, and Redis frees a client at EOF, ending its
        block (the lease is closed, the node pops nothing for it)."""
        self.eof = True
        self._stop_reading()
        if (not self.queue and not self.wbuf) or (
                self.blocked is not None and self.blocked[REPLY] is None):
            self.close()

    # -- life cycle -------------------------------------------------------------------------
    def abort(self, exc: BaseException) -> None:
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.reactor.unregister(self.fd)
        try:
            self.transport.close()
        except OSError:
            pass
        self.queue.clear()
        self.silent.clear()
        self.outbox = []
        self.wbuf = bytearray()
        if self.leases:  # nobody is left to EXEC: the watches go, the leases back
            self.give_back_lease(unwatch=True)
        if self.blocked is not None and self.blocked[REPLY] is None:
            self.blocked.abandon()  # the node ends the block: nothing is popped for nobody
        if self.client.subs is not None:
            self.cluster.pubsub.remove_all(self, self.client.subs)
        self.host.on_session_closed(self)
