"""The operations endpoint (``metrics.listen``, ``--metrics-listen``): Prometheus text with the
proxy's own figures and every node's under redis_exporter's names, and the health probes --
against a real cluster. ``/readyz`` flips to 503 while a master is down and back to 200 after
the failover."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
import uuid

import pytest
import redis

from rproxy.cli import build_parser, config_from_args
from rproxy.core.config import ConfigError
from rproxy.core.slots import key_slot
from rproxy.localcluster import LocalCluster
from rproxy.core.resp import encode_command
from tests.support import (
    ProxyThread,
    RawConnection,
    argv,
    keys_in_slots,
    proxy_config,
    wait_until,
)

RUN = uuid.uuid4().hex[:8]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str, labels: str = "") -> float | None:
    """The value of one sample in Prometheus text, or None."""
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


@pytest.fixture(scope="module")
def observed(cluster):  # type: ignore[no-untyped-def]
    cfg = proxy_config(cluster.seeds, metrics={"listen": "127.0.0.1:0", "cluster_poll_s": 0.5})
    with ProxyThread(cfg) as p:
        yield p


def test_metrics_show_proxy_counters_and_every_node(observed, cluster) -> None:
    port = observed.server.metrics_port
    r = observed.client()
    wait_until(lambda: sample(get(port, "/metrics")[1], "redis_up",
                              f'{{node="127.0.0.1:{cluster.masters()[0].port}"}}') == 1, 10,
               "the first poll")
    status, before = get(port, "/metrics")
    assert status == 200
    for i in range(50):
        r.set(f"m:{RUN}:{i}", "v")
    time.sleep(1.2)  # two polls
    _, after = get(port, "/metrics")
    # the proxy's own, from the one table of figures
    assert sample(after, "rproxy_total_commands_processed_total") >= \
        sample(before, "rproxy_total_commands_processed_total") + 50
    assert "# HELP rproxy_held_requests requests waiting" in after
    assert sample(after, "rproxy_ready") == 1
    # every node, masters and replicas, under redis_exporter's names with a node label
    for node in cluster.nodes:
        label = f'{{node="127.0.0.1:{node.port}"}}'
        assert sample(after, "redis_up", label) == 1
        assert sample(after, "redis_cluster_state", label) == 1
        assert sample(after, "redis_cluster_slots_ok", label) == 16384
        assert sample(after, "redis_memory_used_bytes", label) > 0
        assert sample(after, "redis_master_repl_offset", label) is not None
    moved = sum(sample(after, "redis_commands_processed_total",
                       f'{{node="127.0.0.1:{m.port}"}}') or 0 for m in cluster.masters())
    was = sum(sample(before, "redis_commands_processed_total",
                     f'{{node="127.0.0.1:{m.port}"}}') or 0 for m in cluster.masters())
    assert moved >= was + 50
    assert re.search(r'^redis_db_keys\{db="db0",node="[^"]+"\} [1-9]', after, re.M)
    # per command, from each node's INFO commandstats (redis_exporter's names)
    assert re.search(r'^redis_commands_total\{cmd="set",node="[^"]+"\} [1-9]', after, re.M)
    assert re.search(r'^redis_commands_duration_seconds_total\{cmd="set",node=', after, re.M)
    assert sample(after, "rproxy_client_input_bytes_total") > sample(
        before, "rproxy_client_input_bytes_total")
    # each master reports its replica's offset and lag (redis_exporter's names)
    assert len(re.findall(r'^redis_connected_slave_offset_bytes\{node=', after, re.M)) == 3
    assert len(re.findall(r'^redis_connected_slave_lag_seconds\{node=', after, re.M)) == 3


def test_metrics_show_the_hottest_slots_and_keys(observed, cluster) -> None:
    r = observed.client()
    key = f"metrics-hot:{RUN}"
    for _ in range(200):
        r.incr(key)
    text = get(observed.server.metrics_port, "/metrics")[1]
    slot = key_slot(key.encode())
    owner = cluster.master_of_slot(slot).port
    assert sample(text, "rproxy_hot_slot_samples",
                  f'{{node="127.0.0.1:{owner}",slot="{slot}"}}') >= 200
    assert sample(text, "rproxy_hot_key_samples", f'{{key="{key}"}}') >= 200 // 16
    assert len(re.findall(r"^rproxy_hot_slot_samples\{", text, re.M)) <= 10  # top N only


def count(text: str, command: str) -> float:
    return sample(text, "rproxy_commands_total", f'{{command="{command}"}}') or 0.0


def test_commands_by_name_and_outcome(observed) -> None:
    """Every command a client sends is counted once, whichever path runs it (inline, split,
    queued in a transaction, refused in the subscribed mode, held behind a blocking command's
    drain, silenced by CLIENT REPLY OFF); error replies by command and error code."""
    port = observed.server.metrics_port
    _, before = get(port, "/metrics")
    r = observed.client()
    k1, k2 = keys_in_slots(2, f"cnt:{RUN}")
    r.set(k1, "1")
    for _ in range(3):
        r.get(k1)
    assert r.mget(k1, k2) == [b"1", None]  # split when the keys are in two slots
    with r.pipeline(transaction=True) as tx:
        tx.get(k1).get(k1)
        tx.execute()
    pipe = r.pipeline(transaction=False)  # a blocking command behind a reply: run once, later
    pipe.get(k1)
    pipe.blpop([f"cnt:{RUN}:none"], timeout=0.05)
    pipe.get(k1)
    assert pipe.execute() == [b"1", None, b"1"]
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.lpush(k1, "x")
    with pytest.raises(redis.ResponseError, match="unknown command"):
        r.execute_command("NOPE-" + RUN)
    conn = RawConnection(observed.port)
    try:
        conn("SUBSCRIBE", f"cnt:{RUN}")
        assert conn("GET", k1).startswith(b"-ERR Can't execute 'get'")  # refused, counted
        conn("UNSUBSCRIBE")
        conn.sock.sendall(encode_command(argv("CLIENT", "REPLY", "OFF"))
                          + encode_command(argv("GET", k1)))
        assert conn("CLIENT", "REPLY", "ON") == b"+OK\r\n"
    finally:
        conn.close()
    r.delete(k1)
    _, after = get(port, "/metrics")
    assert count(after, "get") - count(before, "get") == 3 + 2 + 2 + 1 + 1
    assert count(after, "mget") - count(before, "mget") == 1
    assert count(after, "blpop") - count(before, "blpop") == 1
    assert count(after, "multi") - count(before, "multi") == 1
    assert count(after, "exec") - count(before, "exec") == 1
    assert count(after, "client|reply") - count(before, "client|reply") == 2
    assert count(after, "unknown") - count(before, "unknown") == 1
    wrongtype = '{command="lpush",error="WRONGTYPE"}'
    assert (sample(after, "rproxy_command_errors_total", wrongtype) or 0) - (
        sample(before, "rproxy_command_errors_total", wrongtype) or 0) == 1
    unknown = '{command="unknown",error="ERR"}'
    assert (sample(after, "rproxy_command_errors_total", unknown) or 0) - (
        sample(before, "rproxy_command_errors_total", unknown) or 0) == 1
    get_err = '{command="get",error="ERR"}'  # the GET refused in the subscribed mode
    assert (sample(after, "rproxy_command_errors_total", get_err) or 0) - (
        sample(before, "rproxy_command_errors_total", get_err) or 0) == 1
    splits = "rproxy_cross_slot_splits_total"
    assert sample(after, splits) - sample(before, splits) == 1


def test_latency_split_into_proxy_and_backend(observed) -> None:
    """Sampled one-key commands: the histograms of the time end to end, at the backend, and in
    the proxy grow under load, and backend + proxy add up to the total."""
    port = observed.server.metrics_port
    r = observed.client()
    key = f"lat:{RUN}"
    pipe = r.pipeline(transaction=False)
    for _ in range(40):
        for _ in range(16):
            pipe.get(key)
        pipe.execute()
    text = get(port, "/metrics")[1]
    name = "rproxy_command_duration_seconds"
    total = sample(text, f"{name}_count", '{part="total"}')
    assert total is not None and total >= 2  # one read in 16 (per slot) is timed
    assert sample(text, f"{name}_count", '{part="backend"}') == total
    assert sample(text, f"{name}_count", '{part="proxy"}') == total
    sums = {part: sample(text, f"{name}_sum", f'{{part="{part}"}}')
            for part in ("total", "backend", "proxy")}
    assert sums["backend"] > 0 and sums["proxy"] > 0
    assert abs(sums["backend"] + sums["proxy"] - sums["total"]) <= 1e-3 * total
    assert sample(text, f"{name}_bucket", '{le="+Inf",part="total"}') == total


def test_health_probes(observed) -> None:
    port = observed.server.metrics_port
    assert get(port, "/healthz") == (200, "ok\n")
    assert get(port, "/readyz") == (200, "ready\n")
    assert get(port, "/nope")[0] == 404


def test_readyz_flips_during_a_failover_and_back() -> None:
    c = LocalCluster(masters=3, replicas=1, node_timeout_ms=1000)
    c.start()
    try:
        cfg = proxy_config(c.seeds, metrics={"listen": "127.0.0.1:0", "cluster_poll_s": 0.5})
        with ProxyThread(cfg) as p:
            port = p.server.metrics_port
            assert get(port, "/readyz")[0] == 200
            victim = c.master_of_slot(key_slot(b"x"))
            c.kill(victim)  # (its connections close: the proxy knows at once)
            seen: list[tuple[int, str]] = []
            wait_until(lambda: seen.append(get(port, "/readyz")) or seen[-1][0] == 503, 10,
                       "not ready")
            assert f"{victim.port}" in seen[-1][1], seen[-1]
            wait_until(lambda: get(port, "/readyz")[0] == 200, 30, "ready after the failover")
            assert p.client().get("x") is None  # served by the promoted replica
            text = get(port, "/metrics")[1]
            assert sample(text, "redis_up", f'{{node="127.0.0.1:{victim.port}"}}') in (0, None)
    finally:
        c.stop()


def test_the_flag_and_its_limits() -> None:
    args = build_parser().parse_args(["--seed", "127.0.0.1:1", "--metrics-listen",
                                      "127.0.0.1:9121"])
    assert config_from_args(args, {}).metrics.listen == "127.0.0.1:9121"
    env = config_from_args(build_parser().parse_args(["--seed", "127.0.0.1:1"]),
                           {"RPROXY_METRICS_LISTEN": "0.0.0.0:9121"})
    assert env.metrics.listen == "0.0.0.0:9121"
    with pytest.raises(ConfigError, match="metrics.listen"):
        config_from_args(build_parser().parse_args(
            ["--seed", "127.0.0.1:1", "--metrics-listen", "nope"]), {})
    with pytest.raises(ConfigError, match="one process"):
        config_from_args(build_parser().parse_args(
            ["--seed", "127.0.0.1:1", "--metrics-listen", "127.0.0.1:9121", "--workers", "2"]),
            {})
