"""Differential protocol tests (reliability reference §2.1 P1-P4).

The same raw bytes go, on a fresh TCP connection each, to a standalone redis-server and to the
proxy in front of the cluster. The reply bytes must be identical, and so must be whether the
server closed the connection. The cases are those of Redis's tests/unit/protocol.tcl that apply
to a RESP2 server without DEBUG, plus the edges of src/networking.c (processInlineBuffer,
processMultibulkBuffer) and of the commands the proxy answers itself.

Commands whose replies legitimately differ between one Redis and the proxy (INFO, the HELLO 2
map, CLIENT ID/LIST, SELECT <n != 0>, READONLY, HELLO 3) are not compared here.

Reading is bounded: a side is read until it closes the connection, or until the case's known
last reply (``until``) has arrived followed by a short quiet period, or until a deadline. When
the standalone server closed the connection, the proxy is read until it closes too (or the
deadline), so a late close is seen as well as a missing one.
"""

from __future__ import annotations

import random
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import hiredis
import pytest

from rproxy.localcluster import LocalCluster
from tests.support import ProxyThread, StandaloneRedis, proxy_config


RUN = uuid.uuid4().hex[:12]  # keys are unique per run: no FLUSHALL needed, no collisions
QUIET_S = 0.25  # silence that ends a read once the expected bytes are in (or nothing is expected)
TIMEOUT_S = 5.0  # hard bound of one exchange


def cmd(*args: bytes | str | int) -> bytes:
    """Canonical multibulk encoding (written here, independent of rproxy.core.resp)."""
    parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def err(text: str) -> bytes:
    return b"-" + text.encode() + b"\r\n"


def k(name: str) -> str:
    return f"pdiff:{RUN}:{name}"


# -- the raw exchange -----------------------------------------------------------------------------
def exchange(port: int, chunks: Sequence[bytes], *, until: bytes | None,
             wait_close: bool = False, quiet_s: float = QUIET_S,
             timeout_s: float = TIMEOUT_S) -> tuple[bytes, bool]:
    """Send ``chunks`` (one ``send`` each, Nagle off) on a fresh connection and read.

    The read ends when the server closes the connection; or, unless ``wait_close``, once
    ``until`` has been received (immediately if ``until`` is None) and ``quiet_s`` passed with
    no further byte; or at ``timeout_s``. Returns (bytes received, server closed)."""
    deadline = time.monotonic() + timeout_s
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for c in chunks:
                s.sendall(c)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed early (after a protocol error): read what it said
        got = b""
        quiet_until: float | None = None
        while True:
            now = time.monotonic()
            if now >= deadline:
                return got, False
            if not wait_close and (until is None or until in got):
                if quiet_until is None:
                    quiet_until = now + quiet_s
                if now >= quiet_until:
                    return got, False
                wait = min(deadline, quiet_until) - now
            else:
                wait = deadline - now
            s.settimeout(max(0.005, wait))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                return got, True
            if not chunk:
                return got, True
            got += chunk
            quiet_until = None  # new bytes: the quiet period starts again


def show(b: bytes, limit: int = 300) -> str:
    return repr(b) if len(b) <= limit else f"{b[:limit]!r}... ({len(b)} bytes)"


def diff_exchange(standalone: StandaloneRedis, proxy: ProxyThread, chunks: Sequence[bytes],
                  until: bytes | None, closes: bool,
                  proxy_timeout_s: float = TIMEOUT_S) -> tuple[bytes, bool]:
    """Run one case against both servers and assert identical bytes and close behaviour.
    ``closes`` (what Redis is expected to do) only makes the standalone side wait for the close
    instead of a quiet period; the caller checks the expectation. Returns Redis's reply and
    close flag."""
    ref, ref_closed = exchange(standalone.port, chunks, until=until, wait_close=closes)
    got, got_closed = exchange(proxy.port, chunks, until=until, wait_close=ref_closed,
                               timeout_s=proxy_timeout_s)
    payload = b"".join(chunks)
    assert (got, got_closed) == (ref, ref_closed), (
        f"input {show(payload)}\n"
        f"  redis: {show(ref)} closed={ref_closed}\n"
        f"  proxy: {show(got)} closed={got_closed}"
    )
    return ref, ref_closed


# -- P1/P2: request parsing and the commands the proxy answers itself --------------------------
@dataclass(frozen=True)
class Case:
    id: str
    chunks: tuple[bytes, ...]  # each chunk is its own send()
    until: bytes | None  # the last bytes Redis sends; None: nothing at all
    closes: bool  # what Redis does (checked on the standalone side, keeps the table honest)


def case(id: str, payload: bytes | Sequence[bytes], until: bytes | None,
         closes: bool = False) -> Case:
    chunks = (payload,) if isinstance(payload, bytes) else tuple(payload)
    return Case(id, chunks, until, closes)


PING = cmd("PING")
PONG = b"+PONG\r\n"
E_MBULK = err("ERR Protocol error: invalid multibulk length")
E_BULK = err("ERR Protocol error: invalid bulk length")
E_INLINE_BIG = err("ERR Protocol error: too big inline request")
E_MBULK_BIG = err("ERR Protocol error: too big mbulk count string")
E_BULK_BIG = err("ERR Protocol error: too big bulk count string")
E_QUOTES = err("ERR Protocol error: unbalanced quotes in request")


def e_dollar(c: str) -> bytes:
    return err(f"ERR Protocol error: expected '$', got '{c}'")


SET_X = b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n"  # protocol.tcl's prefix: SET x <bad third argument>
LONG_ARG = "x" * 100

CASES: list[Case] = [
    # ---- tests/unit/protocol.tcl --------------------------------------------------------------
    case("empty-query-then-ping", [b"\r\n", PING], PONG),
    case("empty-query-then-ping-one-write", b"\r\n" + PING, PONG),
    case("empty-inline-lines-then-ping", b"\r\n\n   \r\n\t\r\nPING\r\n", PONG),
    case("negative-multibulk-then-ping", [b"*-10\r\n", PING], PONG),
    case("negative-multibulk-one-write", b"*-10\r\n" + PING, PONG),
    case("zero-multibulk-then-ping", b"*0\r\n" + PING, PONG),
    case("multibulk-not-a-number", b"*abc\r\n", E_MBULK, closes=True),
    case("multibulk-plus-sign", b"*+1\r\n$4\r\nPING\r\n", E_MBULK, closes=True),
    case("multibulk-leading-zero", b"*01\r\n$4\r\nPING\r\n", E_MBULK, closes=True),
    case("multibulk-leading-space", b"* 1\r\n$4\r\nPING\r\n", E_MBULK, closes=True),
    case("multibulk-empty-count", b"*\r\n", E_MBULK, closes=True),
    case("wrong-multibulk-payload-header", SET_X + b"fooz\r\n", e_dollar("f"), closes=True),
    case("negative-multibulk-payload-length", SET_X + b"$-10\r\n", E_BULK, closes=True),
    case("out-of-range-payload-length", SET_X + b"$2000000000\r\n", E_BULK, closes=True),
    case("non-number-payload-length", SET_X + b"$blabla\r\n", E_BULK, closes=True),
    case("multibulk-not-followed-by-bulk", b"*1\r\nfoo\r\n", e_dollar("f"), closes=True),
    case("bulk-length-negative", b"*1\r\n$-10\r\n", E_BULK, closes=True),
    case("bulk-length-minus-one", b"*1\r\n$-1\r\n", E_BULK, closes=True),
    case("bulk-length-too-big", b"*1\r\n$2000000000\r\n", E_BULK, closes=True),
    case("bulk-length-above-proto-max-bulk-len", b"*1\r\n$536870913\r\n", E_BULK, closes=True),
    case("bulk-length-not-a-number", b"*1\r\n$blabla\r\n", E_BULK, closes=True),
    case("bulk-length-plus-sign", b"*1\r\n$+4\r\nPING\r\n", E_BULK, closes=True),
    case("bulk-length-leading-zero", b"*1\r\n$04\r\nPING\r\n", E_BULK, closes=True),
    case("integer-instead-of-bulk", b"*1\r\n:5\r\n", e_dollar(":"), closes=True),
    case("simple-string-instead-of-bulk", b"*1\r\n+ab\r\n", e_dollar("+"), closes=True),
    case("array-instead-of-bulk", b"*1\r\n*1\r\n$4\r\nPING\r\n", e_dollar("*"), closes=True),
    case("incomplete-multibulk-waits", b"*20\r\n$3\r\nfoo\r\n", None),
    case("incomplete-bulk-waits", b"*1\r\n$10\r\nPIN", None),
    case("incomplete-count-line-waits", b"*1", None),
    case("incomplete-inline-waits", b"PING", None),
    case("generic-wrong-number-of-args", cmd("PING", "x", "y", "z"),
         err("ERR wrong number of arguments for 'ping' command")),
    case("unbalanced-number-of-quotes", b'set """test-key""" test-value\r\nping\r\n',
         E_QUOTES, closes=True),
    # Protocol desync regression tests: a NUL ends Redis's strchr() search for the line end.
    case("desync-nul", b"\x00" * 70000, E_INLINE_BIG, closes=True),
    case("desync-nul-then-payload", b"\x00" + b"payload" * 10000, E_INLINE_BIG, closes=True),
    case("desync-star-nul", b"*\x00" + b"payload" * 10000, E_MBULK_BIG, closes=True),
    case("desync-dollar-nul", b"$\x00" + b"payload" * 10000, E_INLINE_BIG, closes=True),
    case("desync-bulk-count-nul", b"*1\r\n$\x00" + b"payload" * 10000, E_BULK_BIG, closes=True),
    case("inline-nul-before-newline-waits", b"PING\x00junk\r\n", None),
    # raw protocol response
    # SRANDMEMBER of a missing key: a null reply (whatever its RESP2 form, it ends in -1).
    case("raw-null-reply", cmd("SRANDMEMBER", k("nonexisting")), b"-1\r\n"),
    case("raw-empty-array", cmd("SRANDMEMBER", k("nonexisting"), 3), b"*0\r\n"),
    case("raw-multiline", cmd("SADD", k("ss"), "a") + cmd("SRANDMEMBER", k("ss"), 100),
         b"*1\r\n$1\r\na\r\n"),
    case("large-number-of-args",
         cmd("MSET", *[x for i in range(10000) for x in (k(f"{{mset}}k{i}"), "v")])
         + cmd("MSET", k("{mset}2"), "v2") + cmd("GET", k("{mset}2")), b"$2\r\nv2\r\n"),
    case("argument-rewriting", cmd("SET", k("float"), 0) + cmd("INCRBYFLOAT", k("float"), "1.0"),
         b"$1\r\n1\r\n"),
    # ---- inline commands (processInlineBuffer + sdssplitargs) ---------------------------------
    case("inline-ping", b"PING\r\n", PONG),
    case("inline-ping-lf-only", b"PING\n", PONG),
    case("inline-ping-lower-case-spaces", b"  ping  \r\n", PONG),
    case("inline-cr-inside-line", b"PING\rfoo\n", b"$3\r\nfoo\r\n"),
    case("inline-echo-double-quotes", b'ECHO "hello world"\r\n', b"$11\r\nhello world\r\n"),
    case("inline-echo-single-quote-escape", b"ECHO 'it\\'s'\r\n", b"$4\r\nit's\r\n"),
    case("inline-echo-hex-escapes", b'ECHO "\\x41\\x42"\r\n', b"$2\r\nAB\r\n"),
    case("inline-echo-bad-hex-escape", b'ECHO "\\x4G"\r\n', b"$3\r\nx4G\r\n"),
    case("inline-echo-c-escapes", b'ECHO "a\\nb\\tc\\r\\\\\\"d"\r\n',
         b'$9\r\na\nb\tc\r\\"d\r\n'),
    case("inline-echo-empty-quotes", b'ECHO ""\r\n', b"$0\r\n\r\n"),
    case("inline-unbalanced-double-quote", b'ECHO "abc\r\n', E_QUOTES, closes=True),
    case("inline-unbalanced-single-quote", b"ECHO 'abc\r\n", E_QUOTES, closes=True),
    case("inline-closing-quote-then-letter", b'ECHO "abc"d\r\n', E_QUOTES, closes=True),
    case("inline-closing-single-quote-then-letter", b"ECHO 'abc'd\r\n", E_QUOTES, closes=True),
    case("inline-set-get", f"SET {k('inl')} \"a b\"\r\nGET {k('inl')}\r\n".encode(),
         b"$3\r\na b\r\n"),
    # ---- pipelines: commands before the bad one are answered first -----------------------------
    case("pings-before-bad-multibulk", b"PING\r\nPING\r\n*1\r\nfoo\r\n", e_dollar("f"),
         closes=True),
    case("keyed-before-bad-bulk-length",
         cmd("SET", k("before"), "v") + cmd("GET", k("before")) + cmd("INCR", k("ctr"))
         + b"*1\r\n$-1\r\n" + PING, E_BULK, closes=True),
    case("keyed-before-unbalanced-quotes",
         cmd("SET", k("before2"), "v") + b'PING\r\nGET "x\r\n' + PING, E_QUOTES, closes=True),
    case("commands-in-same-write-after-error-ignored",
         b"PING\r\n*1\r\n$blabla\r\n" + cmd("SET", k("never"), "1"), E_BULK, closes=True),
    case("inline-and-multibulk-mixed",
         b"PING\r\n" + cmd("ECHO", "hi") + b"ECHO there\r\n" + cmd("SET", k("mix"), "1")
         + b"GET " + k("mix").encode() + b"\r\n" + PING, PONG),
    case("bulk-terminator-not-checked", b"*1\r\n$4\r\nPINGxx" + PING, PONG + PONG),
    case("count-line-cr-without-lf", b"*1\rX$4\r\nPING\r\n", PONG),
    case("empty-command-name", b"*1\r\n$0\r\n\r\n",
         err("ERR unknown command '', with args beginning with: ")),
    # ---- PROTO_INLINE_MAX_SIZE (64 KiB) limits --------------------------------------------------
    case("inline-64k-exactly-waits", b"A" * 65536, None),
    case("inline-too-big", b"A" * 70000, E_INLINE_BIG, closes=True),
    case("inline-too-big-by-one", b"A" * 65537, E_INLINE_BIG, closes=True),
    case("mbulk-count-line-too-big", b"*" + b"1" * 70000, E_MBULK_BIG, closes=True),
    case("bulk-count-line-too-big", b"*1\r\n$" + b"1" * 70000, E_BULK_BIG, closes=True),
    case("inline-after-commands-too-big", PING + b"A" * 70000, E_INLINE_BIG, closes=True),
    case("inline-echo-60k", b"ECHO " + b"z" * 60000 + b"\r\n", b"z" * 60000 + b"\r\n"),
    case("multibulk-echo-100k", cmd("ECHO", "y" * 100000), b"y" * 100000 + b"\r\n"),
    # ---- command errors ------------------------------------------------------------------------
    case("wrong-arity-get", b"*1\r\n$3\r\nGET\r\n",
         err("ERR wrong number of arguments for 'get' command")),
    case("wrong-arity-set-inline", b"SET onlykey\r\n",
         err("ERR wrong number of arguments for 'set' command")),
    case("unknown-command-no-args", cmd("NOSUCHCMD"),
         err("ERR unknown command 'NOSUCHCMD', with args beginning with: ")),
    case("unknown-command-with-args", cmd("NOSUCHCMD", "a", "b"),
         err("ERR unknown command 'NOSUCHCMD', with args beginning with: 'a' 'b' ")),
    case("unknown-command-inline-lower-case", b"nosuchcmd foo bar\r\n",
         err("ERR unknown command 'nosuchcmd', with args beginning with: 'foo' 'bar' ")),
    case("unknown-command-long-args-truncated", cmd("NOSUCHCMD", LONG_ARG, LONG_ARG, LONG_ARG),
         b"' \r\n"),
    case("unknown-command-newline-in-args", cmd("NOSUCHCMD", "a\r\nb", "c\nd"), b"' \r\n"),
    case("unknown-command-long-name", cmd("N" * 200, "a"), b"' \r\n"),
    # ---- commands the proxy answers itself ------------------------------------------------------
    case("select-0", cmd("SELECT", 0) + PING, b"+OK\r\n" + PONG),
    case("select-not-a-number", cmd("SELECT", "abc"),
         err("ERR value is not an integer or out of range")),
    case("select-out-of-int-range", cmd("SELECT", "99999999999"),
         err("ERR value is out of range, value must between -2147483648 and 2147483647")),
    case("select-no-arg", cmd("SELECT"),
         err("ERR wrong number of arguments for 'select' command")),
    case("ping-one-arg", cmd("PING", "a\r\nb"), b"$4\r\na\r\nb\r\n"),
    case("ping-two-args", cmd("PING", "a", "b"),
         err("ERR wrong number of arguments for 'ping' command")),
    case("ping-lower-case", cmd("ping"), PONG),
    case("echo-no-arg", cmd("ECHO"), err("ERR wrong number of arguments for 'echo' command")),
    case("echo-two-args", cmd("ECHO", "a", "b"),
         err("ERR wrong number of arguments for 'echo' command")),
    case("echo-binary", cmd("ECHO", b"\x00\xff\r\n"), b"$4\r\n\x00\xff\r\n\r\n"),
    case("echo-empty", cmd("ECHO", ""), b"$0\r\n\r\n"),
    case("hello-4", cmd("HELLO", 4), err("NOPROTO unsupported protocol version")),
    case("hello-1", cmd("HELLO", 1), err("NOPROTO unsupported protocol version")),
    case("hello-minus-1", cmd("HELLO", -1), err("NOPROTO unsupported protocol version")),
    case("hello-abc", cmd("HELLO", "abc"),
         err("ERR Protocol version is not an integer or out of range")),
    case("hello-huge", cmd("HELLO", "99999999999999999999"),
         err("ERR Protocol version is not an integer or out of range")),
    case("hello-2-bad-option", cmd("HELLO", 2, "FOO"),
         err("ERR Syntax error in HELLO option 'FOO'")),
    case("hello-2-setname-missing", cmd("HELLO", 2, "SETNAME"),
         err("ERR Syntax error in HELLO option 'SETNAME'")),
    case("hello-2-auth-missing-password", cmd("HELLO", 2, "AUTH", "default"),
         err("ERR Syntax error in HELLO option 'AUTH'")),
    case("auth-without-password-configured", cmd("AUTH", "secret"),
         err("ERR AUTH <password> called without any password configured for the default user."
             " Are you sure your configuration is correct?")),
    case("auth-default-user-nopass", cmd("AUTH", "default", "anything"), b"+OK\r\n"),
    case("auth-unknown-user", cmd("AUTH", "nosuchuser", "pw"),
         err("WRONGPASS invalid username-password pair or user is disabled.")),
    case("auth-too-many-args", cmd("AUTH", "a", "b", "c"), err("ERR syntax error")),
    case("auth-no-args", cmd("AUTH"), err("ERR wrong number of arguments for 'auth' command")),
    case("quit", cmd("QUIT"), b"+OK\r\n", closes=True),
    case("quit-stops-pipeline", PING + cmd("QUIT") + PING + cmd("SET", k("afterquit"), 1),
         PONG + b"+OK\r\n", closes=True),
    case("quit-inline", b"PING\r\nQUIT\r\nPING\r\n", PONG + b"+OK\r\n", closes=True),
    case("reset", cmd("RESET"), b"+RESET\r\n"),
    case("client-getname-unset", cmd("CLIENT", "GETNAME"), b"$-1\r\n"),
    case("client-setname-getname", cmd("CLIENT", "SETNAME", "pdiff-name")
         + cmd("CLIENT", "GETNAME"), b"$10\r\npdiff-name\r\n"),
    case("client-setname-space", cmd("CLIENT", "SETNAME", "a b"),
         err("ERR Client names cannot contain spaces, newlines or special characters.")),
    case("client-setname-no-arg", cmd("CLIENT", "SETNAME"),
         err("ERR wrong number of arguments for 'client|setname' command")),
    case("client-no-subcommand", cmd("CLIENT"),
         err("ERR wrong number of arguments for 'client' command")),
    case("client-unknown-subcommand", cmd("CLIENT", "nosuch"),
         err("ERR unknown subcommand 'nosuch'. Try CLIENT HELP.")),
    case("reset-clears-name", cmd("CLIENT", "SETNAME", "pdiff-n") + cmd("RESET")
         + cmd("CLIENT", "GETNAME"), b"+RESET\r\n$-1\r\n"),
    # ---- keyed commands forwarded to the cluster ------------------------------------------------
    case("set-get-del", cmd("SET", k("sgd"), "v1") + cmd("GET", k("sgd"))
         + cmd("DEL", k("sgd")) + cmd("GET", k("sgd")), b":1\r\n$-1\r\n"),
    case("wrongtype", cmd("LPUSH", k("wt"), "a") + cmd("GET", k("wt")) + cmd("INCR", k("wt")),
         b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"),
    case("syntax-error-forwarded", cmd("SET", k("syn"), "v", "BOGUS"), err("ERR syntax error")),
    # numkeys above the arguments given: Redis (and a cluster node, whose getNodeByQuery
    # extracts no keys then) runs the command and reports its own error; {a} and {b} are in
    # different slots, so a proxy that takes them as keys answers CROSSSLOT instead.
    case("eval-numkeys-above-args", cmd("EVAL", "return 1", 3, "pdiff:{a}1", "pdiff:{b}2"),
         err("ERR Number of keys can't be greater than number of args")),
    case("zunionstore-numkeys-above-args", cmd("ZUNIONSTORE", "pdiff:{a}d", 3, "pdiff:{b}1"),
         err("ERR syntax error")),
    case("not-an-integer-forwarded", cmd("SET", k("nai"), "x") + cmd("INCR", k("nai")),
         err("ERR value is not an integer or out of range")),
]


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_protocol_case(c: Case, standalone: StandaloneRedis, proxy: ProxyThread) -> None:
    ref, closed = diff_exchange(standalone, proxy, c.chunks, c.until, c.closes)
    # Keep the table honest about what Redis itself does (a wrong ``until`` would make the
    # comparison wait for the deadline instead of the quiet period).
    assert closed == c.closes, f"redis closed={closed}, the table says {c.closes}: {show(ref)}"
    if c.until is None:
        assert ref == b""
    else:
        assert ref.endswith(c.until), f"redis sent {show(ref)}"


# Counts above INT_MAX. Redis answers at once; the proxy must answer within a second too (a
# parser that allocates the announced array before its elements arrive stalls for seconds,
# and all clients with it). Each case runs on a proxy of its own, so that such a stall does
# not spill into the tests after it.
HUGE_COUNT_CASES = [
    case("out-of-range-multibulk", b"*3000000000\r\n", E_MBULK, closes=True),
    case("multibulk-int-max-plus-one", b"*2147483648\r\n", E_MBULK, closes=True),
    case("multibulk-uint32-max", b"*4294967295\r\n", E_MBULK, closes=True),
    case("multibulk-uint32-max-plus-one", b"*4294967296\r\n", E_MBULK, closes=True),
]


@pytest.mark.parametrize("c", HUGE_COUNT_CASES, ids=[c.id for c in HUGE_COUNT_CASES])
def test_protocol_case_huge_multibulk_count(c: Case, standalone: StandaloneRedis,
                                            cluster: LocalCluster) -> None:
    with ProxyThread(proxy_config(cluster.seeds)) as own_proxy:
        ref, closed = diff_exchange(standalone, own_proxy, c.chunks, c.until, c.closes,
                                    proxy_timeout_s=1.0)
    assert (ref, closed) == (c.until, c.closes)


def test_select_nonzero_db_is_refused_in_cluster_mode(standalone: StandaloneRedis,
                                                      proxy: ProxyThread) -> None:
    """Not differential: a standalone Redis has 16 databases, a cluster only db 0. The proxy
    gives a cluster node's exact text and keeps the connection (R6)."""
    payload = [cmd("SELECT", 1) + PING]
    got, closed = exchange(proxy.port, payload, until=PONG)
    assert (got, closed) == (b"-ERR SELECT is not allowed in cluster mode\r\n" + PONG, False)
    ref, ref_closed = exchange(standalone.port, payload, until=PONG)
    assert (ref, ref_closed) == (b"+OK\r\n" + PONG, False)


# -- P3/P4: long mixed streams, whole and chunked ----------------------------------------------
def mixed_commands(rng: random.Random, tag: str, n: int) -> list[bytes]:
    """``n`` encoded commands over keys in many slots: strings, counters, lists and small hashes
    (small enough to stay listpacks, so HGETALL order is insertion order on every server),
    with some local commands (PING/ECHO) and errors (WRONGTYPE, not an integer) mixed in."""
    def key(kind: str) -> str:
        return f"pdiff:{RUN}:{tag}:{kind}:{rng.randrange(150)}"

    out: list[bytes] = []
    for i in range(n):
        r = rng.randrange(100)
        if r < 15:
            out.append(cmd("SET", key("s"), f"v{i}-{rng.randrange(10**6)}"))
        elif r < 28:
            out.append(cmd("GET", key(rng.choice("sc"))))
        elif r < 40:
            out.append(cmd("INCR", key(rng.choice("cccs"))))  # "s" values are not integers
        elif r < 52:
            out.append(cmd("LPUSH", key("l"), *[f"e{i}.{j}" for j in range(rng.randrange(1, 4))]))
        elif r < 62:
            out.append(cmd("LRANGE", key("l"), 0, rng.randrange(-1, 12)))
        elif r < 74:
            field = f"f{rng.randrange(20)}"
            out.append(cmd("HSET", key("h"), field, f"{i}"))
        elif r < 84:
            out.append(cmd("HGETALL", key("h")))
        elif r < 88:
            out.append(cmd("GET", key("l")))  # WRONGTYPE once the list exists
        elif r < 92:
            out.append(cmd("ECHO", f"echo-{i}"))
        elif r < 95:
            out.append(cmd("PING"))
        elif r < 97:
            out.append(cmd("DEL", key(rng.choice("sclh"))))
        else:
            out.append(cmd("EXISTS", key(rng.choice("sclh"))))
    return out


def stream_exchange(port: int, chunks: Sequence[bytes], n_replies: int,
                    timeout_s: float) -> bytes:
    """Send ``chunks`` (one send each) while a thread reads until ``n_replies`` whole replies
    have arrived (framed with hiredis). Fails on close, protocol error or deadline."""
    deadline = time.monotonic() + timeout_s
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw = bytearray()
        state: dict[str, BaseException | None] = {"error": None}

        def read() -> None:
            reader = hiredis.Reader()
            count = 0
            try:
                while count < n_replies:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"{count} of {n_replies} replies before the deadline")
                    s.settimeout(left)
                    data = s.recv(1 << 20)
                    if not data:
                        raise ConnectionError(f"closed after {count} of {n_replies} replies")
                    raw.extend(data)
                    reader.feed(data)
                    while reader.gets() is not False:
                        count += 1
            except BaseException as exc:  # noqa: BLE001 - reported to the test thread
                state["error"] = exc

        t = threading.Thread(target=read, name="pdiff-reader", daemon=True)
        t.start()
        try:
            for c in chunks:
                s.sendall(c)
        finally:
            t.join(max(0.1, deadline - time.monotonic() + 1))
        assert not t.is_alive(), "reader thread did not finish"
        if state["error"] is not None:
            raise AssertionError(f"port {port}: {state['error']!r}")
        # Nothing more may follow the last reply (checked with a short quiet read).
        s.settimeout(0.1)
        try:
            extra = s.recv(65536)
        except TimeoutError:
            extra = b""
        assert extra == b"", f"unexpected bytes after the last reply: {show(extra)}"
        return bytes(raw)


def reply_end(buf: bytes, pos: int) -> int:
    """End offset of the RESP2 reply starting at ``pos`` (a small framer, independent of
    rproxy's, for readable failure messages)."""
    eol = buf.index(b"\r\n", pos)
    t = buf[pos : pos + 1]
    if t in (b"+", b"-", b":"):
        return eol + 2
    n = int(buf[pos + 1 : eol])
    if t == b"$":
        return eol + 2 if n < 0 else eol + 2 + n + 2
    if t == b"*":
        p = eol + 2
        for _ in range(max(n, 0)):
            p = reply_end(buf, p)
        return p
    raise ValueError(f"not a RESP2 reply at {pos}: {buf[pos : pos + 20]!r}")


def split_replies(raw: bytes) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    while pos < len(raw):
        end = reply_end(raw, pos)
        out.append(raw[pos:end])
        pos = end
    return out


def assert_same_stream(ref: bytes, got: bytes, commands: list[bytes], what: str) -> None:
    if ref == got:
        return
    a, b = split_replies(ref), split_replies(got)
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            raise AssertionError(
                f"{what}: reply {i} differs for command {show(commands[i])}\n"
                f"  redis: {show(x)}\n  proxy: {show(y)}")
    raise AssertionError(f"{what}: {len(a)} replies from redis, {len(b)} from the proxy")


def one_byte_then_random(data_first: bytes, data_rest: bytes, rng: random.Random) -> list[bytes]:
    chunks = [data_first[i : i + 1] for i in range(len(data_first))]
    pos = 0
    while pos < len(data_rest):
        size = rng.choice([1, 2, 3, 7, 13, 64, 500, 1400, 4096, rng.randrange(1, 9000)])
        chunks.append(data_rest[pos : pos + size])
        pos += size
    return chunks


@pytest.mark.parametrize("mode", ["one-write", "chunked"])
def test_mixed_stream_chunking(mode: str, standalone: StandaloneRedis,
                               proxy: ProxyThread) -> None:
    """P3: 2000 mixed commands in one write, and split at random points with the first 200
    commands sent one byte per send(): the reply streams are byte-identical."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    commands = mixed_commands(rng, f"p3{mode}", 2000)
    data = b"".join(commands)
    if mode == "one-write":
        chunks = [data]
    else:
        head = len(b"".join(commands[:200]))
        chunks = one_byte_then_random(data[:head], data[head:], rng)
    ref = stream_exchange(standalone.port, chunks, len(commands), timeout_s=60)
    got = stream_exchange(proxy.port, chunks, len(commands), timeout_s=60)
    assert_same_stream(ref, got, commands, f"seed {seed}, {len(chunks)} sends")


def test_pipeline_20000_commands_one_write(standalone: StandaloneRedis,
                                           proxy: ProxyThread) -> None:
    """P4: 20000 mixed commands in one write from one client: replies identical and in order
    (more than the proxy's default max_pending_per_client, so reading pauses and resumes)."""
    seed = random.randrange(2**32)
    commands = mixed_commands(random.Random(seed), "p4", 20000)
    data = b"".join(commands)
    ref = stream_exchange(standalone.port, [data], len(commands), timeout_s=120)
    got = stream_exchange(proxy.port, [data], len(commands), timeout_s=120)
    assert_same_stream(ref, got, commands, f"seed {seed}")
