"""Chaos-test harness: a load generator that checks every reply against a model of what the
cluster may hold, rproxy as a subprocess, and small cluster helpers.

The model (one ``Client`` owns its keys, so it knows exactly what each of them may contain):

* string keys ``<prefix>:<client>:<n>`` (no hash tag: spread over the slots, all on the shard
  the client is pinned to at the start) take ``SET key "<key>|<seq>"`` (idempotent) and
  ``GET key``. A GET must return the value of the last acknowledged SET, or of a later SET
  whose outcome is unknown (error or no reply). The value names its key, so a reply handed to
  the wrong request is caught. An *older* value of the same key means acknowledged writes were
  lost (counted as ``lost_acked``, the read as a stale read); anything else is a mismatch.
* counters ``<prefix>:<client>:ctr<j>`` start at ``base = id * 10**7`` and take ``INCR``
  (not idempotent). The model keeps [lo, hi]: lo = value after the last acknowledged INCR,
  hi = lo + INCRs with unknown outcome since then. An INCR reply must lie in [lo+1, hi+1]:
  above means an INCR ran twice (impossible: mismatch), below means acknowledged increments
  were lost; the identity ``value // 10**7`` catches replies of another counter.
* one pipeline never holds the same key twice, and a client sends its next pipeline only
  after every reply of the previous one: per key, operations are sequential.

Replies are classified ok / stale / error (by kind: the error text with numbers and addresses
blanked) / mismatch / unanswered (the connection dropped or no reply in ``reply_timeout_s``).
Every operation is recorded (send time, reply time, shard at the start, op, status) for the
latency and recovery figures.

Threads: ``Load`` runs its trio loop in a background thread so that the test thread can do the
chaos with blocking calls; ``DirectLoad`` (the redis-py ``RedisCluster`` baseline) runs one
thread per client. Every process started here is stopped by its PID.
"""

from __future__ import annotations

import bisect
import gc
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hiredis
import redis
import trio
from redis.cluster import ClusterNode, RedisCluster

from rproxy.core import errors
from rproxy.localcluster import LocalCluster, Node
from rproxy.core.resp import encode_command
from rproxy.core.slots import SLOTS, key_slot
from tests.support import free_port, node_client, wait_until

# Figure blocks of the tests that ran, printed again in the terminal summary (conftest.py).
FIGURES: list[str] = []

NODE_TIMEOUT_MS = 2000  # cluster-node-timeout of every chaos cluster

# The proxy configuration of every chaos test (what is not set is the default of
# config/rproxy.toml). failover_hold_s: requests for a shard without a reachable master are
# held up to 6 s (the cluster elects a new master within about 2 node timeouts) and replayed.
PROXY_CONFIG: dict[str, dict[str, Any]] = {
    "cluster": {"failover_hold_s": 6.0},
    "timeouts": {"shutdown_grace_s": 2.0},
}

GET, SET, INCR, PRELOAD = 0, 1, 2, 3
OP_NAMES = {GET: "GET", SET: "SET", INCR: "INCR", PRELOAD: "SET(ctr)"}
OK, STALE, ERROR, MISMATCH, UNANSWERED = 0, 1, 2, 3, 4
SPAN = 10**7  # counter identity: value // SPAN
HISTORY = 8  # operations per key kept to explain a mismatch or a lost write

# The one error a write in flight at a kill may get (without the "-" and CRLF).
OUTCOME_UNKNOWN = errors.OUTCOME_UNKNOWN[1:].rstrip(b"\r\n").decode()


class ErrorReply(str):
    """An error from the redis-py baseline, in the same shape as ``hiredis.ReplyError``."""


_ADDR = re.compile(r"\[?[0-9a-fA-F.:]+\]?:\d+")
_NUM = re.compile(r"\b\d+\b")


def error_kind(text: str) -> str:
    """The error text without its variable parts (addresses, numbers), cut to 110 chars."""
    return _NUM.sub("N", _ADDR.sub("<addr>", text.strip()))[:110]


def emit(block: str) -> None:
    """Print a figure block now (visible with -s) and keep it for the terminal summary."""
    print("\n" + block, flush=True)
    FIGURES.append(block)


# -- topology -------------------------------------------------------------------------------


def slot_ranges(cluster: LocalCluster) -> list[tuple[int, int, int]]:
    """Sorted (start, end, master port) from CLUSTER SLOTS of the first live node that answers."""
    last: Exception | None = None
    for node in cluster.nodes:
        if node.process is None or node.process.poll() is not None:
            continue
        try:
            with node_client(node, socket_timeout=2, socket_connect_timeout=2) as c:
                rows = c.execute_command("CLUSTER", "SLOTS")
            return sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in rows)
        except redis.RedisError as exc:
            last = exc
    raise RuntimeError(f"no node answered CLUSTER SLOTS: {last!r}")


class ShardMap:
    """Slot -> shard index (0..n-1, masters in port order) from the slot map at one moment."""

    def __init__(self, ranges: list[tuple[int, int, int]]) -> None:
        self.ports = sorted({p for _, _, p in ranges})
        self.of_slot = bytearray([255]) * SLOTS
        for start, end, port in ranges:
            idx = self.ports.index(port)
            self.of_slot[start:end + 1] = bytes([idx]) * (end - start + 1)

    @classmethod
    def of(cls, cluster: LocalCluster) -> ShardMap:
        return cls(slot_ranges(cluster))

    @property
    def n(self) -> int:
        return len(self.ports)

    def shard(self, key: bytes) -> int:
        return self.of_slot[key_slot(key)]

    def master(self, cluster: LocalCluster, shard: int) -> Node:
        return cluster.node_by_port(self.ports[shard])


def replica_of(cluster: LocalCluster, master: Node) -> Node:
    """The (first) replica the master reports in ROLE."""
    with node_client(master, socket_timeout=2) as c:
        role = c.execute_command("ROLE")
    assert role[0] == b"master", role
    assert role[2], f"master {master.port} has no replica"
    return cluster.node_by_port(int(role[2][0][1]))


def wait_rejoined(cluster: LocalCluster, replicas: int, timeout_s: float = 40) -> None:
    """Cluster ok and ``replicas`` replicas with their replication link up and synced."""
    deadline = time.monotonic() + timeout_s
    cluster.wait_ok(timeout_s)

    def synced() -> bool:
        reps = cluster.replicas()
        if len(reps) != replicas:
            return False
        for n in reps:
            with node_client(n, socket_timeout=2) as c:
                info = c.info("replication")
            if info.get("master_link_status") != "up" or info.get("master_sync_in_progress"):
                return False
        return True

    wait_until(synced, max(1.0, deadline - time.monotonic()), "replicas rejoined and synced")
    cluster.wait_ok(max(1.0, deadline - time.monotonic()))


class RoleWatch:
    """Polls ROLE of one node every 20 ms in a thread; ``promoted_at`` is the monotonic time it
    first reported itself master (None until then)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.promoted_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"role-{node.port}", daemon=True)

    def __enter__(self) -> RoleWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        client = node_client(self.node, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            while not self._stop.is_set() and self.promoted_at is None:
                try:
                    if client.execute_command("ROLE")[0] == b"master":
                        self.promoted_at = time.monotonic()
                        return
                except redis.RedisError:
                    pass
                time.sleep(0.02)
        finally:
            client.close()

    def wait(self, timeout_s: float) -> float:
        wait_until(lambda: self.promoted_at is not None, timeout_s,
                   f"node {self.node.port} to become master")
        assert self.promoted_at is not None
        return self.promoted_at


# -- the proxy as a subprocess ----------------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {v!r}")


def to_toml(cfg: dict[str, dict[str, Any]]) -> str:
    out: list[str] = []
    for section, values in cfg.items():
        out.append(f"[{section}]")
        out.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
        out.append("")
    return "\n".join(out)


class ProxyProcess:
    """``python -m rproxy`` in front of the cluster, owned (and stopped, by PID) by the test.
    Its log (JSON lines, level warning) goes to ``workdir/rproxy.log``."""

    def __init__(self, seeds: list[tuple[str, int]], workdir: Path,
                 config: dict[str, dict[str, Any]]) -> None:
        self.seeds, self.workdir, self.config = seeds, workdir, config
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "rproxy.log"
        self.config_path = workdir / "rproxy.toml"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 30) -> ProxyProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(to_toml(self.config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RPROXY_")}
        for _attempt in range(3):
            self.port = free_port()
            cmd = [sys.executable, "-m", "rproxy", "--listen", f"127.0.0.1:{self.port}",
                   *[a for h, p in self.seeds for a in ("--seed", f"{h}:{p}")],
                   "--config", str(self.config_path), "--log-level", "warning",
                   "--log-format", "json"]
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with self.client(socket_timeout=1, socket_connect_timeout=1) as c:
                        if c.ping() and c.info("server").get("cluster_masters"):
                            return self
                except redis.RedisError:
                    pass
                time.sleep(0.05)
            self.stop()
            if "cannot serve" not in self.log_tail(5):  # a port race: try another port
                break
        raise RuntimeError(f"rproxy did not start; log tail:\n{self.log_tail(30)}")

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def client(self, **kw: Any) -> redis.Redis:
        opts: dict[str, Any] = dict(protocol=2, socket_timeout=10)
        return redis.Redis("127.0.0.1", self.port, **{**opts, **kw})

    def info(self, section: str = "proxy") -> dict[str, Any]:
        with self.client(socket_timeout=5) as c:
            return c.info(section)

    def proxy_stat(self, name: str) -> int:
        info = self.info("proxy")
        if name not in info:
            raise AssertionError(f"INFO proxy has no {name!r} (got {sorted(info)})")
        return int(info[name])

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_events(self) -> Counter[str]:
        """How many times each log event (JSON ``event`` field) was logged."""
        events: Counter[str] = Counter()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return events
        for line in text.splitlines():
            try:
                events[str(json.loads(line).get("event"))] += 1
            except (ValueError, AttributeError):
                continue  # the start-up banner
        return events


# -- the model --------------------------------------------------------------------------------


class StrKey:
    __slots__ = ("key", "shard", "issued", "last", "acked", "unknown")

    def __init__(self, key: bytes, shard: int) -> None:
        self.key, self.shard = key, shard
        self.issued = 0  # seq of the last SET sent (0 = none: the key does not exist)
        self.last = 0  # seq of the last acknowledged (or read back) value; 0 = nil
        self.acked: list[int] = []  # acknowledged seqs, increasing
        self.unknown: set[int] = set()  # later SETs whose outcome is unknown

    def value(self, seq: int) -> bytes:
        return self.key + b"|%d" % seq


class CtrKey:
    __slots__ = ("key", "shard", "base", "lo", "hi")

    def __init__(self, key: bytes, shard: int, base: int) -> None:
        self.key, self.shard, self.base = key, shard, base
        self.lo: int | None = None  # None until the SET of the base was acknowledged
        self.hi = 0


@dataclass
class Verdict:
    status: int
    lost: int = 0
    why: str = ""


def judge_str(k: StrKey, reply: Any) -> tuple[Verdict, int]:
    """Verdict on a value read for ``k`` and the seq it carries (-1 if not one of ours)."""
    if reply is None:
        seq = 0
    elif isinstance(reply, bytes):
        key, sep, tail = reply.rpartition(b"|")
        if not sep or key != k.key or not tail.isdigit() or int(tail) == 0:
            return Verdict(MISMATCH, why=f"GET {k.key!r} -> {reply[:80]!r}"), -1
        seq = int(tail)
    else:
        return Verdict(MISMATCH, why=f"GET {k.key!r} -> {reply!r:.80}"), -1
    if seq == k.last or seq in k.unknown:
        return Verdict(OK), seq
    if seq > k.last:  # never sent, or sent and neither acknowledged nor failed
        return Verdict(MISMATCH, why=f"GET {k.key!r} -> seq {seq}: impossible "
                       f"(last acked {k.last}, unknown {sorted(k.unknown)}, issued {k.issued})"), -1
    # Acknowledged writes after the value read are gone (``acked`` never holds seqs above
    # ``last``: a stale read cuts them off, see Client._check).
    lost = len(k.acked) - bisect.bisect_right(k.acked, seq)
    return Verdict(STALE, lost, f"GET {k.key!r} -> seq {seq} older than acked {k.last}"), seq


def judge_ctr(k: CtrKey, value: int | None, final: bool) -> Verdict:
    """Verdict on an INCR reply (``final=False``) or on the final value of a counter."""
    assert k.lo is not None
    if value is None:
        return Verdict(STALE, k.lo - k.base + 1, f"counter {k.key!r} is gone (acked {k.lo})")
    if not isinstance(value, int) or value // SPAN != k.base // SPAN:
        return Verdict(MISMATCH, why=f"INCR {k.key!r} -> {value!r:.80}")
    step = 0 if final else 1
    if value > k.hi + step:
        return Verdict(MISMATCH, why=f"counter {k.key!r} = {value}: above every possible "
                       f"value {k.hi + step} (an INCR ran twice?)")
    if value < k.lo + step:
        return Verdict(STALE, k.lo + step - value,
                       f"counter {k.key!r} = {value} below acked {k.lo + step}")
    return Verdict(OK)


class Recorder:
    """Every operation of one client (single-threaded owner)."""

    def __init__(self) -> None:
        self.sent = array("d")
        self.recv = array("d")
        self.shard = array("b")
        self.op = array("b")
        self.status = array("b")
        self.errors: list[tuple[float, float, int, int, str]] = []  # sent, recv, shard, op, kind
        self.conn_errors: Counter[str] = Counter()  # connection-level events (not per op)
        self.mismatches: list[str] = []
        self.lost_examples: list[str] = []
        self.n_mismatch = 0
        self.lost = 0
        self.stale = 0


class Client:
    """One load client: its keys, their model, and the record of its operations."""

    def __init__(self, cid: int, prefix: str, shard: int, shardmap: ShardMap,
                 n_keys: int, n_ctrs: int) -> None:
        self.cid, self.shard = cid, shard
        self.strs: list[StrKey] = []
        self.ctrs: list[CtrKey] = []
        n = 0
        while len(self.strs) < n_keys:
            key = f"{prefix}:{cid}:{n}".encode()
            n += 1
            if shardmap.shard(key) == shard:
                self.strs.append(StrKey(key, shard))
        while len(self.ctrs) < n_ctrs:
            key = f"{prefix}:{cid}:ctr{n}".encode()
            n += 1
            if shardmap.shard(key) == shard:
                self.ctrs.append(CtrKey(key, shard, (cid * 64 + len(self.ctrs) + 1) * SPAN))
        self.rec = Recorder()
        self.history: dict[bytes, deque[str]] = {}  # the last HISTORY operations per key
        self.t0 = time.monotonic()  # times in the history are relative to this
        self.port: int | None = None  # a control client's node (None: the proxy)
        self.ready = False  # every counter preloaded and one full pipeline answered

    def keys(self) -> Iterator[bytes]:
        for k in self.strs:
            yield k.key
        for c in self.ctrs:
            yield c.key

    def build(self, rng: random.Random, depth: int) -> list[tuple[int, Any, int, list[bytes]]]:
        """One pipeline: ``depth`` distinct keys, each with an op: (op, item, seq, argv)."""
        batch: list[tuple[int, Any, int, list[bytes]]] = []
        pending = [c for c in self.ctrs if c.lo is None]
        for c in pending[:depth]:
            batch.append((PRELOAD, c, 0, [b"SET", c.key, b"%d" % c.base]))
        items: list[Any] = [k for k in self.strs] + [c for c in self.ctrs if c.lo is not None]
        for item in rng.sample(items, min(len(items), depth - len(batch))):
            if isinstance(item, CtrKey):
                batch.append((INCR, item, 0, [b"INCR", item.key]))
            elif rng.random() < 0.5:
                batch.append((GET, item, 0, [b"GET", item.key]))
            else:
                item.issued += 1
                seq = item.issued
                batch.append((SET, item, seq, [b"SET", item.key, item.value(seq)]))
        return batch

    def settle(self, batch: list[tuple[int, Any, int, list[bytes]]],
               replies: list[tuple[Any, float]], t_sent: float, missing: str) -> None:
        """Classify each reply (``replies`` may be shorter than ``batch``: the rest got no
        reply, for the reason ``missing``) and update the model."""
        rec = self.rec
        for i, (op, item, seq, _argv) in enumerate(batch):
            n_examples = len(rec.mismatches) + len(rec.lost_examples)
            if i < len(replies):
                reply, t_recv = replies[i]
                if isinstance(reply, (hiredis.ReplyError, ErrorReply)):
                    status, kind = ERROR, error_kind(str(reply))
                else:
                    status, kind = self._check(op, item, seq, reply), ""
            else:
                reply, t_recv, status, kind = None, time.monotonic(), UNANSWERED, missing
            hist = self.history.get(item.key)
            if hist is None:
                hist = self.history[item.key] = deque(maxlen=HISTORY)
            shown = "(none)" if status == UNANSWERED else repr(reply)[-24:]
            hist.append(f"{OP_NAMES[op]}{f'#{seq}' if seq else ''} "
                        f"{t_sent - self.t0:.3f}->{t_recv - self.t0:.3f} {shown}")
            if len(rec.mismatches) + len(rec.lost_examples) > n_examples:
                examples = rec.mismatches if status == MISMATCH else rec.lost_examples
                examples[-1] += " | history (s since load start): " + "; ".join(hist)
            if status in (ERROR, UNANSWERED):  # a write may or may not have run
                if op == SET:
                    item.unknown.add(seq)
                elif op == INCR:
                    item.hi += 1
                rec.errors.append((t_sent, t_recv, item.shard, op, kind))
            rec.sent.append(t_sent)
            rec.recv.append(t_recv)
            rec.shard.append(item.shard)
            rec.op.append(op)
            rec.status.append(status)

    def _note(self, v: Verdict) -> int:
        rec = self.rec
        if v.status == MISMATCH:
            rec.n_mismatch += 1
            if len(rec.mismatches) < 20:
                rec.mismatches.append(v.why)
        elif v.status == STALE:
            rec.stale += 1
            rec.lost += v.lost
            if len(rec.lost_examples) < 20:
                rec.lost_examples.append(v.why)
        return v.status

    def _check(self, op: int, item: Any, seq: int, reply: Any) -> int:
        """Judge a non-error reply and update the model with what it proves."""
        if op == SET:
            if reply != b"OK":  # not the reply of this SET: whether it ran is unknown
                item.unknown.add(seq)
                return self._note(Verdict(MISMATCH, why=f"SET {item.key!r} -> {reply!r:.80}"))
            item.last = seq
            item.acked.append(seq)
            item.unknown.clear()
            return OK
        if op == GET:
            v, got = judge_str(item, reply)
            if v.status in (OK, STALE):  # what was read is now the key's known state
                item.last = got
                item.unknown = {s for s in item.unknown if s > got}
                del item.acked[bisect.bisect_right(item.acked, got):]  # counted as lost once
            return self._note(v)
        if op == PRELOAD:
            if reply != b"OK":
                return self._note(Verdict(MISMATCH, why=f"SET {item.key!r} -> {reply!r:.80}"))
            item.lo = item.hi = item.base
            return OK
        # INCR
        if not isinstance(reply, int) or reply // SPAN != item.base // SPAN:
            item.hi += 1  # not this INCR's reply: whether it ran is unknown
            return self._note(Verdict(MISMATCH, why=f"INCR {item.key!r} -> {reply!r:.80}"))
        v = judge_ctr(item, reply, final=False)
        item.lo = item.hi = reply  # the counter's value is now known exactly
        return self._note(v)


# -- results ----------------------------------------------------------------------------------


@dataclass
class Results:
    sent: list[float]
    recv: list[float]
    shard: list[int]
    op: list[int]
    status: list[int]
    errors: list[tuple[float, float, int, int, str]]
    conn_errors: Counter[str]
    mismatches: list[str]
    lost_examples: list[str]
    n_mismatch: int
    lost: int
    stale: int
    duration_s: float

    @classmethod
    def merge(cls, clients: Iterable[Client], duration_s: float) -> Results:
        r = cls([], [], [], [], [], [], Counter(), [], [], 0, 0, 0, duration_s)
        for c in clients:
            rec = c.rec
            r.sent += rec.sent.tolist()
            r.recv += rec.recv.tolist()
            r.shard += rec.shard.tolist()
            r.op += rec.op.tolist()
            r.status += rec.status.tolist()
            r.errors += rec.errors
            r.conn_errors.update(rec.conn_errors)
            r.mismatches += rec.mismatches
            r.lost_examples += rec.lost_examples
            r.n_mismatch += rec.n_mismatch
            r.lost += rec.lost
            r.stale += rec.stale
        return r

    def __repr__(self) -> str:  # assertion messages: not 100 000 timestamps
        return f"<Results requests={self.requests} errors={len(self.errors)}>"

    @property
    def requests(self) -> int:
        return len(self.status)

    def errors_by_kind(self, ops: Iterable[int] | None = None,
                       shards: Iterable[int] | None = None) -> Counter[str]:
        ops_s = set(ops) if ops is not None else None
        shards_s = set(shards) if shards is not None else None
        out: Counter[str] = Counter()
        for _s, _r, shard, op, kind in self.errors:
            if (ops_s is None or op in ops_s) and (shards_s is None or shard in shards_s):
                out[f"{OP_NAMES[op]}: {kind}"] += 1
        return out

    def n_errors(self, **kw: Any) -> int:
        return sum(self.errors_by_kind(**kw).values())

    def first_ok_after(self, shard: int, t: float) -> float | None:
        """Reply time of the first successful reply for ``shard`` received after ``t``."""
        best: float | None = None
        for i, st in enumerate(self.status):
            if st in (OK, STALE) and self.shard[i] == shard and self.recv[i] > t:
                if best is None or self.recv[i] < best:
                    best = self.recv[i]
        return best

    def latencies(self, shards: Iterable[int], t0: float, t1: float,
                  statuses: Iterable[int] = (OK, STALE)) -> list[float]:
        sh, sts = set(shards), set(statuses)
        return sorted(self.recv[i] - self.sent[i] for i in range(len(self.status))
                      if self.shard[i] in sh and t0 <= self.sent[i] < t1
                      and self.status[i] in sts)

    def acked_writes(self, shard: int, t0: float, t1: float) -> int:
        return sum(1 for i in range(len(self.status))
                   if self.shard[i] == shard and self.op[i] in (SET, INCR)
                   and self.status[i] == OK and t0 <= self.recv[i] < t1)

    def summary(self) -> str:
        errs = dict(self.errors_by_kind().most_common())
        unanswered = sum(1 for s in self.status if s == UNANSWERED)
        return (f"requests={self.requests} ({self.requests / max(self.duration_s, 1e-9):.0f}/s) "
                f"errors={sum(errs.values())} unanswered={unanswered} "
                f"mismatched={self.n_mismatch} stale_reads={self.stale} "
                f"lost_acked_during_load={self.lost}\n"
                f"    errors_by_kind={errs or '{}'}\n"
                f"    connection_events={dict(self.conn_errors) or '{}'}")


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of sorted ``values`` (nearest rank)."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, int(round(q * len(values))) - 1))]


# -- the load through the proxy (trio, raw sockets + hiredis) ---------------------------------


class _Broken(Exception):
    pass


class Load:
    """``clients`` connections to ``host:port``, each pinned to one shard (round robin), each
    sending pipelines of ``depth`` commands, then sleeping ``pace_s`` x U(0.5, 1.5).

    ``control_shards``: one more client per listed shard, on the same trio loop, that talks
    straight to that shard's master instead of the proxy (``control_results()``): it lives in
    the same environment (CPU, VM, servers) minus the proxy, the yardstick for latency."""

    def __init__(self, host: str, port: int, shardmap: ShardMap, *, clients: int = 50,
                 depth: int = 8, keys: int = 20, counters: int = 4, pace_s: float = 0.08,
                 prefix: str | None = None, seed: int | None = None,
                 reply_timeout_s: float = 20.0, control_shards: Iterable[int] = (),
                 alive: Callable[[], bool] | None = None) -> None:
        self.host, self.port, self.shardmap, self.alive = host, port, shardmap, alive
        self.depth, self.pace_s, self.reply_timeout_s = depth, pace_s, reply_timeout_s
        self.prefix = prefix or f"chaos-{os.urandom(3).hex()}"
        self.seed = seed if seed is not None else random.randrange(1 << 30)
        self.clients = [Client(i, self.prefix, i % shardmap.n, shardmap, keys, counters)
                        for i in range(clients)]
        self.controls = [Client(clients + i, self.prefix + "-ctl", s, shardmap, keys, counters)
                         for i, s in enumerate(control_shards)]
        for c in self.controls:
            c.port = shardmap.ports[c.shard]
        self.last_ok = [0.0] * shardmap.n  # reply time of the latest success per shard (live)
        self.max_lag = (0.0, 0.0)  # the load thread's worst scheduling delay, and when
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-load", daemon=True)
        self._error: BaseException | None = None
        self._results: Results | None = None
        self._gc_was_enabled = True
        self.t_start = self.t_end = 0.0

    # -- control (test thread) ---------------------------------------------------------------
    def start(self, timeout_s: float = 30) -> Load:
        # No garbage-collector pauses in the load generator while it runs (a full collection
        # of this process takes tens of ms: a latency spike that is not the proxy's); the
        # load makes no reference cycles worth collecting. Restored by stop().
        gc.collect()
        gc.freeze()
        self._gc_was_enabled = gc.isenabled()
        gc.disable()
        self.t_start = time.monotonic()
        for c in self.clients + self.controls:
            c.t0 = self.t_start
        self._thread.start()
        try:
            wait_until(lambda: self._error is not None
                       or all(c.ready for c in self.clients + self.controls),
                       timeout_s, "every load client to preload and get one pipeline answered")
        except BaseException:
            self.stop()
            raise
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> Results:
        """Stop the clients (each finishes its pipeline in flight); idempotent."""
        if self._results is None:
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join(self.reply_timeout_s + 10)
            if self._thread.is_alive():
                raise RuntimeError("the load thread did not stop")
            self.t_end = time.monotonic()
            if self._gc_was_enabled:
                gc.enable()
            gc.unfreeze()
            if self._error is not None:
                raise self._error
            self._results = Results.merge(self.clients, self.t_end - self.t_start)
        return self._results

    def control_results(self) -> Results:
        """What the direct control clients saw (after ``stop``)."""
        assert self._results is not None, "stop() first"
        return Results.merge(self.controls, self.t_end - self.t_start)

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_served(self, t: float, timeout_s: float, shards: Iterable[int] | None = None,
                    what: str = "") -> float:
        """Wait until every shard in ``shards`` (default all) had a success after ``t``;
        returns the time that happened (the latest of the first successes)."""
        sh = list(shards) if shards is not None else list(range(self.shardmap.n))
        deadline = time.monotonic() + timeout_s
        while not all(self.last_ok[s] > t for s in sh):
            if self._error is not None:
                raise self._error
            if self.alive is not None and not self.alive():
                raise AssertionError("rproxy exited while the load was running (see its log)")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"timed out waiting for {what or f'shards {sh}'} to be served again "
                    f"(last successes: {self.last_ok}, now {time.monotonic()})")
            time.sleep(0.01)
        return time.monotonic()

    # -- the trio side -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            self._error = exc

    async def _main(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._lag_monitor)
            for c in self.clients + self.controls:
                nursery.start_soon(self._client, c)

    async def _lag_monitor(self) -> None:
        """The load generator's own stalls (a late wake-up of a 10 ms sleep), so a latency
        figure is never blamed on the proxy when the test process itself was stuck."""
        while not self._stop.is_set():
            t = time.monotonic()
            await trio.sleep(0.01)
            lag = time.monotonic() - t - 0.01
            if lag > self.max_lag[0]:
                self.max_lag = (lag, t)

    async def _client(self, c: Client) -> None:
        rng = random.Random(self.seed * 1000 + c.cid)
        await trio.sleep(rng.uniform(0, self.pace_s))  # spread the clients
        while not self._stop.is_set():
            try:
                with trio.fail_after(5):
                    stream = await trio.open_tcp_stream(self.host, c.port or self.port)
            except (OSError, trio.TooSlowError) as exc:
                c.rec.conn_errors[f"connect failed: {type(exc).__name__}"] += 1
                await trio.sleep(0.2)
                continue
            async with stream:
                reader = hiredis.Reader()
                try:
                    while not self._stop.is_set():
                        await self._pipeline(c, rng, stream, reader)
                        await trio.sleep(self.pace_s * rng.uniform(0.5, 1.5))
                except _Broken as exc:
                    c.rec.conn_errors[str(exc)] += 1
            await trio.sleep(0.1)

    async def _pipeline(self, c: Client, rng: random.Random, stream: trio.SocketStream,
                        reader: hiredis.Reader) -> None:
        batch = c.build(rng, self.depth)
        payload = b"".join(encode_command(argv) for _, _, _, argv in batch)
        replies: list[tuple[Any, float]] = []
        broken = ""
        t_sent = time.monotonic()
        try:
            await stream.send_all(payload)
            with trio.move_on_after(self.reply_timeout_s) as scope:
                while len(replies) < len(batch):
                    data = await stream.receive_some(65536)
                    if not data:
                        raise EOFError
                    t = time.monotonic()
                    reader.feed(data)
                    while (reply := reader.gets()) is not False:
                        replies.append((reply, t))
            if scope.cancelled_caught:
                broken = f"no reply within {self.reply_timeout_s:.0f} s (client gave up)"
        except (OSError, EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
            broken = "connection closed by the proxy"
        except hiredis.ProtocolError:
            broken = "RESP protocol error from the proxy"
        if len(replies) > len(batch):
            c.rec.n_mismatch += len(replies) - len(batch)
            c.rec.mismatches.append(f"{len(replies) - len(batch)} replies more than requests")
            replies = replies[:len(batch)]
        c.settle(batch, replies, t_sent, broken)
        for (_op, item, _seq, _argv), (reply, t) in zip(batch, replies):
            if c.port is None and not isinstance(reply, hiredis.ReplyError):
                if t > self.last_ok[item.shard]:
                    self.last_ok[item.shard] = t
        if broken:
            raise _Broken(broken)
        if not c.ready and all(k.lo is not None for k in c.ctrs):
            c.ready = True


# -- the same load straight at the cluster (redis-py RedisCluster, one thread per client) -----


class DirectLoad:
    """The baseline: the same clients and model, with redis-py's ``RedisCluster`` (sync,
    ``ClusterPipeline``, one thread and one RedisCluster per client)."""

    def __init__(self, cluster: LocalCluster, shardmap: ShardMap, *, clients: int = 16,
                 depth: int = 8, keys: int = 20, counters: int = 4, pace_s: float = 0.08,
                 prefix: str | None = None, seed: int | None = None) -> None:
        self.cluster, self.shardmap = cluster, shardmap
        self.depth, self.pace_s = depth, pace_s
        self.prefix = prefix or f"direct-{os.urandom(3).hex()}"
        self.seed = seed if seed is not None else random.randrange(1 << 30)
        self.clients = [Client(i, self.prefix, i % shardmap.n, shardmap, keys, counters)
                        for i in range(clients)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True,
                                          name=f"direct-{c.cid}") for c in self.clients]
        self._errors: list[BaseException] = []
        self._results: Results | None = None
        self.last_ok = [0.0] * shardmap.n
        self.t_start = 0.0

    def start(self, timeout_s: float = 30) -> DirectLoad:
        self.t_start = time.monotonic()
        for c in self.clients:
            c.t0 = self.t_start
        for t in self._threads:
            t.start()
        try:
            wait_until(lambda: self._errors or all(c.ready for c in self.clients), timeout_s,
                       "every direct client to preload")
        except BaseException:
            self.stop()
            raise
        if self._errors:
            raise self._errors[0]
        return self

    def stop(self) -> Results:
        if self._results is None:
            self._stop.set()
            for t in self._threads:
                if t.is_alive():
                    t.join(30)
            if any(t.is_alive() for t in self._threads):
                raise RuntimeError("a direct-load thread did not stop")
            if self._errors:
                raise self._errors[0]
            self._results = Results.merge(self.clients, time.monotonic() - self.t_start)
        return self._results

    def __enter__(self) -> DirectLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_served(self, t: float, timeout_s: float, shards: Iterable[int]) -> float:
        sh = list(shards)
        wait_until(lambda: all(self.last_ok[s] > t for s in sh), timeout_s,
                   f"direct load: shards {sh} served again")
        return time.monotonic()

    def _run(self, c: Client) -> None:
        try:
            self._loop(c)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            self._errors.append(exc)

    def _loop(self, c: Client) -> None:
        rng = random.Random(self.seed * 1000 + c.cid)
        nodes = [ClusterNode(h, p) for h, p in self.cluster.seeds]
        rc = RedisCluster(startup_nodes=nodes, decode_responses=False, socket_timeout=2,
                          socket_connect_timeout=1)
        try:
            while not self._stop.is_set():
                batch = c.build(rng, self.depth)
                pipe = rc.pipeline(transaction=False)
                for _op, _item, _seq, argv in batch:  # str name: redis-py's command table
                    pipe.execute_command(argv[0].decode(), *argv[1:])
                t_sent = time.monotonic()
                try:
                    results: list[Any] = pipe.execute(raise_on_error=False)
                except (redis.RedisError, OSError) as exc:
                    results = [exc] * len(batch)
                finally:
                    pipe.reset()
                t = time.monotonic()
                replies: list[tuple[Any, float]] = []
                for (op, item, _seq, _argv), res in zip(batch, results, strict=True):
                    if isinstance(res, BaseException):
                        res = ErrorReply(f"{type(res).__name__}: {res}")
                    elif op in (SET, PRELOAD) and res is True:
                        res = b"OK"
                    replies.append((res, t))
                    if not isinstance(res, ErrorReply):
                        self.last_ok[item.shard] = t
                c.settle(batch, replies, t_sent, "")
                if not c.ready and all(k.lo is not None for k in c.ctrs):
                    c.ready = True
                time.sleep(self.pace_s * rng.uniform(0.5, 1.5))
        finally:
            rc.close()


# -- the final check --------------------------------------------------------------------------


@dataclass
class FinalCheck:
    keys: int = 0
    lost: int = 0
    stale_keys: int = 0
    mismatched: int = 0
    proxy_vs_direct: int = 0  # keys whose value read through the proxy differs from the direct read
    not_equal_model: int = 0  # keys whose value is not exactly the model's (no unknown allowed)
    examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"final: keys={self.keys} lost_acked={self.lost} (keys {self.stale_keys}) "
                f"mismatched={self.mismatched} proxy_vs_direct={self.proxy_vs_direct} "
                f"not_equal_model={self.not_equal_model}")


def read_direct(cluster: LocalCluster, keys: list[bytes]) -> dict[bytes, Any]:
    nodes = [ClusterNode(h, p) for h, p in cluster.seeds
             if cluster.node_by_port(p).process is not None]
    rc = RedisCluster(startup_nodes=nodes, decode_responses=False, socket_timeout=5)
    try:
        out: dict[bytes, Any] = {}
        for i in range(0, len(keys), 200):
            chunk = keys[i:i + 200]
            pipe = rc.pipeline(transaction=False)
            for k in chunk:
                pipe.get(k)
            out.update(zip(chunk, pipe.execute()))
        return out
    finally:
        rc.close()


def read_via_proxy(port: int, keys: list[bytes]) -> dict[bytes, Any]:
    out: dict[bytes, Any] = {}
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        reader = hiredis.Reader()
        for i in range(0, len(keys), 200):
            chunk = keys[i:i + 200]
            s.sendall(b"".join(encode_command([b"GET", k]) for k in chunk))
            got: list[Any] = []
            while len(got) < len(chunk):
                data = s.recv(1 << 20)
                if not data:
                    raise ConnectionError("proxy closed the connection")
                reader.feed(data)
                while (r := reader.gets()) is not False:
                    got.append(r)
            out.update(zip(chunk, got))
    return out


def final_check(clients: list[Client], cluster: LocalCluster,
                proxy_port: int | None) -> FinalCheck:
    """Read every key straight from the cluster (and through the proxy when given) and judge
    it against the model: lost acknowledged writes, impossible values, proxy/direct agreement."""
    keys = [k for c in clients for k in c.keys()]
    direct = read_direct(cluster, keys)
    via = read_via_proxy(proxy_port, keys) if proxy_port is not None else direct
    fc = FinalCheck(keys=len(keys))

    def note(what: str) -> None:
        if len(fc.examples) < 20:
            fc.examples.append(what)

    def tally(v: Any, equals_model: bool) -> None:
        fc.not_equal_model += not equals_model
        if v.status == MISMATCH:
            fc.mismatched += 1
            note(v.why)
        elif v.status == STALE:
            fc.lost += v.lost
            fc.stale_keys += 1
            note(v.why)

    for c in clients:
        for k in c.strs:
            v, _ = judge_str(k, direct[k.key])
            tally(v, direct[k.key] == (k.value(k.last) if k.last else None))
        for ct in c.ctrs:
            if ct.lo is None:
                continue
            raw = direct[ct.key]
            value = int(raw) if raw is not None and raw.lstrip(b"-").isdigit() else raw
            tally(judge_ctr(ct, value, final=True), value == ct.lo and ct.hi == ct.lo)
    for key in keys:
        if via[key] != direct[key]:
            fc.proxy_vs_direct += 1
            note(f"{key!r}: proxy {via[key]!r:.60} != direct {direct[key]!r:.60}")
    return fc
