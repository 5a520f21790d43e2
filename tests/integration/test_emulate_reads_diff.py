"""Differential tests of rproxy.core.emulate_reads (cross-slot SUNION/SINTER/SDIFF/SINTERCARD,
ZUNION/ZINTER/ZDIFF/ZINTERCARD, PFCOUNT and LCS) against a real redis-server 7.0.

The server is private to this module (``tests.support.private_redis_7_0``: a port in
20000-22000, ``--save ''``, stopped by its PID). Every case runs the plan's reads on that
server, feeds the raw replies to ``compute`` and compares with the server's own raw reply to the
original command, byte for byte. The only exception is the member order of SUNION/SINTER/SDIFF
(hash table order in Redis, bytewise order here): those replies are compared as sorted member
lists, and our reply is checked to be exactly the sorted encoding.

Helper notes: all keys live in one standalone server, so the original multi-key command runs
there unchanged (no CROSSSLOT) and gives the reference reply; the reads are the exact commands
the proxy would send to each key's master. PFCOUNT with ONE key writes the cached cardinality
into the key, so single-key cases read the key before the reference PFCOUNT (the cache-invalid
path) and again after it (the cached path).

The sans-IO table-driven tests of the same module are in ``tests/unit/test_emulate.py``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from rproxy.core import resp
from rproxy.core.emulate_reads import plan_read
from tests.support import RawConnection, private_redis_7_0
from tests.unit.test_emulate import A, arr

# == the server and the comparison ================================================================
Server = RawConnection


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Server]:
    """A private redis-server 7.0 (tests.support), stopped by its PID."""
    with private_redis_7_0() as conn:
        yield conn


def emulate(server: Server, argv: list[bytes]) -> bytes:
    p = plan_read(argv)
    assert p is not None
    if isinstance(p, bytes):
        return p
    return p.compute(server.pipeline(p.reads) if p.reads else [])


def check(server: Server, argv: list[bytes], unordered: bool = False) -> None:
    got = emulate(server, argv)
    want = server.pipeline([argv])[0]
    if unordered and want[:1] == b"*":
        members = sorted(resp.parse_reply(want))
        assert sorted(resp.parse_reply(got)) == members, argv
        assert got == arr(*members), argv
    else:
        assert got == want, argv


# -- fixtures of data -----------------------------------------------------------------------------
SCORES = [
    "0", "-0", "1", "-1", "2", "0.1", "0.2", "0.3", "0.5", "2.5", "-3.75", "1e20", "-1e20",
    "1.5e-7", "123456789012345678", "1e16", "-1e16", "1e308", "-1e308", "5e-324", "inf", "-inf",
    "0.3333333333333333", "3.14159", "-0.0001", "9007199254740993", "1e-300",
]
WEIGHTS = ["1", "0", "-1", "2", "0.5", "0.1", "inf", "-inf", "1e308", "3", "-0", "0x1p-3",
           "1e-5", "7"]


def member(rnd: random.Random) -> bytes:
    kind = rnd.random()
    if kind < 0.4:
        return b"m%d" % rnd.randrange(40)
    if kind < 0.7:
        return b"%d" % rnd.randrange(-20, 60)  # integer-like: intset / listpack integers
    if kind < 0.8:
        return bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 4)))
    return b"x" * rnd.randrange(1, 80)  # long members push the encodings to hashtable/skiplist


def score(rnd: random.Random) -> bytes:
    if rnd.random() < 0.6:
        return rnd.choice(SCORES).encode()
    if rnd.random() < 0.5:
        return repr(rnd.uniform(-1e3, 1e3)).encode()
    return b"%d" % rnd.randrange(-5, 5)


def fill(server: Server, rnd: random.Random, keys: list[bytes], zsets: bool) -> None:
    """Random keys: missing, sets (intset, hashtable), zsets (listpack, skiplist), now and
    then a key of another type."""
    commands: list[list[bytes]] = [[b"DEL", *keys]]
    for key in keys:
        kind = rnd.random()
        size = rnd.choice([1, 2, 3, 5, 10, 40, 200])
        if kind < 0.12:
            continue  # missing
        if kind < 0.16:
            commands.append([b"RPUSH", key, b"l"])  # wrong type
        elif zsets and kind < 0.75:
            args: list[bytes] = []
            for _ in range(size):
                args += [score(rnd), member(rnd)]
            commands.append([b"ZADD", key, *args])
        elif rnd.random() < 0.3:  # integers only: an intset
            commands.append([b"SADD", key, *[b"%d" % rnd.randrange(-30, 30) for _ in range(size)]])
        else:
            commands.append([b"SADD", key, *[member(rnd) for _ in range(size)]])
    for reply in server.pipeline(commands):
        assert reply[:1] != b"-", reply


def keys_for(rnd: random.Random, pool: list[bytes]) -> list[bytes]:
    return [rnd.choice(pool) for _ in range(rnd.randrange(1, 5))]


# -- differential: sets ---------------------------------------------------------------------------
def test_differential_set_commands(redis_server: Server):
    rnd = random.Random(20240611)
    pool = [b"s%d" % i for i in range(6)]
    for _round in range(150):
        fill(redis_server, rnd, pool, zsets=False)
        for _ in range(6):
            keys = keys_for(rnd, pool)
            for name in (b"SUNION", b"SINTER", b"SDIFF"):
                check(redis_server, [name, *keys], unordered=True)
            argv = [b"SINTERCARD", b"%d" % len(keys), *keys]
            if rnd.random() < 0.5:
                argv += [b"LIMIT", b"%d" % rnd.randrange(0, 5)]
            check(redis_server, argv)


# -- differential: sorted sets --------------------------------------------------------------------
def test_differential_zset_commands(redis_server: Server):
    rnd = random.Random(7)
    pool = [b"z%d" % i for i in range(6)]
    for _round in range(150):
        fill(redis_server, rnd, pool, zsets=True)
        for _ in range(6):
            keys = keys_for(rnd, pool)
            n = b"%d" % len(keys)
            for name in (b"ZUNION", b"ZINTER"):
                argv = [name, n, *keys]
                if rnd.random() < 0.5:
                    argv += [b"WEIGHTS", *[rnd.choice(WEIGHTS).encode() for _ in keys]]
                if rnd.random() < 0.6:
                    argv += [b"AGGREGATE", rnd.choice([b"SUM", b"MIN", b"MAX", b"sum"])]
                if rnd.random() < 0.7:
                    argv.append(b"WITHSCORES")
                check(redis_server, argv)
            argv = [b"ZDIFF", n, *keys] + ([b"WITHSCORES"] if rnd.random() < 0.7 else [])
            check(redis_server, argv)
            argv = [b"ZINTERCARD", n, *keys]
            if rnd.random() < 0.5:
                argv += [b"LIMIT", b"%d" % rnd.randrange(0, 5)]
            check(redis_server, argv)


def test_differential_sum_order(redis_server: Server):
    """Floating-point SUM is not associative: Redis adds in the order of a stable sort by
    cardinality. Equal and unequal cardinalities, every key order."""
    import itertools

    s = redis_server
    s.pipeline([[b"DEL", b"o1", b"o2", b"o3", b"o4"],
                [b"ZADD", b"o1", b"1e16", b"x"], [b"ZADD", b"o2", b"1", b"x"],
                [b"ZADD", b"o3", b"-1e16", b"x"],
                [b"ZADD", b"o4", b"0.1", b"x", b"0", b"y"]])
    for keys in itertools.permutations([b"o1", b"o2", b"o3", b"o4"]):
        for name in (b"ZUNION", b"ZINTER"):
            check(s, [name, b"4", *keys, b"WITHSCORES"])
            check(s, [name, b"3", *keys[:3], b"WEIGHTS", b"0.1", b"3", b"7", b"WITHSCORES"])


@pytest.mark.parametrize("weight", [
    "1", "-1.5", "+2", ".5", "5.", "1e3", "1E+3", "inf", "-Infinity", "+INF", "0x10", "0x1p-2",
    "-0X.8P1", "0x1.8", "-0", "4.9e-324", "0e-999", "1e308", "", " 1", "1 ", "nan", "NaN",
    "1e400", "-1e400", "1e-400", "2e-324", "0x1p1024", "0x1p-1080", "0x1p-1074", "infin", "1e",
    "1e+", ".", "0x", "1_0", "1\x00", "abc", "--1", "\t1", "1e-320", "0.1e-322",
])
def test_differential_weights(redis_server: Server, weight: str):
    s = redis_server
    s.pipeline([[b"DEL", b"w1"], [b"ZADD", b"w1", b"3", b"x", b"0.25", b"y", b"-0", b"z"]])
    w = weight.encode()
    check(s, [b"ZUNION", b"1", b"w1", b"WEIGHTS", w, b"WITHSCORES"])
    check(s, [b"ZINTER", b"1", b"w1", b"WEIGHTS", w, b"WITHSCORES"])


@pytest.mark.parametrize("args", [
    ["ZUNION", 0, "w1"], ["ZUNION", -1, "w1"], ["ZUNION", "x", "w1"], ["ZUNION", 3, "w1"],
    ["ZUNION", 1, "w1", "bogus"], ["ZUNION", 1, "lst", "bogus"], ["ZUNION", 2, "lst", "w1"],
    ["ZUNION", 1, "w1", "WEIGHTS"], ["ZUNION", 1, "lst", "WEIGHTS", "x"],
    ["ZUNION", 2, "nokey", "lst", "AGGREGATE", "avg"], ["ZUNION", 1, "w1", "AGGREGATE", "avg"],
    ["ZINTER", 2, "nokey", "lst"], ["ZINTER", 2, "nokey", "st", "WITHSCORES"],
    ["ZDIFF", 1, "w1", "WEIGHTS", 1], ["ZDIFF", 2, "nokey", "lst"],
    ["ZDIFF", 2, "st", "w1", "WITHSCORES"],
    ["ZINTERCARD", 0, "w1"], ["ZINTERCARD", 1, "w1", "LIMIT", -1],
    ["ZINTERCARD", 1, "lst", "LIMIT", -1],
    ["ZINTERCARD", 1, "w1", "LIMIT"], ["ZINTERCARD", 1, "w1", "WITHSCORES"],
    ["ZINTERCARD", 2, "w1", "st", "LIMIT", "x"],
    ["SINTERCARD", 0, "st"], ["SINTERCARD", "x", "st"], ["SINTERCARD", 2, "st"],
    ["SINTERCARD", 1, "lst", "LIMIT", "x"], ["SINTERCARD", 1, "st", "LIMIT"],
    ["SINTERCARD", 1, "st", "foo"], ["SINTERCARD", 2, "nokey", "lst"],
    ["SINTER", "nokey", "lst"], ["SINTER", "st", "nokey", "lst"], ["SUNION", "nokey", "lst"],
    ["SDIFF", "nokey", "lst"], ["SDIFF", "st", "lst"], ["SDIFF", "st", "w1"],
    ["SUNION"], ["ZUNION", 1], ["SINTERCARD", 1], ["PFCOUNT"],
    ["PFCOUNT", "str", "nokey"], ["PFCOUNT", "nokey", "lst"], ["PFCOUNT", "lst", "str"],
    ["PFCOUNT", "str"], ["PFCOUNT", "lst"], ["PFCOUNT", "int"], ["PFCOUNT", "int", "nokey"],
])
def test_differential_errors(redis_server: Server, args: list[object]):
    s = redis_server
    s.pipeline([[b"DEL", b"w1", b"lst", b"st", b"str", b"int", b"nokey"],
                [b"ZADD", b"w1", b"1", b"x"], [b"RPUSH", b"lst", b"a"],
                [b"SADD", b"st", b"x", b"y"], [b"SET", b"str", b"hello"],
                [b"SET", b"int", b"1234567890123456789"]])
    argv = A(*args)
    check(s, argv, unordered=argv[0] in (b"SUNION", b"SINTER", b"SDIFF"))


# -- differential: PFCOUNT ------------------------------------------------------------------------
def _sparse(ops: list[bytes], card: bytes = b"\x00" * 7 + b"\x80") -> bytes:
    return b"HYLL\x01\x00\x00\x00" + card + b"".join(ops)


def _dense(values: list[int], card: bytes = b"\x00" * 7 + b"\x80") -> bytes:
    regs = bytearray(12288 + 1)
    for i, v in enumerate(values):
        byte, fb = i * 6 // 8, i * 6 & 7
        regs[byte] |= (v << fb) & 0xFF
        regs[byte + 1] |= v >> (8 - fb)
    return b"HYLL\x00\x00\x00\x00" + card + bytes(regs[:12288])


def _xzero(n: int) -> bytes:
    return bytes([0x40 | ((n - 1) >> 8), (n - 1) & 0xFF])


def _val(value: int, run: int) -> bytes:
    return bytes([0x80 | ((value - 1) << 2) | (run - 1)])


FORGED = {
    # valid hand-made sparse forms (VAL runs, ZERO, XZERO) and their corrupted variants
    b"f_sparse_ok": _sparse([_val(3, 4), b"\x3f", _val(32, 1), _xzero(16384 - 69)]),
    b"f_sparse_short": _sparse([_val(3, 4), _xzero(100)]),
    b"f_sparse_long": _sparse([_xzero(16384), b"\x00"]),
    b"f_sparse_overflow": _sparse([_xzero(16383), _val(5, 4)]),
    b"f_sparse_trailing_val": _sparse([_xzero(16384), _val(5, 1)]),
    b"f_sparse_trailing_zero": _sparse([_xzero(16384), b"\x00"]),
    b"f_sparse_trailing_xzero": _sparse([_val(2, 1), _xzero(16383), _xzero(1)]),
    b"f_sparse_truncated": _sparse([_xzero(16384)])[:-1],
    b"f_sparse_cached": _sparse([_xzero(16384)], card=(77).to_bytes(8, "little")),
    b"f_dense_high": _dense([(i * 7) % 64 for i in range(16384)]),
    b"f_dense_51": _dense([51] * 16384),
    b"f_dense_mixed": _dense([51 if i % 3 else 1 for i in range(16384)]),
    b"f_dense_short": _dense([1] * 16384)[:-1],
    b"f_bad_magic": b"HYLX" + _sparse([_xzero(16384)])[4:],
    b"f_bad_encoding": b"HYLL\x02" + _sparse([_xzero(16384)])[5:],
    b"f_raw_encoding": b"HYLL\xff" + _sparse([_xzero(16384)])[5:],
    b"f_header_only": b"HYLL\x01" + bytes(11),
    b"f_too_short": b"HYLL\x01",
}


def test_differential_pfcount(redis_server: Server):
    s = redis_server
    rnd = random.Random(99)
    sizes = [0, 1, 2, 10, 100, 500, 1000, 2000, 3000, 4000, 10000, 100000]
    keys: list[bytes] = []
    commands: list[list[bytes]] = []
    for i, size in enumerate(sizes):
        key = b"h%d" % i
        keys.append(key)
        commands.append([b"DEL", key])
        base = rnd.randrange(50000)  # overlapping element ranges between keys
        elements = [b"e%d" % (base + j) for j in range(size)]
        for start in range(0, len(elements), 5000):
            commands.append([b"PFADD", key, *elements[start : start + 5000]])
    s.pipeline(commands)
    encodings = {k: s(b"OBJECT", b"ENCODING", k) for k in keys}
    dense = [k for k in keys if s(b"GETRANGE", k, b"4", b"4") == resp.bulk(b"\x00")]
    assert dense and len(dense) < len(keys), encodings  # both sparse and dense keys exist
    keys.append(b"nokey")
    for _ in range(300):
        combo = [rnd.choice(keys) for _ in range(rnd.randrange(2, 6))]
        check(s, [b"PFCOUNT", *combo])
    for key in keys:  # one key: before (cache invalid) and after (cache valid) the real PFCOUNT
        before = emulate(s, [b"PFCOUNT", key])
        assert before == s(b"PFCOUNT", key)
        check(s, [b"PFCOUNT", key])


def test_differential_pfcount_forged(redis_server: Server):
    s = redis_server
    s.pipeline([[b"SET", k, v] for k, v in FORGED.items()] + [[b"PFADD", b"real", b"a", b"b"]])
    names = list(FORGED) + [b"real", b"nokey"]
    for name in names:
        for other in (b"real", b"nokey", b"f_sparse_ok", b"f_sparse_short"):
            check(s, [b"PFCOUNT", name, other])
            check(s, [b"PFCOUNT", other, name])
    for name in names:
        if name in FORGED:
            s(b"SET", name, FORGED[name])  # reset any cache written by an earlier PFCOUNT
        check(s, [b"PFCOUNT", name])  # single key: the cache-invalid path ...
        check(s, [b"PFCOUNT", name])  # ... then whatever Redis cached


# -- LCS ------------------------------------------------------------------------------------------
LCS_OPTIONS = [
    [], ["LEN"], ["IDX"], ["IDX", "WITHMATCHLEN"], ["IDX", "MINMATCHLEN", "2"],
    ["IDX", "MINMATCHLEN", "3", "WITHMATCHLEN"], ["idx", "minmatchlen", "-4"], ["LEN", "IDX"],
    ["IDX", "MINMATCHLEN"], ["IDX", "MINMATCHLEN", "x"], ["BOGUS"], ["WITHMATCHLEN"],
]


def test_differential_lcs(redis_server: Server):
    """LCS over two keys, byte for byte against a real Redis (lcsCommand's range quirks,
    option errors after the type check, missing keys as empty strings)."""
    rnd = random.Random(7)
    pairs = [(b"ohmytext", b"mynewtext"), (b"", b"abc"), (b"abc", b"abc"), (b"aaaa", b"aa"),
             (b"abcdef", b"zzz")]
    for _ in range(40):
        alphabet = b"ab" if rnd.random() < 0.5 else b"abcdxyz"
        pairs.append((bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 40))),
                      bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 40)))))
    for n, (a, b) in enumerate(pairs):
        redis_server("SET", b"lcs:a", a)
        redis_server("SET", b"lcs:b", b)
        for opts in LCS_OPTIONS:
            check(redis_server, A("LCS", "lcs:a", "lcs:b", *opts))
    check(redis_server, A("LCS", "lcs:a", "lcs:missing"))
    check(redis_server, A("LCS", "lcs:missing", "lcs:missing", "IDX"))
    redis_server("DEL", b"lcs:list")
    redis_server("RPUSH", b"lcs:list", b"x")
    check(redis_server, A("LCS", "lcs:a", "lcs:list"))
    check(redis_server, A("LCS", "lcs:list", "lcs:a", "BOGUS"))  # type error comes first
