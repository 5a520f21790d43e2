"""The PROXY command family against the real cluster: HELP, INFO, NODES, SLOTS, CONFIG GET and
EXPLAIN (which must tell the truth about routing, and run nothing)."""

from __future__ import annotations

import uuid

import pytest
import redis

from rproxy.core.slots import key_slot
from tests.support import keys_in_slots

RUN = uuid.uuid4().hex[:8]
A, B, C = keys_in_slots(3, f"adm:{RUN}")


def explain(r: redis.Redis, *argv: str) -> dict[str, object]:
    flat = r.execute_command("PROXY", "EXPLAIN", *argv)
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


def node_of(cluster, key: str) -> bytes:
    return f"127.0.0.1:{cluster.master_of_slot(key_slot(key.encode())).port}".encode()


def test_help_info_nodes_slots(r: redis.Redis, cluster) -> None:
    lines = r.execute_command("PROXY", "HELP")
    assert lines[0].startswith(b"PROXY <subcommand>") and b"EXPLAIN <command> [<arg> ...]" in lines
    info = r.execute_command("PROXY", "INFO").decode()
    assert "slots_covered:16384" in info and "masters:3" in info and "nodes:6" in info
    nodes = r.execute_command("PROXY", "NODES")
    assert len(nodes) == len(cluster.nodes)
    masters = [n for n in nodes if n[1] == b"master"]
    assert sorted(n[0] for n in masters) == sorted(
        f"127.0.0.1:{m.port}".encode() for m in cluster.masters())
    assert all(n[4] == b"ok" for n in nodes)
    assert all(n[2] in {m[0] for m in masters} for n in nodes if n[1] == b"replica")
    slots = r.execute_command("PROXY", "SLOTS")
    assert slots[0][0] == 0 and slots[-1][1] == 16383
    assert all(a[1] + 1 == b[0] for a, b in zip(slots, slots[1:]))  # contiguous
    assert len(slots[0][3]) == 1  # one replica each
    with pytest.raises(redis.ResponseError, match="unknown subcommand 'NOPE'. Try PROXY HELP"):
        r.execute_command("PROXY", "NOPE")


def test_config_get(r: redis.Redis) -> None:
    got = r.execute_command("PROXY", "CONFIG", "GET", "cluster.failover_*")
    assert got == [b"cluster.failover_hold_s", b"30.0"]
    everything = r.execute_command("PROXY", "CONFIG", "GET", "*")
    keys = everything[::2]
    assert b"proxy.listen" in keys and b"limits.max_clients" in keys and b"metrics.listen" in keys


def test_explain_tells_the_truth_and_runs_nothing(r: redis.Redis, cluster) -> None:
    got = explain(r, "GET", A)
    assert got == {"command": b"get", "keys": 1, "slots": [key_slot(A.encode())],
                   "nodes": [node_of(cluster, A)], "route": b"the keys' slot's master",
                   "connection": b"shared"}
    mget = explain(r, "MGET", A, B, C)
    assert mget["keys"] == 3 and sorted(mget["slots"]) == sorted(  # type: ignore[arg-type]
        key_slot(k.encode()) for k in (A, B, C))
    assert mget["route"] == b"split per slot, the replies merged in order"
    assert set(mget["nodes"]) == {node_of(cluster, k) for k in (A, B, C)}  # type: ignore[arg-type]
    assert explain(r, "SUNION", A, B)["route"].startswith(b"emulated: per-key reads")
    assert explain(r, "RENAME", A, B)["route"].startswith(b"refused: CROSSSLOT")
    assert explain(r, "BLPOP", A, "0") == {
        "command": b"blpop", "keys": 1, "slots": [key_slot(A.encode())],
        "nodes": [node_of(cluster, A)], "route": b"the keys' slot's master, blocking",
        "connection": b"dedicated (leased)"}
    assert explain(r, "BLPOP", A, B, "0")["route"] == b"refused: CROSSSLOT"
    assert explain(r, "DBSIZE")["route"] == b"sent to every master, the replies merged"
    assert explain(r, "PING")["route"] == b"answered by rproxy"
    assert explain(r, "CLUSTER", "NODES")["route"].startswith(b"refused: ")
    assert explain(r, "NOSUCHCMD", "x")["route"].startswith(b"unknown to the command table")
    r.delete(A)
    explain(r, "SET", A, "v")
    assert r.get(A) is None  # explained, not run


def test_explain_under_the_emulations(emulating) -> None:
    r = emulating.client()
    assert explain(r, "RENAME", A, B)["route"] == b"emulated in steps (not atomic)"
    assert explain(r, "BLPOP", A, B, "0")["connection"] == b"dedicated (one per slot)"


def test_resp3_maps(proxy) -> None:
    r = proxy.client(protocol=3)
    got = r.execute_command("PROXY", "EXPLAIN", "GET", A)
    assert isinstance(got, dict) and got[b"route"] == b"the keys' slot's master"
    assert isinstance(r.execute_command("PROXY", "CONFIG", "GET", "proxy.*"), dict)


def test_a_skewed_load_shows_its_slot_and_key_first(r: redis.Redis, cluster) -> None:
    """PROXY HOTSLOTS / HOTKEYS: sampled over the window, hottest first, with the owner."""
    hot_key = f"hot:{RUN}"
    for i in range(400):
        r.get(hot_key)
        if i % 4 == 0:
            r.get(f"cool:{RUN}:{i}")
    rows = r.execute_command("PROXY", "HOTSLOTS", "3")
    assert rows[0][0] == key_slot(hot_key.encode()) and rows[0][1] >= 400
    assert rows[0][2] == node_of(cluster, hot_key)
    assert len(rows) == 3 and rows[0][1] > rows[1][1]
    keys = r.execute_command("PROXY", "HOTKEYS", "1")
    assert keys == [[hot_key.encode(), keys[0][1]]] and keys[0][1] >= 400 // 16
    with pytest.raises(redis.ResponseError, match="non-negative integer"):
        r.execute_command("PROXY", "HOTSLOTS", "-1")


def test_config_set_of_a_runtime_key_and_clients(cluster) -> None:
    """PROXY CONFIG SET changes a runtime key at once (as SIGHUP does); other keys are refused
    naming those that can change; PROXY CLIENTS lists the connections."""
    from tests.support import ProxyThread, proxy_config

    with ProxyThread(proxy_config(cluster.seeds)) as p:
        r = p.client()
        r.set(A, "v")
        with pytest.raises(redis.ResponseError, match="hash to the same slot"):
            r.rename(A, B)
        assert r.execute_command("PROXY", "CONFIG", "SET", "commands.cross_slot_writes",
                                 "emulate") == b"OK"
        assert r.rename(A, B)
        assert r.execute_command("PROXY", "CONFIG", "GET", "commands.cross_slot_writes") == [
            b"commands.cross_slot_writes", b"emulate"]
        with pytest.raises(redis.ResponseError, match="proxy.listen: not a key that can change"):
            r.execute_command("PROXY", "CONFIG", "SET", "proxy.listen", "127.0.0.1:1")
        with pytest.raises(redis.ResponseError, match="expected refuse or emulate"):
            r.execute_command("PROXY", "CONFIG", "SET", "commands.cross_slot_writes", "maybe")
        assert r.execute_command("PROXY", "CONFIG", "SET", "limits.max_clients", "7") == b"OK"
        assert r.info("clients")["maxclients"] == 7
        lines = r.execute_command("PROXY", "CLIENTS").decode().splitlines()
        assert len(lines) >= 1 and all(line.startswith("id=") for line in lines)


def test_info_hotslots_section(r: redis.Redis) -> None:
    key = f"infohot:{RUN}"
    for _ in range(1500):  # (hotter than what other tests of this module sampled)
        r.get(key)
    info = r.info("hotslots")
    assert info["hot_slot_0"]["slot"] == key_slot(key.encode())
    assert info["hot_slot_0"]["samples"] >= 1500
    assert "hot_slot_0" not in r.info()  # not a default section
