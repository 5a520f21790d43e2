"""The stateful modes of a client session: WATCH on a lease, a transaction, blocking commands,
and the draining mode that keeps a client's commands in order around them.

``StatefulModes`` is a part of ``ClientSession`` (rproxy/net/session.py), kept here so that the
stateless session -- the hot batch loop, routing, replies -- stays one short module. Each mode
is a batch handler the session swaps in (``enter_mode``); the pure decisions are in
rproxy/core/transaction.py and rproxy/core/redirect.py, the connections in lease.py,
transaction.py and blocking.py.

Modes and the order rule (README, "Transactions", "WATCH", "Blocking commands"):

* the transaction mode (``tx_batch``), between MULTI and EXEC / DISCARD: commands are queued by
  the proxy, answered ``+QUEUED``, and run at EXEC as one block;
* while a client holds a lease (a WATCH until its EXEC), its commands for that master go on the
  lease (``use_lease`` swaps the session's tables);
* the draining mode (``drain_batch``): after a lease is given back, and around a blocking
  command, the client's next commands wait until every reply before them is in, so none
  overtakes a request on another connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rproxy.core import errors, multi_pop, resp
from rproxy.core.commands import CommandInfo
from rproxy.core.emulate_writes import WritePlan
from rproxy.core.local_commands import Wait
from rproxy.core.redirect import proves_not_run
from rproxy.core.request import REPLY, Request, complete, new_request
from rproxy.core.resp import CLOSE_SILENTLY, encode_command
from rproxy.core.slots import SEVERAL_SLOTS, common_slot
from rproxy.core.topology import Addr
from rproxy.core.transaction import NOT_QUEUED, Transaction, command_error, exec_aborted_by
from rproxy.net.backend import BackendConnection
from rproxy.net.blocking import BlockingCall, MultiSlotPop
from rproxy.net.transaction import GroupedExec, RawRequest, TxBlock, WatchedExec
from rproxy.net.wait import replicas_acked

Batch = list[tuple[list[bytes], bytes]]  # parsed commands: (argv, the command's own bytes)


class LeaseOverlay:
    """The router's slot table as a client holding leases sees it: the slots of a node it
    holds a lease on map to that lease. Indexed like the table (the batch loop cannot tell),
    it costs a lookup more per command for that client only, and nothing to set up: a copy of
    the 16384-entry table per WATCH cost 0.7 ms of CPU (loadtest/stateful.py, the WATCH
    loop)."""

    __slots__ = ("base", "leases")

    def __init__(self, base: list[BackendConnection | None],
                 leases: dict[Addr, BackendConnection]) -> None:
        self.base = base
        self.leases = leases  # node -> the client's lease there (shared, kept up to date)

    def __getitem__(self, slot: int) -> BackendConnection | None:
        conn = self.base[slot]
        return self.leases.get(conn.addr, conn) if conn is not None else None


class StatefulModes:
    """The base of ``ClientSession``: its own fields are the client's routing tables (the
    router's, or swapped while it holds a lease), its lease and what waits in the draining
    mode; it uses the session's fields and methods (declared below, for readers)."""

    __slots__ = ("slot_conn", "read_conn", "leases", "watched", "watch_broken", "held",
                 "held_error",
                 "blocked", "wrote", "special")
    # The session's, used here.
    id: int
    queue: Any
    client: Any
    router: Any
    cluster: Any
    host: Any
    reactor: Any
    stats: Any
    closed: bool
    closing: bool
    reading: bool
    eof: bool
    max_pending: int
    on_commands: Callable[[Batch], None]
    # Its own.
    slot_conn: list[BackendConnection | None]
    read_conn: list[BackendConnection | None]
    leases: dict[Addr, BackendConnection]  # its leases (WATCH until EXEC), by node
    watched: set[bytes]  # the keys it watches
    watch_broken: bool
    held: Batch | None
    held_error: bytes | None
    blocked: BlockingCall | None
    wrote: set[Addr] | None  # the masters written to since its last WAIT (None: never WAITed)
    special: bool  # flush must look at the session's outbox and silent, or at wrote
    acl_user: Any  # the client's ACL user if restricted (rproxy.core.acl.User), else None

    if TYPE_CHECKING:
        def reply_local(self, data: bytes, enc: bytes = b"") -> None: ...
        def enter_mode(self, handler: Callable[[Batch], None]) -> None: ...
        def leave_mode(self) -> None: ...
        def hand_over(self, batch: Any) -> None: ...
        def route_batch(self, commands: Batch) -> None: ...
        def dispatch(self, argv: list[bytes], enc: bytes) -> None: ...
        def _acl_refusal(self, info: CommandInfo, argv: list[bytes]) -> bytes | None: ...
        def acl_denial(self, info: CommandInfo, argv: list[bytes]) -> bytes | None: ...
        def run_steps(self, steps: WritePlan, parent: Request | None = None,
                      convert: Callable[[bytes], bytes] | None = None) -> None: ...
        def converter(self, argv: list[bytes]) -> Callable[[bytes], bytes] | None: ...
        def close(self) -> None: ...
        def _stop_reading(self, closing: bool = False) -> None: ...
        def _resume_reading(self) -> None: ...

    # -- WATCH: a leased connection (rproxy/net/lease.py) until EXEC ------------------------------
    def watch(self, parts: list[tuple[int, bytes]], keys: list[bytes]) -> None:
        """WATCH on the client's own connection to each slot's master (one part per slot).
        Until it is given back, the client's commands for that master go on it too, so that
        they run in the order the client sent them relative to the WATCH (its own write after
        WATCH makes EXEC fail, as on one Redis)."""
        if self.watch_broken:  # the watch is already lost: EXEC will answer nil anyway
            self.reply_local(resp.OK)
            return
        self.watched.update(keys)
        request = RawRequest(self, self.watch_reply, len(parts))
        self.queue.append(request)
        for i, (slot, command) in enumerate(parts):
            child = request.child(i, command, slot)
            master = self.router.slot_conn[slot]
            if master is None:
                complete(child, self.router.no_conn_error(False))
                continue
            lease = self.leases.get(master.addr)
            if lease is None:
                lease = self.cluster.leases.acquire(master.addr, self)
                if lease is None:
                    complete(child, errors.LEASES_EXHAUSTED)
                    continue
                self.use_lease(lease)
            lease.send(child, command)

    def watch_reply(self, parts: list[bytes]) -> bytes:
        """WATCH answers +OK; one that could not be placed on the slot's owner (it moved, the
        connection was lost) also answers +OK, and the transaction's EXEC answers nil, as
        after a conflict: the client's optimistic retry loop handles it. An error of rproxy's
        own (no master, no lease left) is the answer, and the watch is over."""
        for raw in parts:
            if raw == resp.OK:
                continue
            if proves_not_run(raw) or raw in (errors.NOT_SENT, errors.OUTCOME_UNKNOWN):
                self.watch_broken = True
            else:
                self.client.watch_slot = -1
                self.end_watch(unwatch=True)
                return raw
        return resp.OK

    def use_lease(self, lease: BackendConnection) -> None:
        """Route this client's commands for the lease's node on the lease."""
        self.leases[lease.addr] = lease
        router = self.router
        if not isinstance(self.slot_conn, LeaseOverlay):
            self.slot_conn = LeaseOverlay(router.slot_conn, self.leases)  # type: ignore[assignment]
            self.read_conn = self.slot_conn if router.read_conn is router.slot_conn \
                else router.read_conn
        self._reroute()

    def _reroute(self) -> None:
        """The client's routing tables changed: the rest of the current batch must be routed
        by the new ones. The batch loop holds the old ones, and hands the rest of its batch
        over when ``on_commands`` is another object: a fresh bound ``route_batch`` is one."""
        if self.on_commands == self.route_batch:  # the stateless mode (equal, not identical)
            self.on_commands = self.route_batch

    def give_back_lease(self, unwatch: bool) -> None:
        """The watch is over (EXEC, DISCARD, UNWATCH, RESET, the client left): every lease
        goes back."""
        for lease in self.detach_leases():
            self.cluster.leases.release(lease, unwatch)

    def detach_leases(self) -> list[BackendConnection]:
        """The client's commands stop going on its leases (``give_back_lease``); the caller
        gives the leases back."""
        leases = list(self.leases.values())
        self.leases = {}
        self.watched = set()
        self.watch_broken = False
        self.slot_conn = self.router.slot_conn
        self.read_conn = self.router.read_conn
        if self.queue and not self.closed:
            # Replies are still due, some maybe from the lease: the client's next commands
            # for that node must not overtake them on a shared connection. They wait.
            self.start_drain([])
        else:
            self._reroute()
        return leases

    def start_drain(self, held: Batch) -> None:
        """From now on commands wait (``held`` first) until every reply before them is in."""
        self.held = held
        self.enter_mode(self.drain_batch)

    def defer(self, argv: list[bytes], enc: bytes) -> None:
        """Run this command again once every reply before it is in (the draining mode); it
        is counted then, not now."""
        self.router.table.lookup(argv).calls -= 1
        self.start_drain([(argv, enc)])

    def drain_batch(self, commands: Batch) -> None:
        """The draining mode: commands wait until every reply before them is in (``flush``
        then routes them), so that none overtakes a request still on the former lease."""
        assert self.held is not None
        self.held.extend(commands)
        if len(self.held) >= self.max_pending:
            self._stop_reading()

    def _end_drain(self) -> None:
        """Every reply before the held commands is out: route them now."""
        held, error = self.held or [], self.held_error
        self.held = self.held_error = None
        self.leave_mode()
        if held:
            self.on_commands(held)
        if self.held is not None:  # a blocking command among them started a new drain
            self.held_error = error
            return
        if error == CLOSE_SILENTLY:
            self.close()
        elif error is not None:
            self.reply_local(error)
            self._stop_reading(closing=True)
        elif self.closing:
            self._stop_reading(closing=True)
        elif not self.reading and not self.eof:
            self._resume_reading()

    def on_lease_lost(self, conn: BackendConnection) -> None:
        """``Holder``: a leased connection is gone, and the watches on it. (One the client no
        longer routes on -- its EXEC's checks are waiting for their turn -- is that EXEC's
        business: ``WatchedExec``.)"""
        if self.leases.get(conn.addr) is not conn:
            return
        del self.leases[conn.addr]
        self.watch_broken = True
        if not self.leases:
            self.slot_conn = self.router.slot_conn
            self.read_conn = self.router.read_conn
        self._reroute()

    # -- blocking commands: on a leased connection (rproxy/net/blocking.py) -----------------------
    def unblock(self, client_id: int, error: bool) -> None:
        """CLIENT UNBLOCK of a proxy client: ``CLIENT UNBLOCK <its lease's id on the node>``
        to that node (the node answers :1 and ends the block, as one Redis would), or :0 when
        that client is not blocked. Never sent again elsewhere: on another node the id names
        another connection."""
        target = self.host.session_by_id(client_id)
        call = target.blocked if target is not None else None
        lease = call.lease if call is not None and call[REPLY] is None else None
        # (the lease is in the pool of the target's protocol plane, maybe not this client's)
        backend_id = target.cluster.leases.backend_id(lease) if lease is not None else None
        if lease is None or backend_id is None:
            self.reply_local(b":0\r\n")
            return
        command = encode_command([b"CLIENT", b"UNBLOCK", b"%d" % backend_id,
                                  b"ERROR" if error else b"TIMEOUT"])
        request = RawRequest(self, _first)
        self.queue.append(request)
        self.cluster.conn_for_addr(lease.addr).send(request.child(0, command), command)

    def call_blocking(self, info: CommandInfo, argv: list[bytes], enc: bytes) -> None:
        """A blocking command, on a connection of its own. As on one Redis, it runs after the
        client's earlier commands and before its later ones: it waits for the replies before
        it, and what follows waits for its reply (the draining mode)."""
        if self.queue:
            self.defer(argv, enc)
            return
        slot = common_slot([argv[pos] for pos in info.key_positions(argv)])
        if slot == SEVERAL_SLOTS:  # as a Redis Cluster node answers, unless emulated
            if info.name in multi_pop.NAMES and \
                    self.host.config.commands.cross_slot_transactions == "emulate":
                self.multi_slot_pop(argv)
            else:
                self.reply_local(errors.CROSSSLOT)
            return
        router = self.router
        if slot < 0:
            if not router.master_slots:
                self.reply_local(errors.NO_TOPOLOGY)
                return
            slot = router.master_slots[self.id % len(router.master_slots)]
        cfg = self.host.config.cluster
        call = BlockingCall(self, enc, slot, self.cluster.leases, router, self.cluster,
                            self.reactor, cfg.max_redirects, cfg.failover_hold_s,
                            cfg.retry_backoff_s)
        self.queue.append(call)
        self.blocked = call
        call.start()
        self.start_drain([])

    def multi_slot_pop(self, argv: list[bytes]) -> None:
        """A blocking pop over keys in several slots, emulated (rproxy/core/multi_pop.py),
        on RESP2 connections (a RESP3 client's reply converted); later commands wait for its
        reply, as for any blocking command."""
        plan = multi_pop.plan_pop(argv)
        if isinstance(plan, bytes):
            self.reply_local(plan)
            return
        main = self.host.cluster
        call = MultiSlotPop(self, plan, main.router, main, main.leases)
        call.convert = self.converter(argv)
        self.queue.append(call)
        self.blocked = call  # type: ignore[assignment]
        call.start()
        self.start_drain([])

    # -- WAIT: off the data path (rproxy/net/wait.py) ---------------------------------------------
    def call_wait(self, wait: Wait, argv: list[bytes]) -> None:
        """WAIT numreplicas timeout. Like a blocking command it runs after the replies before
        it are in (the client's writes are on their masters) and holds the client's later
        commands until it answers."""
        if self.queue:
            self.defer(argv, encode_command(argv))
            return
        every = [m.addr for m in self.router.masters]
        nursery = self.cluster.nursery
        if not every or nursery is None:
            self.reply_local(errors.NO_TOPOLOGY)
            return
        wrote = self.wrote
        self.wrote = set()  # from now on its writes are noted (``note_writes``)
        self.special = True
        masters = every if not wrote else list(wrote)  # (None: not known, the first WAIT)
        req = new_request(self, b"", -1, True)  # (read-only: not a write ``note_writes`` sees)
        self.queue.append(req)
        nursery.start_soon(self._wait, req, masters, wait.numreplicas, wait.timeout_ms,
                           wrote != set())
        self.start_drain([])

    async def _wait(self, req: list[Any], masters: list[Addr], numreplicas: int,
                    timeout_ms: int, wrote: bool) -> None:
        config = self.host.config
        n = await replicas_acked(masters, numreplicas, timeout_ms,
                                 config.timeouts.connect_timeout_s, wrote,
                                 self.cluster.access)
        complete(req, resp.integer(n))
        self.reactor.flush()

    def note_writes(self) -> None:
        """A client that used WAIT: note the master of each reply about to be sent that was
        not to a read (``flush`` calls it for the completed head of the queue). Replies the
        proxy made itself have no owner; a request for no slot, or split over several (a
        fan-out, a cross-slot write), counts for every master."""
        wrote = self.wrote
        assert wrote is not None
        slot_conn = self.router.slot_conn
        for req in self.queue:
            if req[REPLY] is None:
                break
            if req[1] is None or req[4]:  # OWNER, READONLY
                continue
            slot = req[3]  # SLOT
            conn = slot_conn[slot] if slot >= 0 else None
            if conn is not None:
                wrote.add(conn.addr)
            else:
                wrote.update(m.addr for m in self.router.masters)

    def nil_array(self) -> bytes:
        """EXEC's nil (a WATCH conflict) in the client's protocol."""
        return resp.NULL3 if self.client.protocol == 3 else errors.WATCH_NIL

    def _tx_block(self, owner: object, block: list[bytes], slot: int,
                  watched: bool = False) -> TxBlock:
        """A transaction's block (rproxy/net/transaction.py) for the slot's master, with the
        cluster settings and EXEC's nil in the client's protocol."""
        cfg = self.host.config.cluster
        tx_block = TxBlock(owner, block, slot, self.router, self.cluster, self.reactor,
                           cfg.max_redirects, cfg.failover_hold_s, cfg.retry_backoff_s, watched)
        tx_block.nil = self.nil_array()
        return tx_block

    def _grouped(self, owner: object, tx: Transaction,
                 ran: tuple[int, bytes] | None = None) -> GroupedExec:
        """The EXEC of ``tx`` as one TxBlock per slot (rproxy/net/transaction.py), but for
        the group ``ran`` names, run already."""

        def make_block(parent: GroupedExec, slot: int, indexes: list[int]) -> TxBlock:
            return self._tx_block(parent, tx.group_block(indexes), slot)

        def run_plan(parent: GroupedExec, i: int) -> Request:
            plan = tx.local[i]
            assert not isinstance(plan, bytes)
            step = new_request(parent, b"")
            self.run_steps(plan, step, self.converter(tx.local_argv[i]))
            return step

        grouped = GroupedExec(owner, tx, make_block, run_plan, ran)
        self.stats.emulated_transaction_groups += len(tx.groups())
        return grouped

    # -- the transaction mode (between MULTI and EXEC / DISCARD) ----------------------------------
    def tx_batch(self, commands: Batch) -> None:
        """Queue the commands of a transaction (rproxy/core/transaction.py) until EXEC,
        DISCARD or RESET ends it; the rest of the batch goes back to the stateless mode."""
        table = self.router.table
        batch = iter(commands)
        for argv, enc in batch:
            tx = self.client.multi
            assert tx is not None
            info = table.lookup(argv)
            name = info.name
            if name not in NOT_QUEUED:
                info.calls += 1
                error = self._acl_refusal(info, argv) if self.acl_user is not None else None
                if error is not None:  # flags the transaction, as any refused command
                    tx.aborted = True
                    self.reply_local(error, enc)
                else:
                    self.reply_local(tx.queue(info, argv, enc), enc)
                continue
            error = command_error(info, argv)
            if name not in (b"QUIT", b"RESET"):  # (those are dispatched, and counted there)
                info.calls += 1
                if error is None and self.acl_user is not None:
                    error = self.acl_denial(info, argv)
            if name == b"EXEC":
                self.client.multi = None
                self.client.watch_slot = -1
                if error is not None:  # EXEC itself refused: the transaction is discarded
                    self.reply_local(exec_aborted_by(error), enc)
                    self.end_watch(unwatch=True)
                else:
                    self.exec_transaction(tx)
            elif error is not None:  # flags the transaction, as any refused command
                tx.aborted = True
                self.reply_local(error, enc)
            elif name == b"DISCARD":  # drops the watches too
                self.client.multi = None
                self.client.watch_slot = -1
                self.reply_local(resp.OK)
                self.end_watch(unwatch=True)
            elif name == b"MULTI":
                self.reply_local(errors.MULTI_NESTED)
            elif name == b"WATCH":
                self.reply_local(errors.WATCH_IN_MULTI)
            else:  # QUIT, RESET: as outside a transaction (RESET discards it)
                self.dispatch(argv, enc)
            if self.closing:
                return
            if self.client.multi is None:
                if self.on_commands == self.tx_batch:  # (not if a drain follows)
                    self.leave_mode()
                self.hand_over(batch)
                return

    def end_watch(self, unwatch: bool) -> None:
        """The transaction is over: give back the leases, if any (their watches are
        dropped)."""
        self.watch_broken = False
        if self.leases:
            self.give_back_lease(unwatch)

    def exec_transaction(self, tx: Transaction) -> None:
        """EXEC: the block runs on the master of the transaction's slot (a keyless one on any
        master), in one piece on its shared connection (rproxy/net/transaction.py) -- or on
        the client's lease after WATCH, where a block the node refused answers nil."""
        if tx.aborted or self.watch_broken:
            self.reply_local(errors.EXECABORT if tx.aborted else self.nil_array())
            self.end_watch(unwatch=True)
            return
        if self.leases and (len(self.leases) > 1 or tx.several):
            # Watches on several masters, or writes beyond the watched one (emulated): every
            # watch is checked before anything is written, then the blocks run per slot.
            leases = list(self.leases.values())
            first = None
            phase = tx.phases()[0] if tx.commands else 0
            if len(leases) == 1 and not isinstance(phase, int):
                # The check can be one of the groups that run first: no window.
                addr = leases[0].addr
                groups = tx.groups()
                first = next((g for g in range(*phase)
                              if (c := self.router.slot_conn[groups[g][0]]) is not None
                              and c.addr == addr), None)
            pool = self.cluster.leases

            def give_back() -> None:  # once the checks are on the leases (they end the
                # watches, and are ahead of anything a later holder sends)
                for lease in leases:
                    pool.release(lease, unwatch=False)

            watched = WatchedExec(self, leases, tx,
                                  lambda owner, ran: self._grouped(owner, tx, ran), self.stats,
                                  first, self.cluster.watch_locks, self.watched, give_back)
            watched.nil = self.nil_array()
            self.queue.append(watched)
            self.stats.emulated_transactions += 1
            # The client's next commands no longer go on the leases (they come after EXEC);
            # the leases go back once the checks are sent (after the watch lock, if it waits).
            self.detach_leases()
            watched.send()
            return
        lease = next(iter(self.leases.values()), None)
        if lease is not None:  # even an empty transaction: a watched key may have changed
            block = self._tx_block(self, tx.block(), tx.slot, watched=True)
            self.queue.append(block)
            block.send(lease)
            # Given back at once: whatever the node answers to the block (the EXEC array, or
            # a refusal that discards the transaction) drops the watches, and the block is
            # ahead of anything a later holder sends on the connection.
            self.give_back_lease(unwatch=False)
            return
        reply = tx.exec_reply()
        router = self.router
        if reply is None and not router.master_slots:
            reply = errors.NO_TOPOLOGY
        if reply is not None:
            self.reply_local(reply)
            return
        if tx.several:  # over several slots, emulated: one block per slot
            grouped = self._grouped(self, tx)
            self.queue.append(grouped)
            self.stats.emulated_transactions += 1
            grouped.send()
            if len(tx.phases()) > 1:  # phases after the first go out later: the client's
                self.start_drain([])  # next commands wait for EXEC's reply (none overtakes)
            return
        slot = tx.slot
        if slot < 0:  # keyless: spread over the masters by client
            slot = router.master_slots[self.id % len(router.master_slots)]
        block = self._tx_block(self, tx.block(), slot)
        self.queue.append(block)
        block.send()


def _first(parts: list[bytes]) -> bytes:
    return parts[0]
