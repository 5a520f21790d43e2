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
    | {"rproxy_ready", "rproxy_hot_slot_samples", "rproxy_hot_key_samples",
       "rproxy_commands_total", "rproxy_command_errors_total",
       "rproxy_command_duration_seconds_bucket"}
    | {name for _, name, _, _ in NODE_FIELDS} | {name for _, name, _ in CLUSTER_FIELDS}
    | {"redis_up", "redis_instance_info", "redis_cluster_state", "redis_db_keys",
       "redis_db_keys_expiring", "redis_connected_slave_offset_bytes",
       "redis_connected_slave_lag_seconds", "redis_commands_total",
       "redis_commands_duration_seconds_total", "redis_commands_rejected_calls_total",
       "redis_commands_failed_calls_total"}
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


def test_compose_stack_has_the_cluster_rproxy_prometheus_and_grafana() -> None:
    compose = yaml.safe_load((CONFIG / "docker-compose.yml").read_text())
    services = compose["services"]
    assert [f"redis-{i}" for i in range(1, 7)] == sorted(s for s in services if s[:6] == "redis-")
    assert "--cluster-replicas 1" in services["cluster-create"]["command"][0]
    rproxy = services["rproxy"]
    assert rproxy["environment"]["RPROXY_METRICS_LISTEN"].endswith(":9121")
    assert rproxy["depends_on"]["cluster-create"]["condition"] == "service_completed_successfully"
    prom = yaml.safe_load((CONFIG / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["rproxy:9121"]
    assert prom["rule_files"] == ["/etc/prometheus/prometheus-alerts.yml"]
    mounts = " ".join(services["grafana"]["volumes"])
    assert "grafana-dashboard.json" in mounts and "provisioning" in mounts
    for path in ("grafana/provisioning/datasources/prometheus.yml",
                 "grafana/provisioning/dashboards/rproxy.yml"):
        assert yaml.safe_load((CONFIG / path).read_text())["apiVersion"] == 1


def test_k8s_sidecar_probes_and_its_config(tmp_path: Path) -> None:
    from rproxy.core.config import load

    docs = {d["kind"]: d for d in yaml.safe_load_all((CONFIG / "k8s-sidecar.yaml").read_text())}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    rproxy = next(c for c in pod["containers"] if c["name"] == "rproxy")
    assert rproxy["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert rproxy["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert {p["containerPort"] for p in rproxy["ports"]} == {7777, 9121}
    assert rproxy["resources"]["limits"] and rproxy["securityContext"]["runAsNonRoot"]
    assert rproxy["envFrom"] == [{"secretRef": {"name": "rproxy-secrets"}}]
    toml = tmp_path / "rproxy.toml"
    toml.write_text(docs["ConfigMap"]["data"]["rproxy.toml"])
    config = load(toml, {})  # the ConfigMap's file is a valid rproxy configuration
    assert config.metrics.listen == "0.0.0.0:9121" and config.proxy.seeds
    # ... and with the image's environment (RPROXY_LISTEN=0.0.0.0:7777) under the pod's, the
    # sidecar listens on the pod's loopback: protected mode lets it start without a password
    pod_env = {e["name"]: e["value"] for e in rproxy["env"] if e["name"] != "RPROXY_CONFIG"}
    config = load(toml, {"RPROXY_LISTEN": "0.0.0.0:7777", **pod_env})
    assert config.listen_addr == ("127.0.0.1", 7777)
