"""rproxy.core.config.load: defaults, precedence (defaults < file < environment < overrides),
validation errors that name the key, and the documented config/rproxy.toml."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from rproxy.core.config import Config, ConfigError, load
from rproxy.core.resp import RequestLimits

REPO = Path(__file__).resolve().parents[2]
DOCUMENTED = REPO / "config" / "rproxy.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rproxy.toml"
    path.write_text(text)
    return path


def test_defaults_are_valid():
    cfg = load(env={})
    assert cfg == Config()
    assert cfg.listen_addr == ("127.0.0.1", 7777)
    assert cfg.seed_addrs == []
    assert cfg.limits.max_clients == 10000
    assert cfg.limits.max_bulk_len == 512 * 1024 * 1024
    assert cfg.timeouts.client_idle_s == 0.0
    assert cfg.limits.request_limits() == RequestLimits(
        max_bulk_len=512 * 1024 * 1024, max_args=1024 * 1024, query_buffer_limit=256 * 1024 * 1024
    )


def test_default_config_object_validates():
    assert Config().validate() == Config()


def test_file_values(tmp_path: Path):
    path = write(
        tmp_path,
        """
[proxy]
listen = "0.0.0.0:6380"
seeds = ["10.0.0.1:7000", "[::1]:7001"]
log_level = "debug"
protected_mode = false

[limits]
max_clients = 100

[timeouts]
op_timeout_s = 2      # an integer is accepted for a float key
""",
    )
    cfg = load(path, env={})
    assert cfg.listen_addr == ("0.0.0.0", 6380)
    assert cfg.proxy.seeds == ("10.0.0.1:7000", "[::1]:7001")
    assert cfg.seed_addrs == [("10.0.0.1", 7000), ("::1", 7001)]
    assert cfg.proxy.log_level == "debug"
    assert cfg.limits.max_clients == 100
    assert cfg.timeouts.op_timeout_s == 2.0
    assert isinstance(cfg.timeouts.op_timeout_s, float)
    assert cfg.limits.max_args == 1024 * 1024  # untouched keys keep their defaults


def test_precedence_file_env_overrides(tmp_path: Path):
    path = write(
        tmp_path, "[limits]\nmax_clients = 100\nmax_args = 7\n[proxy]\nlog_level = 'error'\n"
    )
    env = {"RPROXY_LIMITS_MAX_CLIENTS": "200", "RPROXY_LOG_LEVEL": "warning"}
    cfg = load(path, env=env)
    assert cfg.limits.max_clients == 200  # env beats file
    assert cfg.limits.max_args == 7  # file beats default
    assert cfg.proxy.log_level == "warning"
    cfg = load(path, env=env, overrides={"limits": {"max_clients": 300}})
    assert cfg.limits.max_clients == 300  # overrides beat env
    assert cfg.limits.max_args == 7
    assert cfg.proxy.log_level == "warning"


def test_config_path_from_environment(tmp_path: Path):
    path = write(tmp_path, "[limits]\nmax_clients = 42\n")
    assert load(env={"RPROXY_CONFIG": str(path)}).limits.max_clients == 42


def test_explicit_path_beats_rproxy_config(tmp_path: Path):
    a = tmp_path / "a.toml"
    a.write_text("[limits]\nmax_clients = 1\n")
    b = tmp_path / "b.toml"
    b.write_text("[limits]\nmax_clients = 2\n")
    assert load(a, env={"RPROXY_CONFIG": str(b)}).limits.max_clients == 1


@pytest.mark.parametrize(
    "env, section, key, value",
    [
        ({"RPROXY_SEEDS": "a:1,b:2"}, "proxy", "seeds", ("a:1", "b:2")),
        ({"RPROXY_SEEDS": " a:1 , b:2 ,"}, "proxy", "seeds", ("a:1", "b:2")),
        ({"RPROXY_LISTEN": "[::1]:7000"}, "proxy", "listen", "[::1]:7000"),
        ({"RPROXY_LOG_FORMAT": "json"}, "proxy", "log_format", "json"),
        ({"RPROXY_LIMITS_MAX_CLIENTS": "5"}, "limits", "max_clients", 5),
        ({"RPROXY_PROXY_LOG_LEVEL": "error"}, "proxy", "log_level", "error"),
        ({"RPROXY_TIMEOUTS_OP_TIMEOUT_S": "1.5"}, "timeouts", "op_timeout_s", 1.5),
        ({"RPROXY_CLUSTER_MAX_REDIRECTS": "9"}, "cluster", "max_redirects", 9),
        ({"RPROXY_EMBEDDED_REPLICAS": "0"}, "embedded", "replicas", 0),
        ({"UNRELATED": "x", "REDIS_URL": "y"}, "limits", "max_clients", 10000),
    ],
)
def test_environment(env: dict[str, str], section: str, key: str, value: object):
    cfg = load(env=env)
    assert getattr(getattr(cfg, section), key) == value


def test_seed_addrs_from_environment():
    assert load(env={"RPROXY_SEEDS": "a:1,b:2"}).seed_addrs == [("a", 1), ("b", 2)]


# -- errors name the key --------------------------------------------------------------------------
FILE_ERRORS = [
    ("unknown-section", "[nosuch]\nx = 1\n", "nosuch"),
    ("unknown-key", "[proxy]\nnosuch = 1\n", "proxy.nosuch"),
    ("section-not-a-table", "proxy = 1\n", "proxy"),
    ("int-as-string", '[limits]\nmax_clients = "ten"\n', "limits.max_clients"),
    ("int-as-float", "[limits]\nmax_clients = 1.5\n", "limits.max_clients"),
    ("int-as-bool", "[limits]\nmax_clients = true\n", "limits.max_clients"),
    ("float-as-string", '[timeouts]\nop_timeout_s = "5s"\n', "timeouts.op_timeout_s"),
    ("str-as-int", "[proxy]\nlisten = 7777\n", "proxy.listen"),
    ("list-as-string", '[proxy]\nseeds = "a:1"\n', "proxy.seeds"),
    ("list-of-ints", "[proxy]\nseeds = [1, 2]\n", "proxy.seeds"),
    ("listen-without-port", '[proxy]\nlisten = "localhost"\n', "proxy.listen"),
    ("listen-port-out-of-range", '[proxy]\nlisten = "localhost:70000"\n', "proxy.listen"),
    ("listen-port-not-numeric", '[proxy]\nlisten = "localhost:http"\n', "proxy.listen"),
    ("listen-empty-host", '[proxy]\nlisten = ":7777"\n', "proxy.listen"),
    ("bad-seed", '[proxy]\nseeds = ["a:1", "b"]\n', "proxy.seeds"),
    ("bad-log-level", '[proxy]\nlog_level = "loud"\n', "proxy.log_level"),
    ("bad-log-format", '[proxy]\nlog_format = "xml"\n', "proxy.log_format"),
    ("negative-max-clients", "[limits]\nmax_clients = -1\n", "limits.max_clients"),
    ("zero-max-clients", "[limits]\nmax_clients = 0\n", "limits.max_clients"),
    ("negative-max-args", "[limits]\nmax_args = -5\n", "limits.max_args"),
    (
        "negative-pending",
        "[limits]\nmax_pending_per_client = -1\n",
        "limits.max_pending_per_client",
    ),
    ("small-bulk-len", "[limits]\nmax_bulk_len = 1000\n", "limits.max_bulk_len"),
    ("small-query-buffer", "[limits]\nquery_buffer_limit = 1000\n", "limits.query_buffer_limit"),
    ("zero-op-timeout", "[timeouts]\nop_timeout_s = 0\n", "timeouts.op_timeout_s"),
    ("negative-idle", "[timeouts]\nclient_idle_s = -1\n", "timeouts.client_idle_s"),
    ("zero-redirects", "[cluster]\nmax_redirects = 0\n", "cluster.max_redirects"),
    (
        "min-interval-over-interval",
        "[cluster]\nrefresh_interval_s = 1.0\nrefresh_min_interval_s = 2.0\n",
        "cluster.refresh_min_interval_s",
    ),
    ("no-masters", "[embedded]\nmasters = 0\n", "embedded.masters"),
    ("negative-replicas", "[embedded]\nreplicas = -1\n", "embedded.replicas"),
    ("tiny-node-timeout", "[embedded]\nnode_timeout_ms = 10\n", "embedded.node_timeout_ms"),
]


@pytest.mark.parametrize(
    "text, key", [c[1:] for c in FILE_ERRORS], ids=[c[0] for c in FILE_ERRORS]
)
def test_file_errors_name_the_key(tmp_path: Path, text: str, key: str):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load(path, env={})
    assert key in str(exc.value)


@pytest.mark.parametrize(
    "env, key",
    [
        ({"RPROXY_LIMITS_MAX_CLIENTS": "abc"}, "limits.max_clients"),
        ({"RPROXY_LIMITS_MAX_CLIENTS": "-3"}, "limits.max_clients"),
        ({"RPROXY_LIMITS_NOSUCH": "1"}, "RPROXY_LIMITS_NOSUCH"),
        ({"RPROXY_NOSUCH_KEY": "1"}, "RPROXY_NOSUCH_KEY"),
        ({"RPROXY_LISTEN": "nohost"}, "proxy.listen"),
        ({"RPROXY_SEEDS": "a:1,b"}, "proxy.seeds"),
        ({"RPROXY_TIMEOUTS_OP_TIMEOUT_S": "soon"}, "timeouts.op_timeout_s"),
    ],
)
def test_environment_errors_name_the_key(env: dict[str, str], key: str):
    with pytest.raises(ConfigError) as exc:
        load(env=env)
    assert key in str(exc.value)


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"limits": {"max_clients": -1}}, "limits.max_clients"),
        ({"limits": {"nosuch": 1}}, "limits.nosuch"),
        ({"nosuch": {"x": 1}}, "nosuch"),
        ({"proxy": {"listen": "bad"}}, "proxy.listen"),
    ],
)
def test_override_errors_name_the_key(overrides: dict[str, dict[str, object]], key: str):
    with pytest.raises(ConfigError) as exc:
        load(env={}, overrides=overrides)
    assert key in str(exc.value)


def test_missing_file(tmp_path: Path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as exc:
        load(missing, env={})
    assert "not found" in str(exc.value)
    assert str(missing) in str(exc.value)


def test_invalid_toml(tmp_path: Path):
    path = write(tmp_path, "[limits\nmax_clients = 1\n")
    with pytest.raises(ConfigError) as exc:
        load(path, env={})
    assert str(path) in str(exc.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_replace_validates():
    cfg = Config()
    assert cfg.replace("limits", max_clients=3).limits.max_clients == 3
    with pytest.raises(ConfigError, match="limits.max_clients"):
        cfg.replace("limits", max_clients=0)


def test_config_is_immutable():
    cfg = load(env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.limits.max_clients = 1  # type: ignore[misc]


# -- the documented config file (part of the deliverable: must exist) -----------------------------
def test_documented_config_file_loads():
    assert DOCUMENTED.is_file(), f"{DOCUMENTED} is missing (it documents every key)"
    load(DOCUMENTED, env={})


def test_documented_config_file_lists_every_key():
    assert DOCUMENTED.is_file(), f"{DOCUMENTED} is missing (it documents every key)"
    with open(DOCUMENTED, "rb") as fh:
        data = tomllib.load(fh)
    cfg = Config()
    sections = {f.name for f in dataclasses.fields(cfg)}
    assert set(data) == sections
    for name in sections:
        keys = {f.name for f in dataclasses.fields(getattr(cfg, name))}
        assert set(data[name]) == keys, name


def test_reload_plan_applies_runtime_keys_and_names_the_others() -> None:
    from rproxy.core.config import reload_plan

    running = Config().replace("proxy", listen="127.0.0.1:7777", seeds=("127.0.0.1:1",))
    loaded = running.replace("commands", cross_slot_writes="emulate") \
        .replace("limits", max_clients=50).replace("proxy", listen="127.0.0.1:7778")
    config, applied, restart = reload_plan(running, loaded)
    assert applied == ["commands.cross_slot_writes", "limits.max_clients"]
    assert restart == ["proxy.listen"]
    assert config.commands.cross_slot_writes == "emulate" and config.limits.max_clients == 50
    assert config.proxy.listen == "127.0.0.1:7777"  # kept until a restart
    assert reload_plan(running, running)[1:] == ([], [])


def test_protected_mode_refuses_an_open_port_without_a_password(tmp_path: Path) -> None:
    """As Redis's protected-mode: beyond loopback, a password or an explicit opt-out."""
    with pytest.raises(ConfigError, match="0.0.0.0 is not a loopback address and no password"):
        load(None, env={"RPROXY_LISTEN": "0.0.0.0:7777"})
    for env in ({"RPROXY_LISTEN": "0.0.0.0:7777", "RPROXY_AUTH_REQUIREPASS": "s3cret"},
                {"RPROXY_LISTEN": "0.0.0.0:7777", "RPROXY_PROXY_PROTECTED_MODE": "false"},
                {"RPROXY_LISTEN": "127.0.0.2:7777"}, {"RPROXY_LISTEN": "[::1]:7777"},
                {"RPROXY_LISTEN": "localhost:7777"}, {}):
        load(None, env=env)
    assert load(None, env={}).listen_addr == ("127.0.0.1", 7777)  # the default


def test_requirepass_from_a_file_never_a_flag(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("correct horse\nsecond line ignored\n")
    cfg = load(None, env={"RPROXY_AUTH_REQUIREPASS_FILE": str(secret)})
    assert cfg.auth.requirepass == "correct horse"
    cfg = load(None, env={"RPROXY_AUTH_REQUIREPASS_FILE": str(secret),
                          "RPROXY_AUTH_REQUIREPASS": "other"})
    assert cfg.auth.requirepass == "correct horse"  # the file wins
    with pytest.raises(ConfigError, match="auth.requirepass_file: cannot read"):
        load(None, env={"RPROXY_AUTH_REQUIREPASS_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="holds no password"):
        load(None, env={"RPROXY_AUTH_REQUIREPASS_FILE": str(tmp_path / "empty")})
    from rproxy.cli import build_parser

    flags = build_parser().format_help()
    assert "requirepass" not in flags and "password" not in flags
