"""The data plane's event loop: one trio task driving a private epoll.

Trio's own I/O waits register and unregister a file descriptor on every wait; for a proxy that
waits on the same sockets millions of times that churn was 12 % of the CPU (see DESIGN.md,
"Measured"). Here the sockets stay registered in one epoll instance for their whole life and one
trio task waits until it is readable, then runs the ready handlers synchronously and flushes
what they produced: each dirty backend connection with one send, then each dirty client with
one send. Everything else -- topology, timers, connects, shutdown -- is ordinary trio code that
calls into the same objects (single thread, so no locks) and ends with ``flush()``.
"""

from __future__ import annotations

import select
from time import perf_counter
from typing import Any, Protocol

import structlog
import trio

log = structlog.get_logger("rproxy.net.reactor")

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLERR = select.EPOLLERR
EPOLLHUP = select.EPOLLHUP

BUSY_LOOPS = 16


class Handler(Protocol):
    def on_event(self, events: int) -> None: ...
    def abort(self, exc: BaseException) -> None: ...


class Reactor:
    def __init__(self, busy_poll_us: int = 0) -> None:
        self.busy_poll_s = busy_poll_us / 1e6
        self._epoll = select.epoll()
        self._handlers: dict[int, Handler] = {}
        self.dirty_backends: list[Any] = []
        self.dirty_clients: list[Any] = []
        # When the ready handlers last started running (``perf_counter``; or a trio task's
        # flush): one clock read per batch of events, not per command. Sessions time their
        # reads and replies with it (the slow log).
        self.now = perf_counter()
        # Sampled requests waiting for a timestamp (rproxy/net/timing.py): ``sent`` when the
        # backends are flushed, ``written`` once their reply has left for the client.
        self.to_send: list[Any] = []
        self.to_write: list[Any] = []

    def register(self, fd: int, events: int, handler: Handler) -> None:
        self._epoll.register(fd, events)
        self._handlers[fd] = handler

    def modify(self, fd: int, events: int) -> None:
        self._epoll.modify(fd, events)

    def unregister(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. Resource handling: closes the epoll instance on exit; the
        sockets registered in it belong to their handlers."""
        ep = self._epoll
        poll = ep.poll
        handlers = self._handlers
        spin = self.busy_poll_s
        task_status.started()
        busy = 0
        try:
            while True:
                ready = poll(0)
                if not ready and spin:
                    # Busy-poll briefly before sleeping: a backend's reply (or the client's
                    # next request) usually comes within tens of microseconds, and catching it
                    # here skips a sleep and a wake-up through trio that cost more CPU than
                    # the spin, and about 80 us of latency per request at low concurrency.
                    deadline = perf_counter() + spin
                    while not ready and perf_counter() < deadline:
                        ready = poll(0)
                if not ready:
                    busy = 0
                    await trio.lowlevel.wait_readable(ep)
                    continue
                self.now = perf_counter()
                for fd, events in ready:
                    handler = handlers.get(fd)
                    if handler is None:
                        continue
                    try:
                        handler.on_event(events)
                    except Exception as exc:  # one connection's failure is only its own
                        log.exception("handler_failed", fd=fd)
                        handler.abort(exc)
                self._flush()
                # Under load more is ready by the time a batch is flushed: poll again at once,
                # without a round trip through trio's scheduler and its own epoll_wait (7 % of
                # the CPU at pipeline 16) -- but let trio's tasks (timers, topology, connects)
                # run at least every BUSY_LOOPS batches.
                busy += 1
                if busy >= BUSY_LOOPS:
                    busy = 0
                    await trio.lowlevel.checkpoint()
        finally:
            trio.lowlevel.notify_closing(ep)
            ep.close()

    def flush(self) -> None:
        """Send what the handlers produced: backends first (requests), then clients. (For
        the trio tasks: ``now`` is read first, their requests may have waited long.)"""
        self.now = perf_counter()
        self._flush()

    def _flush(self) -> None:
        while self.dirty_backends or self.dirty_clients:
            backends = self.dirty_backends
            if backends:
                self.dirty_backends = []
                if self.to_send:
                    sent = perf_counter()
                    for trace in self.to_send:
                        trace.sent = sent
                    self.to_send = []
                for conn in backends:
                    conn.flush()
            clients = self.dirty_clients
            if clients:
                self.dirty_clients = []
                for session in clients:
                    session.flush()
        if self.to_write:
            done = perf_counter()
            self.to_write = [t for t in self.to_write if not t.written(done)]
