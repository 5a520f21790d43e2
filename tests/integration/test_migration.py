"""Live slot migration under load: MIGRATING/IMPORTING set by hand, keys moved with MIGRATE,
reads and writes through the proxy during and after the move, zero errors for the client.

ASK must be followed with ASKING on the same connection, without changing the slot map; once
the slot is assigned to the new owner, MOVED must update the map; the client sees neither.
"""

from __future__ import annotations

import os
import threading
import time

import redis

from rproxy.core.slots import key_slot
from tests.support import node_client, wait_until


def _myid(node) -> str:
    return node_client(node).execute_command("CLUSTER", "MYID").decode()


def _migrate(cluster, slot: int, source, target, batch: int, pause_s: float) -> None:
    """Redis's resharding procedure (redis-cli --cluster reshard does the same steps)."""
    src, dst = node_client(source), node_client(target)
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _myid(source))
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _myid(target))
    while True:
        keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
        if not keys:
            break
        src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
        time.sleep(pause_s)  # let the load hit the half-migrated slot (not a synchronisation)
    for node in [target, source] + [m for m in cluster.masters() if m not in (source, target)]:
        node_client(node).execute_command("CLUSTER", "SETSLOT", slot, "NODE", _myid(target))


def _migrate_under_load(load, stop: threading.Event, ops: list[int], errors: list[str],
                        cluster, slot: int, source, target, batch: int) -> int:
    """Run ``load`` in a thread while the slot moves, and a while after; the ops count when
    the move was done."""
    t = threading.Thread(target=load)
    t.start()
    try:
        wait_until(lambda: ops[0] >= 3, 20, "load to start")
        _migrate(cluster, slot, source, target, batch=batch, pause_s=0.05)
        moved_at = ops[0]
        wait_until(lambda: ops[0] >= moved_at + 20 or errors, 30, "load after the move")
    finally:
        stop.set()
        t.join(30)
    return moved_at


def _other_master(cluster, node):
    return next(m for m in cluster.masters() if m.port != node.port)


def test_live_migration_under_load_is_invisible(proxy, cluster) -> None:
    tag = f"{{mig-{os.urandom(3).hex()}}}"
    slot = key_slot(tag[1:-1].encode())
    keys = [f"mig:{tag}:{i}" for i in range(120)]
    r = proxy.client()
    for k in keys:
        r.set(k, 0)
    source = cluster.master_of_slot(slot)
    target = _other_master(cluster, source)

    expected = dict.fromkeys(keys, 0)
    errors: list[str] = []
    ops = [0]
    stop = threading.Event()

    def load() -> None:
        c = proxy.client()
        while not stop.is_set():
            try:
                pipe = c.pipeline(transaction=False)
                for k in keys:
                    pipe.incr(k)
                pipe.get(keys[0])
                pipe.set(f"mig:{tag}:new:{ops[0]}", "x")  # new keys: ASK to the importing node
                got = pipe.execute()
            except redis.RedisError as exc:
                errors.append(repr(exc))
                return
            for k, v in zip(keys, got):
                expected[k] += 1
                if v != expected[k]:
                    errors.append(f"{k}: got {v}, expected {expected[k]}")
            ops[0] += 1

    moved_at = _migrate_under_load(load, stop, ops, errors, cluster, slot, source, target, 10)
    assert not errors, errors[:5]
    assert ops[0] > moved_at
    # The data is on the new owner, with every increment counted once.
    assert cluster.master_of_slot(slot).port == target.port
    direct = node_client(target)
    for k in keys:
        assert int(direct.get(k)) == expected[k]
    assert r.get(keys[5]) == str(expected[keys[5]]).encode()


def test_multi_key_on_split_slot_retries_then_surfaces(proxy, cluster) -> None:
    """TRYAGAIN (keys of one multi-key command on both sides of a migration) is retried
    within the redirect budget, then surfaced as an error that names no backend; once the
    migration completes the same command succeeds."""
    tag = f"{{split-{os.urandom(3).hex()}}}"
    slot = key_slot(tag[1:-1].encode())
    a, b = f"s:{tag}:a", f"s:{tag}:b"
    r = proxy.client()
    r.mset({a: "1", b: "2"})
    stats = proxy.server.stats
    asks, tries, moves = stats.ask_redirects, stats.tryagain_retries, stats.moved_redirects
    source = cluster.master_of_slot(slot)
    target = _other_master(cluster, source)
    src, dst = node_client(source), node_client(target)
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _myid(source))
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _myid(target))
    src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", a)
    assert r.get(a) == b"1"  # ASK, followed transparently
    assert stats.ask_redirects > asks  # and counted (rproxy_ask_redirects_total)
    assert r.get(b) == b"2"  # still on the source
    try:
        r.mget(a, b)
        raise AssertionError("MGET over a split slot cannot succeed")
    except redis.ResponseError as exc:
        assert "too many redirects" in str(exc)
        assert str(source.port) not in str(exc) and str(target.port) not in str(exc)
    assert stats.tryagain_retries > tries
    src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", b)
    for node in [target, source] + [m for m in cluster.masters() if m not in (source, target)]:
        node_client(node).execute_command("CLUSTER", "SETSLOT", slot, "NODE", _myid(target))
    refreshes = stats.slotmap_refreshes
    assert r.mget(a, b) == [b"1", b"2"]
    assert stats.moved_redirects > moves or stats.slotmap_refreshes > refreshes  # (a refresh
    # may have read the new owner first)


def test_emulated_transactions_over_a_migrating_slot(cluster) -> None:
    """Emulated transactions over two slots while one of them is resharded: each EXEC's block
    for the moving slot follows ASK (with ASKING) and MOVED as a whole, the other slot's block
    runs where it is; the client sees no redirect and no error, and every increment counts
    once, on the new owner."""
    from tests.support import ProxyThread, proxy_config

    tag = f"{{txmig-{os.urandom(3).hex()}}}"
    slot = key_slot(tag[1:-1].encode())
    keys = [f"m:{tag}:{i}" for i in range(40)]
    run = os.urandom(3).hex()
    other = next(k for k in (f"o:{run}:{i}" for i in range(1000)) if key_slot(k.encode()) != slot)
    source = cluster.master_of_slot(slot)
    target = _other_master(cluster, source)
    cfg = proxy_config(cluster.seeds, commands={"cross_slot_transactions": "emulate"})
    with ProxyThread(cfg) as p:
        r = p.client()
        r.delete(other, *keys)
        errors: list[str] = []
        ops = [0]
        stop = threading.Event()

        def load() -> None:
            c = p.client()
            while not stop.is_set():
                k = keys[ops[0] % len(keys)]
                try:
                    with c.pipeline() as pipe:  # MULTI ... EXEC over two slots
                        got = pipe.incr(k).incr(other).execute()
                except redis.RedisError as exc:
                    errors.append(repr(exc))
                    return
                ops[0] += 1
                if got[1] != ops[0]:
                    errors.append(f"{other}: got {got[1]}, expected {ops[0]}")

        _migrate_under_load(load, stop, ops, errors, cluster, slot, source, target, 5)
        assert not errors, errors[:5]
        assert cluster.master_of_slot(slot).port == target.port
        direct = node_client(target)
        assert sum(int(direct.get(k) or 0) for k in keys) == ops[0] == int(r.get(other))
