"""The job functions of tests/apps/test_python_queues.py, in a module of their own: RQ's worker
imports a job's function by its dotted name (``tests.apps.python_queue_jobs.add``), and arq's
worker is given them as coroutine functions. Every call is logged in ``EXECUTED`` (the worker
runs in the test's process), so a test can see what ran and in which order."""

from __future__ import annotations

import threading
from typing import Any

EXECUTED: list[tuple[str, Any]] = []
_lock = threading.Lock()


def _log(what: str, arg: Any) -> None:
    with _lock:
        EXECUTED.append((what, arg))


def take_log() -> list[tuple[str, Any]]:
    """What ran since the last call, in order (and the log is emptied)."""
    with _lock:
        out = list(EXECUTED)
        EXECUTED.clear()
    return out


# RQ: plain functions


def add(a: int, b: int) -> int:
    _log("add", a)
    return a + b


def step(name: str) -> str:
    """A job other jobs depend on, or that depends on another one."""
    _log("step", name)
    return f"{name} done"


def fails(why: str) -> None:
    _log("fails", why)
    raise ValueError(f"this job fails: {why}")


def describe(items: list[int], label: str) -> dict[str, Any]:
    """A job with a structured result."""
    _log("describe", label)
    return {"label": label, "sum": sum(items), "count": len(items)}


# arq: coroutine functions, called with arq's context dict first


async def arq_add(ctx: dict[str, Any], a: int, b: int) -> int:
    _log("arq_add", a)
    return a + b


async def arq_fails(ctx: dict[str, Any], why: str) -> None:
    _log("arq_fails", why)
    raise ValueError(f"this job fails: {why}")


async def arq_deferred(ctx: dict[str, Any], what: str) -> str:
    _log("arq_deferred", what)
    return f"{what} ran at try {ctx['job_try']}"
