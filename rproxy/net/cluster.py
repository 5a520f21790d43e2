"""The cluster manager: the one owner of the topology and of the backend connections.

It learns the slot map from any reachable node (every known node is a seed), writes the
``Router``'s tables (slot -> connection, reads, masters, the command table) and refreshes them
on MOVED, on connection loss and periodically, never more often than
``refresh_min_interval_s``. It opens, replaces and retires the backend connections, which
report to the ``SharedPool`` (rproxy/net/pool.py), and runs a watchdog that fails requests stuck
on a hung node.

Failover hold: a connection that is not up (connecting, or reconnecting with back-off after
its node went away) queues its requests in order. That queue *is* the shard's hold: when the
node answers again they go out first; when a new map names another master they move there, in
order; when the shard has had no reachable master for ``failover_hold_s`` -- or no cluster
node answers at all -- the watchdog fails them with a clear error. Other shards' connections
are not involved, so they are not slowed down.
"""

from __future__ import annotations

import random
import re
import time

import structlog
import trio

from rproxy.core import errors
from rproxy.core.commands import CommandTable
from rproxy.core.config import ClusterSection, Config
from rproxy.core.stats import Stats
from rproxy.core.topology import (
    Addr,
    SlotMap,
    carry_over,
    parse_cluster_shards,
    parse_cluster_slots,
)
from rproxy.net.backend import CLOSED, CONNECTING, READY, BackendConnection, Owner
from rproxy.net.control import ControlError, control_command
from rproxy.net.lease import LeasePool
from rproxy.net.pool import SharedPool
from rproxy.net.pubsub import PubSubHub
from rproxy.net.reactor import Reactor
from rproxy.net.router import Router
from rproxy.net.transaction import WatchLocks
from rproxy.net.transport import NodeAccess, client_context


def node_access(cluster: ClusterSection) -> NodeAccess:
    """The cluster's credentials and TLS settings, as every connection to a node uses them."""
    tls = None
    if cluster.tls:
        tls = client_context(cluster.tls_ca_cert_file, cluster.tls_cert_file,
                             cluster.tls_key_file, cluster.tls_check_hostname)
    return NodeAccess(cluster.auth_command(), tls, cluster.tls_server_name)


log = structlog.get_logger("rproxy.net.cluster")

# A connection with requests out and no reply for this long makes the proxy re-read the slot
# map at the fast pace: a hung master is marked failed, and replaced, by the cluster.
SUSPECT_S = 0.5


_SCRIPT_HEAD = re.compile(
    rb"\*\d+\r\n\$\d+\r\n(EVAL|EVALSHA|EVAL_RO|EVALSHA_RO|FCALL|FCALL_RO)\r\n", re.IGNORECASE)


def _runs_script(conn: BackendConnection) -> bool:
    """Is the oldest request on ``conn`` a script or a function call?"""
    for req in conn.fifo:
        data = req[2]  # DATA
        if data:  # (an ASKING's placeholder has none)
            return _SCRIPT_HEAD.match(data, 0, 64) is not None
    return False


# The node's replies that say the cluster's credentials are wrong or missing.
AUTH_REFUSALS = ("WRONGPASS", "NOAUTH", "ERR AUTH", "NOPERM")


class ClusterManager:
    """The topology and the backend connections. The main manager speaks RESP2 and polls the
    map; its RESP3 plane (``resp3_plane``: a manager of its own connections, made on the
    first ``HELLO 3``) serves RESP3 clients on connections that said ``HELLO 3``, so that
    every reply reaches them as the node sent it. The main manager installs each map it
    learns in the plane too; the plane shares its pub/sub hub, watch locks and scripts."""

    def __init__(self, config: Config, reactor: Reactor, router: Router, stats: Stats,
                 main: ClusterManager | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.router = router
        self.stats = stats
        # How every connection to a node starts: the cluster's AUTH, TLS (the RESP3 plane
        # shares the main one's: one TLS context, its certificates read once)
        self.access: NodeAccess = (main.access if main is not None
                                   else node_access(config.cluster))
        self.map_read_at = 0.0  # time.monotonic() of the last slot map read (0: none yet)
        self.main = main  # the RESP2 manager, if this is its RESP3 plane
        self.resp3 = main is not None
        self._resp3: ClusterManager | None = None  # the RESP3 plane, once a client asks
        self.pool = SharedPool(config, reactor, router, stats, self)
        self.leases = LeasePool(self, self.pool, stats, config.cluster.max_leases_per_node)
        self.pubsub: PubSubHub
        self.watch_locks: WatchLocks
        if main is not None:
            self.pubsub = main.pubsub
            self.watch_locks = main.watch_locks
            self.pool.scripts = main.pool.scripts
        else:
            self.pubsub = PubSubHub(self, router, reactor, stats, config.cluster.retry_backoff_s)
            # emulated transactions watching several masters, one at a time per key
            self.watch_locks = WatchLocks()
        self.slotmap: SlotMap | None = None
        self.conns: dict[Addr, list[BackendConnection]] = {}
        self.replica_conns: dict[Addr, BackendConnection] = {}  # READONLY connections
        self.down_since: dict[Addr, float] = {}  # nodes whose connection is lost, since when
        self.known: dict[Addr, None] = dict.fromkeys(config.seed_addrs)
        self.redis_version = "unknown"
        self.ready = trio.Event()
        self.nursery: trio.Nursery | None = None
        self.last_refresh = 0.0
        self._refresh_wanted = trio.Event()
        self._connect_failures: dict[Addr, int] = {}
        self.closing = False
        self.unreachable = False  # the last refresh found no node answering
        self.suspect = False  # a connection has had no reply for SUSPECT_S with requests out
        # A private generator: the proxy never touches the global random state of its host
        # process (tests, embedding applications).
        self._rng = random.Random()

    # -- running ------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._refresher)
            nursery.start_soon(self.pool.run_retries)
            nursery.start_soon(self._watchdog)
            task_status.started()

    def request_refresh(self) -> None:
        if self.main is not None:  # (the plane's map comes from the main manager)
            self.main.request_refresh()
            return
        self._refresh_wanted.set()

    def resp3_plane(self) -> ClusterManager:
        """The manager of the RESP3 connections (made now if this is the first RESP3 client):
        the current map and command table installed at once, so that the client's first
        commands wait on connections being opened, as in a failover hold."""
        plane = self._resp3
        if plane is None:
            plane = self._resp3 = ClusterManager(
                self.config, self.reactor, Router(self.config.cluster.read_from), self.stats,
                main=self)
            plane.nursery = self.nursery
            if self.nursery is not None:
                self.nursery.start_soon(plane.pool.run_retries)
                self.nursery.start_soon(plane._watchdog)
            plane.redis_version = self.redis_version
            if self.router.table_loaded:
                plane.router.load_table(self.router.table)
            if self.slotmap is not None:
                plane.install(self.slotmap)
        return plane

    async def _refresher(self) -> None:
        cfg = self.config.cluster
        while True:
            try:
                ok = await self.refresh()
            except Exception:  # a bug here must not take the proxy down: log, try again
                log.exception("refresh_crashed")
                ok = False
            # While something is wrong (no map, no node answering, a master failed or not
            # reachable) re-read quickly: the promoted replica is found soon after the election.
            fast = not ok or self.degraded()
            wait = cfg.refresh_min_interval_s if fast else cfg.refresh_interval_s
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
        access = self.access
        timeout = self.config.timeouts.connect_timeout_s
        for addr in candidates + others:
            try:
                try:
                    reply = await control_command(addr, [b"CLUSTER", b"SHARDS"], timeout,
                                                  access)
                    slotmap = parse_cluster_shards(reply, addr[0], tls=access.tls is not None)
                except ControlError as exc:
                    if "unknown subcommand" not in str(exc).lower():
                        raise
                    reply = await control_command(addr, [b"CLUSTER", b"SLOTS"], timeout, access)
                    slotmap = parse_cluster_slots(reply, addr[0])
                if not slotmap.masters:
                    raise ControlError("node reports no slots")
                if not self.router.table_loaded:
                    await self._load_node_info(addr, timeout)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, ControlError,
                    ValueError) as exc:
                text = str(exc) or repr(exc)
                if isinstance(exc, ControlError) and text.startswith(AUTH_REFUSALS):
                    # the cluster's credentials (cluster.username / password): the node's words
                    log.warning("cluster_auth_failed", node=f"{addr[0]}:{addr[1]}", error=text)
                else:
                    log.debug("refresh_failed", node=f"{addr[0]}:{addr[1]}", error=text)
                continue
            self.install(slotmap)
            self.stats.slotmap_refreshes += 1
            self.map_read_at = time.monotonic()
            if self.unreachable:
                self.unreachable = False
                log.info("cluster_reachable_again", node=f"{addr[0]}:{addr[1]}")
                # The cluster is back: the nodes still down get a fresh failover_hold_s
                # (requests arriving now wait for their reconnect instead of failing).
                now = time.monotonic()
                for down in self.down_since:
                    self.down_since[down] = now
            return True
        if not self.unreachable:  # once per outage, not once per attempt
            self.unreachable = True
            log.warning("no_seed_reachable", seeds=[f"{h}:{p}" for h, p in self.known])
        return False

    def degraded(self) -> bool:
        """A master the cluster marked failed, one the proxy cannot reach, or one that has not
        answered for a while (hung?): re-read the map at the fast pace."""
        m = self.slotmap
        return (m is None or bool(m.failed) or self.suspect
                or any(a in self.down_since for a in m.masters))

    async def _load_node_info(self, addr: Addr, timeout: float) -> None:
        reply = await control_command(addr, [b"COMMAND"], timeout, self.access)
        policy = self.config.commands
        table = CommandTable.from_command_reply(reply, policy.allow, policy.deny)
        info = await control_command(addr, [b"INFO", b"server"], timeout, self.access)
        for line in bytes(info).decode(errors="replace").splitlines():
            if line.startswith("redis_version:"):
                self.redis_version = line.split(":", 1)[1].strip()
        self.router.load_table(table)
        if self._resp3 is not None:
            self._resp3.router.load_table(table)

    def install(self, slotmap: SlotMap) -> None:
        """Swap in a new slot map: connections for new masters, retire the others."""
        old = self.slotmap
        router = self.router
        if old is not None and old.owner == slotmap.owner and old.shards == slotmap.shards \
                and old.failed == slotmap.failed and all(c.state != CLOSED for c in router.masters):
            return  # the usual periodic refresh: nothing changed, nothing to do
        self.slotmap = slotmap = carry_over(old, slotmap)
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
        table = router.slot_conn  # updated in place: the sessions hold this list
        if per_node == 1:  # one C-level pass (a refresh must not stall the data path)
            first = {addr: conns[0] for addr, conns in owners.items()}
            table[:] = map(first.get, slotmap.owner)
        else:
            table[:] = [None if o is None else owners[o][slot % per_node]
                        for slot, o in enumerate(slotmap.owner)]
        router.has_map = True
        router.masters = [owners[a][0] for a in slotmap.masters]
        router.master_slots = [  # each master's lowest slot: where a fan-out part is re-sent
            min(lo for lo, _ in sh.ranges) for sh in slotmap.shards if sh.ranges]
        for addr in list(self.down_since):
            if addr not in owners and addr not in self.replica_conns:
                del self.down_since[addr]
        newly_failed = slotmap.failed - (old.failed if old else frozenset())
        for addr in list(self.conns):
            if addr not in owners:
                for c in self.conns.pop(addr):
                    c.retiring = True
                    if not c.fifo:
                        c.close()
                    elif c.state != READY or addr in newly_failed:
                        # what waits on it (the hold) moves to the new owners in order
                        c.fail(ConnectionAbortedError("no longer a master"))
        for addr in newly_failed:
            # The cluster agreed this master is down (dead or hung): stop sending to it now;
            # what it was sent is settled by the retry rules, what waits goes to its successor.
            # Its replacement connection counts as up only once the node answers PING.
            for c in owners.get(addr, ()):
                if c.state == READY:
                    c.fail(ConnectionAbortedError("node marked failed by the cluster"))
        if router.read_from != "master":
            self._assign_reads()
        if old is None or old.owner != slotmap.owner:
            router.map_epoch += 1
            router.changed()
            log.info("slotmap_refreshed", masters=len(slotmap.masters),
                     covered=slotmap.covered, nodes=len(slotmap.nodes))
        if not self.ready.is_set():
            self.ready.set()
        if self._resp3 is not None:
            self._resp3.install(slotmap)
        self.reactor.flush()

    def _new_conn(self, addr: Addr, replica: bool = False) -> BackendConnection:
        conn = BackendConnection(addr, self.pool, self.reactor,
                                 self.config.limits.max_pending_per_backend, replica, self.resp3,
                                 self.access)
        failures = self._connect_failures.get(addr, 0)
        delay = 0.0
        if failures:  # jittered exponential back-off: no reconnect storm against a dead node,
            # and a node that comes back is found within half a second
            delay = min(0.5, 0.025 * 2 ** min(failures, 5)) * self._rng.uniform(0.5, 1.0)
        assert self.nursery is not None
        self.nursery.start_soon(conn.connect, self.config.timeouts.connect_timeout_s, delay)
        return conn

    def open_connection(self, addr: Addr, owner: Owner,
                        cls: type[BackendConnection] = BackendConnection) -> BackendConnection:
        """A new connection to ``addr`` owned by ``owner`` (a lease, the pub/sub hub),
        outside the tables."""
        conn = cls(addr, owner, self.reactor, self.config.limits.max_pending_per_backend,
                   resp3=self.resp3, access=self.access)
        assert self.nursery is not None
        self.nursery.start_soon(conn.connect, self.config.timeouts.connect_timeout_s)
        return conn

    def conn_for_addr(self, addr: Addr) -> BackendConnection:
        conns = [c for c in self.conns.get(addr, []) if c.state != CLOSED]
        if not conns:
            conns = [self._new_conn(addr)]
            self.conns[addr] = conns
        return conns[0]

    def _assign_reads(self) -> None:
        """Fill ``read_conn``: each slot's reads go to one of its shard's healthy replicas
        (spread by slot); with none, to the master (prefer-replica) or nowhere (replica)."""
        m = self.slotmap
        if m is None:
            return
        wanted: dict[Addr, None] = {}
        router = self.router
        table = router.read_conn
        for shard in m.shards:
            conns = []
            for addr in shard.replicas:
                wanted[addr] = None
                conn = self.replica_conns.get(addr)
                if conn is None or conn.state == CLOSED:
                    conn = self.replica_conns[addr] = self._new_conn(addr, replica=True)
                if addr not in self.down_since:
                    conns.append(conn)
            for lo, hi in shard.ranges:
                for slot in range(lo, hi + 1):
                    if conns:
                        table[slot] = conns[slot % len(conns)]
                    elif router.read_from == "prefer-replica":
                        table[slot] = router.slot_conn[slot]
                    else:
                        table[slot] = None
        for addr in list(self.replica_conns):
            if addr not in wanted:
                conn = self.replica_conns.pop(addr)
                conn.retiring = True
                if not conn.fifo:
                    conn.close()

    def all_nodes(self) -> list[BackendConnection]:
        """One connection to every node, replicas included (for CONFIG SET and friends)."""
        if self.slotmap is None:
            return []
        return [self.conn_for_addr(addr) for addr in self.slotmap.nodes]

    # -- connection events ------------------------------------------------------------------
    def connection_up(self, conn: BackendConnection) -> None:
        self._connect_failures.pop(conn.addr, None)
        if self.down_since.pop(conn.addr, None) is not None and conn.replica:
            self._assign_reads()

    def connection_lost(self, conn: BackendConnection, connect_failed: bool) -> None:
        """Replace a lost connection in the tables right away (requests keep flowing to the
        replacement, which connects with backoff, and wait there: the hold) and ask for a
        fresh topology."""
        if self.closing or conn.retiring:
            return
        if connect_failed:
            self._connect_failures[conn.addr] = self._connect_failures.get(conn.addr, 0) + 1
        self.down_since.setdefault(conn.addr, time.monotonic())
        self._take_out(conn)
        self.request_refresh()

    def _take_out(self, conn: BackendConnection) -> None:
        """A new connection takes ``conn``'s place in the tables (a lost one; one busy with a
        script)."""
        if conn.replica:
            if self.replica_conns.get(conn.addr) is conn:
                self.replica_conns[conn.addr] = self._new_conn(conn.addr, replica=True)
            self._assign_reads()  # its reads go to another replica or the master meanwhile
        else:
            self._replace(conn)

    def _replace(self, conn: BackendConnection) -> BackendConnection | None:
        conns = self.conns.get(conn.addr)
        if not conns or conn not in conns:
            return None
        new = self._new_conn(conn.addr)
        conns[conns.index(conn)] = new
        self.router.replace(conn, new)
        if self.router.read_from != "master":
            self._assign_reads()  # prefer-replica slots that read from this master
        return new

    def connections(self) -> list[BackendConnection]:
        """Every live backend connection: masters (and other nodes), then replica reads."""
        out = [c for conns in self.conns.values() for c in conns if c.state != CLOSED]
        out.extend(c for c in self.replica_conns.values() if c.state != CLOSED)
        out.extend(self.leases.connections())
        if self.main is None:  # (the plane shares the main manager's hub)
            out.extend(self.pubsub.connections())
        return out

    def planes(self) -> list[ClusterManager]:
        """This manager and its RESP3 plane, if any (for the gauges and INFO)."""
        return [self] if self._resp3 is None else [self, self._resp3]

    def held(self) -> int:
        """Requests waiting: queued on connections that are not up, or for a retry."""
        return self.pool.waiting + sum(
            len(c.fifo) for c in self.connections() if c.state == CONNECTING)

    def _expire_holds(self, now: float) -> bool:
        """Fail the requests waiting for a node that has been unreachable for longer than
        ``failover_hold_s`` -- or for any node, when no cluster node answers at all."""
        hold = self.config.cluster.failover_hold_s
        expired = False
        for conn in self.connections():
            if conn.state != CONNECTING or not conn.fifo:
                continue
            since = self.down_since.get(conn.addr)
            if (self.main or self).unreachable and since is not None:  # (a plane: the main's)
                error = errors.CLUSTER_UNREACHABLE
            elif since is not None and now - since >= hold:
                error = errors.HOLD_EXPIRED
            else:
                continue
            self.stats.held_expired += conn.drop_queued(error)
            expired = True
        return expired

    async def _watchdog(self) -> None:
        """Fail the requests of a connection that got no reply for ``op_timeout_s`` while it had
        requests outstanding (the timer restarts on every reply, as Envoy's op_timeout), and
        the requests held longer than ``failover_hold_s``."""
        timeout = self.config.timeouts.op_timeout_s
        seen: dict[int, int] = {}
        while True:
            await trio.sleep(min(0.1, timeout / 4))
            now = time.monotonic()
            failed = self._expire_holds(now)
            suspect = False
            for conn in self.connections():
                if not conn.fifo or conn.state != READY or conn.blocking:
                    conn.stalled_since = 0.0
                    continue
                if seen.get(id(conn)) != conn.replies or not conn.stalled_since:
                    seen[id(conn)] = conn.replies
                    conn.stalled_since = now
                elif now - conn.stalled_since > SUSPECT_S and _runs_script(conn):
                    self._busy(conn)
                elif now - conn.stalled_since > timeout:
                    conn.fail(TimeoutError("no reply within op_timeout_s"))
                    failed = True
                elif now - conn.stalled_since > SUSPECT_S:
                    suspect = True
            if suspect and not self.suspect:  # a hung node? the cluster may be failing it over
                self.request_refresh()
            self.suspect = suspect
            if failed:
                self.reactor.flush()
            if len(seen) > 4 * (len(self.conns) + len(self.replica_conns) + 1) * \
                    self.config.cluster.connections_per_node:
                live = {id(c) for c in self.connections()}
                seen = {k: v for k, v in seen.items() if k in live}

    def _busy(self, conn: BackendConnection) -> None:
        """The oldest request on ``conn`` is a script that has been running for a while: the
        node is busy, not failed. Nothing more goes on ``conn`` -- a new connection takes its
        place in the tables, where the node answers ``-BUSY`` as to any client of its own
        until the script ends (SCRIPT KILL reaches it on a connection of its own) -- and
        ``conn`` is left to finish: the script's reply, then what was queued behind it."""
        log.warning("node_busy", node=f"{conn.addr[0]}:{conn.addr[1]}",
                    waiting=len(conn.fifo))
        conn.blocking = True  # no op-timeout: a script may run as long as it likes
        self._take_out(conn)
        conn.retiring = True

    def close(self) -> None:
        """Close every backend connection (shutdown); requests still pending get an error."""
        self.closing = True
        if self._resp3 is not None:
            self._resp3.close()
        self.leases.close()
        if self.main is None:
            self.pubsub.close()
        for c in self.connections():
            c.close()
        self.conns.clear()
        self.replica_conns.clear()
