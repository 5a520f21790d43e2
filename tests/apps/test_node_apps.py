"""Node.js applications (tests/apps/node), each run against the standalone redis-server and
through the proxy: each run must be correct, and both must have observed the same thing.

- ioredis_app.js: ioredis's standalone client with its defaults (RESP3 first: on the proxy's
  `-NOPROTO` it falls back to RESP2, so `meta.protocol` differs and is not compared), a
  MULTI/EXEC transaction, EXECABORT, a WATCH conflict and a WATCH retry loop from five
  connections, a subscriber (SUBSCRIBE + PSUBSCRIBE, PING, UNSUBSCRIBE / PUNSUBSCRIBE).
- node_redis_app.js: node-redis v4, multi().exec(), executeIsolated() + WATCH, a blocking pop
  on an isolated connection, a subscriber made with duplicate().
- bullmq_app.js: BullMQ with prefix '{bull}': Queue, Worker, QueueEvents, 50 jobs, a retried
  job, an idle worker woken out of BZPOPMIN.
- bullmq_eviction.js: BullMQ's start-up check of INFO (redis_version, maxmemory_policy), with
  maxmemory-policy set to allkeys-lru on the servers: BullMQ must warn, as it does against one
  Redis (an evicting Redis loses jobs).
"""

from __future__ import annotations

from contextlib import closing

from tests.apps.compare import assert_ran, assert_same
from tests.support import node_client


def _both(node_app, script: str, standalone, proxy):  # type: ignore[no-untyped-def]
    want = node_app(script, standalone.port)
    assert_ran("against redis-server", want)
    got = node_app(script, proxy.port)
    return want, got


def _check_pubsub(obs: dict, messages: int) -> None:
    assert obs["received_as_sent"], obs["received"]
    assert len(obs["received"]) == messages
    assert obs["publish_counts"][:messages] == [1] * messages


def test_ioredis(node_app, standalone, proxy) -> None:
    want, got = _both(node_app, "ioredis_app.js", standalone, proxy)
    assert want["multi"] == ["OK", 2, "2"]
    assert want["multi_runtime_error"][1] == {
        "error": "ERR value is not an integer or out of range"}
    assert want["multi_queue_error"]["error"].startswith("EXECABORT")
    assert want["watch_conflict_exec"] is None and want["watch_conflict_value"] == "v2"
    assert want["counter"] == want["counter_expected"] == 100
    assert (want["subscribe"], want["psubscribe"]) == (2, 3)
    _check_pubsub(want, 21)
    assert want["publish_counts"][-1] == 0  # a channel nobody listens to
    assert want["publish_after_unsubscribe"] == [0, 1]
    assert want["unsubscribe_all"] == 0 and want["after_unsubscribe_get"] == "ok"
    assert want["received_after"] == [["message", "b", "b1"]]
    assert_same(want, got)


def test_node_redis_v4(node_app, standalone, proxy) -> None:
    want, got = _both(node_app, "node_redis_app.js", standalone, proxy)
    assert want["multi"] == ["OK", 2]
    assert want["multi_runtime_error"]["errorIndexes"] == [1]
    assert want["watch_conflict"] == "WatchError" and want["watch_conflict_value"] == "v2"
    assert want["counter"] == want["counter_expected"] == 100
    assert want["blpop"] == {"key": True, "element": "job-1"}
    _check_pubsub(want, 21)
    assert want["publish_after_unsubscribe"] == [0, 1, 1]
    assert want["publish_after_all_unsubscribed"] == [0, 0]
    assert want["received_after"] == [["message", "b", "b1"], ["pmessage", "news.x", "n-x"]]
    assert want["duplicate_ping"] == "PONG"
    assert_same(want, got)


def test_bullmq(node_app, standalone, proxy) -> None:
    want, got = _both(node_app, "bullmq_app.js", standalone, proxy)
    assert want["added"] == 50 and len(want["completed_names"]) == 50
    assert want["returnvalues_ok"] and want["processed_once"]
    assert want["flaky"]["attempts"] == 2 and want["flaky"]["returnvalue"]["doubled"] == 200
    assert want["workers"] == 1
    assert want["blocked_while_idle"] and want["after_idle_picked_up_promptly"], want["meta"]
    assert want["events_completed"] == 52 and want["events_returnvalues_ok"]
    assert want["counts"]["completed"] == 52 and want["errors"] == []
    assert_same(want, got)


def test_bullmq_warns_about_an_evicting_server(node_app, standalone, cluster, proxy) -> None:
    """maxmemory-policy allkeys-lru on the standalone server and on every node of the cluster
    (set on the nodes directly; maxmemory stays 0, so nothing is evicted), then put back."""
    nodes = [*cluster.masters(), *cluster.replicas()]

    def set_policy(policy: str) -> None:
        with closing(standalone.client()) as c:
            c.config_set("maxmemory-policy", policy)
        for node in nodes:
            with closing(node_client(node)) as c:
                c.config_set("maxmemory-policy", policy)

    set_policy("allkeys-lru")
    try:
        want, got = _both(node_app, "bullmq_eviction.js", standalone, proxy)
    finally:
        set_policy("noeviction")
    assert want["warnings"] == [
        'warn: IMPORTANT! Eviction policy is allkeys-lru. It should be "noeviction"']
    assert want["info_fields"] == ["redis_version", "maxmemory_policy"]
    assert want["config_get"] == ["maxmemory-policy", "allkeys-lru"] and want["errors"] == []
    assert_same(want, got)
