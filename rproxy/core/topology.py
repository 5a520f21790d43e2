"""The slot map and the parsing of the cluster's own description of it, sans-IO.

``SlotMap`` is immutable: the cluster manager builds a new one from ``CLUSTER SHARDS`` (Redis
7+) or ``CLUSTER SLOTS`` and swaps it in whole. What to do with a redirect is not here: see
``rproxy.core.redirect``.
"""

from __future__ import annotations

from dataclasses import dataclass

from rproxy.core.slots import SLOTS

Addr = tuple[str, int]
_ADDRS: dict[Addr, Addr] = {}  # one tuple object per address: owner tuples compare by identity


@dataclass(frozen=True, slots=True)
class Shard:
    master: Addr
    replicas: tuple[Addr, ...]
    ranges: tuple[tuple[int, int], ...]  # inclusive slot ranges


@dataclass(frozen=True, slots=True)
class SlotMap:
    shards: tuple[Shard, ...]
    owner: tuple[Addr | None, ...]  # slot -> master address (None: slot not served)
    # Masters the cluster has marked failed (FAIL, agreed by a majority) and not yet replaced:
    # they keep their slots, and the proxy holds those slots' requests until a replica is
    # promoted, instead of sending them into a dead or hung node.
    failed: frozenset[Addr] = frozenset()

    @classmethod
    def from_shards(cls, shards: list[Shard], failed: frozenset[Addr] = frozenset()) -> SlotMap:
        # Nodes list shards (and replicas) in their own order: sorted, equal maps are equal.
        shards = sorted(shards, key=lambda s: (s.ranges, s.master))
        owner: list[Addr | None] = [None] * SLOTS
        for shard in shards:
            master = _ADDRS.setdefault(shard.master, shard.master)  # equal maps compare fast
            for lo, hi in shard.ranges:
                lo, hi = max(lo, 0), min(hi, SLOTS - 1)
                if lo <= hi:
                    owner[lo : hi + 1] = [master] * (hi - lo + 1)
        return cls(tuple(shards), tuple(owner), failed)

    @property
    def masters(self) -> list[Addr]:
        return [s.master for s in self.shards if s.ranges]

    @property
    def nodes(self) -> list[Addr]:
        out: list[Addr] = []
        for s in self.shards:
            out.append(s.master)
            out.extend(s.replicas)
        return out

    @property
    def covered(self) -> int:
        return SLOTS - self.owner.count(None)

    def shard_of(self, master: Addr) -> Shard | None:
        for s in self.shards:
            if s.master == master:
                return s
        return None


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _endpoint(host: object, fallback: str) -> str:
    """A node's endpoint as announced; '' or '?' (unknown endpoint) means the host we asked."""
    h = _s(host) if host is not None else ""
    return fallback if h in ("", "?") else h


def parse_cluster_shards(reply: list[object], asked_host: str, tls: bool = False) -> SlotMap:
    """Parse ``CLUSTER SHARDS`` (RESP2: flat key/value lists). Replicas whose health is
    ``failed`` are left out; a failed master keeps its slots and is listed in ``failed``.
    ``tls``: the nodes' TLS ports (``tls-port``, sent with tls-cluster yes) rather than their
    plain ones."""
    shards: list[Shard] = []
    failed: set[Addr] = set()
    for raw in reply:
        d = _pairs(raw)
        flat = list(d.get("slots", []))  # type: ignore[call-overload]
        ranges = tuple((int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2))
        master: Addr | None = None
        replicas: list[Addr] = []
        for node_raw in d.get("nodes", []):  # type: ignore[attr-defined]
            n = _pairs(node_raw)
            host = _endpoint(n.get("endpoint") or n.get("ip"), asked_host)
            first, second = ("tls-port", "port") if tls else ("port", "tls-port")
            port = int(n.get(first) or n.get(second) or 0)  # type: ignore[call-overload]
            if not port:
                continue
            # "failed" in the documentation, "fail" in what Redis 7.0 sends
            is_failed = _s(n.get("health", "online")) in ("fail", "failed")
            if _s(n.get("role")) == "master":
                master = (host, port)
                if is_failed:
                    failed.add(master)
            elif not is_failed:
                replicas.append((host, port))
        if master is not None:
            shards.append(Shard(master, tuple(sorted(replicas)), ranges if ranges else ()))
    return SlotMap.from_shards(shards, frozenset(failed))


def carry_over(old: SlotMap | None, new: SlotMap) -> SlotMap:
    """``new``, except that a slot it leaves unowned while ``old`` had an owner keeps that
    owner (marked failed if the new map does not list it as a master at all). Slots do not
    lose their owner in a healthy cluster: a node with a half-updated view (a master waking
    up after being replaced, for one) may report them unowned for a moment. The proxy holds
    such slots' requests instead of failing them."""
    if old is None or new.covered == SLOTS:
        return new
    lost: dict[Addr, list[int]] = {}
    for slot, (was, now) in enumerate(zip(old.owner, new.owner)):
        if now is None and was is not None:
            lost.setdefault(was, []).append(slot)
    if not lost:
        return new
    shards = list(new.shards)
    for addr, slots in lost.items():
        ranges: list[tuple[int, int]] = []
        for slot in slots:
            if ranges and ranges[-1][1] == slot - 1:
                ranges[-1] = (ranges[-1][0], slot)
            else:
                ranges.append((slot, slot))
        shard = new.shard_of(addr)
        if shard is not None:
            shards.remove(shard)
            ranges = list(shard.ranges) + ranges
        shards.append(Shard(addr, shard.replicas if shard else (), tuple(ranges)))
    vanished = frozenset(a for a in lost if a not in new.masters)
    return SlotMap.from_shards(shards, new.failed | vanished)


def parse_cluster_slots(reply: list[object], asked_host: str) -> SlotMap:
    """Parse ``CLUSTER SLOTS``: [[start, end, [host, port, id, ...], replicas...], ...]."""
    by_master: dict[Addr, tuple[list[tuple[int, int]], list[Addr]]] = {}
    for raw in reply:
        entry = list(raw)  # type: ignore[call-overload]
        lo, hi = int(entry[0]), int(entry[1])
        nodes = [(_endpoint(n[0], asked_host), int(n[1])) for n in entry[2:]]
        if not nodes:
            continue
        ranges, replicas = by_master.setdefault(nodes[0], ([], []))
        ranges.append((lo, hi))
        for r in nodes[1:]:
            if r not in replicas:
                replicas.append(r)
    shards = [Shard(m, tuple(r), tuple(rg)) for m, (rg, r) in by_master.items()]
    return SlotMap.from_shards(shards)


def _pairs(raw: object) -> dict[str, object]:
    items = list(raw)  # type: ignore[call-overload]
    return {_s(k).lower(): v for k, v in zip(items[::2], items[1::2])}
