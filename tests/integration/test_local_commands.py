"""Commands the proxy answers itself, checked with a plain client as a legacy app sees them."""

from __future__ import annotations

import threading

import redis
import pytest

from rproxy.core.slots import key_slot
from tests.support import node_client, raw_exchange, wait_until


def test_ping_echo(proxy, r: redis.Redis) -> None:
    assert r.ping() is True
    got, _ = raw_exchange(proxy.port, b"PING\r\nPING hi\r\n", until=b"hi\r\n")
    assert got == b"+PONG\r\n$2\r\nhi\r\n"
    assert r.echo(b"a\r\nb\x00c") == b"a\r\nb\x00c"
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'ping'"):
        r.execute_command("PING", "a", "b")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'echo'"):
        r.execute_command("ECHO")


def test_status_replies_stay_status_replies(proxy) -> None:
    # +OK must not become $2\r\nOK: replies are forwarded byte-exact.
    got, _ = raw_exchange(
        proxy.port,
        b"*3\r\n$3\r\nSET\r\n$8\r\nlc:{st}k\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$8\r\nlc:{st}k\r\n"
        b"*1\r\n$4\r\nPING\r\n",
        until=b"+PONG\r\n",
    )
    assert got == b"+OK\r\n$1\r\nv\r\n+PONG\r\n"


def test_select(r: redis.Redis) -> None:
    assert r.execute_command("SELECT", "0") is True  # redis-py's reading of +OK
    with pytest.raises(redis.ResponseError, match="^SELECT is not allowed in cluster mode$"):
        r.execute_command("SELECT", "1")
    with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
        r.execute_command("SELECT", "x")


def test_hello(proxy, r: redis.Redis) -> None:
    reply = r.execute_command("HELLO")
    fields = dict(zip(reply[::2], reply[1::2]))
    assert fields[b"proto"] == 2
    assert fields[b"mode"] == b"standalone"
    assert fields[b"version"].startswith(b"7.")
    assert fields[b"id"] == r.client_id()
    reply = r.execute_command("HELLO", "2", "SETNAME", "myapp")
    assert r.client_getname() == "myapp"
    got, _ = raw_exchange(proxy.port, b"HELLO 4\r\n", until=b"\r\n")
    assert got == b"-NOPROTO unsupported protocol version\r\n"
    with pytest.raises(redis.ResponseError, match="Protocol version is not an integer"):
        r.execute_command("HELLO", "abc")


def test_client_name_and_id(r: redis.Redis) -> None:
    assert r.client_getname() is None
    assert r.client_setname("worker-1") is True
    assert r.client_getname() == "worker-1"
    assert isinstance(r.client_id(), int)
    with pytest.raises(redis.ResponseError, match="Client names cannot contain spaces"):
        r.execute_command("CLIENT", "SETNAME", "a b")
    info = r.execute_command("CLIENT", "INFO")
    assert b"name=worker-1" in info


def test_client_ids_are_distinct(proxy) -> None:
    a, b = proxy.client(), proxy.client()
    assert a.client_id() != b.client_id()


def test_quit_closes_after_reply(proxy) -> None:
    got, closed = raw_exchange(proxy.port, b"PING\r\nQUIT\r\nPING\r\n", expect_close=True)
    assert got == b"+PONG\r\n+OK\r\n"
    assert closed


def test_auth_without_password(proxy) -> None:
    # No password configured: the replies of a Redis whose default user is nopass.
    got, _ = raw_exchange(proxy.port, b"AUTH secret\r\nAUTH default anything\r\nAUTH bob x\r\n",
                          until=b"disabled.\r\n")
    assert got == (
        b"-ERR AUTH <password> called without any password configured for the default user. "
        b"Are you sure your configuration is correct?\r\n"
        b"+OK\r\n"
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    )


def test_info_sections(r: redis.Redis) -> None:
    r.set("lc:{info}a", 1)
    info = r.info()
    assert info["cluster_enabled"] == 0
    assert info["redis_version"].startswith("7.")
    assert "rproxy_version" in info
    assert info["connected_clients"] >= 1
    keyspace = r.info("keyspace")
    assert keyspace["db0"]["keys"] >= 1
    server_only = r.info("server")
    assert "connected_clients" not in server_only and "redis_version" in server_only


def test_info_keyspace_totals_match_the_masters(r: redis.Redis, cluster) -> None:
    for i in range(50):
        r.set(f"lc:ks:{i}", i)  # no tag: spread over every master
    total = sum(node_client(m).dbsize() for m in cluster.masters())
    assert r.info("keyspace")["db0"]["keys"] == total
    assert r.dbsize() == total


def test_info_stats_sum_the_masters(r: redis.Redis, cluster) -> None:
    r.get("lc:stats:missing")  # one more miss somewhere
    masters = sum(node_client(m).info("stats")["keyspace_misses"] for m in cluster.masters())
    stats = r.info("stats")
    assert stats["keyspace_misses"] == masters  # nothing else runs meanwhile
    assert stats["total_commands_processed"] >= 1


def test_keys_pattern_over_all_masters(r: redis.Redis) -> None:
    names = {f"lc:keys:{i}".encode() for i in range(30)}
    for n in names:
        r.set(n, 1)
    slots = {key_slot(n) for n in names}
    assert len(slots) > 10  # really spread
    assert set(r.keys("lc:keys:*")) == names


def test_command_comes_from_the_backend(proxy, r: redis.Redis) -> None:
    got, _ = raw_exchange(proxy.port, b"COMMAND COUNT\r\n", until=b"\r\n")
    assert int(got[1:-2]) > 200
    got, _ = raw_exchange(proxy.port, b"COMMAND INFO get\r\n", until=b"\r\n")
    assert got.startswith(b"*1\r\n*10\r\n$3\r\nget\r\n:2\r\n")
    got, _ = raw_exchange(proxy.port, b"COMMAND GETKEYS MSET a 1 b 2\r\n", until=b"b\r\n")
    assert got == b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"


def test_keyless_commands_answered_by_a_master(r: redis.Redis) -> None:
    secs, _ = r.time()
    assert secs > 1_700_000_000
    assert r.lastsave() is not None


def test_cluster_keyslot_local_and_topology_hidden(r: redis.Redis) -> None:
    assert r.execute_command("CLUSTER", "KEYSLOT", "foo") == key_slot(b"foo")
    with pytest.raises(redis.ResponseError, match="rproxy: 'cluster nodes' is not supported"):
        r.execute_command("CLUSTER", "NODES")


@pytest.mark.parametrize("cmd", [["MONITOR"], ["CLIENT", "TRACKING", "on"],
                                 ["SWAPDB", "0", "1"], ["SHUTDOWN"], ["DEBUG", "SLEEP", "0"]])
def test_refused_commands_say_why(r: redis.Redis, cmd: list[str]) -> None:
    with pytest.raises(redis.ResponseError, match=r"^rproxy: '.*' is not supported: "):
        r.execute_command(*cmd)
    assert r.ping()  # the connection is still fine


def test_unknown_command_is_redis_text(proxy) -> None:
    got, _ = raw_exchange(proxy.port, b"NOSUCH a b\r\n", until=b"\r\n")
    assert got == b"-ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' \r\n"


def test_info_has_the_fields_clients_read_at_connect(proxy) -> None:
    """redis-py's own test suite reads arch_bits at start-up; clients read role and
    redis_mode to know they talk to a standalone master; blocked_clients counts blocks."""
    r = redis.Redis(port=proxy.port, protocol=2)
    blocker = redis.Redis(port=proxy.port, protocol=2)
    try:
        info = r.info()
        assert info["arch_bits"] in (32, 64) and len(info["run_id"]) == 40
        assert info["role"] == "master" and info["connected_slaves"] == 0
        assert info["redis_mode"] == "standalone" and info["cluster_enabled"] == 0
        assert r.info("clients")["blocked_clients"] == 0
        done = threading.Thread(target=lambda: blocker.blpop(["{info}:nothing"], timeout=3))
        done.start()
        wait_until(lambda: r.info("clients")["blocked_clients"] == 1, 5, "one blocked client")
        r.rpush("{info}:nothing", "x")
        done.join(5)
        assert r.info("clients")["blocked_clients"] == 0
    finally:
        r.close()
        blocker.close()
