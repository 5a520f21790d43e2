"""The proxy's own SLOWLOG (``metrics.slowlog_log_slower_than`` / ``slowlog_max_len``): Redis's
reply shapes and errors byte for byte against a standalone redis-server, timing end to end
(a slow reply is logged, the replies queued behind it are not), blocking commands never
logged, the limits changed at run time, and the masters' own slow logs behind
``PROXY SLOWLOG``."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from rproxy.core.slots import key_slot
from tests.support import ProxyThread, RawConnection, argv, keys_in_slots, proxy_config

RUN = uuid.uuid4().hex[:8]
A, B = keys_in_slots(2, f"slow:{RUN}")

# A script that keeps its node busy for ARGV[1] microseconds (Redis allows TIME in scripts).
BUSY = ("local t0 = redis.call('TIME') local s = t0[1] * 1000000 + t0[2] "
        "repeat local t = redis.call('TIME') until t[1] * 1000000 + t[2] - s >= "
        "tonumber(ARGV[1]) return 1")


@pytest.fixture(scope="module")
def slow(cluster):  # type: ignore[no-untyped-def]
    """A proxy of its own: its slow log is the tests' alone."""
    with ProxyThread(proxy_config(cluster.seeds, metrics={"slowlog_log_slower_than": 20000})) as p:
        yield p


def entries(r: redis.Redis, n: int = 10) -> list[list[object]]:
    return r.execute_command("SLOWLOG", "GET", n)  # type: ignore[no-any-return]


def threshold(r: redis.Redis, us: int) -> None:
    r.execute_command("PROXY", "CONFIG", "SET", "metrics.slowlog_log_slower_than", us)


def test_reply_shapes_and_errors_as_one_redis(slow, standalone) -> None:
    """Every command logged (threshold 0 on both): the same entries' arguments (trimmed to 32
    arguments of at most 128 bytes each), names, lengths, help and errors, byte for byte."""
    direct = standalone.client()
    direct.config_set("slowlog-log-slower-than", 0)
    p, d = RawConnection(slow.port), RawConnection(standalone.port)
    threshold(slow.client(), 0)
    try:
        key = f"slow:{RUN}:shape"
        script = [
            argv("SLOWLOG", "RESET"),
            argv("SLOWLOG", "LEN"),
            argv("CLIENT", "SETNAME", "tester"),
            argv("SET", key, "x" * 300),
            argv("RPUSH", f"{key}:l", *[f"e{i}" for i in range(40)]),
            argv("AUTH", "secret"),  # logged as AUTH (redacted): no password in a log
            argv("AUTH", "someone", "secret"),
            argv("HELLO", "2", "AUTH", "default", "secret"),  # (its reply has the client id)
            argv("MULTI"), argv("GET", key), argv("EXEC"),
            argv("BLPOP", f"{key}:empty", "0.05"),  # blocked: never logged
            argv("GET", key),
        ]
        for command in script:
            got, want = p(*command), d(*command)
            assert got == want or command[0] == b"HELLO", command
        for check in (argv("SLOWLOG", "GET", "20"), argv("SLOWLOG", "GET", "-1"),
                      argv("SLOWLOG", "GET", "0")):
            got = [e[3:] for e in parse(p(*check))]
            want = [e[3:] for e in parse(d(*check))]
            assert [(e[0], e[2]) for e in got] == [(e[0], e[2]) for e in want], check
            assert all(e[1].startswith(b"127.0.0.1:") for e in got)
        for bad in (argv("SLOWLOG", "GET", "x"), argv("SLOWLOG", "GET", "-2"),
                    argv("SLOWLOG", "LEN", "1"), argv("SLOWLOG", "GET", "1", "2"),
                    argv("SLOWLOG", "NOPE"), argv("SLOWLOG"), argv("SLOWLOG", "HELP"),
                    argv("SLOWLOG", "RESET"), argv("SLOWLOG", "LEN")):
            assert p(*bad) == d(*bad), bad
    finally:
        direct.config_set("slowlog-log-slower-than", 10000)
        threshold(slow.client(), 20000)
        p.close()
        d.close()


def parse(raw: bytes) -> list[list[object]]:
    import hiredis

    reader = hiredis.Reader()
    reader.feed(raw)
    return reader.gets()  # type: ignore[no-any-return]


def test_a_slow_reply_is_logged_end_to_end_and_not_what_waited_behind_it(slow, cluster) -> None:
    # B on another master than A: a node answers a pipeline's replies together, so a GET
    # sent to the script's own node would wait for the script there (and be slow too).
    a_master = cluster.master_of_slot(key_slot(A.encode())).port
    b = next(k for k in keys_in_slots(200, f"slow:{RUN}:b")
             if cluster.master_of_slot(key_slot(k.encode())).port != a_master)
    r = slow.client()
    r.client_setname("app-1")
    r.set(b, "b")
    r.execute_command("SLOWLOG", "RESET")
    # The busy script first, then a GET of another master in the same pipeline: the GET's
    # reply is in at once but leaves after the script's -- it is not the slow one.
    pipe = r.pipeline(transaction=False)
    pipe.eval(BUSY, 1, A, 60000)
    pipe.get(b)
    assert pipe.execute() == [1, b"b"]
    got = entries(r)
    assert len(got) == 1, got
    entry_id, when, duration, args, peer, name = got[0]
    assert args[0] == b"EVAL" and args[1].endswith(b"... (%d more bytes)" % (len(BUSY) - 128))
    assert args[2:] == [b"1", A.encode(), b"60000"]
    assert duration >= 60000 and abs(when - time.time()) < 30
    assert peer.startswith(b"127.0.0.1:") and name == b"app-1"
    # The other order: the GET is answered first, then the script alone is slow.
    pipe.get(b)
    pipe.eval(BUSY, 1, A, 30000)
    assert pipe.execute() == [b"b", 1]
    got = entries(r)
    assert [e[3][0] for e in got] == [b"EVAL", b"EVAL"] and got[0][0] == entry_id + 1
    # Fast commands stay out of it.
    for _ in range(20):
        r.get(b)
    assert r.execute_command("SLOWLOG", "LEN") == 2


def test_blocking_commands_and_wait_are_never_logged(slow) -> None:
    r = slow.client()
    r.execute_command("SLOWLOG", "RESET")
    assert r.blpop([f"slow:{RUN}:nothing"], timeout=0.2) is None
    assert r.execute_command("BLMPOP", "0.1", "1", A, "LEFT") is None
    r.execute_command("WAIT", "1", "100")
    assert r.execute_command("SLOWLOG", "LEN") == 0


def test_limits_change_at_run_time(slow) -> None:
    r = slow.client()
    r.execute_command("SLOWLOG", "RESET")
    threshold(r, 0)
    try:
        for _ in range(5):
            r.get(B)
        assert r.execute_command("SLOWLOG", "LEN") >= 5
        r.execute_command("PROXY", "CONFIG", "SET", "metrics.slowlog_max_len", 3)
        assert r.execute_command("SLOWLOG", "LEN") == 3  # trimmed at once, the newest kept
        assert len(entries(r, -1)) == 3
        threshold(r, -1)  # off
        r.execute_command("SLOWLOG", "RESET")
        for _ in range(5):
            r.get(B)
        assert r.execute_command("SLOWLOG", "LEN") == 0
    finally:
        r.execute_command("PROXY", "CONFIG", "SET", "metrics.slowlog_max_len", 128)
        threshold(r, 20000)


def test_proxy_slowlog_reaches_the_masters_own(slow, cluster) -> None:
    """PROXY SLOWLOG GET / LEN / RESET: the masters' slow logs (their default threshold, 10 ms),
    merged newest first."""
    r = slow.client()
    assert r.execute_command("PROXY", "SLOWLOG", "RESET") == b"OK"
    r.eval(BUSY, 1, A, 25000)
    assert r.execute_command("PROXY", "SLOWLOG", "LEN") >= 1
    newest = r.execute_command("PROXY", "SLOWLOG", "GET", 1)
    assert len(newest) == 1 and newest[0][3][0].upper() == b"EVAL" and newest[0][2] >= 25000
    assert r.execute_command("PROXY", "SLOWLOG", "RESET") == b"OK"
    assert r.execute_command("PROXY", "SLOWLOG", "LEN") == 0
    with pytest.raises(redis.ResponseError, match="Try PROXY HELP"):
        r.execute_command("PROXY", "SLOWLOG", "GET", 1, 2)
    assert b"SLOWLOG GET [<count>] | LEN | RESET" in r.execute_command("PROXY", "HELP")
