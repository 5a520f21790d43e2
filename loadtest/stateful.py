#!/usr/bin/env python3
"""rproxy stateful benchmark: transactions (MULTI/EXEC, WATCH) and pub/sub fan-out, through the
proxy, straight at the cluster and against one standalone redis-server, interleaved in one run.
See loadtest/README.md, "stateful.py".

    python loadtest/stateful.py                      # 3 rounds, ~5 min on 2 cores
    python loadtest/stateful.py --quick              # 1 round, shorter runs, ~1 min
    python loadtest/stateful.py --json FILE          # also save every raw run and the medians

Starts a local 3 masters + 3 replicas cluster (rproxy.localcluster), rproxy (bench.py's Proxy)
and ``redis-server --port P --save "" --appendonly no`` (the "one Redis" baseline); stops them all.

1. Transactions: --clients connections, each with its own hash tag {t:<i>}, send blocks of
   ``MULTI; INCR {t:i}:k; SET {t:i}:v x; EXEC`` (--tx-pipelines blocks per write, closed loop)
   for --duration seconds; every reply is checked (INCR values must count up by one). Targets:
   the proxy, the cluster directly (each connection to the master owning its tag's slot, from
   CLUSTER SLOTS) and one Redis. WATCH variant: ``WATCH k; GET k`` then ``MULTI; SET k v+1;
   EXEC`` per transaction, one client per tag {w:<i>} (no conflicts expected; GET must return
   what the client set last). "MULTI/EXEC 3 slots": blocks of ``MULTI; INCR {a}:k; INCR {b}:k;
   INCR {c}:k; EXEC``, each client's three tags {t3:<i>:<x>} in slots of three different masters
   (the three values must be equal and count up by one); rproxy runs with
   ``--cross-slot-transactions emulate`` (one block per slot); proxy and one Redis only (the
   cluster refuses it: CROSSSLOT), compared with the single-slot MULTI/EXEC ("vs 1-slot").
2. Pub/sub fan-out: --subscribers sockets SUBSCRIBE one channel through the proxy; the proxy's
   RSS before they connect and after (settled) gives KiB per subscriber. A publisher sends
   --messages PUBLISHes --interval-ms apart (payload: sequence number and send timestamp); for
   each message, the time until ALL subscribers got it. Then --burst PUBLISHes as fast as
   possible: time until every subscriber got all of them. The same against one Redis.

The load generator is this process: one epoll loop over raw non-blocking sockets (no asyncio,
no parsing beyond what checking the replies needs). Its CPU use is reported per run
(``client CPU``): near 100 % means the generator, not the target, set the pace.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # loadtest/bench.py (puts the repo root on sys.path)
from bench import Addr, Proxy, fmt, free_port, log, print_grid, proc_cpu_seconds, proc_rss_kib, settle_rss

from rproxy.core.slots import key_slot  # noqa: E402

TARGETS = ("proxy", "direct", "redis")  # redis = one standalone redis-server
TARGET_LABEL = {"proxy": "proxy", "direct": "direct (cluster)", "redis": "one Redis"}
CHANNEL = b"rproxy-stateful-fanout"
EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
EPOLLERRS = select.EPOLLHUP | select.EPOLLERR


def enc(*args: bytes | str) -> bytes:
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def pct(values: Any, q: float) -> Optional[float]:
    """Nearest-rank percentile (q in 0..100) of values; None if empty."""
    vals = sorted(values)
    if not vals:
        return None
    k = max(0, min(len(vals) - 1, int(round(q / 100 * len(vals) + 0.5)) - 1))
    return vals[k]


def median(values: list[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def code_version() -> dict[str, Any]:
    """This checkout's git commit and whether tracked files differ from it (the proxy runs it)."""
    git = ["git", "-C", str(bench.REPO)]
    try:
        commit = subprocess.run(git + ["log", "-1", "--format=%h %s"], capture_output=True, text=True,
                                timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=30, check=True).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "modified": None}
    return {"commit": commit, "modified": [line[3:] for line in dirty if line.strip()]}


def machine_load() -> dict[str, Any]:
    try:
        up = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        up = ""
    return {"uptime": up, "loadavg": list(os.getloadavg()), "cores": len(os.sched_getaffinity(0))}


# ---------------------------------------------------------------- a minimal epoll client loop

class Conn:
    """A non-blocking socket in the Loop; subclasses implement on_data."""

    def __init__(self, loop: "Loop", addr: Addr) -> None:
        self.loop = loop
        self.sock = socket.create_connection(addr, timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.fd = self.sock.fileno()
        self.out = b""
        self.closed = False
        loop.add(self)

    def send(self, data: bytes) -> None:
        if self.out:
            self.out += data
            return
        try:
            n = self.sock.send(data)
        except BlockingIOError:
            n = 0
        if n < len(data):
            self.out = data[n:]
            self.loop.ep.modify(self.fd, EPOLLIN | EPOLLOUT)

    def flush(self) -> None:
        try:
            n = self.sock.send(self.out)
        except BlockingIOError:
            return
        self.out = self.out[n:]
        if not self.out:
            self.loop.ep.modify(self.fd, EPOLLIN)

    def on_data(self, data: bytes, now: float) -> None:
        raise NotImplementedError

    def on_close(self, why: str) -> None:
        self.closed = True

    def close(self) -> None:
        self.loop.remove(self)
        self.sock.close()


class Loop:
    """One epoll over many sockets: recv on readable, deliver to conn.on_data with a timestamp."""

    def __init__(self, bufsize: int = 262144) -> None:
        self.ep = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.bufsize = bufsize

    def add(self, conn: Conn) -> None:
        self.conns[conn.fd] = conn
        self.ep.register(conn.fd, EPOLLIN)

    def remove(self, conn: Conn) -> None:
        if self.conns.pop(conn.fd, None) is not None:
            try:
                self.ep.unregister(conn.fd)
            except OSError:
                pass

    def poll(self, timeout: float) -> None:
        conns, bufsize, clock = self.conns, self.bufsize, time.perf_counter
        for fd, ev in self.ep.poll(timeout):
            conn = conns.get(fd)
            if conn is None:
                continue
            if ev & EPOLLOUT:
                conn.flush()
            if ev & (EPOLLIN | EPOLLERRS):
                try:
                    data = conn.sock.recv(bufsize)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self.remove(conn)
                    conn.on_close(repr(exc))
                    continue
                if not data:
                    self.remove(conn)
                    conn.on_close("connection closed by the server")
                    continue
                conn.on_data(data, clock())

    def run_until(self, done: Callable[[], bool], timeout: float, tick: float = 0.05) -> bool:
        deadline = time.perf_counter() + timeout
        while not done():
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            self.poll(min(tick, left))
        return True

    def close(self) -> None:
        for conn in list(self.conns.values()):
            conn.close()
        self.ep.close()


# ---------------------------------------------------------------- transactions

class TxRun:
    """Shared state of one transaction run."""

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.deadline = float("inf")
        self.active = 0
        self.finished_at = 0.0
        self.latencies = array("d")  # seconds per batch (MULTI blocks) or per transaction (WATCH)
        self.errors: list[str] = []
        self.conflicts = 0   # WATCH: EXEC answered nil
        self.mismatches = 0  # a value that is not what this client wrote

    def error(self, conn: Conn, text: str) -> None:
        if len(self.errors) < 10:
            self.errors.append(text)
        self.finish(conn, time.perf_counter())

    def finish(self, conn: "TxBase", now: float) -> None:
        if not conn.finished:
            conn.finished = True
            self.active -= 1
            self.finished_at = max(self.finished_at, now)


class TxBase(Conn):
    def __init__(self, loop: Loop, addr: Addr, run: TxRun) -> None:
        super().__init__(loop, addr)
        self.run = run
        self.buf = b""
        self.done = 0
        self.finished = False
        self.t_sent = 0.0

    def on_close(self, why: str) -> None:
        super().on_close(why)
        self.run.error(self, why)

    @staticmethod
    def has_error(buf: bytes) -> bool:
        return buf[:1] == b"-" or b"\n-" in buf


TX_REPLY = re.compile(rb"\+OK\r\n\+QUEUED\r\n\+QUEUED\r\n\*2\r\n:(\d+)\r\n\+OK\r\n")
TX_FIXED = len(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:\r\n+OK\r\n")


class BlockLoop(TxBase):
    """A closed loop of ``self.block`` (``depth`` pipelined transactions) until the deadline;
    ``check`` validates each batch of replies (``self.lines`` CRLFs in all)."""

    depth: int
    block: bytes
    lines: int

    def start(self, now: float) -> None:
        self.t_sent = now
        self.send(self.block)

    def check(self, buf: bytes) -> bool:
        raise NotImplementedError

    def on_data(self, data: bytes, now: float) -> None:
        buf = self.buf + data if self.buf else data
        if self.has_error(buf):
            self.run.error(self, buf[:200].decode(errors="replace"))
            return
        if buf.count(b"\r\n") < self.lines:
            self.buf = buf
            return
        self.buf = b""
        if not self.check(buf):
            self.run.error(self, f"unexpected reply: {buf[:200]!r}")
            return
        self.done += self.depth
        self.run.latencies.append(now - self.t_sent)
        if now < self.run.deadline:
            self.t_sent = now
            self.send(self.block)
        else:
            self.run.finish(self, now)


class TxClient(BlockLoop):
    """Closed loop of ``depth`` pipelined blocks MULTI; INCR {tag}:k; SET {tag}:v x; EXEC."""

    def __init__(self, loop: Loop, addr: Addr, run: TxRun, tag: str, depth: int) -> None:
        super().__init__(loop, addr, run)
        self.depth = depth
        self.block = (enc("MULTI") + enc("INCR", f"{{{tag}}}:k") + enc("SET", f"{{{tag}}}:v", "x")
                      + enc("EXEC")) * depth
        self.lines = 6 * depth
        self.last: Optional[int] = None

    def check(self, buf: bytes) -> bool:
        vals = TX_REPLY.findall(buf)
        if len(vals) != self.depth or len(buf) != TX_FIXED * self.depth + sum(map(len, vals)):
            return False
        first = int(vals[0])
        if (self.last is not None and first != self.last + 1) or int(vals[-1]) != first + self.depth - 1:
            self.run.mismatches += 1
        self.last = int(vals[-1])
        return True


TX3_REPLY = re.compile(rb"\+OK\r\n\+QUEUED\r\n\+QUEUED\r\n\+QUEUED\r\n\*3\r\n:(\d+)\r\n:(\d+)\r\n:(\d+)\r\n")
TX3_FIXED = len(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n:\r\n:\r\n:\r\n")


class Tx3Client(BlockLoop):
    """Closed loop of ``depth`` pipelined blocks MULTI; INCR {a}:k; INCR {b}:k; INCR {c}:k; EXEC,
    the three tags in slots of three different masters (through rproxy: a transaction over
    several slots, run as one block per slot with ``--cross-slot-transactions emulate``). The
    three values of a block must be equal and count up by one per block."""

    def __init__(self, loop: Loop, addr: Addr, run: TxRun, tags: tuple[str, str, str], depth: int) -> None:
        super().__init__(loop, addr, run)
        self.depth = depth
        self.block = (enc("MULTI") + b"".join(enc("INCR", f"{{{t}}}:k") for t in tags) + enc("EXEC")) * depth
        self.lines = 8 * depth
        self.last: Optional[int] = None

    def check(self, buf: bytes) -> bool:
        vals = TX3_REPLY.findall(buf)
        if len(vals) != self.depth or len(buf) != TX3_FIXED * self.depth + sum(
                len(a) + len(b) + len(c) for a, b, c in vals):
            return False
        expect = self.last
        for a, b, c in vals:
            if not a == b == c or (expect is not None and int(a) != expect + 1):
                self.run.mismatches += 1
                break
            expect = int(a)
        self.last = int(vals[-1][0])
        return True


WATCH_OK = b"+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n"
WATCH_NIL = b"+OK\r\n+QUEUED\r\n*-1\r\n"


class WatchClient(TxBase):
    """Optimistic loop: WATCH k; GET k -> MULTI; SET k <value+1>; EXEC (two round trips)."""

    def __init__(self, loop: Loop, addr: Addr, run: TxRun, tag: str) -> None:
        super().__init__(loop, addr, run)
        self.key = f"{{{tag}}}:k".encode()
        self.watch_get = enc(b"WATCH", self.key) + enc(b"GET", self.key)
        self.state = 0
        self.expected: Optional[int] = None
        self.new = 0

    def start(self, now: float) -> None:
        self.t_sent = now
        self.state = 0
        self.send(self.watch_get)

    def on_data(self, data: bytes, now: float) -> None:
        buf = self.buf + data if self.buf else data
        if self.has_error(buf):
            self.run.error(self, buf[:200].decode(errors="replace"))
            return
        if self.state == 0:
            if len(buf) < 10:
                self.buf = buf
                return
            if buf[:5] != b"+OK\r\n":
                self.run.error(self, f"unexpected WATCH reply: {buf[:200]!r}")
                return
            rest = buf[5:]
            if rest == b"$-1\r\n":
                value = 0
            elif rest[:1] == b"$":
                i = rest.find(b"\r\n")
                if i < 0:
                    self.buf = buf
                    return
                n = int(rest[1:i])
                if len(rest) < i + 4 + n:
                    self.buf = buf
                    return
                if len(rest) != i + 4 + n:
                    self.run.error(self, f"unexpected GET reply: {buf[:200]!r}")
                    return
                value = int(rest[i + 2:i + 2 + n])
            else:
                self.run.error(self, f"unexpected GET reply: {buf[:200]!r}")
                return
            self.buf = b""
            if self.expected is not None and value != self.expected:
                self.run.mismatches += 1
            self.new = value + 1
            self.state = 1
            self.send(enc(b"MULTI") + enc(b"SET", self.key, str(self.new)) + enc(b"EXEC"))
            return
        if buf == WATCH_OK:
            self.done += 1
            self.expected = self.new
            self.run.latencies.append(now - self.t_sent)
        elif buf == WATCH_NIL:
            self.run.conflicts += 1
            self.expected = None
        elif WATCH_OK.startswith(buf) or WATCH_NIL.startswith(buf):
            self.buf = buf
            return
        else:
            self.run.error(self, f"unexpected EXEC reply: {buf[:200]!r}")
            return
        self.buf = b""
        if now < self.run.deadline:
            self.start(now)
        else:
            self.run.finish(self, now)


class CpuWatch:
    """CPU seconds of some processes (and this one) over an interval."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids

    def read(self) -> dict[str, float]:
        out = {name: sum(proc_cpu_seconds(p) for p in pids) for name, pids in self.pids.items()}
        out["client"] = time.process_time()
        return out

    @staticmethod
    def delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        return {k: b[k] - a[k] for k in a}


def run_tx(kind: str, depth: int, addrs: list[Addr], tags: list[Any], duration: float,
           cpu: CpuWatch) -> dict[str, Any]:
    """One transaction run: len(addrs) clients (client i to addrs[i], tag tags[i]; for
    "multi3" a triple of tags)."""
    loop = Loop(bufsize=65536)
    run = TxRun(duration)
    clients: list[TxBase] = []
    try:
        for addr, tag in zip(addrs, tags):
            clients.append(TxClient(loop, addr, run, tag, depth) if kind == "multi"
                           else Tx3Client(loop, addr, run, tag, depth) if kind == "multi3"
                           else WatchClient(loop, addr, run, tag))
        run.active = len(clients)
        c0 = cpu.read()
        t0 = time.perf_counter()
        run.deadline = t0 + duration
        for c in clients:
            c.start(t0)
        ok = loop.run_until(lambda: run.active <= 0, duration + 60)
        t1 = run.finished_at if ok and run.finished_at else time.perf_counter()
        c1 = cpu.read()
    finally:
        loop.close()
    wall = t1 - t0
    tx = sum(c.done for c in clients)
    d = CpuWatch.delta(c0, c1)
    lat = run.latencies
    res: dict[str, Any] = {
        "tx": tx, "wall_s": round(wall, 3), "tps": tx / wall if wall > 0 else None,
        "batch_p50_ms": (pct(lat, 50) or 0) * 1e3, "batch_p99_ms": (pct(lat, 99) or 0) * 1e3,
        "batches": len(lat), "errors": run.errors, "conflicts": run.conflicts, "mismatches": run.mismatches,
        "ok": not run.errors and ok and run.mismatches == 0,
        "client_cpu_util": d["client"] / wall if wall > 0 else None}
    if not ok:
        res["errors"].append(f"not finished {duration + 60:.0f} s after start")
    if "proxy" in d:
        res["proxy_cpu_s"] = d["proxy"]
        res["proxy_cpu_util"] = d["proxy"] / wall if wall > 0 else None
        res["proxy_cpu_s_per_1000_tx"] = d["proxy"] / tx * 1000 if tx else None
    res["server_cpu_util"] = d["servers"] / wall if wall > 0 else None
    return res


# ---------------------------------------------------------------- pub/sub fan-out

PAYLOAD_LEN = 28  # b"%08d:%019d" % (seq, send time in ns)
HEADER = b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n" % (len(CHANNEL), CHANNEL, PAYLOAD_LEN)
FRAME_LEN = len(HEADER) + PAYLOAD_LEN + 2
CONFIRM = b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n" % (len(CHANNEL), CHANNEL)
HL = len(HEADER)


def publish_cmd(seq: int) -> bytes:
    payload = b"%08d:%019d" % (seq, time.perf_counter_ns())
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(CHANNEL), CHANNEL, PAYLOAD_LEN, payload)


class Rig:
    """Shared state of the subscribers of one pub/sub run."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.confirmed = 0
        self.mode = "confirm"
        self.errors: list[str] = []
        self.closed = 0
        self.bad_frames = 0
        # latency phase
        self.counts: list[int] = []
        self.first: list[float] = []
        self.last: list[float] = []
        self.complete = 0
        # burst phase
        self.burst = 0
        self.burst_bytes = 0
        self.burst_done: list[float] = []

    def error(self, text: str) -> None:
        if len(self.errors) < 10:
            self.errors.append(text)


class Subscriber(Conn):
    def __init__(self, loop: Loop, addr: Addr, rig: Rig) -> None:
        super().__init__(loop, addr)
        self.rig = rig
        self.buf = b""
        self.got = 0
        self.burst_done = False

    def on_close(self, why: str) -> None:
        super().on_close(why)
        self.rig.closed += 1
        self.rig.error(f"subscriber closed: {why}")

    def on_data(self, data: bytes, now: float) -> None:
        rig = self.rig
        mode = rig.mode
        if mode == "lat":
            before = self.got
            self.got = got = before + len(data)
            s0, s1 = before // FRAME_LEN, got // FRAME_LEN
            if before % FRAME_LEN == 0 and len(data) >= FRAME_LEN and (
                    data[:HL] != HEADER or data[HL:HL + 8] != b"%08d" % s0):
                rig.bad_frames += 1
            if s1 > len(rig.counts):
                rig.bad_frames += 1
                s1 = len(rig.counts)
            counts, n = rig.counts, rig.n
            for seq in range(s0, s1):
                c = counts[seq] + 1
                counts[seq] = c
                if c == 1:
                    rig.first[seq] = now
                if c == n:
                    rig.last[seq] = now
                    rig.complete += 1
        elif mode == "burst":
            self.got = got = self.got + len(data)
            if got >= rig.burst_bytes and not self.burst_done:
                self.burst_done = True
                if got > rig.burst_bytes:
                    rig.bad_frames += 1
                elif len(data) >= FRAME_LEN:
                    tail = data[-FRAME_LEN:]
                    if tail[:HL] != HEADER or tail[HL:HL + 8] != b"%08d" % (rig.burst - 1):
                        rig.bad_frames += 1
                rig.burst_done.append(now)
        else:
            buf = self.buf + data
            if len(buf) < len(CONFIRM):
                self.buf = buf
                return
            self.buf = b""
            if buf != CONFIRM:
                rig.error(f"unexpected SUBSCRIBE reply: {buf[:200]!r}")
                return
            rig.confirmed += 1


class Publisher(Conn):
    """Sends PUBLISHes; checks that every reply is :<subscribers>."""

    def __init__(self, loop: Loop, addr: Addr, expect: int) -> None:
        super().__init__(loop, addr)
        self.buf = b""
        self.expect_line = b":%d\r\n" % expect
        self.replies = 0
        self.bad: list[bytes] = []
        self.bad_count = 0

    def on_data(self, data: bytes, now: float) -> None:
        buf = self.buf + data if self.buf else data
        cut = buf.rfind(b"\n") + 1
        chunk, self.buf = buf[:cut], buf[cut:]
        n = chunk.count(b"\r\n")
        good = chunk.count(self.expect_line)
        self.replies += n
        if good != n:
            self.bad_count += n - good
            if len(self.bad) < 3:
                want = self.expect_line[:-2]
                self.bad.append(next((ln for ln in chunk.split(b"\r\n") if ln and ln != want), chunk[:80]))


def latency_phase(loop: Loop, rig: Rig, pub: Publisher, m: int, interval_ms: float,
                  cpu: CpuWatch) -> dict[str, Any]:
    """Publish m messages interval_ms apart (open loop); per message, the time until the first
    and until the last subscriber got it."""
    n = rig.n
    rig.counts, rig.first, rig.last, rig.complete = [0] * m, [0.0] * m, [0.0] * m, 0
    for conn in loop.conns.values():
        if isinstance(conn, Subscriber):
            conn.got = 0
    send_at = [0.0] * m
    rig.mode = "lat"
    pub.replies = 0
    interval = interval_ms / 1000
    c0 = cpu.read()
    start = time.perf_counter()
    next_send, seq = start, 0
    deadline = start + m * interval + 60
    while rig.complete < m:
        now = time.perf_counter()
        if now > deadline or rig.errors:
            break
        if seq < m and now >= next_send:
            cmd = publish_cmd(seq)
            send_at[seq] = time.perf_counter()
            pub.send(cmd)
            seq += 1
            next_send += interval
            continue
        loop.poll(max(0.0, next_send - time.perf_counter()) if seq < m else 0.05)
    wall = time.perf_counter() - start
    loop.run_until(lambda: pub.replies >= m, 10)
    c1 = cpu.read()
    done = [i for i in range(m) if rig.counts[i] == n]
    all_ms = [(rig.last[i] - send_at[i]) * 1e3 for i in done]
    first_ms = [(rig.first[i] - send_at[i]) * 1e3 for i in done]
    d = CpuWatch.delta(c0, c1)
    return {
        "messages": m, "interval_ms": interval_ms, "complete": len(done),
        "missing_deliveries": m * n - sum(rig.counts),
        "all_p50_ms": pct(all_ms, 50), "all_p99_ms": pct(all_ms, 99), "all_max_ms": max(all_ms, default=None),
        "first_p50_ms": pct(first_ms, 50), "first_p99_ms": pct(first_ms, 99),
        "wall_s": round(wall, 3), "client_cpu_util": d["client"] / wall,
        "client_cpu_ms_per_msg": d["client"] / m * 1e3,
        "server_cpu_ms_per_msg": d["servers"] / m * 1e3,
        **({"proxy_cpu_ms_per_msg": d["proxy"] / m * 1e3} if "proxy" in d else {}),
        "publish_replies": pub.replies, "publish_bad_replies": pub.bad_count,
        "publish_bad_examples": [b.decode(errors="replace") for b in pub.bad],
        **_cpu_fields(d, wall, m * n)}


def run_pubsub(target: str, addr: Addr, pid: int, args: argparse.Namespace,
               cpu: CpuWatch) -> dict[str, Any]:
    """Subscribers, RSS per subscriber, paced latency, burst. pid: the process whose RSS is measured."""
    n = args.subscribers
    res: dict[str, Any] = {"target": target, "subscribers": n, "ok": True}
    loop = Loop()
    rig = Rig(n)
    subs: list[Subscriber] = []
    pub: Optional[Publisher] = None
    try:
        res["rss_before_kib"] = settle_rss(pid, 1.0)
        t0 = time.perf_counter()
        for _ in range(n):
            subs.append(Subscriber(loop, addr, rig))
        for s in subs:
            s.send(enc(b"SUBSCRIBE", CHANNEL))
        if not loop.run_until(lambda: rig.confirmed + len(rig.errors) >= n, 60):
            rig.error(f"only {rig.confirmed}/{n} subscriptions confirmed within 60 s")
        res["subscribe_s"] = round(time.perf_counter() - t0, 3)
        res["confirmed"] = rig.confirmed
        if rig.errors:
            raise _Abort()
        time.sleep(2.0)
        res["rss_subscribed_kib"] = proc_rss_kib(pid)
        res["kib_per_subscriber"] = (res["rss_subscribed_kib"] - res["rss_before_kib"]) / n

        # paced latency phases, one per interval
        pub = Publisher(loop, addr, n)
        res["latency"] = []
        for interval_ms in args.interval_ms:
            lat = latency_phase(loop, rig, pub, args.messages, interval_ms, cpu)
            res["latency"].append(lat)
            if lat["complete"] < args.messages:
                rig.error(f"latency phase ({interval_ms:g} ms): {args.messages - lat['complete']} of "
                          f"{args.messages} messages did not reach every subscriber")
            if rig.errors:
                raise _Abort()
            loop.run_until(lambda: False, 0.2)

        # burst phase
        b = args.burst
        rig.burst, rig.burst_bytes, rig.burst_done = b, b * FRAME_LEN, []
        for s in subs:
            s.got, s.burst_done = 0, False
        rig.mode = "burst"
        pub.replies = 0
        c0 = cpu.read()
        start = time.perf_counter()
        pub.send(b"".join(publish_cmd(i) for i in range(b)))
        ok = loop.run_until(lambda: len(rig.burst_done) + rig.closed >= n or bool(rig.errors), 300)
        t_all = time.perf_counter()
        loop.run_until(lambda: pub.replies >= b, 30)
        c1 = cpu.read()
        done_t = sorted(t - start for t in rig.burst_done)
        wall = (done_t[-1] if len(done_t) == n else t_all - start)
        d = CpuWatch.delta(c0, c1)
        res["burst"] = {
            "messages": b, "all_s": round(wall, 3), "complete_subscribers": len(done_t),
            "first_subscriber_s": round(done_t[0], 3) if done_t else None,
            "median_subscriber_s": round(statistics.median(done_t), 3) if done_t else None,
            "msgs_per_s": b / wall if len(done_t) == n and wall > 0 else None,
            "deliveries_per_s": b * n / wall if len(done_t) == n and wall > 0 else None,
            "client_cpu_util": d["client"] / (t_all - start),
            "publish_replies": pub.replies, "publish_bad_replies": pub.bad_count,
            **_cpu_fields(d, t_all - start, b * n)}
        if not ok or len(done_t) < n:
            rig.error(f"burst: {n - len(done_t)} of {n} subscribers did not get all {b} messages")
        time.sleep(1.0)
        res["rss_after_burst_kib"] = proc_rss_kib(pid)
        res["kib_per_subscriber_after_burst"] = (res["rss_after_burst_kib"] - res["rss_before_kib"]) / n
    except _Abort:
        pass
    finally:
        loop.close()
    res["bad_frames"] = rig.bad_frames
    res["errors"] = rig.errors
    res["ok"] = not rig.errors and rig.bad_frames == 0 and (pub is None or pub.bad_count == 0)
    res["rss_closed_kib"] = settle_rss(pid, 1.0)
    return res


class _Abort(Exception):
    pass


def _cpu_fields(d: dict[str, float], wall: float, deliveries: int) -> dict[str, Any]:
    out: dict[str, Any] = {"server_cpu_util": d["servers"] / wall if wall > 0 else None}
    if "proxy" in d:
        out["proxy_cpu_s"] = round(d["proxy"], 3)
        out["proxy_cpu_util"] = d["proxy"] / wall if wall > 0 else None
        out["proxy_cpu_s_per_m_deliveries"] = d["proxy"] / deliveries * 1e6 if deliveries else None
    return out


# ---------------------------------------------------------------- standalone redis-server

class StandaloneRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="rproxy-stateful-redis-")
        self.log = open(os.path.join(self.dir, "redis.log"), "wb")
        self.cmd = ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no",
                    "--bind", "127.0.0.1", "--dir", self.dir]
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self.addr: Addr = ("127.0.0.1", self.port)

    def wait_ready(self) -> None:
        def check() -> None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
        if not bench.wait_ping(self.addr, 20, check):
            raise RuntimeError("standalone redis-server did not answer PING")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        for f in Path(self.dir).iterdir():
            f.unlink()
        os.rmdir(self.dir)


# ---------------------------------------------------------------- rounds, summary, output

def tx_scenarios(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    return ([(f"MULTI/EXEC x{d}", "multi", d) for d in args.tx_pipelines]
            + ([] if args.skip_tx3 else [(f"MULTI/EXEC 3 slots x{d}", "multi3", d) for d in args.tx_pipelines])
            + [("WATCH loop", "watch", 1)])


def kind_targets(kind: str, targets: list[str] | tuple[str, ...]) -> list[str]:
    """The targets of a kind of transaction: a Redis Cluster refuses one over three slots
    (CROSSSLOT), so "multi3" has no direct run."""
    return [t for t in targets if kind != "multi3" or t != "direct"]


def three_master_tags(owners: list[tuple[int, int, str]], i: int) -> tuple[str, str, str]:
    """Client i's tags for "multi3": t3:<i>:<suffix> for suffixes a, b, c, ..., z, a1, ...,
    the first three whose slots are owned by three different masters."""
    picked: dict[str, str] = {}  # master -> tag
    n = 0
    while len(picked) < 3:
        tag = f"t3:{i}:{chr(97 + n % 26)}{n // 26 or ''}"
        host, port = master_of(owners, key_slot(f"{{{tag}}}:k".encode()))
        picked.setdefault(f"{host}:{port}", tag)
        n += 1
        if n > 10000:
            raise RuntimeError("cannot find tags on three different masters (fewer than 3 masters?)")
    a, b, c = picked.values()
    return a, b, c


def master_of(owners: list[tuple[int, int, str]], slot: int) -> Addr:
    for start, end, master in owners:
        if start <= slot <= end:
            return bench.parse_addr(master)
    raise RuntimeError(f"slot {slot} not assigned")


def run_rounds(args: argparse.Namespace, proxy: Proxy, redis_: StandaloneRedis, seeds: list[Addr],
               cluster_pids: list[int]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    owners = bench.slot_owners(seeds[0])
    nc = args.clients
    tags: dict[str, list[Any]] = {"multi": [f"t:{i}" for i in range(nc)], "watch": [f"w:{i}" for i in range(nc)]}
    if not args.skip_tx3:
        tags["multi3"] = [three_master_tags(owners, i) for i in range(nc)]
    addrs = {"proxy": {k: [proxy.addr] * nc for k in tags},
             "redis": {k: [redis_.addr] * nc for k in tags},
             "direct": {k: [master_of(owners, key_slot(f"{{{t}}}:k".encode())) for t in tags[k]]
                        for k in ("multi", "watch")}}
    spread = {k: sorted({f"{h}:{p}" for h, p in v}) for k, v in addrs["direct"].items()}
    log(f"direct: tags over masters {spread['multi']}")
    if "multi3" in tags:
        masters = [master_of(owners, key_slot(f"{{{t}}}:k".encode())) for t in tags["multi3"][0]]
        log(f"3 slots: client 0 tags {' '.join(tags['multi3'][0])} on masters "
            + " ".join(f"{h}:{p}" for h, p in masters))
    cpus = {"proxy": CpuWatch({"proxy": [proxy.pid], "servers": cluster_pids}),
            "direct": CpuWatch({"servers": cluster_pids}),
            "redis": CpuWatch({"servers": [redis_.pid]})}
    tx_runs: list[dict[str, Any]] = []
    ps_runs: list[dict[str, Any]] = []
    for rnd in range(1, args.rounds + 1):
        order = list(TARGETS) if rnd % 2 else list(TARGETS[::-1])
        log(f"round {rnd}/{args.rounds}: {bench_load()}")
        # Pub/sub first: in round 1 the proxy's RSS before the subscribers is that of a fresh proxy.
        for target in ([] if args.skip_pubsub else [t for t in order if t != "direct"]):
            if not proxy.alive():
                raise RuntimeError(f"rproxy exited:\n{proxy.tail()}")
            addr, pid = (proxy.addr, proxy.pid) if target == "proxy" else (redis_.addr, redis_.pid)
            r = run_pubsub(target, addr, pid, args, cpus[target])
            r.update(round=rnd)
            ps_runs.append(r)
            burst = r.get("burst", {})
            lats = "; ".join(f"{x['interval_ms']:g} ms: all-delivered p50/p99 {fmt(x['all_p50_ms'], '.2f')}/"
                             f"{fmt(x['all_p99_ms'], '.2f')} ms (client {x['client_cpu_util']:.0%})"
                             for x in r.get("latency", []))
            log(f"[round {rnd}/{args.rounds}] pub/sub {target:<6} "
                f"RSS +{fmt(r.get('kib_per_subscriber'), '.1f')} KiB/sub (after burst "
                f"+{fmt(r.get('kib_per_subscriber_after_burst'), '.1f')}); {lats}; burst "
                f"{fmt(burst.get('msgs_per_s'), ',.0f')} msg/s in {fmt(burst.get('all_s'), '.2f')} s "
                f"(client {fmt(burst.get('client_cpu_util'), '.0%')}"
                + (f", proxy {fmt(burst.get('proxy_cpu_util'), '.0%')}" if target == "proxy" else "") + ")"
                + ("" if r["ok"] else f"  FAILED: {r['errors'][:3]} bad frames {r['bad_frames']}"))
        if rnd == 1 and not args.skip_tx and args.warmup_s > 0:
            for target in TARGETS:
                for kind, depth in (("multi", max(args.tx_pipelines)), ("multi3", max(args.tx_pipelines)),
                                    ("watch", 1)):
                    if kind not in addrs[target]:
                        continue
                    r = run_tx(kind, depth, addrs[target][kind], tags[kind], args.warmup_s, cpus[target])
                    log(f"warm-up (not reported) {kind} {target}: {r['tps']:,.0f} tx/s"
                        + (f" ERRORS {r['errors']}" if not r["ok"] else ""))
                    if not r["ok"]:
                        raise RuntimeError(f"warm-up {kind} against {target} failed: {r['errors']}")
        for name, kind, depth in [] if args.skip_tx else tx_scenarios(args):
            for target in kind_targets(kind, order):
                if not proxy.alive():
                    raise RuntimeError(f"rproxy exited:\n{proxy.tail()}")
                r = run_tx(kind, depth, addrs[target][kind], tags[kind], args.duration, cpus[target])
                r.update(round=rnd, scenario=name, kind=kind, target=target, pipeline=depth, clients=nc)
                tx_runs.append(r)
                extra = (f", proxy {r['proxy_cpu_util']:.0%} CPU, {r['proxy_cpu_s_per_1000_tx']:.3f} CPU-s/1000 tx"
                         if target == "proxy" else "")
                log(f"[round {rnd}/{args.rounds}] {name:<22} {target:<6} {r['tps']:>9,.0f} tx/s  "
                    f"p50/p99 {r['batch_p50_ms']:.2f}/{r['batch_p99_ms']:.2f} ms  client {r['client_cpu_util']:.0%}, "
                    f"servers {r['server_cpu_util']:.0%} CPU{extra}"
                    + (f"  conflicts {r['conflicts']}" if r["conflicts"] else "")
                    + ("" if r["ok"] else f"  FAILED: {r['errors'][:2]} mismatches {r['mismatches']}"))
    return tx_runs, ps_runs


def bench_load() -> str:
    la = os.getloadavg()
    return f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}"


def summarize_tx(runs: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    rounds = range(1, args.rounds + 1)
    for name, kind, depth in tx_scenarios(args):
        by = {(r["target"], r["round"]): r for r in runs if r["scenario"] == name and r["ok"]}
        # "multi3": compared with the single-slot MULTI/EXEC at the same depth, same target
        one = {(r["target"], r["round"]): r for r in runs if r["scenario"] == f"MULTI/EXEC x{depth}" and r["ok"]}

        def ratio(a: str, b: str) -> Optional[float]:
            vals = [by[(a, k)]["tps"] / by[(b, k)]["tps"] for k in rounds
                    if (a, k) in by and (b, k) in by and by[(b, k)]["tps"]]
            return median(vals)

        def vs_one(t: str, field: str) -> Optional[float]:
            if kind != "multi3":
                return None
            vals = [by[(t, k)][field] / one[(t, k)][field] for k in rounds
                    if (t, k) in by and (t, k) in one and by[(t, k)].get(field) is not None
                    and one[(t, k)].get(field)]
            return median(vals)
        for t in TARGETS:
            sel = [by[(t, k)] for k in rounds if (t, k) in by]
            rows.append({
                "kind": kind, "pipeline": depth,
                "vs_1slot": vs_one(t, "tps"),
                "vs_1slot_rounds": [by[(t, k)]["tps"] / one[(t, k)]["tps"]
                                    if (t, k) in by and (t, k) in one and one[(t, k)]["tps"] else None
                                    for k in rounds] if kind == "multi3" else None,
                "proxy_cpu_per_tx_vs_1slot": vs_one(t, "proxy_cpu_s_per_1000_tx") if t == "proxy" else None,
                "scenario": name, "target": t, "tps": median([r["tps"] for r in sel]),
                "tps_rounds": [by[(t, k)]["tps"] if (t, k) in by else None for k in range(1, args.rounds + 1)],
                "vs_direct": ratio(t, "direct") if t != "direct" else None,
                "vs_redis": ratio(t, "redis") if t != "redis" else None,
                "p50_ms": median([r["batch_p50_ms"] for r in sel]), "p99_ms": median([r["batch_p99_ms"] for r in sel]),
                "proxy_cpu_s_per_1000_tx": median([r.get("proxy_cpu_s_per_1000_tx") for r in sel]),
                "proxy_cpu_util": median([r.get("proxy_cpu_util") for r in sel]),
                "server_cpu_util": median([r["server_cpu_util"] for r in sel]),
                "client_cpu_util": median([r["client_cpu_util"] for r in sel]),
                "conflicts": sum(r["conflicts"] for r in sel), "failed_runs": sum(
                    1 for r in runs if r["scenario"] == name and r["target"] == t and not r["ok"])})
    return rows


def summarize_pubsub(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"targets": {}, "latency_ratios": {}}
    rounds = range(1, args.rounds + 1)
    by = {(r["target"], r["round"]): r for r in runs if r["ok"]}
    for t in ("proxy", "redis"):
        sel = [r for r in runs if r["target"] == t and r["ok"]]
        g = lambda k: median([r["burst"].get(k) for r in sel])
        row: dict[str, Any] = {
            # max, not median: later rounds reuse memory the process kept from round 1 (RSS rarely
            # shrinks), so round 1, against a fresh proxy, is the figure and usually the largest
            "kib_per_subscriber": max((r["kib_per_subscriber"] for r in sel), default=None),
            "kib_per_subscriber_rounds": [r["kib_per_subscriber"] for r in sel],
            "kib_per_subscriber_after_burst": max((r.get("kib_per_subscriber_after_burst") or 0 for r in sel),
                                                  default=None),
            "kib_per_subscriber_after_burst_rounds": [r.get("kib_per_subscriber_after_burst") for r in sel],
            "rss_before_kib": median([r["rss_before_kib"] for r in sel]),
            "burst_s": g("all_s"), "burst_msgs_per_s": g("msgs_per_s"),
            "burst_msgs_per_s_rounds": [r["burst"]["msgs_per_s"] for r in sel],
            "burst_deliveries_per_s": g("deliveries_per_s"), "burst_client_cpu_util": g("client_cpu_util"),
            "burst_proxy_cpu_util": g("proxy_cpu_util"), "burst_server_cpu_util": g("server_cpu_util"),
            "proxy_cpu_s_per_m_deliveries": g("proxy_cpu_s_per_m_deliveries"),
            "failed_runs": sum(1 for r in runs if r["target"] == t and not r["ok"]), "latency": {}}
        for i, iv in enumerate(args.interval_ms):
            lats = [r["latency"][i] for r in sel]
            row["latency"][f"{iv:g}"] = {
                **{k: median([x.get(k) for x in lats]) for k in (
                    "all_p50_ms", "all_p99_ms", "first_p50_ms", "first_p99_ms", "client_cpu_util",
                    "client_cpu_ms_per_msg", "proxy_cpu_util", "server_cpu_util", "proxy_cpu_s_per_m_deliveries",
                    "proxy_cpu_ms_per_msg", "server_cpu_ms_per_msg")},
                "all_p50_ms_rounds": [x["all_p50_ms"] for x in lats]}
        out["targets"][t] = row

    def ratio(value: Callable[[dict[str, Any]], Optional[float]]) -> dict[str, Any]:
        vals = []
        for k in rounds:
            if ("proxy", k) in by and ("redis", k) in by:
                a, b = value(by[("proxy", k)]), value(by[("redis", k)])
                vals.append(a / b if a is not None and b else None)
        return {"median": median(vals), "rounds": vals}
    for i, iv in enumerate(args.interval_ms):
        out["latency_ratios"][f"{iv:g}"] = {
            "all_p50": ratio(lambda r: r["latency"][i]["all_p50_ms"]),
            "all_p99": ratio(lambda r: r["latency"][i]["all_p99_ms"]),
            "first_p50": ratio(lambda r: r["latency"][i]["first_p50_ms"])}
    out["burst_ratio"] = ratio(lambda r: r["burst"]["msgs_per_s"])
    kib = [r["kib_per_subscriber"] for r in runs if r["target"] == "proxy" and r["ok"]]
    out["target_kib_per_subscriber"] = {"limit": 20, "max_over_rounds": max(kib) if kib else None,
                                        "met": bool(kib) and max(kib) < 20}
    out["target_latency_ratio"] = {
        f"{iv:g}": {"limit": 2, "median": out["latency_ratios"][f"{iv:g}"]["all_p50"]["median"],
                    "met": (out["latency_ratios"][f"{iv:g}"]["all_p50"]["median"] or 99) < 2}
        for iv in args.interval_ms}
    return out


def rounds_text(vals: list[Optional[float]], spec: str) -> str:
    return " ".join(fmt(v, spec) for v in vals)


def print_tx(rows: list[dict[str, Any]]) -> None:
    head = ["scenario", "target", "tx/s", "tx/s per round", "vs direct", "vs one Redis", "vs 1-slot",
            "batch p50/p99 ms", "proxy CPU-s per 1000 tx", "proxy CPU", "servers CPU", "client CPU"]
    body = [[r["scenario"], TARGET_LABEL[r["target"]], fmt(r["tps"], ",.0f"),
             rounds_text(r["tps_rounds"], ",.0f"), fmt(r["vs_direct"], ".2f"), fmt(r["vs_redis"], ".2f"),
             fmt(r.get("vs_1slot"), ".2f"),
             f"{fmt(r['p50_ms'], '.2f')} / {fmt(r['p99_ms'], '.2f')}", fmt(r["proxy_cpu_s_per_1000_tx"], ".3f"),
             fmt(r["proxy_cpu_util"], ".0%"), fmt(r["server_cpu_util"], ".0%"), fmt(r["client_cpu_util"], ".0%")]
            for r in rows]
    print_grid(head, body)
    three = [r for r in rows if r.get("kind") == "multi3" and r["target"] != "direct"]
    if three:
        print("3 slots / 1 slot, same target and depth (median of per-round ratios): "
              + "; ".join(f"{TARGET_LABEL[r['target']]} x{r['pipeline']} tx/s {fmt(r['vs_1slot'], '.2f')} "
                          f"({rounds_text(r['vs_1slot_rounds'], '.2f')})"
                          + (f", proxy CPU per tx {fmt(r['proxy_cpu_per_tx_vs_1slot'], '.2f')}"
                             if r["target"] == "proxy" else "") for r in three)
              + "; direct: - (a Redis Cluster refuses a transaction over several slots: CROSSSLOT)")


def print_pubsub(s: dict[str, Any], args: argparse.Namespace) -> None:
    T = s["targets"]
    head = ["target", "KiB/sub subscribed: max (rounds)", "after burst: max (rounds)", f"burst of {args.burst}: s",
            "msg/s", "deliveries/s", "proxy CPU-s per M deliveries", "CPU client/proxy/server"]
    body = [[TARGET_LABEL[t], f"{fmt(r['kib_per_subscriber'], '.1f')} ({rounds_text(r['kib_per_subscriber_rounds'], '.1f')})",
             f"{fmt(r['kib_per_subscriber_after_burst'], '.1f')} "
             f"({rounds_text(r['kib_per_subscriber_after_burst_rounds'], '.1f')})", fmt(r["burst_s"], ".2f"),
             fmt(r["burst_msgs_per_s"], ",.0f"), fmt(r["burst_deliveries_per_s"], ",.0f"),
             fmt(r["proxy_cpu_s_per_m_deliveries"], ".2f"),
             f"{fmt(r['burst_client_cpu_util'], '.0%')} / {fmt(r['burst_proxy_cpu_util'], '.0%')} / "
             f"{fmt(r['burst_server_cpu_util'], '.0%')}"] for t, r in T.items()]
    br = s["burst_ratio"]
    body.append(["proxy / one Redis", "", "", "", f"{fmt(br['median'], '.2f')} ({rounds_text(br['rounds'], '.2f')})",
                 "", "", ""])
    print_grid(head, body)
    print()
    head = ["interval", "target", "all-delivered p50 / p99 ms", "p50 per round", "first p50 / p99 ms",
            "client CPU (ms/msg)", "proxy CPU (ms/msg)", "server CPU (ms/msg)", "proxy/one Redis all p50 (rounds)",
            "all p99 ratio"]
    body = []
    for iv in args.interval_ms:
        key = f"{iv:g}"
        rr = s["latency_ratios"][key]
        for t in ("proxy", "redis"):
            x = T[t]["latency"][key]
            body.append([f"{key} ms", TARGET_LABEL[t], f"{fmt(x['all_p50_ms'], '.2f')} / {fmt(x['all_p99_ms'], '.2f')}",
                         rounds_text(x["all_p50_ms_rounds"], ".2f"),
                         f"{fmt(x['first_p50_ms'], '.2f')} / {fmt(x['first_p99_ms'], '.2f')}",
                         f"{fmt(x['client_cpu_util'], '.0%')} ({fmt(x['client_cpu_ms_per_msg'], '.2f')})",
                         f"{fmt(x['proxy_cpu_util'], '.0%')} ({fmt(x.get('proxy_cpu_ms_per_msg'), '.2f')})"
                         if t == "proxy" else "-",
                         f"{fmt(x['server_cpu_util'], '.0%')} ({fmt(x['server_cpu_ms_per_msg'], '.2f')})",
                         f"{fmt(rr['all_p50']['median'], '.2f')} ({rounds_text(rr['all_p50']['rounds'], '.2f')})"
                         if t == "proxy" else "",
                         fmt(rr["all_p99"]["median"], ".2f") if t == "proxy" else ""])
    print_grid(head, body)
    k = s["target_kib_per_subscriber"]
    print(f"\n{args.subscribers} subscribers on one channel; {args.messages} messages per interval")
    print(f"target KiB per subscriber < {k['limit']}: {'MET' if k['met'] else 'NOT MET'} "
          f"(max over rounds {fmt(k['max_over_rounds'], '.1f')})")
    for key, v in s["target_latency_ratio"].items():
        print(f"target all-delivered p50 proxy/one Redis < {v['limit']}x at {key} ms: "
              f"{'MET' if v['met'] else 'NOT MET'} ({fmt(v['median'], '.2f')})")


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3; --quick 1)")
    ap.add_argument("--quick", action="store_true", help="1 round, --duration 2, --burst 2000")
    ap.add_argument("--clients", type=int, default=50, help="transaction clients (default 50)")
    ap.add_argument("--duration", type=float, help="seconds per transaction run (default 5; --quick 2)")
    ap.add_argument("--tx-pipelines", type=lambda t: [int(x) for x in t.split(",")], default=[1, 16],
                    metavar="D,D", help="MULTI/EXEC blocks per write (default 1,16)")
    ap.add_argument("--warmup-s", type=float, default=1.0,
                    help="seconds of MULTI/EXEC and WATCH per target before round 1, not reported (default 1)")
    ap.add_argument("--subscribers", type=int, default=1000, help="pub/sub subscriber connections (default 1000)")
    ap.add_argument("--messages", type=int, default=200, help="paced messages for the latency figure (default 200)")
    ap.add_argument("--interval-ms", type=lambda t: [float(x) for x in t.split(",")], default=[20.0, 5.0],
                    metavar="MS,MS", help="ms between paced messages; one latency phase per value (default 20,5)")
    ap.add_argument("--burst", type=int, help="messages published as fast as possible (default 10000; --quick 2000)")
    ap.add_argument("--skip-tx", action="store_true", help="pub/sub scenarios only")
    ap.add_argument("--skip-pubsub", action="store_true", help="transaction scenarios only")
    ap.add_argument("--skip-tx3", action="store_true",
                    help="no 'MULTI/EXEC 3 slots' scenario; rproxy then runs without --cross-slot-transactions emulate")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write every raw run and the summary as JSON")
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.burst = args.burst or (2000 if args.quick else 10000)

    soft, hard = bench.raise_nofile()
    if soft < args.subscribers + 512:
        raise RuntimeError(f"RLIMIT_NOFILE {soft}/{hard} is too low for {args.subscribers} subscribers")
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    load_start = machine_load()
    version = code_version()
    log(f"machine: {load_start['uptime']} ({load_start['cores']} cores)")
    log(f"rproxy from {bench.REPO}: git {(version['commit'] or '?')[:100]}"
        + (f", modified: {' '.join(version['modified'])}" if version["modified"] else ""))
    from rproxy.localcluster import LocalCluster
    cluster: Any = None
    proxy: Optional[Proxy] = None
    redis_: Optional[StandaloneRedis] = None
    tx_runs: list[dict[str, Any]] = []
    ps_runs: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    try:
        log("starting local cluster: 3 masters + 3 replicas")
        cluster = LocalCluster(masters=3, replicas=1, node_timeout_ms=2000, log=log)
        cluster.start()
        seeds = list(cluster.seeds)
        cluster_pids = [n.pid for n in cluster.nodes if n.pid]
        redis_ = StandaloneRedis()
        log(f"starting one Redis (pid {redis_.pid}): {' '.join(repr(a) if a == '' else a for a in redis_.cmd)}")
        # Transactions over several slots ("MULTI/EXEC 3 slots") need the emulation; single-slot
        # transactions take the same path with or without it (rproxy/net/stateful.py exec_transaction).
        proxy = Proxy(seeds, env={"RPROXY_LIMITS_MAX_CLIENTS": str(max(10000, args.subscribers + 2000))},
                      extra=[] if args.skip_tx3 or args.skip_tx else ["--cross-slot-transactions", "emulate"])
        log(f"starting rproxy (pid {proxy.pid}): {' '.join(proxy.cmd)}")
        redis_.wait_ready()
        proxy.wait_ready()
        meta = {"seeds": seeds, "proxy_cmd": proxy.cmd, "proxy_pid": proxy.pid, "redis_cmd": redis_.cmd,
                "cluster_pids": cluster_pids}
        tx_runs, ps_runs = run_rounds(args, proxy, redis_, seeds, cluster_pids)
    finally:
        if proxy is not None:
            log(f"stopping rproxy (pid {proxy.pid})")
            proxy.stop()
        if redis_ is not None:
            log(f"stopping one Redis (pid {redis_.pid})")
            redis_.stop()
        if cluster is not None:
            log("stopping local cluster")
            cluster.stop()

    elapsed = time.monotonic() - started
    load_end = machine_load()
    failed = [r for r in tx_runs + ps_runs if not r["ok"]]
    print(f"\nrproxy: git {(version['commit'] or '?')[:100]}"
          + (f", modified: {' '.join(version['modified'])}" if version["modified"] else ""))
    print(f"machine at start: {load_start['uptime']}\nmachine at end:   {load_end['uptime']}")
    out: dict[str, Any] = {}
    if tx_runs:
        rows = summarize_tx(tx_runs, args)
        print(f"\ntransactions: {args.clients} clients, {args.duration:g} s per run, medians over {args.rounds} "
              f"round(s); ratios = median of per-round ratios; latency = one batch (xD blocks) or one WATCH "
              f"transaction (2 round trips)")
        print_tx(rows)
        out["tx_medians"] = rows
    if ps_runs:
        s = summarize_pubsub(ps_runs, args)
        print(f"\npub/sub fan-out (medians over {args.rounds} round(s), except KiB/sub: the max, i.e. round 1 against "
              f"a fresh process; RSS of rproxy / of the redis-server; 'all-delivered' = until the last "
              f"subscriber got the message)")
        print_pubsub(s, args)
        out["pubsub_summary"] = s
    print(f"\n{len(tx_runs) + len(ps_runs)} runs, {len(failed)} failed, {elapsed:.0f} s total")
    for r in failed:
        print(f"FAILED round {r['round']} {r.get('scenario', 'pub/sub')} {r['target']}: {r['errors'][:3]} "
              f"mismatches {r.get('mismatches', 0)} bad frames {r.get('bad_frames', 0)}")
    if args.json:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        doc = {"config": config, "rproxy_version": version, "machine_start": load_start, "machine_end": load_end,
               **meta,
               "elapsed_s": round(elapsed, 1), **out, "tx_runs": tx_runs, "pubsub_runs": ps_runs}
        args.json.write_text(json.dumps(doc, indent=2))
        print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    bench.run_main(main)
