"""rproxy.core.topology: CLUSTER SHARDS / CLUSTER SLOTS parsing (RESP2, as Redis 7 returns them
through hiredis) and the slot map."""

from __future__ import annotations

import pytest

from rproxy.core.slots import SLOTS
from rproxy.core.topology import (
    Shard,
    SlotMap,
    carry_over,
    parse_cluster_shards,
    parse_cluster_slots,
)

ASKED = "10.0.0.9"


def node(
    port: int,
    role: bytes = b"master",
    ip: bytes = b"127.0.0.1",
    endpoint: bytes | None = None,
    health: bytes = b"online",
    node_id: bytes | None = None,
) -> list[object]:
    """One node of CLUSTER SHARDS, in Redis 7's RESP2 shape."""
    return [
        b"id", node_id or (b"%040d" % port),
        b"port", port,
        b"ip", ip,
        b"endpoint", ip if endpoint is None else endpoint,
        b"role", role,
        b"replication-offset", 4242,
        b"health", health,
    ]


def shard(slots: list[int], *nodes: list[object]) -> list[object]:
    return [b"slots", slots, b"nodes", list(nodes)]


THREE_SHARDS = [
    shard([0, 5460], node(30001), node(30004, b"replica")),
    shard([5461, 10922], node(30002), node(30005, b"replica")),
    shard([10923, 16383], node(30003), node(30006, b"replica")),
]


def test_parse_cluster_shards_three_masters():
    m = parse_cluster_shards(THREE_SHARDS, ASKED)
    assert m.masters == [("127.0.0.1", 30001), ("127.0.0.1", 30002), ("127.0.0.1", 30003)]
    assert m.shards[0] == Shard(("127.0.0.1", 30001), (("127.0.0.1", 30004),), ((0, 5460),))
    assert m.covered == SLOTS
    assert len(m.owner) == SLOTS
    assert m.owner[0] == m.owner[5460] == ("127.0.0.1", 30001)
    assert m.owner[5461] == m.owner[10922] == ("127.0.0.1", 30002)
    assert m.owner[10923] == m.owner[16383] == ("127.0.0.1", 30003)
    assert set(m.nodes) == {("127.0.0.1", p) for p in range(30001, 30007)}


def test_slot_map_owner_covers_every_slot():
    m = parse_cluster_shards(THREE_SHARDS, ASKED)
    expected = [30001] * 5461 + [30002] * 5462 + [30003] * 5461
    assert [o[1] for o in m.owner] == expected  # type: ignore[index]


def test_shard_with_several_ranges():
    m = parse_cluster_shards(
        [shard([0, 99, 200, 299], node(7000)), shard([100, 199, 300, 16383], node(7001))], ASKED
    )
    assert m.shards[0].ranges == ((0, 99), (200, 299))
    assert m.owner[99] == m.owner[200] == ("127.0.0.1", 7000)
    assert m.owner[100] == m.owner[300] == ("127.0.0.1", 7001)
    assert m.covered == SLOTS


def test_uncovered_slots_are_none():
    m = parse_cluster_shards([shard([0, 99], node(7000))], ASKED)
    assert m.covered == 100
    assert m.owner[99] == ("127.0.0.1", 7000)
    assert m.owner[100] is None and m.owner[16383] is None


def test_failed_replica_is_left_out():
    m = parse_cluster_shards(
        [shard([0, 16383], node(7000), node(7001, b"replica", health=b"failed"),
               node(7002, b"replica", health=b"loading"))],
        ASKED,
    )
    assert m.shards[0].replicas == (("127.0.0.1", 7002),)


def test_failed_master_keeps_its_slots_and_is_marked_failed():
    # Until a replica is promoted the slots stay with the failed master: the proxy holds
    # their requests (failover_hold_s) instead of answering "slot not served" at once.
    m = parse_cluster_shards(
        [
            shard([0, 8191], node(7000, health=b"failed"), node(7001, b"replica")),
            shard([8192, 16383], node(7002)),
        ],
        ASKED,
    )
    assert m.masters == [("127.0.0.1", 7000), ("127.0.0.1", 7002)]
    assert m.owner[0] == ("127.0.0.1", 7000) and m.owner[8191] == ("127.0.0.1", 7000)
    assert m.owner[8192] == ("127.0.0.1", 7002)
    assert m.covered == 16384
    assert m.failed == frozenset({("127.0.0.1", 7000)})


def test_master_without_slots_is_not_a_master_for_fan_out():
    m = parse_cluster_shards([shard([0, 16383], node(7000)), shard([], node(7001))], ASKED)
    assert m.masters == [("127.0.0.1", 7000)]
    assert ("127.0.0.1", 7001) in m.nodes


@pytest.mark.parametrize(
    "ip, endpoint, expected",
    [
        (b"127.0.0.1", b"?", ASKED),  # hostname endpoints, node has none: unknown
        (b"", b"", ASKED),  # a node that does not know its own address announces ''
        (b"127.0.0.1", b"redis-1.example", "redis-1.example"),
        (b"::1", b"::1", "::1"),
    ],
)
def test_shards_endpoint(ip: bytes, endpoint: bytes, expected: str):
    m = parse_cluster_shards([shard([0, 16383], node(7000, ip=ip, endpoint=endpoint))], ASKED)
    assert m.masters == [(expected, 7000)]


def test_shards_node_with_tls_port_only():
    n = [b"id", b"x" * 40, b"tls-port", 7100, b"ip", b"127.0.0.1", b"endpoint", b"127.0.0.1",
         b"role", b"master", b"replication-offset", 0, b"health", b"online"]
    m = parse_cluster_shards([shard([0, 16383], n)], ASKED)
    assert m.masters == [("127.0.0.1", 7100)]


def test_shard_of():
    m = parse_cluster_shards(THREE_SHARDS, ASKED)
    s = m.shard_of(("127.0.0.1", 30002))
    assert s is not None and s.ranges == ((5461, 10922),)
    assert m.shard_of(("127.0.0.1", 30004)) is None


# -- CLUSTER SLOTS --------------------------------------------------------------------------------
def slots_node(host: bytes | None, port: int) -> list[object]:
    return [host, port, b"%040d" % port, []]  # Redis 7: host, port, id, metadata (map -> list)


def test_parse_cluster_slots():
    reply = [
        [0, 5460, slots_node(b"127.0.0.1", 30001), slots_node(b"127.0.0.1", 30004)],
        [5461, 10922, slots_node(b"127.0.0.1", 30002), slots_node(b"127.0.0.1", 30005)],
        [10923, 16383, slots_node(b"127.0.0.1", 30003), slots_node(b"127.0.0.1", 30006)],
    ]
    m = parse_cluster_slots(reply, ASKED)
    assert m.masters == [("127.0.0.1", 30001), ("127.0.0.1", 30002), ("127.0.0.1", 30003)]
    assert m.shards[1].replicas == (("127.0.0.1", 30005),)
    assert m.covered == SLOTS
    assert m.owner[5461] == ("127.0.0.1", 30002)


def test_parse_cluster_slots_merges_ranges_of_one_master():
    reply = [
        [0, 99, slots_node(b"h1", 7000), slots_node(b"h2", 7001)],
        [100, 199, slots_node(b"h3", 7002)],
        [200, 16383, slots_node(b"h1", 7000), slots_node(b"h2", 7001)],
    ]
    m = parse_cluster_slots(reply, ASKED)
    s = m.shard_of(("h1", 7000))
    assert s is not None
    assert s.ranges == ((0, 99), (200, 16383))
    assert s.replicas == (("h2", 7001),)
    assert m.owner[150] == ("h3", 7002)
    assert m.covered == SLOTS


@pytest.mark.parametrize("host", [None, b"", b"?"])
def test_parse_cluster_slots_unknown_endpoint_uses_asked_host(host: bytes | None):
    m = parse_cluster_slots([[0, 16383, slots_node(host, 7000)]], ASKED)
    assert m.masters == [(ASKED, 7000)]


def test_from_shards_clamps_ranges():
    m = SlotMap.from_shards([Shard(("h", 1), (), ((-5, 10), (16380, 20000)))])
    assert m.covered == 11 + 4
    assert len(m.owner) == SLOTS


def test_redis_7_0_health_fail_marks_a_master_failed():
    m = parse_cluster_shards([shard([0, 16383], node(7000, health=b"fail"))], ASKED)
    assert m.failed == frozenset({("127.0.0.1", 7000)})


def test_carry_over_keeps_a_vanished_owner_as_failed():
    a, b = ("h", 1), ("h", 2)
    old = SlotMap.from_shards([Shard(a, (), ((0, 99),)), Shard(b, (("h", 3),), ((100, 16383),))])
    new = SlotMap.from_shards([Shard(b, (("h", 3),), ((100, 16383),))])
    kept = carry_over(old, new)
    assert kept.owner[0] == a and kept.owner[99] == a and kept.owner[100] == b
    assert kept.failed == frozenset({a})
    assert kept.covered == 16384
    assert kept.shard_of(b) == new.shard_of(b)
    # a slot moved to another owner is simply moved; a full map is taken as it is
    moved = SlotMap.from_shards([Shard(b, (), ((0, 16383),))])
    assert carry_over(old, moved) is moved
    assert carry_over(None, new) is new


def test_carry_over_merges_into_a_shard_that_still_exists():
    a = ("h", 1)
    old = SlotMap.from_shards([Shard(a, (), ((0, 16383),))])
    new = SlotMap.from_shards([Shard(a, (), ((0, 99),))])
    kept = carry_over(old, new)
    assert kept.owner == old.owner and kept.failed == frozenset()  # it is alive: not failed
    assert kept.shard_of(a).ranges == ((0, 99), (100, 16383))


def test_the_same_cluster_listed_in_another_order_is_the_same_map():
    # Each node lists shards and replicas in its own order; a refresh that asks another node
    # must see "nothing changed" (the proxy then skips rebuilding its tables).
    a = [shard([0, 8191], node(7000), node(7003, b"replica"), node(7004, b"replica")),
         shard([8192, 16383], node(7001))]
    b = [shard([8192, 16383], node(7001)),
         shard([0, 8191], node(7000), node(7004, b"replica"), node(7003, b"replica"))]
    assert parse_cluster_shards(a, ASKED) == parse_cluster_shards(b, ASKED)
