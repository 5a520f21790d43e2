"""Limits and timeouts: admission, idle clients, a hung node, graceful shutdown."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import redis

from rproxy.core.resp import encode_command
from rproxy.core.slots import key_slot
from tests.support import ProxyThread, node_client, proxy_config, raw_exchange, wait_until


def test_max_clients(cluster) -> None:
    with ProxyThread(proxy_config(cluster.seeds, limits={"max_clients": 2})) as p:
        a, b = p.client(), p.client()
        assert a.ping() and b.ping()
        got, closed = raw_exchange(p.port, b"PING\r\n", expect_close=True)
        assert got == b"-ERR max number of clients reached\r\n" and closed
        assert a.ping() and b.ping()  # the admitted clients are unaffected
        b.close()
        wait_until(lambda: len(p.server.sessions) == 1, 5, "the slot to free up")
        assert p.client().ping()


def test_idle_clients_are_closed(cluster) -> None:
    with ProxyThread(proxy_config(cluster.seeds, timeouts={"client_idle_s": 0.3})) as p:
        with socket.create_connection(("127.0.0.1", p.port)) as s:
            s.settimeout(5)
            t0 = time.monotonic()
            assert s.recv(1) == b""  # closed by the proxy
            # client_idle_s is honoured to within the 0.1 s housekeeping tick
            assert 0.15 < time.monotonic() - t0 < 2.0
        busy = p.client()
        for _ in range(6):  # a client that keeps talking stays
            assert busy.ping()
            time.sleep(0.1)


def _master_and_key(cluster, r: redis.Redis, other: bool = False):
    """A key owned by the first master (or by another one)."""
    first = cluster.masters()[0]
    for i in range(10000):
        key = f"lim:{i}"
        owner = cluster.master_of_slot(key_slot(key.encode()))
        if (owner.port == first.port) != other:
            return first, key
    raise AssertionError("no key found")


def test_hung_node_times_out_and_others_are_unaffected(cluster) -> None:
    cfg = proxy_config(cluster.seeds, timeouts={"op_timeout_s": 0.5})
    with ProxyThread(cfg) as p:
        r = p.client()
        node, slow_key = _master_and_key(cluster, r)
        _, fast_key = _master_and_key(cluster, r, other=True)
        r.set(slow_key, "1")
        r.set(fast_key, "2")
        # Hang the node for 1.5 s (below the 2 s cluster-node-timeout: no failover).
        hang = threading.Thread(target=lambda: node_client(node, socket_timeout=10)
                                .execute_command("DEBUG", "SLEEP", "1.5"))
        hang.start()
        time.sleep(0.1)  # let DEBUG SLEEP start (no reply comes until it ends)
        t0 = time.monotonic()
        with pytest.raises(redis.ResponseError, match="rproxy: request timed out"):
            r.get(slow_key)
        waited = time.monotonic() - t0
        assert 0.4 < waited < 1.4, waited
        other = p.client()
        t1 = time.monotonic()
        assert other.get(fast_key) == b"2"  # another shard answers at once
        assert time.monotonic() - t1 < 0.3
        hang.join(10)
        # The node is back: a fresh connection serves it again.
        wait_until(lambda: r.get(slow_key) == b"1", 10, "the node to serve again")


def test_graceful_shutdown_answers_in_flight_requests(cluster) -> None:
    p = ProxyThread(proxy_config(cluster.seeds, timeouts={"shutdown_grace_s": 5.0})).start()
    n = 100000  # ~3.5 MB: more than the socket buffers, so some is unread at shutdown
    burst = b"".join(encode_command([b"SET", b"lim:sd:%d" % i, b"v"]) for i in range(n))
    with socket.create_connection(("127.0.0.1", p.port)) as s:
        s.sendall(burst)
        p.call(p.server.shutdown)
        got = b""
        s.settimeout(10)
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
    p.stop()
    # Every reply is whole; nothing was cut in the middle of a frame.
    assert got == b"+OK\r\n" * (got.count(b"+OK\r\n"))
    assert got.count(b"+OK\r\n") == n
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", p.port), timeout=1).close()


def test_a_subscriber_over_the_soft_output_limit_for_too_long_is_closed(cluster) -> None:
    """limits.pubsub_output_buffer_soft_limit / _soft_s (Redis's client-output-buffer-limit
    pubsub <hard> <soft> <seconds>): a subscriber that does not read is closed once its unsent
    messages stay over the soft limit for the seconds, before the hard limit."""
    cfg = proxy_config(cluster.seeds, limits={"pubsub_output_buffer_soft_limit": 256 * 1024,
                                              "pubsub_output_buffer_soft_s": 0.5})
    with ProxyThread(cfg) as p:
        channel = f"soft:{time.time_ns()}"
        sub = socket.create_connection(("127.0.0.1", p.port))
        sub.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sub.sendall(encode_command([b"SUBSCRIBE", channel.encode()]))
        wait_until(lambda: p.server.stats.get("total_connections_received") >= 1 and any(
            s.client.subscribed for s in p.server.sessions.values()), 5, "subscribed")
        r = p.client()
        message = b"m" * 100_000
        deadline = time.monotonic() + 10
        while len(p.server.sessions) == 2 and time.monotonic() < deadline:
            r.publish(channel, message)  # ~2 MB/s: far below the 32 MiB hard limit
            time.sleep(0.05)
        assert len(p.server.sessions) == 1, "the slow subscriber is still open"
        assert r.ping()  # the publisher is unaffected
        sub.close()


def test_the_inline_limit_is_configurable(cluster) -> None:
    with ProxyThread(proxy_config(cluster.seeds, limits={"max_inline_len": 2048})) as p:
        got, closed = raw_exchange(p.port, b"SET k " + b"v" * 3000, expect_close=True)
        assert got == b"-ERR Protocol error: too big inline request\r\n" and closed
        got, _ = raw_exchange(p.port, b"PING " + b"x" * 1000 + b"\r\n", until=b"\r\n")
        assert got.startswith(b"$1000\r\n")  # within it: served
