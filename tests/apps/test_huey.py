"""huey (a Python task queue) run against the standalone redis-server and through the proxy:
a producer enqueues tasks, huey's own Consumer (worker threads blocked in BRPOP, or BZPOPMIN
for PriorityRedisHuey, and the scheduler thread running huey's Lua schedule-pop script through
redis-py's EVALSHA) runs them, and the producer fetches every result: plain results, a task that
fails once and is retried (via the schedule), one that always fails, a scheduled task, a task
holding a lock (HSETNX) and a revoked one. Priorities: tasks enqueued before the consumer starts
run highest priority first.

Keys. huey names its keys after the instance name: `huey.redis.<name>` (queue: a list, or a
sorted set for PriorityRedisHuey), `huey.schedule.<name>` (sorted set), `huey.results.<name>`
(hash: results, revocations, locks), `huey.counters.<name>` and, with notify_result,
`huey.notify.<name>.<task id>` (a list the result waiter BLPOPs). Only single-key commands,
plus redis-py transactional pipelines (MULTI HGET HDEL EXEC to pop a result; MULTI LPUSH
EXPIRE EXEC to notify) whose keys are one key each, so huey works on a cluster with any name;
a `{hash tag}` name keeps all of them in one slot all the same (one master holds the queue
and everything about it). huey strips the name to [A-Za-z0-9_] unless clean_name=False, so
name='{huey}' alone would become 'huey': clean_name=False is what keeps the braces. The test
checks the slot of every key huey created.

huey connects with redis-py's defaults: redis-py 8 offers RESP3 (HELLO 3) and, on the
proxy's -NOPROTO, falls back to RESP2 (with a logged warning), so the proxy run speaks RESP2
and the standalone run RESP3; what huey observes must not differ.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from huey import PriorityRedisHuey, RedisHuey
from huey.consumer import Consumer
from huey.exceptions import TaskException

from rproxy.core.slots import key_slot
from tests.apps.compare import assert_same
from tests.support import wait_until

RUN = uuid.uuid4().hex[:8]
TASKS = 40


class InThreadConsumer(Consumer):
    """huey's Consumer, started and stopped by the test (not by signals: it runs in a test
    thread, and signal handlers belong to the main thread's test runner)."""

    def _set_signal_handlers(self) -> None:
        pass


def huey_app(port: int, kind: str) -> dict[str, Any]:
    cls = {"redis": RedisHuey, "priority": PriorityRedisHuey}[kind]
    name = f"{{huey:{RUN}:{kind}}}"
    huey = cls(name, clean_name=False, host="127.0.0.1", port=port, read_timeout=1,
               notify_result=(kind == "redis"), socket_timeout=10,
               store_intermediate_errors=False)  # a retried task's result: its last attempt
    attempts: dict[str, int] = {}
    executed: list[Any] = []
    lock = threading.Lock()

    def count(what: str) -> int:
        with lock:
            attempts[what] = attempts.get(what, 0) + 1
            return attempts[what]

    @huey.task()
    def add(a: int, b: int) -> int:
        with lock:
            executed.append(("add", a))
        return a + b

    @huey.task(retries=1, retry_delay=1)  # the retry waits in the schedule (Lua pop)
    def flaky(what: str) -> str:
        n = count(what)
        if n < 2:
            raise RuntimeError(f"attempt {n} fails")
        return f"{what} ok after {n} attempts"

    @huey.task()
    def always_fails() -> None:
        count("always_fails")
        raise ValueError("always fails")

    @huey.task()
    def locked(value: int) -> tuple[bool, int]:
        with huey.lock_task("the-lock"):
            return huey.is_locked("the-lock"), value

    @huey.task()
    def ordered(n: int) -> int:
        with lock:
            executed.append(("ordered", n))
        return n

    obs: dict[str, Any] = {"meta": {}}
    huey.flush()
    if kind == "priority":
        # enqueued before any worker runs: the single worker takes them highest first
        for n, priority in enumerate([1, 5, 3, 5, 0, 9, 3]):
            ordered(n, priority=priority)
        obs["queued_before_start"] = huey.pending_count()
    seen: set[str] = set()

    def look() -> set[str]:  # the keys huey has at this moment
        seen.update(k.decode() for k in huey.storage.conn.scan_iter(match=f"*{name}*"))
        return seen

    revoked = add(1000, 1)
    revoked.revoke()
    look()
    consumer = InThreadConsumer(huey, workers=(1 if kind == "priority" else 3),
                                worker_type="thread", periodic=False,
                                check_worker_health=False, initial_delay=0.05, max_delay=0.5)
    consumer.start()
    try:
        t0 = time.monotonic()
        results = [add(i, i) for i in range(TASKS)]
        retried = flaky("flaky")
        failing = always_fails()
        scheduled = add.schedule((7, 8), delay=1)
        lock_result = locked(42)
        # the worker puts the scheduled task (and the failed attempt's retry) in the schedule,
        # for about a second: looked up by name (a SCAN of the whole keyspace, which other tests
        # share, could take longer than the key lives)
        schedule_key = f"huey.schedule.{name}"

        def scheduled_now() -> bool:
            if huey.storage.conn.exists(schedule_key):
                seen.add(schedule_key)
                return True
            return False

        wait_until(scheduled_now, 5, "huey's schedule")
        obs["results"] = [r.get(blocking=True, timeout=15) for r in results]
        obs["retried"] = retried.get(blocking=True, timeout=15)
        try:
            failing.get(blocking=True, timeout=15)
            obs["always_fails"] = "no exception"
        except TaskException as exc:
            obs["always_fails"] = {"error": exc.metadata.get("error"),
                                   "retries": exc.metadata.get("retries")}
        look()
        obs["scheduled"] = scheduled.get(blocking=True, timeout=15)
        obs["locked"] = list(lock_result.get(blocking=True, timeout=15))
        obs["meta"]["seconds"] = round(time.monotonic() - t0, 2)
        # the revoked task was dequeued and skipped: no result, never ran
        obs["revoked_result"] = revoked.get()
        obs["is_locked_after"] = huey.is_locked("the-lock")
        if kind == "priority":
            obs["priority_order"] = [n for what, n in executed if what == "ordered"]
        obs["attempts"] = dict(sorted(attempts.items()))
        obs["ran_add"] = sorted(a for what, a in executed if what == "add")
        obs["pending"], obs["scheduled_count"] = huey.pending_count(), huey.scheduled_count()
    finally:
        consumer.stop(graceful=True)
    obs["meta"]["seconds_with_stop"] = round(time.monotonic() - t0, 2)
    look()
    # the keys huey created (with notify_result, one per result waited for: their number
    # depends on timing, so they are counted as one name)
    obs["keys"] = sorted({"huey.notify.<name>.<task id>" if k.startswith("huey.notify.")
                          else k.replace(name, "<name>") for k in seen})
    obs["key_slots"] = len({key_slot(k.encode()) for k in seen})
    obs["result_count_after"] = huey.result_count()
    conn = huey.storage.conn.connection_pool.get_connection()
    obs["meta"]["protocol"] = conn.protocol  # RESP3 on redis-server, RESP2 after -NOPROTO
    huey.storage.conn.connection_pool.release(conn)
    huey.flush()
    huey.storage.conn.close()
    return obs


@pytest.mark.parametrize("kind", ["redis", "priority"])
def test_huey(kind: str, standalone, proxy) -> None:
    want = huey_app(standalone.port, kind)
    assert want["results"] == [2 * i for i in range(TASKS)]
    assert want["retried"] == "flaky ok after 2 attempts"
    assert want["always_fails"] == {"error": "ValueError('always fails')", "retries": 0}
    assert want["scheduled"] == 15
    assert want["locked"] == [True, 42] and want["is_locked_after"] is False
    assert want["revoked_result"] is None and 1000 not in want["ran_add"]
    assert want["ran_add"] == sorted([*range(TASKS), 7])
    assert want["attempts"] == {"always_fails": 1, "flaky": 2}
    assert (want["pending"], want["scheduled_count"]) == (0, 0)
    assert want["key_slots"] == 1, want["keys"]
    assert want["keys"] == sorted(
        [*(["huey.notify.<name>.<task id>"] if kind == "redis" else []),
         "huey.redis.<name>", "huey.results.<name>", "huey.schedule.<name>"])
    if kind == "priority":
        assert want["queued_before_start"] == 7
        assert want["priority_order"] == [5, 1, 3, 2, 6, 0, 4]
    try:
        got = huey_app(proxy.port, kind)
    except Exception as exc:
        raise AssertionError(
            f"through the proxy huey failed: {type(exc).__name__}: {exc}") from exc
    got["ok"] = want["ok"] = True
    assert_same(want, got)
