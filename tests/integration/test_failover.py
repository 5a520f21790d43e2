"""Failover hold and replica reads against real clusters.

A private cluster of 3 masters and no replicas (``cluster-require-full-coverage no``, so the
other shards keep serving): a killed master's requests are held for ``failover_hold_s``, go
through if the node comes back in time, fail with a clear error past it -- and the other
shards answer at once all along. The session cluster (with replicas) serves the
``read_from`` tests. The six load-and-chaos scenarios are in tests/chaos/.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from rproxy.localcluster import LocalCluster
from rproxy.core.slots import key_slot
from tests.support import ProxyThread, node_client, proxy_config, wait_until


@pytest.fixture(scope="module")
def bare() -> Iterator[LocalCluster]:
    c = LocalCluster(masters=3, replicas=0, node_timeout_ms=1000,
                     extra_config={"cluster-require-full-coverage": "no"})
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _key_on(cluster: LocalCluster, node: Any, prefix: str) -> str:
    for i in range(10000):
        key = f"{prefix}:{i}"
        if cluster.master_of_slot(key_slot(key.encode())).port == node.port:
            return key
    raise AssertionError("no key found")


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    try:
        result = fn()
    except redis.RedisError as exc:
        result = exc
    return result, time.monotonic() - t0


@pytest.mark.parametrize("protocol", [2, 3])
def test_held_requests_go_through_when_the_node_returns_and_expire_past_the_hold(
        bare, protocol: int) -> None:
    # A restarted master answers CLUSTERDOWN for its first 2 s (Redis's CLUSTER_WRITABLE_DELAY):
    # those requests wait too, so the hold must be longer than that here. RESP3 clients are
    # served on connections of their own (the RESP3 plane): the same holds.
    hold = 3.5
    cfg = proxy_config(bare.seeds, cluster={"failover_hold_s": hold})
    with ProxyThread(cfg) as p:
        r = p.client(protocol=protocol)
        victim, other = bare.masters()[0], bare.masters()[1]
        key, other_key = _key_on(bare, victim, "hold"), _key_on(bare, other, "free")
        r.set(key, "v1")
        r.set(other_key, "w1")
        # (appendonly: what a node acknowledged is in its AOF, so a restart keeps it)

        # 1. The node goes away and comes back within the hold: the held read and write
        #    go through, in order, with no error.
        bare.kill(victim)
        results: list[Any] = []
        held = threading.Thread(target=lambda: results.append(
            _timed(lambda: p.client(protocol=protocol).pipeline(transaction=False)
                   .set(key, "v2").get(key).execute())))
        held.start()
        got, waited = _timed(lambda: r.get(other_key))
        assert got == b"w1" and waited < 0.5, (got, waited)  # other shards: not slowed down
        time.sleep(0.5)
        bare.restart(victim)
        held.join(15)
        (reply, waited), = results
        assert reply == [True, b"v2"], reply
        assert 0.4 < waited < hold, waited

        # 2. The node stays away: past failover_hold_s the held request fails with the hold
        #    error, later ones fail at once; other shards answer at once all along.
        bare.kill(victim)
        got, waited = _timed(lambda: r.get(key))
        assert isinstance(got, redis.ResponseError), got
        assert "no reachable master for the slot within failover_hold_s" in str(got)
        assert hold - 0.2 < waited < hold + 1.5, waited
        got, waited = _timed(lambda: r.get(key))
        assert isinstance(got, redis.ResponseError) and waited < 0.5, (got, waited)
        got, waited = _timed(lambda: r.get(other_key))
        assert got == b"w1" and waited < 0.5, (got, waited)
        info = r.info("proxy")
        assert info["held_expired"] >= 2 and info["unreachable_nodes"] == 1, info

        # 3. It comes back: served again without a proxy restart.
        bare.restart(victim)
        wait_until(lambda: r.get(key) == b"v2", 10, "the node to serve again")
        assert r.info("proxy")["unreachable_nodes"] == 0


@pytest.mark.parametrize("protocol", [2, 3])
def test_the_whole_cluster_unreachable_fails_fast_then_recovers(bare, protocol: int) -> None:
    cfg = proxy_config(bare.seeds, cluster={"failover_hold_s": 30.0})
    with ProxyThread(cfg) as p:
        r = p.client(protocol=protocol)
        r.set("everywhere", "1")
        nodes = list(bare.nodes)
        for node in nodes:
            bare.kill(node)
        try:
            wait_until(lambda: r.info("proxy")["cluster_reachable"] == 0, 5, "the outage seen")
            got, waited = _timed(lambda: r.get("everywhere"))
            assert isinstance(got, redis.ResponseError), got
            assert "no cluster node reachable" in str(got)
            assert waited < 0.5, waited  # fast, although failover_hold_s is 30 s
        finally:
            for node in nodes:
                bare.restart(node)
        bare.wait_ok()
        wait_until(lambda: r.get("everywhere") == b"1", 15, "service after the outage")
        assert r.info("proxy")["cluster_reachable"] == 1


@pytest.mark.parametrize("mode", ["replica", "prefer-replica"])
def test_reads_go_to_replicas(cluster, mode: str) -> None:
    cfg = proxy_config(cluster.seeds, cluster={"read_from": mode})
    with ProxyThread(cfg) as p:
        r = p.client()
        key = f"replica-read:{mode}"
        r.set(key, "x")
        master = cluster.master_of_slot(key_slot(key.encode()))
        node_client(master).execute_command("WAIT", 1, 2000)
        replica = next(n for n in cluster.replicas()
                       if node_client(n).info("replication")["master_port"] == master.port)

        def gets(node: Any) -> int:
            return node_client(node).info("commandstats").get("cmdstat_get", {}).get("calls", 0)

        before = gets(replica), gets(master)
        for _ in range(20):
            assert r.get(key) == b"x"
        assert gets(replica) - before[0] == 20
        assert gets(master) == before[1]
        assert r.incr(f"{key}:n") == 1  # writes still go to the master
        assert r.info("proxy")["read_from"] == mode


def test_without_replicas_reads_fall_back_or_fail_by_mode(bare) -> None:
    for mode, expect_error in (("prefer-replica", False), ("replica", True)):
        cfg = proxy_config(bare.seeds, cluster={"read_from": mode})
        with ProxyThread(cfg) as p:
            r = p.client()
            r.set("no-replica", "y")
            if expect_error:
                with pytest.raises(redis.ResponseError, match="no healthy replica for the slot"):
                    r.get("no-replica")
            else:
                assert r.get("no-replica") == b"y"
