"""Chaos tests: each test gets a FRESH 3+3 cluster (``cluster-node-timeout`` 2000 ms) and an
rproxy subprocess in front of it; both are stopped by PID at the end, also on failure (and the
tail of the proxy's log is printed when a test fails). The figure blocks the tests print are
repeated in pytest's terminal summary, so they show in CI output without ``-s``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rproxy.localcluster import LocalCluster
from tests.chaos.harness import FIGURES, NODE_TIMEOUT_MS, PROXY_CONFIG, ProxyProcess


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("chaos figures")
        for block in FIGURES:
            terminalreporter.write_line(block)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "redis_config(**settings): extra redis.conf settings for chaos_cluster")


@pytest.fixture
def chaos_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A fresh cluster per test: the tests kill, pause and reshard it. Default redis.conf
    (plus what LocalCluster sets), amended by the test's ``redis_config`` marker."""
    marker = request.node.get_closest_marker("redis_config")
    extra = {k.replace("_", "-"): str(v) for k, v in (marker.kwargs if marker else {}).items()}
    c = LocalCluster(masters=3, replicas=1, node_timeout_ms=NODE_TIMEOUT_MS, extra_config=extra)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def start_proxy(request: pytest.FixtureRequest, tmp_path: Path,
                chaos_cluster: LocalCluster) -> Iterator[Callable[..., ProxyProcess]]:
    """``start_proxy(**section_overrides)`` -> a running ProxyProcess in front of
    ``chaos_cluster``, stopped (before the cluster) at the end of the test; on failure its log
    tail is printed."""
    started: list[ProxyProcess] = []

    def start(**overrides: dict[str, Any]) -> ProxyProcess:
        cfg = {k: dict(v) for k, v in PROXY_CONFIG.items()}
        for section, values in overrides.items():
            cfg.setdefault(section, {}).update(values)
        p = ProxyProcess(chaos_cluster.seeds, tmp_path / f"proxy{len(started)}", cfg)
        started.append(p)
        return p.start()

    try:
        yield start
    finally:
        failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False)
                     for w in ("setup", "call"))
        for p in started:
            p.stop()
            if failed:
                print(f"\n--- rproxy log tail ({p.log_path}) ---\n{p.log_tail(40)}")
