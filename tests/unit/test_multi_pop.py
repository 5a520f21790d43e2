"""rproxy.core.multi_pop: the plans of blocking pops over several slots, sans-IO (the bytes are
compared with one Redis in tests/integration/test_crossslot_transactions.py)."""

from __future__ import annotations

import pytest

from rproxy.core import errors
from rproxy.core.multi_pop import NIL, PopPlan, plan_pop
from rproxy.core.resp import encode_command


def A(*words: str) -> list[bytes]:
    return [w.encode() for w in words]


@pytest.mark.parametrize("argv, error", [
    (A("BLPOP", "a", "b", "x"), b"-ERR timeout is not a float or out of range\r\n"),
    (A("BLPOP", "a", "b", "nan"), b"-ERR timeout is not a float or out of range\r\n"),
    (A("BRPOP", "a", "b", "-1"), b"-ERR timeout is negative\r\n"),
    (A("BLMOVE", "a", "b", "UP", "LEFT", "x"), errors.SYNTAX),  # the ends first
    (A("BLMOVE", "a", "b", "LEFT", "LEFT", "x"), b"-ERR timeout is not a float or out of range\r\n"),
    (A("BLMPOP", "x", "0", "a", "LEFT"), b"-ERR timeout is not a float or out of range\r\n"),
    (A("BLMPOP", "0", "0", "a", "LEFT"), errors.NUMKEYS_POSITIVE),
    (A("BZMPOP", "0", "2", "a", "b", "LEFT"), errors.SYNTAX),
    (A("BLMPOP", "0", "2", "a", "b", "LEFT", "COUNT", "0"), errors.COUNT_POSITIVE),
])
def test_argument_errors_in_redis_order(argv: list[bytes], error: bytes) -> None:
    assert plan_pop(argv) == error


def test_blmpop_pops_blocks_and_pushes_back_in_order() -> None:
    plan = plan_pop(A("BLMPOP", "0", "2", "a", "b", "RIGHT", "COUNT", "2"))
    assert isinstance(plan, PopPlan)
    assert plan.pop(b"a") == encode_command(A("LMPOP", "1", "a", "right", "COUNT", "2"))
    assert plan.popped(b"a", NIL) is None
    assert plan.block([b"b"]) == encode_command(A("BLMPOP", "0", "1", "b", "right", "COUNT", "2"))
    got = b"*2\r\n$1\r\nb\r\n*2\r\n$1\r\nz\r\n$1\r\ny\r\n"  # z was the last element, then y
    assert plan.popped(b"b", got) == got
    assert plan.push_back(got) == encode_command(A("RPUSH", "b", "y", "z"))


def test_bzmpop_pushes_back_members_with_their_scores() -> None:
    plan = plan_pop(A("BZMPOP", "0", "2", "a", "b", "MIN"))
    assert isinstance(plan, PopPlan)
    got = b"*2\r\n$1\r\na\r\n*1\r\n*2\r\n$1\r\nm\r\n$3\r\n1.5\r\n"
    assert plan.push_back(got) == encode_command(A("ZADD", "a", "1.5", "m"))


def test_blmove_pops_its_source_then_pushes_to_its_destination() -> None:
    plan = plan_pop(A("BLMOVE", "src", "dst", "RIGHT", "LEFT", "0"))
    assert isinstance(plan, PopPlan)
    assert plan.pop(b"src") == encode_command(A("RPOP", "src"))
    assert plan.popped(b"src", b"$-1\r\n") is None
    assert plan.block([b"src"]) == encode_command(A("BRPOP", "src", "0"))
    got = plan.blocked(b"*2\r\n$3\r\nsrc\r\n$1\r\ne\r\n")
    assert got == b"$1\r\ne\r\n"
    assert plan.then(got) == encode_command(A("LPUSH", "dst", "e"))
    assert plan.undo(got) == encode_command(A("RPUSH", "src", "e"))
    brpoplpush = plan_pop(A("BRPOPLPUSH", "src", "dst", "0"))
    assert isinstance(brpoplpush, PopPlan)
    assert (brpoplpush.where, brpoplpush.to) == (b"right", b"left")
    assert plan_pop(A("BLPOP", "a", "b", "0")).then(b"$1\r\ne\r\n") is None  # type: ignore[union-attr]
