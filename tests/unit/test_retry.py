"""The retry rules (rproxy/core/redirect.py): which written-but-unanswered commands may be resent."""

from __future__ import annotations

import pytest

from rproxy.core.resp import encode_command
from rproxy.core.resp import parse_reply
from rproxy.core.redirect import IDEMPOTENT, resend_after_loss


def argv(*words: str) -> list[bytes]:
    return [w.encode() for w in words]


@pytest.mark.parametrize("words", [
    ("SET", "k", "v"),
    ("set", "k", "v", "EX", "10"),
    ("SET", "k", "v", "KEEPTTL"),
    ("SETEX", "k", "10", "v"),
    ("MSET", "a", "1", "b", "2"),
    ("DEL", "a", "b"),
    ("UNLINK", "a"),
    ("EXPIRE", "k", "100"),
    ("PERSIST", "k"),
    ("HSET", "h", "f", "v"),
    ("HDEL", "h", "f"),
    ("SADD", "s", "m"),
    ("SREM", "s", "m"),
    ("ZADD", "z", "1", "m"),
    ("ZREM", "z", "m"),
    ("PFADD", "hll", "a"),
    ("SETRANGE", "k", "0", "abc"),
    ("LSET", "l", "0", "v"),
])
def test_idempotent_writes_are_resent(words: tuple[str, ...]) -> None:
    assert resend_after_loss(argv(*words), readonly=False)


@pytest.mark.parametrize("words", [
    ("SET", "k", "v", "NX"),  # the reply says whether this call set it
    ("SET", "k", "v", "xx"),
    ("SET", "k", "v", "GET"),
    ("EXPIRE", "k", "100", "NX"),
    ("ZADD", "z", "INCR", "1", "m"),
    ("ZADD", "z", "GT", "1", "m"),
    ("INCR", "k"),
    ("INCRBY", "k", "2"),
    ("LPUSH", "l", "v"),
    ("RPUSH", "l", "v"),
    ("APPEND", "k", "v"),
    ("HINCRBY", "h", "f", "1"),
    ("HSETNX", "h", "f", "v"),
    ("SETNX", "k", "v"),
    ("XADD", "s", "*", "f", "v"),
    ("LPOP", "l"),
    ("EVAL", "return 1", "0"),
    ("FLUSHALL",),
])
def test_other_writes_are_not_resent(words: tuple[str, ...]) -> None:
    assert not resend_after_loss(argv(*words), readonly=False)


def test_reads_are_always_resent() -> None:
    assert resend_after_loss(argv("GET", "k"), readonly=True)
    assert resend_after_loss([], readonly=True)


def test_an_option_word_as_a_value_errs_on_the_safe_side() -> None:
    # "SET k NX" sets k to the string "NX": resending would be safe, but the rule only looks
    # at words, so it declines -- never the other way round.
    assert not resend_after_loss(argv("SET", "k", "NX"), readonly=False)
    assert resend_after_loss(argv("SET", "k", "NXX"), readonly=False)


def test_empty_or_unknown_commands_are_not_resent() -> None:
    assert not resend_after_loss([], readonly=False)
    assert not resend_after_loss(argv("NOSUCHCOMMAND", "k"), readonly=False)


def test_every_listed_command_is_a_write_in_upper_case() -> None:
    for name, unsafe in IDEMPOTENT.items():
        assert name == name.upper()
        assert all(word == word.upper() for word in unsafe)


def test_the_rules_see_the_argv_the_proxy_sent() -> None:
    # requeue() recovers the argv of a written request with parse_reply
    words = argv("SET", "k", "v\r\nwith binary \x00")
    assert parse_reply(encode_command(words)) == words
    assert parse_reply(b"") is False
