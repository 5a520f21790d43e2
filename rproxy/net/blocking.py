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

from rproxy.core import errors
from rproxy.core.redirect import DELIVER, decide
from rproxy.core.request import DISCARD
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
