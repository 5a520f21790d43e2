"""Scripts and functions through the proxy, against real nodes.

* A node that lacks a script the application loaded through rproxy (its cache was flushed on
  the node directly: what a promoted replica or a restarted node looks like) still runs
  EVALSHA: rproxy loads the script there and sends the command again. The same for FCALL after
  FUNCTION FLUSH on the nodes. A flush *through* rproxy means what it means on one Redis
  (differential: the same bytes as a standalone redis-server).
* A script that runs too long does not take its shard down: while it runs, other clients'
  commands to that node get the node's own ``-BUSY`` (the same bytes as from one Redis), the
  other shards answer at once, SCRIPT KILL / FUNCTION KILL reach the busy node on a connection
  of their own, the script's client gets Redis's "killed" error, and the shard serves again.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from rproxy.core.slots import key_slot
from rproxy.localcluster import LocalCluster
from tests.support import ProxyThread, RawConnection, node_client, proxy_config, wait_until
from tests.support import argv as A
from tests.support import raw_pipeline as run

RUN = uuid.uuid4().hex[:10]
INCR = f"return redis.call('incr', KEYS[1]) -- {RUN}"
LIBRARY = (f"#!lua name=lib{RUN}\n"
           f"redis.register_function('incr{RUN}', function(keys, args) "
           f"return redis.call('incr', keys[1]) end)")


def key(name: str) -> str:
    return f"{{scr:{RUN}}}:{name}"


def test_evalsha_after_the_nodes_flushed_their_script_cache(proxy, cluster) -> None:
    r = proxy.client()
    sha = r.script_load(INCR)
    r.delete(key("n"))
    assert r.evalsha(sha, 1, key("n")) == 1
    for node in cluster.masters():
        node_client(node).script_flush()
    assert r.evalsha(sha, 1, key("n")) == 2  # loaded again on the node, run once
    assert r.get(key("n")) == b"2"


def test_a_script_seen_in_eval_is_remembered_too(proxy, cluster) -> None:
    r = proxy.client()
    body = f"return 'seen {RUN}'"
    sha = hashlib.sha1(body.encode()).hexdigest()
    assert r.eval(body, 0) == f"seen {RUN}".encode()
    for node in cluster.masters():
        node_client(node).script_flush()
    assert r.evalsha(sha, 0) == f"seen {RUN}".encode()
    assert r.evalsha(sha.upper(), 0) == f"seen {RUN}".encode()  # (Redis takes either case)


def test_an_unknown_sha_is_still_noscript(proxy, standalone) -> None:
    commands = [A("EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0")]
    assert run(proxy.port, commands) == run(standalone.port, commands)


def test_script_flush_through_the_proxy_means_what_it_means_on_one_redis(proxy,
                                                                         standalone) -> None:
    sha = hashlib.sha1(INCR.encode()).hexdigest()
    commands = [A("DEL", key("f")), A("SCRIPT", "LOAD", INCR), A("EVALSHA", sha, "1", key("f")),
                A("SCRIPT", "FLUSH"), A("EVALSHA", sha, "1", key("f")),
                A("SCRIPT", "EXISTS", sha), A("GET", key("f"))]
    assert run(proxy.port, commands) == run(standalone.port, commands)


def test_fcall_after_the_nodes_flushed_their_functions(proxy, cluster) -> None:
    r = proxy.client()
    r.execute_command("FUNCTION", "LOAD", "REPLACE", LIBRARY)
    r.delete(key("fn"))
    assert r.fcall(f"incr{RUN}", 1, key("fn")) == 1
    for node in cluster.masters():
        node_client(node).function_flush()
    assert r.fcall(f"incr{RUN}", 1, key("fn")) == 2


def test_function_flush_through_the_proxy_means_what_it_means_on_one_redis(proxy,
                                                                           standalone) -> None:
    commands = [A("DEL", key("g")), A("FUNCTION", "LOAD", "REPLACE", LIBRARY),
                A("FCALL", f"incr{RUN}", "1", key("g")), A("FUNCTION", "FLUSH"),
                A("FCALL", f"incr{RUN}", "1", key("g")), A("GET", key("g"))]
    assert run(proxy.port, commands) == run(standalone.port, commands)


# -- a script that runs too long ------------------------------------------------------------------
THRESHOLD_MS = 300  # busy-reply-threshold: the node answers -BUSY after this long
LOOP = "while true do end"
LOOP_LIBRARY = (f"#!lua name=loop{RUN}\n"
                f"redis.register_function('loop{RUN}', function(keys, args) "
                f"while true do end end)")
KINDS = {
    "script": (A("EVAL", LOOP, "1", key("busy")), A("SCRIPT", "KILL")),
    "function": (A("FCALL", f"loop{RUN}", "1", key("busy")), A("FUNCTION", "KILL")),
}


@pytest.fixture(scope="module")
def busy_cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(masters=3, replicas=0, node_timeout_ms=2000,
                     extra_config={"busy-reply-threshold": str(THRESHOLD_MS)})
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _busy_scenario(port: int, run_it: list[bytes], kill: list[bytes],
                   other_key: str | None = None) -> dict[str, object]:
    """Start the endless script on one connection; while it runs, from another: a command on
    the busy node (after the threshold), one on another shard, then KILL. What each got."""
    seen: dict[str, object] = {}
    runner = RawConnection(port)

    def run_script() -> None:
        seen["script"] = runner.pipeline([run_it])[0]

    thread = threading.Thread(target=run_script)
    thread.start()
    other = RawConnection(port)
    try:
        time.sleep(THRESHOLD_MS / 1000 + 0.8)
        seen["busy_get"] = other("GET", key("busy"))
        if other_key is not None:
            t0 = time.monotonic()
            seen["other_shard"] = other("SET", other_key, "1")
            seen["other_shard_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        seen["kill"] = other.pipeline([kill])[0]
        seen["kill_s"] = time.monotonic() - t0
        thread.join(10)
        seen["after"] = other("SET", key("busy"), "v")
    finally:
        if thread.is_alive():  # never leave a node running a script for ever
            RawConnection(port).pipeline([kill])
            thread.join(10)
        runner.close()
        other.close()
    return seen


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_busy_script_does_not_take_its_shard_down(kind, busy_cluster, standalone) -> None:
    run_it, kill = KINDS[kind]
    load = A("FUNCTION", "LOAD", "REPLACE", LOOP_LIBRARY)
    direct = standalone.client()
    old = direct.config_get("busy-reply-threshold")["busy-reply-threshold"]
    direct.config_set("busy-reply-threshold", THRESHOLD_MS)
    try:
        run(standalone.port, [load])
        want = _busy_scenario(standalone.port, run_it, kill)
    finally:
        direct.config_set("busy-reply-threshold", old)
    busy_slot = key_slot(key("busy").encode())
    busy_node = busy_cluster.master_of_slot(busy_slot)
    other_key = next(f"other:{i}" for i in range(10000)
                     if busy_cluster.master_of_slot(key_slot(f"other:{i}".encode())).port
                     != busy_node.port)
    with ProxyThread(proxy_config(busy_cluster.seeds)) as p:
        run(p.port, [load])
        got = _busy_scenario(p.port, run_it, kill, other_key)
        # The shard serves again, with no failover and nothing held.
        info = p.client().info("proxy")
        assert info["held_requests"] == 0
        assert p.client().get(key("busy")) == b"v"
    assert want["busy_get"].startswith(b"-BUSY ")
    assert got["busy_get"] == want["busy_get"]  # the node's own -BUSY, as from one Redis
    assert got["script"] == want["script"]  # "... killed by user ..."
    assert b"killed" in want["script"].lower()  # type: ignore[union-attr]
    assert got["kill"] == want["kill"] == b"+OK\r\n"
    assert got["kill_s"] < 1.0, got  # on a connection of its own, not behind the script
    assert got["other_shard"] == b"+OK\r\n" and got["other_shard_s"] < 1.0, got
    assert got["after"] == want["after"] == b"+OK\r\n"


def test_script_kill_with_nothing_running(proxy, standalone) -> None:
    commands = [A("SCRIPT", "KILL"), A("FUNCTION", "KILL")]
    assert run(proxy.port, commands) == run(standalone.port, commands)


def test_a_slow_but_finite_script_is_answered(busy_cluster) -> None:
    """A script that runs longer than the busy detection (0.5 s), then ends by itself: its
    client gets its result, and what other clients sent meanwhile is answered too."""
    slow = "local t = redis.call('time'); local s = t[1] + t[2] / 1e6; " \
           "repeat local n = redis.call('time') until n[1] + n[2] / 1e6 > s + 0.8; return 7"
    with ProxyThread(proxy_config(busy_cluster.seeds)) as p:
        r = p.client()
        r.set(key("slow"), "x")
        out: dict[str, object] = {}
        thread = threading.Thread(target=lambda: out.update(v=p.client().eval(
            slow, 1, key("slow"))))
        thread.start()
        wait_until(lambda: p.client().info("clients")["connected_clients"] >= 2, 5)
        replies = []
        for _ in range(3):
            try:
                replies.append(r.get(key("slow")))
            except Exception as exc:  # BUSY while it runs: the node's own answer
                replies.append(str(exc))
            time.sleep(0.2)
        thread.join(10)
        assert out["v"] == 7
        assert all(v == b"x" or v.startswith("BUSY") for v in replies), replies
        assert r.get(key("slow")) == b"x"
