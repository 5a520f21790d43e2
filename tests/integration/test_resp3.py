"""RESP3 clients (``HELLO 3``) next to RESP2 clients: differential, byte for byte, against a
standalone redis-server 7.

rproxy serves a RESP3 client on backend connections that said ``HELLO 3`` (the cluster
manager's RESP3 plane), so a node's reply reaches it as the node sent it: maps, sets, doubles
(``inf``, ``-inf``), nulls, booleans and big numbers from scripts, verbatim strings. The replies
rproxy builds itself (HELLO, CLIENT GETNAME, INFO, CLIENT INFO, pub/sub frames, merges) are
built in the client's protocol.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from rproxy.core.merge import split_array
from rproxy.core.slots import key_slot
from tests.support import ProxyThread, RawConnection, keys_in_slots, proxy_config
from tests.support import argv as A
from tests.support import raw_pipeline as run

RUN = uuid.uuid4().hex[:8]


def k(name: str) -> str:
    """A key in the test's one slot (a transaction may use any of them)."""
    return f"{{r3:{RUN}}}:{name}"


def two_slots() -> tuple[str, str]:
    a = f"r3:{RUN}:a"
    b = next(f"r3:{RUN}:b{i}" for i in range(1000)
             if key_slot(f"r3:{RUN}:b{i}".encode()) != key_slot(a.encode()))
    return a, b


S, H, Z, L, SET, X, G, HLL = (k(n) for n in ("s", "h", "z", "l", "set", "x", "g", "hll"))
KA, KB = two_slots()

CASES: dict[str, list[list[bytes]]] = {
    "strings": [A("SET", S, "v"), A("GET", S), A("GET", k("missing")),
                A("INCRBYFLOAT", S + "f", "1.5"), A("GETDEL", S + "f"), A("STRLEN", S),
                A("SET", S, "w", "GET"), A("SET", S, "x", "NX", "GET")],
    "hashes": [A("DEL", H), A("HSET", H, "a", "1", "b", "2"), A("HGETALL", H),
               A("HGETALL", k("nh")),
               A("HMGET", H, "a", "zz"), A("HGET", H, "zz"), A("HINCRBYFLOAT", H, "a", "0.5"),
               A("HKEYS", H)],
    "sorted_sets": [A("DEL", Z), A("ZADD", Z, "1.5", "m", "2", "n", "inf", "top", "-inf", "bottom"),
                    A("ZSCORE", Z, "m"), A("ZSCORE", Z, "top"), A("ZSCORE", Z, "bottom"),
                    A("ZSCORE", Z, "nope"), A("ZRANGE", Z, "0", "-1", "WITHSCORES"),
                    A("ZMSCORE", Z, "m", "nope"), A("ZINCRBY", Z, "1", "m"), A("ZPOPMIN", Z),
                    A("ZRANK", Z, "nope"), A("ZADD", Z, "INCR", "1", "n"),
                    A("ZRANGEBYSCORE", Z, "-inf", "+inf", "WITHSCORES")],
    "sets": [A("DEL", SET), A("SADD", SET, "3", "1", "2"), A("SMEMBERS", SET),
             A("SISMEMBER", SET, "1"), A("SMISMEMBER", SET, "1", "9"), A("SPOP", k("nset")),
             A("SINTER", SET)],
    "lists": [A("DEL", L), A("RPUSH", L, "a", "b"), A("LRANGE", L, "0", "-1"), A("LPOP", k("nl")),
              A("LPOS", L, "zz"), A("BLPOP", k("nl"), "0.05"), A("LMPOP", "1", k("nl"), "LEFT")],
    "streams": [A("DEL", X), A("XADD", X, "1-1", "f", "v"), A("XRANGE", X, "-", "+"),
                A("XREAD", "STREAMS", X, "0"), A("XREAD", "STREAMS", k("nx"), "0")],
    "geo_and_hll": [A("DEL", G, HLL), A("GEOADD", G, "13.361389", "38.115556", "a"),
                    A("GEOPOS", G, "a", "nope"), A("GEODIST", G, "a", "a"), A("PFADD", HLL, "x"),
                    A("PFCOUNT", HLL)],
    "scripts": [A("EVAL", "redis.setresp(3); return {double=3.5}", "0"),
                A("EVAL", "redis.setresp(3); return {big_number='123456789012345678901'}", "0"),
                A("EVAL", "redis.setresp(3); return true", "0"),
                A("EVAL", "redis.setresp(3); return redis.call('HGETALL', KEYS[1])", "1", H),
                A("EVAL", "return redis.call('HGETALL', KEYS[1])", "1", H),
                A("EVAL", "return nil", "0")],
    "transaction": [A("MULTI"), A("HSET", H, "c", "3"), A("HGETALL", H), A("ZSCORE", Z, "n"),
                    A("GET", k("missing")), A("EXEC")],
    "watch_abort_is_null": [A("WATCH", S), A("SET", S, "mine"), A("MULTI"), A("GET", S),
                            A("EXEC")],
    "proxy_built": [A("CLIENT", "GETNAME"), A("CLIENT", "SETNAME", "r3"), A("CLIENT", "GETNAME"),
                    A("MGET", KA, KB), A("SET", KA, "1"), A("MGET", KA, KB), A("EXISTS", KA, KB),
                    A("DEL", KA, KB), A("PUBSUB", "NUMSUB", "nochan"), A("ECHO", "hi"),
                    A("PING"), A("SELECT", "0"), A("CONFIG", "GET", "maxmemory-policy"),
                    A("SET", KA, "k"), A("KEYS", KA), A("KEYS", KA + "nomatch*"),
                    A("DEL", KA)],
    "hello": [A("HELLO", "2"), A("HGETALL", H), A("GET", k("missing")), A("HELLO", "3"),
              A("HGETALL", H), A("HELLO", "4"), A("HELLO", "3", "SETNAME", "ok", "BAD"),
              A("CLIENT", "GETNAME")],
}


def _comparable(cmd: list[bytes], reply: bytes) -> bytes:
    """HELLO's map carries the server's version and the connection's id: its shape only."""
    if cmd[0] == b"HELLO" and reply[:1] in b"%*":
        return reply.split(b"$7\r\nversion", 1)[0]
    return reply


@pytest.mark.parametrize("name", sorted(CASES))
def test_resp3_same_bytes_as_one_redis(name: str, proxy, standalone) -> None:
    commands = [A("HELLO", "3"), *CASES[name]]
    got = run(proxy.port, commands)
    want = run(standalone.port, commands)
    assert [_comparable(c, r) for c, r in zip(commands, got)] == \
        [_comparable(c, r) for c, r in zip(commands, want)]


def test_resp2_clients_keep_resp2_next_to_resp3_ones(proxy, standalone) -> None:
    """The same commands from a RESP2 client and a RESP3 client through one proxy: each
    gets what one Redis sends it."""
    commands = [A("HSET", H, "a", "1"), A("HGETALL", H), A("ZSCORE", Z, "n"), A("GET", k("m"))]
    for hello in (A("HELLO", "2"), A("HELLO", "3")):
        got = run(proxy.port, [hello, *commands])[1:]
        assert got == run(standalone.port, [hello, *commands])[1:]


def test_proxy_texts_are_verbatim_strings_in_resp3(proxy) -> None:
    info, client_info, client_list = run(proxy.port, [A("HELLO", "3"), A("INFO", "server"),
                                                      A("CLIENT", "INFO"),
                                                      A("CLIENT", "LIST")])[1:]
    for raw in (info, client_info, client_list):
        assert raw.startswith(b"=") and b"\r\ntxt:" in raw[:12], raw[:40]
        size = int(raw[1:raw.index(b"\r\n")])
        assert len(raw) == raw.index(b"\r\n") + 2 + size + 2
    assert b"resp=3" in client_info


def test_pubsub_pushes_and_commands_on_one_connection(proxy, standalone) -> None:
    """RESP3: subscribe, run ordinary commands while subscribed, get messages as pushes,
    unsubscribe (with nothing left: a null name), as Redis 7 does."""
    channel = k("chan")

    def scenario(port: int) -> list[bytes]:
        sub = RawConnection(port)
        try:
            out = sub.pipeline([A("HELLO", "3"), A("SUBSCRIBE", channel), A("SET", S, "v"),
                                A("GET", S), A("PING")])[1:]
            run(port, [A("PUBLISH", channel, "hello")])
            out += sub.read_replies(1)
            out += sub.pipeline([A("SSUBSCRIBE", channel), A("UNSUBSCRIBE"), A("UNSUBSCRIBE"),
                                 A("SUNSUBSCRIBE")])
            return out
        finally:
            sub.close()

    assert scenario(proxy.port) == scenario(standalone.port)


def test_redis_py_resp3_client(proxy, standalone) -> None:
    """redis-py with protocol=3 (its parsers for maps, sets, doubles) gets the same values."""
    def work(port: int) -> list[object]:
        r = redis.Redis(port=port, protocol=3)
        r.delete(H, Z, SET)
        r.hset(H, mapping={"a": "1"})
        r.zadd(Z, {"m": 1.5})
        r.sadd(SET, "x")
        with r.pipeline() as pipe:
            pipe.hgetall(H).zscore(Z, "m").smembers(SET).get(k("missing"))
            tx = pipe.execute()
        return [r.hgetall(H), r.zscore(Z, "m"), r.smembers(SET), r.get(k("missing")), tx]

    assert work(proxy.port) == work(standalone.port)


def test_blocking_pop_woken_over_resp3(proxy, standalone) -> None:
    def scenario(port: int) -> list[bytes]:
        run(port, [A("DEL", L)])
        out: dict[str, list[bytes]] = {}
        waiter = RawConnection(port)
        t = threading.Thread(target=lambda: out.update(r=waiter.pipeline([
            A("HELLO", "3"), A("BZPOPMIN", Z + "b", "5"), A("BLPOP", L, "0.1")])[1:]))
        t.start()
        time.sleep(0.4)
        run(port, [A("ZADD", Z + "b", "2.5", "m")])
        t.join(10)
        waiter.close()
        return out["r"]

    assert scenario(proxy.port) == scenario(standalone.port)


# -- replies rproxy computes (cross-slot emulation), in RESP3 -------------------------------------
# (``emulating``: tests/conftest.py, every cross-slot emulation on)
E1, E2, E3 = keys_in_slots(3, f"r3e:{RUN}")
EMULATED: dict[str, list[list[bytes]]] = {
    "reads": [A("DEL", E1, E2, E3), A("SADD", E1, "1", "2"), A("SADD", E2, "2", "3"),
              A("SUNION", E1, E2), A("SINTER", E1, E2), A("SDIFF", E1, E3),
              A("SINTERCARD", "2", E1, E2), A("DEL", E1, E2),
              A("ZADD", E1, "1", "a", "2.5", "b"), A("ZADD", E2, "3", "b", "inf", "c"),
              A("ZUNION", "2", E1, E2, "WITHSCORES"), A("ZINTER", "2", E1, E2),
              A("ZDIFF", "2", E1, E2, "WITHSCORES"), A("ZINTERCARD", "2", E1, E2),
              A("DEL", E1, E2), A("SET", E1, "ohmytext"), A("SET", E2, "mynewtext"),
              A("LCS", E1, E2), A("LCS", E1, E2, "LEN"), A("LCS", E1, E2, "IDX", "WITHMATCHLEN"),
              A("PFCOUNT", E1 + "h", E2 + "h")],
    "writes": [A("DEL", E1, E2, E3), A("LMOVE", E1, E2, "LEFT", "LEFT"), A("RPUSH", E1, "x"),
               A("LMOVE", E1, E2, "LEFT", "LEFT"), A("RENAME", E2, E3), A("LMPOP", "2", E1, E2,
                                                                          "LEFT"),
               A("ZADD", E2, "1.5", "m", "2", "n"), A("ZMPOP", "2", E1, E2, "MIN", "COUNT", "2"),
               A("ZMPOP", "2", E1, E2, "MIN"), A("MSETNX", E1, "1", E2, "2"),
               A("SMOVE", E1 + "s", E2, "m")],
    "blocking": [A("DEL", E1, E2, E3), A("BLPOP", E1, E2, "0.05"), A("ZADD", E2, "2.5", "m"),
                 A("BZPOPMIN", E1, E2, "0"), A("BZPOPMAX", E1, E2, "0.05"),
                 A("ZADD", E1, "1", "a", "inf", "b"), A("BZMPOP", "0", "2", E2, E1, "MAX"),
                 A("BLMPOP", "0.05", "2", E1, E2, "LEFT"), A("BLMOVE", E1, E2, "LEFT", "LEFT",
                                                             "0.05")],
    "streams": [A("DEL", E1, E2), A("XADD", E1, "1-1", "f", "v"), A("XADD", E2, "2-1", "g", "w"),
                A("XREAD", "STREAMS", E2, E1, "0", "0"), A("XREAD", "STREAMS", E2, E1, "9", "9")],
    "transaction": [A("DEL", E1, E2, E3), A("SADD", E1, "1"), A("MULTI"), A("SADD", E2, "2"),
                    A("SUNION", E1, E2), A("RPUSH", E3, "j"), A("LMOVE", E3, E1 + "l", "LEFT",
                                                                 "LEFT"),
                    A("LMOVE", E3, E1 + "l", "LEFT", "LEFT"), A("MGET", E1 + "x", E2 + "y"),
                    A("EXEC")],
    "watch_conflict_is_null": [A("DEL", E1, E2), A("WATCH", E1, E2), A("SET", E2, "mine"),
                               A("MULTI"), A("SET", E1, "1"), A("EXEC")],
}


@pytest.mark.parametrize("name", sorted(EMULATED))
def test_resp3_computed_replies_same_bytes_as_one_redis(name: str, emulating, standalone) -> None:
    commands = [A("HELLO", "3"), *EMULATED[name]]
    assert run(emulating.port, commands)[1:] == run(standalone.port, commands)[1:]


@pytest.mark.parametrize("name", sorted(EMULATED))
def test_resp2_computed_replies_unchanged(name: str, emulating, standalone) -> None:
    commands = EMULATED[name]
    assert run(emulating.port, commands) == run(standalone.port, commands)


def test_every_resp3_type_as_the_node_sends_it(cluster, standalone) -> None:
    """DEBUG PROTOCOL <type> (allowed through rproxy by commands.allow) answers each RESP3 type
    -- attribute, big number, boolean, double, map, set, null, verbatim string -- and rproxy
    passes it through as the node sent it. A push that answers no request (DEBUG PROTOCOL
    push sends one before its reply) is not forwarded: a shared connection's pushes belong to
    no client."""
    types = ["string", "integer", "double", "bignum", "null", "array", "set", "map", "attrib",
             "verbatim", "true", "false"]
    commands = [A("HELLO", "3"), *[A("DEBUG", "PROTOCOL", t) for t in types]]
    with ProxyThread(proxy_config(cluster.seeds, commands={"allow": ["DEBUG"]})) as p:
        got = run(p.port, commands)
        push = run(p.port, [A("HELLO", "3"), A("DEBUG", "PROTOCOL", "push"), A("PING")])
    want = run(standalone.port, commands)
    assert got[1:] == want[1:]
    assert got[1 + types.index("attrib")].startswith(b"|")
    # One Redis: the push, then the reply; through rproxy: the reply, in step with the PING.
    assert push[1:] == [b"$40\r\nSome real reply following the push reply\r\n", b"+PONG\r\n"]


def test_scan_dbsize_randomkey_merged_for_resp3(proxy, standalone) -> None:
    """Merges whose values differ between a shared cluster and one Redis (other tests' keys):
    the same shape in RESP3 -- SCAN's ``[cursor, [keys]]`` (the same keys found, over every
    master), DBSIZE's integer, RANDOMKEY's bulk."""
    keys = [f"r3scan:{RUN}:{i}" for i in range(30)]  # spread over every master

    def scan(port: int) -> tuple[list[bytes], list[bytes]]:
        conn = RawConnection(port)
        try:
            conn(b"HELLO", b"3")
            conn(b"MSET", *[x.encode() for k in keys for x in (k, "v")])
            cursor, found, raws = b"0", [], []
            while True:
                raw = conn(b"SCAN", cursor, b"MATCH", f"r3scan:{RUN}:*".encode(), b"COUNT",
                           b"1000")
                raws.append(raw)
                parts = split_array(raw)
                cursor = parts[0].split(b"\r\n")[1]
                found += [p.split(b"\r\n")[1] for p in split_array(parts[1])]
                if cursor == b"0":
                    break
            tail = [conn(b"DBSIZE")[:1], conn(b"RANDOMKEY")[:1]]
            conn(b"DEL", *[k.encode() for k in keys])
            return sorted(found), tail + [r[:4] for r in raws]
        finally:
            conn.close()

    got_keys, got_shapes = scan(proxy.port)
    want_keys, want_shapes = scan(standalone.port)
    assert got_keys == want_keys == sorted(k.encode() for k in keys)
    assert got_shapes[:2] == want_shapes[:2] == [b":", b"$"]
    assert {s for s in got_shapes[2:]} == {b"*2\r\n"}
