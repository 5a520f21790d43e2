"""Transactions (MULTI / EXEC / DISCARD) with keys in one slot, through the proxy.

Differential: each case's commands go pipelined, on a fresh connection each, to a standalone
redis-server and to the proxy in front of the cluster; the reply bytes must be identical
(`+QUEUED`, the EXEC array with runtime errors in it, queue-time errors and `-EXECABORT`, the
errors of nested MULTI, EXEC/DISCARD without MULTI, WATCH inside MULTI). Then what only a
proxy in front of a cluster has: keys of a second slot, commands the proxy cannot queue, a
slot that moved between MULTI and EXEC (never shown to the client), and redis-py's
transactional pipeline.
"""

from __future__ import annotations

import uuid
from contextlib import closing

import pytest

from rproxy.core import errors
from rproxy.core.slots import key_slot
from tests.support import RawConnection, node_client

RUN = uuid.uuid4().hex[:10]


def A(*words: object) -> list[bytes]:
    return [w if isinstance(w, bytes) else str(w).encode() for w in words]


def key(name: str, tag: str = "t") -> str:
    return f"{{tx:{RUN}:{tag}}}:{name}"


def run(port: int, commands: list[list[bytes]]) -> list[bytes]:
    conn = RawConnection(port)
    try:
        return conn.pipeline(commands)
    finally:
        conn.close()


CASES: dict[str, list[list[bytes]]] = {
    "set_get_incr_with_runtime_error": [
        A("SET", key("a"), "x"), A("MULTI"), A("SET", key("a"), "v"), A("GET", key("a")),
        A("INCR", key("a")), A("APPEND", key("a"), "w"), A("EXEC"), A("GET", key("a"))],
    "empty": [A("MULTI"), A("EXEC")],
    "keyless": [A("MULTI"), A("PING"), A("ECHO", "hi"), A("PING", "x"), A("EXEC")],
    "lowercase": [A("multi"), A("set", key("lc"), "1"), A("incrby", key("lc"), "4"), A("exec")],
    "nested_multi_does_not_abort": [
        A("MULTI"), A("MULTI"), A("SET", key("n"), "1"), A("EXEC"), A("GET", key("n"))],
    "unknown_command_aborts": [
        A("MULTI"), A("NOSUCHCOMMAND", "a", "b"), A("SET", key("u"), "1"), A("EXEC"),
        A("EXISTS", key("u"))],
    "wrong_arity_aborts": [A("MULTI"), A("GET"), A("SET", key("w"), "1"), A("EXEC"),
                           A("EXISTS", key("w"))],
    "unknown_subcommand_aborts": [A("MULTI"), A("OBJECT", "NOSUCH", key("s")), A("EXEC")],
    "exec_without_multi": [A("EXEC"), A("DISCARD"), A("PING")],
    "discard": [A("MULTI"), A("SET", key("d"), "1"), A("DISCARD"), A("EXISTS", key("d")),
                A("EXEC")],
    "watch_inside_multi": [A("MULTI"), A("WATCH", key("x")), A("SET", key("x"), "1"),
                           A("EXEC")],
    "watch_wrong_arity_inside_multi": [A("MULTI"), A("WATCH"), A("EXEC")],
    "exec_with_arguments": [A("MULTI"), A("SET", key("e"), "1"), A("EXEC", "now"),
                            A("EXISTS", key("e")), A("EXEC")],
    "discard_with_arguments": [A("MULTI"), A("DISCARD", "x"), A("PING"), A("EXEC")],
    "multi_with_arguments": [A("MULTI"), A("MULTI", "x"), A("PING"), A("EXEC")],
    "unwatch": [A("UNWATCH"), A("MULTI"), A("UNWATCH"), A("EXEC")],
    "blocking_pop_inside_multi_does_not_block": [
        A("DEL", key("l")), A("MULTI"), A("RPUSH", key("l"), "a"), A("BLPOP", key("l"), "0"),
        A("BLPOP", key("l"), "0"), A("EXEC")],
    "commands_after_exec_in_the_same_write": [
        A("MULTI"), A("SET", key("p"), "1"), A("EXEC"), A("INCR", key("p")), A("GET", key("p"))],
    "many_commands": [A("MULTI"), *[A("RPUSH", key("m"), i) for i in range(200)],
                      A("LRANGE", key("m"), "0", "-1"), A("DEL", key("m")), A("EXEC")],
    "hash_and_set_types": [
        A("MULTI"), A("HSET", key("h"), "f", "1", "g", "2"), A("HGETALL", key("h")),
        A("SADD", key("s"), "m"), A("SISMEMBER", key("s"), "m"), A("DEL", key("h"), key("s")),
        A("EXEC")],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_bytes_as_one_redis(name: str, proxy, standalone) -> None:
    commands = CASES[name]
    want = run(standalone.port, commands)
    got = run(proxy.port, commands)
    assert got == want


def test_quit_inside_multi(proxy, standalone) -> None:
    for port in (standalone.port, proxy.port):
        conn = RawConnection(port)
        try:
            conn.sock.sendall(b"*1\r\n$5\r\nMULTI\r\n*1\r\n$4\r\nQUIT\r\n*1\r\n$4\r\nPING\r\n")
            data = b""
            while True:
                chunk = conn.sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            assert data == b"+OK\r\n+OK\r\n", port
        finally:
            conn.close()


def test_reset_discards_the_transaction(proxy) -> None:
    got = run(proxy.port, [A("MULTI"), A("SET", key("r"), "1"), A("RESET"),
                           A("EXISTS", key("r")), A("EXEC")])
    assert got == [b"+OK\r\n", b"+QUEUED\r\n", b"+RESET\r\n", b":0\r\n",
                   errors.EXEC_WITHOUT_MULTI]


def test_keys_of_a_second_slot_abort_the_transaction(proxy) -> None:
    a, b = key("a", "one"), key("b", "two")
    assert key_slot(a.encode()) != key_slot(b.encode())
    got = run(proxy.port, [A("MULTI"), A("SET", a, "1"), A("SET", b, "2"), A("EXEC"),
                           A("EXISTS", a, b)])
    assert got == [b"+OK\r\n", b"+QUEUED\r\n", errors.CROSSSLOT_TRANSACTION, errors.EXECABORT,
                   b":0\r\n"]
    # one command whose keys span slots (MSET is split outside a transaction, not inside)
    got = run(proxy.port, [A("MULTI"), A("MSET", a, "1", b, "2"), A("EXEC")])
    assert got == [b"+OK\r\n", errors.CROSSSLOT_TRANSACTION, errors.EXECABORT]


def test_commands_the_proxy_cannot_queue_abort_the_transaction(proxy) -> None:
    got = run(proxy.port, [A("MULTI"), A("DBSIZE"), A("EXEC")])
    assert got[0] == b"+OK\r\n" and got[2] == errors.EXECABORT
    assert got[1].startswith(b"-ERR rproxy: 'dbsize' is not supported: inside MULTI")


def test_redis_py_transactional_pipeline(proxy) -> None:
    r = proxy.client()
    try:
        with r.pipeline(transaction=True) as p:
            p.set(key("py"), 10).incrby(key("py"), 5).get(key("py")).lpush(key("py"), "x")
            result = p.execute(raise_on_error=False)
        assert result[:3] == [True, 15, b"15"]
        assert "WRONGTYPE" in str(result[3])
    finally:
        r.close()


def _myid(node) -> str:
    with closing(node_client(node)) as c:
        return c.execute_command("CLUSTER", "MYID").decode()


def test_a_slot_moved_before_exec_is_followed(proxy, cluster) -> None:
    """The proxy's map is stale at EXEC (the slot moved since it last read it): the node
    answers MOVED to the queued commands and EXECABORT; the proxy sends the block again to the
    new owner, and the client sees the EXEC array."""
    k1, k2 = key("moved1", "mv"), key("moved2", "mv")
    slot = key_slot(k1.encode())
    source = cluster.master_of_slot(slot)
    target = next(m for m in cluster.masters() if m.port != source.port)
    conn = RawConnection(proxy.port)
    try:
        assert conn(b"SET", k1, b"before") == b"+OK\r\n"
        assert conn(b"MULTI") == b"+OK\r\n"
        assert conn(b"GET", k1) == b"+QUEUED\r\n"
        # Move the (empty but for k1) slot to the target, as redis-cli --cluster reshard does.
        with closing(node_client(source)) as src, closing(node_client(target)) as dst:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _myid(source))
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _myid(target))
            src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", k1)
            for node in [target, source, *[m for m in cluster.masters()
                                           if m.port not in (source.port, target.port)]]:
                with closing(node_client(node)) as c:
                    c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", _myid(target))
        assert conn(b"SET", k2, b"2") == b"+QUEUED\r\n"
        assert conn(b"EXEC") == b"*2\r\n$6\r\nbefore\r\n+OK\r\n"
        assert conn(b"GET", k2) == b"$1\r\n2\r\n"
    finally:
        conn.close()
    with closing(node_client(target)) as c:
        assert c.get(k2) == b"2"  # it ran on the new owner
