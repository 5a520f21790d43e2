"""config/grafana-dashboard.json and config/prometheus-alerts.yml: well formed, and every series
they query is one rproxy's /metrics exports (rproxy/net/metrics.py, rproxy/core/stats.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from rproxy.core.stats import COUNTER, STATS
from rproxy.net.metrics import CLUSTER_FIELDS, NODE_FIELDS

CONFIG = Path(__file__).resolve().parents[2] / "config"
SERIES = re.compile(r"\b((?:rproxy|redis)_[a-z_]+)\b")

EXPORTED = (
    {f"rproxy_{s.name}_total" if s.kind == COUNTER else f"rproxy_{s.name}" for s in STATS}
    | {"rproxy_ready", "rproxy_hot_slot_samples", "rproxy_hot_key_samples"}
    | {name for _, name, _, _ in NODE_FIELDS} | {name for _, name, _ in CLUSTER_FIELDS}
    | {"redis_up", "redis_instance_info", "redis_cluster_state", "redis_db_keys",
       "redis_db_keys_expiring", "redis_connected_slave_offset_bytes",
       "redis_connected_slave_lag_seconds"}
)


def test_dashboard_queries_exported_series() -> None:
    dash = json.loads((CONFIG / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(dash["panels"]) >= 10 and all(p["description"] for p in dash["panels"])
    used = {m for e in exprs for m in SERIES.findall(e)}
    assert used and used <= EXPORTED, used - EXPORTED
    assert any(m.startswith("redis_") for m in used) and any(m.startswith("rproxy_") for m in used)


def test_alert_rules_cover_the_named_conditions() -> None:
    rules = yaml.safe_load((CONFIG / "prometheus-alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    for name in ("RedisClusterStateNotOk", "RedisShardWithoutReachableMaster",
                 "RedisReplicationLag", "RedisMemoryNearMaxmemory", "RedisHotSlot"):
        assert name in alerts
    for rule in alerts.values():
        assert {"expr", "labels", "annotations"} <= set(rule)
        used = set(SERIES.findall(rule["expr"]))
        assert used and used <= EXPORTED, (rule["alert"], used - EXPORTED)
