"""SCAN through the proxy while slots move between masters (README: "During resharding, every
key present for the whole scan is returned at least once"), and exactly once on a stable
cluster.

rproxy's cluster-wide cursor is ``node_cursor << 22 | epoch << 14 | anchor``: ``anchor`` is the
lowest slot of the master being scanned, masters are visited in the order of their lowest slot,
and a cursor made before the slot map changed starts the scan again from the first master. The
resharding test starts a full iteration (COUNT 20), lets it get into the middle of the second
master in that order, then migrates slots by hand (SETSLOT IMPORTING/MIGRATING, MIGRATE in small
batches with SCAN rounds in between, SETSLOT NODE on every master, target first), makes the
proxy learn the new map, and finishes the iteration. Every one of the run's keys exists for the
whole scan (MIGRATE moves a key, it never disappears), so every one must have been returned.

The masters are called M0, M1, M2 in scan order (lowest slot ascending), from CLUSTER SLOTS at
the start of the test: the shared cluster may have been resharded by earlier tests. The scan is
inside M1 when the slots move. Scenarios:

* ``anchor_to_scanned_master``: M1's lowest slot (its anchor) moves to M0, plus one slot
  M0 -> M2 and one non-anchor slot M1 -> M2. The scan must go back to M0.
* ``anchor_to_unscanned_master``: M1's lowest slot moves to M2, which then has it as its own
  lowest slot.
* ``slot_to_scanned_master``: a slot with keys moves from M2 (not scanned yet) to M0 (already
  scanned).

Every slot is moved back afterwards and the cluster must be healthy and agree on one map, so
later tests see the layout they expect.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass

import pytest
import redis

from rproxy.core.slots import SLOTS, key_slot
from tests.support import node_client, wait_until

COUNT = 20
N_KEYS = 3000
PER_MOVED_SLOT = 50  # keys hash-tagged into each slot that may move
MIGRATE_BATCH = 10
MAX_INTERLEAVED_ROUNDS = 15
CURSOR_RE = re.compile(rb"0|[1-9][0-9]*")
TEST_BUDGET_S = 25.0


# -- cluster helpers ---------------------------------------------------------------------------
def _raw(client: redis.Redis) -> redis.Redis:
    client.response_callbacks.clear()  # replies exactly as they came off the wire
    return client


def _myid(node) -> str:
    with closing(node_client(node)) as c:
        return c.execute_command("CLUSTER", "MYID").decode()


def _owners(cluster) -> list[int | None]:
    """Slot -> port of its master, per CLUSTER SLOTS of the first master."""
    owner: list[int | None] = [None] * SLOTS
    with closing(_raw(node_client(cluster.masters()[0]))) as c:
        for row in c.execute_command("CLUSTER", "SLOTS"):
            for slot in range(int(row[0]), int(row[1]) + 1):
                owner[slot] = int(row[2][1])
    return owner


@dataclass
class Master:
    node: object
    port: int
    slots: list[int]  # every slot it owns, ascending

    @property
    def anchor(self) -> int:
        return self.slots[0]


def _layout(cluster) -> list[Master]:
    """The masters in SCAN order: ascending by the lowest slot each owns."""
    owner = _owners(cluster)
    assert None not in owner, "the shared cluster does not cover every slot"
    by_port: dict[int, list[int]] = {}
    for slot, port in enumerate(owner):
        by_port.setdefault(port, []).append(slot)  # type: ignore[arg-type]
    masters = [Master(cluster.node_by_port(p), p, s) for p, s in by_port.items()]
    return sorted(masters, key=lambda m: m.anchor)


def _migrate(cluster, slot: int, source, target,
             between: Callable[[], None] = lambda: None) -> None:
    """Redis's resharding procedure, ``between()`` after every MIGRATE batch."""
    src_id, dst_id = _myid(source), _myid(target)
    with closing(node_client(source)) as src, closing(node_client(target)) as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while True:
            keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, MIGRATE_BATCH)
            if not keys:
                break
            src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
            between()
    others = [m for m in cluster.masters() if m.port not in (source.port, target.port)]
    for node in [target, source, *others]:  # the new owner first
        with closing(node_client(node)) as c:
            c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)


def _sync_proxy(proxy, cluster, timeout_s: float = 15) -> None:
    """Wait until the cluster agrees on one map, then until the proxy has installed it."""
    cluster.wait_ok()
    want = _owners(cluster)
    pcluster = proxy.server.cluster

    def synced() -> bool:
        proxy.call(pcluster.request_refresh)
        slotmap = proxy.call(lambda: pcluster.slotmap)
        return slotmap is not None and [o[1] if o else None for o in slotmap.owner] == want

    wait_until(synced, timeout_s, "the proxy to install the cluster's slot map")


def _tags_for(slots: set[int], run: str) -> dict[int, str]:
    """A hash tag per slot that hashes to it."""
    found: dict[int, str] = {}
    j = 0
    while len(found) < len(slots):
        tag = f"{run}.{j}"
        s = key_slot(tag.encode())
        if s in slots and s not in found:
            found[s] = tag
        j += 1
        assert j < 5_000_000
    return found


def _write(r: redis.Redis, keys: list[str]) -> None:
    for i in range(0, len(keys), 500):
        pipe = r.pipeline(transaction=False)
        for k in keys[i:i + 500]:
            pipe.set(k, "v")
        assert all(pipe.execute())


def _delete(r: redis.Redis, keys: list[str]) -> None:
    for i in range(0, len(keys), 500):
        pipe = r.pipeline(transaction=False)
        for k in keys[i:i + 500]:
            pipe.unlink(k)
        pipe.execute()


# -- the scan ----------------------------------------------------------------------------------
class Scan:
    """One full SCAN iteration through the proxy, one round per ``step()``, checked as it goes:
    no error, a plain non-negative integer cursor, a bounded number of rounds."""

    def __init__(self, client: redis.Redis, match: str, max_rounds: int, deadline: float):
        self.client = client
        self.match = match
        self.max_rounds = max_rounds
        self.deadline = deadline
        self.cursor = b"0"
        self.rounds = 0
        self.done = False
        self.seen: Counter[bytes] = Counter()
        self.anchors: list[int] = []  # anchor of the cursor after each round

    @property
    def anchor(self) -> int:
        return int(self.cursor) & 0x3FFF

    @property
    def backend(self) -> int:
        return int(self.cursor) >> 22  # node_cursor << 22 | epoch << 14 | anchor

    def step(self) -> None:
        assert not self.done
        try:
            reply = self.client.execute_command(
                "SCAN", self.cursor, "MATCH", self.match, "COUNT", COUNT)
        except redis.RedisError as exc:
            pytest.fail(f"SCAN {self.cursor!r} failed in round {self.rounds + 1}: {exc!r}")
        cursor, keys = reply
        assert isinstance(cursor, bytes) and CURSOR_RE.fullmatch(cursor), \
            f"round {self.rounds + 1}: cursor {cursor!r} is not a plain non-negative integer"
        assert int(cursor) < 1 << 64, f"cursor {cursor!r} does not fit an unsigned 64-bit int"
        self.rounds += 1
        self.cursor = cursor
        self.seen.update(keys)
        self.anchors.append(self.anchor)
        self.done = cursor == b"0"
        assert self.rounds <= self.max_rounds, \
            f"SCAN did not terminate within {self.max_rounds} rounds (cursor {cursor!r})"
        assert time.monotonic() < self.deadline, \
            f"SCAN did not terminate in time ({self.rounds} rounds, cursor {cursor!r})"

    def finish(self) -> None:
        while not self.done:
            self.step()


def _max_rounds(r: redis.Redis) -> int:
    """A generous bound: every master scanned a few times over (the node's table has up to
    twice as many buckets as keys; COUNT is buckets per round)."""
    dbsize = int(r.execute_command("DBSIZE"))
    return 4 * (2 * dbsize // COUNT + 50)


# -- tests -------------------------------------------------------------------------------------
SCENARIOS = ["anchor_to_scanned_master", "anchor_to_unscanned_master", "slot_to_scanned_master"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scan_during_resharding_returns_every_key(proxy, cluster, scenario: str) -> None:
    started = time.monotonic()
    _sync_proxy(proxy, cluster)
    layout = _layout(cluster)
    assert len(layout) >= 3, layout
    m0, m1, m2 = layout[:3]
    a1 = m1.anchor
    s_done = m0.slots[len(m0.slots) // 2]  # a slot of M0 that is not its anchor
    s_cur = m1.slots[len(m1.slots) // 2]  # a slot of M1 that is not its anchor
    s_late = m2.slots[len(m2.slots) // 2]  # a slot of M2 that is not its anchor
    assert len({a1, s_done, s_cur, s_late, m0.anchor, m2.anchor}) == 6
    moves = {  # (slot, from, to), in this order
        "anchor_to_scanned_master": [(s_done, m0, m2), (s_cur, m1, m2), (a1, m1, m0)],
        "anchor_to_unscanned_master": [(a1, m1, m2)],
        "slot_to_scanned_master": [(s_late, m2, m0)],
    }[scenario]

    run = os.urandom(4).hex()
    prefix = f"scanrs:{run}"
    tags = _tags_for({a1, s_done, s_cur, s_late}, run)
    tagged = [f"{prefix}:{{{tag}}}:{i}" for tag in tags.values() for i in range(PER_MOVED_SLOT)]
    keys = [f"{prefix}:{i}" for i in range(N_KEYS - len(tagged))] + tagged
    assert {key_slot(k.encode()) for k in tagged} == {a1, s_done, s_cur, s_late}
    r = _raw(proxy.client())
    _write(r, keys)
    owner_at_start = _owners(cluster)
    per_master = Counter(owner_at_start[key_slot(k.encode())] for k in keys)
    assert all(per_master[m.port] >= 500 for m in (m0, m1, m2)), per_master

    scan = Scan(r, f"{prefix}:*", _max_rounds(r), started + TEST_BUDGET_S)
    started_moves: list[tuple[int, Master, Master]] = []
    try:
        # Into the middle of M1: its anchor in the cursor, with a backend cursor, a few rounds.
        while sum(1 for a in scan.anchors if a == a1) < 4 or scan.backend == 0:
            scan.step()
            assert not scan.done and scan.anchor in (m0.anchor, a1), scan.cursor

        interleaved = [0]

        def scan_round_inside_m1() -> None:
            # SCAN against half-migrated slots and a stale proxy map, staying inside M1.
            if interleaved[0] < MAX_INTERLEAVED_ROUNDS:
                interleaved[0] += 1
                scan.step()

        for slot, src, dst in moves:
            started_moves.append((slot, src, dst))
            _migrate(cluster, slot, src.node, dst.node, scan_round_inside_m1)
        _sync_proxy(proxy, cluster)
        assert scan.anchor == a1 and scan.backend != 0, (
            "setup: the scan left M1 before the proxy learned the new map "
            f"(cursor {scan.cursor!r}, anchors {scan.anchors})")
        new_order = [m.anchor for m in _layout(cluster)]
        resume_cursor, resume_round = scan.cursor, scan.rounds
        scan.finish()
    finally:
        for slot, src, dst in reversed(started_moves):
            if _owners(cluster)[slot] == src.port:  # interrupted half-way: finish it first
                _migrate(cluster, slot, src.node, dst.node)
            _migrate(cluster, slot, dst.node, src.node)
        _delete(r, keys)
        _sync_proxy(proxy, cluster)
        r.close()

    restored = _owners(cluster)
    for m in layout:
        assert all(restored[s] == m.port for s in m.slots), "layout not restored"

    missing = sorted(set(k.encode() for k in keys) - set(scan.seen))
    strangers = [k for k in scan.seen if not k.startswith(prefix.encode())]
    assert not strangers, strangers[:5]
    if missing:
        by_slot = Counter(key_slot(k) for k in missing)
        owner_before = {s: owner_at_start[s] for s in by_slot}
        pytest.fail(
            f"{scenario}: {len(missing)} of {len(keys)} keys that existed for the whole scan "
            f"were never returned. Scan order before: "
            f"{[(m.anchor, m.port) for m in layout]}, after the moves: {new_order}; moves "
            f"{[(s, a.port, b.port) for s, a, b in moves]}; the scan was inside M1 "
            f"(anchor {a1}) when the proxy learned the new map, next cursor "
            f"{resume_cursor!r} (backend cursor {int(resume_cursor) >> 14}); "
            f"missing keys per slot (slot: count, master at the start) "
            f"{[(s, c, owner_before[s]) for s, c in by_slot.most_common(10)]}"
            f"{' ...' if len(by_slot) > 10 else ''}; {scan.rounds} rounds")
    if scenario == "anchor_to_scanned_master":  # the scenario did exercise the re-scan path
        assert m0.anchor in scan.anchors[resume_round:], scan.anchors[resume_round:]
    assert time.monotonic() - started < 30


def test_scan_without_topology_change_returns_every_key_once(proxy, cluster) -> None:
    started = time.monotonic()
    _sync_proxy(proxy, cluster)
    before = _owners(cluster)
    prefix = f"scanrs:{os.urandom(4).hex()}"
    keys = [f"{prefix}:{i}" for i in range(N_KEYS)]
    assert len({before[key_slot(k.encode())] for k in keys}) == len(set(before))  # all masters
    r = _raw(proxy.client())
    try:
        _write(r, keys)
        scan = Scan(r, f"{prefix}:*", _max_rounds(r), started + TEST_BUDGET_S)
        scan.finish()
    finally:
        _delete(r, keys)
        r.close()
    assert _owners(cluster) == before  # really no topology change
    dupes = [(k, n) for k, n in scan.seen.items() if n > 1]
    assert not dupes, f"{len(dupes)} keys returned more than once: {dupes[:5]}"
    assert set(scan.seen) == {k.encode() for k in keys}
    assert time.monotonic() - started < 30
