"""The slow log's entries and replies (Redis's src/slowlog.c rules), the latency histograms and
the error counts: sans-IO."""

from __future__ import annotations

import hiredis

from rproxy.core.resp import encode_command
from rproxy.core.slowlog import BOUNDS, Histogram, Latency, SlowLog, trimmed
from rproxy.core.stats import ErrorCounts


def parse(raw: bytes) -> object:
    reader = hiredis.Reader()
    reader.feed(raw)
    return reader.gets()


def test_entries_are_trimmed_as_redis_trims_them() -> None:
    assert trimmed([b"GET", b"k"]) == [b"GET", b"k"]
    many = [b"RPUSH", b"k", *[b"e%d" % i for i in range(40)]]  # 42 arguments
    out = trimmed(many)
    assert len(out) == 32 and out[:31] == many[:31]
    assert out[31] == b"... (11 more arguments)"
    assert trimmed([b"SET", b"k", b"v" * 130]) == [b"SET", b"k", b"v" * 128 + b"... (2 more bytes)"]
    assert trimmed([b"x"] * 32) == [b"x"] * 32  # exactly 32: kept whole


def test_threshold_length_and_order() -> None:
    log = SlowLog(slower_than_us=100, max_len=3)
    log.push(encode_command([b"GET", b"a"]), 99, 1, b"127.0.0.1:1", b"")
    assert len(log.entries) == 0
    for i in range(5):
        log.push(encode_command([b"GET", b"k%d" % i]), 100 + i, 1000 + i, b"127.0.0.1:1", b"app")
    assert [e.argv[1] for e in log.entries] == [b"k4", b"k3", b"k2"]  # newest first, 3 kept
    assert [e.id for e in log.entries] == [4, 3, 2]
    rows = parse(log.command([b"SLOWLOG", b"GET"]))
    assert rows[0] == [4, 1004, 104, [b"GET", b"k4"], b"127.0.0.1:1", b"app"]
    assert len(parse(log.command([b"SLOWLOG", b"GET", b"1"]))) == 1
    assert len(parse(log.command([b"SLOWLOG", b"GET", b"-1"]))) == 3
    assert parse(log.command([b"SLOWLOG", b"GET", b"0"])) == []
    assert log.command([b"SLOWLOG", b"LEN"]) == b":3\r\n"
    log.configure(100, 1)
    assert log.command([b"SLOWLOG", b"LEN"]) == b":1\r\n"
    assert log.command([b"SLOWLOG", b"RESET"]) == b"+OK\r\n"
    assert log.command([b"SLOWLOG", b"LEN"]) == b":0\r\n"
    log.push(encode_command([b"GET", b"x"]), 500, 1, b"", b"")
    assert log.entries[0].id == 5  # ids go on after a reset, as Redis's


def test_zero_logs_everything_negative_nothing() -> None:
    log = SlowLog(slower_than_us=0)
    log.push(encode_command([b"PING"]), 0, 1, b"", b"")
    assert len(log.entries) == 1 and log.slower_than == 0
    log.configure(-1, 128)
    log.push(encode_command([b"PING"]), 10 ** 9, 1, b"", b"")
    assert len(log.entries) == 1 and log.slower_than == float("inf")


def test_errors_as_redis_words_them() -> None:
    log = SlowLog()
    bad = b"-ERR count should be greater than or equal to -1\r\n"
    assert log.command([b"SLOWLOG", b"GET", b"x"]) == bad
    assert log.command([b"SLOWLOG", b"GET", b"-2"]) == bad
    assert log.command([b"SLOWLOG", b"NOPE"]) == (
        b"-ERR unknown subcommand or wrong number of arguments for 'NOPE'. Try SLOWLOG HELP.\r\n")
    help_lines = parse(log.command([b"SLOWLOG", b"HELP"]))
    assert help_lines[0].startswith(b"SLOWLOG <subcommand>") and help_lines[-1] == (
        b"    Prints this help.")


def test_histogram_buckets_are_prometheus_le() -> None:
    h = Histogram()
    for v in (0.00001, BOUNDS[0], 0.0002, 0.0002, 99.0):
        h.observe(v)
    buckets = dict(h.cumulative())
    assert buckets[repr(BOUNDS[0])] == 2  # a value equal to a bound is in that bucket
    assert buckets["0.00025"] == 4 and buckets["10.0"] == 4 and buckets["+Inf"] == 5
    assert list(buckets)[-1] == "+Inf"
    assert abs(h.sum - (0.00001 + BOUNDS[0] + 0.0004 + 99.0)) < 1e-9


def test_latency_split() -> None:
    lat = Latency()
    lat.observe(0.003, 0.001)
    lat.observe(0.001, 0.0015)  # a backend time past the total (clocks read apart): proxy 0
    assert lat.total.sum == 0.004 and lat.backend.sum == 0.0025
    assert abs(lat.proxy.sum - 0.002) < 1e-12


def test_error_counts_by_command_and_code_bounded() -> None:
    counts = ErrorCounts()
    counts.add(b"LPUSH", b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
    counts.add(b"LPUSH", b"-WRONGTYPE Operation against a key\r\n")
    counts.add(b"", b"-ERR unknown command 'NOPE'\r\n")
    counts.add(b"EVAL", b"-NOSCRIPT\r\n")
    assert counts.counts == {(b"LPUSH", b"WRONGTYPE"): 2, (b"", b"ERR"): 1,
                             (b"EVAL", b"NOSCRIPT"): 1}
    for i in range(ErrorCounts.MAX_CODES):
        counts.add(b"EVAL", b"-CODE%d from a script\r\n" % i)
    assert len(counts.codes) == ErrorCounts.MAX_CODES
    assert counts.counts[(b"EVAL", b"OTHER")] == 3  # past the limit: one label for the rest


def test_secrets_are_redacted_as_redis_redacts_them() -> None:
    from rproxy.core.slowlog import redact

    r = b"(redacted)"
    assert redact(b"AUTH", [b"AUTH", b"pw"]) == [b"AUTH", r]
    assert redact(b"AUTH", [b"AUTH", b"u", b"pw"]) == [b"AUTH", r, r]
    assert redact(b"AUTH", [b"AUTH", b"u", b"pw", b"x"]) == [b"AUTH", b"u", b"pw", b"x"]  # syntax
    assert redact(b"HELLO", [b"HELLO", b"3", b"AUTH", b"u", b"pw", b"SETNAME", b"n"]) == [
        b"HELLO", b"3", b"AUTH", r, r, b"SETNAME", b"n"]
    assert redact(b"HELLO", [b"HELLO", b"4", b"AUTH", b"u", b"pw"])[3:] == [b"u", b"pw"]
    assert redact(b"CONFIG|SET", [b"CONFIG", b"SET", b"maxmemory", b"1", b"REQUIREPASS",
                                  b"pw", b"masterauth", b"x"]) == [
        b"CONFIG", b"SET", b"maxmemory", b"1", b"REQUIREPASS", r, b"masterauth", r]
    assert redact(b"MIGRATE", [b"MIGRATE", b"h", b"1", b"", b"0", b"5", b"AUTH2", b"u", b"p",
                               b"KEYS", b"k"]) == [
        b"MIGRATE", b"h", b"1", b"", b"0", b"5", b"AUTH2", r, r, b"KEYS", b"k"]
    assert redact(b"ACL|SETUSER", [b"ACL", b"SETUSER", b"u", b">pw"]) == [
        b"ACL", b"SETUSER", r, r]
    assert redact(b"GET", [b"GET", b"k"]) == [b"GET", b"k"]
