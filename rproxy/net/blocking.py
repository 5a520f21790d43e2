"""Blocking commands (BLPOP, BRPOP, BLMOVE, BZPOPMIN, XREAD ... BLOCK, ...) on a connection of
their own.

A blocking command would stop every other client's replies on a shared, pipelined connection,
so ``BlockingCall`` leases a dedicated connection to the master of its keys' slot
(rproxy/net/lease.py), sends the command there, and gives the connection back, clean, as soon
as the reply arrives. The node itself times the block out (``0`` waits for ever: the op-timeout
watchdog leaves a blocking connection alone). Like a plain request, a call the node refused
without running it -- ``MOVED``, ``ASK``, ``TRYAGAIN``, a failing-over cluster -- is sent again
where the slot is now, on a new lease. A call whose connection was lost before the command was
written is sent again too; one lost while it was blocked may have taken an element that never
reached the proxy, so the client gets ``OUTCOME_UNKNOWN`` instead. A client that leaves while
blocked has its leased connection closed: the node ends the block and pops nothing for it.
"""

from __future__ import annotations

from collections.abc import Callable

from rproxy.core import errors
from rproxy.core.multi_pop import NIL, PopPlan
from rproxy.core.redirect import DELIVER, decide, proves_not_run
from rproxy.core.request import DISCARD, REPLY, FanOut, finish, settled_elsewhere
from rproxy.core.resp import encode_command
from rproxy.core.slots import key_slot
from rproxy.core.topology import Addr
from rproxy.net.backend import BackendConnection
from rproxy.net.lease import LeasePool
from rproxy.net.reactor import Reactor
from rproxy.net.resend import Resent, Scheduler
from rproxy.net.router import Router
from rproxy.net.transaction import ASKING


class BlockingCall(Resent):
    """The client's blocking command: one raw part on a leased connection."""

    __slots__ = ("command", "slot", "leases", "lease")

    def __init__(self, owner: object, command: bytes, slot: int, leases: LeasePool,
                 router: Router, cluster: Scheduler, reactor: Reactor, max_redirects: int,
                 hold_s: float, backoff_s: float) -> None:
        super().__init__(owner, 1, router, cluster, reactor, max_redirects, hold_s, backoff_s)
        self.command = command
        self.slot = slot
        self.leases = leases
        self.lease: BackendConnection | None = None

    def send_again(self, addr: Addr | None = None, asking: bool = False) -> None:
        """Lease a connection to ``addr`` (default: the slot's master now) and send."""
        if addr is None:
            master = self.router.slot_conn[self.slot]
            if master is None:
                self.answer(self.router.no_conn_error(False))
                return
            addr = master.addr
        lease = self.leases.acquire(addr, self)
        if lease is None:
            self.answer(errors.LEASES_EXHAUSTED)
            return
        self.lease = lease
        lease.blocking = True
        self.parts = [b""]
        self.pending = 1
        self.host = addr[0]
        if asking:
            lease.send(DISCARD, ASKING)
        lease.send([None, None, self.command, self.slot, False, 0, self, 0], self.command)

    start = send_again

    def child_done(self, index: int, raw: bytes) -> None:
        lease, self.lease = self.lease, None
        if lease is not None:  # the command is over: the connection is clean again
            self.leases.release(lease, unwatch=False)
        if raw == errors.NOT_SENT:  # lost before it was written: nothing ran
            self.resend_unsent()
            return
        decision = decide(raw, self.host, self.hops, self.max_redirects)
        if decision.kind == DELIVER:
            self.answer(raw)
        else:
            self.follow(decision)

    def on_lease_lost(self, conn: BackendConnection) -> None:
        """``Holder``: the leased connection is gone; the part is settled by the shared pool's
        rules for raw parts (NOT_SENT or OUTCOME_UNKNOWN), then ``child_done`` decides."""
        self.lease = None

    def abandon(self) -> None:
        """The client left while blocked: close the leased connection (the node ends the
        block; nothing is popped for a client that is gone)."""
        lease, self.lease = self.lease, None
        if lease is not None:
            self.leases.release(lease, unwatch=False, discard=True)


class MultiSlotPop(FanOut):
    """A blocking pop over keys in several slots (rproxy/core/multi_pop.py): plain pops in the
    client's order, then one blocking pop per slot on leases, the first element to arrive
    wins; the other blocks are ended with CLIENT UNBLOCK and what they popped meanwhile is
    pushed back. BLMOVE then pushes its element to the destination (``_won``). Its children
    are the steps' requests; it answers the client itself."""

    __slots__ = ("plan", "router", "cluster", "leases", "next_key", "groups", "held",
                 "replies", "winner", "abandoned", "blocks", "tries", "convert")
    lease = None  # (CLIENT UNBLOCK does not reach a pop over several slots: it answers 0)

    def __init__(self, owner: object, plan: PopPlan, router: Router, cluster: Scheduler,
                 leases: LeasePool) -> None:
        super().__init__(owner, 1, settled_elsewhere)
        self.plan = plan
        self.router = router
        self.cluster = cluster
        self.leases = leases
        self.next_key = 0
        self.groups: list[list[bytes]] = []  # the keys of each slot, in the client's order
        self.held: list[BackendConnection | None] = []  # each group's lease while it blocks
        self.replies: list[bytes | None] = []
        self.winner: bytes | None = None
        self.abandoned = False
        self.blocks = _Blocks(self)  # the lease parts' parent: raw, never redirected alone
        self.tries = 0
        # The reply into the client's protocol (RESP3), if not RESP2.
        self.convert: Callable[[bytes], bytes] | None = None

    def start(self) -> None:
        self.next_key = 0
        self._pop_next()

    # -- step 1: plain pops, in the client's order -------------------------------------------
    def _pop_next(self) -> None:
        if self.next_key == len(self.plan.keys):
            self._block()
            return
        key = self.plan.keys[self.next_key]
        data = self.plan.pop(key)
        self.router.route([None, None, data, key_slot(key), False, 0, self, -1])

    def child_done(self, index: int, raw: bytes) -> None:
        if index == _PUSHED:  # BLMOVE's push to its destination
            if raw[:1] == b"-":  # (not a list): the element goes back, the error is the reply
                undo = self.plan.undo(self.winner)  # type: ignore[arg-type]
                self.router.route([None, None, undo, key_slot(self.plan.keys[0]), False, 0,
                                   None, 0])
                self._answer(raw)
            else:
                self._answer(self.winner)  # type: ignore[arg-type]
            return
        got = self.plan.popped(self.plan.keys[self.next_key], raw)  # a plain pop
        self.next_key += 1
        if got is not None:
            self._won(got)
        elif not self.abandoned:
            self._pop_next()

    def _won(self, got: bytes) -> None:
        """An element (or an error, the answer): the reply, once the command is complete."""
        then = self.plan.then(got) if got[:1] != b"-" else None
        if then is None:
            self._answer(got)
            return
        self.winner = got
        self.router.route([None, None, then, key_slot(self.plan.dst), False, 0, self, _PUSHED])

    # -- step 2: one blocking pop per slot, on leases ---------------------------------------
    def _block(self) -> None:
        by_slot: dict[int, list[bytes]] = {}
        for key in self.plan.keys:
            by_slot.setdefault(key_slot(key), []).append(key)
        self.groups = list(by_slot.values())
        self.held = [None] * len(self.groups)
        self.replies = [None] * len(self.groups)
        for i, keys in enumerate(self.groups):
            master = self.router.slot_conn[key_slot(keys[0])]
            lease = self.leases.acquire(master.addr, self) if master is not None else None
            if lease is None:
                self.replies[i] = (self.router.no_conn_error(False) if master is None
                                   else errors.LEASES_EXHAUSTED)
                continue
            lease.blocking = True
            self.held[i] = lease
            data = self.plan.block(keys)
            lease.send([None, None, data, key_slot(keys[0]), False, 0, self.blocks, i], data)
        if all(r is not None for r in self.replies):  # none could block
            self._settle()

    def blocked_reply(self, i: int, raw: bytes) -> None:
        lease, self.held[i] = self.held[i], None
        if lease is not None:
            self.leases.release(lease, unwatch=False)
        self.replies[i] = raw
        if raw[:1] == b"*" and raw != NIL:  # an element
            if self.winner is None and not self.abandoned:
                self.winner = raw
                self._unblock_others()
            else:  # a second one, popped before its block could be ended: put it back
                back = self.plan.push_back(raw)
                if back is not None:
                    self.router.route([None, None, back, key_slot(self.groups[i][0]), False,
                                       0, None, 0])
        if all(r is not None for r in self.replies):
            self._settle()

    def _unblock_others(self) -> None:
        for lease in self.held:
            backend_id = self.leases.backend_id(lease) if lease is not None else None
            if lease is not None and backend_id is not None:
                data = encode_command([b"CLIENT", b"UNBLOCK", b"%d" % backend_id])
                self.cluster.conn_for_addr(lease.addr).send(DISCARD, data)

    def _settle(self) -> None:
        """Every group answered: the winner, or nil (all timed out), or -- a node refused its
        block without running it (its slot moved, a failover) -- all over again where the
        map says now; any other error is the answer."""
        if self.winner is not None:
            self._won(self.plan.blocked(self.winner))
            return
        failed = [r for r in self.replies if r is not None and r[:1] == b"-"]
        if failed and all(proves_not_run(r) or r == errors.NOT_SENT for r in failed) \
                and self.tries < 5 and not self.abandoned:
            self.tries += 1
            self.cluster.request_refresh()
            self.start()
            return
        self._answer(failed[0] if failed else NIL)

    def _answer(self, reply: bytes) -> None:
        if self[REPLY] is None:
            self[REPLY] = reply if self.convert is None else self.convert(reply)
            finish(self)

    def on_lease_lost(self, conn: BackendConnection) -> None:
        """``Holder``: the group's reply comes by the shared pool's rules for written
        requests (its element may be lost with the connection: OUTCOME_UNKNOWN)."""

    def abandon(self) -> None:
        """The client left: end every block (closing a lease ends its block on the node)."""
        self.abandoned = True
        for i, lease in enumerate(self.held):
            if lease is not None:
                self.held[i] = None
                self.leases.release(lease, unwatch=False, discard=True)


_PUSHED = -2  # the index of BLMOVE's push (a plain pop's is -1)


class _Blocks(FanOut):
    """The parent of a ``MultiSlotPop``'s blocking parts: raw (the shared pool never
    redirects or resends a blocking pop alone), each reply handed to the pop."""

    __slots__ = ("target",)
    raw = True

    def __init__(self, target: MultiSlotPop) -> None:
        super().__init__(None, 0, settled_elsewhere)
        self.target = target

    def child_done(self, index: int, raw: bytes) -> None:
        self.target.blocked_reply(index, raw)
