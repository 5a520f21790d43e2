"""rproxy.core.merge (fan-out reply merging) and rproxy.core.errors (exact Redis error texts)."""

from __future__ import annotations

import pytest

from rproxy.core import errors, resp
from rproxy.core.merge import (
    first_error,
    format_info,
    merge_concat,
    merge_sum,
    parse_info,
    sum_keyspace,
)
from rproxy.core.resp import bulk

ERR_A = b"-ERR first\r\n"
ERR_B = b"-LOADING Redis is loading the dataset in memory\r\n"


# -- merge_sum ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "parts, merged",
    [
        ([b":1\r\n", b":2\r\n", b":3\r\n"], b":6\r\n"),
        ([b":0\r\n"], b":0\r\n"),
        ([b":10\r\n", b":-4\r\n"], b":6\r\n"),
        ([b":9223372036854775807\r\n", b":0\r\n"], b":9223372036854775807\r\n"),
        ([], b":0\r\n"),
        ([b":1\r\n", ERR_A, b":2\r\n"], ERR_A),
        ([ERR_B, ERR_A], ERR_B),  # the first error, in part order
        ([b":1\r\n", b":2\r\n", ERR_A, ERR_B], ERR_A),
    ],
)
def test_merge_sum(parts: list[bytes], merged: bytes):
    assert merge_sum(parts) == merged


# -- merge_concat ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "parts, merged",
    [
        (
            [b"*2\r\n$1\r\na\r\n$1\r\nb\r\n", b"*0\r\n", b"*1\r\n$3\r\nccc\r\n"],
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$3\r\nccc\r\n",
        ),
        ([b"*0\r\n", b"*0\r\n"], b"*0\r\n"),
        ([], b"*0\r\n"),
        ([b"*-1\r\n", b"*1\r\n$1\r\nx\r\n"], b"*1\r\n$1\r\nx\r\n"),
        # elements pass through byte-exact, whatever their type
        (
            [b"*2\r\n+OK\r\n:5\r\n", b"*1\r\n*2\r\n$0\r\n\r\n$-1\r\n"],
            b"*3\r\n+OK\r\n:5\r\n*2\r\n$0\r\n\r\n$-1\r\n",
        ),
        (
            [b"*1\r\n$4\r\na\r\nb\r\n", b"*1\r\n$2\r\n\x00\xff\r\n"],
            b"*2\r\n$4\r\na\r\nb\r\n$2\r\n\x00\xff\r\n",
        ),
        ([b"*1\r\n$1\r\na\r\n", ERR_A], ERR_A),
        ([ERR_B, b"*1\r\n$1\r\na\r\n", ERR_A], ERR_B),
    ],
)
def test_merge_concat(parts: list[bytes], merged: bytes):
    assert merge_concat(parts) == merged


@pytest.mark.parametrize(
    "parts, err",
    [
        ([b":1\r\n", b"+OK\r\n"], None),
        ([b"$-1\r\n", b"-ERR x\r\n", b"-ERR y\r\n"], b"-ERR x\r\n"),
        ([], None),
    ],
)
def test_first_error(parts: list[bytes], err: bytes | None):
    assert first_error(parts) == err


# -- INFO -----------------------------------------------------------------------------------------
def info_reply(text: str) -> bytes:
    return bulk(text.encode())


MASTER_A = info_reply(
    "# Server\r\nredis_version:7.0.15\r\n\r\n"
    "# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=1000\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n"
)
MASTER_B = info_reply("# Keyspace\r\ndb0:keys=5,expires=6,avg_ttl=2000\r\n")
MASTER_C = info_reply("# Keyspace\r\n")  # an empty master lists no databases
MASTER_D = info_reply("# Keyspace\r\ndb0:keys=7,expires=0,avg_ttl=0,subexpiry=0\r\n")


def test_sum_keyspace_weights_avg_ttl_by_expires():
    assert sum_keyspace([MASTER_A, MASTER_B, MASTER_C]) == {
        # (1000*2 + 2000*6) / (2 + 6) = 1750
        "db0": {"keys": 15, "expires": 8, "avg_ttl": 1750},
        "db3": {"keys": 1, "expires": 0, "avg_ttl": 0},
    }


def test_sum_keyspace_no_expires_means_zero_avg_ttl():
    assert sum_keyspace([MASTER_D, MASTER_D]) == {"db0": {"keys": 14, "expires": 0, "avg_ttl": 0}}


def test_sum_keyspace_empty():
    assert sum_keyspace([MASTER_C]) == {}
    assert sum_keyspace([]) == {}


def test_parse_info():
    assert parse_info(MASTER_A) == {
        "server": {"redis_version": "7.0.15"},
        "keyspace": {"db0": "keys=10,expires=2,avg_ttl=1000", "db3": "keys=1,expires=0,avg_ttl=0"},
    }


def test_format_info_shape():
    raw = format_info(
        [
            ("Server", [("redis_version", "7.0.15"), ("tcp_port", 7777)]),
            ("Keyspace", [("db0", "keys=1,expires=0,avg_ttl=0")]),
        ]
    )
    text = (
        b"# Server\r\nredis_version:7.0.15\r\ntcp_port:7777\r\n"
        b"\r\n"
        b"# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n"
    )
    assert raw == text
    assert resp.verbatim(raw, 2) == b"$%d\r\n%b\r\n" % (len(text), text)
    assert resp.verbatim(raw, 3) == b"=%d\r\ntxt:%b\r\n" % (len(text) + 4, text)


def test_format_info_single_and_empty_sections():
    assert format_info([("Server", [])]) == b"# Server\r\n"
    assert format_info([]) == b""


@pytest.mark.parametrize("protocol", [2, 3])
def test_format_info_round_trips_through_parse_info(protocol: int):
    raw = resp.verbatim(format_info([("Clients", [("connected_clients", 3)]),
                                     ("Keyspace", [("db0", "keys=2")])]), protocol)
    assert parse_info(raw) == {"clients": {"connected_clients": "3"}, "keyspace": {"db0": "keys=2"}}


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, reply",
    [
        ([b"foo"], b"-ERR unknown command 'foo', with args beginning with: \r\n"),
        (
            [b"foo", b"a", b"b"],
            b"-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n",
        ),
        (
            [b"FOO", b""],
            b"-ERR unknown command 'FOO', with args beginning with: '' \r\n",
        ),
        (
            [b"x" * 200],
            b"-ERR unknown command '" + b"x" * 128 + b"', with args beginning with: \r\n",
        ),
        # the arg list stops once it reaches 128 bytes; each arg is cut to the room left
        (
            [b"foo", b"a" * 200, b"b"],
            b"-ERR unknown command 'foo', with args beginning with: '" + b"a" * 128 + b"' \r\n",
        ),
        (
            [b"foo", b"a" * 100, b"b" * 100],
            b"-ERR unknown command 'foo', with args beginning with: '"
            + b"a" * 100 + b"' '" + b"b" * 25 + b"' \r\n",
        ),
        (
            [b"foo", b"a\r\nb"],
            b"-ERR unknown command 'foo', with args beginning with: 'a  b' \r\n",
        ),
        (
            [b"fo\no", b"x"],
            b"-ERR unknown command 'fo o', with args beginning with: 'x' \r\n",
        ),
        # Redis formats with %.128s / %.*s: a C string ends at the first NUL byte
        (
            [b"a\x00b", b"c\x00d"],
            b"-ERR unknown command 'a', with args beginning with: 'c' \r\n",
        ),
    ],
)
def test_unknown_command(argv: list[bytes], reply: bytes):
    assert errors.unknown_command(argv) == reply


@pytest.mark.parametrize(
    "name, reply",
    [
        (b"get", b"-ERR wrong number of arguments for 'get' command\r\n"),
        (b"GET", b"-ERR wrong number of arguments for 'get' command\r\n"),
        (b"CLIENT|KILL", b"-ERR wrong number of arguments for 'client|kill' command\r\n"),
    ],
)
def test_wrong_arity(name: bytes, reply: bytes):
    assert errors.wrong_arity(name) == reply


def test_unknown_subcommand():
    assert (
        errors.unknown_subcommand(b"config", b"nosuch")
        == b"-ERR unknown subcommand 'nosuch'. Try CONFIG HELP.\r\n"
    )
    assert errors.unknown_subcommand(b"object", b"x" * 200) == (
        b"-ERR unknown subcommand '" + b"x" * 128 + b"'. Try OBJECT HELP.\r\n"
    )


@pytest.mark.parametrize(
    "got, reply",
    [
        (ord("f"), b"-ERR Protocol error: expected '$', got 'f'\r\n"),
        (ord(":"), b"-ERR Protocol error: expected '$', got ':'\r\n"),
    ],
)
def test_proto_expected_dollar(got: int, reply: bytes):
    assert errors.proto_expected_dollar(got) == reply


# Byte-for-byte Redis 7 texts (reliability-reference.md section 3).
@pytest.mark.parametrize(
    "constant, text",
    [
        (errors.PROTO_TOO_BIG_INLINE, b"-ERR Protocol error: too big inline request\r\n"),
        (errors.PROTO_UNBALANCED_QUOTES, b"-ERR Protocol error: unbalanced quotes in request\r\n"),
        (errors.PROTO_TOO_BIG_MBULK, b"-ERR Protocol error: too big mbulk count string\r\n"),
        (errors.PROTO_INVALID_MBULK, b"-ERR Protocol error: invalid multibulk length\r\n"),
        (errors.PROTO_TOO_BIG_BULK, b"-ERR Protocol error: too big bulk count string\r\n"),
        (errors.PROTO_INVALID_BULK, b"-ERR Protocol error: invalid bulk length\r\n"),
        (errors.SYNTAX, b"-ERR syntax error\r\n"),
        (errors.NOT_INTEGER, b"-ERR value is not an integer or out of range\r\n"),
        (errors.CROSSSLOT, b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"),
        (errors.SELECT_NOT_ALLOWED, b"-ERR SELECT is not allowed in cluster mode\r\n"),
        (errors.NOPROTO, b"-NOPROTO unsupported protocol version\r\n"),
        (errors.MAX_CLIENTS, b"-ERR max number of clients reached\r\n"),
        (errors.CLUSTER_DOWN_UNCOVERED, b"-CLUSTERDOWN Hash slot not served\r\n"),
    ],
)
def test_redis_error_constants(constant: bytes, text: bytes):
    assert constant == text


@pytest.mark.parametrize(
    "constant, code",
    [
        (errors.REQUEST_TIMED_OUT, b"-ERR rproxy: "),
        (errors.HOLD_EXPIRED, b"-CLUSTERDOWN rproxy: "),
        (errors.CLUSTER_UNREACHABLE, b"-CLUSTERDOWN rproxy: "),
        (errors.NO_HEALTHY_REPLICA, b"-CLUSTERDOWN rproxy: "),
        (errors.TOO_MANY_REDIRECTS, b"-TRYAGAIN rproxy: "),
        (errors.OUTCOME_UNKNOWN, b"-ERR rproxy: "),
        (errors.BACKEND_PROTOCOL, b"-ERR rproxy: "),
        (errors.SHUTTING_DOWN, b"-ERR rproxy: "),
        (errors.NO_TOPOLOGY, b"-CLUSTERDOWN rproxy: "),
    ],
)
def test_proxy_errors_are_prefixed(constant: bytes, code: bytes):
    assert constant.startswith(code)
    assert constant.endswith(b"\r\n") and constant.count(b"\r\n") == 1


def test_not_supported():
    assert errors.not_supported(b"MULTI", "it needs a dedicated connection") == (
        b"-ERR rproxy: 'multi' is not supported: it needs a dedicated connection\r\n"
    )
    assert errors.not_supported(b"X\r\nY", "a\nb") == (
        b"-ERR rproxy: 'x  y' is not supported: a b\r\n"
    )
