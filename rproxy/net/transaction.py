"""A transaction's block on its way to the slot's master, and back.

``TxBlock`` takes the client's EXEC in its reply queue. Its parts -- ``MULTI``, the queued
commands, ``EXEC`` -- are appended in one piece to the slot's connection (shared, pipelined:
nothing of another client can come between them, the reactor being single-threaded). Parts are
raw (rproxy/net/resend.py); when the last part is answered,
``rproxy.core.transaction.exec_outcome`` decides: the EXEC reply goes to the client, or the
whole block is sent again where the slot is now (``Resent.follow``). A block whose connection
was lost before EXEC was written is sent again too (a node drops a connection's MULTI state
with it); after EXEC was written, the outcome is unknown and the client is told so. After
WATCH the block runs on the client's lease and is never sent again: a refusal answers nil.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from rproxy.core import errors
from rproxy.core.redirect import DELIVER
from rproxy.core.request import DISCARD, FanOut, Request, finish, settled_elsewhere
from rproxy.core.resp import encode_command
from rproxy.core.stats import Stats
from rproxy.core.topology import Addr
from rproxy.core.transaction import EMPTY_EXEC, EXEC, MULTI, Transaction, exec_outcome
from rproxy.net.backend import CLOSED, BackendConnection
from rproxy.net.reactor import Reactor
from rproxy.net.resend import Resent, Scheduler
from rproxy.net.router import Router

ASKING = encode_command([b"ASKING"])


class RawRequest(FanOut):
    """A request of raw parts (a WATCH on the client's leases): ``merge`` sees the nodes'
    replies as they are, and the shared pool neither redirects nor resends them."""

    __slots__ = ()
    raw = True

    def __init__(self, owner: object, merge: Callable[[list[bytes]], bytes], n: int = 1) -> None:
        super().__init__(owner, n, merge)


class TxBlock(Resent):
    """The client's EXEC request; its children are the block's parts, in order."""

    __slots__ = ("block", "slot", "watched", "nil")

    def __init__(self, owner: object, block: list[bytes], slot: int, router: Router,
                 cluster: Scheduler, reactor: Reactor, max_redirects: int, hold_s: float,
                 backoff_s: float, watched: bool = False) -> None:
        super().__init__(owner, len(block), router, cluster, reactor, max_redirects, hold_s,
                         backoff_s)
        self.block = block
        self.slot = slot  # the transaction's slot, or a master's lowest slot if keyless
        self.watched = watched  # on the client's lease after WATCH: never sent again
        self.nil = errors.WATCH_NIL  # EXEC's nil in the client's protocol

    def send(self, conn: BackendConnection | None = None, asking: bool = False) -> None:
        """Append the whole block to ``conn`` (default: the slot's master now)."""
        if conn is None:
            conn = self.router.slot_conn[self.slot]
            if conn is None:
                self.answer(self.router.no_conn_error(False))
                return
        n = len(self.block)
        if len(conn.fifo) + n + 1 > conn.max_pending:  # all of it or nothing
            self.answer(errors.BACKEND_BUSY)
            return
        self.parts = [b""] * n
        self.pending = n
        if asking:
            conn.send(DISCARD, ASKING)
        for i, data in enumerate(self.block):
            conn.send([None, None, data, self.slot, False, 0, self, i], data)  # self.child
        self.host = conn.addr[0]

    def send_again(self, addr: Addr | None = None, asking: bool = False) -> None:
        self.send(None if addr is None else self.cluster.conn_for_addr(addr), asking)

    def child_done(self, index: int, raw: bytes) -> None:
        self.parts[index] = raw
        self.pending -= 1
        if self.pending:
            return
        decision = exec_outcome(self.parts, self.host, self.hops, self.max_redirects)
        unsent = self.parts[-1] == errors.NOT_SENT  # lost before EXEC left: nothing ran
        if self.watched and (decision.kind != DELIVER or unsent):
            # The watches were on the node that refused the block (or on a connection that is
            # gone): nothing ran, and it cannot run elsewhere with them. Nil, as a conflict.
            self.answer(self.nil)
        elif decision.kind != DELIVER:
            self.follow(decision)
        elif unsent:
            self.resend_unsent()
        else:
            self.answer(self.parts[-1])


class GroupedExec(FanOut):
    """EXEC of a transaction over several slots (``commands.cross_slot_transactions =
    "emulate"``), phase by phase (``Transaction.phases``): one ``TxBlock`` per slot, sent in
    parallel, each atomic on its master and settled by the TxBlock's own rules (redirects
    followed, a lost block's outcome unknown); a command the proxy runs as rounds
    (``run_plan``, by its index: a cross-slot write such as LMOVE), alone between them. The
    client gets one EXEC array, merged in the order it queued the commands. The blocks and the
    plans' requests report here as their owner (``wake``)."""

    __slots__ = ("tx", "make_block", "run_plan", "replies", "results", "phase", "blocks",
                 "step", "sending")
    dirty = False  # (a block always wakes this owner)

    def __init__(self, owner: object, tx: Transaction,
                 make_block: Callable[[GroupedExec, int, list[int]], TxBlock],
                 run_plan: Callable[[GroupedExec, int], Request],
                 ran: tuple[int, bytes] | None = None) -> None:
        super().__init__(owner, 1, settled_elsewhere)
        self.tx = tx
        self.make_block = make_block
        self.run_plan = run_plan
        self.replies: list[bytes | None] = [None] * len(tx.groups())  # each group's EXEC reply
        if ran is not None:  # (a group's index, its EXEC reply): run already (``WatchedExec``)
            self.replies[ran[0]] = ran[1]
        self.results: dict[int, bytes] = {}  # the replies of the commands run as rounds
        self.phase = 0
        self.blocks: list[tuple[int, TxBlock]] = []  # the running phase's, by group
        self.step: Request | None = None  # the running plan's request
        self.sending = False

    def send(self) -> None:
        """Start the current phase (and the next ones, while a phase has nothing to run)."""
        phases = self.tx.phases()
        groups = self.tx.groups()
        while self.phase < len(phases):
            phase = phases[self.phase]
            self.sending = True  # (a block or a round may be answered while it is sent)
            if isinstance(phase, int):
                self.step = self.run_plan(self, phase)
            else:
                self.blocks = [(g, self.make_block(self, *groups[g]))
                               for g in range(*phase) if self.replies[g] is None]
                for _, block in self.blocks:
                    block.send()
            self.sending = False
            if self.step is not None or self.blocks:
                self.wake()
                return
            self.phase += 1
        self[0] = self.tx.exec_array(self.replies, self.results)  # type: ignore[arg-type]
        finish(self)

    def wake(self) -> None:
        """``ReplyOwner``: a block or a plan answered; once the phase is complete, the next."""
        if self.sending or self[0] is not None:  # REPLY
            return
        step = self.step
        if step is not None:
            if step[0] is None:
                return
            self.results[self.tx.phases()[self.phase]] = step[0]  # type: ignore[index]
            self.step = None
        else:
            if any(block[0] is None for _, block in self.blocks):
                return
            for g, block in self.blocks:
                self.replies[g] = block[0]
            self.blocks = []
        self.phase += 1
        self.send()


class WatchLocks:
    """The keys that emulated transactions whose watches are checked before their writes
    (``WatchedExec`` without ``first``) are checking and writing now, in this proxy process.
    Such a transaction starts only when none of its watched keys is held by another one
    (``acquire``; else it waits its turn, in order), so two clients' WATCH / MULTI / EXEC
    loops on the same keys never both pass their checks inside each other's window. Writes by
    anything else (a plain SET, another proxy) are not ordered by it."""

    def __init__(self) -> None:
        self.held: set[bytes] = set()
        self.waiting: deque[tuple[frozenset[bytes], Callable[[], None]]] = deque()

    def acquire(self, keys: frozenset[bytes], go: Callable[[], None]) -> None:
        if self.held.isdisjoint(keys) and not any(not k.isdisjoint(keys) for k, _ in self.waiting):
            self.held |= keys
            go()
        else:
            self.waiting.append((keys, go))

    def release(self, keys: frozenset[bytes]) -> None:
        self.held -= keys
        blocked: set[bytes] = set()
        for entry in list(self.waiting):
            want, go = entry
            if self.held.isdisjoint(want) and blocked.isdisjoint(want):
                self.waiting.remove(entry)
                self.held |= want
                go()
            else:
                blocked |= want


class WatchedExec(FanOut):
    """EXEC after WATCH on several masters, or with writes beyond the watched one (emulated
    transactions over several slots): all or nothing on a WATCH conflict.

    First every watch is checked where it is: ``MULTI`` and ``EXEC`` on each of the client's
    leases -- an empty EXEC answers ``*0`` if the watched keys there are untouched and nil if
    one changed, and ends the watches. If any answered otherwise, EXEC answers nil and nothing
    is written. Otherwise the transaction runs at once as one block per slot (``GroupedExec``).
    With watches on several masters, a write by another client to a watched key after its
    node's check and before the blocks run goes unnoticed: that window (about one round trip)
    is measured and counted in INFO (``emulated_watch_window_us``). With watches on one
    master (``first``: the index of a group of the transaction on that master, or None), the
    check *is* that group's block, run on the lease: its EXEC writes the group only if the
    watches held, atomically, and there is no window."""

    __slots__ = ("leases", "tx", "start", "stats", "checked_at", "grouped", "first", "checks",
                 "locks", "keys", "sent", "nil")
    raw = True
    dirty = False  # (the grouped EXEC always wakes this owner)

    def __init__(self, owner: object, leases: list[BackendConnection], tx: Transaction,
                 start: Callable[[WatchedExec, tuple[int, bytes] | None], GroupedExec],
                 stats: Stats, first: int | None, locks: WatchLocks,
                 watched: set[bytes], sent: Callable[[], None]) -> None:
        checks = ([tx.group_block(tx.groups()[first][1])] if first is not None
                  else [[MULTI, EXEC] for _ in leases])
        super().__init__(owner, sum(len(c) for c in checks), settled_elsewhere)
        self.leases = leases
        self.tx = tx
        self.start = start
        self.stats = stats
        self.checked_at = 0.0
        self.grouped: GroupedExec | None = None
        self.first = first
        self.checks = checks
        self.locks = locks
        # Watches checked by a group of the transaction need no lock: no window.
        self.keys = frozenset(watched) if first is None else frozenset()
        self.sent = sent  # the checks are on the leases: the caller gives them back
        self.nil = errors.WATCH_NIL  # EXEC's nil in the client's protocol

    def send(self) -> None:
        if self.keys:
            self.locks.acquire(self.keys, self._send)
        else:
            self._send()

    def answer(self, reply: bytes) -> None:
        self[0] = reply  # REPLY
        if self.keys:
            self.locks.release(self.keys)
        finish(self)

    def _send(self) -> None:
        if any(lease.state == CLOSED for lease in self.leases):
            # Lost while this waited for the watch lock (a master failed): its watches are
            # gone, and a check sent on it would never be answered. Nil, as a conflict.
            self.sent()
            self.stats.emulated_watch_aborts += 1
            self.answer(self.nil)
            return
        i = 0
        for lease, block in zip(self.leases, self.checks):
            for data in block:
                lease.send(self.child(i, data), data)
                i += 1
        self.sent()  # (after a wait for the lock this runs in a reply handler: the reactor
        # flushes what it sent at the end of its batch)

    def child_done(self, index: int, raw: bytes) -> None:
        self.parts[index] = raw
        self.pending -= 1
        if self.pending:
            return
        execs, i = [], 0
        for block in self.checks:
            i += len(block)
            execs.append(self.parts[i - 1])
        held = all(e[:1] == b"*" and e[:3] != b"*-1" for e in execs)
        if not held:  # nil (a watched key changed), or the node refused the block
            self.stats.emulated_watch_aborts += 1
            self.answer(self.nil)
        elif not self.tx.commands:
            self.answer(EMPTY_EXEC)
        else:
            self.checked_at = time.monotonic()
            ran = None if self.first is None else (self.first, execs[0])
            self.grouped = self.start(self, ran)
            self.grouped.send()

    def wake(self) -> None:
        """``ReplyOwner``: the blocks ran; their merged EXEC array is the reply."""
        grouped = self.grouped
        if grouped is None or grouped[0] is None or self[0] is not None:
            return
        self.stats.emulated_watch_window_us += int((time.monotonic() - self.checked_at) * 1e6)
        self.stats.emulated_watched_transactions += 1
        self.answer(grouped[0])
