"""Python job queues and caches (RQ, arq, django-redis) and redis-py's transactional pipeline,
each run against the standalone redis-server and through an rproxy with the cross-slot
emulations on (`cross_slot_transactions` and `cross_slot_writes` = "emulate", a private proxy
of this module in front of the session's cluster): each run must be correct on its own and both
must observe the same.

These libraries use plain key names (`rq:job:<id>`, `rq:queue:<name>`, `arq:job:<id>`,
`arq:queue`, `<prefix>:1:<key>`) in many slots, and wrap their writes in redis-py's default
`pipeline()`, a MULTI/EXEC over whatever keys it touches, sometimes after a WATCH:
- RQ: enqueue is a MULTI/EXEC over the job hash, the queue list and `rq:queues`; a job with
  `depends_on` WATCHes the dependency's keys; the worker, after each successful job, WATCHes the
  job's dependents set and then writes the job, the registries and its own keys in one MULTI.
- arq: `enqueue_job` WATCHes `arq:job:<id>` then MULTI PSETEX that key + ZADD the queue; the
  worker WATCHes `arq:in-progress:<id>`; results and cleanup are MULTI/EXEC over several keys.
- django-redis: `set_many` and `delete_pattern` are MULTI/EXEC pipelines over many keys,
  `get_many` an MGET, `delete_many` a DEL over many keys, `keys` a KEYS, `incr` an EVAL.
- redis-py: a MULTI/EXEC pipeline over 10 unrelated keys (with a DEL, an EXISTS and an MGET
  over several slots inside it, a runtime error and, in a second one, a queue-time error);
  WATCH on two keys on two masters, with and without another client's write in between, and
  WATCH on one key followed by a transaction over two slots; redis-py's check-and-set loop
  (`Redis.transaction`) from 6 threads on two counters on two masters (no update may be lost).
- RQ's worker also names itself and reads its address (CLIENT SETNAME, CLIENT INFO): redis-py
  before 6 parses that reply strictly (test_rq_worker_client_info).
A failure of the proxy run names the error, the last commands the application sent
(tests/apps/redis_py_commands.py), what its library logged at ERROR and how the run moved
rproxy's emulation counters (INFO: `emulated_transactions`, `emulated_watch_aborts`, ...).

Every name carries this run's id, so the shared servers keep other tests' keys apart; what a
run created is deleted at its end, key by key.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis

from rproxy.core.slots import key_slot
from tests.apps import python_queue_jobs as jobs
from tests.apps.compare import assert_ran, assert_same
from tests.apps.redis_py_commands import CommandLog, quiet
from tests.support import ProxyThread, StandaloneRedis, proxy_config

RUN = uuid.uuid4().hex[:8]
EMULATE = {"cross_slot_transactions": "emulate", "cross_slot_writes": "emulate"}


@pytest.fixture(scope="module")
def emulating_proxy(cluster) -> Iterator[ProxyThread]:  # type: ignore[no-untyped-def]
    """An rproxy of this module's own, with every cross-slot emulation on."""
    p = ProxyThread(proxy_config(cluster.seeds, commands=EMULATE))
    p.start()
    try:
        yield p
    finally:
        p.stop()


class _Errors(logging.Handler):
    """ERROR records of the libraries, kept (not compared: tracebacks hold ids and paths)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += f" [{type(exc).__name__}: {exc}]"
        self.lines.append(f"{record.name}: {text}"[:600])


def proxy_counters(port: int) -> dict[str, int]:
    """rproxy's INFO counters of its emulations and leases (WATCH's dedicated connections)."""
    conn = redis.Redis(host="127.0.0.1", port=port, protocol=2, socket_timeout=10)
    try:
        with quiet():
            info = conn.info("all")
    finally:
        conn.close()
    return {k: v for k, v in info.items()
            if isinstance(v, int) and k.startswith(("emulated_", "lease"))}


def run_app(app: Callable[[int, dict[str, Any]], None], port: int, *,
            proxy: bool = False) -> dict[str, Any]:
    """``app(port, obs)`` fills ``obs``; an exception ends the run (ok False, its error).
    ``proxy``: ``meta.proxy_counters`` says how the run moved rproxy's emulation counters."""
    obs: dict[str, Any] = {"meta": {"step": "start"}}
    before = proxy_counters(port) if proxy else {}
    log = CommandLog(port)
    errors = _Errors()
    loggers = [logging.getLogger(n) for n in ("rq", "arq", "django_redis", "redis")]
    for lg in loggers:
        lg.addHandler(errors)
    t0 = time.monotonic()
    try:
        with log:
            app(port, obs)
        obs["ok"] = True
    except Exception as exc:  # noqa: BLE001 - the observation of a failed run
        obs["ok"] = False
        obs["error"] = f"{type(exc).__name__}: {exc}"
        obs["meta"]["traceback"] = traceback.format_exc()[-3000:]
    finally:
        for lg in loggers:
            lg.removeHandler(errors)
    obs["meta"]["seconds"] = round(time.monotonic() - t0, 2)
    if proxy:
        after = proxy_counters(port)
        obs["meta"]["proxy_counters"] = {k: v - before.get(k, 0) for k, v in after.items()}
    obs["meta"]["last_commands"] = log.tail()
    obs["meta"]["logged_errors"] = errors.lines[-10:]
    return obs


def check(want: dict[str, Any], got: dict[str, Any], *, emulated: bool = True) -> None:
    """The standalone run ended well; the proxy run did and saw the same. A failure names the
    last commands the application sent through the proxy and the errors its library logged.
    ``emulated``: the proxy run went through an emulated transaction (when rproxy counts
    them), i.e. it exercised what it is here for."""
    assert_ran("standalone", want)
    try:
        assert_same(want, got)
    except AssertionError as exc:
        meta = got.get("meta", {})
        raise AssertionError(
            f"{exc}\n-- last commands sent through the proxy (oldest first):\n  "
            + "\n  ".join(meta.get("last_commands", []))
            + "\n-- errors the library logged:\n  " + "\n  ".join(meta.get("logged_errors", []))
            + f"\n-- rproxy's counters moved by this run: {meta.get('proxy_counters')}"
            + (f"\n-- notes (standalone / proxy): {want['meta'].get('notes')} / "
               f"{meta.get('notes')}" if "notes" in meta else "")
            + ("\n-- where it was raised:\n" + "\n".join(
                meta["traceback"].rstrip().splitlines()[-9:]) if "traceback" in meta else "")
        ) from None
    # the run went through the emulation it is here to exercise (when rproxy counts it)
    counters = got["meta"].get("proxy_counters", {})
    if emulated and "emulated_transactions" in counters:
        assert counters["emulated_transactions"] > 0, (
            f"the proxy run went through no emulated transaction: {counters}")


def delete_keys(port: int, pattern: str) -> None:
    """Best-effort cleanup, one key per DEL (works on any proxy configuration)."""
    conn = redis.Redis(host="127.0.0.1", port=port, protocol=2, socket_timeout=10)
    try:
        with quiet():
            for key in list(conn.scan_iter(match=pattern, count=1000)):
                conn.delete(key)
    except redis.RedisError:
        pass
    finally:
        conn.close()


def step(obs: dict[str, Any], what: str) -> None:
    obs["meta"]["step"] = what


def spread(keys: list[str]) -> int:
    """On how many masters the keys are, with the slots as `redis-cli --cluster create` gives
    3 masters (0-5460, 5461-10922, 10923-16383; the tests check with the cluster itself)."""
    return len({(s > 5460) + (s > 10922) for s in (key_slot(k.encode()) for k in keys)})


def masters_of(cluster: Any, keys: list[str]) -> int:
    """On how many masters of the running cluster the keys are."""
    return len({cluster.master_of_slot(key_slot(k.encode())).port for k in keys})


# 1. RQ


def rq_app(port: int, obs: dict[str, Any]) -> None:
    from rq import Queue, SimpleWorker
    from rq.job import Job
    from rq.registry import DeferredJobRegistry, FailedJobRegistry, FinishedJobRegistry
    from rq.results import Result

    conn = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    qname = f"pyq-{RUN}"
    jid = lambda name: f"pyq-{RUN}-{name}"
    jobs.take_log()
    try:
        step(obs, "enqueue")
        q = Queue(qname, connection=conn)
        enqueued: dict[str, Job] = {}
        enqueued["first"] = q.enqueue(jobs.step, "first", job_id=jid("first"))
        step(obs, "enqueue with depends_on")
        enqueued["second"] = q.enqueue(jobs.step, "second", depends_on=enqueued["first"],
                                       job_id=jid("second"))
        step(obs, "enqueue the others")
        enqueued["fails"] = q.enqueue(jobs.fails, "on purpose", job_id=jid("fails"))
        enqueued["describe"] = q.enqueue(jobs.describe, [1, 2, 3, 4], "four",
                                         job_id=jid("describe"))
        for i in range(16):
            enqueued[f"add-{i}"] = q.enqueue(jobs.add, i, i, job_id=jid(f"add-{i}"))
        obs["enqueued"] = len(enqueued)
        obs["before"] = {
            "queued": q.count,
            "second": enqueued["second"].get_status().value,
            "deferred": [j.removeprefix(jid("")) for j in
                         DeferredJobRegistry(queue=q).get_job_ids()],
        }
        step(obs, "worker.work(burst=True)")
        worker = SimpleWorker([q], connection=conn, name=f"pyq-{RUN}-worker")
        obs["work_returned"] = worker.work(burst=True)
        obs["executed"] = [list(e) for e in jobs.take_log()]
        step(obs, "look at the jobs")
        fetched = {name: Job.fetch(job.id, connection=conn) for name, job in enqueued.items()}
        obs["statuses"] = {name: j.get_status().value for name, j in fetched.items()}
        obs["results"] = {name: j.return_value() for name, j in fetched.items()}
        failed = fetched["fails"].latest_result()
        obs["failed_result"] = {
            "type": failed.type.name if failed else None,
            "exc_info_present": bool(failed and failed.exc_string),
            "exc_info_names_error": bool(
                failed and "ValueError: this job fails: on purpose" in (failed.exc_string or "")),
        }
        obs["failed_registry"] = [j.removeprefix(jid("")) for j in
                                  FailedJobRegistry(queue=q).get_job_ids()]
        obs["finished_registry_count"] = FinishedJobRegistry(queue=q).count
        first, second = fetched["first"], fetched["second"]
        obs["dependency"] = {
            "second_depends_on": [d.removeprefix(jid("")) for d in second._dependency_ids],
            "second_started_after_first_ended": bool(
                first.ended_at and second.started_at and second.started_at >= first.ended_at),
            "order": [arg for what, arg in obs["executed"] if what == "step"],
        }
        described = fetched["describe"].latest_result()
        obs["success_result_type"] = bool(described and described.type == Result.Type.SUCCESSFUL)
        obs["queue_count_after"] = q.count
    finally:
        conn.close()
        delete_keys(port, f"*pyq-{RUN}*")


def test_rq(standalone: StandaloneRedis, emulating_proxy: ProxyThread) -> None:
    want = run_app(rq_app, standalone.port)
    assert_ran("standalone", want)
    adds = {f"add-{i}": 2 * i for i in range(16)}
    assert want["enqueued"] == 20
    assert want["before"] == {"queued": 19, "second": "deferred", "deferred": ["second"]}
    assert want["work_returned"] is True
    assert want["statuses"] == {"first": "finished", "second": "finished", "fails": "failed",
                                "describe": "finished", **{k: "finished" for k in adds}}
    assert want["results"] == {"first": "first done", "second": "second done", "fails": None,
                               "describe": {"label": "four", "sum": 10, "count": 4}, **adds}
    assert want["failed_result"] == {"type": "FAILED", "exc_info_present": True,
                                     "exc_info_names_error": True}
    assert want["failed_registry"] == ["fails"]
    assert want["finished_registry_count"] == 19
    assert want["dependency"] == {"second_depends_on": ["first"],
                                  "second_started_after_first_ended": True,
                                  "order": ["first", "second"]}
    assert want["success_result_type"] is True and want["queue_count_after"] == 0
    assert len(want["executed"]) == 20
    got = run_app(rq_app, emulating_proxy.port, proxy=True)
    check(want, got)


# RQ's worker names itself and reads its own address: CLIENT SETNAME, then CLIENT INFO (or
# CLIENT LIST), parsed by redis-py. redis-py before 6 (5.3.1, which arq 0.28 requires: redis<6)
# converts these fields with int() and raises KeyError when one is missing; redis-py 8 skips
# missing ones. So `SimpleWorker.work()` through the proxy depends on the fields it answers.
REDIS_PY_5_INT_FIELDS = ("id", "age", "idle", "db", "sub", "psub", "multi", "qbuf", "qbuf-free",
                         "obl", "argv-mem", "oll", "omem", "tot-mem")


def client_info_app(port: int, obs: dict[str, Any]) -> None:
    conn = redis.Redis(host="127.0.0.1", port=port, protocol=2, socket_timeout=10)
    try:
        step(obs, "CLIENT SETNAME")
        obs["setname"] = conn.client_setname(f"pyq-{RUN}-worker")
        for sub in ("INFO", "LIST"):
            step(obs, f"CLIENT {sub}")
            raw = conn.execute_command("CLIENT", sub, NEVER_DECODE=True)
            lines = [line for line in raw.decode().splitlines()
                     if f" name=pyq-{RUN}-worker " in f" {line} "]
            fields = dict(f.split("=", 1) for f in lines[0].split()) if lines else {}
            obs[f"client_{sub.lower()}"] = {
                "own_line": len(lines) == 1,
                "addr_is_loopback": fields.get("addr", "").startswith("127.0.0.1:"),
                "missing_redis_py_5_int_fields": [f for f in REDIS_PY_5_INT_FIELDS
                                                  if f not in fields]}
    finally:
        conn.close()


def test_rq_worker_client_info(standalone: StandaloneRedis,
                               emulating_proxy: ProxyThread) -> None:
    want = run_app(client_info_app, standalone.port)
    assert_ran("standalone", want)
    assert want["client_info"] == want["client_list"] == {
        "own_line": True, "addr_is_loopback": True, "missing_redis_py_5_int_fields": []}
    got = run_app(client_info_app, emulating_proxy.port, proxy=True)
    check(want, got, emulated=False)


# 2. arq


async def arq_main(port: int, obs: dict[str, Any]) -> None:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.jobs import Job
    from arq.worker import Worker

    settings = RedisSettings(host="127.0.0.1", port=port, conn_timeout=5, conn_retries=0)
    qname = f"arq:queue:pyq-{RUN}"
    jid = lambda name: f"pyq-{RUN}-{name}"
    step(obs, "create_pool")
    pool = await create_pool(settings, default_queue_name=qname)
    try:
        enqueued: dict[str, Job | None] = {}
        step(obs, "enqueue_job")
        for i in range(18):
            enqueued[f"add-{i}"] = await pool.enqueue_job("arq_add", i, i, _job_id=jid(f"add-{i}"))
        enqueued["fails"] = await pool.enqueue_job("arq_fails", "on purpose", _job_id=jid("fails"))
        enqueued["deferred"] = await pool.enqueue_job("arq_deferred", "later",
                                                      _job_id=jid("deferred"),
                                                      _defer_by=timedelta(seconds=1))
        obs["enqueued"] = [name for name, j in enqueued.items() if j is not None]
        step(obs, "enqueue_job with a job id already queued")
        obs["duplicate_is_none"] = (
            await pool.enqueue_job("arq_add", 0, 0, _job_id=jid("add-0"))) is None
        live = {name: j for name, j in enqueued.items() if j is not None}
        obs["statuses_before"] = {name: (await j.status()).value for name, j in live.items()}
        obs["queued_before"] = await pool.zcard(qname)
        step(obs, "Worker(burst=True).main()")
        jobs.take_log()
        worker = Worker(functions=[jobs.arq_add, jobs.arq_fails, jobs.arq_deferred],
                        redis_settings=settings, queue_name=qname, burst=True,
                        handle_signals=False, poll_delay=0.05, max_jobs=5, keep_result=120)
        try:
            await asyncio.wait_for(worker.main(), 30)
        finally:
            await worker.close()
        obs["worker"] = {"complete": worker.jobs_complete, "failed": worker.jobs_failed,
                         "retried": worker.jobs_retried}
        obs["executed"] = sorted(list(e) for e in jobs.take_log())
        step(obs, "Job.result() / Job.status()")
        results: dict[str, Any] = {}
        for name, j in live.items():
            try:
                results[name] = await j.result(timeout=5, poll_delay=0.05)
            except Exception as exc:  # noqa: BLE001 - a failed job's result is its exception
                results[name] = f"raised {type(exc).__name__}: {exc}"
        obs["results"] = results
        obs["statuses_after"] = {name: (await j.status()).value for name, j in live.items()}
        infos = {name: await j.result_info() for name, j in live.items()}
        obs["success"] = {name: (i.success if i else None) for name, i in infos.items()}
        obs["job_try"] = sorted({i.job_try for i in infos.values() if i})
        d = infos.get("deferred")
        obs["deferred_waited_1s"] = bool(
            d and (d.start_time - d.enqueue_time).total_seconds() >= 0.99)
        obs["queued_after"] = await pool.zcard(qname)
    finally:
        await pool.aclose()


def arq_app(port: int, obs: dict[str, Any]) -> None:
    try:
        asyncio.run(arq_main(port, obs))
    finally:
        delete_keys(port, f"*pyq-{RUN}*")


# arq 0.28 is written for redis-py < 6: with redis-py 8 it passes `retry_on_timeout` and calls
# the deprecated `close()`, which redis-py reports with DeprecationWarnings (errors here)
@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:Call to '__init__' function with deprecated usage"
                            ":DeprecationWarning")
def test_arq(standalone: StandaloneRedis, emulating_proxy: ProxyThread) -> None:
    want = run_app(arq_app, standalone.port)
    assert_ran("standalone", want)
    names = [*(f"add-{i}" for i in range(18)), "fails", "deferred"]
    assert want["enqueued"] == names and want["duplicate_is_none"] is True
    assert want["statuses_before"] == {n: "deferred" if n == "deferred" else "queued"
                                       for n in names}
    assert want["queued_before"] == 20
    assert want["worker"] == {"complete": 19, "failed": 1, "retried": 0}
    assert want["results"] == {**{f"add-{i}": 2 * i for i in range(18)},
                               "fails": "raised ValueError: this job fails: on purpose",
                               "deferred": "later ran at try 1"}
    assert want["statuses_after"] == {n: "complete" for n in names}
    assert want["success"] == {n: n != "fails" for n in names}
    assert want["job_try"] == [1] and want["deferred_waited_1s"] is True
    assert want["queued_after"] == 0 and len(want["executed"]) == 20
    got = run_app(arq_app, emulating_proxy.port, proxy=True)
    check(want, got)


# 3. django-redis


@pytest.fixture(scope="module")
def django_caches(standalone: StandaloneRedis, emulating_proxy: ProxyThread) -> Iterator[None]:
    """Django configured in this process: cache aliases `standalone` and `proxy`."""
    import django
    from django.conf import settings

    def cache(port: int) -> dict[str, Any]:
        return {"BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": f"redis://127.0.0.1:{port}/0",
                "KEY_PREFIX": f"pyq{RUN}", "TIMEOUT": 300,
                "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient",
                            "SOCKET_TIMEOUT": 10, "SOCKET_CONNECT_TIMEOUT": 5}}

    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
              "standalone": cache(standalone.port), "proxy": cache(emulating_proxy.port)}
    if not settings.configured:
        settings.configure(CACHES=caches, USE_TZ=True, INSTALLED_APPS=[])
        django.setup()
        yield
    else:  # another module configured Django first
        from django.test.utils import override_settings
        with override_settings(CACHES=caches):
            yield
    from django.core.cache import caches as handler
    handler.close_all()


def django_app(alias: str) -> Callable[[int, dict[str, Any]], None]:
    def app(port: int, obs: dict[str, Any]) -> None:
        from django.core.cache import caches

        c = caches[alias]
        values = {f"prefix:{i}": {"n": i, "s": "x" * i} for i in range(12)}
        others = {"other:a": "A", "other:b": [1, 2, 3], "prefixless": 7}
        try:
            step(obs, "set_many")
            obs["set_many"] = c.set_many({**values, **others})
            step(obs, "get_many")
            got = c.get_many([*values, *others, "missing"])
            obs["get_many"] = {k: got.get(k) for k in [*values, *others, "missing"]}
            obs["keys_before"] = sorted(c.keys("prefix*"))
            step(obs, "delete_many")
            obs["delete_many"] = c.delete_many(["prefix:0", "prefix:1", "missing"])
            obs["keys_after_delete_many"] = sorted(c.keys("prefix*"))
            step(obs, "incr")
            c.set("counter", 10)
            obs["incr"] = [c.incr("counter"), c.incr("counter", 5), c.decr("counter", 2),
                           c.get("counter")]
            try:
                c.incr("no-such-counter")
                obs["incr_missing"] = "no error"
            except ValueError as exc:
                obs["incr_missing"] = f"ValueError: {exc}".replace(RUN, "<run>")
            step(obs, "ttl")
            c.set("ttl:short", "x", timeout=100)
            c.set("ttl:none", "x", timeout=None)
            ttl = c.ttl("ttl:short")
            obs["ttl"] = {"short_in_95_100": 95 <= ttl <= 100, "none": c.ttl("ttl:none"),
                          "missing": c.ttl("missing")}
            step(obs, "add")
            obs["add"] = [c.add("added", 1), c.add("added", 2), c.get("added")]
            step(obs, "get_or_set")
            obs["get_or_set"] = [c.get_or_set("gos", "first"), c.get_or_set("gos", "second"),
                                 c.get_or_set("gos-callable", lambda: "computed"),
                                 c.get("gos-callable")]
            step(obs, "delete_pattern")
            obs["delete_pattern"] = c.delete_pattern("prefix*")
            obs["keys_after_delete_pattern"] = sorted(c.keys("prefix*"))
            obs["others_after"] = c.get_many(list(others))
            obs["all_keys"] = sorted(c.keys("*"))
        finally:
            with quiet():
                c.delete_pattern("*")  # this run's keys (KEY_PREFIX)
            c.close()
    return app


def test_django_redis(standalone: StandaloneRedis, emulating_proxy: ProxyThread,
                      django_caches: None) -> None:
    want = run_app(django_app("standalone"), standalone.port)
    assert_ran("standalone", want)
    names = [f"prefix:{i}" for i in range(12)]
    assert want["set_many"] is None
    assert want["get_many"]["prefix:3"] == {"n": 3, "s": "xxx"}
    assert want["get_many"]["other:b"] == [1, 2, 3] and want["get_many"]["missing"] is None
    assert want["keys_before"] == sorted([*names, "prefixless"])  # the pattern matches it
    assert want["delete_many"] == 2
    assert want["keys_after_delete_many"] == sorted([*names[2:], "prefixless"])
    assert want["incr"] == [11, 16, 14, 14]
    assert want["incr_missing"] == "ValueError: Key ''pyq<run>:1:no-such-counter'' not found"
    assert want["ttl"] == {"short_in_95_100": True, "none": None, "missing": 0}
    assert want["add"] == [True, False, 1]
    assert want["get_or_set"] == ["first", "first", "computed", "computed"]
    assert want["delete_pattern"] == 11 and want["keys_after_delete_pattern"] == []
    assert want["others_after"] == {"other:a": "A", "other:b": [1, 2, 3]}
    got = run_app(django_app("proxy"), emulating_proxy.port, proxy=True)
    check(want, got)


# 4. redis-py: a transactional pipeline over 10 unrelated keys; WATCH over two slots


def pipeline_app(port: int, obs: dict[str, Any]) -> None:
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10, decode_responses=True)
    p = f"pyq:{RUN}:pipe:"
    keys = [f"{p}{name}" for name in ("str", "counter", "list", "hash", "set", "zset", "ttl",
                                      "append", "gone", "other")]
    obs["meta"]["keys"] = keys
    obs["masters"] = spread(keys)

    def plain(v: Any) -> Any:
        if isinstance(v, Exception):
            return f"{type(v).__name__}: {v}"
        if isinstance(v, set):
            return sorted(v)
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in sorted(v.items())}
        return v

    try:
        r.set(f"{p}gone", "to be deleted")
        r.set(f"{p}other", "x")
        step(obs, "pipeline() with mixed commands over 10 keys")
        with r.pipeline() as pipe:  # transaction=True: MULTI ... EXEC
            pipe.set(f"{p}str", "hello")
            pipe.get(f"{p}str")
            pipe.incr(f"{p}counter")
            pipe.incrby(f"{p}counter", 41)
            pipe.rpush(f"{p}list", "a", "b", "c")
            pipe.lrange(f"{p}list", 0, -1)
            pipe.hset(f"{p}hash", mapping={"f1": "v1", "f2": "v2"})
            pipe.hgetall(f"{p}hash")
            pipe.sadd(f"{p}set", "m1", "m2", "m1")
            pipe.smembers(f"{p}set")
            pipe.zadd(f"{p}zset", {"z1": 1.5, "z2": 0.5})
            pipe.zrange(f"{p}zset", 0, -1, withscores=True)
            pipe.set(f"{p}ttl", "v", ex=100)
            pipe.ttl(f"{p}ttl")
            pipe.append(f"{p}append", "ab")
            pipe.append(f"{p}append", "cd")
            pipe.delete(f"{p}gone", f"{p}nothing")  # a DEL over two slots, inside MULTI
            pipe.exists(*keys)  # an EXISTS over ten slots
            pipe.mget(f"{p}str", f"{p}counter", f"{p}gone", f"{p}append")
            pipe.incr(f"{p}list")  # a runtime error: WRONGTYPE, the others still run
            pipe.get(f"{p}other")
            obs["exec"] = plain(pipe.execute(raise_on_error=False))
        step(obs, "pipeline() with a queue-time error")
        with r.pipeline() as pipe:
            pipe.set(f"{p}never1", "x")
            pipe.execute_command("NOSUCHCOMMAND", f"{p}never2")
            pipe.set(f"{p}never3", "x")
            try:
                pipe.execute()
                obs["execabort"] = "no error"
            except redis.ResponseError as exc:
                obs["execabort"] = f"{type(exc).__name__}: {exc}"
        obs["nothing_ran"] = r.exists(f"{p}never1", f"{p}never3") == 0
        step(obs, "pipeline(transaction=False)")
        with r.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.type(k)
            obs["types"] = pipe.execute()
    finally:
        r.close()
        delete_keys(port, f"pyq:{RUN}:pipe:*")


def test_redis_py_pipeline(standalone: StandaloneRedis, emulating_proxy: ProxyThread,
                           cluster: Any) -> None:
    want = run_app(pipeline_app, standalone.port)
    assert_ran("standalone", want)
    assert want["masters"] == 3  # on the cluster's first layout; earlier tests may have moved
    assert masters_of(cluster, want["meta"]["keys"]) >= 2  # one of their slots since
    p = f"pyq:{RUN}:pipe:"
    assert want["exec"] == [
        True, "hello", 1, 42, 3, ["a", "b", "c"], 2, {"f1": "v1", "f2": "v2"}, 2, ["m1", "m2"],
        2, [["z2", 0.5], ["z1", 1.5]], True, 100, 2, 4, 1, 9, ["hello", "42", None, "abcd"],
        "ResponseError: WRONGTYPE Operation against a key holding the wrong kind of value", "x"]
    # redis-py reports the queue-time error (EXEC answered EXECABORT: nothing ran)
    assert want["execabort"].startswith(
        "ResponseError: Command # 2 (NOSUCHCOMMAND pyq:"), want["execabort"]
    assert want["nothing_ran"] is True
    assert want["types"] == ["string", "string", "list", "hash", "set", "zset", "string",
                             "string", "none", "string"], p
    got = run_app(pipeline_app, emulating_proxy.port, proxy=True)
    check(want, got)


def two_slot_keys(name: str) -> tuple[str, str]:
    """Two keys in slots that two different masters own."""
    a = f"pyq:{RUN}:watch:{name}:balance"
    for i in range(1000):
        b = f"pyq:{RUN}:watch:{name}:audit{i}"
        if spread([a, b]) == 2:
            return a, b
    raise AssertionError("no two keys found")


def watch_app(case: str) -> Callable[[int, dict[str, Any]], None]:
    """WATCH balance audit; read both; (`conflict`: another client writes audit, or balance
    for `conflict-on-first-key`); MULTI SET both EXEC. `watch-one`: WATCH balance only, and
    the transaction writes both (a watched transaction that leaves its slot)."""

    def app(port: int, obs: dict[str, Any]) -> None:
        balance, audit = two_slot_keys(case)
        r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10, decode_responses=True)
        other = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10,
                            decode_responses=True)
        try:
            r.set(balance, 100)
            r.set(audit, "start")
            with r.pipeline() as pipe:
                step(obs, "WATCH")
                if case == "watch-one":
                    pipe.watch(balance)
                else:
                    pipe.watch(balance, audit)
                step(obs, "reads after WATCH")
                obs["read"] = [pipe.get(balance), pipe.get(audit)]
                if case == "conflict":
                    step(obs, "the other client's write")
                    obs["other_write"] = other.set(audit, "changed by another client")
                elif case == "conflict-on-first-key":
                    step(obs, "the other client's write")
                    obs["other_write"] = other.set(balance, 500)
                step(obs, "MULTI SET SET EXEC")
                pipe.multi()
                pipe.set(balance, int(obs["read"][0]) - 30)
                pipe.set(audit, "withdrew 30")
                try:
                    obs["exec"] = pipe.execute()
                except redis.WatchError as exc:
                    obs["exec"] = f"WatchError: {exc}"
            step(obs, "read back")
            obs["after"] = [r.get(balance), r.get(audit)]
            step(obs, "the same client goes on")
            obs["ping_after"] = r.ping()
        finally:
            r.close()
            other.close()
            delete_keys(port, f"pyq:{RUN}:watch:{case}:*")
    return app


@pytest.mark.parametrize("case", ["conflict", "conflict-on-first-key", "no-conflict",
                                  "watch-one"])
def test_redis_py_watch_two_slots(case: str, standalone: StandaloneRedis,
                                  emulating_proxy: ProxyThread, cluster: Any) -> None:
    assert masters_of(cluster, list(two_slot_keys(case))) == 2
    want = run_app(watch_app(case), standalone.port)
    assert_ran("standalone", want)
    assert want["read"] == ["100", "start"]
    if case == "conflict":
        assert want["exec"] == "WatchError: Watched variable changed."
        assert want["after"] == ["100", "changed by another client"]
    elif case == "conflict-on-first-key":
        assert want["exec"] == "WatchError: Watched variable changed."
        assert want["after"] == ["500", "start"]
    else:
        assert want["exec"] == [True, True]
        assert want["after"] == ["70", "withdrew 30"]
    got = run_app(watch_app(case), emulating_proxy.port, proxy=True)
    check(want, got)



WORKERS, BUMPS = 6, 15


def watch_counters_app(port: int, obs: dict[str, Any]) -> None:
    """redis-py's check-and-set loop, `Redis.transaction(fn, a, b)` (WATCH a b, GET both,
    MULTI SET a SET b EXEC, again on WatchError), from 6 threads at once, 15 times each, on
    two counters in two masters' slots: no update may be lost (both end at 90). A reader
    thread counts the MGETs that saw the two counters differ: `meta`, not compared (rproxy
    does not isolate one slot's part of a transaction from another's, README)."""
    a, b = two_slot_keys("counters")
    setup = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10, decode_responses=True)
    calls, committed = [0] * WORKERS, [0] * WORKERS
    errors: list[str] = []
    done = threading.Event()
    torn = [0, 0]  # reads that saw a != b, reads

    def worker(n: int) -> None:
        r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10, decode_responses=True)

        def bump(pipe: redis.client.Pipeline) -> None:
            calls[n] += 1
            va, vb = int(pipe.get(a) or 0), int(pipe.get(b) or 0)
            pipe.multi()
            pipe.set(a, va + 1)
            pipe.set(b, vb + 1)

        try:
            for _ in range(BUMPS):
                r.transaction(bump, a, b)  # returns once an EXEC ran (not nil)
                committed[n] += 1
        except Exception as exc:  # noqa: BLE001 - reported as the run's observation
            errors.append(f"worker {n}: {type(exc).__name__}: {exc}")
        finally:
            r.close()

    def reader() -> None:
        r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10, decode_responses=True)
        try:
            while not done.is_set():
                va, vb = r.mget(a, b)
                torn[0] += va != vb
                torn[1] += 1
        except redis.RedisError as exc:
            errors.append(f"reader: {type(exc).__name__}: {exc}")
        finally:
            r.close()

    try:
        setup.mset({a: 0, b: 0})
        step(obs, "6 threads in redis-py's WATCH retry loop")
        threads = [threading.Thread(target=worker, args=(n,), daemon=True)
                   for n in range(WORKERS)]
        watcher = threading.Thread(target=reader, daemon=True)
        for t in [*threads, watcher]:
            t.start()
        for t in threads:
            t.join(30)
        done.set()
        watcher.join(5)
        obs["errors"] = errors
        obs["hung_threads"] = sum(t.is_alive() for t in threads)
        obs["final"] = [int(v or 0) for v in setup.mget(a, b)]
        obs["meta"]["notes"] = {
            "attempts": sum(calls),  # above 90: WatchError retries
            "exec_succeeded": sum(committed),  # each one added 1 to both counters
            "torn_reads": f"{torn[0]} of {torn[1]} MGETs saw the two counters differ"}
    finally:
        setup.close()
        delete_keys(port, f"pyq:{RUN}:watch:counters:*")


def test_redis_py_watch_retry_loop_two_slots(standalone: StandaloneRedis,
                                             emulating_proxy: ProxyThread,
                                             cluster: Any) -> None:
    assert masters_of(cluster, list(two_slot_keys("counters"))) == 2
    want = run_app(watch_counters_app, standalone.port)
    assert_ran("standalone", want)
    assert want["errors"] == [] and want["hung_threads"] == 0
    assert want["final"] == [WORKERS * BUMPS] * 2
    got = run_app(watch_counters_app, emulating_proxy.port, proxy=True)
    check(want, got)


def rq_two_queues_app(port: int, obs: dict[str, Any]) -> None:
    """An RQ worker (not in burst mode) listening on two queues whose keys are in two slots:
    idle, it waits in one BLPOP over both (a blocking pop over several slots, emulated by
    rproxy); jobs enqueued to either queue afterwards wake it."""
    from rq import Queue, SimpleWorker

    conn = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)
    high = Queue(f"pyq2-{RUN}-high", connection=conn)
    low = Queue(f"pyq2-{RUN}-low", connection=conn)
    obs["queue_slots_differ"] = (key_slot(high.key.encode()) != key_slot(low.key.encode()))
    jobs.take_log()
    worker = SimpleWorker([high, low], connection=conn, name=f"pyq2-{RUN}-worker")
    enqueued: list[Any] = []

    def producer() -> None:  # (the worker runs in the main thread: it installs signal handlers)
        time.sleep(1.0)  # the worker is blocked by now, on both queues
        enqueued.extend(low.enqueue(jobs.add, i, 1) for i in range(3))
        time.sleep(0.3)
        enqueued.extend(high.enqueue(jobs.add, 10 + i, 1) for i in range(3))

    thread = threading.Thread(target=producer)
    thread.start()
    try:
        obs["work_returned"] = worker.work(max_jobs=6)
        thread.join(30)
        obs["results"] = sorted(j.return_value() for j in enqueued)
        obs["statuses"] = sorted(j.get_status().value for j in enqueued)
        obs["left"] = (high.count, low.count)
    finally:
        thread.join(30)
        for q in (high, low):
            q.delete(delete_jobs=True)


def test_rq_worker_blocked_on_two_queues(standalone: StandaloneRedis,
                                         emulating_proxy: ProxyThread) -> None:
    want = run_app(rq_two_queues_app, standalone.port)
    assert_ran("standalone", want)
    assert want["queue_slots_differ"] and want["work_returned"] is True
    assert want["results"] == [1, 2, 3, 11, 12, 13] and want["left"] == (0, 0)
    got = run_app(rq_two_queues_app, emulating_proxy.port, proxy=True)
    check(want, got, emulated=False)
