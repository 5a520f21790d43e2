"""Chaos tests: rproxy (a subprocess) in front of a real, fresh 3 masters + 3 replicas cluster
(cluster-node-timeout 2000 ms) while 50 clients send verified pipelines of 8 commands through
it (see harness.py for the model and the checker).

1. kill -9 of a master: no mismatch, no error for reads and idempotent writes, INCRs in flight
   at the kill get OUTCOME_UNKNOWN and nothing else does, service back within 1 s of the
   election, lost acknowledged writes no worse than redis-py's RedisCluster on the same kill.
2. CLUSTER FAILOVER (manual) on a replica: no error, no lost write.
3. reshard 1200 slots, add-node + rebalance, empty a master + del-node: no error, no lost
   write, every key ends equal to the model.
4. SIGSTOP of a master for 2 node timeouts, then SIGCONT: errors only on that shard (at most
   one pipeline per client), the other shards' p99 within +20 %.
5. every node stopped, then restarted: fast errors while down, full service after, same proxy.
6. 10 rounds of kill -9 + restart of a random node: proxy RSS, fds and backend connections flat.

Each test prints one figure block (requests, client-visible errors by kind, mismatched replies,
acknowledged writes lost, recovery time), repeated in pytest's terminal summary (conftest.py).

    cd /work/main && .venv/bin/python -m pytest -p no:cacheprovider tests/chaos -x -s

About 2.5 minutes on a 2-core box. CHAOS_SEED=N replays test 6's choice of nodes.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import time
from typing import Any

import hiredis
import pytest

from rproxy.localcluster import LocalCluster, Node
from tests.chaos.harness import (
    ERROR,
    GET,
    INCR,
    MISMATCH,
    NODE_TIMEOUT_MS,
    OK,
    OUTCOME_UNKNOWN,
    PRELOAD,
    SET,
    STALE,
    UNANSWERED,
    Client,
    CtrKey,
    DirectLoad,
    FinalCheck,
    Load,
    Results,
    RoleWatch,
    ShardMap,
    StrKey,
    emit,
    error_kind,
    final_check,
    pct,
    replica_of,
    wait_rejoined,
)
from tests.support import node_client

NODE_TIMEOUT_S = NODE_TIMEOUT_MS / 1000
CLIENTS = 50
DEPTH = 8
WARMUP_S = 3.0
# A write the proxy had already sent when a master was killed gets OUTCOME_UNKNOWN. A request
# the client sends just after the kill can still be written to the dead connection before the
# proxy has read the connection's end: this is the proxy's reaction time, allowed up to here.
KILL_REACTION_S = 0.2
FREEZE_S = 0.1
STALL_S = 0.1  # test 4: no request to another shard may take longer while one is stopped
CONTROL_PER_SHARD = 6  # test 4: direct clients per unaffected shard (the latency yardstick)


def _myid(node: Node) -> str:
    with node_client(node, socket_timeout=5) as c:
        return c.execute_command("CLUSTER", "MYID").decode()


def _redis_cli(*args: str, timeout_s: float = 120) -> str:
    res = subprocess.run(["redis-cli", *args], stdin=subprocess.DEVNULL, capture_output=True,
                         timeout=timeout_s, text=True)
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"redis-cli {' '.join(args)} failed:\n{out[-3000:]}"
    return out


def _assert_consistent(res: Results, fc: FinalCheck) -> None:
    """What every scenario keeps: no reply to the wrong request (during the load and in the
    final read), no client connection dropped, and the proxy's view equal to the cluster's."""
    assert res.n_mismatch == 0 and fc.mismatched == 0, res.mismatches + fc.examples
    assert not res.conn_errors, res.conn_errors
    assert fc.proxy_vs_direct == 0, fc.examples


def _assert_nothing_lost(res: Results, fc: FinalCheck) -> None:
    assert res.lost == 0 and fc.lost == 0, res.lost_examples + fc.examples


def _slot_count(node: Node) -> int:
    with node_client(node, socket_timeout=5) as c:
        rows = c.execute_command("CLUSTER", "SLOTS")
    return sum(int(r[1]) - int(r[0]) + 1 for r in rows if int(r[2][1]) == node.port)


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 1000:.1f} ms" if x < 0.1 else f"{x * 1000:.0f} ms"


def _block(title: str, res: Results, fc: FinalCheck | None, *extra: str,
           events: Any = None) -> str:
    lines = [f"CHAOS {title}", "    " + res.summary()]
    if fc is not None:
        lines.append("    " + fc.summary())
        lines.append(f"    lost_acked_total={res.lost + fc.lost}")
    lines += ["    " + e for e in extra]
    if res.mismatches:
        lines.append(f"    mismatch examples: {res.mismatches[:3]}")
    if res.lost_examples:
        lines.append(f"    lost examples: {res.lost_examples[:3]}")
    if fc is not None and fc.examples:
        lines.append(f"    final examples: {fc.examples[:3]}")
    if events is not None:
        lines.append(f"    proxy_log_events={dict(events.most_common(12))}")
    return "\n".join(lines)


# -- the checker itself (no servers) ----------------------------------------------------------


def test_checker_model() -> None:
    """The model accepts exactly what a correct proxy may return, and counts the rest."""
    sm = ShardMap([(0, 16383, 1)])
    c = Client(0, "unit", 0, sm, n_keys=2, n_ctrs=1)
    k, k2, ctr = c.strs[0], c.strs[1], c.ctrs[0]

    def run(*ops: tuple[int, Any, Any], missing: str = "") -> list[int]:
        batch = []
        for op, item, _ in ops:
            seq = 0
            if op == SET:
                item.issued += 1
                seq = item.issued
            batch.append((op, item, seq, []))
        replies = [(r, time.monotonic()) for _, _, r in ops if r is not _NONE]
        n0 = len(c.rec.status)
        c.settle(batch, replies, time.monotonic(), missing)
        return list(c.rec.status[n0:])

    assert run((GET, k, None), (PRELOAD, ctr, b"OK")) == [OK, OK]  # nothing written yet: nil
    assert run((SET, k, b"OK")) == [OK]
    assert run((GET, k, k.value(1)), (GET, k2, None)) == [OK, OK]
    assert run((GET, k, k2.value(1))) == [MISMATCH]  # another key's value: a misdelivered reply
    assert run((GET, k, b"3")) == [MISMATCH]  # not a value of ours
    assert run((GET, k, 5)) == [MISMATCH]  # wrong type
    assert run((SET, k, 1)) == [MISMATCH]  # SET answered with an integer
    assert run((GET, k, k.value(2))) == [OK]  # that SET's outcome was unknown: it ran
    assert run((GET, k, k.value(9))) == [MISMATCH]  # never written
    assert run((SET, k, b"OK"), (SET, k2, b"OK")) == [OK, OK]
    assert run((SET, k, hiredis.ReplyError(OUTCOME_UNKNOWN))) == [ERROR]
    assert run((GET, k, k.value(3))) == [OK]  # the unknown SET 4 did not run
    assert c.rec.lost == 0 and c.rec.stale == 0
    assert run((SET, k, b"OK"), (SET, k, _NONE), missing="gone") == [OK, UNANSWERED]
    assert run((GET, k, k.value(3))) == [STALE]  # acked SET 5 lost (6 never answered: unknown)
    assert c.rec.lost == 1 and c.rec.stale == 1
    assert run((GET, k, k.value(3))) == [OK]  # counted once

    base = ctr.base
    assert run((INCR, ctr, base + 1)) == [OK]
    assert run((INCR, ctr, hiredis.ReplyError("ERR x"))) == [ERROR]  # unknown: [base+1, base+2]
    assert run((INCR, ctr, base + 3)) == [OK]  # the failed one ran
    assert run((INCR, ctr, base + 5)) == [MISMATCH]  # one INCR counted twice
    assert run((INCR, ctr, base + 4)) == [STALE]  # below the acked base+6: 2 increments lost
    assert run((INCR, ctr, base + 10**7 + 5)) == [MISMATCH]  # another counter's reply
    assert c.rec.lost == 3
    assert error_kind("MOVED 1234 127.0.0.1:7001") == "MOVED N <addr>"
    assert isinstance(ctr, CtrKey) and isinstance(k, StrKey)


_NONE = object()  # "no reply" marker for test_checker_model


# -- 1. kill -9 of a master ---------------------------------------------------------------------


def _kill_master_phase(cluster: LocalCluster, load: Load | DirectLoad, sm: ShardMap,
                       shard: int) -> dict[str, float]:
    """Warm up, kill -9 the shard's master, wait for the election and for the shard to be
    served again, run 2 s more. Returns the times.

    The master is frozen (SIGSTOP) for FREEZE_S just before the SIGKILL: at a few thousand
    requests/s a bare kill usually lands between two batches, with nothing in flight; this
    way the requests sent in those 100 ms are certainly written and unanswered at the kill."""
    time.sleep(WARMUP_S)
    victim = sm.master(cluster, shard)
    heir = replica_of(cluster, victim)
    with RoleWatch(heir) as watch:
        cluster.pause(victim)
        time.sleep(FREEZE_S)
        t_kill = time.monotonic()
        cluster.kill(victim, signal.SIGKILL)
        t_killed = time.monotonic()
        t_elected = watch.wait(8 * NODE_TIMEOUT_S)
    load.wait_served(t_elected, 15, [shard])
    cluster.wait_ok(20)
    time.sleep(2)
    return {"kill": t_kill, "killed": t_killed, "elected": t_elected,
            "victim": victim.port, "heir": heir.port}


@pytest.mark.timeout(240)
def test_kill_master(chaos_cluster: LocalCluster, start_proxy: Any) -> None:
    cluster = chaos_cluster
    proxy = start_proxy()
    sm = ShardMap.of(cluster)
    shard = 0
    with Load("127.0.0.1", proxy.port, sm, clients=CLIENTS, depth=DEPTH, alive=proxy.alive) as load:
        t = _kill_master_phase(cluster, load, sm, shard)
        res = load.stop()
    fc = final_check(load.clients, cluster, proxy.port)
    events = proxy.log_events()

    # The baseline: the same load model straight at the cluster with redis-py's RedisCluster
    # (16 client threads: 50 sync clients would starve the GIL; the figures are normalised by
    # write throughput), on the same cluster once the killed node is back as a replica.
    victim = cluster.node_by_port(int(t["victim"]))
    cluster.restart(victim)
    wait_rejoined(cluster, replicas=3)
    sm2 = ShardMap.of(cluster)
    with DirectLoad(cluster, sm2, clients=16, depth=DEPTH) as direct:
        tb = _kill_master_phase(cluster, direct, sm2, 0)
        base = direct.stop()
    fc_base = final_check(direct.clients, cluster, None)

    def window(r: Results, f: FinalCheck, tt: dict[str, float], sh: int) -> tuple[int, float]:
        """Lost acked writes, and the same as seconds of the shard's acked write rate."""
        rate = r.acked_writes(sh, tt["kill"] - 3, tt["kill"]) / 3
        lost = r.lost + f.lost
        return lost, lost / max(rate, 1e-9)

    lost, lost_s = window(res, fc, t, shard)
    base_lost, base_lost_s = window(base, fc_base, tb, 0)
    first_ok = res.first_ok_after(shard, t["killed"] + KILL_REACTION_S)
    recovery = None if first_ok is None else first_ok - t["elected"]
    in_flight = [i for i in range(res.requests) if res.shard[i] == shard
                 and res.sent[i] < t["kill"] and res.recv[i] > t["killed"]]
    incr_in_flight = sum(1 for i in in_flight if res.op[i] == INCR)
    incr_errors = [e for e in res.errors if e[3] == INCR]
    late = [e for e in incr_errors if e[0] > t["killed"] + KILL_REACTION_S]
    emit(_block(
        f"kill-master: kill -9 of master :{t['victim']} (shard {shard}); replica "
        f":{t['heir']} elected {t['elected'] - t['killed']:.2f} s after the kill",
        res, fc,
        f"recovery_s={recovery if recovery is None else round(recovery, 3)} "
        f"(first success on the shard after the election)",
        f"in flight at the kill: {len(in_flight)} requests, {incr_in_flight} of them INCR; "
        f"INCR errors={len(incr_errors)} (sent after kill+{KILL_REACTION_S}s: {len(late)})",
        f"lost acked writes: proxy {lost} (= {lost_s * 1000:.1f} ms of the shard's writes) vs "
        f"RedisCluster baseline {base_lost} (= {base_lost_s * 1000:.1f} ms)",
        "baseline (RedisCluster, 16 clients): " + base.summary().replace("\n", "\n    "),
        "baseline " + fc_base.summary(), events=events))

    _assert_consistent(res, fc)
    assert res.n_errors(ops=[GET, SET, PRELOAD]) == 0, res.errors_by_kind(ops=[GET, SET])
    # Non-idempotent writes: only OUTCOME_UNKNOWN, only on the killed shard, only in flight.
    assert {e[4] for e in incr_errors} <= {error_kind(OUTCOME_UNKNOWN)}, res.errors_by_kind()
    assert {e[2] for e in incr_errors} <= {shard}, res.errors_by_kind()
    assert not late, f"{len(late)} INCR errors for requests sent after the kill"
    assert in_flight, "nothing was in flight at the kill: the test did not test the kill"
    assert recovery is not None and recovery <= 1.0, f"recovery {recovery}"
    # Asynchronous replication can lose what the dead master acknowledged but had not yet
    # written to its replica: at most about one event-loop iteration of that master (well
    # under 20 ms on loopback, even on this busy box), for the proxy and for RedisCluster
    # alike. The proxy must not lose more than the baseline, normalised by the shard's write
    # rate, plus 20 ms of writes for that randomness. A proxy bug that loses writes (acking
    # before the backend, dropping held requests, replaying to the wrong node) loses far more.
    assert lost_s <= base_lost_s + 0.020, (
        f"proxy lost {lost} acked writes ({lost_s * 1000:.1f} ms of writes), baseline "
        f"{base_lost} ({base_lost_s * 1000:.1f} ms)")


# -- 2. manual CLUSTER FAILOVER -----------------------------------------------------------------


@pytest.mark.timeout(180)
def test_manual_failover(chaos_cluster: LocalCluster, start_proxy: Any) -> None:
    cluster = chaos_cluster
    proxy = start_proxy()
    sm = ShardMap.of(cluster)
    shard = 1
    with Load("127.0.0.1", proxy.port, sm, clients=CLIENTS, depth=DEPTH, alive=proxy.alive) as load:
        time.sleep(WARMUP_S)
        master = sm.master(cluster, shard)
        heir = replica_of(cluster, master)
        with RoleWatch(heir) as watch:
            t_fo = time.monotonic()
            with node_client(heir, socket_timeout=5) as c:
                assert c.execute_command("CLUSTER", "FAILOVER") == b"OK"
            t_elected = watch.wait(6 * NODE_TIMEOUT_S)
        cluster.wait_ok(20)
        load.wait_served(t_elected, 10, [shard])
        time.sleep(2)
        res = load.stop()
    fc = final_check(load.clients, cluster, proxy.port)
    lat = res.latencies([shard], t_fo - 0.2, t_elected + 1.0)
    first_ok = res.first_ok_after(shard, t_elected)
    emit(_block(
        f"manual-failover: CLUSTER FAILOVER on replica :{heir.port} of :{master.port} "
        f"(shard {shard}); promoted {t_elected - t_fo:.2f} s after the command", res, fc,
        f"recovery_s={None if first_ok is None else round(first_ok - t_elected, 3)} "
        f"(first success after the promotion); worst latency on the shard around the "
        f"failover {_ms(lat[-1] if lat else None)}",
        events=proxy.log_events()))
    _assert_consistent(res, fc)
    assert res.n_errors() == 0, res.errors_by_kind()
    _assert_nothing_lost(res, fc)


# -- 3. resharding, rebalance after add-node, del-node ------------------------------------------


@pytest.mark.timeout(240)
def test_resharding(chaos_cluster: LocalCluster, start_proxy: Any) -> None:
    cluster = chaos_cluster
    proxy = start_proxy()
    sm = ShardMap.of(cluster)
    steps: list[str] = []

    def step(what: str, t0: float) -> None:
        cluster.wait_ok(60)
        steps.append(f"{what} {time.monotonic() - t0:.1f}s")

    with Load("127.0.0.1", proxy.port, sm, clients=CLIENTS, depth=DEPTH, alive=proxy.alive) as load:
        time.sleep(WARMUP_S)
        src, dst = sm.master(cluster, 0), sm.master(cluster, 1)
        src_id, dst_id = _myid(src), _myid(dst)
        t_begin = time.monotonic()
        _redis_cli("--cluster", "reshard", f"{src.host}:{src.port}", "--cluster-from", src_id,
                   "--cluster-to", dst_id, "--cluster-slots", "1200", "--cluster-yes")
        step("reshard 1200 slots", t_begin)
        t0 = time.monotonic()
        new = cluster.add_node()
        step("add-node", t0)
        t0 = time.monotonic()
        _redis_cli("--cluster", "rebalance", f"{dst.host}:{dst.port}",
                   "--cluster-use-empty-masters", "--cluster-yes")
        step(f"rebalance (new master :{new.port} has {_slot_count(new)} slots)", t0)
        t0 = time.monotonic()
        _redis_cli("--cluster", "rebalance", f"{dst.host}:{dst.port}",
                   "--cluster-weight", f"{src_id}=0", "--cluster-yes")
        step(f"empty :{src.port} (rebalance weight 0)", t0)
        assert _slot_count(src) == 0, f"master {src.port} still has slots"
        t0 = time.monotonic()
        _redis_cli("--cluster", "del-node", f"{dst.host}:{dst.port}", src_id)
        if src.process is not None:
            cluster.kill(src, signal.SIGTERM)  # del-node resets it; it is out of the cluster
        step(f"del-node :{src.port}", t0)
        t_end = time.monotonic()
        time.sleep(2)
        res = load.stop()
    fc = final_check(load.clients, cluster, proxy.port)
    lat = res.latencies(range(sm.n), t_begin, t_end)
    before = res.latencies(range(sm.n), t_begin - WARMUP_S + 0.5, t_begin)
    emit(_block(
        "resharding: reshard 1200 slots, add-node + rebalance, empty + del-node of a master",
        res, fc, "steps: " + "; ".join(steps),
        f"latency p99 before {_ms(pct(before, 0.99))}, during {_ms(pct(lat, 0.99))}, "
        f"max during {_ms(lat[-1] if lat else None)}",
        events=proxy.log_events()))
    _assert_consistent(res, fc)
    assert res.n_errors() == 0, res.errors_by_kind()
    _assert_nothing_lost(res, fc)
    assert fc.not_equal_model == 0, fc.examples


# -- 4. SIGSTOP of a master for twice the node timeout ------------------------------------------


# With the default cluster-require-full-coverage yes, every node answers -CLUSTERDOWN for
# every slot from the moment the stopped master is marked failed until its replica takes over
# (about 1 s here): all shards stop, by Redis's design, and no proxy can serve them. "Other
# shards unaffected" is a property of clusters that allow partial coverage, so this test runs
# one (the other tests keep the default and so also cover the proxy riding out -CLUSTERDOWN).
@pytest.mark.redis_config(cluster_require_full_coverage="no")
@pytest.mark.timeout(180)
def test_sigstop_master(chaos_cluster: LocalCluster, start_proxy: Any) -> None:
    cluster = chaos_cluster
    proxy = start_proxy()
    sm = ShardMap.of(cluster)
    shard = 2
    others = [s for s in range(sm.n) if s != shard]
    window_s = 8.0  # before: [stop - 8 s, stop); during: [stop, stop + 8 s) = pause + 4 s
    control = [s for s in others for _ in range(CONTROL_PER_SHARD)]
    with Load("127.0.0.1", proxy.port, sm, clients=CLIENTS, depth=DEPTH, alive=proxy.alive,
              control_shards=control) as load:
        victim = sm.master(cluster, shard)
        heir = replica_of(cluster, victim)
        # The test thread does the same in both windows (only the ROLE poller runs): it shares
        # the GIL with the load, so any other work of it would be noise in one window only.
        with RoleWatch(heir) as watch:
            time.sleep(window_s + 1)
            t_stop = time.monotonic()
            cluster.pause(victim)
            try:
                time.sleep(2 * NODE_TIMEOUT_S)
            finally:
                cluster.resume(victim)
            t_cont = time.monotonic()
            time.sleep(max(0.0, t_stop + window_s + 0.5 - time.monotonic()))
            cluster.wait_ok(30)
            load.wait_served(t_cont, 15)
            res = load.stop()
        t_elected = watch.promoted_at
    ctl = load.control_results()
    fc = final_check(load.clients, cluster, proxy.port)
    before = res.latencies(others, t_stop - window_s, t_stop)
    during = res.latencies(others, t_stop, t_stop + window_s)
    p99_before, p99_during = pct(before, 0.99), pct(during, 0.99)
    ctl_before = pct(ctl.latencies(others, t_stop - window_s, t_stop), 0.99)
    ctl_during = pct(ctl.latencies(others, t_stop, t_stop + window_s), 0.99)
    seconds_before = [t_stop - window_s + k for k in range(int(window_s))]
    # While the master is stopped (what the proxy does with the hold); after SIGCONT the old
    # master resyncs from the new one (a fork and a transfer on the shared 2 cores).
    seconds_during = [t_stop + k for k in range(round(t_cont - t_stop))]

    def median_p99(result: Any, seconds: list[float]) -> float:
        """The median over the window's seconds of each second's p99."""
        return statistics.median(pct(result.latencies(others, a, a + 1), 0.99) for a in seconds)

    sec_before, sec_during = median_p99(res, seconds_before), median_p99(res, seconds_during)
    env = max(1.0, median_p99(ctl, seconds_during) / median_p99(ctl, seconds_before))
    worst_during = max(res.latencies(others, t_stop, t_cont))
    per_s = " ".join(
        f"{int(a - t_stop):+d}s:{pct(res.latencies(others, a, a + 1), 0.99) * 1000:.1f}"
        f"/{pct(ctl.latencies(others, a, a + 1), 0.99) * 1000:.1f}"
        for a in [t_stop + k for k in range(-int(window_s), int(window_s))])
    on_shard = res.n_errors(shards=[shard])
    clients_on_shard = sum(1 for c in load.clients if c.shard == shard)
    # Bound: each client has one pipeline in flight; at most the pipelines in flight when the
    # master stopped may fail (the 6 s hold covers the 4 s pause and the election).
    bound = clients_on_shard * DEPTH
    first_ok = res.first_ok_after(shard, t_stop + 0.2)
    emit(_block(
        f"sigstop-master: SIGSTOP master :{victim.port} (shard {shard}) for "
        f"{2 * NODE_TIMEOUT_S:.0f} s, then SIGCONT; replica :{heir.port} "
        + (f"elected {t_elected - t_stop:.2f} s after the stop" if t_elected else "not elected"),
        res, fc,
        f"errors on the stopped shard={on_shard} (bound {bound}); on the other shards="
        f"{res.n_errors(shards=others)}",
        f"other shards p99 through the proxy: before {_ms(p99_before)} ({len(before)} ops), "
        f"during {_ms(p99_during)} ({len(during)} ops): "
        f"{100 * (p99_during / p99_before - 1):+.0f} %; straight to the nodes (control): "
        f"{_ms(ctl_before)} -> {_ms(ctl_during)}: {100 * (ctl_during / ctl_before - 1):+.0f} %; "
        f"median of per-second p99 {_ms(sec_before)} -> {_ms(sec_during)}: "
        f"{100 * (sec_during / sec_before - 1):+.0f} % (control {100 * (env - 1):+.0f} %); "
        f"slowest request to another shard while stopped: {_ms(worst_during)}",
        f"other shards p99 per second, proxy/control (ms): {per_s}; load generator max stall "
        f"{_ms(load.max_lag[0])} at {load.max_lag[1] - t_stop:+.1f}s",
        f"recovery_s={None if first_ok is None else round(first_ok - t_stop, 3)} (first "
        f"success on the shard after the stop); SIGSTOP at +{t_stop - load.t_start:.3f}s, "
        f"SIGCONT at +{t_cont - load.t_start:.3f}s, elected at "
        f"{'-' if t_elected is None else f'+{t_elected - load.t_start:.3f}s'} (since load start)",
        events=proxy.log_events()))
    _assert_consistent(res, fc)
    assert res.n_errors(shards=others) == 0, res.errors_by_kind(shards=others)
    assert on_shard <= bound, res.errors_by_kind(shards=[shard])
    # The other shards are not slowed down: no request to them stalls (a hold or a refresh
    # storm that touched them would cost them 100s of ms), and their p99 grows by +20 % at
    # most over what the environment itself did in the same seconds. The control clients (same
    # trio loop, same servers, no proxy) measure how much slower this shared 2-core VM got on
    # its own; only a slowdown is allowed for (env >= 1). The p99 compared is the median of
    # the per-second p99s, over the 8 s before the stop and the 4 s the master is stopped
    # (after SIGCONT it resyncs from the new master: a fork and a transfer on the shared
    # cores, which slow this VM down, not the proxy). Pooled instead, one scheduling hiccup
    # of the proxy process (it shares 2 cores with the load, 6 redis-servers and this test)
    # moves a ~2 ms p99 by over 20 % about one run in four even without any chaos.
    assert worst_during <= STALL_S, f"a request to another shard took {worst_during:.3f} s"
    assert sec_during <= 1.2 * sec_before * env, (
        f"other shards' p99 (median per second) {sec_before * 1000:.2f} -> "
        f"{sec_during * 1000:.2f} ms (control {100 * (env - 1):+.0f} %)")


# -- 5. the whole cluster stopped and restarted -------------------------------------------------


@pytest.mark.timeout(180)
def test_whole_cluster_restart(chaos_cluster: LocalCluster, start_proxy: Any) -> None:
    cluster = chaos_cluster
    proxy = start_proxy()
    pid = proxy.pid
    sm = ShardMap.of(cluster)
    down_s = 8.0  # longer than failover_hold_s: holding cannot hide the outage
    detect_s = 2.0  # the proxy may take this long to notice that no node is left
    fast_s = 1.0  # "fast": an error within this long
    with Load("127.0.0.1", proxy.port, sm, clients=CLIENTS, depth=DEPTH, alive=proxy.alive) as load:
        time.sleep(WARMUP_S)
        t_down = time.monotonic()
        masters = {n.port for n in cluster.masters()}
        for node in sorted(cluster.nodes, key=lambda n: n.port in masters):  # replicas first
            cluster.kill(node, signal.SIGTERM)  # clean shutdown: the AOF keeps every write
        t_all_down = time.monotonic()
        time.sleep(down_s)
        t_up = time.monotonic()
        for node in cluster.nodes:
            cluster.restart(node)
        cluster.wait_ok(60)
        t_ok = time.monotonic()
        try:
            load.wait_served(t_ok, 15)
        except TimeoutError:
            pass  # reported below
        time.sleep(3)
        res = load.stop()
    firsts = [res.first_ok_after(s, t_ok) for s in range(sm.n)]
    t_served = None if None in firsts else max(f for f in firsts if f is not None)
    fc = final_check(load.clients, cluster, proxy.port)
    idx_down = [i for i in range(res.requests)
                if t_all_down + detect_s <= res.sent[i] < t_up - fast_s]
    lat_down = sorted(res.recv[i] - res.sent[i] for i in idx_down)
    ok_down = sum(1 for i in idx_down if res.status[i] in (OK, STALE))
    # Requests sent before the proxy could know the whole cluster was gone (the nodes stop one
    # by one; until the last one, it looks like a failover and holding is right): once it
    # knows (detect_s after the last stop at the latest) they must be answered at once too.
    early = [i for i in range(res.requests) if t_down <= res.sent[i] < t_all_down + detect_s]
    early_last = max((res.recv[i] for i in early), default=t_all_down) - t_all_down
    unanswered = sum(1 for s in res.status if s == UNANSWERED)
    after = [i for i in range(res.requests) if t_served is not None
             and res.sent[i] >= t_served + 0.5]
    err_after = sum(1 for i in after if res.status[i] != OK)
    recovery = None if t_served is None else t_served - t_ok
    worst: dict[str, float] = {}
    for sent, recv, _shard, _op, kind in res.errors:
        worst[kind] = max(worst.get(kind, 0.0), recv - sent)
    emit(_block(
        f"whole-cluster-restart: all 6 nodes stopped (SIGTERM) for {down_s:.0f} s, restarted",
        res, fc,
        f"while down (sent {detect_s:.0f} s after the stop until the restart): {len(idx_down)} "
        f"requests, successes {ok_down}, reply latency p50 {_ms(pct(lat_down, 0.5))} "
        f"p99 {_ms(pct(lat_down, 0.99))} max {_ms(lat_down[-1] if lat_down else None)}; "
        f"the {len(early)} requests sent from the first stop until {detect_s:.0f} s after the "
        f"last were all answered {early_last:.2f} s after the last stop "
        f"(stopping took {t_all_down - t_down:.2f} s)",
        f"recovery_s={None if recovery is None else round(recovery, 3)} (cluster ok -> every "
        f"shard served); cluster ok {t_ok - t_up:.1f} s after the restart; requests after "
        f"recovery+0.5 s: {len(after)}, not ok: {err_after}",
        f"proxy pid {pid} -> {proxy.pid if proxy.alive() else 'dead'}",
        "error reply latency by kind (max): " + ", ".join(
            f"{k}: {_ms(v)}" for k, v in sorted(worst.items(), key=lambda kv: -kv[1])),
        events=proxy.log_events()))
    assert proxy.alive() and proxy.pid == pid, "the proxy must survive without a restart"
    _assert_consistent(res, fc)
    assert idx_down and ok_down == 0
    assert lat_down[-1] <= fast_s, f"errors while down took up to {lat_down[-1]:.2f} s"
    assert early_last <= detect_s + fast_s, (
        f"requests sent as the cluster went down were answered only {early_last:.2f} s after "
        f"the last node stopped (held for failover_hold_s instead of failed once no node was "
        f"left?)")
    assert unanswered == 0
    assert recovery is not None and recovery <= 5.0, f"full service {recovery} s after cluster ok"
    assert after and err_after == 0, res.errors_by_kind()
    # A clean shutdown (SIGTERM) writes and fsyncs the AOF: no acknowledged write may be lost.
    _assert_nothing_lost(res, fc)


# -- 6. failover loop: resources stay flat ------------------------------------------------------


@pytest.mark.timeout(240)
def test_failover_loop(chaos_cluster: LocalCluster, start_proxy: Any) -> None:
    cluster = chaos_cluster
    proxy = start_proxy()
    sm = ShardMap.of(cluster)
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    rounds: list[dict[str, Any]] = []

    def sample(label: str) -> dict[str, Any]:
        time.sleep(0.5)  # let connections of the last refresh settle
        return {"round": label, "rss_kb": proxy.rss_kb(), "fds": proxy.fd_count(),
                "backend": proxy.proxy_stat("backend_connections"),
                "held": proxy.proxy_stat("held_requests")}

    with Load("127.0.0.1", proxy.port, sm, clients=CLIENTS, depth=DEPTH, alive=proxy.alive) as load:
        time.sleep(WARMUP_S)
        rounds.append(sample("warm"))
        for i in range(10):
            node = rng.choice(cluster.nodes)
            with node_client(node, socket_timeout=2) as c:
                role = c.execute_command("ROLE")[0].decode()
            t0 = time.monotonic()
            cluster.kill(node, signal.SIGKILL)
            cluster.wait_ok(30)
            cluster.restart(node)
            wait_rejoined(cluster, replicas=3)
            load.wait_served(time.monotonic(), 15)
            s = sample(f"{i + 1}:{role}:{node.port}")
            s["s"] = round(time.monotonic() - t0, 1)
            rounds.append(s)
        res = load.stop()
    fc = final_check(load.clients, cluster, proxy.port)
    first, last = rounds[0], rounds[-1]
    rss_growth = last["rss_kb"] - rounds[1]["rss_kb"]
    emit(_block(
        f"failover-loop: 10 rounds of kill -9 + restart of a random node (seed {seed})", res, fc,
        "rounds: " + " | ".join(f"{r['round']} rss={r['rss_kb'] // 1024}M fds={r['fds']} "
                                f"backend={r['backend']} held={r['held']}"
                                + (f" ({r['s']}s)" if "s" in r else "") for r in rounds),
        f"VmRSS after round 1 -> 10: {rounds[1]['rss_kb']} -> {last['rss_kb']} kB "
        f"({rss_growth:+d} kB); fds {first['fds']} -> {last['fds']}; backend_connections "
        f"{first['backend']} -> {last['backend']}",
        events=proxy.log_events()))
    _assert_consistent(res, fc)
    assert all(r["held"] == 0 for r in rounds), rounds
    # Connections: the same backend connections (one per master) and file descriptors after
    # every round as before the first; one extra fd is allowed for a topology query in flight.
    assert all(r["backend"] == first["backend"] for r in rounds), rounds
    assert all(r["fds"] <= first["fds"] + 1 for r in rounds), rounds
    # Memory: round 1 pays for one-off allocations (the first failover's code paths, buffers);
    # from there to round 10 the RSS may not grow by more than 4 MiB (a leak of a held request,
    # a connection or a map per round shows up as much more over 9 rounds).
    assert rss_growth <= 4096, f"VmRSS grew {rss_growth} kB over 9 rounds"
