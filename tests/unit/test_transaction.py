"""rproxy.core.transaction: queue-time checks and the EXEC outcome, sans-IO (the bytes are
checked against a real Redis in tests/integration/test_transactions.py)."""

from __future__ import annotations

import pytest

from rproxy.core import errors
from rproxy.core.commands import CommandTable
from rproxy.core.redirect import DELIVER, FAIL, FOLLOW_ASK, FOLLOW_MOVED, HOLD, TRY_AGAIN
from rproxy.core.resp import encode_command
from rproxy.core.slots import key_slot
from rproxy.core.transaction import (
    EMPTY_EXEC,
    QUEUED,
    Transaction,
    exec_aborted_by,
    exec_outcome,
)


def _cmd(name: str, arity: int, flags: tuple[bytes, ...] = (), first: int = 0,
         subcommands: tuple[object, ...] = (), last: int = 0, step: int = 1) -> list[object]:
    spec = [[b"begin_search", [b"type", b"index", b"spec", [b"index", first]],
             b"find_keys", [b"type", b"range", b"spec",
                            [b"lastkey", last, b"keystep", step, b"limit", 0]]]] if first else []
    return [name.encode(), arity, list(flags), first, first, 1 if first else 0, [], [],
            [[b"flags", [b"RW"], *s] for s in spec], list(subcommands)]


TABLE = CommandTable.from_command_reply([
    _cmd("get", 2, (b"readonly",), first=1), _cmd("set", -3, first=1),
    _cmd("ping", -1), _cmd("dbsize", 1, (b"readonly",)), _cmd("save", 1, (b"no_multi",)),
    _cmd("object", -2, subcommands=(_cmd("object|encoding", 3, first=2),)),
    _cmd("blpop", -3, (b"blocking",), first=1),
    _cmd("rename", 3, first=1, last=1), _cmd("mset", -3, first=1, last=-1, step=2),
])


def queue(tx: Transaction, *words: str) -> bytes:
    argv = [w.encode() for w in words]
    return tx.queue(TABLE.lookup(argv), argv, encode_command(argv))


def test_queued_commands_and_the_block():
    tx = Transaction()
    assert queue(tx, "SET", "{u}a", "1") == QUEUED
    assert queue(tx, "get", "{u}b") == QUEUED
    assert queue(tx, "PING") == QUEUED
    assert queue(tx, "BLPOP", "{u}l", "0") == QUEUED  # does not block inside MULTI
    assert tx.exec_reply() is None and not tx.aborted
    assert tx.block()[0] == encode_command([b"MULTI"])
    assert tx.block()[-1] == encode_command([b"EXEC"])
    assert len(tx.block()) == 6


@pytest.mark.parametrize("words, error", [
    (("NOSUCH", "x"), errors.unknown_command([b"NOSUCH", b"x"])),
    (("GET",), errors.wrong_arity(b"GET")),
    (("OBJECT", "NOPE", "k"), errors.unknown_subcommand(b"OBJECT", b"NOPE")),
    (("SAVE",), errors.NOT_IN_TRANSACTION),
])
def test_queue_time_errors_abort(words: tuple[str, ...], error: bytes):
    tx = Transaction()
    assert queue(tx, *words) == error
    assert tx.aborted and tx.exec_reply() == errors.EXECABORT


def test_a_second_slot_or_a_command_the_proxy_answers_aborts():
    tx = Transaction()
    assert queue(tx, "SET", "{a}x", "1") == QUEUED
    assert queue(tx, "SET", "{b}x", "1") == errors.CROSSSLOT_TRANSACTION
    assert tx.aborted
    tx = Transaction()
    assert queue(tx, "DBSIZE").startswith(b"-ERR rproxy: 'dbsize' is not supported: inside")
    assert tx.exec_reply() == errors.EXECABORT


def test_emulated_commands_over_several_slots_run_alone_in_order():
    """Emulating: a write over several slots is run by the proxy between two phases of
    per-slot groups; a split command with an argument error is its EXEC element."""
    tx = Transaction(emulate=True, emulate_writes=True)
    assert queue(tx, "SET", "{a}x", "1") == QUEUED
    assert queue(tx, "RENAME", "{a}x", "{b}y") == QUEUED
    assert queue(tx, "GET", "{b}y") == QUEUED
    assert queue(tx, "MSET", "{a}1", "1", "{b}2") == QUEUED  # an error at EXEC, as in Redis
    assert queue(tx, "PING") == QUEUED
    assert not tx.aborted and tx.several
    a, b = key_slot(b"{a}x"), key_slot(b"{b}y")
    # SET; then RENAME alone; then GET and PING (keyless: with the first slot's group)
    assert tx.phases() == [(0, 1), 1, (1, 3)]
    assert tx.groups() == [(a, [0]), (b, [2]), (a, [4])]
    got = tx.exec_array([b"*1\r\n+OK\r\n", b"*1\r\n$1\r\n1\r\n", b"*1\r\n+PONG\r\n"],
                        {1: b"+OK\r\n"})
    assert got == (b"*5\r\n+OK\r\n+OK\r\n$1\r\n1\r\n" + errors.wrong_arity(b"MSET")
                   + b"+PONG\r\n")


def test_emulated_writes_need_their_setting():
    tx = Transaction(emulate=True)
    assert queue(tx, "RENAME", "{a}x", "{b}y") == errors.CROSSSLOT_IN_EMULATED_TRANSACTION
    assert tx.aborted


def test_empty_transaction():
    assert Transaction().exec_reply() == EMPTY_EXEC


def test_exec_aborted_by_its_own_error():
    assert exec_aborted_by(errors.wrong_arity(b"exec")) == (
        b"-EXECABORT Transaction discarded because of: "
        b"wrong number of arguments for 'exec' command\r\n")


OK, Q = b"+OK\r\n", b"+QUEUED\r\n"
MOVED = b"-MOVED 7 10.0.0.2:7000\r\n"


@pytest.mark.parametrize("replies, hops, kind", [
    ([OK, Q, b"*1\r\n+OK\r\n"], 0, DELIVER),
    ([OK, Q, b"*-1\r\n"], 0, DELIVER),  # a WATCH conflict (nil): it is an answer
    ([OK, MOVED, errors.EXECABORT], 0, FOLLOW_MOVED),
    ([OK, Q, MOVED], 0, FOLLOW_MOVED),  # the slot moved after queueing: EXEC got MOVED
    ([OK, b"-ASK 7 10.0.0.2:7000\r\n", errors.EXECABORT], 0, FOLLOW_ASK),
    ([OK, b"-TRYAGAIN Multiple keys\r\n", errors.EXECABORT], 0, TRY_AGAIN),
    ([OK, b"-CLUSTERDOWN The cluster is down\r\n", errors.EXECABORT], 9, HOLD),
    ([OK, MOVED, errors.EXECABORT], 5, FAIL),
    ([OK, b"-OOM command not allowed\r\n", errors.EXECABORT], 0, DELIVER),
    ([errors.OUTCOME_UNKNOWN] * 3, 0, DELIVER),
])
def test_exec_outcome(replies: list[bytes], hops: int, kind: int):
    assert exec_outcome(replies, "10.0.0.1", hops, 5).kind == kind
