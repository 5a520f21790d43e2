"""The proxy server: listener, client admission and limits, graceful drain.

``ProxyServer.serve`` is a trio task: ``port = await nursery.start(server.serve)`` returns
once the listening socket is bound and the first topology attempt has finished (successful or
not: the proxy serves fast errors until a node answers, and recovers by itself).
``shutdown()`` stops accepting, lets in-flight requests finish for up to
``timeouts.shutdown_grace_s``, then closes everything.
"""

from __future__ import annotations

import itertools
import socket
import time

import structlog
import trio

from rproxy.core import errors
from rproxy.net.cluster import Cluster
from rproxy.core.config import Config
from rproxy.net.reactor import EPOLLIN, Reactor
from rproxy.net.session import ClientSession

log = structlog.get_logger("rproxy.net.server")


class _Listener:
    def __init__(self, server: ProxyServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock

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
            server.admit(conn, addr)

    def abort(self, exc: BaseException) -> None:
        log.error("listener_failed", error=str(exc))


class ProxyServer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.reactor = Reactor(config.proxy.busy_poll_us)
        self.cluster = Cluster(config, self.reactor)
        self.sessions: dict[int, ClientSession] = {}
        self.session_started: dict[int, float] = {}
        self.port = 0
        self.started_at = time.time()
        self.now = time.monotonic()
        self.connections_received = 0
        self.commands_processed = 0
        self.rejected_connections = 0
        self._ids = itertools.count(1)
        self._listen_sock: socket.socket | None = None
        self._shutdown = trio.Event()
        self.stopped = trio.Event()

    # -- admission ----------------------------------------------------------------------------
    def admit(self, sock: socket.socket, addr: tuple[str, int] | tuple[str, int, int, int]) -> None:
        self.connections_received += 1
        if len(self.sessions) >= self.config.limits.max_clients:
            # Redis writes the error best-effort, then closes (src/networking.c).
            self.rejected_connections += 1
            try:
                sock.setblocking(False)
                sock.send(errors.MAX_CLIENTS)
            except OSError:
                pass
            sock.close()
            return
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client_id = next(self._ids)
        session = ClientSession(self, sock, f"{addr[0]}:{addr[1]}", client_id)
        now = time.monotonic()
        session.last_active = now
        self.sessions[client_id] = session
        self.session_started[client_id] = now
        self.reactor.register(session.fd, EPOLLIN, session)

    def on_session_closed(self, session: ClientSession) -> None:
        self.sessions.pop(session.id, None)
        self.session_started.pop(session.id, None)

    # -- running ------------------------------------------------------------------------------
    def _bind(self) -> socket.socket:
        host, port = self.config.listen_addr
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
        sock = self._bind()
        self._listen_sock = sock
        self.port = sock.getsockname()[1]
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.reactor.run)
                await nursery.start(self.cluster.run)
                with trio.move_on_after(self.config.timeouts.connect_timeout_s * 2):
                    await self.cluster.ready.wait()
                self.reactor.register(sock.fileno(), EPOLLIN, _Listener(self, sock))
                nursery.start_soon(self._housekeeping)
                log.info("listening", address=f"{self.config.listen_addr[0]}:{self.port}",
                         ready=self.cluster.ready.is_set())
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

    @property
    def draining(self) -> bool:
        return self._shutdown.is_set()

    def _close_listener(self) -> None:
        if self._listen_sock is not None:
            self.reactor.unregister(self._listen_sock.fileno())
            self._listen_sock.close()
            self._listen_sock = None

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
        idle = self.config.timeouts.client_idle_s
        while True:
            await trio.sleep(0.1)
            self.now = time.monotonic()
            if idle:
                for session in list(self.sessions.values()):
                    if not session.queue and self.now - session.last_active > idle:
                        session.close()
