#!/usr/bin/env python3
"""First rproxy benchmark: redis-benchmark GET/SET, -P 1 and -P 16, through the
proxy and directly against the cluster (redis-benchmark --cluster), interleaved
in one run.  Prints median ops/s, latency, the proxy/direct ratio and the
proxy's CPU cost.  See loadtest/README.md.

--fanout runs instead the cross-slot scenarios, through the proxy only: GET of 1 key
(baseline), MGET of 10 and 100 keys and MSET of 10 pairs, keys spread over all masters.

    python loadtest/bench.py                    # local 3+3 cluster + rproxy subprocess
    python loadtest/bench.py --quick            # ~30 s smoke run
    python loadtest/bench.py --fanout [--quick] # multi-key fan-out vs. GET, proxy only
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SCENARIOS: list[tuple[str, int]] = [("set", 1), ("get", 1), ("set", 16), ("get", 16)]
# --fanout: (command, keys per command); GET of 1 key is the baseline for each pipeline depth.
FANOUT_COMMANDS: list[tuple[str, int]] = [("GET", 1), ("MGET", 10), ("MGET", 100), ("MSET", 10)]
FANOUT_PIPELINES = (1, 16)
FANOUT_KEYS = max(k for _, k in FANOUT_COMMANDS)
FANOUT_SPREAD_KEYS = 10  # the first 10 keys must touch every master
FANOUT_VALUE = "v" * 64  # 64-byte values, like -d 64; MSET writes the same value back
HZ = os.sysconf("SC_CLK_TCK")
Addr = tuple[str, int]


def parse_addr(text: str) -> Addr:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port(lo: int = 23000, hi: int = 27000) -> int:
    for _ in range(200):
        port = random.randint(lo, hi)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError(f"no free port in {lo}..{hi}")


def proc_cpu_seconds(pid: int) -> float:
    """utime+stime of pid and its live descendants, in seconds."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # fields[0] is state (field 3)
            total += (int(fields[11]) + int(fields[12])) / HZ  # utime, stime
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            if p == pid:
                raise
    return total


def wait_ping(addr: Addr, timeout: float, check: Callable[[], None] = lambda: None) -> bool:
    """PING addr (RESP2) until it answers or timeout expires; check() may raise to give up early."""
    import redis
    deadline = time.monotonic() + timeout
    while True:
        check()
        client = redis.Redis(host=addr[0], port=addr[1], protocol=2, socket_timeout=2, socket_connect_timeout=2)
        try:
            if client.ping():
                return True
        except redis.RedisError:
            pass
        finally:
            client.close()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


class Proxy:
    """rproxy as a subprocess on 127.0.0.1:<free port below 32768>."""

    def __init__(self, seeds: list[Addr]) -> None:
        self.port = free_port()
        self.addr: Addr = ("127.0.0.1", self.port)
        self.log = tempfile.NamedTemporaryFile(prefix="rproxy-bench-", suffix=".log", delete=False)
        self.cmd = [sys.executable, "-m", "rproxy", "--listen", f"127.0.0.1:{self.port}",
                    *(a for h, p in seeds for a in ("--seed", f"{h}:{p}")), "--log-level", "warning"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        def check() -> None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rproxy exited with {self.proc.returncode}:\n{self.tail()}")
        if not wait_ping(self.addr, timeout, check):
            raise RuntimeError(f"rproxy did not answer PING within {timeout:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                log("rproxy did not exit within 10 s of SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)


def bench_cmd(args: argparse.Namespace, target: Addr, cluster: bool, test: str, pipeline: int, n: int) -> list[str]:
    cmd = [args.redis_benchmark, "-h", target[0], "-p", str(target[1]), "-c", str(args.clients),
           "-n", str(n), "-P", str(pipeline), "-t", test, "-d", "64", "-r", str(args.keyspace), "--csv"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd + (["--cluster"] if cluster else [])


def fanout_key(i: int) -> str:
    return f"fan:{i}"  # no hash tag: the keys hash to different slots


def fanout_argv(command: str, nkeys: int) -> list[str]:
    keys = [fanout_key(i) for i in range(nkeys)]
    if command == "MSET":
        return [command, *(a for k in keys for a in (k, FANOUT_VALUE))]
    return [command, *keys]


def fanout_name(command: str, nkeys: int, pipeline: int) -> str:
    return f"{command} x{nkeys} -P {pipeline}"


def fanout_requests(args: argparse.Namespace, nkeys: int, pipeline: int) -> int:
    """-n for one fan-out run: --requests (-P 16) or --requests-p1 (-P 1) divided by the keys per
    command, so that every run moves about the same number of keys."""
    n = args.requests if pipeline > 1 else args.requests_p1
    return max(n // nkeys, args.clients * pipeline)


def fanout_bench_cmd(args: argparse.Namespace, target: Addr, argv: list[str], pipeline: int, n: int) -> list[str]:
    """redis-benchmark running one fixed command (keys are literal names, no -r)."""
    cmd = [args.redis_benchmark, "-h", target[0], "-p", str(target[1]), "-c", str(args.clients),
           "-n", str(n), "-P", str(pipeline), "--csv"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd + argv


def slot_owners(seed: Addr) -> list[tuple[int, int, str]]:
    """(start, end, "host:port" of the master) from CLUSTER SLOTS of seed."""
    import redis
    client = redis.Redis(host=seed[0], port=seed[1], protocol=2, socket_timeout=5, socket_connect_timeout=5)
    try:
        rows = client.execute_command("CLUSTER", "SLOTS")
    finally:
        client.close()
    text = lambda v: v.decode() if isinstance(v, bytes) else str(v)
    return sorted((int(r[0]), int(r[1]), f"{text(r[2][0]) or seed[0]}:{int(r[2][1])}") for r in rows)


def fanout_layout(seed: Addr) -> dict[str, Any]:
    """Slot and master of every fan-out key; raises unless the first FANOUT_SPREAD_KEYS keys
    touch every master of the cluster."""
    from rproxy.slots import key_slot
    owners = slot_owners(seed)
    masters = sorted({m for _, _, m in owners})

    def owner(slot: int) -> str:
        for start, end, master in owners:
            if start <= slot <= end:
                return master
        raise RuntimeError(f"slot {slot} is not assigned in CLUSTER SLOTS of {seed[0]}:{seed[1]}")
    keys = {}
    for i in range(FANOUT_KEYS):
        slot = key_slot(fanout_key(i).encode())
        keys[fanout_key(i)] = {"slot": slot, "master": owner(slot)}
    spread = {keys[fanout_key(i)]["master"] for i in range(FANOUT_SPREAD_KEYS)}
    if spread != set(masters):
        raise RuntimeError(f"keys {fanout_key(0)}..{fanout_key(FANOUT_SPREAD_KEYS - 1)} touch masters "
                           f"{sorted(spread)}, not all of {masters}")
    per_command = {}
    for _, nkeys in FANOUT_COMMANDS:
        sel = [keys[fanout_key(i)] for i in range(nkeys)]
        per_command[nkeys] = {"keys": nkeys, "slots": len({k["slot"] for k in sel}),
                              "masters": len({k["master"] for k in sel})}
    return {"masters": masters, "keys": keys, "per_command": per_command}


def fanout_populate(proxy_addr: Addr) -> None:
    """SET every fan-out key through the proxy (single-slot commands), then check that a
    100-key MGET through the proxy returns every value in order."""
    import redis
    client = redis.Redis(host=proxy_addr[0], port=proxy_addr[1], protocol=2, socket_timeout=10,
                         socket_connect_timeout=5)
    try:
        for i in range(FANOUT_KEYS):
            client.set(fanout_key(i), FANOUT_VALUE)
        got = client.mget([fanout_key(i) for i in range(FANOUT_KEYS)])
    except redis.RedisError as exc:
        raise RuntimeError(f"pre-populating the fan-out keys through the proxy failed: {exc}") from exc
    finally:
        client.close()
    bad = [fanout_key(i) for i, v in enumerate(got) if v != FANOUT_VALUE.encode()]
    if len(got) != FANOUT_KEYS or bad:
        raise RuntimeError(f"MGET of {FANOUT_KEYS} keys through the proxy returned wrong values for {bad[:5]}")


def run_bench(cmd: list[str], timeout: float, cpu_pid: Optional[int]) -> dict[str, Any]:
    """Run one redis-benchmark; returns rps/p50/p99 (+ proxy CPU) or an error."""
    res: dict[str, Any] = {"cmd": " ".join(cmd), "ok": False, "error": None}
    cpu0 = proc_cpu_seconds(cpu_pid) if cpu_pid else None
    t0 = time.monotonic()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        res["error"] = f"timed out after {timeout:.0f} s"
        return res
    res["wall_s"] = round(time.monotonic() - t0, 3)
    if cpu_pid and cpu0 is not None:
        try:
            res["proxy_cpu_s"] = round(proc_cpu_seconds(cpu_pid) - cpu0, 3)
            res["proxy_cpu_util"] = round(res["proxy_cpu_s"] / res["wall_s"], 3)
        except OSError:
            res["proxy_cpu_s"] = None
    rows = [line for line in out.stdout.splitlines() if line.startswith('"') and not line.startswith('"test"')]
    errors = [line for line in (out.stdout + out.stderr).splitlines()
              if "error" in line.lower() or "abort" in line.lower()]
    if out.returncode != 0 or errors or len(rows) != 1:
        detail = errors or out.stderr.splitlines()[-3:] or [f"{len(rows)} CSV rows"]
        res["error"] = f"exit {out.returncode}: " + " | ".join(detail)
        return res
    cols = [c.strip('"') for c in rows[0].split(",")]
    # "GET","rps","avg","min","p50","p95","p99","max"
    res.update(ok=True, rps=float(cols[1]), avg_ms=float(cols[2]), p50_ms=float(cols[4]), p99_ms=float(cols[6]))
    return res


def median(values: list[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for test, pipeline in SCENARIOS:
        name = f"{test.upper()} -P {pipeline}"
        row: dict[str, Any] = {"scenario": name}
        for target in ("direct", "proxy"):
            sel = [r for r in runs if r["scenario"] == name and r["target"] == target and r["ok"]]
            row[f"{target}_rps"] = median([r["rps"] for r in sel])
            row[f"{target}_p50_ms"] = median([r["p50_ms"] for r in sel])
            row[f"{target}_p99_ms"] = median([r["p99_ms"] for r in sel])
            if target == "proxy":
                cpu = [r.get("proxy_cpu_s") for r in sel]
                row["proxy_cpu_s_per_mops"] = median([c / r["requests"] * 1e6 if c else None
                                                      for c, r in zip(cpu, sel)])
                row["ops_per_proxy_cpu_s"] = median([r["requests"] / c if c else None for c, r in zip(cpu, sel)])
        pairs = [(r, q) for r in runs for q in runs if r["scenario"] == q["scenario"] == name
                 and r["round"] == q["round"] and r["target"] == "direct" and q["target"] == "proxy"]
        row["ratio"] = median([q["rps"] / r["rps"] if r["ok"] and q["ok"] else None for r, q in pairs])
        d, p = row["direct_rps"], row["proxy_rps"]
        row["ratio_of_medians"] = p / d if d and p else None
        rows.append(row)
    return rows


def summarize_fanout(runs: list[dict[str, Any]], layout: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for pipeline in FANOUT_PIPELINES:
        base_name = fanout_name(*FANOUT_COMMANDS[0], pipeline)
        base = {r["round"]: r for r in runs if r["scenario"] == base_name and r["ok"]}
        base_rps = median([r["rps"] for r in base.values()])
        base_p50 = median([r["p50_ms"] for r in base.values()])
        for command, nkeys in FANOUT_COMMANDS:
            name = fanout_name(command, nkeys, pipeline)
            sel = [r for r in runs if r["scenario"] == name and r["ok"]]
            row: dict[str, Any] = {"scenario": name, "command": command, "pipeline": pipeline,
                                   **layout["per_command"][nkeys]}
            row["rps"] = median([r["rps"] for r in sel])
            row["keys_per_s"] = row["rps"] * nkeys if row["rps"] is not None else None
            row["p50_ms"] = median([r["p50_ms"] for r in sel])
            row["p99_ms"] = median([r["p99_ms"] for r in sel])
            cpu = [r.get("proxy_cpu_s") for r in sel]
            row["proxy_cpu_s_per_mops"] = median([c / r["requests"] * 1e6 if c else None for c, r in zip(cpu, sel)])
            row["ops_per_proxy_cpu_s"] = median([r["requests"] / c if c else None for c, r in zip(cpu, sel)])
            # Ratios to GET of the same -P, paired per round (median), and of the medians.
            paired = [(r, base[r["round"]]) for r in sel if r["round"] in base]
            row["rps_ratio_vs_get"] = median([r["rps"] / b["rps"] for r, b in paired])
            row["keys_ratio_vs_get"] = (row["rps_ratio_vs_get"] * nkeys
                                        if row["rps_ratio_vs_get"] is not None else None)
            row["p50_ratio_vs_get"] = median([r["p50_ms"] / b["p50_ms"] if b["p50_ms"] else None for r, b in paired])
            row["rps_ratio_of_medians"] = row["rps"] / base_rps if row["rps"] and base_rps else None
            row["p50_ratio_of_medians"] = row["p50_ms"] / base_p50 if row["p50_ms"] and base_p50 else None
            rows.append(row)
    return rows


def fmt(v: Optional[float], spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ["scenario", "direct ops/s", "proxy ops/s", "ratio", "direct p50/p99 ms",
            "proxy p50/p99 ms", "proxy CPU-s per M ops", "ops per proxy CPU-s"]
    body = [[r["scenario"], fmt(r["direct_rps"], ",.0f"), fmt(r["proxy_rps"], ",.0f"), fmt(r["ratio"], ".2f"),
             f'{fmt(r["direct_p50_ms"], ".3f")} / {fmt(r["direct_p99_ms"], ".3f")}',
             f'{fmt(r["proxy_p50_ms"], ".3f")} / {fmt(r["proxy_p99_ms"], ".3f")}',
             fmt(r["proxy_cpu_s_per_mops"], ".1f"), fmt(r["ops_per_proxy_cpu_s"], ",.0f")] for r in rows]
    print_grid(head, body)


def print_fanout_table(rows: list[dict[str, Any]]) -> None:
    head = ["scenario", "keys/slots/masters", "cmds/s", "keys/s", "p50/p99 ms",
            "cmds/s vs GET", "keys/s vs GET", "p50 vs GET", "proxy CPU-s per M cmds"]
    body = [[r["scenario"], f'{r["keys"]}/{r["slots"]}/{r["masters"]}', fmt(r["rps"], ",.0f"),
             fmt(r["keys_per_s"], ",.0f"), f'{fmt(r["p50_ms"], ".3f")} / {fmt(r["p99_ms"], ".3f")}',
             fmt(r["rps_ratio_vs_get"], ".3f"), fmt(r["keys_ratio_vs_get"], ".2f"), fmt(r["p50_ratio_vs_get"], ".1f"),
             fmt(r["proxy_cpu_s_per_mops"], ".1f")] for r in rows]
    print_grid(head, body)


def print_grid(head: list[str], body: list[list[str]]) -> None:
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    print(line(head))
    print("-+-".join("-" * w for w in widths))
    for cells in body:
        print(line(cells))


def run_all(args: argparse.Namespace, seeds: list[Addr], proxy_addr: Addr, proxy_pid: Optional[int],
            proxy_alive: Callable[[], bool]) -> list[dict[str, Any]]:
    targets = {"direct": (seeds[0], True, None), "proxy": (proxy_addr, False, proxy_pid)}
    if args.warmup:
        for target, (addr, cluster, _) in targets.items():
            log(f"warm-up: {args.warmup} SETs (-P 16) {target}")
            res = run_bench(bench_cmd(args, addr, cluster, "set", 16, args.warmup), args.run_timeout, None)
            if not res["ok"]:
                raise RuntimeError(f"warm-up {target} failed: {res['error']}\n  {res['cmd']}")
    runs: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        order = ["direct", "proxy"] if rnd % 2 == 0 else ["proxy", "direct"]
        for test, pipeline in SCENARIOS:
            n = args.requests if pipeline > 1 else args.requests_p1
            for target in order:
                if target == "proxy" and not proxy_alive():
                    raise RuntimeError("rproxy process has exited")
                addr, cluster, pid = targets[target]
                res = run_bench(bench_cmd(args, addr, cluster, test, pipeline, n), args.run_timeout, pid)
                res.update(round=rnd + 1, scenario=f"{test.upper()} -P {pipeline}", target=target, requests=n)
                runs.append(res)
                msg = (f"{res['rps']:>12,.0f} ops/s  p50 {res['p50_ms']:.3f}  p99 {res['p99_ms']:.3f} ms"
                       f"  ({res['wall_s']:.1f} s" + (f", proxy CPU {res['proxy_cpu_util']:.0%})"
                                                       if res.get("proxy_cpu_util") is not None else ")")
                       if res["ok"] else f"FAILED: {res['error']}")
                log(f"[round {rnd + 1}/{args.rounds}] {res['scenario']:<9} {target:<6} {msg}")
    return runs


def run_fanout(args: argparse.Namespace, proxy_addr: Addr, proxy_pid: Optional[int],
               proxy_alive: Callable[[], bool]) -> list[dict[str, Any]]:
    """--fanout: GET / MGET x10 / MGET x100 / MSET x10 at each -P, through the proxy only."""
    log(f"pre-populating {FANOUT_KEYS} keys {fanout_key(0)}..{fanout_key(FANOUT_KEYS - 1)} through the proxy")
    fanout_populate(proxy_addr)
    if args.warmup:
        log(f"warm-up: {args.warmup} MGET x10 (-P 16) proxy")
        res = run_bench(fanout_bench_cmd(args, proxy_addr, fanout_argv("MGET", 10), 16, args.warmup),
                        args.run_timeout, None)
        if not res["ok"]:
            raise RuntimeError(f"warm-up failed: {res['error']}\n  {res['cmd']}")
    runs: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        # GET first in odd rounds, last in even rounds.
        order = FANOUT_COMMANDS if rnd % 2 == 0 else FANOUT_COMMANDS[::-1]
        for pipeline in FANOUT_PIPELINES:
            for command, nkeys in order:
                if not proxy_alive():
                    raise RuntimeError("rproxy process has exited")
                n = fanout_requests(args, nkeys, pipeline)
                cmd = fanout_bench_cmd(args, proxy_addr, fanout_argv(command, nkeys), pipeline, n)
                res = run_bench(cmd, args.run_timeout, proxy_pid)
                res.update(round=rnd + 1, scenario=fanout_name(command, nkeys, pipeline), target="proxy",
                           command=command, keys=nkeys, pipeline=pipeline, requests=n)
                runs.append(res)
                msg = (f"{res['rps']:>10,.0f} cmds/s {res['rps'] * nkeys:>12,.0f} keys/s  p50 {res['p50_ms']:.3f}"
                       f"  p99 {res['p99_ms']:.3f} ms  ({res['wall_s']:.1f} s"
                       + (f", proxy CPU {res['proxy_cpu_util']:.0%})" if res.get("proxy_cpu_util") is not None
                          else ")")
                       if res["ok"] else f"FAILED: {res['error']}")
                log(f"[round {rnd + 1}/{args.rounds}] {res['scenario']:<16} {msg}")
    return runs


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=parse_addr, action="append", default=[], metavar="HOST:PORT",
                    help="use this existing cluster (repeatable) instead of starting a local 3+3 one")
    ap.add_argument("--proxy", type=parse_addr, metavar="HOST:PORT",
                    help="benchmark an already running proxy instead of starting rproxy")
    ap.add_argument("--proxy-pid", type=int, help="pid of the --proxy process, to measure its CPU time")
    ap.add_argument("--fanout", action="store_true",
                    help="run only the multi-key fan-out scenarios (GET x1, MGET x10, MGET x100, MSET x10 "
                         "at -P 1 and -P 16), through the proxy only")
    ap.add_argument("--requests", type=int, help="requests per -P 16 run (default 600000; --quick 200000; "
                                                  "--fanout: divided by the keys per command)")
    ap.add_argument("--requests-p1", type=int, help="requests per -P 1 run (default: --requests / 4)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds; medians are reported (default 3; --quick 1)")
    ap.add_argument("--clients", type=int, default=50, help="redis-benchmark -c (default 50)")
    ap.add_argument("--keyspace", type=int, default=100000, help="redis-benchmark -r (default 100000)")
    ap.add_argument("--warmup", type=int, help="one-off -t set -P 16 requests per target before round 1 "
                                               "so GETs hit existing keys (default 3 x keyspace; --quick 1 x); "
                                               "--fanout: MGET x10 -P 16 requests (default --requests / 10)")
    ap.add_argument("--threads", type=int, default=0, help="pass --threads N to every redis-benchmark "
                    "(default: unset, i.e. --cluster uses one thread per master, proxy runs use one)")
    ap.add_argument("--run-timeout", type=float, default=300, help="seconds per redis-benchmark run (default 300)")
    ap.add_argument("--redis-benchmark", default="redis-benchmark", help="redis-benchmark binary")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write raw and median results as JSON")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, small N (~30 s)")
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.requests = args.requests or (200000 if args.quick else 600000)
    args.requests_p1 = args.requests_p1 or max(args.requests // 4, args.clients)
    if args.warmup is None:
        args.warmup = args.requests // 10 if args.fanout else args.keyspace * (1 if args.quick else 3)

    if shutil.which(args.redis_benchmark) is None:
        raise RuntimeError(f"{args.redis_benchmark} not found (Debian/Ubuntu: apt-get install redis-tools)")
    if args.proxy_pid and not Path(f"/proc/{args.proxy_pid}/stat").exists():
        raise RuntimeError(f"--proxy-pid {args.proxy_pid}: no such process")
    # Turn SIGTERM into an exception so the finally blocks below stop everything.
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    cluster: Any = None
    proxy: Optional[Proxy] = None
    layout: dict[str, Any] = {}
    try:
        if args.seed:
            seeds = args.seed
        else:
            from rproxy.localcluster import LocalCluster
            log("starting local cluster: 3 masters + 3 replicas")
            cluster = LocalCluster(masters=3, replicas=1, node_timeout_ms=2000, log=log)
            cluster.start()
            seeds = list(cluster.seeds)
        if args.proxy:
            proxy_addr, proxy_pid = args.proxy, args.proxy_pid
            proxy_alive = lambda: True
            if not wait_ping(proxy_addr, 5):
                raise RuntimeError(f"--proxy {proxy_addr[0]}:{proxy_addr[1]} does not answer PING")
        else:
            proxy = Proxy(seeds)
            log(f"starting rproxy: {' '.join(proxy.cmd)}")
            proxy.wait_ready()
            proxy_addr, proxy_pid = proxy.addr, proxy.proc.pid
            proxy_alive = lambda: proxy.proc.poll() is None
        if args.fanout:
            layout = fanout_layout(seeds[0])
            spread = [layout["keys"][fanout_key(i)]["master"] for i in range(FANOUT_SPREAD_KEYS)]
            log(f"fan-out keys {fanout_key(0)}..{fanout_key(FANOUT_SPREAD_KEYS - 1)} -> masters "
                + ", ".join(f"{m} x{spread.count(m)}" for m in layout["masters"]))
            log(f"fan-out via proxy {proxy_addr[0]}:{proxy_addr[1]} only; {args.rounds} round(s), "
                f"-P 16 n={args.requests}, -P 1 n={args.requests_p1} (divided by keys per command), "
                f"-c {args.clients}")
            runs = run_fanout(args, proxy_addr, proxy_pid, proxy_alive)
        else:
            log(f"direct: --cluster via {seeds[0][0]}:{seeds[0][1]}; proxy: {proxy_addr[0]}:{proxy_addr[1]}; "
                f"{args.rounds} round(s), -P 16 n={args.requests}, -P 1 n={args.requests_p1}, -c {args.clients}")
            runs = run_all(args, seeds, proxy_addr, proxy_pid, proxy_alive)
    finally:
        if proxy is not None:
            log("stopping rproxy")
            proxy.stop()
        if cluster is not None:
            log("stopping local cluster")
            cluster.stop()

    failed = [r for r in runs if not r["ok"]]
    elapsed = time.monotonic() - started
    print()
    if args.fanout:
        rows: list[dict[str, Any]] = []
        fanout_rows = summarize_fanout(runs, layout)
        print_fanout_table(fanout_rows)
        print(f"\n{len(runs)} runs, {len(failed)} failed, {elapsed:.0f} s total; medians over {args.rounds} round(s); "
              f"proxy only; keys fan:0..fan:<keys-1> (no hash tag); 'vs GET' = median of per-round ratios "
              f"to GET x1 at the same -P")
    else:
        rows = summarize(runs)
        print_table(rows)
        print(f"\n{len(runs)} runs, {len(failed)} failed, {elapsed:.0f} s total; medians over {args.rounds} round(s); "
              f"ratio = median of per-round (proxy ops/s / direct ops/s), each pair run back-to-back")
    for r in failed:
        print(f"FAILED round {r['round']} {r['scenario']} {r['target']}: {r['error']}\n  {r['cmd']}")
    if args.json:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        out: dict[str, Any] = {"config": config, "seeds": seeds, "proxy": proxy_addr,
                               "elapsed_s": round(elapsed, 1), "medians": rows}
        if args.fanout:
            out["fanout_medians"] = fanout_rows
            out["fanout_layout"] = layout
        args.json.write_text(json.dumps({**out, "runs": runs}, indent=2))
        print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
    except RuntimeError as exc:
        log(f"error: {exc}")
        sys.exit(2)
