"""rproxy.core.redirect: what an error reply means (``parse_redirect``), the one decision the
owner of a connection acts on (``decide``), and which written-but-unanswered commands may be
resent (``resend_after_loss``)."""

from __future__ import annotations

import pytest

from rproxy.core import errors
from rproxy.core.redirect import (
    ASK,
    DELIVER,
    FAIL,
    FOLLOW_ASK,
    FOLLOW_MOVED,
    HOLD,
    IDEMPOTENT,
    MOVED,
    RETRY,
    TO_MASTER,
    TRY_AGAIN,
    WAIT,
    Redirect,
    decide,
    parse_redirect,
    resend_after_loss,
)
from rproxy.core.resp import encode_command, parse_reply


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


# -- redirects ------------------------------------------------------------------------------------
REDIRECT_CASES = [
    (b"-MOVED 3999 127.0.0.1:6381\r\n", Redirect(MOVED, 3999, ("127.0.0.1", 6381))),
    (b"-ASK 3999 127.0.0.1:6381\r\n", Redirect(ASK, 3999, ("127.0.0.1", 6381))),
    (b"-MOVED 0 redis-2.example:7000\r\n", Redirect(MOVED, 0, ("redis-2.example", 7000))),
    (b"-MOVED 16383 :6381\r\n", Redirect(MOVED, 16383, ("10.1.1.1", 6381))),  # empty host
    (b"-ASK 1 :6381\r\n", Redirect(ASK, 1, ("10.1.1.1", 6381))),
    (b"-MOVED 3999 [::1]:7000\r\n", Redirect(MOVED, 3999, ("::1", 7000))),
    (b"-MOVED 3999 ::1:7000\r\n", Redirect(MOVED, 3999, ("::1", 7000))),  # as Redis prints it
    (b"-ASK 12 [fe80::1]:7001\r\n", Redirect(ASK, 12, ("fe80::1", 7001))),
    (b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n", Redirect(RETRY)),
    (b"-CLUSTERDOWN The cluster is down\r\n", Redirect(WAIT)),
    (b"-CLUSTERDOWN Hash slot not served\r\n", Redirect(WAIT)),
    (b"-CLUSTERDOWN The cluster is down and only accepts read commands\r\n", Redirect(WAIT)),
    (b"-READONLY You can't write against a read only replica.\r\n", Redirect(WAIT)),
    (b"-LOADING Redis is loading the dataset in memory\r\n", Redirect(WAIT)),
    (b"-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n",
     Redirect(WAIT)),
    (b"-ERR unknown command 'x', with args beginning with: \r\n", None),
    (b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", None),
    (b"-CROSSSLOT Keys in request don't hash to the same slot\r\n", None),
    (b"-ERR MOVED 1 h:1\r\n", None),
    (b"+MOVED 1 h:1\r\n", None),
    (b"$5\r\nMOVED\r\n", None),
    (b"-MOVED x h:1\r\n", None),  # malformed: deliver as a normal error
    (b"-MOVED 1 h:port\r\n", None),
    (b"-MOVED 1\r\n", None),
]


@pytest.mark.parametrize("reply, decision", REDIRECT_CASES)
def test_parse_redirect(reply: bytes, decision: Redirect | None):
    assert parse_redirect(reply, "10.1.1.1") == decision


# -- the decision -----------------------------------------------------------------------------
MOVED_REPLY = b"-MOVED 3999 127.0.0.1:6381\r\n"
ASK_REPLY = b"-ASK 3999 127.0.0.1:6381\r\n"
TRYAGAIN_REPLY = b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"
LOADING_REPLY = b"-LOADING Redis is loading the dataset in memory\r\n"


@pytest.mark.parametrize("reply, hops, replica, slot, kind", [
    (errors.WRONGTYPE, 0, False, 5, DELIVER),
    (errors.WRONGTYPE, 9, True, 5, DELIVER),  # a normal error is delivered whatever the hops
    (MOVED_REPLY, 0, False, 5, FOLLOW_MOVED),
    (MOVED_REPLY, 4, False, 5, FOLLOW_MOVED),  # the 5th hop is allowed (max_redirects 5)
    (MOVED_REPLY, 5, False, 5, FAIL),  # the 6th is not
    (ASK_REPLY, 4, False, 5, FOLLOW_ASK),
    (ASK_REPLY, 5, False, 5, FAIL),
    (TRYAGAIN_REPLY, 0, False, 5, TRY_AGAIN),
    (TRYAGAIN_REPLY, 5, False, 5, FAIL),
    (LOADING_REPLY, 0, False, 5, HOLD),
    (LOADING_REPLY, 99, False, 5, HOLD),  # held: bounded by failover_hold_s, not by hops
    (LOADING_REPLY, 0, True, 5, TO_MASTER),  # a replica that cannot serve: ask the master
    (LOADING_REPLY, 0, True, -1, HOLD),  # ... unless the request has no slot
    (b"-CLUSTERDOWN The cluster is down\r\n", 0, False, 5, HOLD),
])
def test_decide(reply: bytes, hops: int, replica: bool, slot: int, kind: int):
    decision = decide(reply, "10.1.1.1", hops, 5, replica, slot)
    assert decision.kind == kind
    if kind in (FOLLOW_MOVED, FOLLOW_ASK):
        assert decision.addr == ("127.0.0.1", 6381) and decision.slot == 3999
