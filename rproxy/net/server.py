"""The proxy server: listener, client admission and limits, graceful drain.

``ProxyServer.serve`` is a trio task: ``port = await nursery.start(server.serve)`` returns
once the listening socket is bound and the first topology attempt has finished (successful or
not: the proxy serves fast errors until a node answers, and recovers by itself).
``shutdown()`` stops accepting, lets in-flight requests finish for up to
``timeouts.shutdown_grace_s``, then closes everything.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import ssl
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
import trio

from rproxy import __version__
from rproxy.core import errors, local_commands
from rproxy.core.acl import Acl
from rproxy.core.client import ClientInfo
from rproxy.core.commands import CommandTable
from rproxy.core.config import REDACTED_KEYS, Config, ConfigError, parse_addr, set_runtime
from rproxy.core.hotspots import HotSpots
from rproxy.core.pubsub import PubSubView
from rproxy.core.slowlog import Latency, SlowLog
from rproxy.core.stats import Stats
from rproxy.core.topology import Addr, SlotMap
from rproxy.net.backend import READY
from rproxy.net.cluster import ClusterManager
from rproxy.net.metrics import MetricsServer, ProxyFigures
from rproxy.net.reactor import EPOLLIN, Reactor
from rproxy.net.router import Router
from rproxy.net.session import ClientSession
from rproxy.net.transport import TlsTransport, Transport, server_context, tls_accept

log = structlog.get_logger("rproxy.net.server")

HOT_BUCKETS = 6  # the hot-spot window is sampled in this many buckets


class _Listener:
    def __init__(self, server: ProxyServer, sock: socket.socket, tls: bool = False) -> None:
        self.server = server
        self.sock = sock
        self.tls = tls  # the TLS listener: a handshake first (ProxyServer.admit_tls)

    def on_event(self, events: int) -> None:
        server = self.server
        for _ in range(256):  # accept a burst, then let other work run
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: log, keep serving the others
                log.warning("accept_failed", error=str(exc))
                return
            if self.tls:
                server.admit_tls(conn, addr)
            else:
                server.admit(conn, addr)

    def abort(self, exc: BaseException) -> None:
        log.error("listener_failed", error=str(exc))


class ProxyView:
    """The read-only view of the proxy and the cluster that the proxy's own commands get
    (``rproxy.core.local_commands.ProxyView``)."""

    proxy_version = __version__
    os_name = os.uname().sysname
    arch_bits = struct.calcsize("P") * 8

    def __init__(self, server: ProxyServer) -> None:
        self._server = server
        self.process_id = os.getpid()
        self.run_id = secrets.token_hex(20)
        self.read_from = server.router.read_from

    @property
    def redis_version(self) -> str:
        return self._server.cluster.redis_version

    @property
    def max_clients(self) -> int:
        return self._server.config.limits.max_clients

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def uptime_s(self) -> int:
        return int(time.time() - self._server.started_at)

    @property
    def masters(self) -> int:
        return len(self._server.router.masters)

    @property
    def map_epoch(self) -> int:
        return self._server.router.map_epoch

    @property
    def pubsub(self) -> PubSubView:
        return self._server.cluster.pubsub

    @property
    def cross_slot_transactions(self) -> str:
        return self._server.config.commands.cross_slot_transactions

    @property
    def slotmap(self) -> SlotMap | None:
        return self._server.cluster.slotmap

    @property
    def table(self) -> CommandTable:
        return self._server.router.table

    @property
    def hot(self) -> HotSpots:
        return self._server.hot

    def unreachable(self, addr: Addr) -> bool:
        return addr in self._server.cluster.down_since

    def answered(self, name: bytes) -> str | None:
        """None if rproxy answers ``name`` itself, else why it refuses it."""
        return None if local_commands.handled(name) else local_commands.refusal(name)

    def config_items(self) -> list[tuple[str, str]]:
        """Every key and its value; a secret's value as ``(redacted)`` (when it is set)."""
        return [(name, "(redacted)" if name in REDACTED_KEYS and value else
                 ",".join(value) if isinstance(value, list) else str(value))
                for section, keys in self._server.config.to_dict().items()
                for key, value in keys.items() for name in [f"{section}.{key}"]]

    @property
    def acl(self) -> Acl:
        return self._server.acl

    @property
    def now_ms(self) -> int:
        return int(time.time() * 1000)

    @property
    def table_loaded(self) -> bool:
        return self._server.router.table_loaded

    @property
    def cross_slot_writes(self) -> str:
        return self._server.config.commands.cross_slot_writes

    @property
    def cpu_seconds(self) -> tuple[float, float]:
        times = os.times()
        return times.system, times.user

    def stat(self, name: str) -> int:
        gauge = GAUGES.get(name)
        return gauge(self._server) if gauge is not None else self._server.stats.get(name)


    def client(self, client_id: int) -> ClientInfo:
        return self._server.sessions[client_id].info()

    def clients(self) -> Sequence[ClientInfo]:
        return [session.info() for session in self._server.sessions.values()]

    def scan_order(self) -> list[int]:
        return self._server.router.scan_order()

    @property
    def slowlog(self) -> SlowLog:
        return self._server.slowlog


class ProxyServer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.reactor = Reactor(config.proxy.busy_poll_us)
        self.router = Router(config.cluster.read_from)
        self.stats = Stats()
        self.hot = HotSpots(HOT_BUCKETS)  # rotated by _housekeeping
        self.slowlog = SlowLog(config.metrics.slowlog_log_slower_than,
                               config.metrics.slowlog_max_len)
        self.latency = Latency()  # sampled (rproxy/net/timing.py)
        # The users (auth.requirepass, auth.users / aclfile) and ACL LOG: rproxy/core/acl.py
        self.acl = Acl(config.auth.acl_users(), config.auth.acllog_max_len, self.stats)
        self.cluster = ClusterManager(config, self.reactor, self.router, self.stats)
        self.sessions: dict[int, ClientSession] = {}
        self.port = 0
        self.metrics_port = 0  # the metrics endpoint's, once it listens
        # How a new proxy.log_level takes effect (the command line sets it: rproxy.log)
        self.on_log_level: Callable[[str], None] | None = None
        self.started_at = time.time()
        self.now = time.monotonic()
        self.view = ProxyView(self)
        self._ids = itertools.count(1)
        self._listen_socks: list[socket.socket] = []  # the plain listener, the TLS one
        self.tls_port = 0  # the TLS listener's, once it listens
        self._tls_context: ssl.SSLContext | None = None
        self._nursery: trio.Nursery | None = None
        self._shutdown = trio.Event()
        self.stopped = trio.Event()

    # -- admission ----------------------------------------------------------------------------
    def admit(self, sock: socket.socket, addr: tuple[str, int] | tuple[str, int, int, int],
              transport: Transport | None = None) -> None:
        """A client connection (``transport``: past its TLS handshake, if it came in on the
        TLS listener)."""
        self.stats.total_connections_received += 1
        if len(self.sessions) >= self.config.limits.max_clients:
            # Redis writes the error best-effort, then closes (src/networking.c).
            self.stats.rejected_connections += 1
            try:
                sock.setblocking(False)
                (transport or sock).send(errors.MAX_CLIENTS)
            except OSError:
                pass
            sock.close()
            return
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client_id = next(self._ids)
        self.now = time.monotonic()
        session = ClientSession(self, sock, f"{addr[0]}:{addr[1]}", client_id, transport)
        self.sessions[client_id] = session
        self.reactor.register(session.fd, EPOLLIN, session)
        if isinstance(transport, TlsTransport) and transport.buffered:
            session.on_event(EPOLLIN)  # a command that came with the handshake's last bytes

    def admit_tls(self, sock: socket.socket, addr: Any) -> None:
        """A connection to the TLS listener: its handshake runs in a task of its own (within
        tls.handshake_timeout_s), then it is admitted as any client."""
        sock.setblocking(False)
        assert self._nursery is not None and self._tls_context is not None
        self._nursery.start_soon(self._handshake, sock, addr, self._tls_context)

    async def _handshake(self, sock: socket.socket, addr: Any, ctx: ssl.SSLContext) -> None:
        try:
            transport = await tls_accept(sock, ctx, self.config.tls.handshake_timeout_s)
        except (OSError, trio.TooSlowError) as exc:  # ssl.SSLError is an OSError
            self.stats.tls_handshake_failures += 1
            log.info("tls_handshake_failed", peer=f"{addr[0]}:{addr[1]}",
                     error=str(exc) or type(exc).__name__)
            sock.close()
            return
        except BaseException:
            sock.close()
            raise
        if self.draining:
            sock.close()
            return
        self.admit(sock, addr, transport)
        self.reactor.flush()

    def reload_tls(self) -> None:
        """SIGHUP: the listener's certificate and key (and CA) read again, for the handshakes
        from now on; a file that does not load keeps the ones in use (logged)."""
        tls = self.config.tls
        if not tls.listen:
            return
        try:
            self._tls_context = server_context(tls.cert_file, tls.key_file, tls.ca_cert_file,
                                               tls.auth_clients, tls.ciphers, tls.min_version)
        except (OSError, ValueError) as exc:
            log.error("tls_reload_failed", error=str(exc))
            return
        log.info("tls_reloaded", cert_file=tls.cert_file)

    def session_by_id(self, client_id: int) -> ClientSession | None:
        return self.sessions.get(client_id)

    def all_sessions(self) -> list[ClientSession]:
        return list(self.sessions.values())

    def on_session_closed(self, session: ClientSession) -> None:
        self.sessions.pop(session.id, None)

    # -- running ------------------------------------------------------------------------------
    def _bind(self, host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.config.proxy.workers != 1:  # several processes share the port
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``shutdown()`` (or cancellation). Reports the bound port."""
        sock = self._bind(*self.config.listen_addr)
        self._listen_socks = [sock]
        self.port = sock.getsockname()[1]
        tls = self.config.tls
        tls_sock = None
        try:
            if tls.listen:
                self._tls_context = server_context(tls.cert_file, tls.key_file,
                                                   tls.ca_cert_file, tls.auth_clients,
                                                   tls.ciphers, tls.min_version)
                tls_sock = self._bind(*parse_addr(tls.listen, "tls.listen"))
                self._listen_socks.append(tls_sock)
                self.tls_port = tls_sock.getsockname()[1]
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.reactor.run)
                await nursery.start(self.cluster.run)
                if self.config.metrics.listen:  # /metrics, /healthz, /readyz
                    figures = ProxyFigures(self.view.stat, lambda: self.router.table.calls(),
                                           self.stats.errors, self.latency, self.hot)
                    server = MetricsServer(figures, self.cluster, self.config.metrics,
                                           self.config.timeouts.connect_timeout_s)
                    self.metrics_port = await nursery.start(
                        server.serve, parse_addr(self.config.metrics.listen, "metrics.listen"))
                with trio.move_on_after(self.config.timeouts.connect_timeout_s * 2):
                    await self.cluster.ready.wait()
                self.reactor.register(sock.fileno(), EPOLLIN, _Listener(self, sock))
                if tls_sock is not None:
                    self.reactor.register(tls_sock.fileno(), EPOLLIN,
                                          _Listener(self, tls_sock, tls=True))
                nursery.start_soon(self._housekeeping)
                log.info("listening", address=f"{self.config.listen_addr[0]}:{self.port}",
                         ready=self.cluster.ready.is_set(),
                         tls=f"{parse_addr(tls.listen, 'tls.listen')[0]}:{self.tls_port}"
                         if tls_sock is not None else None)
                task_status.started(self.port)
                await self._shutdown.wait()
                await self._drain()
                nursery.cancel_scope.cancel()
        finally:
            self._close_listener()
            for session in list(self.sessions.values()):
                session.close()
            self.cluster.close()
            self.stopped.set()

    def shutdown(self) -> None:
        self._shutdown.set()

    def set_config(self, key: str, value: str) -> bytes:
        """PROXY CONFIG SET: one runtime key, applied as SIGHUP applies it."""
        try:
            config = set_runtime(self.config, key, value)
        except ConfigError as exc:
            return errors.error_reply(b"ERR " + str(exc).encode())
        self.reconfigure(config)
        if key == "proxy.log_level" and self.on_log_level is not None:
            self.on_log_level(config.proxy.log_level)
        log.info("config_set", key=key, value=value)
        return b"+OK\r\n"

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: run from now on with ``config`` (its runtime keys changed only:
        ``rproxy.core.config.reload_plan``); they are read where they are used."""
        self.config = config
        for plane in self.cluster.planes():
            plane.config = config
        self.slowlog.configure(config.metrics.slowlog_log_slower_than,
                               config.metrics.slowlog_max_len)

    @property
    def draining(self) -> bool:
        return self._shutdown.is_set()

    def _close_listener(self) -> None:
        for sock in self._listen_socks:
            self.reactor.unregister(sock.fileno())
            sock.close()
        self._listen_socks = []

    async def _drain(self) -> None:
        """Stop accepting; keep serving open connections until each is quiet (nothing pending,
        nothing received for 0.2 s) or ``shutdown_grace_s`` has passed; then the caller closes
        everything."""
        self._close_listener()
        grace = self.config.timeouts.shutdown_grace_s
        log.info("draining", clients=len(self.sessions), grace_s=grace)
        with trio.move_on_after(grace):
            # A connection is done when nothing is pending for it and it has sent nothing for
            # a moment: requests still in its socket buffer are read and answered first.
            while any(s.queue or s.wbuf or time.monotonic() - s.last_active < 0.2
                      for s in self.sessions.values()):
                await trio.sleep(0.02)

    async def _housekeeping(self) -> None:
        """Keeps ``now`` current (a cheap timestamp for the data path, at most 0.1 s old) and
        closes idle clients (so ``client_idle_s`` is honoured to within 0.1 s)."""
        bucket_s = self.config.metrics.hot_window_s / HOT_BUCKETS
        rotate_at = time.monotonic() + bucket_s
        acl_checked = False
        while True:
            await trio.sleep(0.1)
            self.now = time.monotonic()
            if not acl_checked and self.router.table_loaded:
                # The users' rules against the cluster's commands, once: say which user a rule
                # made unusable (a command the cluster does not know), as Redis would refuse it
                acl_checked = True
                self.acl.catalogue(self.router.table)
                for name, error in self.acl.broken.items():
                    log.error("acl_user_unusable", user=name.decode(errors="replace"),
                              error=error)
            if self.now >= rotate_at:
                self.hot.rotate()
                rotate_at = self.now + bucket_s
            idle = self.config.timeouts.client_idle_s  # (SIGHUP may change it)
            if idle:
                for session in list(self.sessions.values()):
                    if (not session.queue and self.now - session.last_active > idle
                            and not session.client.subscribed):  # (as Redis: subscribers stay)
                        session.close()


GAUGES: dict[str, Callable[[ProxyServer], int]] = {
    # How each GAUGE of rproxy.core.stats.STATS is read (tests/unit/test_stats.py: all of them).
    "connected_clients": lambda s: len(s.sessions),
    "blocked_clients": lambda s: sum(1 for c in s.sessions.values()
                                     if c.blocked is not None and c.blocked[0] is None),  # REPLY
    "backend_connections": lambda s: sum(len(p.connections()) for p in s.cluster.planes()),
    "held_requests": lambda s: sum(p.held() for p in s.cluster.planes()),
    "slotmap_epoch": lambda s: s.router.map_epoch,
    "slotmap_age_seconds": lambda s: int(time.monotonic() - s.cluster.map_read_at)
    if s.cluster.map_read_at else 0,
    "backend_connections_ready": lambda s: sum(
        1 for p in s.cluster.planes() for c in p.connections() if c.state == READY),
    "slowlog_len": lambda s: len(s.slowlog.entries),
    "failed_masters": lambda s: len(s.cluster.slotmap.failed) if s.cluster.slotmap else 0,
    "unreachable_nodes": lambda s: len(s.cluster.down_since),
    "cluster_reachable": lambda s: 0 if s.cluster.unreachable else 1,
    "leased_connections": lambda s: sum(p.leases.leased for p in s.cluster.planes()),
    "pubsub_clients": lambda s: sum(1 for c in s.sessions.values() if c.client.subscribed),
    "pubsub_channels": lambda s: len(s.cluster.pubsub.subscribers[0]),
    "pubsub_patterns": lambda s: len(s.cluster.pubsub.subscribers[1]),
    "pubsubshard_channels": lambda s: len(s.cluster.pubsub.subscribers[2]),
    "subscriber_connections": lambda s: len(s.cluster.pubsub.connections()),
}
