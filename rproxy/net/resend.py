"""Raw requests that are sent again whole: a transaction's block, a blocking command.

Their parts are *raw*: the shared pool (rproxy/net/pool.py) delivers their error replies as
they are and never resends one part alone. When the node refused the whole request without
running it, ``follow`` acts on ``rproxy.core.redirect``'s decision for all of it: MOVED (point
the slot at the new owner, send there), ASK (``ASKING`` first, map unchanged), TRYAGAIN and a
failing-over cluster (send again after a pause growing to 0.5 s, until ``failover_hold_s``),
too many redirects (fail). A subclass says how to send (``send_again``) and when the request is
complete (``child_done``).
"""

from __future__ import annotations

import time
from typing import Protocol

import trio

from rproxy.core import errors
from rproxy.core.redirect import FOLLOW_ASK, FOLLOW_MOVED, HOLD, TO_MASTER, TRY_AGAIN, Redirect
from rproxy.core.request import REPLY, FanOut, finish, settled_elsewhere
from rproxy.core.stats import Stats
from rproxy.core.topology import Addr
from rproxy.net.backend import BackendConnection
from rproxy.net.reactor import Reactor
from rproxy.net.router import Router


class Scheduler(Protocol):
    """What a request needs from the cluster manager to be sent again."""

    nursery: trio.Nursery | None
    stats: Stats

    def conn_for_addr(self, addr: Addr) -> BackendConnection: ...
    def request_refresh(self) -> None: ...


class Resent(FanOut):
    __slots__ = ("router", "cluster", "reactor", "max_redirects", "hold_s", "backoff_s",
                 "hops", "since", "host")
    raw = True

    def __init__(self, owner: object, n: int, router: Router, cluster: Scheduler,
                 reactor: Reactor, max_redirects: int, hold_s: float, backoff_s: float) -> None:
        super().__init__(owner, n, settled_elsewhere)
        self.router = router
        self.cluster = cluster
        self.reactor = reactor
        self.max_redirects = max_redirects
        self.hold_s = hold_s
        self.backoff_s = backoff_s
        self.hops = 0  # redirects and resends so far
        self.since = 0.0  # when it first had to wait (TRYAGAIN, a failover)
        self.host = ""  # the host of the node it was last sent to (for MOVED ":port")

    def send_again(self, addr: Addr | None = None, asking: bool = False) -> None:
        """Send the whole request to ``addr`` (default: where the slot is now)."""
        raise NotImplementedError

    def follow(self, decision: Redirect) -> None:
        """Act on a decision other than DELIVER for the whole request."""
        kind = decision.kind
        if kind == FOLLOW_MOVED or kind == FOLLOW_ASK:
            self.hops += 1
            assert decision.addr is not None
            stats = self.cluster.stats
            if kind == FOLLOW_MOVED:
                stats.moved_redirects += 1
                self.router.point(decision.slot, self.cluster.conn_for_addr(decision.addr))
                self.cluster.request_refresh()
            else:
                stats.ask_redirects += 1
            self.send_again(decision.addr, asking=kind == FOLLOW_ASK)
        elif kind == TRY_AGAIN or kind == HOLD or kind == TO_MASTER:
            if kind == TRY_AGAIN:
                self.hops += 1
                self.cluster.stats.tryagain_retries += 1
            else:
                self.cluster.request_refresh()
            self._later()
        else:  # FAIL
            self.answer(errors.TOO_MANY_REDIRECTS)

    def resend_unsent(self) -> None:
        """Its connection was lost before it was written: nothing ran, send it again -- at
        once the first time (a connection that just broke), then after pauses while the node
        stays unreachable (a dead master until the failover: as the shared pool's hold),
        failing with HOLD_EXPIRED past ``failover_hold_s``."""
        self.hops += 1
        if self.hops == 1:
            self.send_again()
        else:
            self.cluster.request_refresh()
            self._later()

    def answer(self, reply: bytes) -> None:
        self[REPLY] = reply
        finish(self)

    def _later(self) -> None:
        now = time.monotonic()
        if not self.since:
            self.since = now
        nursery = self.cluster.nursery
        if now - self.since >= self.hold_s or nursery is None:
            self.answer(errors.HOLD_EXPIRED)
            return
        pause = min(max(self.backoff_s, (now - self.since) / 4), 0.5)
        nursery.start_soon(self._send_after, pause)

    async def _send_after(self, pause: float) -> None:
        await trio.sleep(pause)
        if self[REPLY] is None:  # (not answered meanwhile: the client left, say)
            self.send_again()
            self.reactor.flush()

