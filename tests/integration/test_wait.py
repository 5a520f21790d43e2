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

from tests.support import RawConnection
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
    replica = cluster.replicas()[0]
    os.kill(replica.pid, signal.SIGSTOP)  # (shorter than node_timeout: not failed over)
    try:
        r.set(key("d"), "1")
        t0 = time.monotonic()
        assert r.execute_command("WAIT", 1, 400) == 0
        assert time.monotonic() - t0 >= 0.35
    finally:
        os.kill(replica.pid, signal.SIGCONT)
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
