"""The operations endpoint: Prometheus metrics and health probes over HTTP, off the data path.

``metrics.listen = "HOST:PORT"`` (``--metrics-listen``) serves, on trio, with h11 for HTTP/1.1:

* ``GET /metrics``: Prometheus text (prometheus-client's exposition format), made when scraped:
  - the proxy's own figures, from the one table that declares them (rproxy/core/stats.py): a
    counter ``rproxy_<name>_total`` or a gauge ``rproxy_<name>``, with the table's help text;
  - every cluster node's figures under **redis_exporter's names** with a ``node`` label
    (``redis_up``, ``redis_memory_used_bytes``, ``redis_commands_processed_total``, per command
    ``redis_commands_total{cmd}`` and ``redis_commands_duration_seconds_total{cmd}``,
    ``redis_db_keys``, ``redis_master_repl_offset``, ``redis_cluster_state`` ...), read by
    ``ClusterPoller`` every ``metrics.cluster_poll_s`` on control connections of its own, so
    that dashboards and alerts written for redis_exporter work with rproxy as the one target;
* ``GET /healthz``: 200 while the process serves (liveness);
* ``GET /readyz``: 200 once the slot map covers every slot and every shard's master is
  reachable and not marked failed, else 503 with the reason (readiness: it flips during a
  failover and back).

Nothing here runs on the data path: a scrape reads counters the data path already keeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import h11
import structlog
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from rproxy.core.config import MetricsSection
from rproxy.core.hotspots import HotSpots
from rproxy.core.merge import parse_info_text
from rproxy.core.slots import SLOTS
from rproxy.core.slowlog import Latency
from rproxy.core.stats import COUNTER, STATS, ErrorCounts
from rproxy.core.topology import Addr
from rproxy.net.cluster import ClusterManager
from rproxy.net.control import ControlError, control_command

log = structlog.get_logger("rproxy.net.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REQUEST = 8192  # bytes of request head accepted (the probes and Prometheus send little)


# -- the cluster's figures, under redis_exporter's names ------------------------------------------
# (INFO field, metric name, kind, help): redis_exporter's names for the INFO fields it exports.
NODE_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("uptime_in_seconds", "redis_uptime_in_seconds", "gauge", "uptime of the node"),
    ("connected_clients", "redis_connected_clients", "gauge", "client connections"),
    ("blocked_clients", "redis_blocked_clients", "gauge", "clients in a blocking command"),
    ("used_memory", "redis_memory_used_bytes", "gauge", "memory used"),
    ("used_memory_rss", "redis_memory_used_rss_bytes", "gauge", "resident memory"),
    ("maxmemory", "redis_memory_max_bytes", "gauge", "maxmemory (0: no limit)"),
    ("total_connections_received", "redis_connections_received_total", "counter",
     "connections accepted"),
    ("total_commands_processed", "redis_commands_processed_total", "counter",
     "commands processed"),
    ("total_net_input_bytes", "redis_net_input_bytes_total", "counter", "bytes received"),
    ("total_net_output_bytes", "redis_net_output_bytes_total", "counter", "bytes sent"),
    ("keyspace_hits", "redis_keyspace_hits_total", "counter", "key lookups that found the key"),
    ("keyspace_misses", "redis_keyspace_misses_total", "counter", "key lookups that missed"),
    ("expired_keys", "redis_expired_keys_total", "counter", "keys expired"),
    ("evicted_keys", "redis_evicted_keys_total", "counter", "keys evicted"),
    ("rdb_changes_since_last_save", "redis_rdb_changes_since_last_save", "gauge",
     "changes since the last save"),
    ("connected_slaves", "redis_connected_slaves", "gauge", "replicas connected"),
    ("master_repl_offset", "redis_master_repl_offset", "gauge", "replication offset"),
    ("slave_repl_offset", "redis_slave_repl_offset", "gauge", "a replica's offset"),
    ("used_cpu_sys", "redis_cpu_sys_seconds_total", "counter", "system CPU seconds"),
    ("used_cpu_user", "redis_cpu_user_seconds_total", "counter", "user CPU seconds"),
)
CLUSTER_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("cluster_slots_assigned", "redis_cluster_slots_assigned", "slots assigned"),
    ("cluster_slots_ok", "redis_cluster_slots_ok", "slots served"),
    ("cluster_slots_pfail", "redis_cluster_slots_pfail", "slots of nodes suspected down"),
    ("cluster_slots_fail", "redis_cluster_slots_fail", "slots of nodes marked failed"),
    ("cluster_known_nodes", "redis_cluster_known_nodes", "nodes this node knows"),
    ("cluster_size", "redis_cluster_size", "masters serving slots"),
)


class ClusterPoller:
    """Every node's ``INFO`` and ``CLUSTER INFO``, read every ``interval`` seconds on control
    connections (never the data path's), kept for the next scrape."""

    def __init__(self, cluster: ClusterManager, interval: float, timeout: float) -> None:
        self.cluster = cluster
        self.interval = interval
        self.timeout = timeout
        self.nodes: dict[Addr, dict[str, dict[str, str]] | None] = {}  # None: did not answer
        self.polled_at = 0.0

    async def run(self) -> None:
        await self.cluster.ready.wait()  # (the first poll as soon as the nodes are known)
        while True:
            await self.poll()
            await trio.sleep(self.interval)

    async def poll(self) -> None:
        slotmap = self.cluster.slotmap
        nodes = list(slotmap.nodes) if slotmap is not None else []
        found: dict[Addr, dict[str, dict[str, str]] | None] = {}
        access = self.cluster.access

        async def one(addr: Addr) -> None:
            try:
                info = await control_command(addr, [b"INFO", b"default", b"commandstats"],
                                             self.timeout, access)
                cluster = await control_command(addr, [b"CLUSTER", b"INFO"], self.timeout,
                                                access)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, ControlError,
                    ValueError):
                found[addr] = None
                return
            sections = parse_info_text(bytes(info))
            sections["cluster"] = parse_info_text(b"# cluster\r\n" + bytes(cluster))[
                "cluster"]
            found[addr] = sections

        async with trio.open_nursery() as nursery:
            for addr in nodes:
                nursery.start_soon(one, addr)
        self.nodes = found
        self.polled_at = time.monotonic()


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class ProxyFigures:
    """What the proxy's own metrics read: ``stat`` a figure of rproxy/core/stats.py by name
    (the server's, as INFO does), ``calls`` the commands by name (the command table's
    counts), ``errors`` the error replies by command and code, ``latency`` the sampled
    latency histograms, ``hot`` the sampled hot slots and keys."""

    stat: Callable[[str], int]
    calls: Callable[[], list[tuple[bytes, int]]]
    errors: ErrorCounts
    latency: Latency
    hot: HotSpots


class Collector:
    """prometheus-client's custom collector: everything is read when scraped."""

    def __init__(self, figures: ProxyFigures, poller: ClusterPoller, top_n: int,
                 hot_keys: bool) -> None:
        self.figures = figures
        self.stat = figures.stat
        self.poller = poller
        self.hot = figures.hot
        self.top_n = top_n
        self.hot_keys = hot_keys

    def collect(self) -> Iterator[Metric]:
        yield from self._proxy()
        yield from self._commands()
        yield from self._hot()
        yield from self._nodes()

    def _commands(self) -> Iterable[Metric]:
        """Commands by name and outcome, and the sampled latency split."""
        calls = CounterMetricFamily(
            "rproxy_commands", "commands clients sent, by command (subcommands as "
            "container|sub; unknown commands as \"unknown\")", labels=["command"])
        for name, n in sorted(self.figures.calls()):
            calls.add_metric([_command_label(name)], n)
        yield calls
        failed = CounterMetricFamily(
            "rproxy_command_errors", "error replies clients got, by command and error code "
            "(the error's first word)", labels=["command", "error"])
        for (name, code), n in sorted(self.figures.errors.counts.items()):
            failed.add_metric([_command_label(name), code.decode(errors="replace")], n)
        yield failed
        latency = HistogramMetricFamily(
            "rproxy_command_duration_seconds", "sampled one-key commands' latency: end to end "
            "(part=total), at the backend from the send to the final reply, redirects and "
            "holds included (part=backend), and the rest, in the proxy (part=proxy)",
            labels=["part"])
        lat = self.figures.latency
        for part, hist in (("total", lat.total), ("backend", lat.backend), ("proxy", lat.proxy)):
            latency.add_metric([part], hist.cumulative(), hist.sum)
        yield latency

    def _hot(self) -> Iterable[Metric]:
        """The hottest slots (and keys) over the sampling window: the top N only."""
        slotmap = self.poller.cluster.slotmap
        slots = GaugeMetricFamily(
            "rproxy_hot_slot_samples", "sampled commands of the hottest slots over the window",
            labels=["slot", "node"])
        for slot, count in self.hot.top_slots(self.top_n):
            owner = slotmap.owner[slot] if slotmap is not None else None
            slots.add_metric([str(slot), f"{owner[0]}:{owner[1]}" if owner else ""], count)
        yield slots
        if self.hot_keys:
            keys = GaugeMetricFamily(
                "rproxy_hot_key_samples", "sampled commands of the hottest keys over the window",
                labels=["key"])
            for key, count in self.hot.top_keys(self.top_n):
                keys.add_metric([key[:128].decode(errors="backslashreplace")], count)
            yield keys

    def _proxy(self) -> Iterable[Metric]:
        for st in STATS:
            name = f"rproxy_{st.name}"
            family: Metric
            if st.kind == COUNTER:
                family = CounterMetricFamily(name, st.help)
            else:
                family = GaugeMetricFamily(name, st.help)
            family.add_metric([], self.stat(st.name))
            yield family
        ready, _ = readiness(self.poller.cluster)
        yield GaugeMetricFamily("rproxy_ready", "1 if /readyz answers 200", value=int(ready))

    def _nodes(self) -> Iterable[Metric]:
        polled = self.poller.nodes
        up = GaugeMetricFamily("redis_up", "1 if the node answered the last poll", labels=["node"])
        info = GaugeMetricFamily("redis_instance_info", "the node's role and version",
                                 labels=["node", "role", "redis_version"])
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for field, name, kind, text in NODE_FIELDS:
            families[field] = (CounterMetricFamily(name, text, labels=["node"]) if kind == "counter"
                               else GaugeMetricFamily(name, text, labels=["node"]))
        cluster: dict[str, GaugeMetricFamily] = {
            field: GaugeMetricFamily(name, text, labels=["node"])
            for field, name, text in CLUSTER_FIELDS}
        state = GaugeMetricFamily("redis_cluster_state", "1 if the node says cluster_state:ok",
                                  labels=["node"])
        replica_offset = GaugeMetricFamily(
            "redis_connected_slave_offset_bytes", "a replica's offset, as its master reports it",
            labels=["node", "slave_ip", "slave_port", "slave_state"])
        replica_lag = GaugeMetricFamily(
            "redis_connected_slave_lag_seconds", "seconds since a replica's last ack, as its "
            "master reports it", labels=["node", "slave_ip", "slave_port", "slave_state"])
        per_cmd = {
            "calls": CounterMetricFamily("redis_commands", "calls per command",
                                         labels=["node", "cmd"]),
            "usec": CounterMetricFamily("redis_commands_duration_seconds",
                                        "seconds spent per command", labels=["node", "cmd"]),
            "rejected_calls": CounterMetricFamily(
                "redis_commands_rejected_calls", "calls refused before running, per command",
                labels=["node", "cmd"]),
            "failed_calls": CounterMetricFamily(
                "redis_commands_failed_calls", "calls that failed while running, per command",
                labels=["node", "cmd"]),
        }
        keys = GaugeMetricFamily("redis_db_keys", "keys per database", labels=["node", "db"])
        expiring = GaugeMetricFamily("redis_db_keys_expiring", "keys with an expiry per database",
                                     labels=["node", "db"])
        for addr, sections in sorted(polled.items()):
            node = f"{addr[0]}:{addr[1]}"
            up.add_metric([node], 0 if sections is None else 1)
            if sections is None:
                continue
            flat: dict[str, str] = {}
            for section in sections.values():
                flat.update(section)
            info.add_metric([node, flat.get("role", ""), flat.get("redis_version", "")], 1)
            for field, family in families.items():
                value = _number(flat.get(field))
                if value is not None:
                    family.add_metric([node], value)
            for field, family in cluster.items():
                value = _number(sections.get("cluster", {}).get(field))
                if value is not None:
                    family.add_metric([node], value)
            cstate = sections.get("cluster", {}).get("cluster_state")
            if cstate is not None:
                state.add_metric([node], 1 if cstate == "ok" else 0)
            for field, text in sections.get("replication", {}).items():
                if field.startswith("slave") and field[5:].isdigit():  # slave0:ip=..,port=..
                    replica = dict(kv.split("=", 1) for kv in text.split(",") if "=" in kv)
                    labels = [node, replica.get("ip", ""), replica.get("port", ""),
                              replica.get("state", "")]
                    replica_offset.add_metric(labels, float(replica.get("offset", 0)))
                    replica_lag.add_metric(labels, float(replica.get("lag", 0)))
            for field, text in sections.get("commandstats", {}).items():
                stats = dict(kv.split("=", 1) for kv in text.split(",") if "=" in kv)
                cmd = field.removeprefix("cmdstat_")
                for name, family in per_cmd.items():
                    value = _number(stats.get(name))
                    if value is not None:
                        family.add_metric([node, cmd], value / 1e6 if name == "usec" else value)
            for db, text in sections.get("keyspace", {}).items():
                fields = dict(kv.split("=", 1) for kv in text.split(",") if "=" in kv)
                keys.add_metric([node, db], float(fields.get("keys", 0)))
                expiring.add_metric([node, db], float(fields.get("expires", 0)))
        yield up
        yield info
        yield from families.values()
        yield from cluster.values()
        yield state
        yield replica_offset
        yield replica_lag
        yield from per_cmd.values()
        yield keys
        yield expiring


def _command_label(name: bytes) -> str:
    return name.decode(errors="replace").lower() or "unknown"


def readiness(cluster: ClusterManager) -> tuple[bool, str]:
    """Ready: a slot map covering every slot, and every shard's master reachable and not
    marked failed by the cluster. Otherwise the reason."""
    slotmap = cluster.slotmap
    if slotmap is None:
        return False, "no slot map yet"
    if slotmap.covered < SLOTS:
        return False, f"slot map covers {slotmap.covered} of {SLOTS} slots"
    for addr in slotmap.masters:
        if addr in slotmap.failed:
            return False, f"master {addr[0]}:{addr[1]} marked failed by the cluster"
        if addr in cluster.down_since:
            return False, f"master {addr[0]}:{addr[1]} unreachable"
    return True, "ready"


class MetricsServer:
    """The HTTP endpoint: one request per connection (``Connection: close``)."""

    def __init__(self, figures: ProxyFigures, cluster: ClusterManager, config: MetricsSection,
                 timeout: float) -> None:
        self.cluster = cluster
        self.poller = ClusterPoller(cluster, config.cluster_poll_s, timeout)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Collector(figures, self.poller, config.hot_top_n,  # type: ignore[arg-type]
                                         config.hot_keys))

    async def serve(self, listen: Addr,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``listen`` (reports the bound port) and poll the cluster, until
        cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.poller.run)
            listeners = await nursery.start(
                partial(trio.serve_tcp, self._handle, listen[1], host=listen[0]))
            port = listeners[0].socket.getsockname()[1]
            log.info("metrics_listening", address=f"{listen[0]}:{port}")
            task_status.started(port)

    def respond(self, target: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of ``target``."""
        path = target.split("?", 1)[0]
        if path == "/metrics":
            return 200, CONTENT_TYPE, generate_latest(self.registry)
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            ready, why = readiness(self.cluster)
            return (200 if ready else 503), "text/plain", why.encode() + b"\n"
        return 404, "text/plain", b"not found: /metrics, /healthz, /readyz\n"

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        try:
            with trio.move_on_after(10):
                event = await _next_request(conn, stream)
                if event is None:
                    return
                if event.method not in (b"GET", b"HEAD"):
                    status, ctype, body = 405, "text/plain", b"GET only\n"
                else:
                    status, ctype, body = self.respond(event.target.decode(errors="replace"))
                headers = [("content-type", ctype), ("content-length", str(len(body))),
                           ("connection", "close")]
                out = conn.send(h11.Response(status_code=status, headers=headers))
                if event.method == b"GET":
                    out += conn.send(h11.Data(data=body))  # type: ignore[operator]
                out += conn.send(h11.EndOfMessage())  # type: ignore[operator]
                await stream.send_all(out)  # type: ignore[arg-type]
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            await stream.aclose()


async def _next_request(conn: h11.Connection, stream: trio.SocketStream) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(4096)
            conn.receive_data(data)
            if not data:
                return None
            continue
        if isinstance(event, h11.Request):
            return event
        return None
