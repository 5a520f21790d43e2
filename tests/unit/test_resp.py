"""rproxy.core.resp: request parsing (mirrors Redis's tests/unit/protocol.tcl and networking.c),
inline splitting (sds.c sdssplitargs), string2ll (util.c), reply framing and encoding."""

from __future__ import annotations

import random
import re
import tracemalloc

import hiredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rproxy.core import errors
from rproxy.core.resp import (
    CLOSE_SILENTLY,
    NULL_ARRAY,
    NULL_BULK,
    PROTO_INLINE_MAX_SIZE,
    BackendProtocolError,
    ReplyFramer,
    RequestLimits,
    RequestParser,
    ScanFramer,
    array,
    bulk,
    encode_command,
    encode_value,
    integer,
    parse_reply,
    simple,
    split_inline,
    string2ll,
)

PROPS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

INVALID_MBULK = b"-ERR Protocol error: invalid multibulk length\r\n"
INVALID_BULK = b"-ERR Protocol error: invalid bulk length\r\n"
TOO_BIG_INLINE = b"-ERR Protocol error: too big inline request\r\n"
TOO_BIG_MBULK = b"-ERR Protocol error: too big mbulk count string\r\n"
TOO_BIG_BULK = b"-ERR Protocol error: too big bulk count string\r\n"
UNBALANCED = b"-ERR Protocol error: unbalanced quotes in request\r\n"


def expected_dollar(c: str) -> bytes:
    return b"-ERR Protocol error: expected '$', got '" + c.encode() + b"'\r\n"


PING = b"*1\r\n$4\r\nPING\r\n"


def run(parser: RequestParser, chunks: list[bytes]) -> list[list[bytes]]:
    """Feed ``chunks`` one by one; check every result's ``encoded`` parses back to its argv
    (canonical, but for the two unchecked bytes after a bulk); return argvs."""
    out: list[list[bytes]] = []
    for chunk in chunks:
        for argv, encoded in parser.parse(chunk):
            assert isinstance(argv, list) and argv, argv
            assert all(type(a) is bytes for a in argv), argv
            assert _same_command(encoded, argv)
            out.append(argv)
    return out


def _same_command(encoded: bytes, argv: list[bytes]) -> bool:
    """``encoded`` is ``argv``'s canonical encoding, except that the two bytes after each bulk
    may be anything: Redis skips them unchecked, so the client's own bytes are forwarded."""
    canonical = encode_command(argv)
    if len(encoded) != len(canonical) or parse_reply(encoded) != argv:
        return False
    diff = [i for i in range(len(encoded)) if encoded[i] != canonical[i]]
    trailers: set[int] = set()
    pos = len(b"*%d\r\n" % len(argv))
    for a in argv:
        pos += len(b"$%d\r\n" % len(a)) + len(a)
        trailers |= {pos, pos + 1}
        pos += 2
    return set(diff) <= trailers


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


# -- protocol.tcl and networking.c, row by row ----------------------------------------------------
PROTOCOL_CASES = [
    # (id, input, commands, error)
    ("empty-query", b"\r\n", [], None),
    ("empty-query-then-ping", b"\r\nPING\r\n", [[b"PING"]], None),
    ("bare-lf-is-empty-query", b"\n", [], None),
    ("blank-inline-line", b"   \t \r\n", [], None),
    ("negative-multibulk-ignored", b"*-10\r\n", [], None),
    ("negative-multibulk-then-ping", b"*-10\r\n" + PING, [[b"PING"]], None),
    ("zero-multibulk-ignored", b"*0\r\n" + PING, [[b"PING"]], None),
    ("null-multibulk-ignored", b"*-1\r\n" + PING, [[b"PING"]], None),
    # protocol.tcl "Out of range multibulk length" (*3000000000) is in test_huge_multibulk_count.
    ("non-number-multibulk-length", b"*abc\r\n", [], INVALID_MBULK),
    ("empty-multibulk-length", b"*\r\n", [], INVALID_MBULK),
    ("leading-zero-multibulk-length", b"*01\r\n$1\r\na\r\n", [], INVALID_MBULK),
    ("plus-sign-multibulk-length", b"*+1\r\n$1\r\na\r\n", [], INVALID_MBULK),
    ("minus-zero-multibulk-length", b"*-0\r\n", [], INVALID_MBULK),
    (
        "wrong-multibulk-payload-header",
        b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n",
        [],
        expected_dollar("f"),
    ),
    ("multibulk-not-followed-by-bulk", b"*1\r\nfoo\r\n", [], expected_dollar("f")),
    ("integer-element-in-request", b"*1\r\n:5\r\n", [], expected_dollar(":")),
    ("array-element-in-request", b"*1\r\n*1\r\n$1\r\na\r\n", [], expected_dollar("*")),
    (
        "negative-multibulk-payload-length",
        b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$-10\r\n",
        [],
        INVALID_BULK,
    ),
    ("null-bulk-in-request", b"*2\r\n$1\r\na\r\n$-1\r\n", [], INVALID_BULK),
    (
        "out-of-range-multibulk-payload-length",
        b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$2000000000\r\n",
        [],
        INVALID_BULK,
    ),
    (
        "non-number-multibulk-payload-length",
        b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$blabla\r\n",
        [],
        INVALID_BULK,
    ),
    ("leading-zero-bulk-length", b"*1\r\n$01\r\na\r\n", [], INVALID_BULK),
    ("empty-bulk-length", b"*1\r\n$\r\n", [], INVALID_BULK),
    (
        "unbalanced-number-of-quotes",
        b'set """test-key""" test-value\r\nping\r\n',
        [],
        UNBALANCED,
    ),
    ("unterminated-double-quote", b'GET "foo\r\n', [], UNBALANCED),
    ("unterminated-single-quote", b"GET 'foo\r\n", [], UNBALANCED),
    # Redis skips the two bytes after a bulk without checking them.
    ("bytes-after-bulk-unchecked", b"*1\r\n$1\r\naXY" + PING, [[b"a"], [b"PING"]], None),
    # The inline search is strchr(): a NUL byte hides the newline, so Redis keeps waiting.
    ("nul-hides-inline-newline", b"PING\x00\r\n", [], None),
    ("empty-argument", b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n", [[b"GET", b""]], None),
    (
        "crlf-inside-argument",
        b"*2\r\n$4\r\nECHO\r\n$4\r\na\r\nb\r\n",
        [[b"ECHO", b"a\r\nb"]],
        None,
    ),
    (
        "mixed-multibulk-and-inline-pipeline",
        PING + b"ECHO hi\r\n*2\r\n$4\r\nECHO\r\n$2\r\nyo\r\n",
        [[b"PING"], [b"ECHO", b"hi"], [b"ECHO", b"yo"]],
        None,
    ),
    (
        "inline-quotes-and-escapes",
        b"SET \"a b\" '\\'' \"\\x41\\n\"\r\n",
        [[b"SET", b"a b", b"'", b"A\n"]],
        None,
    ),
    (
        "commands-before-error-are-returned",
        PING + b"PING\r\n*1\r\nfoo\r\n" + PING,
        [[b"PING"], [b"PING"]],
        expected_dollar("f"),
    ),
    (
        "commands-before-inline-error-are-returned",
        PING + b'set """a""" b\r\n' + PING,
        [[b"PING"]],
        UNBALANCED,
    ),
    (
        "commands-before-bulk-error-are-returned",
        PING + b"*2\r\n$3\r\nGET\r\n$-5\r\n" + PING,
        [[b"PING"]],
        INVALID_BULK,
    ),
]


@pytest.mark.parametrize(
    "data, commands, error", [c[1:] for c in PROTOCOL_CASES], ids=[c[0] for c in PROTOCOL_CASES]
)
def test_protocol_case_fed_whole(data: bytes, commands: list[list[bytes]], error: bytes | None):
    p = RequestParser()
    assert run(p, [data]) == commands
    assert p.error == error


@pytest.mark.parametrize(
    "data, commands, error", [c[1:] for c in PROTOCOL_CASES], ids=[c[0] for c in PROTOCOL_CASES]
)
def test_protocol_case_fed_byte_by_byte(
    data: bytes, commands: list[list[bytes]], error: bytes | None
):
    p = RequestParser()
    assert run(p, chunked(data, 1)) == commands
    assert p.error == error


@pytest.mark.parametrize(
    "data, commands, error", [c[1:] for c in PROTOCOL_CASES], ids=[c[0] for c in PROTOCOL_CASES]
)
def test_protocol_case_every_two_way_split(
    data: bytes, commands: list[list[bytes]], error: bytes | None
):
    for cut in range(len(data) + 1):
        p = RequestParser()
        assert run(p, [data[:cut], data[cut:]]) == commands, cut
        assert p.error == error, cut


# -- size limits of the request headers (PROTO_INLINE_MAX_SIZE = 64 KiB) --------------------------
BIG = PROTO_INLINE_MAX_SIZE + 4464  # 70000 bytes
PAYLOAD = b"payload" * 10000  # protocol.tcl writes the literal word "payload" in a loop

SIZE_CASES = [
    ("inline-over-64k-without-newline", b"A" * (PROTO_INLINE_MAX_SIZE + 1), TOO_BIG_INLINE),
    ("inline-exactly-64k-waits", b"A" * PROTO_INLINE_MAX_SIZE, None),
    ("mbulk-count-line-over-64k", b"*" + b"1" * BIG, TOO_BIG_MBULK),
    ("mbulk-count-line-exactly-64k-waits", b"*" + b"1" * (PROTO_INLINE_MAX_SIZE - 1), None),
    ("bulk-count-line-over-64k", b"*1\r\n$" + b"1" * BIG, TOO_BIG_BULK),
    ("bulk-count-line-exactly-64k-waits", b"*1\r\n$" + b"1" * (PROTO_INLINE_MAX_SIZE - 1), None),
    ("run-of-nul-bytes", b"\x00" * BIG, TOO_BIG_INLINE),
    ("protocol-desync-1-nul", b"\x00" + PAYLOAD, TOO_BIG_INLINE),
    ("protocol-desync-2-star-nul", b"*\x00" + PAYLOAD, TOO_BIG_MBULK),
    ("protocol-desync-3-dollar-nul", b"$\x00" + PAYLOAD, TOO_BIG_INLINE),
]


@pytest.mark.parametrize(
    "data, error", [c[1:] for c in SIZE_CASES], ids=[c[0] for c in SIZE_CASES]
)
@pytest.mark.parametrize("chunk", [None, 1024])
def test_header_size_limits(data: bytes, error: bytes | None, chunk: int | None):
    p = RequestParser()
    chunks = [data] if chunk is None else chunked(data, chunk)
    assert run(p, chunks) == []
    assert p.error == error


def test_inline_over_64k_with_newline_in_the_same_read_is_accepted():
    # Redis only complains when no newline is found within 64 KiB of buffered bytes.
    p = RequestParser()
    assert run(p, [b"A" * BIG + b"\r\n"]) == [[b"A" * BIG]]
    assert p.error is None


def test_ping_after_64k_preamble_is_not_reached():
    p = RequestParser()
    assert run(p, [b"\x00" * BIG + b"\r\n" + PING]) == []
    assert p.error == TOO_BIG_INLINE


# -- stickiness -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [b"*1\r\nfoo\r\n", b"*abc\r\n", b'"unbalanced\r\n', b"*1\r\n$-3\r\n"],
    ids=["expected-dollar", "mbulk-len", "quotes", "bulk-len"],
)
def test_parser_is_sticky_after_an_error(bad: bytes):
    p = RequestParser()
    assert run(p, [PING]) == [[b"PING"]]
    assert run(p, [bad]) == []
    err = p.error
    assert err is not None and err.startswith(b"-ERR Protocol error: ")
    assert p.parse(PING) == []
    assert p.parse(b"PING\r\n" * 3) == []
    assert p.error == err


def test_commands_in_the_same_read_as_the_error_come_back_first():
    p = RequestParser()
    out = p.parse(PING + encode_command([b"GET", b"k"]) + b"*1\r\nfoo\r\n" + PING)
    assert [argv for argv, _ in out] == [[b"PING"], [b"GET", b"k"]]
    assert p.error == expected_dollar("f")


def test_error_in_a_later_read_keeps_earlier_commands():
    p = RequestParser()
    assert run(p, [PING + b"*1\r\n"]) == [[b"PING"]]
    assert p.error is None
    assert run(p, [b"foo\r\n" + PING]) == []
    assert p.error == expected_dollar("f")


# -- canonical encoding ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, encoded",
    [
        ([b"PING"], b"*1\r\n$4\r\nPING\r\n"),
        ([b""], b"*1\r\n$0\r\n\r\n"),
        ([b"SET", b"k", b"v"], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"),
        ([b"ECHO", b"a\r\nb"], b"*2\r\n$4\r\nECHO\r\n$4\r\na\r\nb\r\n"),
        ([], b"*0\r\n"),
    ],
)
def test_encode_command(argv: list[bytes], encoded: bytes):
    assert encode_command(argv) == encoded


@pytest.mark.parametrize(
    "raw, argv",
    [
        (b"PING\r\n", [b"PING"]),
        (b"  set  k   v  \r\n", [b"set", b"k", b"v"]),
        (b'SET "a b" c\n', [b"SET", b"a b", b"c"]),
    ],
)
def test_encoded_is_canonical_for_inline_input(raw: bytes, argv: list[bytes]):
    p = RequestParser()
    out = p.parse(raw)
    assert out == [(argv, encode_command(argv))]


@pytest.mark.parametrize(
    "raw, argv",
    [
        (b"*1\r\n$4\r\nPINGaa", [b"PING"]),
        (b"*2\r\n$3\r\nGET\r\n$1\r\nkXY", [b"GET", b"k"]),
        (b"*3\r\n$3\r\nSET\r\n$1\r\nk??$1\r\nv\r\n", [b"SET", b"k", b"v"]),
        (b"*5\r\n$4\r\nMSET\r\n$1\r\nk!!$1\r\nv\n\n$1\r\nj\r\n$1\r\nwZZ", [b"MSET", b"k", b"v", b"j", b"w"]),
    ],
)
def test_bytes_after_a_bulk_are_not_checked(raw: bytes, argv: list[bytes]):
    # Redis (processMultibulkBuffer) skips the two bytes after a bulk without looking at them;
    # so does the parser, and what it forwards means the same to Redis.
    p = RequestParser()
    [(got, encoded)] = p.parse(raw)
    assert got == argv and _same_command(encoded, argv)
    assert p.parse(PING) == [([b"PING"], PING)]


@pytest.mark.parametrize(
    "raw, error",
    [
        (b"*2\r\n$3\r\nGET\r\n+abc\r\n", b"-ERR Protocol error: expected '$', got '+'\r\n"),
        (b"*2\r\n$3\r\nGET\r\n=7\r\ntxt:abc\r\n", b"-ERR Protocol error: expected '$', got '='\r\n"),
        (b"*2\r\n:1\r\n$1\r\nk\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
        (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n*1\r\n$1\r\nv\r\n", b"-ERR Protocol error: expected '$', got '*'\r\n"),
        (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n%1\r\n$1\r\nv\r\n$1\r\nv\r\n", b"-ERR Protocol error: expected '$', got '%'\r\n"),
        # four or more elements take the general header walk
        (b"*4\r\n$4\r\nMSET\r\n$1\r\nk\r\n$1\r\nv\r\n:1\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
        (b"*5\r\n$4\r\nMSET\r\n$1\r\nk\r\n+v\r\n$1\r\nj\r\n$1\r\nw\r\n", b"-ERR Protocol error: expected '$', got '+'\r\n"),
        (b"*4\r\n*1\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n", b"-ERR Protocol error: expected '$', got '*'\r\n"),
    ],
)
def test_elements_hiredis_accepts_but_redis_does_not(raw: bytes, error: bytes):
    # hiredis parses these into a list of values; Redis wants '$' bulks only.
    p = RequestParser()
    assert p.parse(PING + raw) == [([b"PING"], PING)]
    assert p.error == error


def test_large_number_of_args():
    # protocol.tcl "test large number of args": MSET with 20002 arguments.
    argv = [b"mset"] + [b"k", b"v"] * 10000 + [b"{k}2", b"v2"]
    p = RequestParser()
    assert run(p, [encode_command(argv)]) == [argv]
    p = RequestParser()
    assert run(p, chunked(encode_command(argv), 4096)) == [argv]


# -- configured limits ----------------------------------------------------------------------------
ARGS2 = RequestLimits(max_args=2)
BULK10 = RequestLimits(max_bulk_len=10)
LIMIT_CASES = [
    ("args-at-limit", ARGS2, encode_command([b"a", b"b"]), [[b"a", b"b"]], None),
    ("args-over-limit", ARGS2, encode_command([b"a", b"b", b"c"]), [], INVALID_MBULK),
    ("bulk-at-limit", BULK10, encode_command([b"x" * 10]), [[b"x" * 10]], None),
    ("bulk-over-limit", BULK10, encode_command([b"x" * 11]), [], INVALID_BULK),
]


@pytest.mark.parametrize(
    "limits, data, commands, error", [c[1:] for c in LIMIT_CASES], ids=[c[0] for c in LIMIT_CASES]
)
@pytest.mark.parametrize("chunk", [None, 1], ids=["whole", "byte-by-byte"])
def test_request_limits(
    limits: RequestLimits,
    data: bytes,
    commands: list[list[bytes]],
    error: bytes | None,
    chunk: int | None,
):
    p = RequestParser(limits)
    assert run(p, [data] if chunk is None else chunked(data, chunk)) == commands
    assert p.error == error


HUGE_COUNT_CASES = [
    # protocol.tcl "Out of range multibulk length"
    ("out-of-range-multibulk-length", None, b"*3000000000\r\n", INVALID_MBULK),
    ("count-over-int-max", RequestLimits(max_args=2**40), b"*2147483648\r\n", INVALID_MBULK),
    ("count-int-max-waits", RequestLimits(max_args=2**40), b"*2147483647\r\n", None),
]


@pytest.mark.parametrize(
    "limits, data, error", [c[1:] for c in HUGE_COUNT_CASES], ids=[c[0] for c in HUGE_COUNT_CASES]
)
def test_huge_multibulk_count(limits: RequestLimits | None, data: bytes, error: bytes | None):
    """A 13-byte header must be answered (or awaited) without the proxy allocating memory in
    proportion to the announced count: Redis allocates argv lazily, bounded by what arrives."""
    tracemalloc.start()
    try:
        p = RequestParser(limits)
        assert run(p, [data]) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert p.error == error
    assert peak < 64 * 1024 * 1024, f"parsing {data!r} allocated {peak} bytes"


def test_bulk_over_limit_is_rejected_when_the_header_arrives():
    p = RequestParser(RequestLimits(max_bulk_len=10))
    assert run(p, [b"*2\r\n$3\r\nSET\r\n$11\r\n"]) == []
    assert p.error == INVALID_BULK


def test_query_buffer_limit_closes_silently():
    p = RequestParser(RequestLimits(query_buffer_limit=1000))
    assert run(p, [b"*1\r\n$5000\r\n" + b"x" * 500]) == []
    assert p.error is None
    assert run(p, [b"x" * 600]) == []
    assert p.error == CLOSE_SILENTLY
    assert p.parse(b"x" * 5000 + b"\r\n" + PING) == []


def test_query_buffer_limit_on_an_unterminated_inline_request():
    p = RequestParser(RequestLimits(query_buffer_limit=1000))
    assert run(p, [b"A" * 1001]) == []
    assert p.error == CLOSE_SILENTLY


def test_query_buffer_limit_on_a_large_bulk_fed_in_chunks():
    limit = 1024 * 1024
    p = RequestParser(RequestLimits(query_buffer_limit=limit))
    data = encode_command([b"SET", b"k", b"v" * (2 * limit)])
    fed = 0
    for chunk in chunked(data, 65536):
        assert p.parse(chunk) == []
        fed += len(chunk)
        if p.error is not None:
            break
    assert p.error == CLOSE_SILENTLY
    assert limit < fed < len(data)


def test_complete_commands_do_not_count_against_the_query_buffer_limit():
    p = RequestParser(RequestLimits(query_buffer_limit=1000))
    assert run(p, [PING * 200]) == [[b"PING"]] * 200
    assert p.error is None
    assert p.buffered == 0


def test_buffered_counts_unparsed_bytes():
    p = RequestParser()
    assert run(p, [PING + b"*2\r\n$3\r\nGET\r\n$1"]) == [[b"PING"]]
    assert p.buffered == len(b"*2\r\n$3\r\nGET\r\n$1")
    assert run(p, [b"\r\nk\r\n"]) == [[b"GET", b"k"]]
    assert p.buffered == 0


@pytest.mark.parametrize("size", [5 * 1024 * 1024, 65536 + 1, 65536 - 1])
def test_large_bulk_fed_in_64k_chunks(size: int):
    value = bytes(range(256)) * (size // 256) + b"\r\n" * ((size % 256) // 2) + b"z" * (size % 2)
    assert len(value) == size
    data = encode_command([b"SET", b"big", value]) + PING
    p = RequestParser()
    assert run(p, chunked(data, 65536)) == [[b"SET", b"big", value], [b"PING"]]
    assert p.error is None
    assert p.buffered == 0


def test_many_pipelined_commands_fed_in_odd_chunks():
    cmds = [[b"SET", b"key:%d" % i, b"v" * (i % 50)] for i in range(3000)]
    data = b"".join(encode_command(c) for c in cmds)
    p = RequestParser()
    assert run(p, chunked(data, 4093)) == cmds
    assert p.buffered == 0


# -- property tests -------------------------------------------------------------------------------
arg = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"", b"\r\n", b"\r", b"\n", b"\x00", b"*1\r\n", b"$3\r\n", b'"', b"'"]),
)
command = st.lists(arg, min_size=1, max_size=6)
commands = st.lists(command, min_size=1, max_size=8)


@PROPS
@given(cmds=commands, data=st.data())
def test_any_commands_fed_in_any_chunks_parse_like_whole(cmds: list[list[bytes]], data):
    stream = b"".join(encode_command(c) for c in cmds)
    whole = RequestParser()
    assert run(whole, [stream]) == cmds
    assert whole.error is None
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts"))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    p = RequestParser()
    assert run(p, pieces) == cmds
    assert p.error is None
    assert p.buffered == 0


@PROPS
@given(cmds=commands)
def test_any_commands_fed_one_byte_at_a_time(cmds: list[list[bytes]]):
    stream = b"".join(encode_command(c) for c in cmds)
    p = RequestParser()
    assert run(p, chunked(stream, 1)) == cmds
    assert p.error is None


@settings(max_examples=25, deadline=None, database=None)
@given(
    sizes=st.lists(st.integers(0, 200_000), min_size=1, max_size=3),
    chunk=st.integers(1, 70_000),
)
def test_large_arguments_in_random_chunk_sizes(sizes: list[int], chunk: int):
    cmds = [[b"SET", b"k%d" % i, bytes([i % 256]) * n] for i, n in enumerate(sizes)]
    stream = b"".join(encode_command(c) for c in cmds)
    p = RequestParser()
    assert run(p, chunked(stream, chunk)) == cmds
    assert p.error is None


# A line starting with '*' is a multibulk request, not an inline one.
inline_token = st.binary(min_size=1, max_size=10).filter(
    lambda b: b[0] != 42 and not any(c in b for c in b" \t\n\r\x0b\x0c\x00\"'")
)


@PROPS
@given(lines=st.lists(st.lists(inline_token, min_size=1, max_size=5), min_size=1, max_size=5))
def test_simple_inline_commands(lines: list[list[bytes]]):
    stream = b"".join(b" ".join(t) + b"\r\n" for t in lines)
    p = RequestParser()
    assert run(p, chunked(stream, 3)) == lines
    assert p.error is None


resp_ish = st.lists(
    st.sampled_from(
        [b"*", b"$", b"\r\n", b"\r", b"\n", b"1", b"2", b"-1", b"0", b"-", b"99999999999", b"\x00",
         b"a", b" ", b'"', b"'", b"\\", b"x4", b"PING", b":", b"+"]
    ),
    max_size=60,
).map(b"".join).filter(
    # A '*' count of 7+ digits makes hiredis pre-allocate a huge list (test_huge_multibulk_count
    # covers that); keep it out of the random streams so they stay fast.
    lambda b: not re.search(rb"\*[0-9]{7,}", b)
)


def _check_random(stream: bytes, pieces: list[bytes], limits: RequestLimits | None) -> None:
    p = RequestParser(limits)
    for piece in pieces:
        out = p.parse(piece)
        assert isinstance(out, list)
        for argv, encoded in out:
            assert argv and all(type(a) is bytes for a in argv)
            assert _same_command(encoded, argv)
        if p.error is not None:
            assert p.error == CLOSE_SILENTLY or (
                p.error.startswith(b"-ERR Protocol error: ") and p.error.endswith(b"\r\n")
            )
            assert p.parse(b"PING\r\n" + PING) == []
            return


@PROPS
@given(stream=st.one_of(st.binary(max_size=300), resp_ish), data=st.data())
def test_random_bytes_never_raise(stream: bytes, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8), label="cuts"))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    _check_random(stream, [stream], None)
    _check_random(stream, pieces, None)
    _check_random(stream, pieces, RequestLimits(max_bulk_len=4, max_args=3, query_buffer_limit=16))


# -- split_inline (sdssplitargs) ------------------------------------------------------------------
SPLIT_CASES = [
    (b"", []),
    (b"   ", []),
    (b"PING", [b"PING"]),
    (b"  set  a   b  ", [b"set", b"a", b"b"]),
    (b"\x0b\x0ca", [b"a"]),  # leading blanks are isspace()
    (b"a\x0bb", [b"a\x0bb"]),  # but only ' ', \t, \n, \r end an unquoted token
    (b'"\\x41"', [b"A"]),
    (b'"\\x4a\\x4A"', [b"JJ"]),
    (b'"\\x4"', [b"x4"]),
    (b'"\\xzz"', [b"xzz"]),
    (b'"\\X41"', [b"X41"]),
    (b"'\\''", [b"'"]),
    (b"'\\n'", [b"\\n"]),
    (b"'\\x41'", [b"\\x41"]),
    (b'"\\n"', [b"\n"]),
    (b'"\\n\\r\\t\\b\\a"', [b"\n\r\t\b\a"]),
    (b'"\\q\\\\\\""', [b'q\\"']),
    (b'""', [b""]),
    (b"''", [b""]),
    (b'a "" b', [b"a", b"", b"b"]),
    (b'foo"bar baz"', [b"foobar baz"]),
    (b'"a b" c', [b"a b", b"c"]),
    (b'"a"\t"b"', [b"a", b"b"]),
    (b'"a"\x0b', [b"a"]),
    (b"\xff\xfe", [b"\xff\xfe"]),
    (b"a\x00b c", [b"a"]),  # a C string: ends at the first NUL
    (b'"foo"bar', None),  # closing quote followed by a non-space
    (b"'foo'bar", None),
    (b'"foo', None),
    (b"'foo", None),
    (b'"abc\\', None),
    (b'"a\x00b"', None),
    (b'set """test-key""" test-value', None),
]


@pytest.mark.parametrize("line, expected", SPLIT_CASES)
def test_split_inline(line: bytes, expected: list[bytes] | None):
    assert split_inline(line) == expected


@PROPS
@given(st.binary(max_size=200))
def test_split_inline_never_raises(line: bytes):
    out = split_inline(line)
    assert out is None or all(type(t) is bytes for t in out)


# -- string2ll ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, value",
    [
        (b"0", 0),
        (b"1", 1),
        (b"-1", -1),
        (b"123", 123),
        (b"-0", None),
        (b"01", None),
        (b"-01", None),
        (b"00", None),
        (b"+1", None),
        (b"", None),
        (b"-", None),
        (b" 1", None),
        (b"1 ", None),
        (b"1a", None),
        (b"1_0", None),
        (b"1.0", None),
        (str(2**63 - 1).encode(), 2**63 - 1),
        (str(2**63).encode(), None),
        (str(-(2**63)).encode(), -(2**63)),
        (str(-(2**63) - 1).encode(), None),
        (b"1" * 21, None),
        ("\u0661".encode(), None),
    ],
)
def test_string2ll(raw: bytes, value: int | None):
    assert string2ll(raw) == value


# -- reply framing --------------------------------------------------------------------------------
REPLIES = [
    b"+OK\r\n",
    b"+\r\n",
    b"-ERR unknown command 'x', with args beginning with: \r\n",
    b":0\r\n",
    b":-12345\r\n",
    b"$3\r\nfoo\r\n",
    b"$0\r\n\r\n",
    b"$4\r\na\r\nb\r\n",
    b"$-1\r\n",
    b"*-1\r\n",
    b"*0\r\n",
    b"*2\r\n$1\r\na\r\n:1\r\n",
    b"*3\r\n$-1\r\n*-1\r\n-ERR in array\r\n",
    b"*2\r\n*1\r\n+a\r\n*0\r\n",
    b"*2\r\n*2\r\n*1\r\n:1\r\n$2\r\nhi\r\n+x\r\n",
    # arrays of bulks and nils are measured from the parsed values; anything else is scanned
    b"*4\r\n$1\r\na\r\n$-1\r\n$0\r\n\r\n$5\r\n*1\r\n:\r\n",
    b"*3\r\n$2\r\n\r\n\r\n+b\r\n$-1\r\n",
    b"*2\r\n$-1\r\n*-1\r\n",
]
STREAM = b"".join(REPLIES)


@pytest.mark.parametrize("reply", REPLIES)
def test_framer_frames_each_type_byte_exact(reply: bytes):
    f = ReplyFramer()
    assert f.feed(reply) == [reply]
    assert f.idle


def test_framer_passes_simple_strings_through_unchanged():
    f = ReplyFramer()
    assert f.feed(b"+OK\r\n$2\r\nOK\r\n") == [b"+OK\r\n", b"$2\r\nOK\r\n"]


def test_framer_whole_stream():
    assert ReplyFramer().feed(STREAM) == REPLIES


def test_framer_every_two_way_split():
    for cut in range(len(STREAM) + 1):
        f = ReplyFramer()
        assert f.feed(STREAM[:cut]) + f.feed(STREAM[cut:]) == REPLIES, cut
        assert f.idle


def test_framer_one_byte_at_a_time():
    f = ReplyFramer()
    out = []
    for i in range(len(STREAM)):
        out += f.feed(STREAM[i : i + 1])
    assert out == REPLIES
    assert f.idle


def test_framer_not_idle_on_partial_reply():
    f = ReplyFramer()
    assert f.feed(b"*2\r\n$1\r\na\r\n") == []
    assert not f.idle
    assert f.feed(b":7\r\n") == [b"*2\r\n$1\r\na\r\n:7\r\n"]
    assert f.idle


@PROPS
@given(
    replies=st.lists(st.sampled_from(REPLIES), min_size=1, max_size=12),
    data=st.data(),
)
@pytest.mark.parametrize("framer", [ReplyFramer, ScanFramer])
def test_framer_any_split_points(framer, replies: list[bytes], data):
    stream = b"".join(replies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10), label="cuts"))
    f = framer()
    out = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        out += f.feed(stream[a:b])
    assert out == replies
    assert f.idle


@pytest.mark.parametrize("size", [5 * 1024 * 1024, 65537])
@pytest.mark.parametrize("framer", [ReplyFramer, ScanFramer])
def test_framer_large_bulk_in_64k_chunks(framer, size: int):
    value = b"\r\n" * (size // 2) + b"x" * (size % 2)
    reply = bulk(value)
    stream = b"*2\r\n" + reply + b":1\r\n" + b"+OK\r\n"
    f = framer()
    out = []
    for chunk in chunked(stream, 65536):
        out += f.feed(chunk)
    assert out == [b"*2\r\n" + reply + b":1\r\n", b"+OK\r\n"]
    assert f.idle


@pytest.mark.parametrize(
    "garbage",
    [b"?what\r\n", b"@\r\n", b"x\r\n", b"$abc\r\n", b"*x\r\n", b"*2\r\n!\r\n"],
)
@pytest.mark.parametrize("framer", [ReplyFramer, ScanFramer])
def test_framer_garbage_raises_backend_protocol_error(framer, garbage: bytes):
    with pytest.raises(BackendProtocolError):
        framer().feed(garbage)


RESP3_REPLIES = [
    b"_\r\n", b",1.5\r\n", b",-inf\r\n", b"#t\r\n", b"(12345678901234567890\r\n",
    b"=8\r\ntxt:abcd\r\n", b"%2\r\n+a\r\n:1\r\n+b\r\n,1.5\r\n", b"~2\r\n$1\r\nx\r\n$1\r\ny\r\n",
    b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n", b"*2\r\n+a\r\n_\r\n", b"!5\r\nERR x\r\n",
    b"|1\r\n+key\r\n+val\r\n:5\r\n", b"%1\r\n$1\r\nk\r\n~1\r\n%0\r\n", b"$3\r\nend\r\n",
]


@pytest.mark.parametrize(
    "resp3", [b"_\r\n", b",1.5\r\n", b"#t\r\n", b"(12\r\n", b"=5\r\ntxt:a\r\n", b"%1\r\n+a\r\n+b\r\n",
              b"~1\r\n+a\r\n", b"*2\r\n+a\r\n_\r\n", b">1\r\n+a\r\n", b"|1\r\n+a\r\n+b\r\n:1\r\n"],
)
@pytest.mark.parametrize("framer", [ReplyFramer, ScanFramer])
def test_a_resp2_framer_refuses_resp3_types(framer, resp3: bytes):
    # A backend connection that did not say HELLO 3 speaks RESP2: these mean a broken stream.
    with pytest.raises(BackendProtocolError):
        framer(resp3=False).feed(b"+OK\r\n" + resp3)


@pytest.mark.parametrize("framer", [ReplyFramer, ScanFramer])
def test_framer_frames_resp3_replies_however_split(framer):
    """A connection after HELLO 3 gets RESP3: each reply framed whole (an attribute with the
    reply it annotates), byte for byte, whatever the chunking."""
    data = b"".join(RESP3_REPLIES)
    rng = random.Random(3)
    for _ in range(200):
        f, out, i = framer(), [], 0
        while i < len(data):
            j = i + rng.randint(1, 40)
            out += f.feed(data[i:j])
            i = j
        assert out == RESP3_REPLIES


def test_framer_takes_over_what_hiredis_refuses():
    # hiredis stops at a nesting depth (Lua can return deeper tables); the scanner frames
    # that reply, and hiredis takes the stream back at the next reply boundary.
    deep = b"*1\r\n" * 100_000 + b":1\r\n"
    stream = b"+a\r\n" + deep + b"$2\r\nhi\r\n"
    f = ReplyFramer()
    out = []
    for chunk in chunked(stream, 4096):
        out += f.feed(chunk)
    assert out == [b"+a\r\n", deep, b"$2\r\nhi\r\n"]
    assert f.idle
    assert f.feed(b":5\r\n*1\r\n$1\r\nx\r\n") == [b":5\r\n", b"*1\r\n$1\r\nx\r\n"]


# -- reply encoding -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, encoded",
    [
        (None, b"$-1\r\n"),
        (b"", b"$0\r\n\r\n"),
        (b"a\r\nb", b"$4\r\na\r\nb\r\n"),
        ("h\u00e9", b"$3\r\nh\xc3\xa9\r\n"),
        (0, b":0\r\n"),
        (-7, b":-7\r\n"),
        (True, b":1\r\n"),
        ([], b"*0\r\n"),
        ([b"a", 1, None, [b"b"]], b"*4\r\n$1\r\na\r\n:1\r\n$-1\r\n*1\r\n$1\r\nb\r\n"),
        ((b"x",), b"*1\r\n$1\r\nx\r\n"),
    ],
)
def test_encode_value(value: object, encoded: bytes):
    assert encode_value(value) == encoded


def test_encode_value_rejects_unknown_types():
    with pytest.raises(TypeError):
        encode_value(1.5)


def test_small_encoders():
    assert bulk(None) == NULL_BULK == b"$-1\r\n"
    assert NULL_ARRAY == b"*-1\r\n"
    assert bulk(b"ab") == b"$2\r\nab\r\n"
    assert integer(42) == b":42\r\n"
    assert simple(b"PONG") == b"+PONG\r\n"
    assert array([b":1\r\n", b"+a\r\n"]) == b"*2\r\n:1\r\n+a\r\n"


def test_parse_reply():
    assert parse_reply(b"*2\r\n$1\r\na\r\n:3\r\n") == [b"a", 3]
    err = parse_reply(b"-ERR boom\r\n")
    assert isinstance(err, hiredis.ReplyError) and str(err) == "ERR boom"


def test_error_constants_match_errors_module():
    assert errors.PROTO_INVALID_MBULK == INVALID_MBULK
    assert errors.PROTO_INVALID_BULK == INVALID_BULK
    assert errors.PROTO_TOO_BIG_INLINE == TOO_BIG_INLINE
    assert errors.PROTO_TOO_BIG_MBULK == TOO_BIG_MBULK
    assert errors.PROTO_TOO_BIG_BULK == TOO_BIG_BULK
    assert errors.PROTO_UNBALANCED_QUOTES == UNBALANCED


def test_the_inline_and_unauthenticated_limits_are_configurable():
    """limits.max_inline_len (Redis's PROTO_INLINE_MAX_SIZE), limits.unauth_max_args and
    unauth_max_bulk_len (Redis's fixed 10 and 16384 before AUTH)."""
    p = RequestParser(RequestLimits(max_inline_len=2048))
    assert p.parse(b"A" * 2048) == [] and p.error is None
    p = RequestParser(RequestLimits(max_inline_len=2048))
    assert p.parse(b"A" * 2049) == [] and p.error == TOO_BIG_INLINE
    unauth = RequestLimits(unauthenticated=True, unauth_max_args=3, unauth_max_bulk_len=5)
    p = RequestParser(unauth)
    assert p.parse(b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$5\r\npassw\r\n") == [
        ([b"AUTH", b"u", b"passw"], b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$5\r\npassw\r\n")]
    p = RequestParser(unauth)
    p.parse(b"*4\r\n")
    assert p.error == b"-ERR Protocol error: unauthenticated multibulk length\r\n"
    p = RequestParser(unauth)
    p.parse(b"*2\r\n$4\r\nAUTH\r\n$6\r\n")
    assert p.error == b"-ERR Protocol error: unauthenticated bulk length\r\n"
    p = RequestParser(unauth)  # lifted by AUTH (the session sets the limits again)
    p.set_limits(RequestLimits())
    assert p.parse(b"*4\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$6\r\nsixsix\r\n")[0][0] == [
        b"a", b"b", b"c", b"sixsix"]
