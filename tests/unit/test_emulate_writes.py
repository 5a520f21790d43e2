"""rproxy.core.emulate_writes: cross-slot multi-key writes emulated as rounds of single-key
commands.

Sans-IO tests of the plans, driven with canned raw replies (no Redis server is started):
argument errors, the batches issued, failures injected into the replies (errors in the first
round write nothing; a failed push puts the element back...), and the pure helpers (BITOP, the
dense HyperLogLog encoding). The differential tests against two real Redis servers are in
``tests/integration/test_emulate_writes_diff.py`` (which imports ``A`` from here).
"""

from __future__ import annotations

import inspect
import random

import pytest

from rproxy.core import resp
from rproxy.core.emulate_reads import _dense_registers
from rproxy.core.emulate_writes import (
    CHUNK,
    EMULATED_WRITES,
    bitop,
    dense_hll,
    plan_write,
)

ERR_OTHER = b"-LOADING Redis is loading the dataset in memory\r\n"


def A(*args: object) -> list[bytes]:
    return [a if isinstance(a, bytes) else str(a).encode() for a in args]


@pytest.mark.parametrize("argv", [
    [], A("GET", "k"), A("SUNION", "a", "b"), A("MSET", "a", 1), A("DEL", "a", "b"),
    A("ZUNION", 1, "a"), A("BLMOVE", "a", "b", "LEFT", "LEFT", 0),
    A("SORT_RO", "a", "STORE", "b"), A("BLMPOP", 0, 2, "a", "b", "LEFT"),
    A("BZMPOP", 0, 2, "a", "b", "MIN"), A("GEOSEARCHSTORE", "d", "s", "FROMLONLAT", 0, 0,
                                          "BYRADIUS", 1, "km"),
])
def test_not_emulated(argv: list[bytes]):
    assert plan_write(argv) is None


def test_emulated_names():
    assert EMULATED_WRITES == {
        b"MSETNX", b"RENAME", b"RENAMENX", b"COPY", b"SMOVE", b"LMOVE", b"RPOPLPUSH",
        b"SUNIONSTORE", b"SINTERSTORE", b"SDIFFSTORE", b"ZUNIONSTORE", b"ZINTERSTORE",
        b"ZDIFFSTORE", b"BITOP", b"PFMERGE", b"ZRANGESTORE", b"SORT", b"LMPOP", b"ZMPOP"}


# Texts verified on a cluster-mode Redis 7.0.15 server (databases 16): COPY's DB checks depend
# on cluster mode, so they cannot be compared with the standalone server B of
# tests/integration/test_emulate_writes_diff.py.
@pytest.mark.parametrize("argv, err", [
    (A("COPY", "a", "b", "DB", 5), b"-ERR Copying to another database is not allowed in cluster "
                                   b"mode\r\n"),
    (A("COPY", "a", "a", "DB", 5), b"-ERR Copying to another database is not allowed in cluster "
                                   b"mode\r\n"),
    (A("COPY", "a", "b", "DB", 16), b"-ERR DB index is out of range\r\n"),
    (A("COPY", "a", "b", "db", -1), b"-ERR DB index is out of range\r\n"),
    (A("COPY", "a", "b", "DB", "x"), b"-ERR value is not an integer or out of range\r\n"),
    (A("COPY", "a", "b", "DB", "01"), b"-ERR value is not an integer or out of range\r\n"),
    (A("COPY", "a", "b", "DB", 2**31),
     b"-ERR value is out of range, value must between -2147483648 and 2147483647\r\n"),
    (A("COPY", "a", "b", "DB"), b"-ERR syntax error\r\n"),
    (A("COPY", "a", "b", "DB", 0, "REPLACE", "foo"), b"-ERR syntax error\r\n"),
    (A("COPY", "a", "a"), b"-ERR source and destination objects are the same\r\n"),
    (A("COPY", "a", "a", "DB", 0), b"-ERR source and destination objects are the same\r\n"),
])
def test_copy_cluster_errors(argv: list[bytes], err: bytes):
    assert plan_write(argv) == err


# SORT's BY (with a pattern) and GET are refused in cluster mode, before the key is looked up;
# texts verified on a cluster-mode Redis 7.0.15 server.
@pytest.mark.parametrize("argv, err", [
    (A("SORT", "k", "BY", "w*", "STORE", "d"),
     b"-ERR BY option of SORT denied in Cluster mode.\r\n"),
    (A("SORT", "k", "STORE", "d", "get", "#"),
     b"-ERR GET option of SORT denied in Cluster mode.\r\n"),
    (A("SORT", "k", "BY", "nosort", "GET", "x", "STORE", "d"),
     b"-ERR GET option of SORT denied in Cluster mode.\r\n"),
    (A("SORT", "k", "by", "w*", "LIMIT", "x", 1),
     b"-ERR BY option of SORT denied in Cluster mode.\r\n"),
    (A("SORT", "k", "LIMIT", "x", 1, "BY", "w*"),
     b"-ERR value is not an integer or out of range\r\n"),
    (A("SORT", "k", "BY", "w*", "BY", "nosort"),
     b"-ERR BY option of SORT denied in Cluster mode.\r\n"),
    (A("SORT", "k", "STORE"), b"-ERR syntax error\r\n"),
    (A("SORT", "k", "LIMIT", 0, "STORE"), b"-ERR value is not an integer or out of range\r\n"),
])
def test_sort_cluster_errors(argv: list[bytes], err: bytes):
    assert plan_write(argv) == err


def test_copy_db_last_occurrence_wins():
    assert inspect.isgenerator(plan_write(A("COPY", "a", "b", "DB", 1, "DB", 0)))


def test_plans_are_not_started():
    for argv in [A("MSETNX", "a", 1, "b", 2), A("RENAME", "a", "b"), A("COPY", "a", "b"),
                 A("SMOVE", "a", "b", "m"), A("LMOVE", "a", "b", "LEFT", "RIGHT"),
                 A("SUNIONSTORE", "d", "a"), A("ZUNIONSTORE", "d", 1, "a"),
                 A("BITOP", "OR", "d", "a"), A("PFMERGE", "d", "a"),
                 A("ZRANGESTORE", "d", "a", 0, -1), A("SORT", "a", "STORE", "d"),
                 A("LMPOP", 2, "a", "b", "LEFT"), A("ZMPOP", 2, "a", "b", "MAX")]:
        p = plan_write(argv)
        assert inspect.isgenerator(p), argv
        assert inspect.getgeneratorstate(p) == inspect.GEN_CREATED
        p.close()


def drive(plan: object, answers: list[list[bytes]]) -> tuple[list[list[tuple[bytes, list[bytes]]]],
                                                                bytes]:
    """Run a plan on canned replies: (the batches it yielded, its final reply)."""
    assert inspect.isgenerator(plan)
    batches = []
    try:
        batch = next(plan)
        for replies in answers:
            batches.append(batch)
            assert batch, "a plan must never yield an empty batch"
            assert len(replies) == len(batch)
            batch = plan.send(replies)
        raise AssertionError(f"the plan wants more rounds: {batch}")
    except StopIteration as stop:
        return batches, stop.value


@pytest.mark.parametrize("argv", [
    A("MSETNX", "a", 1, "b", 2), A("RENAME", "a", "b"), A("RENAMENX", "a", "b"),
    A("COPY", "a", "b", "REPLACE"), A("SMOVE", "a", "b", "m"),
    A("LMOVE", "a", "b", "LEFT", "RIGHT"), A("RPOPLPUSH", "a", "b"),
    A("SUNIONSTORE", "d", "a", "b"), A("SINTERSTORE", "d", "a", "b"),
    A("SDIFFSTORE", "d", "a", "b"), A("ZUNIONSTORE", "d", 2, "a", "b"),
    A("ZINTERSTORE", "d", 2, "a", "b", "WEIGHTS", 1, 2), A("ZDIFFSTORE", "d", 2, "a", "b"),
    A("ZUNIONSTORE", "d", 2, "a", "b", "WITHSCORES"), A("BITOP", "AND", "d", "a", "b"),
    A("PFMERGE", "d", "a", "b"), A("ZRANGESTORE", "d", "a", 0, -1),
    A("ZRANGESTORE", "d", "a", "-", "+", "BYLEX"), A("SORT", "a", "STORE", "d"),
    A("SORT", "a", "BY", "nosort", "STORE", "d"),
])
@pytest.mark.parametrize("position", [0, -1])
def test_error_in_first_round_writes_nothing(argv: list[bytes], position: int):
    p = plan_write(argv)
    first = next(p)  # type: ignore[arg-type]
    replies = [b"$-1\r\n"] * len(first)
    replies[position] = ERR_OTHER
    with pytest.raises(StopIteration) as stop:
        p.send(replies)  # type: ignore[union-attr]
    assert stop.value.value == ERR_OTHER


def test_rename_rounds_and_ttl_edge_cases():
    batches, reply = drive(plan_write(A("RENAME", "s", "d")),
                           [[b"$3\r\nPAY\r\n", b":0\r\n"], [b"+OK\r\n"], [b":1\r\n"]])
    assert batches == [[(b"s", A("DUMP", "s")), (b"s", A("PTTL", "s"))],
                       [(b"d", A("RESTORE", "d", 1, "PAY", "REPLACE"))],  # PTTL 0: not "no TTL"
                       [(b"s", A("DEL", "s"))]]
    assert reply == b"+OK\r\n"
    # expired between DUMP and PTTL
    assert drive(plan_write(A("RENAME", "s", "d")), [[b"$3\r\nPAY\r\n", b":-2\r\n"]])[1] == \
        b"-ERR no such key\r\n"
    # a failed RESTORE does not delete src
    batches, reply = drive(plan_write(A("RENAME", "s", "d")),
                           [[b"$1\r\nP\r\n", b":-1\r\n"], [b"-OOM no memory\r\n"]])
    assert batches[1] == [(b"d", A("RESTORE", "d", 0, "P", "REPLACE"))]
    assert reply == b"-OOM no memory\r\n"


def test_renamenx_and_copy_do_not_overwrite_a_new_dst():
    busy = b"-BUSYKEY Target key name already exists.\r\n"
    batches, reply = drive(plan_write(A("RENAMENX", "s", "d")),
                           [[b"$1\r\nP\r\n", b":5000\r\n", b":0\r\n"], [busy]])
    assert batches[1] == [(b"d", A("RESTORE", "d", 5000, "P"))]
    assert reply == b":0\r\n"
    batches, reply = drive(plan_write(A("COPY", "s", "d")),
                           [[b"$1\r\nP\r\n", b":-1\r\n", b":0\r\n"], [busy]])
    assert batches[1] == [(b"d", A("RESTORE", "d", 0, "P"))]
    assert reply == b":0\r\n"


def test_smove_puts_the_member_back_when_sadd_fails():
    err = b"-OOM command not allowed\r\n"
    batches, reply = drive(plan_write(A("SMOVE", "s", "d", "m")),
                           [[b"+set\r\n", b"+none\r\n"], [b":1\r\n"], [err], [b":1\r\n"]])
    assert batches[1:] == [[(b"s", A("SREM", "s", "m"))], [(b"d", A("SADD", "d", "m"))],
                           [(b"s", A("SADD", "s", "m"))]]
    assert reply == err


def test_lmove_pushes_the_element_back_when_the_push_fails():
    err = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
    batches, reply = drive(plan_write(A("LMOVE", "s", "d", "left", "right")),
                           [[b"+list\r\n", b"+none\r\n"], [b"$1\r\nx\r\n"], [err], [b":3\r\n"]])
    assert batches[1:] == [[(b"s", A("LPOP", "s"))], [(b"d", A("RPUSH", "d", "x"))],
                           [(b"s", A("LPUSH", "s", "x"))]]
    assert reply == err
    # src emptied by someone else between the rounds
    assert drive(plan_write(A("RPOPLPUSH", "s", "d")),
                 [[b"+list\r\n", b"+list\r\n"], [b"$-1\r\n"]])[1] == b"$-1\r\n"


def test_mpop_rounds_and_races():
    # keys after the first non-empty one are not looked at (even a failed read)
    batches, reply = drive(plan_write(A("LMPOP", 3, "a", "b", "c", "RIGHT", "COUNT", 2)),
                           [[b":0\r\n", b":3\r\n", ERR_OTHER], [b"*1\r\n$1\r\nx\r\n"]])
    assert batches == [[(b"a", A("LLEN", "a")), (b"b", A("LLEN", "b")), (b"c", A("LLEN", "c"))],
                       [(b"b", A("RPOP", "b", 2))]]
    assert reply == b"*2\r\n$1\r\nb\r\n*1\r\n$1\r\nx\r\n"
    # an error before the first non-empty key wins
    assert drive(plan_write(A("ZMPOP", 2, "a", "b", "MIN")),
                 [[ERR_OTHER, b":3\r\n"]])[1] == ERR_OTHER
    # the chosen key emptied by someone else between the rounds: the next non-empty one
    batches, reply = drive(plan_write(A("ZMPOP", 3, "a", "b", "c", "max")),
                           [[b":2\r\n", b":0\r\n", b":1\r\n"], [b"*-1\r\n"],
                            [b"*2\r\n$1\r\nm\r\n$3\r\n2.5\r\n"]])
    assert batches[1:] == [[(b"a", A("ZPOPMAX", "a", 1))], [(b"c", A("ZPOPMAX", "c", 1))]]
    assert reply == b"*2\r\n$1\r\nc\r\n*1\r\n*2\r\n$1\r\nm\r\n$3\r\n2.5\r\n"
    assert drive(plan_write(A("LMPOP", 2, "a", "b", "LEFT")),
                 [[b":1\r\n", b":0\r\n"], [b"*-1\r\n"]])[1] == b"*-1\r\n"


def test_zrangestore_bylex_reads_scores_then_writes():
    batches, reply = drive(plan_write(A("ZRANGESTORE", "d", "s", "[a", "+", "BYLEX", "REV",
                                        "LIMIT", 0, 5)),
                           [[b"*3\r\n$1\r\nc\r\n$1\r\nb\r\n$1\r\na\r\n"],
                            [b"*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n"],  # b removed since
                            [b":0\r\n", b":2\r\n"]])
    assert batches == [[(b"s", A("ZRANGE", "s", "[a", "+", "BYLEX", "REV", "LIMIT", 0, 5))],
                       [(b"s", A("ZMSCORE", "s", "c", "b", "a"))],
                       [(b"d", A("DEL", "d")), (b"d", A("ZADD", "d", 1, "c", 2, "a"))]]
    assert reply == b":2\r\n"


def test_same_key_is_passed_through():
    for argv in [A("RENAME", "k", "k"), A("RENAMENX", "k", "k"), A("SMOVE", "k", "k", "m"),
                 A("LMOVE", "k", "k", "LEFT", "RIGHT"), A("RPOPLPUSH", "k", "k"),
                 A("SORT", "k", "STORE", "k"), A("SORT", "k", "STORE", "d", "STORE", "k"),
                 A("SORT", "k", "LIMIT", 0, 1), A("LMPOP", 2, "k", "k", "LEFT"),
                 A("ZMPOP", 1, "k", "MIN", "COUNT", 3)]:
        batches, reply = drive(plan_write(argv), [[b":7\r\n"]])
        assert batches == [[(b"k", argv)]]
        assert reply == b":7\r\n"


def test_store_writes_in_chunks_on_one_connection():
    members = [b"m%05d" % i for i in range(2 * CHUNK + 5)]
    read = b"*%d\r\n" % len(members) + b"".join(resp.bulk(m) for m in members)
    batches, reply = drive(plan_write(A("SUNIONSTORE", "d", "a")),
                           [[read], [b":0\r\n", b":1000\r\n", b":1000\r\n", b":5\r\n"]])
    write = batches[1]
    assert [k for k, _ in write] == [b"d"] * 4
    assert write[0][1] == A("DEL", "d")
    assert [len(argv) - 2 for _, argv in write[1:]] == [CHUNK, CHUNK, 5]
    assert reply == b":%d\r\n" % len(members)


@pytest.mark.parametrize("op, values, expected", [
    ("and", [b"\xff\x0f", b"\x0f"], b"\x0f\x00"),
    ("or", [b"\x01", b"", b"\x10\x20\x30"], b"\x11\x20\x30"),
    ("xor", [b"\xff\xff", b"\x0f"], b"\xf0\xff"),
    ("not", [b"\x00\xf0"], b"\xff\x0f"),
    ("and", [b"", b""], b""),
    ("not", [b""], b""),
])
def test_bitop_compute(op: str, values: list[bytes], expected: bytes):
    assert bitop(op, values) == expected


def test_dense_hll_round_trip():
    rng = random.Random(7)
    regs = bytes(rng.randrange(64) for _ in range(16384))
    hll = dense_hll(regs)
    assert len(hll) == 12304 and hll[:5] == b"HYLL\x00" and hll[15] & 0x80
    assert _dense_registers(hll[16:]) == regs
