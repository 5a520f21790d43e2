"""Cross-shard commands: split + merge, every-master and every-node fan-outs, SCAN.

Differential where a single Redis has an answer: the same commands go to a standalone
redis-server and through the proxy (keys deliberately spread over every master), and the
replies must be identical."""

from __future__ import annotations

import os

import pytest
import redis

from rproxy.core.slots import key_slot
from tests.support import ProxyThread, node_client, proxy_config, raw_pipeline
from tests.support import argv as A


def _raw(client: redis.Redis) -> redis.Redis:
    client.response_callbacks.clear()  # compare replies as they came off the wire
    return client


@pytest.fixture
def std(standalone):  # type: ignore[no-untyped-def]
    return _raw(standalone.client())


@pytest.fixture
def prx(proxy):  # type: ignore[no-untyped-def]
    return _raw(proxy.client())


def _keys(prefix: str, n: int) -> list[str]:
    run = os.urandom(3).hex()
    keys = [f"xs:{run}:{prefix}:{i}" for i in range(n)]
    assert len({key_slot(k.encode()) for k in keys}) > min(n, 3) // 2
    return keys


def _owners(cluster, keys: list[str]) -> set[int]:
    return {cluster.master_of_slot(key_slot(k.encode())).port for k in keys}


def _both(std: redis.Redis, prx: redis.Redis, *args: object) -> object:
    def outcome(c: redis.Redis) -> object:
        try:
            return c.execute_command(*args)
        except redis.ResponseError as exc:
            return ("error", str(exc))

    a, b = outcome(std), outcome(prx)
    assert a == b, f"{args!r}: standalone {a!r} != proxy {b!r}"
    return a


def test_split_commands_match_a_single_redis(std, prx, cluster) -> None:
    keys = _keys("split", 40)
    assert len(_owners(cluster, keys)) == 3  # really spread over every master
    pairs = [x for i, k in enumerate(keys) for x in (k, f"v{i}")]
    _both(std, prx, "MSET", *pairs)
    _both(std, prx, "MGET", *keys)
    _both(std, prx, "MGET", keys[3], "xs:missing", keys[3], keys[0], keys[39])
    _both(std, prx, "EXISTS", *keys[:10], keys[0], "xs:missing")  # a repeated key counts twice
    _both(std, prx, "TOUCH", *keys[:10], "xs:missing")
    _both(std, prx, "LPUSH", keys[5] + ":list", "a")
    _both(std, prx, "MGET", keys[4], keys[5] + ":list", keys[6])  # non-strings read as nil
    _both(std, prx, "DEL", *keys[:20], "xs:missing", keys[0])
    _both(std, prx, "UNLINK", *keys[20:], keys[5] + ":list")
    _both(std, prx, "MGET", *keys)
    _both(std, prx, "EXISTS", *keys)
    # arity errors are decided before anything is split or written
    _both(std, prx, "MSET", keys[0], "a", keys[1])
    _both(std, prx, "EXISTS", keys[0])
    assert prx.execute_command("EXISTS", keys[1]) == 0  # the bad MSET wrote nothing


def _sorted_if_list(v: object) -> object:
    return sorted(v) if isinstance(v, list) else v


def _both_sets(std: redis.Redis, prx: redis.Redis, *args: object) -> None:
    """Set results: Redis returns hash-table order, rproxy sorted members; compare as sets."""
    def outcome(c: redis.Redis) -> object:
        try:
            return _sorted_if_list(c.execute_command(*args))
        except redis.ResponseError as exc:
            return ("error", str(exc))

    a, b = outcome(std), outcome(prx)
    assert a == b, f"{args!r}: standalone {a!r} != proxy {b!r}"


def test_cross_slot_reads_match_a_single_redis(std, prx, cluster) -> None:
    """Read-only multi-key commands over keys in different slots, computed by rproxy from
    per-key reads: the same replies as one Redis (set member order aside)."""
    keys = _keys("reads", 6)
    a, b, c, d, lst, missing = keys
    assert len({key_slot(k.encode()) for k in keys}) == 6
    for cl in (std, prx):
        cl.execute_command("SADD", a, "x", "y", "z", "1", "2")
        cl.execute_command("SADD", b, "y", "z", "w", "2")
        cl.execute_command("ZADD", c, "1.5", "x", "2", "y", "0.1", "q")
        cl.execute_command("ZADD", d, "3", "y", "-1", "q", "1e20", "big")
        cl.execute_command("RPUSH", lst, "a")
        cl.execute_command("PFADD", a + ":h", *[f"e{i}" for i in range(100)])
        cl.execute_command("PFADD", b + ":h", *[f"e{i}" for i in range(50, 5000)])
    for cmd in ("SUNION", "SINTER", "SDIFF"):
        _both_sets(std, prx, cmd, a, b)
        _both_sets(std, prx, cmd, a, b, missing)
        _both_sets(std, prx, cmd, a, lst)  # WRONGTYPE
    _both(std, prx, "SINTERCARD", 2, a, b)
    _both(std, prx, "SINTERCARD", 2, a, b, "LIMIT", 1)
    _both(std, prx, "SINTERCARD", 3, a, b)  # numkeys above the keys given
    for cmd in ("ZUNION", "ZINTER"):
        _both(std, prx, cmd, 2, c, d)
        _both(std, prx, cmd, 2, c, d, "WITHSCORES")
        _both(std, prx, cmd, 3, c, d, a, "WEIGHTS", "2", "0.5", "3", "AGGREGATE", "MAX",
              "WITHSCORES")  # a set as input scores 1
        _both(std, prx, cmd, 2, c, d, "AGGREGATE", "MIN", "WITHSCORES")
        _both(std, prx, cmd, 2, c, lst)
        _both(std, prx, cmd, 2, c, d, "WEIGHTS", "x", "1")
    _both(std, prx, "ZDIFF", 2, c, d, "WITHSCORES")
    _both(std, prx, "ZINTERCARD", 2, c, d)
    _both(std, prx, "ZINTERCARD", 2, c, d, "LIMIT", 1)
    _both(std, prx, "PFCOUNT", a + ":h", b + ":h")
    _both(std, prx, "PFCOUNT", a + ":h", b + ":h", missing)
    _both(std, prx, "PFCOUNT", a + ":h", lst)
    for cl in (std, prx):
        cl.execute_command("SET", c + ":s", "ohmytext")
        cl.execute_command("SET", d + ":s", "mynewtext")
    assert key_slot((c + ":s").encode()) != key_slot((d + ":s").encode())
    _both(std, prx, "LCS", c + ":s", d + ":s")
    _both(std, prx, "LCS", c + ":s", d + ":s", "IDX", "MINMATCHLEN", "2", "WITHMATCHLEN")
    _both(std, prx, "LCS", c + ":s", lst)


def test_split_writes_land_on_each_owner(prx, cluster) -> None:
    keys = _keys("owners", 30)
    prx.execute_command("MSET", *[x for k in keys for x in (k, k)])
    for k in keys:
        owner = cluster.master_of_slot(key_slot(k.encode()))
        assert node_client(owner).get(k) == k.encode()


def test_large_mget_and_mset(prx) -> None:
    keys = _keys("big", 1000)
    prx.execute_command("MSET", *[x for i, k in enumerate(keys) for x in (k, str(i))])
    assert prx.execute_command("MGET", *keys) == [str(i).encode() for i in range(1000)]
    assert prx.execute_command("DEL", *keys) == 1000


def test_dbsize_keys_randomkey(prx, cluster) -> None:
    keys = _keys("ks", 30)
    prx.execute_command("MSET", *[x for k in keys for x in (k, "1")])
    total = sum(node_client(m).dbsize() for m in cluster.masters())
    assert prx.execute_command("DBSIZE") == total
    prefix = keys[0].rsplit(":", 1)[0]
    assert sorted(prx.execute_command("KEYS", prefix + ":*")) == sorted(k.encode() for k in keys)
    assert prx.execute_command("RANDOMKEY") is not None


def test_scan_returns_every_key_exactly_once(prx) -> None:
    keys = _keys("scan", 500)
    prx.execute_command("MSET", *[x for k in keys for x in (k, "1")])
    prefix = keys[0].rsplit(":", 1)[0]
    seen: list[bytes] = []
    cursor = b"0"
    rounds = 0
    while True:
        cursor, batch = prx.execute_command("SCAN", cursor, "MATCH", prefix + ":*", "COUNT", 50)
        seen.extend(batch)
        rounds += 1
        assert int(cursor) >= 0  # a plain integer, as clients expect
        if cursor == b"0":
            break
        assert rounds < 10000
    assert sorted(seen) == sorted(k.encode() for k in keys)  # each once: no duplicates


def test_scan_type_filter_and_bad_cursor(prx, std) -> None:
    keys = _keys("scantype", 20)
    for k in keys[:10]:
        prx.execute_command("SET", k, "s")
    for k in keys[10:]:
        prx.execute_command("RPUSH", k, "l")
    prefix = keys[0].rsplit(":", 1)[0]
    found, cursor = [], b"0"
    while True:
        cursor, batch = prx.execute_command("SCAN", cursor, "MATCH", prefix + ":*", "TYPE", "list")
        found.extend(batch)
        if cursor == b"0":
            break
    assert sorted(found) == sorted(k.encode() for k in keys[10:])
    _both(std, prx, "SCAN", "notanumber")
    _both(std, prx, "SCAN", "0", "COUNT", "0")


def test_scripts_and_functions_on_every_master(prx, cluster) -> None:
    sha = prx.execute_command("SCRIPT", "LOAD", "return redis.call('GET', KEYS[1])")
    for m in cluster.masters():
        assert node_client(m).execute_command("SCRIPT", "EXISTS", sha) == [1]
    assert prx.execute_command("SCRIPT", "EXISTS", sha, "0" * 40) == [1, 0]
    keys = _keys("sha", 12)
    for k in keys:  # EVALSHA works whichever master the key leads to
        prx.execute_command("SET", k, k)
        assert prx.execute_command("EVALSHA", sha, 1, k) == k.encode()
    lib = (
        "#!lua name=xslib\n"
        "redis.register_function('xsget', function(keys, args) return redis.call('GET', keys[1]) end)"
    )
    assert prx.execute_command("FUNCTION", "LOAD", "REPLACE", lib) == b"xslib"
    for k in keys:
        assert prx.execute_command("FCALL", "xsget", 1, k) == k.encode()
    assert prx.execute_command("FUNCTION", "DELETE", "xslib") == b"OK"
    for m in cluster.masters():
        assert node_client(m).execute_command("FUNCTION", "LIST") == []
    assert prx.execute_command("SCRIPT", "FLUSH") == b"OK"
    assert prx.execute_command("SCRIPT", "EXISTS", sha) == [0]


def test_config_set_reaches_every_node(prx, cluster) -> None:
    nodes = cluster.masters() + cluster.replicas()
    before = {n.port: node_client(n).config_get("slowlog-max-len")["slowlog-max-len"]
              for n in nodes}
    try:
        assert prx.execute_command("CONFIG", "SET", "slowlog-max-len", "77") == b"OK"
        for n in nodes:
            assert node_client(n).config_get("slowlog-max-len")["slowlog-max-len"] == "77"
        assert prx.execute_command("CONFIG", "GET", "slowlog-max-len") == [b"slowlog-max-len", b"77"]
        err = prx.execute_command  # an invalid value is refused, as by one Redis
        with pytest.raises(redis.ResponseError, match="slowlog-max-len"):
            err("CONFIG", "SET", "slowlog-max-len", "notanumber")
    finally:
        for n in nodes:
            node_client(n).config_set("slowlog-max-len", before[n.port])


def test_slowlog_over_every_master(prx, cluster) -> None:
    """PROXY SLOWLOG: the masters' own slow logs (SLOWLOG is rproxy's: test_slowlog.py)."""
    nodes = cluster.masters()
    try:
        prx.execute_command("CONFIG", "SET", "slowlog-log-slower-than", "0")
        prx.execute_command("PROXY", "SLOWLOG", "RESET")
        keys = _keys("slow", 9)
        for k in keys:
            prx.execute_command("SET", k, "1")
        prx.execute_command("CONFIG", "SET", "slowlog-log-slower-than", "10000")
        length = prx.execute_command("PROXY", "SLOWLOG", "LEN")
        assert length >= len(keys)
        assert length == sum(node_client(n).execute_command("SLOWLOG", "LEN") for n in nodes)
        entries = prx.execute_command("PROXY", "SLOWLOG", "GET", 5)
        assert 0 < len(entries) <= 5
        stamps = [e[1] for e in entries]
        assert stamps == sorted(stamps, reverse=True)
    finally:
        prx.execute_command("CONFIG", "SET", "slowlog-log-slower-than", "10000")


def test_flushall_empties_every_master(prx, cluster) -> None:
    keys = _keys("flush", 30)
    prx.execute_command("MSET", *[x for k in keys for x in (k, "1")])
    assert prx.execute_command("FLUSHALL") == b"OK"
    assert all(node_client(m).dbsize() == 0 for m in cluster.masters())
    assert prx.execute_command("DBSIZE") == 0


def test_command_policy(cluster) -> None:

    cfg = proxy_config(cluster.seeds, commands={"deny": ("KEYS", "FLUSHALL"), "allow": ("LOLWUT",)})
    with ProxyThread(cfg) as p:
        c = p.client()
        with pytest.raises(redis.ResponseError, match="disabled by the proxy's command policy"):
            c.execute_command("KEYS", "*")
        with pytest.raises(redis.ResponseError, match="disabled by the proxy's command policy"):
            c.execute_command("FLUSHALL")
        assert c.dbsize() >= 0  # the rest works


def test_topology_commands_are_hidden_unless_allowed(cluster) -> None:
    """CLUSTER NODES / SHARDS and ROLE are refused (the proxy is one standalone server) until
    the operator passes them through to one master (commands.allow)."""
    with ProxyThread(proxy_config(cluster.seeds)) as p:
        for command in (("CLUSTER", "NODES"), ("CLUSTER", "SHARDS"), ("ROLE",)):
            with pytest.raises(redis.ResponseError, match="is not supported"):
                p.client().execute_command(*command)
    cfg = proxy_config(cluster.seeds, commands={"allow": ("CLUSTER|NODES", "ROLE")})
    with ProxyThread(cfg) as p:
        c = p.client()
        nodes = c.execute_command("CLUSTER", "NODES")
        assert "myself,master" in (nodes.decode() if isinstance(nodes, bytes) else str(nodes))
        assert c.execute_command("ROLE")[0] == b"master"
        assert c.execute_command("CLUSTER", "KEYSLOT", "a") == 15495  # still the proxy's
        with pytest.raises(redis.ResponseError, match="is not supported"):
            c.execute_command("CLUSTER", "SHARDS")  # not allowed: still hidden


def test_xread_over_streams_in_several_slots(std, prx) -> None:
    keys = _keys("xr", 4)
    assert len({key_slot(k.encode()) for k in keys}) == 4
    for cl in (std, prx):
        for i, k in enumerate(keys[:3]):
            cl.execute_command("XADD", k, f"{i + 1}-0", "f", str(i))
            cl.execute_command("XADD", k, f"{i + 1}-1", "g", str(i))
    _both(std, prx, "XREAD", "STREAMS", *keys, "0", "0", "0", "0")
    _both(std, prx, "XREAD", "COUNT", "1", "STREAMS", keys[2], keys[0], keys[3], "0", "0", "0")
    _both(std, prx, "XREAD", "STREAMS", keys[0], keys[3], "$", "$")  # nothing new: null
    _both(std, prx, "XREAD", "STREAMS", keys[0], keys[1], "0")  # unbalanced


def test_cross_slot_writes_emulated_when_enabled(std, cluster) -> None:
    """cross_slot_writes = "emulate": multi-key writes over keys in different slots run as
    single-slot steps and end in the same replies and data as on one Redis."""

    cfg = proxy_config(cluster.seeds, commands={"cross_slot_writes": "emulate"})
    with ProxyThread(cfg) as p:
        prx = _raw(p.client())
        k = _keys("wr", 8)
        assert len({key_slot(x.encode()) for x in k}) == 8
        for cl in (std, prx):
            cl.execute_command("SET", k[0], "v0")
            cl.execute_command("PEXPIRE", k[0], 100000)
            cl.execute_command("SADD", k[1], "a", "b", "c")
            cl.execute_command("SADD", k[2], "c", "d")
            cl.execute_command("RPUSH", k[3], "x", "y")
            cl.execute_command("ZADD", k[4], "1", "m", "2.5", "n")
            cl.execute_command("PFADD", k[5], "p", "q")
        steps = [
            ("RENAME", k[0], k[6]), ("GET", k[6]), ("EXISTS", k[0]),
            ("RENAMENX", k[6], k[1]), ("COPY", k[6], k[7]), ("GET", k[7]),
            ("SMOVE", k[1], k[2], "a"), ("SMEMBERS", k[2]),
            ("LMOVE", k[3], k[7], "LEFT", "RIGHT"),  # WRONGTYPE: dst is a string
            ("LMOVE", k[3], k[5] + "l", "LEFT", "RIGHT"), ("LRANGE", k[5] + "l", 0, -1),
            ("SUNIONSTORE", k[7], k[1], k[2]), ("SMEMBERS", k[7]),
            ("ZUNIONSTORE", k[6], 2, k[4], k[2], "WEIGHTS", "2", "3"),
            ("ZRANGE", k[6], 0, -1, "WITHSCORES"),
            ("BITOP", "OR", k[0], k[7] + "x", k[6] + "y"), ("MSETNX", k[0] + "n", "1", k[1] + "n", "2"),
            ("MSETNX", k[0] + "n", "1", k[2] + "n", "2"), ("PFMERGE", k[5] + "m", k[5]),
            ("PFCOUNT", k[5] + "m"),
            ("ZRANGESTORE", k[7] + "z", k[4], 0, -1), ("ZRANGE", k[7] + "z", 0, -1, "WITHSCORES"),
            ("LMPOP", 2, k[5] + "none", k[5] + "l", "LEFT"), ("LMPOP", 2, k[5] + "none", k[5] + "l", "LEFT"),
        ]
        for step in steps:
            if step[0] == "SMEMBERS":
                _both_sets(std, prx, *step)
            else:
                _both(std, prx, *step)


def test_cross_slot_writes_refused_by_default(prx) -> None:
    a, b = _keys("wrdef", 2)
    prx.execute_command("SET", a, "1")
    with pytest.raises(redis.ResponseError, match="^Keys in request don't hash to the same slot$"):
        prx.execute_command("RENAME", a, b)
    assert prx.execute_command("GET", a) == b"1"


def test_commands_pipelined_after_an_emulated_write_wait_for_it(cluster) -> None:
    """An emulated write runs in rounds; the client's next commands, pipelined in the same
    read, must not overtake its later rounds: a GET of the key a RENAME writes sees the value
    (as on one Redis), and a SET of the source after it is not the value moved."""
    cfg = proxy_config(cluster.seeds, commands={"cross_slot_writes": "emulate"})
    with ProxyThread(cfg) as p:
        for i in range(20):
            src, dst = _keys(f"order{i}", 2)
            got = raw_pipeline(p.port, [A("SET", src, "v"), A("RENAME", src, dst),
                                        A("GET", dst), A("SET", src, "new"), A("GET", dst)])
            assert got == [b"+OK\r\n", b"+OK\r\n", b"$1\r\nv\r\n", b"+OK\r\n", b"$1\r\nv\r\n"]
