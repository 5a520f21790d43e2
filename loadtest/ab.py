#!/usr/bin/env python3
"""Interleaved A/B benchmark of two rproxy source trees ("before" and "after" a change)
against one local Redis Cluster, in one run.  See loadtest/README.md, "A/B runs".

    git worktree add /tmp/rproxy-before <commit>          # the old code
    python loadtest/ab.py --before /tmp/rproxy-before --after . [--rounds 3] [--quick] [--json FILE]

Each tree is started as ``python -m rproxy --listen 127.0.0.1:PORT --seed ... --log-level warning``
with ``cwd=DIR`` and ``PYTHONPATH=DIR`` (checked: the file ``import rproxy`` loads with that env is
printed and must be inside DIR).  Scenarios (redis-benchmark, 50 clients): GET/SET at -P 1 and
-P 16 (-d 64 -r 100000) against before, after and the cluster directly (--cluster); MSET of
10 keys in 10 slots on all 3 masters at -P 1 and -P 16 against before and after only.  Every
round runs each scenario on every target back to back; before/after order alternates by
round.  The after/before ratio is the median of the per-round ratios.

Uses bench.py's helpers (redis-benchmark runs and parsing, /proc CPU time, PING) and this
checkout's embedded cluster (rproxy.localcluster: 3 masters + 3 replicas, as bench.py); the
proxies under test run in their own processes, from their own trees.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # loadtest/bench.py
from bench import (Addr, Proxy, fanout_argv, fanout_bench_cmd, fanout_key, fanout_populate,
                   bench_cmd, fmt, log, print_grid, run_bench, slot_owners)

from rproxy.localcluster import LocalCluster  # noqa: E402  (this checkout's, via bench.REPO)

# (name, kind, pipeline); kind "mset" is proxy-only (a cross-slot MSET gets CROSSSLOT directly).
SCENARIOS: list[tuple[str, str, int]] = [
    ("GET -P 1", "get", 1), ("GET -P 16", "get", 16), ("SET -P 1", "set", 1), ("SET -P 16", "set", 16),
    ("MSET x10 -P 1", "mset", 1), ("MSET x10 -P 16", "mset", 16)]
MSET_KEYS = 10
# MSET runs use -n = (requests for that -P) / MSET_DIVISOR.  bench.py --fanout divides by the
# 10 keys (same keys moved as a GET run); here a run is made longer, for a steadier ratio.
MSET_DIVISOR = 4
SIDES = ("before", "after")


# ---------------------------------------------------------------- the two trees

def tree_env(tree: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(tree))


def tree_info(tree: Path) -> dict[str, Any]:
    """Which rproxy/__init__.py a child with this tree's cwd and PYTHONPATH imports (must be
    inside the tree), plus the tree's git commit and whether tracked files are modified."""
    res = subprocess.run([sys.executable, "-c", "import rproxy,sys;print(rproxy.__file__)"], cwd=tree,
                         env=tree_env(tree), capture_output=True, text=True, timeout=60, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"cannot import rproxy from {tree}:\n{res.stderr.strip()[-2000:]}")
    imported = Path(res.stdout.strip()).resolve()
    if not imported.is_relative_to(tree):
        raise RuntimeError(f"with cwd={tree} and PYTHONPATH={tree}, 'import rproxy' loads {imported}, "
                           f"which is outside {tree}")
    info: dict[str, Any] = {"dir": str(tree), "rproxy_file": str(imported), "commit": None, "dirty": None}
    try:
        git = ["git", "-C", str(tree)]
        info["commit"] = subprocess.run(git + ["log", "-1", "--format=%h %s"], capture_output=True, text=True,
                                        check=True, timeout=30).stdout.strip()
        info["dirty"] = bool(subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"],
                                            capture_output=True, text=True, check=True, timeout=30).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def mset_layout(seed: Addr) -> dict[str, Any]:
    """Slots (CLUSTER KEYSLOT) and masters of the MSET keys; they must touch every master."""
    import redis
    owners = slot_owners(seed)
    client = redis.Redis(host=seed[0], port=seed[1], protocol=2, socket_timeout=5)
    try:
        slots = {fanout_key(i): int(client.execute_command("CLUSTER", "KEYSLOT", fanout_key(i)))
                 for i in range(MSET_KEYS)}
    finally:
        client.close()
    master = {k: next(m for s, e, m in owners if s <= slot <= e) for k, slot in slots.items()}
    all_masters = {m for _, _, m in owners}
    if set(master.values()) != all_masters:
        raise RuntimeError(f"MSET keys touch masters {sorted(set(master.values()))}, not all of {sorted(all_masters)}")
    return {"keys": MSET_KEYS, "slots": len(set(slots.values())), "masters": len(all_masters),
            "per_key": {k: {"slot": slots[k], "master": master[k]} for k in slots}}


# ---------------------------------------------------------------- runs

def scenario_cmd(args: argparse.Namespace, kind: str, pipeline: int, addr: Addr, cluster: bool) -> tuple[list[str], int]:
    n = args.requests if pipeline > 1 else args.requests_p1
    if kind == "mset":
        n = max(n // MSET_DIVISOR, args.clients * pipeline)
        return fanout_bench_cmd(args, addr, fanout_argv("MSET", MSET_KEYS), pipeline, n), n
    return bench_cmd(args, addr, cluster, kind, pipeline, n), n


def run_rounds(args: argparse.Namespace, seeds: list[Addr], proxies: dict[str, Proxy]) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for rnd in range(1, args.rounds + 1):
        pair = list(SIDES) if rnd % 2 == 1 else list(SIDES[::-1])
        for name, kind, pipeline in SCENARIOS:
            for target in pair + ([] if kind == "mset" else ["direct"]):
                proxy = proxies.get(target)
                if proxy is not None and not proxy.alive():
                    raise RuntimeError(f"rproxy ({target}) exited:\n{proxy.tail()}")
                cmd, n = scenario_cmd(args, kind, pipeline, proxy.addr if proxy else seeds[0], proxy is None)
                res = run_bench(cmd, args.run_timeout, proxy.pid if proxy else None)
                res.update(round=rnd, scenario=name, target=target, requests=n, pipeline=pipeline,
                           command=kind.upper())
                runs.append(res)
                msg = (f"{res['rps']:>10,.0f} ops/s  p50 {res['p50_ms']:.3f}  p99 {res['p99_ms']:.3f} ms"
                       f"  ({res['wall_s']:.1f} s" + (f", proxy CPU {res['proxy_cpu_s']:.2f} s"
                                                       f" = {res['proxy_cpu_util']:.0%})"
                                                       if res.get("proxy_cpu_util") is not None else ")")
                       if res["ok"] else f"FAILED: {res['error']}")
                log(f"[round {rnd}/{args.rounds}] {name:<14} {target:<6} {msg}")
    return runs


def median(values: list[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def ops_per_cpu(r: dict[str, Any]) -> Optional[float]:
    return r["requests"] / r["proxy_cpu_s"] if r.get("ok") and r.get("proxy_cpu_s") else None


def per_round(by: dict[tuple[str, int], dict[str, Any]], rounds: int, num: str, den: str,
              value: Callable[[dict[str, Any]], Optional[float]]) -> list[Optional[float]]:
    """value(num run) / value(den run) for each round; None where a run failed or is missing."""
    out: list[Optional[float]] = []
    for k in range(1, rounds + 1):
        a, b = by.get((num, k)), by.get((den, k))
        va, vb = (value(a) if a else None), (value(b) if b else None)
        out.append(va / vb if va is not None and vb else None)
    return out


def summarize(runs: list[dict[str, Any]], rounds: int) -> list[dict[str, Any]]:
    rows = []
    for name, kind, _ in SCENARIOS:
        by = {(r["target"], r["round"]): r for r in runs if r["scenario"] == name and r["ok"]}
        row: dict[str, Any] = {"scenario": name, "has_direct": kind != "mset"}
        for t in (*SIDES, "direct"):
            sel = [by[(t, k)] for k in range(1, rounds + 1) if (t, k) in by]
            row[t] = {"rps": median([r["rps"] for r in sel]),
                      "rps_rounds": [by[(t, k)]["rps"] if (t, k) in by else None for k in range(1, rounds + 1)],
                      **{q: median([r.get(f"{q}") for r in sel]) for q in ("p50_ms", "p99_ms", "p999_ms")},
                      "proxy_cpu_s": median([r.get("proxy_cpu_s") for r in sel]),
                      "ops_per_cpu_s": median([ops_per_cpu(r) for r in sel])}

        ratio = per_round(by, rounds, "after", "before", lambda r: r["rps"])
        row["after_before"] = {"median": median(ratio), "rounds": ratio}
        cpu = per_round(by, rounds, "after", "before", ops_per_cpu)
        row["after_before_ops_per_cpu_s"] = {"median": median(cpu), "rounds": cpu}
        for t in SIDES:
            vs = per_round(by, rounds, t, "direct", lambda r: r["rps"]) if row["has_direct"] else []
            row[t]["vs_direct"] = median(vs)
            row[t]["vs_direct_rounds"] = vs
        rows.append(row)
    return rows


def rounds_text(vals: list[Optional[float]], spec: str) -> str:
    return " ".join(fmt(v, spec) for v in vals)


def print_report(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    for row in rows:
        print(f"\n{row['scenario']}  (n={meta['requests'][row['scenario']]:,} per run, {meta['clients']} clients)")
        head = ["target", "ops/s", "ops/s per round", "vs direct", "p50/p99/p99.9 ms", "proxy CPU-s",
                "ops per proxy CPU-s"]
        body = []
        for t in (*SIDES, "direct") if row["has_direct"] else SIDES:
            c = row[t]
            lat = " / ".join(fmt(c[q], ".3f") for q in ("p50_ms", "p99_ms", "p999_ms"))
            body.append([t, fmt(c["rps"], ",.0f"), rounds_text(c["rps_rounds"], ",.0f"),
                         fmt(c.get("vs_direct"), ".3f") if t != "direct" else "1",
                         lat, fmt(c["proxy_cpu_s"], ".2f"), fmt(c["ops_per_cpu_s"], ",.0f")])
        ab, abc = row["after_before"], row["after_before_ops_per_cpu_s"]
        body.append(["after/before", fmt(ab["median"], ".3f"), rounds_text(ab["rounds"], ".3f"),
                     "", "", "", fmt(abc["median"], ".3f")])
        print_grid(head, body)
    print("\nsummary (after/before: median of per-round ratios; > 1 = after is faster / cheaper)")
    head = ["scenario", "before ops/s", "after ops/s", "after/before", "per round", "before/direct",
            "after/direct", "before ops/CPU-s", "after ops/CPU-s", "after/before ops/CPU-s"]
    body = [[r["scenario"], fmt(r["before"]["rps"], ",.0f"), fmt(r["after"]["rps"], ",.0f"),
             fmt(r["after_before"]["median"], ".3f"), rounds_text(r["after_before"]["rounds"], ".3f"),
             fmt(r["before"].get("vs_direct"), ".3f"), fmt(r["after"].get("vs_direct"), ".3f"),
             fmt(r["before"]["ops_per_cpu_s"], ",.0f"), fmt(r["after"]["ops_per_cpu_s"], ",.0f"),
             fmt(r["after_before_ops_per_cpu_s"]["median"], ".3f")] for r in rows]
    print_grid(head, body)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, metavar="DIR", help="rproxy checkout of the old code")
    ap.add_argument("--after", type=Path, required=True, metavar="DIR", help="rproxy checkout of the new code")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3; --quick 1)")
    ap.add_argument("--quick", action="store_true", help="1 round, --requests 400000 (~35-60 s)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write every raw run and the summary as JSON")
    ap.add_argument("--requests", type=int, help="requests per -P 16 run (default 600000; --quick 400000); "
                                                  f"MSET runs: divided by {MSET_DIVISOR}")
    ap.add_argument("--requests-p1", type=int, help="requests per -P 1 run (default --requests / 4)")
    ap.add_argument("--clients", type=int, default=50, help="redis-benchmark -c (default 50)")
    ap.add_argument("--keyspace", type=int, default=100000, help="redis-benchmark -r (default 100000)")
    ap.add_argument("--warmup", type=int, help="SET -P 16 requests before round 1, per target (before, after, "
                                               "direct), not reported (default 3 x keyspace; --quick 1 x)")
    ap.add_argument("--threads", type=int, default=0, help="pass --threads N to every redis-benchmark")
    ap.add_argument("--proxy-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for both rproxy command lines (repeatable, e.g. --proxy-arg=--workers=2)")
    ap.add_argument("--run-timeout", type=float, default=300, help="seconds per redis-benchmark run (default 300)")
    ap.add_argument("--redis-benchmark", default="redis-benchmark", help="redis-benchmark binary")
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.requests = args.requests or (400000 if args.quick else 600000)
    args.requests_p1 = args.requests_p1 or max(args.requests // 4, args.clients)
    if args.warmup is None:
        args.warmup = args.keyspace * (1 if args.quick else 3)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    for side, tree in trees.items():
        if not (tree / "rproxy").is_dir():
            raise RuntimeError(f"--{side} {tree}: no rproxy/ package there")
    if shutil.which(args.redis_benchmark) is None:
        raise RuntimeError(f"{args.redis_benchmark} not found (Debian/Ubuntu: apt-get install redis-tools)")

    bench.raise_nofile()
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    info = {side: tree_info(tree) for side, tree in trees.items()}
    for side in SIDES:
        i = info[side]
        log(f"{side:<6}: {i['dir']}  imports {i['rproxy_file']}  "
            f"(git {i['commit'] or '?'}{', modified' if i['dirty'] else ''})")
    cluster = LocalCluster(masters=3, replicas=1, node_timeout_ms=2000, log=log)
    proxies: dict[str, Proxy] = {}
    runs: list[dict[str, Any]] = []
    layout: dict[str, Any] = {}
    try:
        cluster.start()
        seeds = cluster.seeds
        for side in SIDES:
            # ``python -m rproxy`` from the side's source tree (cwd and PYTHONPATH = the tree)
            proxies[side] = Proxy(seeds, tree=trees[side], extra=args.proxy_arg, label=f"rproxy ({side})",
                                  avoid_ports=[p.port for p in proxies.values()])
            log(f"starting rproxy ({side}, pid {proxies[side].pid}): cwd={trees[side]} PYTHONPATH={trees[side]} "
                f"{' '.join(proxies[side].cmd)}")
        for p in proxies.values():
            p.wait_ready()
            log(f"{p.label} answers PING on port {p.port}")
        layout = mset_layout(seeds[0])
        log(f"MSET keys {fanout_key(0)}..{fanout_key(MSET_KEYS - 1)}: {layout['slots']} slots on "
            f"{layout['masters']} masters")
        for p in proxies.values():
            fanout_populate(p.addr)  # cross-slot SET/MGET through each proxy must work before timing
        warm = [(side, p.addr, False) for side, p in proxies.items()] + [("direct", seeds[0], True)]
        for label, addr, direct in warm if args.warmup else []:
            log(f"warm-up: {args.warmup} SETs (-P 16) {label}")
            res = run_bench(bench_cmd(args, addr, direct, "set", 16, args.warmup), args.run_timeout, None)
            if not res["ok"]:
                raise RuntimeError(f"warm-up {label} failed: {res['error']}\n  {res['cmd']}")
        log(f"{args.rounds} round(s), -c {args.clients}, -P 16 n={args.requests}, -P 1 n={args.requests_p1} "
            f"(MSET: / {MSET_DIVISOR}); before/after order alternates by round")
        runs = run_rounds(args, seeds, proxies)
        proxy_meta = {s: {"port": p.port, "pid": p.pid, "cmd": p.cmd, "cwd": str(p.tree)} for s, p in proxies.items()}
    finally:
        for p in proxies.values():
            log(f"stopping {p.label} (pid {p.pid})")
            p.stop()
        log("stopping local cluster")
        cluster.stop()

    elapsed = time.monotonic() - started
    rows = summarize(runs, args.rounds)
    failed = [r for r in runs if not r["ok"]]
    requests = {name: scenario_cmd(args, kind, pipe, ("h", 0), False)[1] for name, kind, pipe in SCENARIOS}
    for side in SIDES:
        i = info[side]
        print(f"{side:<6}: {i['dir']}  (git {i['commit'] or '?'}{', modified' if i['dirty'] else ''})  "
              f"imports {i['rproxy_file']}")
    print_report(rows, {"requests": requests, "clients": args.clients})
    print(f"\n{len(runs)} runs, {len(failed)} failed, {elapsed:.0f} s total, {args.rounds} round(s); "
          f"MSET x10 = keys {fanout_key(0)}..{fanout_key(MSET_KEYS - 1)} in {layout.get('slots')} slots on "
          f"{layout.get('masters')} masters (proxy only; MSET ops = commands); proxy CPU = utime+stime from "
          f"/proc/<pid>/stat")
    for r in failed:
        print(f"FAILED round {r['round']} {r['scenario']} {r['target']}: {r['error']}\n  {r['cmd']}")
    if args.json:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        out = {"config": config, "trees": info, "proxies": proxy_meta, "cluster_seeds": seeds,
               "mset_layout": layout, "elapsed_s": round(elapsed, 1), "summary": rows, "runs": runs}
        args.json.write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    bench.run_main(main)
