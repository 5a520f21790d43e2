"""Differential data-type tests: the proxy must behave like one plain Redis server.

Every sequence below runs step by step on a standalone redis-server and through rproxy (in
front of a real 3 masters + 3 replicas cluster), with redis-py ``execute_command`` and *no*
response callbacks, so the raw replies (and raw error texts) are compared. Only where Redis
itself is not deterministic (random members, idle times, TTLs counting down) is a reply reduced
before the comparison, by the step's ``norm`` or ``tol``.

After each sequence every key it named is checked on the cluster: present exactly on the
master that owns its slot (with the same TYPE as on the standalone server) iff it exists on the
standalone server, and absent from every other master.

``test_cross_slot_is_refused`` holds the commands whose keys span slots: for now the proxy
answers them with Redis Cluster's own CROSSSLOT error (splitting MGET/MSET/DEL/EXISTS is a later
issue; update that one test when it lands).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from rproxy.core.slots import key_slot
from tests.support import node_client


RUN = uuid.uuid4().hex[:12]  # keeps this run's keys apart from any other run's
CROSSSLOT_TEXT = "CROSSSLOT Keys in request don't hash to the same slot"


# -- keys ---------------------------------------------------------------------------------------
class Keys:
    """Key factory for one test: every key carries the hash tag ``{RUN:tag}`` (so multi-key
    commands stay in one slot) and is remembered for the placement check and the cleanup."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.made: list[bytes] = []

    def prefix(self) -> str:
        return f"dt:{{{RUN}:{self.tag}}}:"

    def __call__(self, name: str) -> bytes:
        key = (self.prefix() + name).encode()
        if key not in self.made:
            self.made.append(key)
        return key

    def pattern(self, name: str) -> bytes:
        """A SORT BY/GET pattern in the same slot (not itself a key)."""
        return (self.prefix() + name).encode()


# -- steps and their comparison ----------------------------------------------------------------
@dataclass(frozen=True)
class Err:
    """A Redis error reply, raised or nested in an array: class, error code and text."""

    cls: str
    code: str | None
    text: str

    def __repr__(self) -> str:
        return f"Err({self.cls}: {self.code or ''} {self.text})"


@dataclass(frozen=True)
class Ref:
    """An argument taken from an earlier step's reply on the same server (``save=``)."""

    name: str


@dataclass
class Step:
    args: tuple[Any, ...]
    norm: Callable[[Any], Any] | None = None  # applied to both replies (not to errors)
    tol: float | None = None  # numeric tolerance (TTL/PTTL)
    save: str | None = None  # remember the reply under this name for a later Ref

    def text(self) -> str:
        parts = []
        for a in self.args:
            s = repr(a) if isinstance(a, bytes) and not a.isascii() else str(
                a.decode() if isinstance(a, bytes) else a)
            parts.append(s if len(s) <= 60 else s[:57] + "...")
        return " ".join(parts)


def S(*args: Any, norm: Callable[[Any], Any] | None = None, tol: float | None = None,
      save: str | None = None) -> Step:
    return Step(args, norm, tol, save)


def _clean(value: Any) -> Any:
    """Nested error objects (hiredis returns them inside arrays) become comparable ``Err``."""
    if isinstance(value, redis.RedisError):
        return Err(type(value).__name__, getattr(value, "status_code", None), str(value))
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def outcome(client: redis.Redis, args: tuple[Any, ...]) -> Any:
    try:
        return _clean(client.execute_command(*args))
    except redis.RedisError as exc:  # errors are results to compare, not test failures
        return _clean(exc)


def _close(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        if (a < 0) != (b < 0):  # -1 (no TTL) / -2 (no key) must match exactly
            return False
        return a == b if a < 0 else abs(a - b) <= tol
    return bool(a == b)


def run_both(std: redis.Redis, prx: redis.Redis, steps: list[Step]) -> None:
    """Run ``steps`` on both servers in lockstep; fail listing every differing step."""
    saved: dict[str, dict[str, Any]] = {"std": {}, "prx": {}}
    diffs: list[str] = []
    for i, step in enumerate(steps):
        got: dict[str, Any] = {}
        for side, client in (("std", std), ("prx", prx)):
            args = tuple(saved[side][a.name] if isinstance(a, Ref) else a for a in step.args)
            res = outcome(client, args)
            if step.save:
                saved[side][step.save] = res
            if step.norm is not None and not isinstance(res, Err):
                res = step.norm(res)
            got[side] = res
        a, b = got["std"], got["prx"]
        same = _close(a, b, step.tol) if step.tol is not None else a == b
        if not same:
            diffs.append(f"step {i}: {step.text()}\n    standalone: {a!r}\n    proxy:      {b!r}")
    assert not diffs, f"{len(diffs)} of {len(steps)} steps differ:\n" + "\n".join(diffs)


# -- norms --------------------------------------------------------------------------------------
def sorted_(x: Any) -> Any:
    return sorted(x) if isinstance(x, list) else x


def length(x: Any) -> Any:
    return len(x) if isinstance(x, list) else x


def pairs_sorted(x: Any) -> Any:
    return sorted(zip(x[::2], x[1::2])) if isinstance(x, list) else x


def member_of(*members: bytes) -> Callable[[Any], Any]:
    return lambda x: x in members


def fields(*names: bytes) -> Callable[[Any], Any]:
    """Only the named fields of a flat field/value reply (XINFO STREAM)."""
    def pick(x: Any) -> Any:
        d = dict(zip(x[::2], x[1::2]))
        return {n: d.get(n, "<missing>") for n in names}
    return pick


def drop_idle(x: Any) -> Any:
    """XPENDING extended form: [id, consumer, idle ms, deliveries] -> without the idle time."""
    return [[e[0], e[1], e[3]] for e in x] if isinstance(x, list) else x


def float_close(x: Any) -> Any:
    """GEODIST and geo coordinates as numbers rounded to 4 decimals (still exact on one build)."""
    if isinstance(x, list):
        return [float_close(v) for v in x]
    if isinstance(x, bytes):
        try:
            return round(float(x), 4)
        except ValueError:
            return x
    return x


# -- sequences ----------------------------------------------------------------------------------
def seq_strings(k: Keys) -> list[Step]:
    a, b, c, d, e, n, n2, f = (k(x) for x in ("a", "b", "c", "d", "e", "n", "n2", "f"))
    m1, m2, m3, m4, m5 = (k(f"m{i}") for i in range(1, 6))
    pxat = int(time.time() * 1000) + 120_000
    return [
        S("SET", a, "hello"), S("GET", a), S("SET", a, "v2", "GET"),
        S("SET", a, "v3", "NX"), S("SET", a, "v3", "XX"), S("GET", a),
        S("SET", b, "x", "XX"), S("GET", b), S("SET", b, "x", "NX"), S("SET", b, "y", "NX", "GET"),
        S("SET", a, "v4", "EX", 100), S("TTL", a, tol=2),
        S("SET", a, "v5", "KEEPTTL"), S("TTL", a, tol=2), S("GET", a),
        S("SET", a, "v6", "PX", 100_000), S("PTTL", a, tol=2000),
        S("SET", a, "v7", "XX", "GET"), S("TTL", a),
        S("SET", a, "v", "EX", 0), S("SET", a, "v", "EX", 10, "PX", 100),
        S("SET", a, "v", "EX", "x"),
        S("GETEX", a, "EX", 50), S("TTL", a, tol=2), S("GETEX", a, "PERSIST"), S("TTL", a),
        S("GETEX", a, "PXAT", pxat), S("PTTL", a, tol=2000), S("PEXPIRETIME", a),
        S("GETEX", a), S("GETEX", k("missing")),
        S("GETDEL", a), S("GETDEL", a), S("EXISTS", a),
        S("SET", c, "Hello World"), S("GETRANGE", c, 0, 4), S("GETRANGE", c, -5, -1),
        S("GETRANGE", c, 100, 200), S("GETRANGE", c, 5, 1),
        S("SETRANGE", c, 6, "Redis"), S("GET", c), S("SETRANGE", d, 5, "x"), S("GET", d),
        S("SETRANGE", d, -1, "x"),
        S("APPEND", c, "!!"), S("APPEND", e, "new"), S("GET", e), S("STRLEN", c),
        S("STRLEN", k("missing")),
        S("INCR", n), S("INCRBY", n, 10), S("DECR", n), S("DECRBY", n, 3), S("INCRBY", n, -100),
        S("GET", n), S("INCR", c), S("INCRBY", n, "1.5"),
        S("INCRBYFLOAT", f, "1.5"), S("INCRBYFLOAT", f, "2.0e2"), S("INCRBYFLOAT", f, "-0.25"),
        S("INCRBYFLOAT", c, 1), S("GET", f),
        S("SET", n2, "9223372036854775807"), S("INCR", n2), S("DECRBY", n2, "-1"),
        S("MSET", m1, 1, m2, 2, m3, 3), S("MGET", m1, m2, m3, k("missing")),
        S("MSETNX", m1, "x", m4, "y"), S("MSETNX", m4, "x", m5, "y"), S("MGET", m4, m5, m1),
        S("MSET", m1), S("SETNX", k("s1"), "a"), S("SETNX", k("s1"), "b"), S("GET", k("s1")),
        S("SETEX", k("se"), 100, "val"), S("TTL", k("se"), tol=2), S("GET", k("se")),
        S("SETEX", k("se"), -5, "val"),
        S("PSETEX", k("pe"), 100_000, "val"), S("PTTL", k("pe"), tol=2000),
        S("SET", k("l1"), "ohmytext"), S("SET", k("l2"), "mynewtext"),
        S("LCS", k("l1"), k("l2")), S("LCS", k("l1"), k("l2"), "LEN"),
        S("LCS", k("l1"), k("l2"), "IDX", "MINMATCHLEN", 4, "WITHMATCHLEN"),
        S("SET", k("bin"), b"\x00\r\n\xff$3\r\n*-1\r\n+OK:"), S("GET", k("bin")),
        S("STRLEN", k("bin")),
        S("SET", k("empty"), b""), S("GET", k("empty")), S("STRLEN", k("empty")),
        S("SET", k("big"), b"x" * 300_000 + b"\r\n"), S("GET", k("big")), S("STRLEN", k("big")),
        S("OBJECT", "ENCODING", n), S("OBJECT", "ENCODING", c), S("OBJECT", "ENCODING", k("big")),
        S("TYPE", c),
    ]


def seq_lists(k: Keys) -> list[Step]:
    lst, l2, l3, miss = k("l"), k("l2"), k("l3"), k("missing")
    return [
        S("RPUSH", lst, "a", "b", "c", "d", "e"), S("LPUSH", lst, "z", "y"),
        S("LRANGE", lst, 0, -1),
        S("LPOP", lst), S("LPOP", lst, 2), S("RPOP", lst), S("RPOP", lst, 2),
        S("LRANGE", lst, 0, -1),
        S("LPOP", miss), S("LPOP", miss, 2), S("RPOP", lst, 0), S("LPOP", lst, -1),
        S("RPUSH", lst, "a", "b", "c", "a", "b", "c", "a"), S("LLEN", lst),
        S("LINDEX", lst, 0), S("LINDEX", lst, -1), S("LINDEX", lst, 100), S("LINDEX", lst, "x"),
        S("LSET", lst, 0, "A"), S("LSET", lst, 100, "x"), S("LSET", miss, 0, "x"),
        S("LINSERT", lst, "BEFORE", "b", "X"), S("LINSERT", lst, "AFTER", "c", "Y"),
        S("LINSERT", lst, "BEFORE", "nosuch", "Q"), S("LINSERT", lst, "MIDDLE", "b", "Q"),
        S("LRANGE", lst, 0, -1), S("LREM", lst, 2, "a"), S("LREM", lst, -1, "c"),
        S("LREM", lst, 0, "nosuch"), S("LRANGE", lst, 0, -1),
        S("LPOS", lst, "b"), S("LPOS", lst, "b", "RANK", 2), S("LPOS", lst, "b", "COUNT", 0),
        S("LPOS", lst, "b", "RANK", -1, "MAXLEN", 3), S("LPOS", lst, "nosuch"),
        S("LPOS", lst, "b", "RANK", 0), S("LPOS", lst, "b", "COUNT", 0, "MAXLEN", 2),
        S("LTRIM", lst, 1, -2), S("LRANGE", lst, 0, -1), S("LRANGE", lst, -100, 100),
        S("LRANGE", lst, 5, 1),
        S("LMOVE", lst, l2, "LEFT", "RIGHT"), S("LMOVE", lst, l2, "RIGHT", "LEFT"),
        S("LMOVE", lst, l2, "UP", "LEFT"), S("RPOPLPUSH", lst, l2), S("RPOPLPUSH", miss, l2),
        S("LRANGE", l2, 0, -1), S("LRANGE", lst, 0, -1),
        S("LMPOP", 2, miss, lst, "LEFT", "COUNT", 2), S("LMPOP", 2, lst, l2, "RIGHT"),
        S("LMPOP", 1, miss, "LEFT"), S("LMPOP", 0, lst, "LEFT"), S("LMPOP", 1, lst, "SIDEWAYS"),
        S("LPUSHX", l3, "a"), S("RPUSHX", l2, "tail"), S("LPUSHX", l2, "head"),
        S("LRANGE", l2, 0, -1), S("LRANGE", lst, 0, -1), S("EXISTS", l3), S("EXISTS", lst),
        S("RPUSH", lst, "again"),
        S("RPUSH", k("big"), *[f"item{i}" for i in range(300)]), S("LRANGE", k("big"), 0, -1),
        S("OBJECT", "ENCODING", lst), S("OBJECT", "ENCODING", k("big")), S("TYPE", lst),
    ]


def seq_hashes(k: Keys) -> list[Step]:
    h, hb, miss = k("h"), k("hb"), k("missing")
    return [
        S("HSET", h, "f1", "v1", "f2", "v2", "f3", 3), S("HSET", h, "f1", "v1b"),
        S("HSET", h, "f1"), S("HGET", h, "f1"), S("HGET", h, "nosuch"), S("HGET", miss, "f1"),
        S("HMGET", h, "f1", "nosuch", "f2"), S("HGETALL", h), S("HGETALL", miss),
        S("HDEL", h, "f2", "nosuch"), S("HEXISTS", h, "f1"), S("HEXISTS", h, "f2"),
        S("HINCRBY", h, "f3", 5), S("HINCRBY", h, "f1", 1), S("HINCRBY", h, "f3", "x"),
        S("HINCRBYFLOAT", h, "fl", "1.5"), S("HINCRBYFLOAT", h, "fl", "1e3"),
        S("HINCRBYFLOAT", h, "f1", 1),
        S("HKEYS", h), S("HVALS", h), S("HLEN", h), S("HLEN", miss),
        S("HSETNX", h, "f1", "x"), S("HSETNX", h, "new", "x"), S("HGET", h, "new"),
        S("HSTRLEN", h, "f1"), S("HSTRLEN", h, "nosuch"), S("HGETALL", h),
        S("HRANDFIELD", h, 2, norm=length), S("HRANDFIELD", h, -5, "WITHVALUES", norm=length),
        S("HRANDFIELD", h, 100, norm=length), S("HRANDFIELD", h, norm=member_of(
            b"f1", b"f3", b"fl", b"new")), S("HRANDFIELD", miss),
        S("HSCAN", h, 0), S("HMSET", h, "a", "1", "b", "2"), S("HGETALL", h),
        S("HSET", hb, *[x for i in range(200) for x in (f"f{i}", f"v{i}")]),
        S("HSET", hb, "long", "x" * 100),
        S("HGETALL", hb, norm=pairs_sorted), S("HKEYS", hb, norm=sorted_), S("HLEN", hb),
        S("OBJECT", "ENCODING", h), S("OBJECT", "ENCODING", hb), S("TYPE", h),
        S("HDEL", h, "f1", "f3", "fl", "new", "a", "b"), S("EXISTS", h),
    ]


def seq_sets(k: Keys) -> list[Step]:
    s, s2, s3, d, miss = k("s"), k("s2"), k("s3"), k("dst"), k("missing")
    return [
        S("SADD", s, "a", "b", "c", "d"), S("SADD", s, "a", "e"), S("SREM", s, "d", "nosuch"),
        S("SMEMBERS", s, norm=sorted_), S("SISMEMBER", s, "a"), S("SISMEMBER", s, "z"),
        S("SMISMEMBER", s, "a", "z", "b"), S("SCARD", s), S("SCARD", miss),
        S("SADD", s2, "c", "d", "e", "f"),
        S("SINTER", s, s2, norm=sorted_), S("SUNION", s, s2, norm=sorted_),
        S("SDIFF", s, s2, norm=sorted_), S("SDIFF", s2, s, miss, norm=sorted_),
        S("SINTER", s, miss),
        S("SINTERSTORE", d, s, s2), S("SMEMBERS", d, norm=sorted_),
        S("SUNIONSTORE", d, s, s2), S("SMEMBERS", d, norm=sorted_),
        S("SDIFFSTORE", d, s, s2), S("SMEMBERS", d, norm=sorted_),
        S("SINTERSTORE", d, s, miss), S("EXISTS", d),
        S("SMOVE", s, s2, "a"), S("SMOVE", s, s2, "nosuch"), S("SMOVE", miss, s2, "a"),
        S("SMEMBERS", s, norm=sorted_), S("SMEMBERS", s2, norm=sorted_),
        S("SINTERCARD", 2, s, s2), S("SINTERCARD", 2, s, s2, "LIMIT", 1),
        S("SINTERCARD", 0, s), S("SINTERCARD", 2, s, s2, "LIMIT", -1),
        S("SADD", k("int"), 3, 1, 2), S("SMEMBERS", k("int")), S("OBJECT", "ENCODING", k("int")),
        S("OBJECT", "ENCODING", s),
        S("SADD", s3, *[f"m{i}" for i in range(20)]), S("SPOP", s3, 3, norm=length),
        S("SCARD", s3), S("SPOP", s3, norm=lambda x: isinstance(x, bytes)), S("SCARD", s3),
        S("SPOP", miss), S("SPOP", miss, 2), S("SRANDMEMBER", s2, -7, norm=length),
        S("SRANDMEMBER", s2, 2, norm=length), S("SRANDMEMBER", miss), S("TYPE", s),
    ]


def seq_zsets(k: Keys) -> list[Step]:
    z, lex, dst, za, zb, miss = k("z"), k("lex"), k("dst"), k("za"), k("zb"), k("missing")
    zu, zi, zd = k("zu"), k("zi"), k("zd")
    return [
        S("ZADD", z, 1, "a", 2, "b", 3, "c"), S("ZADD", z, "NX", 10, "a", 4, "d"),
        S("ZADD", z, "XX", 20, "a", 5, "e"), S("ZADD", z, "GT", "CH", 1, "a", 30, "b"),
        S("ZADD", z, "LT", "CH", 1, "c"), S("ZADD", z, "INCR", 5, "d"),
        S("ZADD", z, "XX", "INCR", 1, "nosuch"), S("ZADD", z, "NX", "XX", 1, "a"),
        S("ZADD", z, "GT", "LT", 1, "a"), S("ZADD", z, "INCR", 1, "a", 2, "b"),
        S("ZADD", z, "nan", "a"), S("ZADD", z, 1),
        S("ZRANGE", z, 0, -1, "WITHSCORES"), S("ZRANGE", z, "(1", 20, "BYSCORE", "LIMIT", 0, 2,
                                               "WITHSCORES"),
        S("ZRANGE", z, "+inf", "-inf", "BYSCORE", "REV"), S("ZRANGE", z, 0, -1, "REV"),
        S("ZRANGE", z, 0, 1, "LIMIT", 0, 1),
        S("ZADD", lex, 0, "a", 0, "b", 0, "c", 0, "d", 0, "e"),
        S("ZRANGE", lex, "[b", "(e", "BYLEX"),
        S("ZRANGE", lex, "+", "-", "BYLEX", "REV", "LIMIT", 1, 2),
        S("ZRANGE", lex, "b", "e", "BYLEX"),
        S("ZRANGESTORE", dst, z, 0, 1), S("ZRANGE", dst, 0, -1, "WITHSCORES"),
        S("ZRANGESTORE", dst, lex, "[c", "+", "BYLEX"), S("ZRANGE", dst, 0, -1, "WITHSCORES"),
        S("ZSCORE", z, "a"), S("ZSCORE", z, "nosuch"), S("ZMSCORE", z, "a", "nosuch", "b"),
        S("ZINCRBY", z, "2.5", "a"), S("ZINCRBY", z, "x", "a"),
        S("ZRANK", z, "a"), S("ZREVRANK", z, "a"), S("ZRANK", z, "nosuch"),
        S("ZCOUNT", z, "-inf", "+inf"), S("ZCOUNT", z, "(1", 3), S("ZCOUNT", z, "x", 3),
        S("ZLEXCOUNT", lex, "-", "+"), S("ZLEXCOUNT", lex, "[b", "[d"),
        S("ZREM", z, "e", "nosuch"), S("ZREMRANGEBYSCORE", z, "-inf", 1),
        S("ZRANGE", z, 0, -1, "WITHSCORES"), S("ZPOPMIN", z), S("ZPOPMAX", z, 2),
        S("ZPOPMIN", miss), S("ZCARD", z),
        S("ZADD", za, 1, "x", 2, "y", 3, "z"), S("ZADD", zb, 10, "y", 20, "z", 30, "w"),
        S("ZUNIONSTORE", zu, 2, za, zb, "WEIGHTS", 2, 3, "AGGREGATE", "MAX"),
        S("ZRANGE", zu, 0, -1, "WITHSCORES"),
        S("ZINTERSTORE", zi, 2, za, zb, "AGGREGATE", "MIN"), S("ZRANGE", zi, 0, -1, "WITHSCORES"),
        S("ZINTERSTORE", zi, 2, za, zb, "WEIGHTS", 1), S("ZDIFFSTORE", zd, 2, za, zb),
        S("ZRANGE", zd, 0, -1, "WITHSCORES"),
        S("ZUNION", 2, za, zb, "WITHSCORES"), S("ZINTER", 2, za, zb, "WEIGHTS", 1, "0.5",
                                                 "WITHSCORES"),
        S("ZDIFF", 2, zb, za, "WITHSCORES"), S("ZINTERCARD", 2, za, zb),
        S("ZRANDMEMBER", zb, -4, "WITHSCORES", norm=length),
        S("ZRANGEBYSCORE", za, "-inf", "+inf", "WITHSCORES"), S("ZREVRANGEBYLEX", lex, "+", "-"),
        S("ZMPOP", 2, miss, za, "MIN", "COUNT", 2), S("ZMPOP", 1, zb, "MAX"),
        S("ZMPOP", 1, miss, "MIN"), S("ZMPOP", 1, za, "MIDDLE"),
        S("EXISTS", z), S("ZADD", z, 1, "again"), S("OBJECT", "ENCODING", z), S("TYPE", z),
        S("ZADD", k("bigz"), *[x for i in range(200) for x in (i, f"m{i}")]),
        S("ZRANGE", k("bigz"), 0, -1, "WITHSCORES"), S("OBJECT", "ENCODING", k("bigz")),
    ]


def seq_streams(k: Keys) -> list[Step]:
    s, s2, s3, miss = k("s"), k("s2"), k("s3"), k("missing")
    info = fields(b"length", b"radix-tree-keys", b"groups", b"entries-added")
    return [
        S("XADD", s, "1-1", "f", "v"), S("XADD", s, "1-2", "f", "v2"),
        S("XADD", s, "2-0", "a", 1, "b", 2), S("XADD", s, "1-0", "x", "y"),
        S("XADD", s, "3-*", "f", "v"), S("XADD", s, "0-0", "f", "v"), S("XADD", s, "4-0", "f"),
        S("XADD", s2, "5-0", "f", "v"), S("XADD", miss, "NOMKSTREAM", "9-0", "f", "v"),
        S("XLEN", s), S("XLEN", miss),
        S("XRANGE", s, "-", "+"), S("XRANGE", s, "-", "+", "COUNT", 2), S("XRANGE", s, "(1-1", "+"),
        S("XREVRANGE", s, "+", "-", "COUNT", 2), S("XRANGE", s, "x", "+"),
        S("XREAD", "COUNT", 10, "STREAMS", s, s2, 0, 0), S("XREAD", "STREAMS", s, s2, "$", "$"),
        S("XREAD", "STREAMS", s, s2, "2-0", 0), S("XREAD", "COUNT", 1, "STREAMS", s, s2, 0, 0),
        S("XREAD", "STREAMS", s, s2, 0),
        S("XGROUP", "CREATE", s, "g", 0), S("XGROUP", "CREATE", s, "g", 0),
        S("XGROUP", "CREATE", miss, "g", "$"), S("XGROUP", "CREATE", s3, "g", "$", "MKSTREAM"),
        S("XREADGROUP", "GROUP", "g", "c1", "COUNT", 2, "STREAMS", s, ">"),
        S("XREADGROUP", "GROUP", "g", "c2", "STREAMS", s, ">"),
        S("XREADGROUP", "GROUP", "g", "c1", "STREAMS", s, 0),
        S("XREADGROUP", "GROUP", "nosuch", "c1", "STREAMS", s, ">"),
        S("XREADGROUP", "GROUP", "g", "c2", "STREAMS", s, ">"),
        S("XACK", s, "g", "1-1", "9-9"), S("XPENDING", s, "g"),
        S("XPENDING", s, "g", "-", "+", 10, norm=drop_idle),
        S("XPENDING", s, "g", "-", "+", 10, "c2", norm=drop_idle),
        S("XCLAIM", s, "g", "c3", 0, "1-2"), S("XCLAIM", s, "g", "c3", 0, "2-0", "JUSTID"),
        S("XPENDING", s, "g", "-", "+", 10, norm=drop_idle),
        S("XAUTOCLAIM", s, "g", "c4", 0, "0-0", "COUNT", 1),
        S("XAUTOCLAIM", s, "g", "c4", 0, "0-0", "COUNT", 10, "JUSTID"),
        S("XPENDING", s, "g"), S("XINFO", "GROUPS", s),
        S("XDEL", s, "1-1", "99-0"), S("XLEN", s), S("XTRIM", s, "MAXLEN", 3),
        S("XRANGE", s, "-", "+"), S("XTRIM", s, "MINID", "3-0"), S("XRANGE", s, "-", "+"),
        S("XTRIM", s, "MAXLEN", "x"), S("XLEN", s),
        S("XINFO", "STREAM", s, norm=info), S("XINFO", "STREAM", s3, norm=info),
        S("XINFO", "STREAM", miss), S("TYPE", s),
    ]


def seq_bitmaps(k: Keys) -> list[Step]:
    b, bs, b1, b2, d, bf = k("b"), k("bs"), k("b1"), k("b2"), k("dst"), k("bf")
    return [
        S("SETBIT", b, 7, 1), S("SETBIT", b, 7, 0), S("SETBIT", b, 100, 1), S("GETBIT", b, 100),
        S("GETBIT", b, 1000), S("GETBIT", k("missing"), 0), S("SETBIT", b, 1, 2),
        S("SETBIT", b, -1, 1), S("GET", b),
        S("SET", bs, "foobar"), S("BITCOUNT", bs), S("BITCOUNT", bs, 0, 0), S("BITCOUNT", bs, 1, 1),
        S("BITCOUNT", bs, 5, 30, "BIT"), S("BITCOUNT", bs, -2, -1, "BYTE"), S("BITCOUNT", bs, 0),
        S("BITPOS", bs, 1), S("BITPOS", bs, 0, 2), S("BITPOS", bs, 1, 2, -1, "BYTE"),
        S("BITPOS", bs, 1, 7, 15, "BIT"), S("BITPOS", bs, 2),
        S("SET", b1, "abc"), S("SET", b2, b"ab\xff\x00"),
        S("BITOP", "AND", d, b1, b2), S("GET", d), S("BITOP", "OR", d, b1, b2), S("GET", d),
        S("BITOP", "XOR", d, b1, b2, bs), S("GET", d), S("BITOP", "NOT", d, b1), S("GET", d),
        S("BITOP", "NOT", d, b1, b2), S("BITOP", "NAND", d, b1),
        S("BITFIELD", bf, "SET", "u8", 0, 255, "GET", "u8", 0, "INCRBY", "u8", 0, 10,
          "OVERFLOW", "SAT", "INCRBY", "u8", 0, 300, "OVERFLOW", "FAIL", "INCRBY", "u8", 0, 1),
        S("BITFIELD", bf, "GET", "i16", "#1", "SET", "i5", 100, -3, "GET", "i5", 100),
        S("BITFIELD", bf, "GET", "u64", 0), S("BITFIELD", bf, "BOGUS", "u8", 0),
        S("BITFIELD_RO", bf, "GET", "u8", 0, "GET", "u4", 4),
        S("BITFIELD_RO", bf, "SET", "u8", 0, 1),
        S("GET", bf), S("TYPE", bf),
    ]


def seq_hyperloglog(k: Keys) -> list[Step]:
    h1, h2, h3, s = k("h1"), k("h2"), k("h3"), k("str")
    return [
        S("PFADD", h1, "a", "b", "c", "d"), S("PFADD", h1, "a"), S("PFADD", h2, *"cdefg"),
        S("PFADD", k("h4")), S("PFCOUNT", h1), S("PFCOUNT", h1, h2), S("PFCOUNT", k("missing")),
        S("PFMERGE", h3, h1, h2), S("PFCOUNT", h3), S("PFMERGE", h3), S("PFCOUNT", h3, h1, h2),
        S("SET", s, "not an hll"), S("PFCOUNT", s), S("PFADD", s, "a"), S("PFMERGE", h3, s),
        S("GET", h1), S("GET", h3), S("TYPE", h1),
        S("PFADD", k("big"), *[f"e{i}" for i in range(3000)]), S("PFCOUNT", k("big")),
    ]


def seq_geo(k: Keys) -> list[Step]:
    g, d1, d2, d3, d4 = k("g"), k("d1"), k("d2"), k("d3"), k("d4")
    pal, cat = (13.361389, 38.115556, "Palermo"), (15.087269, 37.502669, "Catania")
    return [
        S("GEOADD", g, *pal, *cat), S("GEOADD", g, "NX", "CH", *pal, 12.758489, 38.788135, "edge1"),
        S("GEOADD", g, "XX", "CH", 13.361389, 38.0, "Palermo", 1, 1, "nowhere"),
        S("GEOADD", g, "XX", "CH", *pal), S("GEOADD", g, "NX", "XX", *pal),
        S("GEOADD", g, 200, 100, "bad"),
        S("GEOPOS", g, "Palermo", "nosuch", "Catania"), S("GEODIST", g, "Palermo", "Catania"),
        S("GEODIST", g, "Palermo", "Catania", "km"), S("GEODIST", g, "Palermo", "nosuch"),
        S("GEODIST", g, "Palermo", "Catania", "parsecs"),
        S("GEOHASH", g, "Palermo", "Catania", "nosuch"),
        S("GEOSEARCH", g, "FROMLONLAT", 15, 37, "BYRADIUS", 200, "km", "ASC", "WITHCOORD",
          "WITHDIST", "WITHHASH"),
        S("GEOSEARCH", g, "FROMMEMBER", "Palermo", "BYBOX", 400, 400, "km", "DESC", "COUNT", 2),
        S("GEOSEARCH", g, "FROMMEMBER", "nosuch", "BYRADIUS", 10, "km"),
        S("GEOSEARCH", g, "FROMLONLAT", 15, 37, "BYRADIUS", 200, "km", "BYBOX", 1, 1, "km"),
        S("GEOSEARCHSTORE", d1, g, "FROMLONLAT", 15, 37, "BYRADIUS", 200, "km", "ASC"),
        S("ZRANGE", d1, 0, -1, "WITHSCORES"),
        S("GEOSEARCHSTORE", d2, g, "FROMLONLAT", 15, 37, "BYRADIUS", 200, "km", "STOREDIST"),
        S("ZRANGE", d2, 0, -1, "WITHSCORES"),
        S("GEORADIUS", g, 15, 37, 200, "km", "ASC", "STORE", d3),
        S("ZRANGE", d3, 0, -1, "WITHSCORES"),
        S("GEORADIUS", g, 15, 37, 200, "km", "STOREDIST", d4), S("ZRANGE", d4, 0, -1, "WITHSCORES"),
        S("GEORADIUS", g, 15, 37, 200, "km", "WITHDIST", "ASC"),
        S("GEORADIUSBYMEMBER", g, "Palermo", 200, "km", "ASC"),
        S("GEORADIUS_RO", g, 15, 37, 200, "km", "COUNT", 1, "ASC"),
        S("GEOPOS", g, "Palermo", norm=float_close), S("TYPE", g),
    ]


def seq_keys(k: Keys) -> list[Step]:
    k1, k2, k3, k5, k6, kl = (k(x) for x in ("k1", "k2", "k3", "k5", "k6", "kl"))
    miss = k("missing")
    at = int(time.time()) + 3600
    pat = int(time.time() * 1000) + 7_200_000
    return [
        S("SET", k1, "v"), S("RPUSH", kl, "a"), S("EXISTS", k1, k2, k1), S("EXISTS", miss),
        S("TYPE", k1), S("TYPE", kl), S("TYPE", miss),
        S("EXPIRE", k1, 100, "NX"), S("EXPIRE", k1, 200, "NX"), S("EXPIRE", k1, 50, "GT"),
        S("EXPIRE", k1, 200, "GT"), S("EXPIRE", k1, 300, "LT"), S("EXPIRE", k1, 150, "LT"),
        S("EXPIRE", k1, 100, "XX"), S("EXPIRE", k2, 100, "XX"), S("EXPIRE", miss, 100),
        S("TTL", k1, tol=2), S("EXPIRE", k1, 10, "NX", "XX"), S("EXPIRE", k1, 10, "GT", "LT"),
        S("EXPIRE", k1, "soon"), S("EXPIRE", k1, 10, "MAYBE"),
        S("PEXPIRE", k1, 500_000), S("PTTL", k1, tol=2000), S("PEXPIRE", k1, 400_000, "GT"),
        S("EXPIREAT", k1, at), S("EXPIRETIME", k1), S("TTL", k1, tol=2),
        S("EXPIREAT", k1, at - 10, "GT"), S("EXPIREAT", k1, at - 10, "LT"), S("EXPIRETIME", k1),
        S("PEXPIREAT", k1, pat), S("PEXPIRETIME", k1), S("PTTL", k1, tol=2000),
        S("PERSIST", k1), S("PERSIST", k1), S("TTL", k1), S("TTL", miss), S("PTTL", miss),
        S("EXPIRETIME", k1), S("EXPIRE", kl, 100, "GT"), S("TTL", kl),
        S("RENAME", k1, k3), S("EXISTS", k1), S("GET", k3), S("RENAME", miss, k3),
        S("RENAMENX", k3, kl), S("RENAMENX", k3, k5), S("GET", k5), S("RENAME", k5, k5),
        S("COPY", k5, k6), S("COPY", k5, k6), S("SET", k5, "new"), S("COPY", k5, k6, "REPLACE"),
        S("GET", k6), S("COPY", miss, k6), S("COPY", k5, k6, "DB", 0),
        S("SET", k("t1"), 1), S("SET", k("t2"), 2), S("TOUCH", k("t1"), k("t2"), miss),
        S("DEL", k5, miss), S("UNLINK", k6, k("t1"), miss), S("DEL", k5),
        S("EXISTS", k5, k6, k("t1"), k("t2")),
        S("SET", k("enc_int"), "12345"), S("SET", k("enc_emb"), "short"),
        S("SET", k("enc_raw"), "x" * 100), S("OBJECT", "ENCODING", k("enc_int")),
        S("OBJECT", "ENCODING", k("enc_emb")), S("OBJECT", "ENCODING", k("enc_raw")),
        S("OBJECT", "ENCODING", miss), S("OBJECT", "REFCOUNT", k("enc_raw")),
        S("HSET", k("dh"), "f", "v", "g", "w"),
        S("DUMP", k("enc_raw"), save="d_str"), S("DUMP", k("dh"), save="d_hash"), S("DUMP", miss),
        S("RESTORE", k("r1"), 0, Ref("d_str")), S("GET", k("r1")),
        S("RESTORE", k("r1"), 0, Ref("d_str")), S("RESTORE", k("r1"), 0, Ref("d_hash"), "REPLACE"),
        S("HGETALL", k("r1")), S("TYPE", k("r1")), S("RESTORE", k("r2"), 100_000, Ref("d_str")),
        S("PTTL", k("r2"), tol=2000), S("RESTORE", k("r3"), 0, b"\x00garbage"),
        S("RESTORE", k("r3"), pat, Ref("d_str"), "ABSTTL"), S("PEXPIRETIME", k("r3")),
        S("RESTORE", k("r4"), 0, Ref("d_str"), "IDLETIME", 100), S("GET", k("r4")),
    ]


def seq_sort(k: Keys) -> list[Step]:
    """SORT without BY/GET patterns (LIMIT, ALPHA, DESC, BY nosort, STORE)."""
    sl, d, ss = k("sl"), k("dst"), k("ss")
    return [
        S("RPUSH", sl, 3, 1, 2), S("SORT", sl), S("SORT", sl, "DESC"), S("SORT", sl, "LIMIT", 0, 2),
        S("SORT", sl, "LIMIT", 1, 1, "DESC"), S("SORT", sl, "LIMIT", 0),
        S("SADD", ss, "banana", "apple", "cherry"), S("SORT", ss, "ALPHA"), S("SORT", ss),
        S("SORT", ss, "ALPHA", "DESC", "LIMIT", 0, 2),
        S("SORT", sl, "BY", "nosort"), S("SORT", sl, "BY", "nosort", "DESC"),
        S("SORT", sl, "DESC", "STORE", d), S("LRANGE", d, 0, -1), S("TYPE", d),
        S("SORT", ss, "ALPHA", "STORE", d), S("LRANGE", d, 0, -1),
        S("SORT_RO", sl, "DESC"), S("SORT_RO", sl, "ALPHA", "DESC", "LIMIT", 1, 5),
        S("SORT_RO", sl, "STORE", d), S("SORT", k("missing"), "STORE", d), S("EXISTS", d),
        S("SORT", sl, "BY", "nosort", "STORE", d), S("LRANGE", d, 0, -1),
    ]


def seq_sort_patterns(k: Keys) -> list[Step]:
    """SORT BY/GET with patterns that name other keys, all in the sorted key's slot, and GET #.
    (Redis cluster nodes older than 7.4 refuse any GET and any BY pattern with a '*'.)"""
    sl, d = k("sl"), k("dst")
    w, o = k.pattern("w_*"), k.pattern("o_*")
    return [
        S("RPUSH", sl, 3, 1, 2),
        S("MSET", k("w_1"), 30, k("w_2"), 10, k("w_3"), 20),
        S("MSET", k("o_1"), "one", k("o_2"), "two", k("o_3"), "three"),
        S("SORT", sl, "BY", w), S("SORT", sl, "BY", w, "DESC"),
        S("SORT", sl, "BY", w, "GET", o, "GET", "#"), S("SORT", sl, "BY", "nosort", "GET", o),
        S("SORT", sl, "BY", w, "GET", o, "STORE", d), S("LRANGE", d, 0, -1),
        S("SORT_RO", sl, "BY", w, "GET", "#", "GET", o),
        S("SORT", sl, "GET", "#", "GET", "#", "DESC"), S("SORT_RO", sl, "BY", "nosort", "GET", "#"),
    ]


def seq_scripting(k: Keys) -> list[Step]:
    a, b = k("a"), k("b")
    return [
        S("EVAL", "return redis.call('SET', KEYS[1], ARGV[1])", 1, a, "v1"),
        S("EVAL", "return redis.call('GET', KEYS[1])", 1, a),
        S("EVAL", "return {KEYS[1], KEYS[2], ARGV[1], 1, 2.9, true, false, {1, {2, 'x'}}}",
          2, a, b, "arg"),
        S("EVAL", "redis.call('SET', KEYS[1], 'p'); redis.call('SET', KEYS[2], 'q'); "
                  "return redis.call('MGET', KEYS[1], KEYS[2], KEYS[3])", 3, a, b, k("missing")),
        S("EVAL", "return redis.call('INCR', KEYS[1])", 1, a),
        S("EVAL", "return redis.pcall('INCR', KEYS[1])", 1, a),
        S("EVAL", "return {1, redis.pcall('INCR', KEYS[1]), 'after'}", 1, a),
        S("EVAL", "return redis.status_reply('FINE')", 0),
        S("EVAL", "return redis.error_reply('MYERR boom')", 0),
        S("EVAL", "return nil", 0), S("EVAL", "return ''", 0), S("EVAL", "return 'x' ..", 0),
        S("EVAL", "return 1", "notanumber"), S("EVAL", "return 1", -1), S("EVAL", "return 1", 3, a),
        S("EVAL", "return #KEYS + #ARGV", 2, a, b, "x", "y", "z"),
        S("EVAL", "return redis.call('HSET', KEYS[1], 'f', ARGV[1])", 1, k("h"), "1"),
        S("EVAL", "return redis.call('LPUSH', KEYS[1], 'x')", 1, k("h")),
        S("EVAL_RO", "return redis.call('GET', KEYS[1])", 1, b),
        S("EVAL_RO", "return redis.call('SET', KEYS[1], 'x')", 1, b),
        S("GET", a), S("GET", b), S("HGETALL", k("h")),
    ]


def seq_errors(k: Keys) -> list[Step]:
    wt, x = k("wt"), k("x")
    return [
        # WRONGTYPE from every type's commands
        S("SET", wt, "v"), S("LPUSH", wt, "x"), S("HGET", wt, "f"), S("SADD", wt, "a"),
        S("ZADD", wt, 1, "a"), S("XADD", wt, "1-1", "f", "v"), S("PFADD", wt, "a"),
        S("GEOADD", wt, 1, 1, "m"), S("LRANGE", wt, 0, -1), S("SMEMBERS", wt), S("ZSCORE", wt, "a"),
        S("RPUSH", x, "l"), S("GET", x), S("INCR", x), S("APPEND", x, "a"),
        S("SETRANGE", x, 0, "a"),
        S("BITCOUNT", x), S("SINTER", x, wt), S("ZUNIONSTORE", k("zd"), 1, x),
        # wrong arity
        S("GET"), S("GET", x, x), S("SET", x), S("LPUSH", x), S("HSET", x, "f"), S("ZADD", x, 1),
        S("XADD", x), S("EXPIRE", x), S("MGET"), S("DEL"), S("EVAL"), S("GETRANGE", x, 0),
        S("OBJECT", "ENCODING"), S("XGROUP", "CREATE", x), S("TYPE"), S("PING", "a", "b"),
        # syntax errors
        S("SET", x, "v", "EX", 10, "PX", 10), S("SET", x, "v", "BOGUS"),
        S("SET", x, "v", "NX", "XX"),
        S("ZADD", x, "NX", "XX", 1, "a"), S("LPOS", x, "a", "BOGUS", 1), S("GETEX", x, "EX"),
        S("GEOSEARCH", x, "BOGUS"), S("BITFIELD", x, "BOGUS"), S("SORT", x, "BOGUS"),
        S("ZRANGE", x, 0, 1, "BOGUS"), S("XTRIM", x, "BOGUS", 1), S("COPY", x, wt, "BOGUS"),
        # not an integer / not a float / out of range
        S("SET", k("s"), "abc"), S("INCRBY", k("s"), "abc"), S("INCR", k("s")),
        S("EXPIRE", k("s"), "abc"), S("LRANGE", x, "a", "b"), S("SETRANGE", k("s"), -1, "x"),
        S("GETRANGE", k("s"), "x", 1), S("LINDEX", x, "x"), S("INCRBYFLOAT", k("s"), "abc"),
        S("ZADD", k("z"), "abc", "m"), S("SETEX", k("s"), "abc", "v"), S("SELECT", "abc"),
        S("SETBIT", k("s"), 2**40, 1), S("HINCRBY", k("h"), "f", "9223372036854775808"),
        # unknown commands and subcommands
        S("FOOBAR"), S("FOOBAR", "a", "b"), S("GET_", x),
        S("FOOBAR", *[f"arg{i:05d}" for i in range(40)]),
        S("X" * 200, "a"), S("XGROUP", "BOGUS", x), S("OBJECT", "BOGUS", x),
        S("XINFO", "BOGUS", x),
        # lower and mixed case are the same commands
        S("set", k("lc"), "v"), S("gEt", k("lc")), S("object", "encoding", k("lc")),
        S("sort", x, "limit", 0, 1, "alpha", "store", k("lcd")), S("lrange", k("lcd"), 0, -1),
        S("TYPE", wt), S("GET", wt),
    ]


SEQUENCES = [
    pytest.param(seq_strings, id="strings"),
    pytest.param(seq_lists, id="lists"),
    pytest.param(seq_hashes, id="hashes"),
    pytest.param(seq_sets, id="sets"),
    pytest.param(seq_zsets, id="zsets"),
    pytest.param(seq_streams, id="streams"),
    pytest.param(seq_bitmaps, id="bitmaps"),
    pytest.param(seq_hyperloglog, id="hyperloglog"),
    pytest.param(seq_geo, id="geo"),
    pytest.param(seq_keys, id="keys-expiry"),
    pytest.param(seq_sort, id="sort"),
    pytest.param(seq_scripting, id="scripting"),
    pytest.param(seq_errors, id="errors"),
]


# -- fixtures -----------------------------------------------------------------------------------
def _raw(client: redis.Redis) -> redis.Redis:
    """No redis-py response callbacks: the replies are compared as they came off the wire."""
    client.response_callbacks.clear()
    return client


@pytest.fixture
def std(standalone):  # type: ignore[no-untyped-def]
    client = _raw(standalone.client(decode_responses=False))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def prx(proxy):  # type: ignore[no-untyped-def]
    client = _raw(proxy.client(decode_responses=False))
    try:
        yield client
    finally:
        client.close()


class Owners:
    """Direct clients of the cluster masters, one per master, and slot -> owner lookups."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.masters = cluster.masters()
        self.clients = {m.port: _raw(node_client(m)) for m in self.masters}
        self._owner: dict[int, int] = {}

    def owner_port(self, slot: int) -> int:
        if slot not in self._owner:
            self._owner[slot] = self.cluster.master_of_slot(slot).port
        return self._owner[slot]

    def owner(self, key: bytes) -> redis.Redis:
        return self.clients[self.owner_port(key_slot(key))]

    def close(self) -> None:
        for c in self.clients.values():
            c.close()


@pytest.fixture
def owners(cluster) -> Iterator[Owners]:  # type: ignore[no-untyped-def]
    o = Owners(cluster)
    try:
        yield o
    finally:
        o.close()


@dataclass
class Cleanup:
    keys: list[bytes] = field(default_factory=list)


@pytest.fixture
def cleanup(std: redis.Redis, owners: Owners) -> Iterator[Cleanup]:
    """Deletes every key a test names, on the standalone server and on its owning master
    (directly, so a broken proxy cannot leave keys behind for other test modules)."""
    c = Cleanup()
    yield c
    for key in c.keys:
        try:
            std.execute_command("DEL", key)
            owners.owner(key).execute_command("DEL", key)
        except redis.RedisError:
            pass


def assert_placement(keys: list[bytes], std: redis.Redis, owners: Owners) -> None:
    """Every key exists on the master owning its slot iff it exists on the standalone server
    (with the same TYPE there), and no other master holds it."""
    problems: list[str] = []
    for key in keys:
        slot = key_slot(key)
        want = int(std.execute_command("EXISTS", key))
        owner_port = owners.owner_port(slot)
        for port, client in owners.clients.items():
            if port == owner_port:
                got = int(client.execute_command("EXISTS", key))
                if got != want:
                    problems.append(f"{key!r} (slot {slot}): EXISTS on owner :{port} = {got}, "
                                    f"standalone = {want}")
                elif want:
                    t_std = std.execute_command("TYPE", key)
                    t_own = client.execute_command("TYPE", key)
                    if t_std != t_own:
                        problems.append(f"{key!r}: TYPE on owner {t_own!r}, standalone {t_std!r}")
            else:
                n = int(client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))
                held = client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, max(n, 1))
                if key in held:
                    problems.append(f"{key!r} (slot {slot}) found on non-owner master :{port}")
    assert not problems, "misplaced keys:\n" + "\n".join(problems)


# -- 1. differential ----------------------------------------------------------------------------
@pytest.mark.parametrize("build", SEQUENCES)
def test_same_replies_as_standalone(build: Callable[[Keys], list[Step]], std: redis.Redis,
                                    prx: redis.Redis, owners: Owners, cleanup: Cleanup) -> None:
    k = Keys(build.__name__.removeprefix("seq_"))
    steps = build(k)
    cleanup.keys.extend(k.made)
    assert steps and k.made
    run_both(std, prx, steps)
    # 2. placement of everything the sequence wrote (all in one slot, the tag's)
    assert_placement(k.made, std, owners)


def test_sort_patterns_get_the_clusters_own_error(prx: redis.Redis, cleanup: Cleanup) -> None:
    """A documented difference from one plain Redis: a Redis 7.0 cluster node refuses SORT's
    GET and pattern BY options ("denied in Cluster mode"), even when every key they name shares
    the sorted key's slot. The proxy passes that error through unchanged (it does not emulate
    SORT); ``BY nosort`` and the other SORT options work (see the "sort" sequence)."""
    k = Keys("sortpat")
    steps = seq_sort_patterns(k)
    cleanup.keys.extend(k.made)
    for step in steps[:3]:
        prx.execute_command(*step.args)
    for step in steps[3:]:
        if step.args[0] not in ("SORT", "SORT_RO"):
            continue
        with pytest.raises(redis.ResponseError, match=r"^(BY|GET) option of SORT denied in Cluster mode\.$"):
            prx.execute_command(*step.args)


def test_differential_harness_detects_a_difference(std: redis.Redis, prx: redis.Redis,
                                                   cleanup: Cleanup) -> None:
    """The comparison itself must not be vacuous: diverging data is reported."""
    k = Keys("harness")
    cleanup.keys.extend([k("a")])
    std.execute_command("SET", k("a"), "std-value")
    prx.execute_command("SET", k("a"), "prx-value")
    with pytest.raises(AssertionError, match="1 of 2 steps differ"):
        run_both(std, prx, [S("STRLEN", k("a")), S("GET", k("a"))])


def test_placement_check_detects_a_stray_key(std: redis.Redis, owners: Owners,
                                            cleanup: Cleanup) -> None:
    """The placement check itself must not be vacuous: a key the standalone server does not
    have, written straight to its owner, is reported."""
    key = Keys("stray")("k")
    cleanup.keys.append(key)
    owners.owner(key).execute_command("SET", key, "x")
    with pytest.raises(AssertionError, match="EXISTS on owner"):
        assert_placement([key], std, owners)


# -- 2. placement across the whole cluster ------------------------------------------------------
def _placement_cases() -> list[Any]:
    def case(name: str, write: Callable[[bytes, int], tuple[Any, ...]],
             read: Callable[[bytes], tuple[Any, ...]], expect: Callable[[int], Any]) -> Any:
        return pytest.param(write, read, expect, id=name)

    return [
        case("string", lambda key, i: ("SET", key, f"v{i}"), lambda key: ("GET", key),
             lambda i: f"v{i}".encode()),
        case("list", lambda key, i: ("RPUSH", key, i, "x"), lambda key: ("LRANGE", key, 0, -1),
             lambda i: [str(i).encode(), b"x"]),
        case("hash", lambda key, i: ("HSET", key, "f", i), lambda key: ("HGET", key, "f"),
             lambda i: str(i).encode()),
        case("set", lambda key, i: ("SADD", key, i), lambda key: ("SMEMBERS", key),
             lambda i: [str(i).encode()]),
        case("zset", lambda key, i: ("ZADD", key, i, "m"), lambda key: ("ZSCORE", key, "m"),
             lambda i: str(i).encode()),
        case("stream", lambda key, i: ("XADD", key, f"{i + 1}-0", "f", i),
             lambda key: ("XRANGE", key, "-", "+"),
             lambda i: [[f"{i + 1}-0".encode(), [b"f", str(i).encode()]]]),
        case("bitmap", lambda key, i: ("SETBIT", key, i, 1), lambda key: ("BITPOS", key, 1),
             lambda i: i),
        case("hyperloglog", lambda key, i: ("PFADD", key, *[f"e{j}" for j in range(i % 5 + 1)]),
             lambda key: ("PFCOUNT", key), lambda i: i % 5 + 1),
        case("geo", lambda key, i: ("GEOADD", key, 10 + i / 10, 20, "p"),
             lambda key: ("GEOHASH", key, "p"), None),
    ]


@pytest.mark.parametrize(("write", "read", "expect"), _placement_cases())
def test_keys_land_on_the_master_owning_their_slot(write: Any, read: Any, expect: Any,
                                                   std: redis.Redis, prx: redis.Redis,
                                                   owners: Owners, cleanup: Cleanup) -> None:
    """Untagged keys spread over all slots: each lands on its slot's master only."""
    assert len(owners.masters) == 3
    name = str(write(b"k", 0)[0]).lower()
    keys = [f"dt:{RUN}:place:{name}:{i}".encode() for i in range(48)]
    cleanup.keys.extend(keys)
    for i, key in enumerate(keys):
        prx.execute_command(*write(key, i))
        std.execute_command(*write(key, i))
    used = {owners.owner_port(key_slot(key)) for key in keys}
    assert used == set(owners.clients), "48 random keys should cover every master"
    for i, key in enumerate(keys):
        on_owner = owners.owner(key).execute_command(*read(key))
        wanted = expect(i) if expect is not None else std.execute_command(*read(key))
        assert on_owner == wanted, f"{key!r} on its owner: {on_owner!r}, expected {wanted!r}"
        assert prx.execute_command(*read(key)) == wanted
    assert_placement(keys, std, owners)


# -- 3. cross-slot ------------------------------------------------------------------------------
def _two_slots(name: str) -> tuple[bytes, bytes]:
    a = f"dt:{{{RUN}:xs:{name}:a}}:k1".encode()
    n = 0
    while True:
        b = f"dt:{{{RUN}:xs:{name}:b{n}}}:k2".encode()
        if key_slot(b) != key_slot(a):
            return a, b
        n += 1


SETUP = list[tuple[Any, ...]]
# MGET, MSET, DEL, UNLINK, EXISTS and TOUCH are split across slots and merged, and the
# read-only XREAD, SUNION/SINTER/SDIFF/SINTERCARD, ZUNION/ZINTER/ZDIFF/ZINTERCARD and PFCOUNT are
# computed from per-key reads: both are checked against a standalone Redis in
# test_crossshard.py. These stay CROSSSLOT.
CROSS_SLOT_CASES: list[tuple[str, Callable[[bytes, bytes], tuple[SETUP, tuple[Any, ...]]]]] = [
    ("SUNIONSTORE", lambda a, b: ([("SADD", b, "x")], ("SUNIONSTORE", a, b))),
    ("RENAME", lambda a, b: ([("SET", a, "v")], ("RENAME", a, b))),
    ("ZUNIONSTORE", lambda a, b: ([("ZADD", b, 1, "m")], ("ZUNIONSTORE", a, 1, b))),
    ("EVAL", lambda a, b: ([], ("EVAL", "redis.call('SET', KEYS[1], 'x'); "
                                        "redis.call('SET', KEYS[2], 'y'); return 1", 2, a, b))),
    ("SMOVE", lambda a, b: ([("SADD", a, "m")], ("SMOVE", a, b, "m"))),
    ("LMOVE", lambda a, b: ([("RPUSH", a, "x")], ("LMOVE", a, b, "LEFT", "RIGHT"))),
    ("BITOP", lambda a, b: ([("SET", b, "x")], ("BITOP", "OR", a, b))),
    ("PFMERGE", lambda a, b: ([("PFADD", b, "x")], ("PFMERGE", a, b))),
    ("SORT-STORE", lambda a, b: ([("RPUSH", a, 3, 1, 2)], ("SORT", a, "STORE", b))),
    # same rule, commands not named in the issue
    ("MSETNX", lambda a, b: ([], ("MSETNX", a, 1, b, 2))),
    ("RENAMENX", lambda a, b: ([("SET", a, "v")], ("RENAMENX", a, b))),
    ("COPY", lambda a, b: ([("SET", a, "v")], ("COPY", a, b))),
    ("LMPOP", lambda a, b: ([("RPUSH", b, "x")], ("LMPOP", 2, a, b, "LEFT"))),
    ("GEOSEARCHSTORE", lambda a, b: ([("GEOADD", b, 1, 1, "p")],
                                     ("GEOSEARCHSTORE", a, b, "FROMLONLAT", 1, 1, "BYRADIUS",
                                      10, "km"))),
    ("GEORADIUS-STORE", lambda a, b: ([("GEOADD", a, 1, 1, "p")],
                                      ("GEORADIUS", a, 1, 1, 10, "km", "STORE", b))),
]


def _snapshot(owners: Owners, keys: tuple[bytes, ...]) -> list[Any]:
    return [(owners.owner(key).execute_command("TYPE", key),
             owners.owner(key).execute_command("DUMP", key)) for key in keys]


@pytest.mark.parametrize(("name", "build"), CROSS_SLOT_CASES, ids=[c[0] for c in CROSS_SLOT_CASES])
def test_cross_slot_is_refused(name: str, build: Any, std: redis.Redis, prx: redis.Redis,
                               owners: Owners, cleanup: Cleanup) -> None:
    """CURRENT behaviour: keys in different slots -> Redis Cluster's CROSSSLOT error, and
    nothing is executed. (Update this test when MGET/MSET/DEL/EXISTS are split by slot.)"""
    a, b = _two_slots(name)
    cleanup.keys.extend([a, b])
    assert key_slot(a) != key_slot(b)
    setup, cmd = build(a, b)
    for argv in setup:
        std.execute_command(*argv)
        prx.execute_command(*argv)
    # the command is well-formed: one plain Redis server runs it
    assert not isinstance(outcome(std, cmd), Err), f"standalone rejected {cmd}"
    before = _snapshot(owners, (a, b))
    with pytest.raises(redis.ResponseError) as info:
        prx.execute_command(*cmd)
    exc = info.value
    assert f"{exc.status_code} {exc}" == CROSSSLOT_TEXT
    assert _snapshot(owners, (a, b)) == before, "a refused command must not have run"
    # the connection stays in step: the next reply is the next command's
    assert prx.execute_command("ECHO", f"after-{name}") == f"after-{name}".encode()
