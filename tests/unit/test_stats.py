"""rproxy.core.stats: the table of counters and gauges is complete and consistent."""

from __future__ import annotations

from rproxy.core import stats


def test_counters_are_the_stats_attributes():
    assert tuple(stats.Stats.__annotations__) == stats.COUNTERS
    s = stats.Stats()
    assert all(s.get(name) == 0 for name in stats.COUNTERS)


def test_names_are_unique_and_sections_known():
    names = [s.name for s in stats.STATS]
    assert len(names) == len(set(names))
    assert {s.section for s in stats.STATS} <= {"clients", "stats", "proxy"}
    assert all(s.kind in (stats.COUNTER, stats.GAUGE) and s.help for s in stats.STATS)


def test_every_gauge_is_read_by_the_server():
    from rproxy.net.server import GAUGES

    gauges = {s.name for s in stats.STATS if s.kind == stats.GAUGE}
    assert set(GAUGES) == gauges
