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
from tests.support import RawConnection, node_client, wait_until
from tests.support import argv as A
from tests.support import raw_pipeline as run

RUN = uuid.uuid4().hex[:10]


def key(name: str, tag: str = "t") -> str:
    return f"{{tx:{RUN}:{tag}}}:{name}"


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


# -- WATCH ------------------------------------------------------------------------------------
WATCH_CASES: dict[str, list[list[bytes]]] = {
    "watch_no_conflict": [
        A("SET", key("w1"), "1"), A("WATCH", key("w1")), A("GET", key("w1")), A("MULTI"),
        A("INCR", key("w1")), A("EXEC"), A("GET", key("w1"))],
    "own_write_after_watch_makes_exec_nil": [
        A("WATCH", key("w2")), A("SET", key("w2"), "mine"), A("MULTI"), A("SET", key("w2"), "tx"),
        A("EXEC"), A("GET", key("w2"))],
    "unwatch_forgets": [
        A("WATCH", key("w3")), A("SET", key("w3"), "1"), A("UNWATCH"), A("MULTI"),
        A("INCR", key("w3")), A("EXEC")],
    "discard_forgets": [
        A("WATCH", key("w4")), A("MULTI"), A("DISCARD"), A("SET", key("w4"), "1"), A("MULTI"),
        A("INCR", key("w4")), A("EXEC")],
    "watch_twice_and_empty_exec": [
        A("WATCH", key("w5")), A("WATCH", key("w6")), A("MULTI"), A("EXEC")],
    "exec_abort_after_watch": [
        A("WATCH", key("w7")), A("MULTI"), A("NOSUCH"), A("EXEC"), A("SET", key("w7"), "1"),
        A("MULTI"), A("GET", key("w7")), A("EXEC")],
    "watch_wrong_arity": [A("WATCH")],
}


@pytest.mark.parametrize("name", sorted(WATCH_CASES))
def test_watch_same_bytes_as_one_redis(name: str, proxy, standalone) -> None:
    commands = WATCH_CASES[name]
    want = run(standalone.port, commands)
    got = run(proxy.port, commands)
    assert got == want


@pytest.mark.parametrize("target", ["standalone", "proxy"])
def test_another_clients_write_between_watch_and_exec_gives_nil(target: str, proxy,
                                                                standalone) -> None:
    port = standalone.port if target == "standalone" else proxy.port
    k = key(f"conflict-{target}")
    watcher, other = RawConnection(port), RawConnection(port)
    try:
        assert watcher(b"SET", k, b"1") == b"+OK\r\n"
        assert watcher(b"WATCH", k) == b"+OK\r\n"
        assert other(b"INCR", k) == b":2\r\n"
        assert watcher.pipeline([A("MULTI"), A("SET", k, "tx"), A("EXEC")]) == [
            b"+OK\r\n", b"+QUEUED\r\n", b"*-1\r\n"]
        assert watcher(b"GET", k) == b"$1\r\n2\r\n"
    finally:
        watcher.close()
        other.close()


def test_watch_of_keys_in_two_slots_is_refused(proxy) -> None:
    got = run(proxy.port, [A("WATCH", key("a", "one"), key("b", "two")),
                           A("WATCH", key("a", "one")), A("WATCH", key("b", "two"))])
    assert got == [errors.CROSSSLOT_TRANSACTION, b"+OK\r\n", errors.CROSSSLOT_TRANSACTION]


def test_a_redis_py_watch_retry_loop_under_contention(proxy) -> None:
    """The optimistic-locking loop of redis-py's documentation, 8 clients x 25 increments
    of one counter: every increment lands once, conflicts are retried."""
    import threading

    counter = key("counter", "loop")
    r = proxy.client()
    r.set(counter, 0)
    conflicts = [0]
    failures: list[BaseException] = []

    def worker() -> None:
        c = proxy.client()
        try:
            for _ in range(25):
                while True:
                    with c.pipeline() as p:
                        try:
                            p.watch(counter)
                            value = int(p.get(counter))
                            p.multi()
                            p.set(counter, value + 1)
                            p.execute()
                            break
                        except redis_watch_error():
                            conflicts[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert int(r.get(counter)) == 200
    r.close()


def redis_watch_error() -> type[Exception]:
    import redis

    return redis.WatchError


def test_leases_are_given_back(proxy, cluster) -> None:
    """Many clients WATCH, EXEC, DISCARD, or just leave: no backend connection is leaked."""
    def connections() -> int:
        total = 0
        for node in cluster.masters():
            with closing(node_client(node)) as c:
                total += len(c.client_list())
        return total

    for _ in range(3):  # leases opened by earlier tests are reused, not counted twice
        before = connections()
        conns = [RawConnection(proxy.port) for _ in range(30)]
        try:
            for i, conn in enumerate(conns):
                k = key(f"lease{i}", f"lease{i % 7}")
                assert conn(b"WATCH", k) == b"+OK\r\n"
                if i % 3 == 0:
                    assert conn.pipeline([A("MULTI"), A("SET", k, "1"), A("EXEC")])[-1] == (
                        b"*1\r\n+OK\r\n")
                elif i % 3 == 1:
                    assert conn.pipeline([A("MULTI"), A("DISCARD")])[-1] == b"+OK\r\n"
        finally:
            for conn in conns:
                conn.close()
    info = RawConnection(proxy.port)
    try:
        wait_until(lambda: b"leased_connections:0\r\n" in info(b"INFO", b"proxy"), 5,
                   "every lease given back")
    finally:
        info.close()
    assert connections() <= before


def test_the_lease_limit_is_a_clear_error(cluster) -> None:
    from tests.support import ProxyThread, proxy_config

    p = ProxyThread(proxy_config(cluster.seeds, cluster={"max_leases_per_node": 2}))
    p.start()
    conns = [RawConnection(p.port) for _ in range(3)]
    try:
        k = key("limited", "limit")
        assert conns[0](b"WATCH", k) == b"+OK\r\n"
        assert conns[1](b"WATCH", k) == b"+OK\r\n"
        assert conns[2](b"WATCH", k) == errors.LEASES_EXHAUSTED
        assert conns[2](b"GET", k) == b"$-1\r\n"  # the client goes on without a watch
        assert conns[0].pipeline([A("MULTI"), A("EXEC")])[-1] == b"*0\r\n"  # gives it back
        assert conns[2](b"WATCH", k) == b"+OK\r\n"
        stats = conns[2](b"INFO", b"proxy")
        assert b"leases_refused:1\r\n" in stats and b"leased_connections:2\r\n" in stats
    finally:
        for c in conns:
            c.close()
        p.stop()
