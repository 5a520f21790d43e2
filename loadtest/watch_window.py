#!/usr/bin/env python3
"""How often a write inside an emulated WATCH's window goes unnoticed, against one Redis.
See loadtest/README.md, "watch_window.py".

    python loadtest/watch_window.py                 # 3 rounds of 10 s per target, ~2 min
    python loadtest/watch_window.py --json FILE     # also save the raw runs

Starts a local 3 masters + 3 replicas cluster, rproxy with ``--cross-slot emulate`` and one
standalone redis-server; stops them all. Two keys, ``src`` and ``dst``, on two different
masters. ``--movers`` redis-py clients each run the classic optimistic loop as fast as they
can: ``WATCH src dst; GET src; GET dst; MULTI; SET src a-1; SET dst b+1; EXEC``, again on nil.
At the same time ``--writers`` plain clients (no WATCH) send ``INCRBY src 1000`` as fast as
they can. On one Redis no write is ever lost: every increment either lands before a mover's
WATCH (it reads it) or after it (its EXEC answers nil), so at the end
``src + dst == start + 1000 * increments``. Through rproxy the movers' watches are on two
masters: the check comes first and the writes one round trip later, and an increment landing
in between is overwritten by the mover's ``SET src``. The shortfall, divided by 1000, counts
those undetected conflicts. (Movers among themselves are ordered by rproxy's watch locks and
lose nothing: tests/integration/test_crossslot_transactions.py.)
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402  (puts the repo root on sys.path)
from stateful import StandaloneRedis  # noqa: E402

from rproxy.core.slots import key_slot  # noqa: E402


def two_masters(owner: dict[int, int]) -> tuple[str, str]:
    """``src`` and ``dst`` on two different masters (``owner``: slot -> master port)."""
    src = "ww:src"
    dst = next(f"ww:dst:{i}" for i in range(10000)
               if owner[key_slot(f"ww:dst:{i}".encode())] != owner[key_slot(src.encode())])
    return src, dst


def run_once(addr: bench.Addr, src: str, dst: str, movers: int, writers: int,
             duration: float) -> dict[str, Any]:
    import redis

    start = 1_000_000
    redis.Redis(*addr, protocol=2).mset({src: start, dst: 0})
    stop = threading.Event()
    counts = {"committed": 0, "aborted": 0, "increments": 0}
    lock = threading.Lock()

    def mover() -> None:
        r = redis.Redis(*addr, protocol=2)
        committed = aborted = 0
        with r.pipeline() as pipe:
            while not stop.is_set():
                try:
                    pipe.watch(src, dst)
                    a, b = int(pipe.get(src)), int(pipe.get(dst))
                    pipe.multi()
                    pipe.set(src, a - 1)
                    pipe.set(dst, b + 1)
                    pipe.execute()
                    committed += 1
                except redis.WatchError:
                    aborted += 1
        with lock:
            counts["committed"] += committed
            counts["aborted"] += aborted

    def writer() -> None:
        r = redis.Redis(*addr, protocol=2)
        n = 0
        while not stop.is_set():
            r.incrby(src, 1000)
            n += 1
        with lock:
            counts["increments"] += n

    threads = [threading.Thread(target=mover) for _ in range(movers)]
    threads += [threading.Thread(target=writer) for _ in range(writers)]
    for t in threads:
        t.start()
    time.sleep(duration)
    stop.set()
    for t in threads:
        t.join(30)
    r = redis.Redis(*addr, protocol=2)
    total = int(r.get(src)) + int(r.get(dst))
    lost = (start + 1000 * counts["increments"] - total) / 1000
    return {**counts, "lost_increments": lost,
            "lost_per_increment": lost / max(1, counts["increments"]),
            "lost_per_committed": lost / max(1, counts["committed"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    ap.add_argument("--movers", type=int, default=4)
    ap.add_argument("--writers", type=int, default=1)
    ap.add_argument("--json", type=Path, metavar="FILE")
    args = ap.parse_args(argv)

    from rproxy.localcluster import LocalCluster
    import redis

    cluster = LocalCluster(masters=3, replicas=1, node_timeout_ms=2000, log=bench.log)
    proxy = redis_ = None
    runs: list[dict[str, Any]] = []
    try:
        cluster.start()
        proxy = bench.Proxy(cluster.seeds, extra=["--cross-slot", "emulate"])
        redis_ = StandaloneRedis()
        proxy.wait_ready()
        redis_.wait_ready()
        owner = {}
        for lo, hi, (_, port, *_rest) in (
                (s[0], s[1], s[2]) for s in redis.Redis(*cluster.seeds[0]).execute_command(
                    "CLUSTER", "SLOTS")):
            for slot in range(lo, hi + 1):
                owner[slot] = port
        src, dst = two_masters(owner)
        for rnd in range(args.rounds):
            for target, addr in (("proxy", proxy.addr), ("one Redis", redis_.addr)):
                got = run_once(addr, src, dst, args.movers, args.writers, args.duration)
                got.update(target=target, round=rnd)
                runs.append(got)
                bench.log(f"round {rnd + 1} {target}: {got}")
        info = redis.Redis(*proxy.addr, protocol=2).info("proxy")
    finally:
        if proxy is not None:
            proxy.stop()
        if redis_ is not None:
            redis_.stop()
        cluster.stop()
    window = info["emulated_watch_window_us"] / max(1, info["emulated_watched_transactions"])
    print(f"\n{args.movers} movers (WATCH on two masters) and {args.writers} plain writer(s), "
          f"{args.rounds} x {args.duration:g} s per target; mean window {window:.0f} us")
    print(f"{'target':<10} {'committed':>10} {'aborted':>9} {'increments':>11} {'lost':>6} "
          f"{'lost/increment':>15} {'lost/committed':>15}")
    for target in ("proxy", "one Redis"):
        rows = [r for r in runs if r["target"] == target]
        c, a, i, lost = (sum(r[k] for r in rows) for k in
                         ("committed", "aborted", "increments", "lost_increments"))
        print(f"{target:<10} {c:>10} {a:>9} {i:>11} {lost:>6.0f} {lost / max(1, i):>15.2%} "
              f"{lost / max(1, c):>15.2%}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "mean_window_us": window,
                                         "args": vars(args) | {"json": str(args.json)}},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
