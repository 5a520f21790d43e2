"""WAIT through the proxy, against the session cluster (3 masters, one replica each).

WAIT runs beside the data path (rproxy/net/wait.py): after the client's earlier replies are in,
rproxy waits until the replicas of every master acknowledged the offset the master had reached,
and answers the minimum count. Tests: Redis's argument errors (differential), a write
acknowledged at once, a count no shard can reach answered at the timeout, a replica paused with
SIGSTOP (the answer drops to 0, and comes back once it runs again), the client's later commands
held behind its WAIT, and other clients not stalled by a WAIT that waits.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

from rproxy.core.slots import key_slot
from tests.support import RawConnection, node_client
from tests.support import argv as A
from tests.support import raw_pipeline as run

RUN = uuid.uuid4().hex[:10]


def key(name: str) -> str:
    return f"{{wait:{RUN}}}:{name}"


def test_argument_errors_as_one_redis(proxy, standalone) -> None:
    commands = [A("WAIT", "x", "1"), A("WAIT", "1", "x"), A("WAIT", "1", "-1"), A("WAIT", "1"),
                A("WAIT", "1", "1.5"), A("PING")]
    assert run(proxy.port, commands) == run(standalone.port, commands)


def test_a_write_is_acknowledged_by_its_replica(r) -> None:
    r.set(key("a"), "1")
    t0 = time.monotonic()
    assert r.execute_command("WAIT", 1, 5000) == 1
    assert time.monotonic() - t0 < 1.0  # the replicas were asked to acknowledge at once


def test_more_replicas_than_there_are_times_out_with_the_count(r) -> None:
    r.set(key("b"), "1")
    t0 = time.monotonic()
    assert r.execute_command("WAIT", 2, 300) == 1
    assert 0.25 < time.monotonic() - t0 < 2.0


def test_later_commands_wait_for_the_wait(proxy) -> None:
    replies = run(proxy.port, [A("SET", key("c"), "v"), A("WAIT", "1", "0"), A("GET", key("c")),
                               A("WAIT", "0", "0")])
    # (WAIT 0 answers at once with how many have acknowledged so far, as on one Redis)
    assert replies[:3] == [b"+OK\r\n", b":1\r\n", b"$1\r\nv\r\n"]
    assert replies[3] in (b":0\r\n", b":1\r\n")


def test_a_paused_replica_is_not_counted(proxy, cluster, r) -> None:
    # Every replica of one master (after the failover tests a master may have two: a restarted
    # master rejoins as a replica), so that this master's writes reach none.
    port = cluster.masters()[0].port
    paused = [n for n in cluster.replicas()
              if node_client(n).info("replication").get("master_port") == port]
    assert paused
    for replica in paused:
        os.kill(replica.pid, signal.SIGSTOP)  # (shorter than node_timeout: not failed over)
    try:
        r.set(key("d"), "1")
        t0 = time.monotonic()
        assert r.execute_command("WAIT", 1, 400) == 0  # (the first WAIT: every master)
        assert time.monotonic() - t0 >= 0.35
    finally:
        for replica in paused:
            os.kill(replica.pid, signal.SIGCONT)
    assert r.execute_command("WAIT", 1, 5000) == 1


def _key_on(cluster, master, prefix: str) -> str:
    return next(f"{{{prefix}:{i}}}" for i in range(10000)
                if cluster.master_of_slot(key_slot(f"{prefix}:{i}".encode())).port == master.port)


def test_wait_counts_the_masters_the_client_wrote_to(proxy, cluster) -> None:
    """From its first WAIT on, a client's WAIT waits for the masters it wrote to since its
    last WAIT: a paused replica of another master does not lower the count."""
    a, b = cluster.masters()[0], cluster.masters()[1]
    on_a, on_b = _key_on(cluster, a, f"wa{RUN}"), _key_on(cluster, b, f"wb{RUN}")
    b_replica = next(n for n in cluster.replicas()
                     if node_client(n).info("replication").get("master_port") == b.port)
    r = proxy.client()
    r.set(on_a, "1")
    assert r.execute_command("WAIT", 1, 5000) == 1  # the first: every master
    os.kill(b_replica.pid, signal.SIGSTOP)
    try:
        r.set(on_a, "2")
        t0 = time.monotonic()
        assert r.execute_command("WAIT", 1, 2000) == 1  # only A was written to
        assert time.monotonic() - t0 < 1.5
        r.set(on_b, "1")
        assert r.execute_command("WAIT", 1, 300) == 0  # B's replica is paused
        # nothing written since: the replicas connected (B's still counts as connected)
        assert r.execute_command("WAIT", 1, 300) == 1
    finally:
        os.kill(b_replica.pid, signal.SIGCONT)
    assert r.execute_command("WAIT", 1, 5000) == 1


def test_other_clients_are_not_stalled_by_a_waiting_client(proxy, r) -> None:
    waiter = RawConnection(proxy.port)
    result: dict[str, bytes] = {}
    thread = threading.Thread(
        target=lambda: result.update(w=waiter.pipeline([A("WAIT", "3", "1000")])[0]))
    try:
        thread.start()
        time.sleep(0.1)
        worst = 0.0
        for i in range(20):
            t0 = time.monotonic()
            r.set(key(f"e{i}"), i)
            worst = max(worst, time.monotonic() - t0)
        thread.join(5)
    finally:
        waiter.close()
    assert result["w"] == b":1\r\n"
    assert worst < 0.2, worst
