"""A transaction's block on its way to the slot's master, and back.

``TxBlock`` takes the client's EXEC in its reply queue. Its parts -- ``MULTI``, the queued
commands, ``EXEC`` -- are appended in one piece to the slot's connection (shared, pipelined:
nothing of another client can come between them, the reactor being single-threaded). Parts are
*raw*: the shared pool delivers their error replies as they are and never resends one alone
(``raw`` below); when the last part is answered, ``rproxy.core.transaction.exec_outcome``
decides: the EXEC reply goes to the client, or the whole block is sent again where the slot is
now (MOVED: at once, to the new owner; ASK: with ``ASKING`` first; TRYAGAIN and a failing-over
cluster: after a pause, until ``failover_hold_s``). A block whose connection was lost before
EXEC was written is sent again too (a node drops a connection's MULTI state with it); after
EXEC was written, the outcome is unknown and the client is told so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import trio

from rproxy.core import errors
from rproxy.core.redirect import DELIVER, FAIL, FOLLOW_ASK, FOLLOW_MOVED, HOLD, TRY_AGAIN
from rproxy.core.request import DISCARD, REPLY, FanOut, finish
from rproxy.core.resp import encode_command
from rproxy.core.topology import Addr
from rproxy.core.transaction import exec_outcome
from rproxy.net.backend import BackendConnection
from rproxy.net.reactor import Reactor
from rproxy.net.router import Router

ASKING = encode_command([b"ASKING"])


class Scheduler(Protocol):
    """What a block needs from the cluster manager to be sent again."""

    nursery: trio.Nursery | None

    def conn_for_addr(self, addr: Addr) -> BackendConnection: ...
    def request_refresh(self) -> None: ...


class RawRequest(FanOut):
    """A request of one raw part (a WATCH on the client's lease): ``merge`` sees the node's
    reply as it is, and the shared pool neither redirects nor resends it."""

    __slots__ = ()
    raw = True

    def __init__(self, owner: object, merge: Callable[[list[bytes]], bytes]) -> None:
        super().__init__(owner, 1, merge)


class TxBlock(FanOut):
    """The client's EXEC request; its children are the block's parts, in order."""

    __slots__ = ("block", "slot", "hops", "since", "host", "router", "cluster", "reactor",
                 "max_redirects", "hold_s", "backoff_s", "watched")
    raw = True

    def __init__(self, owner: object, block: list[bytes], slot: int, router: Router,
                 cluster: Scheduler, reactor: Reactor, max_redirects: int, hold_s: float,
                 backoff_s: float, watched: bool = False) -> None:
        super().__init__(owner, len(block), _never)
        self.block = block
        self.slot = slot  # the transaction's slot, or a master's lowest slot if keyless
        self.hops = 0
        self.since = 0.0  # when it first had to wait (TRYAGAIN, a failover)
        self.host = ""  # the host of the node it was last sent to (for MOVED ":port")
        self.router = router
        self.cluster = cluster
        self.reactor = reactor
        self.max_redirects = max_redirects
        self.hold_s = hold_s
        self.backoff_s = backoff_s
        self.watched = watched  # on the client's lease after WATCH: never sent again

    def send(self, conn: BackendConnection | None = None, asking: bool = False) -> None:
        """Append the whole block to ``conn`` (default: the slot's master now)."""
        if conn is None:
            conn = self.router.slot_conn[self.slot]
            if conn is None:
                self._answer(self.router.no_conn_error(False))
                return
        n = len(self.block)
        if len(conn.fifo) + n + 1 > conn.max_pending:  # all of it or nothing
            self._answer(errors.BACKEND_BUSY)
            return
        self.parts = [b""] * n
        self.pending = n
        if asking:
            conn.send(DISCARD, ASKING)
        for i, data in enumerate(self.block):
            conn.send([None, None, data, self.slot, False, 0, self, i], data)  # self.child
        self.host = conn.addr[0]

    def child_done(self, index: int, raw: bytes) -> None:
        self.parts[index] = raw
        self.pending -= 1
        if self.pending:
            return
        decision = exec_outcome(self.parts, self.host, self.hops, self.max_redirects)
        kind = decision.kind
        if self.watched and (kind != DELIVER or self.parts[-1] == errors.NOT_SENT):
            # The watches were on the node that refused the block (or on a connection that is
            # gone): nothing ran, and it cannot run elsewhere with them. Nil, as a conflict.
            self._answer(errors.WATCH_NIL)
        elif kind == FOLLOW_MOVED or kind == FOLLOW_ASK:
            self.hops += 1
            assert decision.addr is not None
            target = self.cluster.conn_for_addr(decision.addr)
            if kind == FOLLOW_MOVED:
                self.router.point(decision.slot, target)
                self.cluster.request_refresh()
            self.send(target, asking=kind == FOLLOW_ASK)
        elif kind == TRY_AGAIN or kind == HOLD:
            if kind == TRY_AGAIN:
                self.hops += 1
            else:
                self.cluster.request_refresh()
            self._later()
        elif kind == FAIL:
            self._answer(errors.TOO_MANY_REDIRECTS)
        elif self.parts[-1] == errors.NOT_SENT:  # lost before EXEC left: nothing ran
            self.hops += 1
            if self.hops > self.max_redirects:
                self._answer(errors.OUTCOME_UNKNOWN)
            else:
                self.send()
        else:
            self._answer(self.parts[-1])

    def _later(self) -> None:
        now = time.monotonic()
        if not self.since:
            self.since = now
        nursery = self.cluster.nursery
        if now - self.since >= self.hold_s or nursery is None:
            self._answer(errors.HOLD_EXPIRED)
            return
        pause = min(max(self.backoff_s, (now - self.since) / 4), 0.5)
        nursery.start_soon(self._send_after, pause)

    async def _send_after(self, pause: float) -> None:
        await trio.sleep(pause)
        self.send()
        self.reactor.flush()

    def _answer(self, reply: bytes) -> None:
        self[REPLY] = reply
        finish(self)


def _never(parts: list[bytes]) -> bytes:  # TxBlock decides in child_done, never merges
    raise AssertionError("TxBlock does not merge")
