"""--workers N: several processes share the listening port (SO_REUSEPORT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import redis

from tests.support import free_port, wait_until


def test_two_workers_share_the_port_and_stop_cleanly(cluster) -> None:
    port = free_port()
    seed = "{}:{}".format(*cluster.seeds[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPROXY_")}
    p = subprocess.Popen([sys.executable, "-m", "rproxy", "--listen", f"127.0.0.1:{port}",
                          "--seed", seed, "--workers", "2", "--log-level", "warning"],
                         env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: redis.Redis(port=port, protocol=2).ping(), 30, "workers up")
        pids: set[int] = set()
        clients = []

        def connect_once() -> bool:
            """One more client; the kernel spreads new connections over the workers that
            listen (the second may still be starting when the first answers)."""
            i = len(clients)
            c = redis.Redis(port=port, protocol=2, single_connection_client=True)
            clients.append(c)
            pids.add(int(c.info("server")["process_id"]))
            assert c.set(f"wk:{i}", i) and c.get(f"wk:{i}") == str(i).encode()
            return len(clients) >= 40 and len(pids) == 2

        wait_until(connect_once, 30, "40 clients served by both workers")
        assert len(pids) == 2, pids
        assert p.pid not in pids  # the supervisor itself serves nobody
        for c in clients:
            c.close()
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err[-2000:]
    assert "2 workers serving on" in err
    for pid in pids:  # every worker is gone
        try:
            os.kill(pid, 0)
            raise AssertionError(f"worker {pid} still running")
        except ProcessLookupError:
            pass


def test_workers_need_a_fixed_port() -> None:
    res = subprocess.run([sys.executable, "-m", "rproxy", "--listen", "127.0.0.1:0",
                          "--seed", "127.0.0.1:1", "--workers", "2"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "proxy.workers" in res.stderr
