"""The cluster manager: the one owner of the topology and of the backend connections.

It learns the slot map from any reachable node (every known node is a seed), keeps
``slot_conn`` -- a 16384-entry list from slot to the connection of the slot's master, read by
the client sessions on every command -- and refreshes it on MOVED, on connection loss and
periodically, never more often than ``refresh_min_interval_s``. It also holds the redirect and
retry decisions for requests, and a watchdog that fails requests stuck on a hung node.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from typing import Any

import hiredis
import structlog
import trio

from rproxy import errors
from rproxy.commands import CommandTable
from rproxy.config import Config
from rproxy.reactor import Reactor
from rproxy.request import DISCARD, Request, complete
from rproxy.resp import encode_command
from rproxy.slots import SLOTS
from rproxy.topology import (
    ASK,
    MOVED,
    Addr,
    SlotMap,
    parse_cluster_shards,
    parse_cluster_slots,
    parse_redirect,
)
from rproxy.upstream import CLOSED, BackendConnection

log = structlog.get_logger("rproxy.cluster")

ASKING = encode_command([b"ASKING"])


class ControlError(Exception):
    pass


async def control_command(addr: Addr, argv: list[bytes], timeout_s: float) -> Any:
    """One command on a short-lived connection (control plane only: topology, COMMAND)."""
    with trio.fail_after(timeout_s):
        stream = await trio.open_tcp_stream(*addr)
        async with stream:
            await stream.send_all(encode_command(argv))
            reader = hiredis.Reader()
            while True:
                data = await stream.receive_some(1 << 20)
                if not data:
                    raise ControlError("connection closed")
                reader.feed(data)
                reply = reader.gets()
                if reply is not False:
                    if isinstance(reply, hiredis.ReplyError):
                        raise ControlError(str(reply))
                    return reply


class Cluster:
    def __init__(self, config: Config, reactor: Reactor) -> None:
        self.config = config
        self.reactor = reactor
        self.table = CommandTable([])
        self.table_loaded = False
        self.slotmap: SlotMap | None = None
        self.slot_conn: list[BackendConnection | None] = [None] * SLOTS
        self.conns: dict[Addr, list[BackendConnection]] = {}
        self.masters: list[BackendConnection] = []  # one connection per master, for fan-outs
        self.known: dict[Addr, None] = dict.fromkeys(config.seed_addrs)
        self.redis_version = "unknown"
        self.ready = trio.Event()
        self.nursery: trio.Nursery | None = None
        self.refreshes = 0
        self.last_refresh = 0.0
        self._refresh_wanted = trio.Event()
        self._retry_heap: list[tuple[float, int, Request]] = []
        self._retry_seq = itertools.count()
        self._retry_wakeup = trio.Event()
        self._connect_failures: dict[Addr, int] = {}
        self._rr = 0
        self.outcome_unknown = 0
        self.closing = False
        self._unreachable = False
        self.map_epoch = 0  # bumped whenever a slot changes owner (SCAN cursors carry it)
        # A private generator: the proxy never touches the global random state of its host
        # process (tests, embedding applications).
        self._rng = random.Random()

    # -- running ------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._refresher)
            nursery.start_soon(self._retry_timer)
            nursery.start_soon(self._watchdog)
            task_status.started()

    def request_refresh(self) -> None:
        self._refresh_wanted.set()

    async def _refresher(self) -> None:
        cfg = self.config.cluster
        while True:
            ok = await self.refresh()
            # Until the first map, retry quickly; afterwards wait for a trigger or the period.
            wait = cfg.refresh_interval_s if ok or self.slotmap else cfg.refresh_min_interval_s
            with trio.move_on_after(wait):
                await self._refresh_wanted.wait()
            self._refresh_wanted = trio.Event()
            gap = self.last_refresh + cfg.refresh_min_interval_s - trio.current_time()
            if gap > 0:
                await trio.sleep(gap)

    async def refresh(self) -> bool:
        """Fetch the slot map from the first node that answers; install it. True on success."""
        self.last_refresh = trio.current_time()
        candidates = list(self.slotmap.nodes) if self.slotmap else []
        others = [a for a in self.known if a not in candidates]
        self._rng.shuffle(candidates)
        self._rng.shuffle(others)
        timeout = self.config.timeouts.connect_timeout_s
        for addr in candidates + others:
            try:
                try:
                    reply = await control_command(addr, [b"CLUSTER", b"SHARDS"], timeout)
                    slotmap = parse_cluster_shards(reply, addr[0])
                except ControlError as exc:
                    if "unknown subcommand" not in str(exc).lower():
                        raise
                    reply = await control_command(addr, [b"CLUSTER", b"SLOTS"], timeout)
                    slotmap = parse_cluster_slots(reply, addr[0])
                if not slotmap.masters:
                    raise ControlError("node reports no slots")
                if not self.table_loaded:
                    await self._load_node_info(addr, timeout)
            except (OSError, trio.TooSlowError, ControlError, ValueError) as exc:
                log.debug("refresh_failed", node=f"{addr[0]}:{addr[1]}", error=str(exc))
                continue
            self.install(slotmap)
            self.refreshes += 1
            if self._unreachable:
                self._unreachable = False
                log.info("cluster_reachable_again", node=f"{addr[0]}:{addr[1]}")
            return True
        if not self._unreachable:  # once per outage, not once per attempt
            self._unreachable = True
            log.warning("no_seed_reachable", seeds=[f"{h}:{p}" for h, p in self.known])
        return False

    async def _load_node_info(self, addr: Addr, timeout: float) -> None:
        reply = await control_command(addr, [b"COMMAND"], timeout)
        policy = self.config.commands
        table = CommandTable.from_command_reply(reply, policy.allow, policy.deny)
        info = await control_command(addr, [b"INFO", b"server"], timeout)
        for line in bytes(info).decode(errors="replace").splitlines():
            if line.startswith("redis_version:"):
                self.redis_version = line.split(":", 1)[1].strip()
        self.table = table
        self.table_loaded = True

    def install(self, slotmap: SlotMap) -> None:
        """Swap in a new slot map: connections for new masters, retire the others."""
        old = self.slotmap
        self.slotmap = slotmap
        for addr in slotmap.nodes:
            self.known.setdefault(addr)
        per_node = self.config.cluster.connections_per_node
        owners: dict[Addr, list[BackendConnection]] = {}
        for addr in slotmap.masters:
            conns = [c for c in self.conns.get(addr, []) if c.state != CLOSED]
            while len(conns) < per_node:
                conns.append(self._new_conn(addr))
            for c in conns:
                c.retiring = False
            self.conns[addr] = conns
            owners[addr] = conns
        table = self.slot_conn
        for slot, owner in enumerate(slotmap.owner):
            if owner is None:
                table[slot] = None
            else:
                conns = owners[owner]
                table[slot] = conns[slot % len(conns)]
        self.masters = [owners[a][0] for a in slotmap.masters]
        for addr in list(self.conns):
            if addr not in owners:
                for c in self.conns.pop(addr):
                    c.retiring = True
                    if not c.fifo:
                        c.close()
        if old is None or old.owner != slotmap.owner:
            self.map_epoch += 1
            log.info("slotmap_refreshed", masters=len(slotmap.masters),
                     covered=slotmap.covered, nodes=len(slotmap.nodes))
        if not self.ready.is_set():
            self.ready.set()
        self.reactor.flush()

    def _new_conn(self, addr: Addr) -> BackendConnection:
        conn = BackendConnection(addr, self, self.reactor)
        failures = self._connect_failures.get(addr, 0)
        delay = 0.0
        if failures:  # jittered exponential backoff: no reconnect storm against a dead node
            delay = min(2.0, 0.05 * 2 ** min(failures, 6)) * self._rng.uniform(0.5, 1.0)
        assert self.nursery is not None
        self.nursery.start_soon(conn.connect, self.config.timeouts.connect_timeout_s, delay)
        return conn

    def conn_for_addr(self, addr: Addr) -> BackendConnection:
        conns = [c for c in self.conns.get(addr, []) if c.state != CLOSED]
        if not conns:
            conns = [self._new_conn(addr)]
            self.conns[addr] = conns
        return conns[0]

    def scan_order(self) -> list[int]:
        """The lowest slot of each master, ascending: SCAN visits masters in this order."""
        if self.slotmap is None:
            return []
        return sorted(min(lo for lo, _ in sh.ranges) for sh in self.slotmap.shards if sh.ranges)

    def all_nodes(self) -> list[BackendConnection]:
        """One connection to every node, replicas included (for CONFIG SET and friends)."""
        if self.slotmap is None:
            return []
        return [self.conn_for_addr(addr) for addr in self.slotmap.nodes]

    def any_master(self) -> BackendConnection | None:
        masters = self.masters
        if not masters:
            return None
        self._rr = (self._rr + 1) % len(masters)
        conn = masters[self._rr]
        return conn if conn.state != CLOSED else self._replace(conn)

    # -- connection events ------------------------------------------------------------------
    def on_connected(self, conn: BackendConnection) -> None:
        self._connect_failures.pop(conn.addr, None)

    def on_connection_lost(self, conn: BackendConnection, connect_failed: bool) -> None:
        """Replace a lost connection in the tables right away (requests keep flowing to the
        replacement, which connects with backoff) and ask for a fresh topology."""
        if self.closing or conn.retiring:
            return
        if connect_failed:
            self._connect_failures[conn.addr] = self._connect_failures.get(conn.addr, 0) + 1
        self._replace(conn)
        self.request_refresh()

    def _replace(self, conn: BackendConnection) -> BackendConnection | None:
        conns = self.conns.get(conn.addr)
        if not conns or conn not in conns:
            return None
        new = self._new_conn(conn.addr)
        conns[conns.index(conn)] = new
        table = self.slot_conn
        for slot in range(SLOTS):
            if table[slot] is conn:
                table[slot] = new
        self.masters = [new if m is conn else m for m in self.masters]
        return new

    # -- redirects and retries --------------------------------------------------------------
    def on_error_reply(self, conn: BackendConnection, req: Request, raw: bytes) -> bool:
        """An error reply for ``req``: True if the proxy took care of it (a redirect or a
        retry), False to deliver it to the client as it is."""
        redirect = parse_redirect(raw, conn.addr[0])
        if redirect is None:
            return False
        req.hops += 1
        if req.hops > self.config.cluster.max_redirects:
            log.warning("too_many_redirects", slot=req.slot)
            complete(req, errors.TOO_MANY_REDIRECTS)
            return True
        if redirect.kind == MOVED:
            assert redirect.addr is not None
            target = self.conn_for_addr(redirect.addr)
            if 0 <= redirect.slot < SLOTS and self.slot_conn[redirect.slot] is not target:
                self.slot_conn[redirect.slot] = target
                self.map_epoch += 1
            self.request_refresh()
            target.send(req, req.data)
        elif redirect.kind == ASK:
            assert redirect.addr is not None
            target = self.conn_for_addr(redirect.addr)
            target.send(DISCARD, ASKING)
            target.send(req, req.data)
        else:
            self.retry_later(req)
        return True

    def retry_later(self, req: Request) -> None:
        delay = self.config.cluster.retry_backoff_s * req.hops
        heapq.heappush(self._retry_heap, (time.monotonic() + delay, next(self._retry_seq), req))
        self._retry_wakeup.set()

    async def _retry_timer(self) -> None:
        heap = self._retry_heap
        while True:
            if not heap:
                await self._retry_wakeup.wait()
                self._retry_wakeup = trio.Event()
                continue
            delay = heap[0][0] - time.monotonic()
            if delay > 0:
                with trio.move_on_after(delay):
                    await self._retry_wakeup.wait()
                    self._retry_wakeup = trio.Event()
                continue
            while heap and heap[0][0] <= time.monotonic():
                _, _, req = heapq.heappop(heap)
                self.route(req)
            self.reactor.flush()

    def route(self, req: Request) -> None:
        """Send ``req`` where the current map says (used for re-sends)."""
        if req.slot >= 0:
            conn = self.slot_conn[req.slot]
        else:
            conn = self.any_master()
        if conn is None:
            complete(req, errors.CLUSTER_DOWN_UNCOVERED if self.slotmap else errors.NO_TOPOLOGY)
        else:
            conn.send(req, req.data)

    def reroute(self, req: Request, was_ready: bool) -> None:
        """A request that was never written: safe to send again. If the connection never came
        up, the node is unreachable: fail fast instead of queueing behind a dead node."""
        if not was_ready:
            complete(req, errors.BACKEND_UNAVAILABLE)
            return
        req.hops += 1
        if req.hops > self.config.cluster.max_redirects:
            complete(req, errors.BACKEND_UNAVAILABLE)
        else:
            self.retry_later(req)

    def settle_unknown(self, req: Request, exc: BaseException) -> None:
        """A request written to a connection that died before its reply. A read-only one is
        sent again; a write may or may not have run, so the client is told exactly that."""
        if isinstance(exc, TimeoutError):
            complete(req, errors.REQUEST_TIMED_OUT)
        elif req.readonly and req.hops < self.config.cluster.max_redirects:
            req.hops += 1
            self.retry_later(req)
        else:
            self.outcome_unknown += 1
            complete(req, errors.OUTCOME_UNKNOWN)

    async def _watchdog(self) -> None:
        """Fail the requests of a connection that got no reply for ``op_timeout_s`` while it had
        requests outstanding (the timer restarts on every reply, as Envoy's op_timeout)."""
        timeout = self.config.timeouts.op_timeout_s
        seen: dict[int, int] = {}
        while True:
            await trio.sleep(min(0.1, timeout / 4))
            now = time.monotonic()
            failed = False
            for conns in list(self.conns.values()):
                for conn in conns:
                    if not conn.fifo or conn.state == CLOSED:
                        conn.stalled_since = 0.0
                        continue
                    if seen.get(id(conn)) != conn.replies or not conn.stalled_since:
                        seen[id(conn)] = conn.replies
                        conn.stalled_since = now
                    elif now - conn.stalled_since > timeout:
                        conn.fail(TimeoutError("no reply within op_timeout_s"))
                        failed = True
            if failed:
                self.reactor.flush()
            if len(seen) > 4 * (len(self.conns) + 1) * self.config.cluster.connections_per_node:
                live = {id(c) for cs in self.conns.values() for c in cs}
                seen = {k: v for k, v in seen.items() if k in live}

    def close(self) -> None:
        """Close every backend connection (shutdown); requests still pending get an error."""
        self.closing = True
        for conns in self.conns.values():
            for c in conns:
                c.close()
        self.conns.clear()
