"""Pipelining: replies in exactly the order of the requests, whichever masters served them;
many clients at once; clients that vanish mid-pipeline; large values."""

from __future__ import annotations

import os
import socket
import threading

import hiredis
import redis

from rproxy.core.resp import encode_command
from rproxy.core.slots import key_slot
from tests.support import wait_until


def _read_replies(sock: socket.socket, n: int, timeout_s: float = 30) -> list[object]:
    sock.settimeout(timeout_s)
    reader = hiredis.Reader()
    out: list[object] = []
    while len(out) < n:
        data = sock.recv(1 << 20)
        assert data, f"connection closed after {len(out)} of {n} replies"
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            out.append(reply)
    return out


def test_redis_py_pipeline_order_across_masters(r: redis.Redis) -> None:
    keys = [f"pl:a:{i}" for i in range(1000)]
    assert len({key_slot(k.encode()) for k in keys}) > 500
    pipe = r.pipeline(transaction=False)
    for i, k in enumerate(keys):
        pipe.set(k, f"v{i}")
        pipe.get(k)
    results = pipe.execute()
    assert results[0::2] == [True] * len(keys)
    assert results[1::2] == [f"v{i}".encode() for i in range(len(keys))]


def test_deep_pipeline_in_one_write(proxy) -> None:
    """20 000 commands written at once: SET, GET, INCR and local PINGs interleaved."""
    n = 5000
    run = os.urandom(4).hex()
    cmds = []
    for i in range(n):
        k = f"pl:deep:{run}:{i}".encode()
        cmds += [encode_command([b"SET", k, b"%d" % i]), encode_command([b"GET", k]),
                 encode_command([b"INCR", k]), encode_command([b"PING"])]
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.sendall(b"".join(cmds))
        replies = _read_replies(s, 4 * n)
    for i in range(n):
        assert replies[4 * i : 4 * i + 4] == [b"OK", b"%d" % i, i + 1, b"PONG"], i


def test_many_concurrent_pipelined_clients(proxy) -> None:
    """30 clients x 20 pipelines of 100 commands each, every reply checked against its request."""
    errors: list[str] = []

    def worker(wid: int) -> None:
        try:
            c = proxy.client()
            for rnd in range(20):
                pipe = c.pipeline(transaction=False)
                vals = [f"{wid}:{rnd}:{j}" for j in range(100)]
                for j, v in enumerate(vals):
                    pipe.set(f"pl:mc:{wid}:{j}", v)
                    pipe.get(f"pl:mc:{wid}:{j}")
                got = pipe.execute()
                if got[1::2] != [v.encode() for v in vals]:
                    errors.append(f"worker {wid} round {rnd}: mismatched replies")
                    return
            c.close()
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(f"worker {wid}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]


def _backends_idle(proxy) -> bool:
    def check() -> bool:
        return all(not c.fifo for conns in proxy.server.cluster.conns.values() for c in conns)

    return bool(proxy.call(check))


def test_client_disconnect_mid_pipeline_keeps_backends_in_step(proxy, r: redis.Redis) -> None:
    big = b"x" * 20000
    for i in range(100):
        r.set(f"pl:dc:{i}", big)
    # Ask for ~2 MB x 30 of replies and hang up without reading any of them.
    burst = b"".join(encode_command([b"GET", f"pl:dc:{i % 100}".encode()]) for i in range(3000))
    for _ in range(30):
        with socket.create_connection(("127.0.0.1", proxy.port)) as s:
            s.sendall(burst)
    wait_until(lambda: _backends_idle(proxy), 30, "backend FIFOs to drain")
    # The shared backend connections are still in step: every reply goes to its request.
    pipe = r.pipeline(transaction=False)
    for i in range(200):
        pipe.set(f"pl:dc:after:{i}", i)
        pipe.get(f"pl:dc:after:{i}")
    got = pipe.execute()
    assert got[1::2] == [b"%d" % i for i in range(200)]
    assert r.get("pl:dc:7") == big


def test_half_closed_client_still_gets_its_replies(proxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.sendall(b"".join(encode_command([b"SET", b"pl:hc:%d" % i, b"v"]) for i in range(500)))
        s.shutdown(socket.SHUT_WR)
        replies = _read_replies(s, 500)
        assert replies == [b"OK"] * 500
        s.settimeout(10)
        assert s.recv(1) == b""  # then the proxy closes


def test_large_values(r: redis.Redis) -> None:
    value = os.urandom(1024) * (24 * 1024)  # 24 MiB
    assert r.set("pl:large", value)
    assert r.get("pl:large") == value
    assert r.strlen("pl:large") == len(value)
    r.delete("pl:large")


def test_pipeline_of_errors_and_values_keeps_order(r: redis.Redis) -> None:
    r.set("pl:err:{x}s", "str")
    pipe = r.pipeline(transaction=False)
    pipe.get("pl:err:{x}s")
    pipe.lpush("pl:err:{x}s", "a")  # WRONGTYPE from the backend
    pipe.execute_command("SELECT", "2")  # local error
    pipe.rename("pl:err:{x}s", "pl:err:other")  # CROSSSLOT, made by the proxy
    pipe.get("pl:err:{x}s")
    got = pipe.execute(raise_on_error=False)
    assert got[0] == b"str"
    assert isinstance(got[1], redis.ResponseError) and "WRONGTYPE" in str(got[1])
    assert isinstance(got[2], redis.ResponseError) and "SELECT is not allowed" in str(got[2])
    assert isinstance(got[3], redis.exceptions.ClusterCrossSlotError)
    assert got[4] == b"str"
