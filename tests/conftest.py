"""Session fixtures: one real 3 masters + 3 replicas Redis Cluster for the whole run, a
standalone redis-server for differential tests, and an rproxy in front of the cluster.
Every process is stopped by its PID at the end, also when tests fail."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rproxy.localcluster import LocalCluster
from tests.support import ProxyThread, StandaloneRedis, proxy_config


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    # DEBUG SLEEP (from loopback) lets tests make a node hang, to exercise op_timeout.
    c = LocalCluster(masters=3, replicas=1, node_timeout_ms=2000,
                     extra_config={"enable-debug-command": "local"})
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def standalone() -> Iterator[StandaloneRedis]:
    s = StandaloneRedis()
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def proxy(cluster: LocalCluster) -> Iterator[ProxyThread]:
    p = ProxyThread(proxy_config(cluster.seeds))
    p.start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def emulating(cluster: LocalCluster) -> Iterator[ProxyThread]:
    """A proxy with every cross-slot emulation on (``--cross-slot emulate``)."""
    p = ProxyThread(proxy_config(cluster.seeds, commands={"cross_slot_transactions": "emulate",
                                                          "cross_slot_writes": "emulate"}))
    p.start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def r(proxy: ProxyThread):  # type: ignore[no-untyped-def]
    """A plain redis-py client (RESP2) connected to the shared proxy."""
    client = proxy.client()
    try:
        yield client
    finally:
        client.close()
