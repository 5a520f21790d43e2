"""rproxy.core.emulate_reads: cross-slot SUNION/SINTER/SDIFF/SINTERCARD,
ZUNION/ZINTER/ZDIFF/ZINTERCARD, PFCOUNT and LCS computed from per-key reads.

Sans-IO, table-driven tests of the argument parsing, the error texts and the pure computation:
canned raw replies go into a plan's ``compute``; no Redis server is started. The differential
tests against a real Redis server are in ``tests/integration/test_emulate_reads_diff.py``
(which imports ``A`` and ``arr`` from here).
"""

from __future__ import annotations

import math

import pytest

from rproxy.core import resp
from rproxy.core.emulate_reads import (
    ReadPlan,
    format_double,
    hll_estimate,
    parse_double,
    plan_read,
)
from rproxy.core.errors import HLL_INVALID, HLL_WRONGTYPE, WRONGTYPE

ERR_OTHER = b"-LOADING Redis is loading the dataset in memory\r\n"


def A(*args: object) -> list[bytes]:
    return [a if isinstance(a, bytes) else str(a).encode() for a in args]


def arr(*members: bytes) -> bytes:
    return b"*%d\r\n" % len(members) + b"".join(resp.bulk(m) for m in members)


def zarr(*pairs: tuple[bytes, bytes]) -> bytes:
    return arr(*[x for pair in pairs for x in pair])


def plan(*args: object) -> ReadPlan:
    p = plan_read(A(*args))
    assert isinstance(p, ReadPlan), p
    return p


# -- parsing: None, arity, static errors ----------------------------------------------------------
@pytest.mark.parametrize("argv", [
    [], A("GET", "k"), A("SUNIONSTORE", "d", "a", "b"), A("ZUNIONSTORE", "d", 1, "a"),
    A("PFMERGE", "d", "a"), A("MGET", "a", "b"), A("ZRANGE", "a", 0, -1),
])
def test_not_emulated(argv: list[bytes]):
    assert plan_read(argv) is None


@pytest.mark.parametrize("argv, err", [
    (A("SUNION"), b"-ERR wrong number of arguments for 'sunion' command\r\n"),
    (A("sinter"), b"-ERR wrong number of arguments for 'sinter' command\r\n"),
    (A("SDiff"), b"-ERR wrong number of arguments for 'sdiff' command\r\n"),
    (A("SINTERCARD", 1), b"-ERR wrong number of arguments for 'sintercard' command\r\n"),
    (A("ZUNION", 1), b"-ERR wrong number of arguments for 'zunion' command\r\n"),
    (A("ZINTER", 1), b"-ERR wrong number of arguments for 'zinter' command\r\n"),
    (A("ZDIFF", 1), b"-ERR wrong number of arguments for 'zdiff' command\r\n"),
    (A("ZINTERCARD", 1), b"-ERR wrong number of arguments for 'zintercard' command\r\n"),
    (A("PFCOUNT"), b"-ERR wrong number of arguments for 'pfcount' command\r\n"),
    # SINTERCARD: numkeys in [1, LONG_MAX] with one message, then the options
    (A("SINTERCARD", 0, "a"), b"-ERR numkeys should be greater than 0\r\n"),
    (A("SINTERCARD", -1, "a"), b"-ERR numkeys should be greater than 0\r\n"),
    (A("SINTERCARD", "x", "a"), b"-ERR numkeys should be greater than 0\r\n"),
    (A("SINTERCARD", "01", "a"), b"-ERR numkeys should be greater than 0\r\n"),
    (A("SINTERCARD", 2, "a"), b"-ERR Number of keys can't be greater than number of args\r\n"),
    (A("SINTERCARD", 1, "a", "LIMIT"), b"-ERR syntax error\r\n"),
    (A("SINTERCARD", 1, "a", "foo"), b"-ERR syntax error\r\n"),
    (A("SINTERCARD", 1, "a", "LIMIT", -1), b"-ERR LIMIT can't be negative\r\n"),
    (A("SINTERCARD", 1, "a", "LIMIT", "x"), b"-ERR LIMIT can't be negative\r\n"),
    (A("SINTERCARD", 1, "a", "LIMIT", 1, "LIMIT"), b"-ERR syntax error\r\n"),
    # Z*: numkeys errors come before any key lookup
    (A("ZUNION", 0, "a"), b"-ERR at least 1 input key is needed for 'zunion' command\r\n"),
    (A("zinter", -5, "a"), b"-ERR at least 1 input key is needed for 'zinter' command\r\n"),
    (A("ZDIFF", 0, "a"), b"-ERR at least 1 input key is needed for 'zdiff' command\r\n"),
    (A("ZINTERCARD", 0, "a"),
     b"-ERR at least 1 input key is needed for 'zintercard' command\r\n"),
    (A("ZUNION", "x", "a"), b"-ERR value is not an integer or out of range\r\n"),
    (A("ZUNION", "01", "a"), b"-ERR value is not an integer or out of range\r\n"),
    (A("ZUNION", "1.0", "a"), b"-ERR value is not an integer or out of range\r\n"),
    (A("ZUNION", "99999999999999999999", "a"),
     b"-ERR value is not an integer or out of range\r\n"),
    (A("ZUNION", 3, "a", "b"), b"-ERR syntax error\r\n"),
    (A("ZINTERCARD", 2, "a"), b"-ERR syntax error\r\n"),
])
def test_static_errors(argv: list[bytes], err: bytes):
    assert plan_read(argv) == err


@pytest.mark.parametrize("argv, err", [
    (A("ZUNION", 1, "a", "bogus"), b"-ERR syntax error\r\n"),
    (A("ZUNION", 2, "a", "b", "WEIGHTS", 1), b"-ERR syntax error\r\n"),  # too few weights
    (A("ZUNION", 2, "a", "b", "WEIGHTS", 1, "x"), b"-ERR weight value is not a float\r\n"),
    (A("ZINTER", 1, "a", "WEIGHTS", "nan"), b"-ERR weight value is not a float\r\n"),
    (A("ZUNION", 1, "a", "AGGREGATE", "avg"), b"-ERR syntax error\r\n"),
    (A("ZUNION", 1, "a", "AGGREGATE"), b"-ERR syntax error\r\n"),
    (A("ZDIFF", 1, "a", "WEIGHTS", 1), b"-ERR syntax error\r\n"),
    (A("ZDIFF", 1, "a", "AGGREGATE", "sum"), b"-ERR syntax error\r\n"),
    (A("ZINTERCARD", 1, "a", "WITHSCORES"), b"-ERR syntax error\r\n"),
    (A("ZINTERCARD", 1, "a", "WEIGHTS", 1), b"-ERR syntax error\r\n"),
    (A("ZINTERCARD", 1, "a", "LIMIT"), b"-ERR syntax error\r\n"),
    (A("ZINTERCARD", 1, "a", "LIMIT", -1), b"-ERR LIMIT can't be negative\r\n"),
    (A("ZINTERCARD", 1, "a", "LIMIT", "x"), b"-ERR LIMIT can't be negative\r\n"),
    (A("ZUNION", 1, "a", "LIMIT", 1), b"-ERR syntax error\r\n"),
])
def test_option_errors_come_after_key_lookup(argv: list[bytes], err: bytes):
    """Redis parses the Z* options only after looking the keys up: the keys are still read,
    a WRONGTYPE key wins over the option error, and so does a failed read."""
    p = plan(*argv)
    n = len(p.reads)
    assert p.compute([b"*0\r\n"] * n) == err
    assert p.compute([b"*0\r\n"] * (n - 1) + [WRONGTYPE]) == WRONGTYPE
    assert p.compute([ERR_OTHER] + [WRONGTYPE] * (n - 1)) == ERR_OTHER


@pytest.mark.parametrize("argv, reads", [
    (A("SUNION", "a", "b", "a"), [A("SMEMBERS", "a"), A("SMEMBERS", "b"), A("SMEMBERS", "a")]),
    (A("sinter", "a"), [A("SMEMBERS", "a")]),
    (A("SDIFF", "a", "b"), [A("SMEMBERS", "a"), A("SMEMBERS", "b")]),
    (A("SINTERCARD", 2, "a", "b", "limit", 3), [A("SMEMBERS", "a"), A("SMEMBERS", "b")]),
    (A("ZUNION", 2, "a", "b", "WEIGHTS", 1, 2, "AGGREGATE", "MAX", "WITHSCORES"),
     [A("ZUNION", 1, "a", "WITHSCORES"), A("ZUNION", 1, "b", "WITHSCORES")]),
    (A("ZINTER", 1, "a"), [A("ZUNION", 1, "a", "WITHSCORES")]),
    (A("ZDIFF", 3, "a", "b", "c"),
     [A("ZUNION", 1, "a", "WITHSCORES"), A("ZUNION", 1, "b"), A("ZUNION", 1, "c")]),
    (A("ZINTERCARD", 2, "a", "b"), [A("ZUNION", 1, "a"), A("ZUNION", 1, "b")]),
    (A("PFCOUNT", "a", "b"), [A("GET", "a"), A("GET", "b")]),
])
def test_reads(argv: list[bytes], reads: list[list[bytes]]):
    assert plan(*argv).reads == reads


def test_options_are_case_insensitive_and_c_strings():
    p = plan("zunion", 2, "a", "b", "wEiGhTs", 2, 3, "aggregate", "Max", "withSCORES")
    got = p.compute([zarr((b"x", b"1")), zarr((b"x", b"1"))])
    assert got == zarr((b"x", b"3"))
    # strcasecmp stops at a NUL byte: "limit\0junk" is LIMIT
    assert plan("SINTERCARD", 1, "a", b"limit\0junk", 1).compute([arr(b"x", b"y")]) == b":1\r\n"
    # the last occurrence of a repeated option wins
    p = plan("ZINTER", 1, "a", "AGGREGATE", "MIN", "AGGREGATE", "SUM", "WEIGHTS", 5, "WEIGHTS", 2,
             "WITHSCORES")
    assert p.compute([zarr((b"x", b"1.5"))]) == zarr((b"x", b"3"))


# -- set commands ---------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, replies, expected", [
    (A("SUNION", "a", "b"), [arr(b"b", b"a"), arr(b"c", b"a")], arr(b"a", b"b", b"c")),
    (A("SUNION", "a", "b"), [b"*0\r\n", b"*0\r\n"], b"*0\r\n"),
    (A("SINTER", "a", "b"), [arr(b"b", b"a", b"10"), arr(b"10", b"a")], arr(b"10", b"a")),
    (A("SINTER", "a", "b"), [arr(b"a"), b"*0\r\n"], b"*0\r\n"),
    (A("SDIFF", "a", "b", "c"), [arr(b"x", b"y", b"z"), arr(b"y"), arr(b"z", b"q")], arr(b"x")),
    (A("SDIFF", "a", "b"), [b"*0\r\n", arr(b"y")], b"*0\r\n"),
    (A("SDIFF", "a", "a"), [arr(b"x"), arr(b"x")], b"*0\r\n"),
    # bytewise order, binary-safe members
    (A("SUNION", "a"), [arr(b"b", b"\xff", b"", b"a\r\nb", b"\x00")],
     arr(b"", b"\x00", b"a\r\nb", b"b", b"\xff")),
    (A("SINTERCARD", 2, "a", "b"), [arr(b"x", b"y", b"z"), arr(b"z", b"y")], b":2\r\n"),
    (A("SINTERCARD", 2, "a", "b", "LIMIT", 1), [arr(b"x", b"y", b"z"), arr(b"z", b"y")],
     b":1\r\n"),
    (A("SINTERCARD", 2, "a", "b", "LIMIT", 0), [arr(b"x", b"y"), arr(b"y", b"x")], b":2\r\n"),
    (A("SINTERCARD", 2, "a", "b"), [b"*0\r\n", arr(b"y")], b":0\r\n"),
    # WRONGTYPE anywhere wins, even after a missing key (SINTER looks every key up first)
    (A("SINTER", "a", "b", "c"), [b"*0\r\n", arr(b"x"), WRONGTYPE], WRONGTYPE),
    (A("SINTERCARD", 2, "a", "b"), [b"*0\r\n", WRONGTYPE], WRONGTYPE),
    (A("SDIFF", "a", "b"), [b"*0\r\n", WRONGTYPE], WRONGTYPE),
    (A("SUNION", "a", "b"), [WRONGTYPE, arr(b"x")], WRONGTYPE),
    # any other failed read: the first error, in key order
    (A("SUNION", "a", "b", "c"), [arr(b"x"), ERR_OTHER, WRONGTYPE], ERR_OTHER),
])
def test_set_compute(argv: list[bytes], replies: list[bytes], expected: bytes):
    assert plan(*argv).compute(replies) == expected


# -- sorted-set commands --------------------------------------------------------------------------
Z_A = zarr((b"x", b"1"), (b"y", b"2"))
Z_B = zarr((b"x", b"0.10000000000000001"), (b"z", b"3"))
S_S = zarr((b"q", b"1"), (b"x", b"1"))  # what ZUNION 1 <set> WITHSCORES returns


@pytest.mark.parametrize("argv, replies, expected", [
    (A("ZUNION", 3, "a", "b", "s", "WITHSCORES"), [Z_A, Z_B, S_S],
     zarr((b"q", b"1"), (b"y", b"2"), (b"x", b"2.1000000000000001"), (b"z", b"3"))),
    (A("ZUNION", 2, "a", "b"), [Z_A, Z_B], arr(b"x", b"y", b"z")),
    (A("ZUNION", 2, "a", "b", "AGGREGATE", "MIN", "WITHSCORES"), [Z_A, Z_B],
     zarr((b"x", b"0.10000000000000001"), (b"y", b"2"), (b"z", b"3"))),
    (A("ZUNION", 2, "a", "b", "WEIGHTS", "0.5", "inf", "WITHSCORES"), [Z_A, Z_B],
     zarr((b"y", b"1"), (b"x", b"inf"), (b"z", b"inf"))),
    (A("ZINTER", 2, "a", "b", "WITHSCORES"), [Z_A, Z_B], zarr((b"x", b"1.1000000000000001"))),
    (A("ZINTER", 2, "a", "b", "AGGREGATE", "MAX"), [Z_A, Z_B], arr(b"x")),
    (A("ZINTER", 2, "a", "m", "WITHSCORES"), [Z_A, b"*0\r\n"], b"*0\r\n"),
    (A("ZDIFF", 2, "a", "b", "WITHSCORES"), [Z_A, arr(b"x", b"z")], zarr((b"y", b"2"))),
    (A("ZDIFF", 2, "a", "a"), [Z_A, arr(b"x", b"y")], b"*0\r\n"),
    (A("ZDIFF", 1, "m"), [b"*0\r\n"], b"*0\r\n"),
    (A("ZINTERCARD", 3, "a", "b", "s"), [arr(b"x", b"y"), arr(b"x", b"z"), arr(b"q", b"x")],
     b":1\r\n"),
    (A("ZINTERCARD", 2, "a", "b", "LIMIT", 1), [arr(b"x", b"y"), arr(b"y", b"x")], b":1\r\n"),
    (A("ZINTERCARD", 2, "a", "b", "LIMIT", 0), [arr(b"x", b"y"), arr(b"y", b"x")], b":2\r\n"),
    # inf + -inf is NaN, which Redis turns into 0; so is a NaN product (inf * 0)
    (A("ZUNION", 2, "p", "q", "WITHSCORES"), [zarr((b"a", b"inf")), zarr((b"a", b"-inf"))],
     zarr((b"a", b"0"))),
    (A("ZUNION", 1, "p", "WEIGHTS", 0, "WITHSCORES"), [zarr((b"a", b"inf"))], zarr((b"a", b"0"))),
    (A("ZINTER", 2, "p", "q", "WITHSCORES"), [zarr((b"a", b"inf")), zarr((b"a", b"-inf"))],
     zarr((b"a", b"0"))),
    # ZINTER does not NaN-check the later products: MIN/MAX keep the current value
    (A("ZINTER", 2, "p", "q", "WEIGHTS", 1, 0, "AGGREGATE", "MIN", "WITHSCORES"),
     [zarr((b"a", b"5")), zarr((b"a", b"inf"))], zarr((b"a", b"5"))),
    # -0: ties keep the first value; -0 and 0 sort as equal scores, then by member
    (A("ZUNION", 1, "a", "WEIGHTS", -1, "WITHSCORES"), [zarr((b"m", b"0"))], zarr((b"m", b"-0"))),
    (A("ZINTER", 2, "a", "c", "AGGREGATE", "MAX", "WITHSCORES"),
     [zarr((b"m", b"0")), zarr((b"m", b"-0"))], zarr((b"m", b"0"))),
    (A("ZINTER", 2, "c", "a", "AGGREGATE", "MAX", "WITHSCORES"),
     [zarr((b"m", b"-0")), zarr((b"m", b"0"))], zarr((b"m", b"-0"))),
    (A("ZUNION", 2, "a", "b", "WITHSCORES"), [zarr((b"b", b"-0")), zarr((b"a", b"0"))],
     zarr((b"a", b"0"), (b"b", b"-0"))),
    # SUM order: inputs sorted by cardinality (stable), so the result depends on it
    (A("ZUNION", 3, "a", "b", "c", "WITHSCORES"),
     [zarr((b"x", b"1e+16")), zarr((b"x", b"1")), zarr((b"x", b"-1e+16"))], zarr((b"x", b"0"))),
    (A("ZUNION", 3, "a", "c", "b", "WITHSCORES"),
     [zarr((b"x", b"1e+16")), zarr((b"x", b"-1e+16")), zarr((b"x", b"1"))], zarr((b"x", b"1"))),
    (A("ZUNION", 3, "a", "b", "c", "WITHSCORES"),
     [zarr((b"x", b"1e+16"), (b"y", b"0")), zarr((b"x", b"1")), zarr((b"x", b"-1e+16"))],
     zarr((b"x", b"0"), (b"y", b"0"))),  # (1 + -1e16) + 1e16 == 0, verified on 7.0.15
    # errors
    (A("ZUNION", 2, "a", "b"), [Z_A, WRONGTYPE], WRONGTYPE),
    (A("ZINTER", 2, "a", "b"), [b"*0\r\n", WRONGTYPE], WRONGTYPE),
    (A("ZDIFF", 2, "a", "b"), [b"*0\r\n", WRONGTYPE], WRONGTYPE),
    (A("ZINTERCARD", 2, "a", "b"), [ERR_OTHER, WRONGTYPE], ERR_OTHER),
])
def test_zset_compute(argv: list[bytes], replies: list[bytes], expected: bytes):
    assert plan(*argv).compute(replies) == expected


# -- doubles --------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, text", [
    (0.1, b"0.10000000000000001"), (1 / 3, b"0.33333333333333331"), (1e20, b"1e+20"),
    (1.5e-7, b"1.4999999999999999e-07"), (2.5, b"2.5"), (-0.0, b"-0"), (0.0, b"0"), (1.0, b"1"),
    (123456789012345678.0, b"1.2345678901234568e+17"), (math.inf, b"inf"), (-math.inf, b"-inf"),
    (5e-324, b"4.9406564584124654e-324"), (1e308, b"1e+308"), (-2.0, b"-2"),
])
def test_format_double(value: float, text: bytes):
    assert format_double(value) == text


@pytest.mark.parametrize("text, value", [
    (b"1", 1.0), (b"-1.5", -1.5), (b"+2", 2.0), (b".5", 0.5), (b"5.", 5.0), (b"1e3", 1000.0),
    (b"1E+3", 1000.0), (b"inf", math.inf), (b"-Infinity", -math.inf), (b"+INF", math.inf),
    (b"0x10", 16.0), (b"0x1p-2", 0.25), (b"-0X.8P1", -1.0), (b"0x1.8", 1.5), (b"-0", -0.0),
    (b"4.9e-324", 5e-324), (b"0e-999", 0.0), (b"1e308", 1e308),
    (b"", None), (b" 1", None), (b"1 ", None), (b"nan", None), (b"NaN", None), (b"1e400", None),
    (b"-1e400", None), (b"1e-400", None), (b"2e-324", None), (b"0x1p1024", None),
    (b"0x1p-1080", None), (b"infin", None), (b"1e", None), (b"1e+", None), (b".", None),
    (b"0x", None), (b"1_0", None), (b"1\x00", None), (b"abc", None), (b"--1", None),
])
def test_parse_double(text: bytes, value: float | None):
    got = parse_double(text)
    if value is None:
        assert got is None
    else:
        assert got == value and math.copysign(1, got) == math.copysign(1, value)


# -- PFCOUNT --------------------------------------------------------------------------------------
EMPTY_SPARSE = b"HYLL\x01\x00\x00\x00" + bytes(8) + b"\x7f\xff"  # one XZERO of 16384


def test_hll_estimate_edges():
    assert hll_estimate([16384] + [0] * 63) == 0
    one = [16383, 1] + [0] * 62
    assert hll_estimate(one) == 1
    # z == 0 (every register >= 51): inf, llroundl -> LLONG_MIN, as Redis replies
    assert hll_estimate([0] * 63 + [16384]) == -(2**63)


@pytest.mark.parametrize("replies, expected", [
    ([b"$-1\r\n", b"$-1\r\n"], b":0\r\n"),
    ([b"$-1\r\n"], b":0\r\n"),
    ([resp.bulk(EMPTY_SPARSE), b"$-1\r\n"], b":0\r\n"),
    ([resp.bulk(b"hello"), b"$-1\r\n"], HLL_WRONGTYPE),
    ([resp.bulk(b"12345678901234567890")], HLL_WRONGTYPE),
    ([resp.bulk(b"HYLL\x02" + bytes(11) + b"\x7f\xff"), b"$-1\r\n"], HLL_WRONGTYPE),
    ([resp.bulk(b"HYLL\x00" + bytes(20)), b"$-1\r\n"], HLL_WRONGTYPE),  # dense, wrong size
    ([resp.bulk(EMPTY_SPARSE[:-1]), b"$-1\r\n"], HLL_INVALID),  # truncated XZERO
    ([resp.bulk(EMPTY_SPARSE + b"\x80"), b"$-1\r\n"], HLL_INVALID),  # VAL past the end
    ([WRONGTYPE, resp.bulk(b"hello")], WRONGTYPE),
    # key by key: the first bad key decides
    ([b"$-1\r\n", resp.bulk(b"hello"), WRONGTYPE], HLL_WRONGTYPE),
    ([resp.bulk(EMPTY_SPARSE[:-1]), WRONGTYPE], HLL_INVALID),
    ([ERR_OTHER, resp.bulk(b"hello")], ERR_OTHER),
    # one key: a valid cache (top bit of the last card byte clear) is the answer
    ([resp.bulk(b"HYLL\x01\x00\x00\x00" + (42).to_bytes(8, "little") + b"\x7f\xff")],
     b":42\r\n"),
    ([resp.bulk(b"HYLL\x01\x00\x00\x00" + bytes(7) + b"\x80\x7f")], HLL_INVALID),
])
def test_pfcount_compute(replies: list[bytes], expected: bytes):
    assert plan("PFCOUNT", *[f"k{i}" for i in range(len(replies))]).compute(replies) == expected


# -- LCS ------------------------------------------------------------------------------------------
def test_lcs_is_capped_in_the_proxy():
    from rproxy.core.errors import LCS_MAX_CELLS, LCS_TOO_BIG

    p = plan(*["LCS", "a", "b"])
    n = int(LCS_MAX_CELLS ** 0.5) + 1
    big = resp.bulk(b"x" * n)
    assert p.compute([big, big]) == LCS_TOO_BIG
