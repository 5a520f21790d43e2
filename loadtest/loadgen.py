#!/usr/bin/env python3
"""Verified-reply load generator (trio): what redis-benchmark cannot do.

N connections, each sends batches of D pipelined commands from a mix (default 80 % GET,
20 % SET) with values of random size (default 64 B .. 4 KiB).  Each connection owns its keys
(``mix:<conn>:<i>``, no hash tag, so they spread over all slots), so it knows what every GET
must return: every reply is checked against the expected value and mismatches are counted.
Latency of one command = time from sending its batch to receiving its reply (as in
redis-benchmark -P); all samples are kept, the result has p50/p99/p99.9/max and a log-bucket
histogram.

    python loadtest/loadgen.py --target 127.0.0.1:7777 --connections 50 --pipeline 16 --duration 10
    python loadtest/loadgen.py --target 127.0.0.1:7000 --cluster ...   # straight at a cluster:
        # routes each key to its master from CLUSTER SLOTS, one socket per master per connection

Progress goes to stderr once per second; the result is one JSON object on stdout (or --json FILE).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import resource
import sys
import time
from array import array
from pathlib import Path
from typing import Any, Optional

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from rproxy.core.resp import encode_command  # noqa: E402
from rproxy.core.slots import key_slot  # noqa: E402


class Err(str):
    """An error reply."""


class Conn:
    """One RESP2 connection with a reply reader."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.pos = 0

    @classmethod
    async def open(cls, host: str, port: int) -> "Conn":
        return cls(await trio.open_tcp_stream(host, port))

    async def _fill(self) -> None:
        if self.pos == len(self.buf):
            self.buf.clear()
            self.pos = 0
        elif self.pos > 1 << 16:
            del self.buf[:self.pos]
            self.pos = 0
        data = await self.stream.receive_some(1 << 18)
        if not data:
            raise EOFError("connection closed by the server")
        self.buf += data

    async def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n", self.pos)
            if i >= 0:
                line = bytes(self.buf[self.pos:i])
                self.pos = i + 2
                return line
            await self._fill()

    async def reply(self) -> Any:
        line = await self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return Err(rest.decode(errors="replace"))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) - self.pos < n + 2:
                await self._fill()
            data = bytes(self.buf[self.pos:self.pos + n])
            self.pos += n + 2
            return data
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [await self.reply() for _ in range(n)]
        raise ValueError(f"bad RESP line {line[:80]!r}")

    async def call(self, *args: bytes) -> Any:
        await self.stream.send_all(encode_command(list(args)))
        return await self.reply()


def value_for(key: bytes, version: int, size: int) -> bytes:
    head = b"%s:%d:" % (key, version)
    return head + b"x" * max(0, size - len(head))


class Stats:
    def __init__(self) -> None:
        self.lat = array("d")
        self.ops = self.gets = self.sets = self.hits = self.misses = self.mismatches = self.errors = 0
        self.examples: list[str] = []

    def bad(self, what: str) -> None:
        self.mismatches += 1
        if len(self.examples) < 5:
            self.examples.append(what)


async def worker(cid: int, args: argparse.Namespace, route: Optional[list[tuple[str, int]]],
                 stats: Stats, start: trio.Event, deadline: list[float], ready: list[int]) -> None:
    rnd = random.Random(args.seed * 100003 + cid)
    keys = [b"mix:%d:%d" % (cid, i) for i in range(args.keys_per_conn)]
    state: dict[bytes, tuple[int, int]] = {}  # key -> (version, size) last SET by this connection
    conns: dict[Any, Conn] = {}

    async def conn_for(key: bytes) -> tuple[Any, Conn]:
        addr = route[key_slot(key)] if route else args.target
        if addr not in conns:
            conns[addr] = await Conn.open(*addr)
        return addr, conns[addr]

    try:
        # Populate (not measured): one SET per key, pipelined per target, every reply must be OK.
        groups: dict[Any, list[bytes]] = {}
        for k in keys:
            addr, _ = await conn_for(k)
            size = rnd.randint(args.min_size, args.max_size)
            state[k] = (0, size)
            groups.setdefault(addr, []).append(encode_command([b"SET", k, value_for(k, 0, size)]))
        for addr, cmds in groups.items():
            await conns[addr].stream.send_all(b"".join(cmds))
        for addr, cmds in groups.items():
            for _ in cmds:
                r = await conns[addr].reply()
                if r != "OK":
                    raise RuntimeError(f"populate SET got {r!r}")
        ready[0] += 1
        await start.wait()
        while time.monotonic() < deadline[0]:
            batch: dict[Any, list[tuple[bytes, Any, bool, bytes]]] = {}
            for _ in range(args.pipeline):
                k = keys[rnd.randrange(len(keys))]
                addr, _c = await conn_for(k)
                if rnd.random() < args.read_ratio:
                    ver, size = state[k]
                    batch.setdefault(addr, []).append((encode_command([b"GET", k]), value_for(k, ver, size), True, k))
                else:
                    ver = state[k][0] + 1
                    size = rnd.randint(args.min_size, args.max_size)
                    state[k] = (ver, size)
                    batch.setdefault(addr, []).append((encode_command([b"SET", k, value_for(k, ver, size)]), "OK", False, k))
            t0 = time.perf_counter()
            for addr, items in batch.items():
                await conns[addr].stream.send_all(b"".join(c for c, _, _, _ in items))
            for addr, items in batch.items():
                conn = conns[addr]
                for _cmd, want, is_get, k in items:
                    got = await conn.reply()
                    stats.lat.append(time.perf_counter() - t0)
                    stats.ops += 1
                    if is_get:
                        stats.gets += 1
                        if got is None:
                            stats.misses += 1
                        else:
                            stats.hits += 1
                    else:
                        stats.sets += 1
                    if isinstance(got, Err):
                        stats.errors += 1
                        stats.bad(f"{k.decode()}: error {got}")
                    elif got != want:
                        stats.bad(f"{k.decode()}: got {str(got)[:40]!r}, want {str(want)[:40]!r}")
    finally:
        for c in conns.values():
            await c.stream.aclose()


async def cluster_route(seed: tuple[str, int]) -> list[tuple[str, int]]:
    conn = await Conn.open(*seed)
    try:
        rows = await conn.call(b"CLUSTER", b"SLOTS")
    finally:
        await conn.stream.aclose()
    if isinstance(rows, Err):
        raise RuntimeError(f"CLUSTER SLOTS: {rows}")
    route: list[Any] = [None] * 16384
    for row in rows:
        host = row[2][0].decode() or seed[0]
        for s in range(row[0], row[1] + 1):
            route[s] = (host, row[2][1])
    if None in route:
        raise RuntimeError("cluster has unassigned slots")
    return route


def percentile(sorted_vals: array, q: float) -> Optional[float]:
    if not sorted_vals:
        return None
    return sorted_vals[min(len(sorted_vals) - 1, max(0, math.ceil(q * len(sorted_vals)) - 1))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    route = await cluster_route(args.target) if args.cluster else None
    stats = Stats()
    start = trio.Event()
    deadline = [math.inf]
    ready = [0]
    t_begin = time.monotonic()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    async with trio.open_nursery() as nursery:
        for cid in range(args.connections):
            nursery.start_soon(worker, cid, args, route, stats, start, deadline, ready)
        while ready[0] < args.connections:
            await trio.sleep(0.05)
            if time.monotonic() - t_begin > 120:
                raise RuntimeError(f"only {ready[0]}/{args.connections} connections populated in 120 s")
        populate_s = time.monotonic() - t_begin
        t0 = time.monotonic()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        deadline[0] = t0 + args.duration
        start.set()
        last = 0
        while time.monotonic() < deadline[0]:
            await trio.sleep(min(1.0, max(0.0, deadline[0] - time.monotonic())))
            if not args.quiet:
                el = time.monotonic() - t0
                print(f"\r  mix {el:4.1f}/{args.duration:.0f} s  {stats.ops:>9,} ops  "
                      f"{(stats.ops - last):>8,} ops/s  mismatches {stats.mismatches}",
                      end="", file=sys.stderr, flush=True)
                last = stats.ops
    elapsed = time.monotonic() - t0
    ru2 = resource.getrusage(resource.RUSAGE_SELF)
    if not args.quiet:
        print(file=sys.stderr)
    lat = array("d", sorted(stats.lat))
    ms = lambda v: None if v is None else round(v * 1000, 4)
    # log buckets: upper bounds 10 us * 1.25^i
    hist: list[list[float]] = []
    bound = 1e-5
    for v in lat:
        while v > bound:
            bound *= 1.25
        if hist and hist[-1][0] == ms(bound):
            hist[-1][1] += 1
        else:
            hist.append([ms(bound), 1])
    all_keys = [b"mix:%d:%d" % (c, i) for c in range(args.connections) for i in range(args.keys_per_conn)]
    slots = {key_slot(k) for k in all_keys}
    return {
        "target": f"{args.target[0]}:{args.target[1]}", "cluster": args.cluster,
        "connections": args.connections, "pipeline": args.pipeline, "read_ratio": args.read_ratio,
        "value_bytes": [args.min_size, args.max_size], "keys": len(all_keys), "key_slots": len(slots),
        "masters": len(set(route)) if route else None,
        "duration_s": round(elapsed, 3), "populate_s": round(populate_s, 3),
        "ops": stats.ops, "rps": stats.ops / elapsed if elapsed else None,
        "gets": stats.gets, "sets": stats.sets, "hits": stats.hits, "misses": stats.misses,
        "verified": stats.ops - stats.mismatches, "mismatches": stats.mismatches, "errors": stats.errors,
        "mismatch_examples": stats.examples,
        "avg_ms": ms(sum(lat) / len(lat)) if lat else None,
        "p50_ms": ms(percentile(lat, 0.50)), "p99_ms": ms(percentile(lat, 0.99)),
        "p999_ms": ms(percentile(lat, 0.999)), "max_ms": ms(lat[-1] if lat else None),
        "loadgen_cpu_util": round((ru2.ru_utime + ru2.ru_stime - ru1.ru_utime - ru1.ru_stime) / elapsed, 3)
        if elapsed else None,
        "loadgen_populate_cpu_s": round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 3),
        "histogram_ms": hist,
    }


def parse_addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=parse_addr, required=True, metavar="HOST:PORT")
    ap.add_argument("--cluster", action="store_true", help="target is a cluster node: route by CLUSTER SLOTS")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--pipeline", type=int, default=1)
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds (after populating)")
    ap.add_argument("--read-ratio", type=float, default=0.8)
    ap.add_argument("--min-size", type=int, default=64)
    ap.add_argument("--max-size", type=int, default=4096)
    ap.add_argument("--keys-per-conn", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write the result here instead of stdout")
    ap.add_argument("--quiet", action="store_true", help="no progress line")
    args = ap.parse_args(argv)
    result = trio.run(run, args)
    text = json.dumps(result)
    if args.json:
        args.json.write_text(text)
    else:
        print(text)
    return 1 if result["mismatches"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
