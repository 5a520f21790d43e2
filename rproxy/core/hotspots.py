"""Hot slots and hot keys, by sampling: sans-IO.

The data path samples one command per client batch (the last one-key command of each batch the
session routes inline: rproxy/net/session.py ``route_batch``): its slot's count goes up by one
(``slots[slot] += 1``, a list index), and every 16th sample of a slot also counts its key. So the
cost is per read, not per command, and the key table grows only with the slots that are hot.
Counts live in ``buckets`` time buckets of ``bucket_s`` seconds each (the server rotates them);
the window is their sum. After a bucket closes, its keys are cut to the ``KEEP_KEYS`` most
counted, so memory stays bounded whatever the keyspace.

The counts are samples, not command counts: they rank slots and keys (which is hottest, and
roughly by how much), they do not measure throughput (INFO and /metrics do).
"""

from __future__ import annotations

from rproxy.core.slots import SLOTS

KEY_EVERY = 16  # a slot's key is counted at every 16th sample of that slot
KEEP_KEYS = 1000  # keys kept per closed bucket


class HotSpots:
    __slots__ = ("slots", "keys", "_buckets", "size")

    def __init__(self, buckets: int = 6) -> None:
        self.size = buckets
        self.slots: list[int] = [0] * SLOTS  # the open bucket's slot samples (the data path's)
        self.keys: dict[bytes, int] = {}  # the open bucket's key samples
        self._buckets: list[tuple[list[int], dict[bytes, int]]] = []  # closed, newest last

    def add(self, slot: int, key: bytes) -> None:
        """One sample (the session inlines this)."""
        slots = self.slots
        slots[slot] += 1
        if not slots[slot] % KEY_EVERY:
            self.keys[key] = self.keys.get(key, 0) + 1

    def rotate(self) -> None:
        """Close the open bucket (every ``bucket_s``); the oldest falls out of the window."""
        keys = self.keys
        if len(keys) > KEEP_KEYS:
            keys = dict(sorted(keys.items(), key=lambda kv: -kv[1])[:KEEP_KEYS])
        self._buckets.append((self.slots, keys))
        del self._buckets[:-(self.size - 1) or None]
        self.slots = [0] * SLOTS
        self.keys = {}

    def top_slots(self, n: int) -> list[tuple[int, int]]:
        """The ``n`` most sampled slots in the window: (slot, samples), hottest first."""
        total = list(self.slots)
        for slots, _ in self._buckets:
            for i, c in enumerate(slots):
                if c:
                    total[i] += c
        ranked = sorted((c, -s) for s, c in enumerate(total) if c)
        return [(-s, c) for c, s in reversed(ranked[-n:])] if n > 0 else []

    def top_keys(self, n: int) -> list[tuple[bytes, int]]:
        """The ``n`` most sampled keys in the window: (key, samples), hottest first."""
        total: dict[bytes, int] = dict(self.keys)
        for _, keys in self._buckets:
            for k, c in keys.items():
                total[k] = total.get(k, 0) + c
        return sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:max(n, 0)]
