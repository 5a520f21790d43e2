"""structlog set-up: human-readable on a terminal, JSON lines otherwise (or when asked); the
same event repeated many times a second is rate-limited (``RateLimit``)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


class RateLimit:
    """A structlog processor: the same event (its name, level and fields but the time) more
    than ``burst`` times within ``window_s`` seconds is dropped; the next one after the window
    carries ``suppressed=<how many were dropped>``. A failover logs the same lost connection
    many times a second; the log keeps the first ones and a count."""

    def __init__(self, burst: int = 5, window_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self.seen: dict[tuple[object, ...], list[float | int]] = {}  # key -> [start, n, dropped]

    def __call__(self, logger: object, method: str,
                 event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        key = (method, *sorted((k, str(v)) for k, v in event.items() if k != "timestamp"))
        now = self.clock()
        state = self.seen.get(key)
        if state is None or now - state[0] >= self.window_s:
            if state is not None and state[2]:
                event["suppressed"] = state[2]
            if len(self.seen) > 10000:  # bounded: forget the quiet ones
                self.seen = {k: v for k, v in self.seen.items() if now - v[0] < self.window_s}
            self.seen[key] = [now, 1, 0]
            return event
        state[1] += 1
        if state[1] > self.burst:
            state[2] += 1
            raise structlog.DropEvent
        return event


def configure(level: str = "info", fmt: str = "auto") -> None:
    """``fmt``: ``console``, ``json`` or ``auto`` (console on a TTY, JSON otherwise)."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            RateLimit(),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if fmt == "json" else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
