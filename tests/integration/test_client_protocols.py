"""The same scenarios from four kinds of client -- redis-py with its default settings (RESP3 in
redis-py 8), redis-py with ``protocol=2``, ``redis-cli`` and ``redis-cli -3`` -- through rproxy
and against a standalone Redis 7: the same results (data types, merges over several slots,
transactions, blocking, pub/sub)."""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest
import redis

from tests.support import keys_in_slots

RUN = uuid.uuid4().hex[:8]
TAG = f"{{cp:{RUN}}}"


K1, K2, K3 = keys_in_slots(3, f"cp:{RUN}")


def py_scenario(port: int, protocol: int | None) -> list[object]:
    r = redis.Redis(port=port, protocol=protocol, socket_timeout=10)
    other = redis.Redis(port=port, protocol=protocol, socket_timeout=10)
    h, z, s, lst, x = (f"{TAG}:{n}" for n in "hzslx")
    out: list[object] = []
    r.delete(K1, K2, K3, h, z, s, lst, x)
    out += [r.set(K1, "v"), r.get(K1), r.get(K2), r.mget(K1, K2, K3), r.exists(K1, K2, K3)]
    out += [r.hset(h, mapping={"a": "1", "b": "2"}), r.hgetall(h), r.hget(h, "zz")]
    out += [r.zadd(z, {"m": 1.5, "n": 2}), r.zscore(z, "m"), r.zrange(z, 0, -1, withscores=True),
            r.zincrby(z, 1, "m")]
    out += [r.sadd(s, "x"), r.smembers(s), r.rpush(lst, "a", "b"), r.lrange(lst, 0, -1)]
    out += [r.xadd(x, {"f": "v"}, id="1-1"), r.xrange(x)]
    with r.pipeline() as pipe:  # MULTI ... EXEC under one hash tag
        pipe.hgetall(h).zscore(z, "n").incr(f"{TAG}:c").get(f"{TAG}:missing")
        out.append(pipe.execute())
    out += [r.blpop([f"{TAG}:empty"], timeout=0.1), r.blpop([lst], timeout=1)]
    out.append(r.delete(K1, K2, K3, h, z, s, lst, x, f"{TAG}:c"))
    p = r.pubsub()
    p.subscribe(f"{TAG}:chan")
    out.append(p.get_message(timeout=2))
    other.publish(f"{TAG}:chan", "hello")
    out.append(p.get_message(timeout=2))
    p.close()
    r.close()
    other.close()
    return out


@pytest.mark.parametrize("protocol", [None, 2], ids=["redis-py-default", "redis-py-resp2"])
def test_redis_py_same_results(protocol: int | None, proxy, standalone) -> None:
    assert py_scenario(proxy.port, protocol) == py_scenario(standalone.port, protocol)


CLI_COMMANDS = "\n".join([
    f"DEL {K1} {K2} {K3} {TAG}:h {TAG}:z {TAG}:s",
    f"SET {K1} v", f"MGET {K1} {K2} {K3}", f"EXISTS {K1} {K2}",
    f"HSET {TAG}:h a 1 b 2", f"HGETALL {TAG}:h", f"HGET {TAG}:h zz",
    f"ZADD {TAG}:z 1.5 m inf n", f"ZSCORE {TAG}:z m", f"ZRANGE {TAG}:z 0 -1 WITHSCORES",
    f"SADD {TAG}:s x", f"SMEMBERS {TAG}:s",
    "MULTI", f"HGETALL {TAG}:h", f"ZSCORE {TAG}:z n", f"GET {TAG}:missing", "EXEC",
    f"BLPOP {TAG}:empty 0.1", "EVAL \"redis.setresp(3); return {double=0.5}\" 0",
    "EVAL \"redis.setresp(3); return true\" 0",
    f"DEL {K1} {K2} {K3} {TAG}:h {TAG}:z {TAG}:s",
]) + "\n"


@pytest.mark.parametrize("flags", [[], ["-3"]], ids=["redis-cli", "redis-cli-3"])
def test_redis_cli_same_output(flags: list[str], proxy, standalone) -> None:
    def output(port: int) -> str:
        done = subprocess.run(["redis-cli", "-p", str(port), *flags], input=CLI_COMMANDS,
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    got, want = output(proxy.port), output(standalone.port)
    assert got == want
    if flags:  # RESP3 types as redis-cli prints them without a tty: a map, a boolean
        assert "\na 1\nb 2\n" in got and "(true)" in got, got


def test_pubsub_pushes_from_redis_cli_3(proxy) -> None:
    """redis-cli -3 SUBSCRIBE prints the push of a message published through rproxy."""
    channel = f"{TAG}:cli"
    sub = subprocess.Popen(["redis-cli", "-3", "-p", str(proxy.port), "SUBSCRIBE", channel],
                           stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        pub = redis.Redis(port=proxy.port, protocol=3)
        deadline = time.monotonic() + 5
        while pub.publish(channel, "pushed") == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        sub.terminate()
        out, _ = sub.communicate(timeout=5)
    assert "pushed" in out and "message" in out, out
