"""A cluster that requires a password (every node: requirepass, masterauth): rproxy uses
``cluster.password`` on every connection it opens -- the data path's, the dedicated ones
(WATCH, blocking commands), the subscriber connections, replica reads, the RESP3 plane, and
the control plane (the slot map, COMMAND, the metrics poller, WAIT). A wrong password is a
clear refusal, never the password in a log."""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid

import pytest
import redis

from rproxy.localcluster import LocalCluster
from tests.support import ProxyThread, keys_in_slots, proxy_config, wait_until

NODE_PASSWORD = "node-pw-" + uuid.uuid4().hex[:6]
RUN = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def locked():  # type: ignore[no-untyped-def]
    with LocalCluster(3, 1, password=NODE_PASSWORD) as c:
        yield c


@pytest.fixture(scope="module")
def through(locked):  # type: ignore[no-untyped-def]
    cfg = proxy_config(locked.seeds, cluster={"password": NODE_PASSWORD},
                       metrics={"listen": "127.0.0.1:0", "cluster_poll_s": 0.5},
                       commands={"cross_slot_transactions": "emulate"})
    with ProxyThread(cfg) as p:
        yield p


def test_every_path_uses_the_cluster_password(through, locked) -> None:
    r = through.client()
    a, b, c = keys_in_slots(3, f"ca:{RUN}")
    assert r.mset({a: "1", b: "2", c: "3"}) and r.mget(a, b, c) == [b"1", b"2", b"3"]
    with r.pipeline(transaction=True) as tx:  # one block per slot
        assert tx.incr(a).incr(b).execute() == [2, 3]
    with r.pipeline(transaction=True) as tx:  # WATCH: a dedicated connection
        tx.watch(a)
        tx.multi()
        tx.set(a, "w")
        assert tx.execute() == [True]
    assert r.blpop([f"ca:{RUN}:empty"], timeout=0.1) is None  # blocking: dedicated too
    assert r.execute_command("WAIT", 1, 2000) >= 0  # the replicas' offsets, polled
    r3 = through.client(protocol=3)  # the RESP3 plane's connections
    assert r3.get(a) == b"w"
    sub = through.client().pubsub()  # the subscriber connections
    sub.subscribe(f"ca:{RUN}:ch")
    wait_until(lambda: sub.get_message(timeout=0.1) is not None, 5, "subscribed")
    assert r.publish(f"ca:{RUN}:ch", "hi") >= 1
    msg = wait_until(lambda: sub.get_message(timeout=0.1), 5, "the message")
    assert msg["data"] == b"hi"
    sub.close()
    # the metrics poller reads every node
    port = through.server.metrics_port

    def every_node_up() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return all(f'redis_up{{node="127.0.0.1:{n.port}"}} 1.0' in text for n in locked.nodes)

    wait_until(every_node_up, 10, "every node polled")
    assert r.delete(a, b, c) == 3


def test_replica_reads_with_the_password(locked) -> None:
    cfg = proxy_config(locked.seeds, cluster={"password": NODE_PASSWORD,
                                              "read_from": "replica"})
    with ProxyThread(cfg) as p:
        r = p.client()
        key = f"ca:{RUN}:replica"
        r.set(key, "v")
        assert wait_until(lambda: r.get(key) == b"v", 5, "the replica has it")
        r.delete(key)


def test_a_wrong_cluster_password_is_refused_clearly(locked, capfd) -> None:
    cfg = proxy_config(locked.seeds, cluster={"password": "wrong-" + NODE_PASSWORD},
                       timeouts={"connect_timeout_s": 1.0})
    errors: list[BaseException] = []
    holder: dict[str, ProxyThread] = {}

    def start() -> None:
        try:
            holder["p"] = ProxyThread(cfg).start(timeout_s=20)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=start)
    t.start()
    t.join(30)
    try:
        assert "p" in holder, errors
        with pytest.raises(redis.ResponseError, match="CLUSTERDOWN|no slot map|rproxy"):
            holder["p"].client().get("k")
        time.sleep(0.5)
    finally:
        if "p" in holder:
            holder["p"].stop()
    out, err = capfd.readouterr()
    assert "WRONGPASS" in out + err  # said why (the node's own words) ...
    assert NODE_PASSWORD not in out + err  # ... never the password


# The least an ACL user of the cluster needs for rproxy (README "Security"): rproxy's own
# commands (the slot map, COMMAND, INFO, CLUSTER INFO, READONLY, ASKING, WAIT, CLIENT ID /
# UNBLOCK on its dedicated connections, SCRIPT / FUNCTION LOAD of remembered scripts) and,
# here, an application's reads, writes, transactions and pub/sub on its own keys and channels.
LEAST = ["~ca:*", "&ca:*", "-@all", "+@connection", "-@dangerous", "+@read", "+@write",
         "+@transaction", "+@pubsub", "+@scripting", "+cluster|shards", "+cluster|slots",
         "+cluster|info", "+command", "+info", "+readonly", "+asking", "+wait", "+client|id",
         "+client|unblock"]


def test_an_acl_user_with_the_least_privileges(locked) -> None:
    user_password = "user-pw-" + uuid.uuid4().hex[:6]
    for node in locked.nodes:  # (ACL rules are per node: every node, replicas included)
        with redis.Redis(node.host, node.port, password=NODE_PASSWORD) as c:
            c.execute_command("ACL", "SETUSER", "rproxy", "reset", "on", f">{user_password}",
                              *LEAST)
    cfg = proxy_config(locked.seeds, cluster={"username": "rproxy", "password": user_password},
                       metrics={"listen": "127.0.0.1:0", "cluster_poll_s": 0.5},
                       commands={"cross_slot_transactions": "emulate"})
    with ProxyThread(cfg) as p:
        r = p.client()
        a, b = keys_in_slots(2, f"ca:{RUN}:acl")
        assert r.mset({a: "1", b: "2"}) and r.mget(a, b) == [b"1", b"2"]
        with r.pipeline(transaction=True) as tx:
            tx.watch(a)
            tx.multi()
            tx.incr(a)
            assert tx.execute() == [2]
        assert r.blpop([f"ca:{RUN}:acl:empty"], timeout=0.1) is None
        assert r.execute_command("WAIT", 1, 2000) >= 0
        sha = r.script_load("return 1")
        assert r.evalsha(sha, 1, a) == 1
        with pytest.raises(redis.exceptions.NoPermissionError, match="no permissions"):
            r.get("elsewhere")  # the user's keys only: the node's own refusal
        with urllib.request.urlopen(f"http://127.0.0.1:{p.server.metrics_port}/readyz",
                                    timeout=5) as resp:
            assert resp.status == 200
        assert r.delete(a, b) == 2
