"""CLIENT KILL / REPLY / NO-EVICT / NO-TOUCH / LIST and INFO's sections through the proxy.

Differential where one Redis defines the bytes (CLIENT REPLY's dropped replies, CLIENT KILL's
errors and counts for a client that does not exist); against the proxy's own clients for what
only it knows (which of its clients a filter matches, the subscribed flag in CLIENT LIST); and
INFO's sections in Redis 7's order with the data figures combined over the masters.
"""

from __future__ import annotations

import socket
import time
import uuid

import pytest

from rproxy.core.resp import encode_command
from tests.support import RawConnection, node_client, raw_exchange, wait_until
from tests.support import argv as A
from tests.support import raw_pipeline as run

RUN = uuid.uuid4().hex[:10]
END = b"end-" + RUN.encode()


def key(name: str) -> str:
    return f"{{cc:{RUN}}}:{name}"


def _exchange(port: int, commands: list[list[bytes]]) -> bytes:
    """Everything the server answers to ``commands``, up to a final ECHO."""
    payload = b"".join(encode_command(c) for c in [*commands, A("ECHO", END)])
    got, _ = raw_exchange(port, payload, until=END + b"\r\n")
    return got


REPLY_CASES = {
    "skip": [A("SET", key("a"), "1"), A("CLIENT", "REPLY", "SKIP"), A("INCR", key("a")),
             A("GET", key("a"))],
    "off_then_on": [A("CLIENT", "REPLY", "OFF"), A("SET", key("b"), "1"), A("GET", key("b")),
                    A("NOSUCHCOMMAND"), A("CLIENT", "REPLY", "ON"), A("GET", key("b"))],
    "skip_while_off": [A("CLIENT", "REPLY", "OFF"), A("CLIENT", "REPLY", "SKIP"),
                       A("PING"), A("CLIENT", "REPLY", "ON"), A("PING")],
    "skip_then_off": [A("CLIENT", "REPLY", "SKIP"), A("CLIENT", "REPLY", "OFF"), A("PING"),
                      A("CLIENT", "REPLY", "ON")],
    "syntax": [A("CLIENT", "REPLY", "MAYBE"), A("CLIENT", "REPLY"), A("PING")],
    "pipelined_mget_and_mset_while_off": [
        A("CLIENT", "REPLY", "OFF"), A("MSET", key("x"), "1", key("y"), "2"),
        A("MGET", key("x"), key("y")), A("CLIENT", "REPLY", "ON"), A("MGET", key("x"), key("y"))],
}


@pytest.mark.parametrize("name", sorted(REPLY_CASES))
def test_client_reply_same_bytes_as_one_redis(name: str, proxy, standalone) -> None:
    commands = REPLY_CASES[name]
    assert _exchange(proxy.port, commands) == _exchange(standalone.port, commands)


def test_client_kill_errors_same_bytes_as_one_redis(proxy, standalone) -> None:
    commands = [A("CLIENT", "KILL", "10.9.9.9:1"), A("CLIENT", "KILL", "ID", "0"),
                A("CLIENT", "KILL", "ID", "x"), A("CLIENT", "KILL", "ID", "999999999"),
                A("CLIENT", "KILL", "TYPE", "nope"), A("CLIENT", "KILL", "USER", "nobody"),
                A("CLIENT", "KILL", "ADDR", "10.9.9.9:1", "SKIPME", "perhaps"),
                A("CLIENT", "KILL", "ADDR"), A("CLIENT", "KILL", "TYPE", "master"),
                A("CLIENT", "NO-EVICT", "on"), A("CLIENT", "NO-EVICT", "off"),
                A("CLIENT", "NO-EVICT", "x"), A("PING")]
    assert run(proxy.port, commands) == run(standalone.port, commands)


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_client_kill_by_id_addr_type_and_self(proxy) -> None:
    killer = RawConnection(proxy.port)
    victim = RawConnection(proxy.port)
    by_addr = RawConnection(proxy.port)
    subscriber = RawConnection(proxy.port)
    try:
        victim_id = int(victim("CLIENT", "ID")[1:-2])
        assert killer("CLIENT", "KILL", "ID", victim_id) == b":1\r\n"
        assert _closed(victim.sock)
        assert killer("CLIENT", "KILL", "ID", victim_id) == b":0\r\n"
        # the old form, by the address CLIENT LIST shows
        info = by_addr("CLIENT", "INFO").decode()
        addr = next(f for f in info.split() if f.startswith("addr=")).split("=", 1)[1]
        assert killer("CLIENT", "KILL", addr) == b"+OK\r\n"
        assert _closed(by_addr.sock)
        # TYPE pubsub: the subscribed clients only
        assert subscriber.pipeline([A("SUBSCRIBE", f"ch-{RUN}")])[0].startswith(b"*3")
        listing = killer("CLIENT", "LIST").decode()
        assert "flags=P" in listing and "sub=1" in listing, listing
        assert killer("CLIENT", "KILL", "TYPE", "pubsub") == b":1\r\n"
        assert _closed(subscriber.sock)
        # SKIPME no: the client kills itself, after its reply
        own = int(killer("CLIENT", "ID")[1:-2])
        assert killer("CLIENT", "KILL", "ID", own, "SKIPME", "no") == b":1\r\n"
        assert _closed(killer.sock)
    finally:
        for c in (killer, victim, by_addr, subscriber):
            c.close()


def test_client_list_shows_modes(proxy) -> None:
    watcher = RawConnection(proxy.port)
    other = RawConnection(proxy.port)
    try:
        watcher_id = int(watcher("CLIENT", "ID")[1:-2])
        watcher.pipeline([A("MULTI"), A("SET", key("m"), "1"), A("SET", key("m"), "2")])
        rows = other("CLIENT", "LIST").decode().splitlines()
        row = next(line for line in rows if line.startswith(f"id={watcher_id} "))
        assert " flags=x " in row and " multi=2 " in row, row
        assert f" laddr=127.0.0.1:{proxy.port} " in row, row
    finally:
        watcher.close()
        other.close()


def _headers(port: int) -> list[str]:
    text = run(port, [A("INFO")])[0].decode()
    return [line[2:].strip() for line in text.splitlines() if line.startswith("# ")]


def test_info_sections_in_redis_order(proxy, standalone) -> None:
    theirs, ours = _headers(standalone.port), _headers(proxy.port)
    common = [s for s in theirs if s in ours]
    assert [s for s in ours if s in common] == common
    assert {"Server", "Clients", "Memory", "Persistence", "Stats", "Replication", "CPU",
            "Errorstats", "Cluster", "Keyspace"} <= set(ours)


def test_info_memory_persistence_cpu_errorstats(proxy, cluster, r) -> None:
    memory = r.info("memory")
    masters = [node_client(m) for m in cluster.masters()]
    assert memory["used_memory"] >= max(m.info("memory")["used_memory"] for m in masters)
    assert memory["used_memory_human"][-1] in "BKMGTP"
    assert memory["maxmemory_policy"] == masters[0].info("memory")["maxmemory_policy"]
    assert r.info("persistence")["loading"] == 0
    cpu = r.info("cpu")
    assert cpu["used_cpu_user"] > 0
    r.set(key("str"), "x")
    with pytest.raises(Exception):
        r.lpush(key("str"), "y")
    stats = r.info("errorstats")
    assert stats["errorstat_WRONGTYPE"]["count"] >= 1
    assert not any(k in stats for k in ("errorstat_MOVED", "errorstat_ASK"))


def test_pubsub_clients_and_channels_in_info(proxy, r) -> None:
    sub = RawConnection(proxy.port)
    try:
        sub.pipeline([A("SUBSCRIBE", f"info-{RUN}"), A("PSUBSCRIBE", f"info-{RUN}*")])
        wait_until(lambda: r.info("clients")["pubsub_clients"] >= 1, 5, "a subscribed client")
        stats = r.info("stats")
        assert stats["pubsub_channels"] >= 1 and stats["pubsub_patterns"] >= 1
        assert r.info("proxy")["subscriber_connections"] >= 1
    finally:
        sub.close()
    wait_until(lambda: r.info("clients")["pubsub_clients"] == 0, 5, "no subscriber left")


def test_idle_timeout_spares_subscribers(cluster) -> None:
    from tests.support import ProxyThread, proxy_config
    with ProxyThread(proxy_config(cluster.seeds, timeouts={"client_idle_s": 0.5})) as p:
        sub = RawConnection(p.port)
        idle = RawConnection(p.port)
        try:
            sub.pipeline([A("SUBSCRIBE", f"idle-{RUN}")])
            idle("PING")
            time.sleep(1.5)
            assert _closed(idle.sock)
            assert p.client().publish(f"idle-{RUN}", "still here") == 1
            sub.sock.settimeout(5)
            assert b"still here" in sub.sock.recv(65536)
        finally:
            sub.close()
            idle.close()
