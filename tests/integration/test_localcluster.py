"""Integration test for rproxy.localcluster: a real 3+3 redis-server cluster."""

from __future__ import annotations

import os
import time


from rproxy.localcluster import LocalCluster
from tests.support import node_client



def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_start_failover_restart_stop() -> None:
    lines: list[str] = []
    cluster = LocalCluster(3, 1, node_timeout_ms=2000, log=lines.append)
    t0 = time.monotonic()
    try:
        cluster.start(timeout_s=50)
        print(f"start took {time.monotonic() - t0:.2f}s; log={lines}")
        workdir = cluster.nodes[0].data_dir.parent
        assert workdir.is_dir()
        pids = [n.pid for n in cluster.nodes]
        assert all(pid is not None for pid in pids)
        assert len(cluster.nodes) == 6 and len(cluster.seeds) == 6
        assert all(p < 32768 and p + 10000 < 32768 for _, p in cluster.seeds)
        assert len(cluster.masters()) == 3
        assert len(cluster.replicas()) == 3

        # a key written to the master of its slot reads back from that master
        with node_client(cluster.nodes[0]) as c:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", "hello"))
        master = cluster.master_of_slot(slot)
        assert master in cluster.masters()
        with node_client(master) as c:
            assert c.set("hello", b"world")
            # Replication is asynchronous: make sure the replica has the write before the
            # kill, as Redis's own failover tests do (03-failover-loop.tcl: WAIT 1 20000).
            assert c.execute_command("WAIT", 1, 5000) == 1
            assert c.get("hello") == b"world"

        # kill that master: its replica is promoted, the cluster recovers
        cluster.kill(master)
        assert master.pid is None and _gone(pids[cluster.nodes.index(master)])
        cluster.wait_ok(timeout_s=20)
        new_master = cluster.master_of_slot(slot)
        assert new_master is not master
        assert len(cluster.masters()) == 3
        deadline = time.monotonic() + 10
        while True:  # the replica may lose the last ~1 s of writes (async repl)
            with node_client(new_master) as c:
                if c.get("hello") == b"world":
                    break
            assert time.monotonic() < deadline, "key lost after failover"
            time.sleep(0.1)

        # restart the old master: it rejoins as a replica
        cluster.restart(master)
        assert master.pid is not None
        deadline = time.monotonic() + 20
        while master not in cluster.replicas():
            assert time.monotonic() < deadline, "restarted node did not become a replica"
            time.sleep(0.1)
        cluster.wait_ok(timeout_s=20)
        assert len(cluster.masters()) == 3 and len(cluster.replicas()) == 3
        pids = [n.pid for n in cluster.nodes] + pids
    finally:
        cluster.stop()
    cluster.stop()  # idempotent
    assert all(_gone(pid) for pid in pids if pid is not None)
    assert not workdir.exists()
