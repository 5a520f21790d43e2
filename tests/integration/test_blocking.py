"""Blocking commands (BLPOP, BRPOP, BLMOVE, BZPOPMIN, BLMPOP, XREAD BLOCK, ...) through the
proxy, each on a leased connection of its own: replies byte for byte as one Redis (with data
waiting, timing out, woken by another client's push), the order of a client's commands around
a blocking one, other clients not stalled by blocked ones, the op-timeout watchdog leaving a
long block alone, and a client that leaves while blocked (the node pops nothing for it, and
the lease is not leaked)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from rproxy.core import errors
from tests.support import ProxyThread, RawConnection, proxy_config, wait_until
from tests.support import argv as A
from tests.support import raw_pipeline as run

RUN = uuid.uuid4().hex[:10]


def key(name: str, tag: str = "b") -> str:
    return f"{{blk:{RUN}:{tag}}}:{name}"


CASES: dict[str, list[list[bytes]]] = {
    "blpop_with_data": [A("DEL", key("l")), A("RPUSH", key("l"), "a", "b"),
                        A("BLPOP", key("l"), "0"), A("BRPOP", key("l"), "0"), A("LLEN", key("l"))],
    "blpop_times_out": [A("DEL", key("e")), A("BLPOP", key("e"), "0.05"), A("PING")],
    "blpop_of_two_keys": [A("DEL", key("x"), key("y")), A("RPUSH", key("y"), "1"),
                          A("BLPOP", key("x"), key("y"), "1")],
    "pipelined_order_around_a_block": [
        A("DEL", key("o")), A("LPUSH", key("o"), "v"), A("LPOP", key("o")),
        A("BLPOP", key("o"), "0.05"), A("LPUSH", key("o"), "w"), A("BLPOP", key("o"), "0")],
    "blmove_and_brpoplpush": [
        A("DEL", key("s"), key("d")), A("RPUSH", key("s"), "1", "2"),
        A("BLMOVE", key("s"), key("d"), "LEFT", "RIGHT", "0"),
        A("BRPOPLPUSH", key("s"), key("d"), "0"), A("LRANGE", key("d"), "0", "-1")],
    "sorted_sets": [A("DEL", key("z")), A("ZADD", key("z"), "1", "a", "2", "b"),
                    A("BZPOPMIN", key("z"), "0"), A("BZPOPMAX", key("z"), "0"),
                    A("BZPOPMIN", key("z"), "0.05")],
    "blmpop_bzmpop": [A("DEL", key("m"), key("mz")), A("RPUSH", key("m"), "1", "2", "3"),
                      A("BLMPOP", "0", "1", key("m"), "LEFT", "COUNT", "2"),
                      A("ZADD", key("mz"), "1", "a"), A("BZMPOP", "0", "1", key("mz"), "MIN")],
    "xread_block": [A("DEL", key("st")), A("XADD", key("st"), "1-1", "f", "v"),
                    A("XREAD", "BLOCK", "0", "STREAMS", key("st"), "0"),
                    A("XREAD", "BLOCK", "50", "STREAMS", key("st"), "$")],
    "errors": [A("BLPOP", key("l")), A("BLPOP", key("l"), "x"), A("SET", key("str"), "1"),
               A("BLPOP", key("str"), "0"), A("BLPOP", key("l"), "-1")],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_bytes_as_one_redis(name: str, proxy, standalone) -> None:
    commands = CASES[name]
    assert run(proxy.port, commands) == run(standalone.port, commands)


def test_keys_in_two_slots_are_crossslot(proxy) -> None:
    assert run(proxy.port, [A("BLPOP", key("a", "one"), key("b", "two"), "0")]) == [
        errors.CROSSSLOT]


def test_woken_by_another_clients_push(proxy) -> None:
    k = key("wake")
    blocked = RawConnection(proxy.port)
    pusher = RawConnection(proxy.port)
    try:
        blocked.sock.sendall(b"*3\r\n$5\r\nBLPOP\r\n$%d\r\n%s\r\n$1\r\n0\r\n"
                             % (len(k), k.encode()))
        time.sleep(0.2)  # let it block (not a synchronisation: the reply is awaited below)
        assert pusher(b"RPUSH", k, b"job") == b":1\r\n"
        assert blocked.framer.feed(blocked.sock.recv(4096)) == [
            b"*2\r\n$%d\r\n%s\r\n$3\r\njob\r\n" % (len(k), k.encode())]
    finally:
        blocked.close()
        pusher.close()


def test_blocked_clients_do_not_stall_the_others(proxy) -> None:
    """50 clients blocked on empty lists; meanwhile other clients' commands are answered
    (on the shared connections) and the blocked ones are woken one by one."""
    keys = [key(f"q{i}", f"q{i % 5}") for i in range(50)]
    blocked = [RawConnection(proxy.port) for _ in keys]
    other = RawConnection(proxy.port)
    try:
        for conn, k in zip(blocked, keys):
            conn.sock.sendall(b"*3\r\n$5\r\nBLPOP\r\n$%d\r\n%s\r\n$1\r\n0\r\n"
                              % (len(k), k.encode()))
        info = RawConnection(proxy.port)
        wait_until(lambda: b"leased_connections:50\r\n" in info(b"INFO", b"proxy"), 10,
                   "50 leased connections")
        info.close()
        for i in range(500):  # answered while 50 are blocked
            assert other(b"SET", key("other"), str(i)) == b"+OK\r\n"
        for conn, k in zip(blocked, keys):
            assert other(b"RPUSH", k, b"x") == b":1\r\n"
            reply = conn.framer.feed(conn.sock.recv(4096))
            assert reply == [b"*2\r\n$%d\r\n%s\r\n$1\r\nx\r\n" % (len(k), k.encode())]
    finally:
        for conn in blocked:
            conn.close()
        other.close()


def test_a_long_block_outlives_op_timeout_and_a_leaving_client_pops_nothing(cluster) -> None:
    p = ProxyThread(proxy_config(cluster.seeds, timeouts={"op_timeout_s": 0.3}))
    p.start()
    k, gone = key("long"), key("gone")
    try:
        waiter, pusher = RawConnection(p.port), RawConnection(p.port)
        waiter.sock.sendall(b"*3\r\n$5\r\nBLPOP\r\n$%d\r\n%s\r\n$1\r\n0\r\n" % (len(k), k.encode()))
        leaver = RawConnection(p.port)
        leaver.sock.sendall(b"*3\r\n$5\r\nBLPOP\r\n$%d\r\n%s\r\n$1\r\n0\r\n"
                            % (len(gone), gone.encode()))
        time.sleep(1.0)  # more than 3 x op_timeout_s while blocked (the watchdog must wait)
        leaver.close()  # its lease is closed: the node ends that block
        wait_until(lambda: b"leased_connections:1\r\n" in pusher(b"INFO", b"proxy"), 5,
                   "the leaver's lease dropped")
        assert pusher(b"RPUSH", gone, b"kept") == b":1\r\n"
        assert pusher(b"LLEN", gone) == b":1\r\n"  # nobody popped it for the gone client
        assert pusher(b"RPUSH", k, b"late") == b":1\r\n"
        assert waiter.framer.feed(waiter.sock.recv(4096)) == [
            b"*2\r\n$%d\r\n%s\r\n$4\r\nlate\r\n" % (len(k), k.encode())]
        wait_until(lambda: b"leased_connections:0\r\n" in pusher(b"INFO", b"proxy"), 5,
                   "every lease given back")
        waiter.close()
        pusher.close()
    finally:
        p.stop()


def test_a_worker_queue_with_several_producers(proxy) -> None:
    """A BLPOP worker fed by 4 producers through the proxy gets every job exactly once."""
    import redis

    q = key("jobs", "queue")
    got: list[bytes] = []

    def worker() -> None:
        c = redis.Redis(port=proxy.port, protocol=2)
        try:
            while len(got) < 200:
                item = c.blpop([q], timeout=5)
                if item is None:
                    return
                got.append(item[1])
        finally:
            c.close()

    def producer(n: int) -> None:
        c = redis.Redis(port=proxy.port, protocol=2)
        try:
            for i in range(50):
                c.rpush(q, f"{n}:{i}")
        finally:
            c.close()

    threads = [threading.Thread(target=worker)] + [
        threading.Thread(target=producer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got) == sorted(f"{n}:{i}".encode() for n in range(4) for i in range(50))


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("reason", [None, "TIMEOUT", "ERROR"])
def test_client_unblock_as_one_redis(reason: str | None, protocol: int, proxy,
                                     standalone) -> None:
    """CLIENT UNBLOCK <id of a client blocked through the proxy>: the same replies as on one
    Redis, for the unblocker (a RESP2 client) and for the unblocked client (RESP2 or RESP3)."""
    outcomes = []
    for port in (standalone.port, proxy.port):
        k = key(f"unblock-{reason}-{protocol}-{port}")
        blocked, other = RawConnection(port), RawConnection(port)
        try:
            if protocol == 3:
                blocked(b"HELLO", b"3")
            client_id = int(blocked(b"CLIENT", b"ID")[1:-2])
            assert other(b"CLIENT", b"UNBLOCK", str(client_id)) == b":0\r\n"  # not blocked
            blocked.sock.sendall(b"*3\r\n$5\r\nBLPOP\r\n$%d\r\n%s\r\n$1\r\n0\r\n"
                                 % (len(k), k.encode()))
            extra = [reason] if reason else []
            got = wait_until(lambda: other(b"CLIENT", b"UNBLOCK", str(client_id), *extra)
                             == b":1\r\n", 5, "the block to start")
            assert got
            outcomes.append(blocked.framer.feed(blocked.sock.recv(4096)))
        finally:
            blocked.close()
            other.close()
    assert outcomes[0] == outcomes[1]


def test_client_unblock_errors_as_one_redis(proxy, standalone) -> None:
    commands = [A("CLIENT", "UNBLOCK", "1", "SOON"), A("CLIENT", "UNBLOCK", "x"),
                A("CLIENT", "UNBLOCK", "x", "SOON"), A("CLIENT", "UNBLOCK", "1", "ERROR", "y"),
                A("CLIENT", "UNBLOCK"), A("CLIENT", "UNBLOCK", "999999")]
    assert run(proxy.port, commands) == run(standalone.port, commands)
