"""rproxy.log: repeated events are rate-limited, with a count of what was dropped."""

from __future__ import annotations

import pytest
import structlog

from rproxy.log import RateLimit


def test_the_same_event_past_the_burst_is_dropped_then_counted() -> None:
    now = [0.0]
    limit = RateLimit(burst=3, window_s=1.0, clock=lambda: now[0])
    event = {"event": "backend_lost", "node": "127.0.0.1:7000", "timestamp": "t"}
    kept = 0
    for _ in range(10):
        try:
            limit(None, "warning", dict(event))
            kept += 1
        except structlog.DropEvent:
            pass
    assert kept == 3
    other = limit(None, "warning", {"event": "backend_lost", "node": "127.0.0.1:7001"})
    assert "suppressed" not in other  # another node: another event
    now[0] = 1.5
    assert limit(None, "warning", dict(event))["suppressed"] == 7
    assert "suppressed" not in limit(None, "warning", dict(event))


def test_a_different_level_or_field_is_another_event() -> None:
    limit = RateLimit(burst=1)
    limit(None, "warning", {"event": "x", "a": 1})
    limit(None, "error", {"event": "x", "a": 1})
    limit(None, "warning", {"event": "x", "a": 2})
    with pytest.raises(structlog.DropEvent):
        limit(None, "warning", {"event": "x", "a": 1})
