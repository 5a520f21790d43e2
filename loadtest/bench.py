#!/usr/bin/env python3
"""rproxy benchmark: redis-benchmark GET/SET, -P 1 and -P 16, through the
proxy and directly against the cluster (redis-benchmark --cluster), interleaved
in one run.  Prints median ops/s, p50/p99/p99.9 latency, the proxy/direct ratio and
the proxy's CPU cost.  See loadtest/README.md.

--fanout runs instead the cross-slot scenarios, through the proxy only: GET of 1 key
(baseline), MGET of 10 and 100 keys and MSET of 10 pairs, keys spread over all masters.

    python loadtest/bench.py                    # local 3+3 cluster + rproxy subprocess
    python loadtest/bench.py --quick            # ~30 s smoke run
    python loadtest/bench.py --fanout [--quick] # multi-key fan-out vs. GET, proxy only
    python loadtest/bench.py --workers-scaling  # rproxy --workers 1 vs 2
    python loadtest/bench.py --connections      # GET -P 1 at 1..5000 clients, proxy vs direct
    python loadtest/bench.py --idle             # 10 000 idle connections: proxy RSS per connection
    python loadtest/bench.py --mix              # loadgen.py 80/20 mix with verified replies
    ... --json FILE --charts DIR                # raw + median results; PNG charts (matplotlib)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

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


def proc_tree(pid: int) -> list[int]:
    """pid and its live descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
            out.append(p)
        except OSError:
            if p == pid:
                raise
    return out


def proc_rss_kib(pid: int) -> int:
    """VmRSS (KiB) of pid plus its live descendants (the workers, with --workers N)."""
    total = 0
    for p in proc_tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def proc_fds(pid: int) -> int:
    """Open file descriptors of pid plus its live descendants."""
    return sum(len(os.listdir(f"/proc/{p}/fd")) for p in proc_tree(pid))


def raise_nofile(need: int = 0) -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit (children inherit it: the
    local cluster, rproxy, redis-benchmark). Returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, need, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log(f"could not raise RLIMIT_NOFILE {soft} -> {target}: {exc}")
    return soft, hard


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
    """rproxy as a subprocess on 127.0.0.1:<free port below 32768>, from this checkout or from
    another source ``tree`` (loadtest/ab.py: cwd and PYTHONPATH are the tree). ``label`` names
    it in errors and logs; ``extra`` are more command-line arguments."""

    def __init__(self, seeds: list[Addr], workers: int = 1, env: Optional[dict[str, str]] = None,
                 tree: Path = REPO, extra: Sequence[str] = (), label: str = "rproxy",
                 avoid_ports: Sequence[int] = ()) -> None:
        self.workers = workers
        self.tree = tree
        self.label = label
        self.port = free_port()
        while self.port in avoid_ports:
            self.port = free_port()
        self.addr: Addr = ("127.0.0.1", self.port)
        self.log = tempfile.NamedTemporaryFile(prefix="rproxy-bench-", suffix=".log", delete=False)
        self.cmd = [sys.executable, "-m", "rproxy", "--listen", f"127.0.0.1:{self.port}",
                    *(a for h, p in seeds for a in ("--seed", f"{h}:{p}")), "--log-level", "warning",
                    *extra]
        if workers != 1:
            self.cmd += ["--workers", str(workers)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])),
                   **(env or {}))
        self.proc = subprocess.Popen(self.cmd, cwd=tree, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        def check() -> None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}:\n{self.tail()}")
        if not wait_ping(self.addr, timeout, check):
            raise RuntimeError(f"{self.label} did not answer PING within {timeout:.0f} s:\n{self.tail()}")
        if self.workers > 1:  # every worker must listen, or SO_REUSEPORT sends all clients to one
            deadline = time.monotonic() + timeout
            while Path(self.log.name).read_text(errors="replace").count(" ready: ") < self.workers:
                check()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not all {self.workers} rproxy workers ready:\n{self.tail()}")
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                log(f"{self.label} did not exit within 10 s of SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)


def bench_cmd(args: argparse.Namespace, target: Addr, cluster: bool, test: str, pipeline: int, n: int,
              resp3: bool = False) -> list[str]:
    cmd = [args.redis_benchmark, "-h", target[0], "-p", str(target[1]), "-c", str(args.clients),
           "-n", str(n), "-P", str(pipeline), "-t", test, "-d", "64", "-r", str(args.keyspace)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if resp3:
        cmd.append("-3")  # HELLO 3 on every connection first
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
           "-n", str(n), "-P", str(pipeline)]
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
    from rproxy.core.slots import key_slot
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


PCT_LINE = re.compile(r"^\s*([\d.]+)% <= ([\d.]+) milliseconds \(cumulative count (\d+)\)")


def parse_bench_output(stdout: str) -> dict[str, Any]:
    """Parse redis-benchmark 7.0 text output (one test): throughput, the latency summary and
    p99.9 from the "Latency by percentile distribution" section (HdrHistogram ticks with
    cumulative counts).  p99.9 is the first tick whose cumulative count reaches 99.9 % of the
    requests: an upper bound at the histogram's tick resolution (the previous tick's latency
    is a lower bound; both are in the JSON)."""
    lines = stdout.replace("\r", "\n").splitlines()
    out: dict[str, Any] = {}
    ticks: list[tuple[float, float, int]] = []
    section = None
    for i, line in enumerate(lines):
        text = line.strip()
        if text.startswith("Latency by percentile distribution"):
            section = "pct"
            continue
        if text.startswith("Cumulative distribution of latencies") or text.startswith("Summary:"):
            section = None
        m = PCT_LINE.match(text)
        if m and section == "pct":
            ticks.append((float(m.group(1)), float(m.group(2)), int(m.group(3))))
        if text.startswith("throughput summary:"):
            out["rps"] = float(text.split(":")[1].split()[0])
        if text.startswith("avg") and "p99" in text and i + 1 < len(lines):
            names = text.split()
            vals = [float(v) for v in lines[i + 1].split()]
            out.update({f"{k}_ms": v for k, v in zip(names, vals)})
    if ticks:
        total = max(c for _, _, c in ticks)
        need = 0.999 * total
        prev = None
        for pct, ms, count in ticks:
            if count >= need:
                out["p999_ms"] = ms
                out["p999_lower_ms"] = prev if prev is not None else ms
                break
            prev = ms
        out["completed"] = total
    return out


def run_with_progress(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` capturing its output; on a terminal, show redis-benchmark's live
    ``rps=...`` line on stderr meanwhile (the progress display), cleared at the end."""
    live = sys.stderr.isatty()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        got: dict[Any, list[bytes]] = {proc.stdout: [], proc.stderr: []}
        deadline = time.monotonic() + timeout
        for pipe in got:
            os.set_blocking(pipe.fileno(), False)
        open_pipes = list(got)
        while open_pipes:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise subprocess.TimeoutExpired(cmd, timeout)
            for pipe in select.select(open_pipes, [], [], 0.2)[0]:
                data = pipe.read()
                if not data:  # EOF
                    open_pipes.remove(pipe)
                    continue
                got[pipe].append(data)
                segments = data.replace(b"\n", b"\r").split(b"\r")
                status = next((seg for seg in reversed(segments) if b"rps=" in seg), b"")
                if live and status:
                    sys.stderr.write("\r  " + status.decode(errors="replace").strip()[:100] + "\x1b[K")
                    sys.stderr.flush()
        proc.wait()
    if live:
        sys.stderr.write("\r\x1b[K")
    out, err = (b"".join(got[p]).decode(errors="replace") for p in (proc.stdout, proc.stderr))
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_bench(cmd: list[str], timeout: float, cpu_pid: Optional[int]) -> dict[str, Any]:
    """Run one redis-benchmark; returns rps/p50/p99/p99.9 (+ proxy CPU) or an error."""
    res: dict[str, Any] = {"cmd": " ".join(cmd), "ok": False, "error": None}
    cpu0 = proc_cpu_seconds(cpu_pid) if cpu_pid else None
    t0 = time.monotonic()
    try:
        out = run_with_progress(cmd, timeout)
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
    errors = [line.strip() for line in (out.stdout + out.stderr).replace("\r", "\n").splitlines()
              if "error" in line.lower() or "abort" in line.lower()]
    parsed = parse_bench_output(out.stdout)
    if out.returncode != 0 or errors or "rps" not in parsed or "p50_ms" not in parsed:
        detail = errors or out.stderr.splitlines()[-3:] or ["no summary in the output"]
        res["error"] = f"exit {out.returncode}: " + " | ".join(detail[:3])
        return res
    res.update(ok=True, rps=parsed["rps"], avg_ms=parsed.get("avg_ms"), p50_ms=parsed["p50_ms"],
               p99_ms=parsed.get("p99_ms"), p999_ms=parsed.get("p999_ms"),
               p999_lower_ms=parsed.get("p999_lower_ms"), max_ms=parsed.get("max_ms"))
    return res


def rounds_arguments(description: str) -> argparse.ArgumentParser:
    """The options of the interleaved runs of one proxy's listeners or users (tls_ab.py,
    acl_ab.py)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=400_000, help="per run at -P 16")
    ap.add_argument("--requests-p1", type=int, default=100_000, help="per run at -P 1")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--json", type=Path)
    return ap


def report(summary: dict[str, Any], runs: list[dict[str, Any]], path: Optional[Path]) -> int:
    """Print a run's summary, write it with every run to ``path`` (JSON) if given; the exit
    code: 1 if a run failed."""
    print(json.dumps(summary, indent=2))
    if path:
        path.write_text(json.dumps({"summary": summary, "runs": runs}, indent=1) + "\n")
        log(f"wrote {path}")
    return 0 if all(r["ok"] for r in runs) else 1


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
            row[f"{target}_p999_ms"] = median([r.get("p999_ms") for r in sel])
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
            row["p999_ms"] = median([r.get("p999_ms") for r in sel])
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


def lat3(row: dict[str, Any], prefix: str) -> str:
    return " / ".join(fmt(row.get(f"{prefix}{k}_ms"), ".3f") for k in ("p50", "p99", "p999"))


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ["scenario", "direct ops/s", "proxy ops/s", "ratio", "direct p50/p99/p99.9 ms",
            "proxy p50/p99/p99.9 ms", "proxy CPU-s per M ops", "ops per proxy CPU-s"]
    body = [[r["scenario"], fmt(r["direct_rps"], ",.0f"), fmt(r["proxy_rps"], ",.0f"), fmt(r["ratio"], ".2f"),
             lat3(r, "direct_"), lat3(r, "proxy_"),
             fmt(r["proxy_cpu_s_per_mops"], ".1f"), fmt(r["ops_per_proxy_cpu_s"], ",.0f")] for r in rows]
    print_grid(head, body)


def print_fanout_table(rows: list[dict[str, Any]]) -> None:
    head = ["scenario", "keys/slots/masters", "cmds/s", "keys/s", "p50/p99/p99.9 ms",
            "cmds/s vs GET", "keys/s vs GET", "p50 vs GET", "proxy CPU-s per M cmds"]
    body = [[r["scenario"], f'{r["keys"]}/{r["slots"]}/{r["masters"]}', fmt(r["rps"], ",.0f"),
             fmt(r["keys_per_s"], ",.0f"), lat3(r, ""),
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
                msg = (f"{res['rps']:>12,.0f} ops/s  p50 {res['p50_ms']:.3f}  p99 {res['p99_ms']:.3f}"
                       f"  p99.9 {fmt(res['p999_ms'], '.3f')} ms"
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


def run_logged(label: str, cmd: list[str], args: argparse.Namespace, pid: Optional[int],
               extra: dict[str, Any]) -> dict[str, Any]:
    res = run_bench(cmd, args.run_timeout, pid)
    res.update(extra)
    msg = (f"{res['rps']:>12,.0f} ops/s  p50 {res['p50_ms']:.3f}  p99 {res['p99_ms']:.3f}"
           f"  p99.9 {fmt(res['p999_ms'], '.3f')} ms  ({res['wall_s']:.1f} s"
           + (f", proxy CPU {res['proxy_cpu_util']:.0%})" if res.get("proxy_cpu_util") is not None else ")")
           if res["ok"] else f"FAILED: {res['error']}")
    log(f"{label} {msg}")
    return res


def warm_up(args: argparse.Namespace, targets: dict[str, tuple[Addr, bool, Optional[int]]]) -> None:
    if not args.warmup:
        return
    for target, (addr, cluster, _) in targets.items():
        log(f"warm-up: {args.warmup} SETs (-P 16) {target}")
        res = run_bench(bench_cmd(args, addr, cluster, "set", 16, args.warmup), args.run_timeout, None)
        if not res["ok"]:
            raise RuntimeError(f"warm-up {target} failed: {res['error']}\n  {res['cmd']}")


def paired_rows(runs: list[dict[str, Any]], names: list[str], a: str, b: str, key: str = "scenario"
                ) -> list[dict[str, Any]]:
    """Median rps/latency/CPU per (name, target) and the median of per-round b/a ratios."""
    rows = []
    for name in names:
        row: dict[str, Any] = {key: name}
        for target in (a, b):
            sel = [r for r in runs if r[key] == name and r["target"] == target and r["ok"]]
            row[f"{target}_rps"] = median([r["rps"] for r in sel])
            for q in ("p50", "p99", "p999"):
                row[f"{target}_{q}_ms"] = median([r.get(f"{q}_ms") for r in sel])
            row[f"{target}_cpu_s_per_mops"] = median([r["proxy_cpu_s"] / r["requests"] * 1e6
                                                       if r.get("proxy_cpu_s") else None for r in sel])
            row[f"{target}_runs"] = len(sel)
        by_round = {}
        for r in runs:
            if r[key] == name and r["ok"]:
                by_round.setdefault(r["round"], {})[r["target"]] = r
        row["ratio"] = median([d[b]["rps"] / d[a]["rps"] for d in by_round.values() if a in d and b in d])
        rows.append(row)
    return rows


def run_workers_scaling(args: argparse.Namespace, procs: dict[str, "Proxy"]) -> tuple[list, list]:
    """--workers-scaling: GET -P 16 and -P 1 through rproxy --workers 1 and --workers 2 (both
    running at once on different ports; runs interleaved, first target alternating by round)."""
    targets = {name: (p.addr, False, p.proc.pid) for name, p in procs.items()}
    warm_up(args, {"w1": targets["w1"]})  # same keyspace for both proxies
    scen = [("get", 16), ("get", 1)]
    runs = []
    for rnd in range(args.rounds):
        order = ["w1", "w2"] if rnd % 2 == 0 else ["w2", "w1"]
        for test, pipeline in scen:
            n = args.requests if pipeline > 1 else args.requests_p1
            for target in order:
                if procs[target].proc.poll() is not None:
                    raise RuntimeError(f"rproxy {target} exited:\n{procs[target].tail()}")
                addr, _, pid = targets[target]
                name = f"{test.upper()} -P {pipeline}"
                workers = [c for c in proc_tree(pid) if c != pid] if target == "w2" else []
                before = [proc_cpu_seconds(c) for c in workers]
                runs.append(run_logged(f"[round {rnd + 1}/{args.rounds}] {name:<9} {target:<3}",
                                       bench_cmd(args, addr, False, test, pipeline, n), args, pid,
                                       dict(round=rnd + 1, scenario=name, target=target, requests=n)))
                if workers:  # CPU per worker: shows whether SO_REUSEPORT spread the clients
                    split = [round(proc_cpu_seconds(c) - b, 2) for c, b in zip(workers, before)]
                    runs[-1]["worker_cpu_s"] = split
                    log(f"    CPU-s per worker: {split}")
    rows = paired_rows(runs, [f"{t.upper()} -P {p}" for t, p in scen], "w1", "w2")
    return runs, rows


def run_resp3(args: argparse.Namespace, proxy_addr: Addr, proxy_pid: Optional[int],
              proxy_alive: Callable[[], bool]) -> tuple[list, list]:
    """--resp3: GET/SET -P 16 and -P 1 through one rproxy, from RESP2 clients and from RESP3
    clients (redis-benchmark -3), interleaved, the first alternating by round."""
    warm_up(args, {"proxy": (proxy_addr, False, None)})
    scen = [("get", 16), ("set", 16), ("get", 1), ("set", 1)]
    runs = []
    for rnd in range(args.rounds):
        order = ["resp2", "resp3"] if rnd % 2 == 0 else ["resp3", "resp2"]
        for test, pipeline in scen:
            n = args.requests if pipeline > 1 else args.requests_p1
            for target in order:
                if not proxy_alive():
                    raise RuntimeError("rproxy process has exited")
                name = f"{test.upper()} -P {pipeline}"
                runs.append(run_logged(f"[round {rnd + 1}/{args.rounds}] {name:<9} {target}",
                                       bench_cmd(args, proxy_addr, False, test, pipeline, n,
                                                 resp3=target == "resp3"), args, proxy_pid,
                                       dict(round=rnd + 1, scenario=name, target=target, requests=n)))
    rows = paired_rows(runs, [f"{t.upper()} -P {p}" for t, p in scen], "resp2", "resp3")
    return runs, rows


def print_resp3_table(rows: list[dict[str, Any]]) -> None:
    head = ["scenario", "RESP2 ops/s", "RESP3 ops/s", "RESP3/RESP2", "RESP2 p50/p99/p99.9 ms",
            "RESP3 p50/p99/p99.9 ms", "RESP2 CPU-s/M ops", "RESP3 CPU-s/M ops"]
    body = [[r["scenario"], fmt(r["resp2_rps"], ",.0f"), fmt(r["resp3_rps"], ",.0f"),
             fmt(r["ratio"], ".3f"), lat3(r, "resp2_"), lat3(r, "resp3_"),
             fmt(r["resp2_cpu_s_per_mops"], ".1f"), fmt(r["resp3_cpu_s_per_mops"], ".1f")]
            for r in rows]
    print_grid(head, body)


def print_workers_table(rows: list[dict[str, Any]]) -> None:
    head = ["scenario", "1 worker ops/s", "2 workers ops/s", "ratio 2/1", "1w p50/p99/p99.9 ms",
            "2w p50/p99/p99.9 ms", "1w CPU-s/M ops", "2w CPU-s/M ops"]
    body = [[r["scenario"], fmt(r["w1_rps"], ",.0f"), fmt(r["w2_rps"], ",.0f"), fmt(r["ratio"], ".2f"),
             lat3(r, "w1_"), lat3(r, "w2_"), fmt(r["w1_cpu_s_per_mops"], ".1f"),
             fmt(r["w2_cpu_s_per_mops"], ".1f")] for r in rows]
    print_grid(head, body)


def conn_levels(args: argparse.Namespace) -> tuple[list[int], list[str]]:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    levels, notes = [], []
    for c in args.conn_levels:
        # redis-benchmark holds c sockets; the proxy c + backends; margin for the rest
        if c + 512 > soft:
            notes.append(f"skipped {c} clients: RLIMIT_NOFILE soft limit {soft} (raise the hard limit, ulimit -Hn)")
        else:
            levels.append(c)
    return levels, notes


def run_connections(args: argparse.Namespace, seeds: list[Addr], proxy_addr: Addr, proxy_pid: Optional[int],
                    proxy_alive: Callable[[], bool], levels: list[int]) -> tuple[list, list]:
    """--connections: GET -P 1 with -c 1..5000, proxy vs direct (--cluster), interleaved."""
    targets = {"direct": (seeds[0], True, None), "proxy": (proxy_addr, False, proxy_pid)}
    warm_up(args, targets)
    runs = []
    saved = args.clients
    try:
        for rnd in range(args.rounds):
            order = ["direct", "proxy"] if rnd % 2 == 0 else ["proxy", "direct"]
            for c in levels:
                args.clients = c
                n = max(args.conn_requests, c * 20)
                for target in order:
                    if target == "proxy" and not proxy_alive():
                        raise RuntimeError("rproxy process has exited")
                    addr, cluster, pid = targets[target]
                    runs.append(run_logged(f"[round {rnd + 1}/{args.rounds}] GET -P 1 -c {c:<5} {target:<6}",
                                           bench_cmd(args, addr, cluster, "get", 1, n), args, pid,
                                           dict(round=rnd + 1, clients=c, target=target, requests=n)))
    finally:
        args.clients = saved
    rows = paired_rows(runs, levels, "direct", "proxy", key="clients")
    return runs, rows


def print_connections_table(rows: list[dict[str, Any]]) -> None:
    head = ["clients", "direct ops/s", "proxy ops/s", "ratio", "direct p50/p99/p99.9 ms",
            "proxy p50/p99/p99.9 ms", "proxy CPU-s per M ops"]
    body = [[str(r["clients"]), fmt(r["direct_rps"], ",.0f"), fmt(r["proxy_rps"], ",.0f"), fmt(r["ratio"], ".2f"),
             lat3(r, "direct_"), lat3(r, "proxy_"), fmt(r["proxy_cpu_s_per_mops"], ".1f")] for r in rows]
    print_grid(head, body)


def settle_rss(pid: int, seconds: float = 1.0) -> int:
    time.sleep(seconds)
    return proc_rss_kib(pid)


def run_idle(args: argparse.Namespace, proxy_addr: Addr, proxy_pid: Optional[int]) -> dict[str, Any]:
    """--idle: open N client connections to the proxy, PING each once, keep them idle; proxy RSS
    (VmRSS of the process and its workers) before, after connecting, after the PINGs, after close."""
    import selectors
    n = args.idle_conns
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if n + 256 > soft:
        log(f"RLIMIT_NOFILE soft limit {soft} (hard {hard}) is too low for {n} connections; using {soft - 256}")
        n = soft - 256
    res: dict[str, Any] = {"requested": args.idle_conns, "connections": n, "nofile_soft": soft}
    rss = lambda: proc_rss_kib(proxy_pid) if proxy_pid else None
    fds = lambda: proc_fds(proxy_pid) if proxy_pid else None
    res["rss_before_kib"], res["fds_before"] = settle_rss(proxy_pid) if proxy_pid else None, fds()
    socks: list[socket.socket] = []
    t0 = time.monotonic()
    connect_errors: list[str] = []
    try:
        for i in range(n):
            try:
                socks.append(socket.create_connection(proxy_addr, timeout=10))
            except OSError as exc:
                connect_errors.append(f"#{i}: {exc}")
                if len(connect_errors) >= 20:
                    break
            if (i + 1) % 1000 == 0:
                log(f"  idle: {i + 1}/{n} connected ({time.monotonic() - t0:.1f} s)"
                    + (f", proxy RSS {rss() / 1024:.1f} MiB" if proxy_pid else ""))
        res["connect_s"] = round(time.monotonic() - t0, 2)
        res["connected"] = len(socks)
        res["connect_errors"] = connect_errors[:5]
        res["rss_connected_kib"], res["fds_connected"] = settle_rss(proxy_pid, 2) if proxy_pid else None, fds()
        # One PING per connection (all sent, then all replies read): proves the proxy serves each.
        t1 = time.monotonic()
        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            try:
                s.send(b"*1\r\n$4\r\nPING\r\n")
            except OSError:
                continue
            sel.register(s, selectors.EVENT_READ)
        pong, bad, pending = 0, [], len(sel.get_map())
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                s = key.fileobj
                try:
                    data = s.recv(64)
                except OSError as exc:
                    data = repr(exc).encode()
                if data == b"+PONG\r\n":
                    pong += 1
                elif len(bad) < 5:
                    bad.append(data[:80].decode(errors="replace").strip() or "connection closed")
                sel.unregister(s)
                pending -= 1
        sel.close()
        res.update(pong=pong, ping_failed=len(socks) - pong, ping_errors=bad, ping_s=round(time.monotonic() - t1, 2))
        res["rss_pinged_kib"], res["fds_pinged"] = settle_rss(proxy_pid, 2) if proxy_pid else None, fds()
    finally:
        for s in socks:
            s.close()
    if proxy_pid:
        res["rss_closed_kib"] = settle_rss(proxy_pid, 3)
        res["fds_closed"] = fds()
        k = res["connected"] or 1
        res["kib_per_conn_connected"] = round((res["rss_connected_kib"] - res["rss_before_kib"]) / k, 2)
        res["kib_per_conn_pinged"] = round((res["rss_pinged_kib"] - res["rss_before_kib"]) / k, 2)
        res["proxy_fds_added"] = res["fds_pinged"] - res["fds_before"]
    return res


def print_idle(res: dict[str, Any]) -> None:
    mib = lambda k: "-" if k is None else f"{k / 1024:.1f} MiB"
    print(f"idle connections: {res['connected']}/{res['requested']} connected in {res.get('connect_s')} s, "
          f"{res['pong']} answered PING, {res['ping_failed']} did not"
          + (f" ({'; '.join(res['ping_errors'])})" if res["ping_errors"] else ""))
    if res.get("connect_errors"):
        print(f"connect errors: {'; '.join(res['connect_errors'])}")
    if res.get("rss_before_kib") is None:
        print("proxy RSS: unknown (pass --proxy-pid with --proxy)")
        return
    head = ["stage", "proxy RSS", "proxy fds", "KiB per connection"]
    body = [["before", mib(res["rss_before_kib"]), str(res["fds_before"]), ""],
            ["connected (accepted, silent)", mib(res["rss_connected_kib"]), str(res["fds_connected"]),
             fmt(res["kib_per_conn_connected"], ".1f")],
            ["after one PING each", mib(res["rss_pinged_kib"]), str(res["fds_pinged"]),
             fmt(res["kib_per_conn_pinged"], ".1f")],
            ["all closed", mib(res["rss_closed_kib"]), str(res["fds_closed"]), ""]]
    print_grid(head, body)


def run_mix(args: argparse.Namespace, seeds: list[Addr], proxy_addr: Addr, proxy_pid: Optional[int],
            proxy_alive: Callable[[], bool]) -> tuple[list, list]:
    """--mix: loadtest/loadgen.py (80 % GET / 20 % SET, 64 B-4 KiB values, every reply verified)
    through the proxy and straight at the cluster (loadgen --cluster routes by CLUSTER SLOTS)."""
    targets = {"proxy": (proxy_addr, False, proxy_pid)}
    if not args.mix_proxy_only:
        targets["direct"] = (seeds[0], True, None)
    runs = []
    for rnd in range(args.rounds):
        order = [t for t in (["direct", "proxy"] if rnd % 2 == 0 else ["proxy", "direct"]) if t in targets]
        for pipeline in args.mix_pipelines:
            for target in order:
                if target == "proxy" and not proxy_alive():
                    raise RuntimeError("rproxy process has exited")
                addr, cluster, pid = targets[target]
                with tempfile.NamedTemporaryFile(prefix="loadgen-", suffix=".json") as tmp:
                    cmd = [sys.executable, str(Path(__file__).with_name("loadgen.py")),
                           "--target", f"{addr[0]}:{addr[1]}", "--connections", str(args.clients),
                           "--pipeline", str(pipeline), "--duration", str(args.mix_duration),
                           "--seed", str(rnd + 1), "--json", tmp.name] + (["--cluster"] if cluster else [])
                    log(f"[round {rnd + 1}/{args.rounds}] mix -P {pipeline} {target}: {' '.join(cmd[1:])}")
                    cpu0 = proc_cpu_seconds(pid) if pid else None
                    t0 = time.monotonic()
                    out = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=None,
                                         timeout=args.mix_duration + args.run_timeout)
                    wall = time.monotonic() - t0
                    text = Path(tmp.name).read_text()
                res: dict[str, Any] = {"round": rnd + 1, "scenario": f"mix -P {pipeline}", "pipeline": pipeline,
                                       "target": target, "cmd": " ".join(cmd), "ok": False, "error": None}
                if not text:
                    res["error"] = f"loadgen exit {out.returncode}, no result"
                else:
                    r = json.loads(text)
                    r.pop("target", None)
                    res.update(r)
                    res["requests"] = r["ops"]
                    res["ok"] = r["mismatches"] == 0 and r["ops"] > 0
                    if not res["ok"]:
                        res["error"] = f"{r['mismatches']} mismatches: {r['mismatch_examples']}"
                    if pid:
                        res["proxy_cpu_s"] = round(proc_cpu_seconds(pid) - cpu0, 3)
                        res["proxy_cpu_util"] = round(res["proxy_cpu_s"] / wall, 3)
                    log(f"    {res['rps']:,.0f} ops/s  {res['verified']:,} verified, {res['mismatches']} mismatches, "
                        f"hits {res['hits']:,}/{res['gets']:,}  p50 {res['p50_ms']:.3f}  p99 {res['p99_ms']:.3f}  "
                        f"p99.9 {res['p999_ms']:.3f} ms  loadgen CPU {res['loadgen_cpu_util']:.0%}"
                        + (f", proxy CPU {res['proxy_cpu_util']:.0%}" if pid else ""))
                runs.append(res)
    rows = []
    for pipeline in args.mix_pipelines:
        for target in targets:
            sel = [r for r in runs if r["pipeline"] == pipeline and r["target"] == target and r.get("ops")]
            row: dict[str, Any] = {"scenario": f"mix -P {pipeline}", "target": target, "pipeline": pipeline,
                                   "rps": median([r["rps"] for r in sel])}
            for q in ("p50", "p99", "p999"):
                row[f"{q}_ms"] = median([r[f"{q}_ms"] for r in sel])
            row["verified"] = sum(r["verified"] for r in sel)
            row["mismatches"] = sum(r["mismatches"] for r in sel)
            row["hit_rate"] = (sum(r["hits"] for r in sel) / max(1, sum(r["gets"] for r in sel))) if sel else None
            row["proxy_cpu_s_per_mops"] = median([r["proxy_cpu_s"] / r["ops"] * 1e6 if r.get("proxy_cpu_s") else None
                                                  for r in sel])
            row["loadgen_cpu_util"] = median([r["loadgen_cpu_util"] for r in sel])
            row["key_slots"] = sel[0]["key_slots"] if sel else None
            rows.append(row)
    for row in rows:
        if row["target"] == "proxy":
            d = next((x for x in rows if x["target"] == "direct" and x["pipeline"] == row["pipeline"]), None)
            row["ratio"] = row["rps"] / d["rps"] if d and d["rps"] and row["rps"] else None
    return runs, rows


def print_mix_table(rows: list[dict[str, Any]]) -> None:
    head = ["scenario", "target", "ops/s", "ratio", "p50/p99/p99.9 ms", "verified", "mismatches", "GET hit rate",
            "proxy CPU-s per M ops", "loadgen CPU"]
    body = [[r["scenario"], r["target"], fmt(r["rps"], ",.0f"), fmt(r.get("ratio"), ".2f"), lat3(r, ""),
             f'{r["verified"]:,}', str(r["mismatches"]), fmt(r["hit_rate"], ".1%"),
             fmt(r["proxy_cpu_s_per_mops"], ".1f"), fmt(r["loadgen_cpu_util"], ".0%")] for r in rows]
    print_grid(head, body)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=parse_addr, action="append", default=[], metavar="HOST:PORT",
                    help="use this existing cluster (repeatable) instead of starting a local 3+3 one")
    ap.add_argument("--proxy", type=parse_addr, metavar="HOST:PORT",
                    help="benchmark an already running proxy instead of starting rproxy")
    ap.add_argument("--proxy-pid", type=int, help="pid of the --proxy process, to measure its CPU time and RSS")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--fanout", action="store_true",
                      help="run only the multi-key fan-out scenarios (GET x1, MGET x10, MGET x100, MSET x10 "
                           "at -P 1 and -P 16), through the proxy only")
    mode.add_argument("--workers-scaling", action="store_true",
                      help="GET -P 16 and -P 1 through rproxy --workers 1 and --workers 2 (interleaved)")
    mode.add_argument("--connections", action="store_true",
                      help="GET -P 1 at 1, 10, 100, 1000, 5000 clients, proxy vs direct")
    mode.add_argument("--idle", action="store_true",
                      help="open --idle-conns idle connections to the proxy; proxy RSS per connection")
    mode.add_argument("--resp3", action="store_true",
                      help="GET/SET -P 16/-P 1 through rproxy from RESP2 and RESP3 clients (-3), interleaved")
    mode.add_argument("--mix", action="store_true",
                      help="loadgen.py mix (80%% GET / 20%% SET, 64 B-4 KiB, verified replies), proxy vs direct")
    ap.add_argument("--requests", type=int, help="requests per -P 16 run (default 600000; --quick 200000; "
                                                  "--fanout: divided by the keys per command)")
    ap.add_argument("--requests-p1", type=int, help="requests per -P 1 run (default: --requests / 4)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds; medians are reported (default 3; --quick 1)")
    ap.add_argument("--clients", type=int, default=50, help="redis-benchmark -c, loadgen connections (default 50)")
    ap.add_argument("--keyspace", type=int, default=100000, help="redis-benchmark -r (default 100000)")
    ap.add_argument("--warmup", type=int, help="one-off -t set -P 16 requests per target before round 1 "
                                               "so GETs hit existing keys (default 3 x keyspace; --quick 1 x); "
                                               "--fanout: MGET x10 -P 16 requests (default --requests / 10)")
    ap.add_argument("--threads", type=int, default=0, help="pass --threads N to every redis-benchmark "
                    "(default: unset, i.e. --cluster uses one thread per master, proxy runs use one)")
    ap.add_argument("--conn-levels", type=lambda t: [int(x) for x in t.split(",")], default=[1, 10, 100, 1000, 5000],
                    metavar="N,N,...", help="--connections: client counts (default 1,10,100,1000,5000)")
    ap.add_argument("--conn-requests", type=int, help="--connections: requests per run, at least 20 x clients "
                                                      "(default 100000; --quick 20000)")
    ap.add_argument("--idle-conns", type=int, default=10000, help="--idle: connections (default 10000)")
    ap.add_argument("--mix-duration", type=float, help="--mix: seconds per loadgen run (default 10; --quick 4)")
    ap.add_argument("--mix-pipelines", type=lambda t: [int(x) for x in t.split(",")], default=[1, 16],
                    metavar="P,P", help="--mix: pipeline depths (default 1,16)")
    ap.add_argument("--mix-proxy-only", action="store_true", help="--mix: skip the direct (cluster-routed) runs")
    ap.add_argument("--run-timeout", type=float, default=300, help="seconds per redis-benchmark run (default 300)")
    ap.add_argument("--redis-benchmark", default="redis-benchmark", help="redis-benchmark binary")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write raw and median results as JSON")
    ap.add_argument("--charts", type=Path, metavar="DIR", help="write PNG charts here (needs matplotlib)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, small N (~30 s)")
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.requests = args.requests or (200000 if args.quick else 600000)
    args.requests_p1 = args.requests_p1 or max(args.requests // 4, args.clients)
    args.conn_requests = args.conn_requests or (20000 if args.quick else 100000)
    args.mix_duration = args.mix_duration or (4.0 if args.quick else 10.0)
    if args.warmup is None:
        args.warmup = args.requests // 10 if args.fanout else args.keyspace * (1 if args.quick else 3)

    if shutil.which(args.redis_benchmark) is None:
        raise RuntimeError(f"{args.redis_benchmark} not found (Debian/Ubuntu: apt-get install redis-tools)")
    if args.proxy_pid and not Path(f"/proc/{args.proxy_pid}/stat").exists():
        raise RuntimeError(f"--proxy-pid {args.proxy_pid}: no such process")
    if args.workers_scaling and args.proxy:
        raise RuntimeError("--workers-scaling starts its own rproxy processes; it cannot use --proxy")
    if args.charts:
        from charts import require_matplotlib
        require_matplotlib()
    # Children (local cluster, rproxy, redis-benchmark) inherit the raised open-files limit.
    nofile = raise_nofile()
    # Turn SIGTERM into an exception so the finally blocks below stop everything.
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    cluster: Any = None
    proxies: list[Proxy] = []
    layout: dict[str, Any] = {}
    out: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    proxy_addr: Optional[Addr] = None
    try:
        if args.seed:
            seeds = args.seed
        else:
            from rproxy.localcluster import LocalCluster
            log("starting local cluster: 3 masters + 3 replicas")
            cluster = LocalCluster(masters=3, replicas=1, node_timeout_ms=2000, log=log)
            cluster.start()
            seeds = list(cluster.seeds)
        if args.workers_scaling:
            procs = {}
            for name, w in (("w1", 1), ("w2", 2)):
                proxies.append(Proxy(seeds, workers=w))
                log(f"starting rproxy ({name}): {' '.join(proxies[-1].cmd)}")
                proxies[-1].wait_ready()
                procs[name] = proxies[-1]
            proxy_addr = procs["w1"].addr
        elif args.proxy:
            proxy_addr, proxy_pid = args.proxy, args.proxy_pid
            proxy_alive = lambda: True
            if not wait_ping(proxy_addr, 5):
                raise RuntimeError(f"--proxy {proxy_addr[0]}:{proxy_addr[1]} does not answer PING")
        else:
            env = None
            if args.idle or args.connections:  # room for every client (default limits.max_clients 10000)
                env = {"RPROXY_LIMITS_MAX_CLIENTS": str(max(10000, args.idle_conns + 1000, *args.conn_levels) + 1000)}
            proxy = Proxy(seeds, env=env)
            proxies.append(proxy)
            log(f"starting rproxy: {' '.join(proxy.cmd)}" + (f" (env {env})" if env else ""))
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
        elif args.workers_scaling:
            log(f"workers scaling: {args.rounds} round(s), -P 16 n={args.requests}, -P 1 n={args.requests_p1}, "
                f"-c {args.clients}; w1 {procs['w1'].addr[1]}, w2 {procs['w2'].addr[1]}")
            runs, rows = run_workers_scaling(args, procs)
        elif args.connections:
            levels, notes = conn_levels(args)
            for n in notes:
                log(n)
            log(f"connection scaling: GET -P 1 at {levels} clients, {args.rounds} round(s), "
                f"n=max({args.conn_requests}, 20 x clients); RLIMIT_NOFILE {nofile[0]}/{nofile[1]}")
            runs, rows = run_connections(args, seeds, proxy_addr, proxy_pid, proxy_alive, levels)
        elif args.idle:
            log(f"idle: {args.idle_conns} connections to {proxy_addr[0]}:{proxy_addr[1]}; "
                f"RLIMIT_NOFILE {nofile[0]}/{nofile[1]}")
            out["idle"] = run_idle(args, proxy_addr, proxy_pid)
            if not proxy_alive():
                raise RuntimeError("rproxy exited during --idle:\n" + (proxies[0].tail() if proxies else ""))
        elif args.mix:
            runs, rows = run_mix(args, seeds, proxy_addr, proxy_pid, proxy_alive)
        elif args.resp3:
            log(f"RESP2 vs RESP3 clients through {proxy_addr[0]}:{proxy_addr[1]}: {args.rounds} round(s), "
                f"-P 16 n={args.requests}, -P 1 n={args.requests_p1}, -c {args.clients}")
            runs, rows = run_resp3(args, proxy_addr, proxy_pid, proxy_alive)
        else:
            log(f"direct: --cluster via {seeds[0][0]}:{seeds[0][1]}; proxy: {proxy_addr[0]}:{proxy_addr[1]}; "
                f"{args.rounds} round(s), -P 16 n={args.requests}, -P 1 n={args.requests_p1}, -c {args.clients}")
            runs = run_all(args, seeds, proxy_addr, proxy_pid, proxy_alive)
    finally:
        for proxy in proxies:
            log(f"stopping rproxy (port {proxy.port})")
            proxy.stop()
        if cluster is not None:
            log("stopping local cluster")
            cluster.stop()

    failed = [r for r in runs if not r["ok"]]
    elapsed = time.monotonic() - started
    print()
    charts: list[Path] = []
    tail = f"{len(runs)} runs, {len(failed)} failed, {elapsed:.0f} s total; medians over {args.rounds} round(s)"
    if args.fanout:
        fanout_rows = summarize_fanout(runs, layout)
        print_fanout_table(fanout_rows)
        print(f"\n{tail}; proxy only; keys fan:0..fan:<keys-1> (no hash tag); 'vs GET' = median of per-round "
              f"ratios to GET x1 at the same -P")
        out["fanout_medians"] = fanout_rows
        out["fanout_layout"] = layout
    elif args.resp3:
        print_resp3_table(rows)
        print(f"\n{tail}; RESP3/RESP2 = median of per-round ratios; one rproxy, same workload")
        out["resp3_medians"] = rows
    elif args.workers_scaling:
        print_workers_table(rows)
        print(f"\n{tail}; ratio 2/1 = median of per-round (2 workers ops/s / 1 worker ops/s); "
              f"{len(os.sched_getaffinity(0))} cores shared with the cluster and redis-benchmark")
        out["workers_medians"] = rows
        if args.charts:
            from charts import workers_chart
            charts += workers_chart(rows, args.charts)
    elif args.connections:
        print_connections_table(rows)
        print(f"\n{tail}; ratio = median of per-round proxy/direct")
        for n in notes:
            print(n)
        out["connections_medians"] = rows
        out["notes"] = notes
        if args.charts:
            from charts import connections_chart
            charts += connections_chart(rows, args.charts)
    elif args.idle:
        print_idle(out["idle"])
        print(f"\n{elapsed:.0f} s total; RSS = VmRSS of the proxy process and its children (/proc/<pid>/status)")
        if out["idle"]["connected"] < out["idle"]["requested"] or out["idle"]["ping_failed"]:
            failed.append({"error": "not every idle connection was accepted and served"})
    elif args.mix:
        print_mix_table(rows)
        print(f"\n{tail}; loadgen.py: {args.clients} connections, 80% GET / 20% SET, values 64-4096 B, "
              f"200 keys per connection (no hash tag); direct = loadgen --cluster (one socket per master "
              f"per connection); every reply checked")
        out["mix_medians"] = rows
        if args.charts:
            from charts import mix_chart
            charts += mix_chart(rows, args.charts)
    else:
        rows = summarize(runs)
        print_table(rows)
        print(f"\n{tail}; ratio = median of per-round (proxy ops/s / direct ops/s), each pair run back-to-back; "
              f"p99.9 = redis-benchmark percentile tick at or above 99.9 %")
        if args.charts:
            from charts import main_charts
            charts += main_charts(rows, args.charts)
    for r in failed:
        if "round" not in r:
            print(f"FAILED: {r['error']}")
            continue
        print(f"FAILED round {r.get('round')} {r.get('scenario', r.get('clients'))} {r.get('target')}: "
              f"{r['error']}\n  {r.get('cmd')}")
    for c in charts:
        print(f"wrote {c}")
    if args.json:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        out = {"config": config, "seeds": seeds, "proxy": proxy_addr, "elapsed_s": round(elapsed, 1),
               "medians": rows if not args.fanout else [], **out, "charts": [str(c) for c in charts]}
        args.json.write_text(json.dumps({**out, "runs": runs}, indent=2))
        print(f"wrote {args.json}")
    return 1 if failed else 0


def run_main(main: Callable[[], int]) -> None:
    """The command-line entry of bench.py and ab.py: exit 0 (ok), 1 (a run failed),
    2 (set-up failed: RuntimeError), 130 (interrupted)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
    except RuntimeError as exc:
        log(f"error: {exc}")
        sys.exit(2)


if __name__ == "__main__":
    run_main(main)
