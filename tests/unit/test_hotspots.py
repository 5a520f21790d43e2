"""rproxy.core.hotspots: sampled hot slots and keys over a sliding window of buckets."""

from __future__ import annotations

from rproxy.core.hotspots import KEEP_KEYS, KEY_EVERY, HotSpots


def test_ranks_slots_and_keys_hottest_first() -> None:
    hot = HotSpots(buckets=3)
    for _ in range(10 * KEY_EVERY):
        hot.add(7, b"hot")
    for _ in range(2 * KEY_EVERY):
        hot.add(9, b"warm")
    hot.add(1, b"cold")
    assert hot.top_slots(2) == [(7, 10 * KEY_EVERY), (9, 2 * KEY_EVERY)]
    assert hot.top_keys(5) == [(b"hot", 10), (b"warm", 2)]  # keys: every 16th sample of a slot
    assert hot.top_slots(0) == []


def test_the_window_slides_and_keys_stay_bounded() -> None:
    hot = HotSpots(buckets=2)
    for i in range(KEEP_KEYS * 3 * KEY_EVERY):
        hot.add(5, b"k%d" % (i // KEY_EVERY))
    hot.add(5, b"x")
    hot.rotate()  # the first bucket closes: its keys cut to the KEEP_KEYS most counted
    assert len(hot.top_keys(10 ** 6)) == KEEP_KEYS
    hot.add(3, b"y")
    assert [s for s, _ in hot.top_slots(2)] == [5, 3]
    hot.rotate()  # two buckets: the first falls out of the window
    hot.rotate()
    assert hot.top_slots(5) == [] and hot.top_keys(5) == []
