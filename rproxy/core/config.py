"""Configuration: typed, unit-suffixed, validated, immutable.

Sources, lowest to highest precedence: built-in defaults, the TOML file (``--config FILE`` or
``RPROXY_CONFIG``), environment variables, command-line flags. Every key of the file can be set
from the environment as ``RPROXY_<SECTION>_<KEY>`` (e.g. ``RPROXY_LIMITS_MAX_CLIENTS=500``); the
common ones have short forms: ``RPROXY_LISTEN``, ``RPROXY_SEEDS`` (comma-separated),
``RPROXY_LOG_LEVEL``, ``RPROXY_LOG_FORMAT``. Unknown keys and bad values are errors that name
the key. ``config/rproxy.toml`` documents every key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rproxy.core import acl
from rproxy.core.resp import RequestLimits


class ConfigError(ValueError):
    """Invalid configuration; the message names the key and the reason."""


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_addr(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:7000``) -> (host, port)."""
    host, sep, port_s = text.strip().rpartition(":")
    if not sep or not host or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ConfigError(f"{what}: expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_s)


@dataclass(frozen=True)
class ProxySection:
    listen: str = "127.0.0.1:7777"
    seeds: tuple[str, ...] = ()
    log_level: str = "info"
    log_format: str = "auto"
    workers: int = 1
    gc_threshold: int = 20000
    busy_poll_us: int = 30
    # As Redis's protected-mode: refuse to listen on an address other than loopback while no
    # password is set (auth.requirepass); false accepts it (anyone who reaches the port can
    # then use the cluster).
    protected_mode: bool = True

    def validate(self) -> None:
        host, port = parse_addr(self.listen, "proxy.listen")
        if not 0 <= self.busy_poll_us <= 10000:
            raise ConfigError(
                f"proxy.busy_poll_us: must be between 0 and 10000, got {self.busy_poll_us}")
        if self.gc_threshold < 0:
            raise ConfigError(
                f"proxy.gc_threshold: must be >= 0 (0 = Python's default), got {self.gc_threshold}")
        if self.workers < 0:
            raise ConfigError(f"proxy.workers: must be >= 0 (0 = one per core), got {self.workers}")
        if self.workers != 1 and port == 0:
            raise ConfigError("proxy.workers: several workers need a fixed proxy.listen port")
        for s in self.seeds:
            parse_addr(s, "proxy.seeds")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(
                f"proxy.log_level: expected debug, info, warning or error, got {self.log_level!r}"
            )
        if self.log_format not in ("auto", "console", "json"):
            raise ConfigError(
                f"proxy.log_format: expected auto, console or json, got {self.log_format!r}"
            )


@dataclass(frozen=True)
class LimitsSection:
    max_clients: int = 10000
    max_bulk_len: int = 512 * 1024 * 1024
    max_args: int = 1024 * 1024
    query_buffer_limit: int = 256 * 1024 * 1024
    output_buffer_limit: int = 256 * 1024 * 1024
    pubsub_output_buffer_limit: int = 32 * 1024 * 1024  # Redis's pubsub hard limit
    max_remembered_scripts: int = 10000  # scripts (and libraries) kept to reload: scripts.py
    max_pending_per_client: int = 10000
    max_pending_per_backend: int = 100000
    max_inline_len: int = 64 * 1024  # an inline command, a multibulk or bulk header line
    unauth_max_args: int = 10  # before AUTH (auth.requirepass set): Redis's fixed limits
    unauth_max_bulk_len: int = 16384
    # Soft output limits (Redis's client-output-buffer-limit soft part): a client whose unsent
    # replies stay above the bytes for the seconds is closed; 0 = off.
    output_buffer_soft_limit: int = 0
    output_buffer_soft_s: float = 0.0
    pubsub_output_buffer_soft_limit: int = 8 * 1024 * 1024  # Redis's pubsub 8mb 60
    pubsub_output_buffer_soft_s: float = 60.0

    def validate(self) -> None:
        _positive(self, "limits", exempt=("output_buffer_soft_limit", "output_buffer_soft_s",
                                          "pubsub_output_buffer_soft_limit",
                                          "pubsub_output_buffer_soft_s"))
        for key in ("output_buffer_soft_limit", "output_buffer_soft_s",
                    "pubsub_output_buffer_soft_limit", "pubsub_output_buffer_soft_s"):
            if getattr(self, key) < 0:
                raise ConfigError(f"limits.{key}: must be >= 0 (0 = off)")
        if self.max_inline_len < 1024:
            raise ConfigError("limits.max_inline_len: must be at least 1024")
        if self.max_bulk_len < 1024 * 1024:
            raise ConfigError("limits.max_bulk_len: must be at least 1048576 (as in Redis)")
        if self.query_buffer_limit < 1024 * 1024:
            raise ConfigError("limits.query_buffer_limit: must be at least 1048576")

    def request_limits(self) -> RequestLimits:
        return RequestLimits(self.max_bulk_len, self.max_args, self.query_buffer_limit,
                             self.max_inline_len, False, self.unauth_max_args,
                             self.unauth_max_bulk_len)


@dataclass(frozen=True)
class TimeoutsSection:
    op_timeout_s: float = 5.0
    connect_timeout_s: float = 2.0
    client_idle_s: float = 0.0
    shutdown_grace_s: float = 10.0

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v < 0 or (v == 0 and f.name != "client_idle_s"):
                raise ConfigError(f"timeouts.{f.name}: must be > 0, got {v!r}")


READ_FROM = ("master", "prefer-replica", "replica")


@dataclass(frozen=True)
class ClusterSection:
    refresh_interval_s: float = 10.0
    refresh_min_interval_s: float = 0.25
    max_redirects: int = 5
    retry_backoff_s: float = 0.05
    connections_per_node: int = 1
    max_leases_per_node: int = 1000
    failover_hold_s: float = 30.0
    read_from: str = "master"
    # The cluster's credentials, used on every connection rproxy opens to a node (the data
    # path's, the dedicated ones, the control plane's): an ACL user (or "" for the default
    # user, AUTH <password>) and its password -- from RPROXY_CLUSTER_PASSWORD or the file
    # password_file names (its first line; it wins), never from a command-line flag.
    username: str = ""
    password: str = ""
    password_file: str = ""
    # TLS to the nodes (their tls-port, with tls-cluster yes so that the slot map and MOVED /
    # ASK name the TLS ports): the CA their certificates chain to ("" = the system's), a client
    # certificate and key if the nodes ask for one (tls-auth-clients), whether a certificate
    # must name the node (tls_server_name: the name to expect instead of its address).
    tls: bool = False
    tls_ca_cert_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_check_hostname: bool = True
    tls_server_name: str = ""

    def auth_command(self) -> list[bytes] | None:
        """The AUTH a connection to a node starts with, or None (no password)."""
        if not self.password:
            return None
        if self.username:
            return [b"AUTH", self.username.encode(), self.password.encode()]
        return [b"AUTH", self.password.encode()]

    def validate(self) -> None:
        _positive(self, "cluster", exempt=("tls", "tls_check_hostname"))
        if self.username and not self.password:
            raise ConfigError("cluster.username: set with a password (RPROXY_CLUSTER_PASSWORD "
                              "or cluster.password_file)")
        if not self.tls and (self.tls_ca_cert_file or self.tls_cert_file or self.tls_key_file):
            raise ConfigError("cluster.tls_*_file: set cluster.tls = true to use TLS to the "
                              "nodes")
        if self.tls_key_file and not self.tls_cert_file:
            raise ConfigError("cluster.tls_key_file: needs cluster.tls_cert_file")
        if self.read_from not in READ_FROM:
            raise ConfigError(
                f"cluster.read_from: expected one of {', '.join(READ_FROM)}, got {self.read_from!r}"
            )
        if self.refresh_min_interval_s > self.refresh_interval_s:
            raise ConfigError(
                "cluster.refresh_min_interval_s: must not exceed cluster.refresh_interval_s"
            )


@dataclass(frozen=True)
class CommandsSection:
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    cross_slot_writes: str = "refuse"
    cross_slot_transactions: str = "refuse"

    def validate(self) -> None:
        for key in ("cross_slot_writes", "cross_slot_transactions"):
            if getattr(self, key) not in ("refuse", "emulate"):
                raise ConfigError(
                    f"commands.{key}: expected refuse or emulate, got {getattr(self, key)!r}")
        for key in ("allow", "deny"):
            for name in getattr(self, key):
                if not name or any(c.isspace() for c in name):
                    raise ConfigError(f"commands.{key}: {name!r} is not a command name")


@dataclass(frozen=True)
class MetricsSection:
    listen: str = ""  # HOST:PORT of the HTTP endpoint (/metrics, /healthz, /readyz); "" = off
    cluster_poll_s: float = 10.0  # how often every node's INFO is read for the redis_* metrics
    hot_window_s: float = 60.0  # the sliding window of PROXY HOTSLOTS / HOTKEYS
    hot_top_n: int = 10  # hot slots and keys exported in /metrics (bounded cardinality)
    hot_keys: bool = True  # export hot keys (names of keys) in /metrics
    # The proxy's SLOWLOG (Redis's names): commands at least this many microseconds end to
    # end are logged (0: every command, < 0: none), the newest slowlog_max_len kept.
    slowlog_log_slower_than: int = 10000
    slowlog_max_len: int = 128

    def validate(self) -> None:
        if self.listen:
            parse_addr(self.listen, "metrics.listen")
        for key in ("cluster_poll_s", "hot_window_s"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"metrics.{key}: must be > 0, got {getattr(self, key)!r}")
        if not 0 <= self.hot_top_n <= 1000:
            raise ConfigError(f"metrics.hot_top_n: must be 0..1000, got {self.hot_top_n!r}")
        if self.slowlog_max_len < 0:
            raise ConfigError(
                f"metrics.slowlog_max_len: must be >= 0, got {self.slowlog_max_len!r}")


@dataclass(frozen=True)
class EmbeddedSection:
    masters: int = 3
    replicas: int = 1
    node_timeout_ms: int = 5000
    redis_server: str = "redis-server"

    def validate(self) -> None:
        if self.masters < 1:
            raise ConfigError(f"embedded.masters: must be >= 1, got {self.masters}")
        if self.replicas < 0:
            raise ConfigError(f"embedded.replicas: must be >= 0, got {self.replicas}")
        if self.node_timeout_ms < 100:
            raise ConfigError("embedded.node_timeout_ms: must be >= 100")


def _positive(section: object, name: str, exempt: tuple[str, ...] = ()) -> None:
    for f in dataclasses.fields(section):  # type: ignore[arg-type]
        if f.name in exempt:
            continue
        v = getattr(section, f.name)
        if isinstance(v, (int, float)) and v <= 0:
            raise ConfigError(f"{name}.{f.name}: must be > 0, got {v!r}")


@dataclass(frozen=True)
class AuthSection:
    # The password every client must give (AUTH / HELLO AUTH) before any other command:
    # from RPROXY_AUTH_REQUIREPASS or the file requirepass_file names (its first line; read
    # at start and on SIGHUP, it wins over requirepass); never from a command-line flag. "" =
    # no password (the default user is "nopass", as in Redis).
    requirepass: str = ""
    requirepass_file: str = ""
    # ACL users of rproxy's own, in Redis's rule syntax, one string each: "alice on
    # #<sha256 hex> ~app:* +@all -@dangerous" (the word "user" first may be left out); or
    # aclfile, a Redis ACL file ("user <name> <rules...>" lines). Not both, as in Redis. Read
    # at start. A rule for "default" replaces the default user ("on nopass ~* &* +@all").
    users: tuple[str, ...] = ()
    aclfile: str = ""
    acllog_max_len: int = 128  # ACL LOG's entries (Redis's acllog-max-len)

    def validate(self) -> None:
        if "\n" in self.requirepass or "\r" in self.requirepass:
            raise ConfigError("auth.requirepass: one line, without a line break")
        if self.users and self.aclfile:
            raise ConfigError("auth.users and auth.aclfile: use one of them (as Redis, which "
                              "refuses users in both its configuration and an ACL file)")
        if self.acllog_max_len < 0:
            raise ConfigError("auth.acllog_max_len: must be >= 0")

    def acl_users(self) -> dict[bytes, acl.User]:
        """The users (rproxy.core.acl), the default one among them; ConfigError names the
        rule Redis would refuse."""
        try:
            if self.aclfile:
                try:
                    with open(self.aclfile, encoding="utf-8") as fh:
                        lines = fh.read().split("\n")
                except OSError as exc:
                    raise ConfigError(f"auth.aclfile: cannot read {self.aclfile!r}: "
                                      f"{exc.strerror or exc}") from None
                return acl.parse_users(lines, self.aclfile, self.requirepass, file=True)
            return acl.parse_users(self.users, "auth.users", self.requirepass)
        except acl.RuleError as exc:
            raise ConfigError(f"ACL: {exc}") from None

    def password_required(self) -> bool:
        """A new client must authenticate (the default user has a password, or is off)."""
        default = self.acl_users()[b"default"]
        return not (default.nopass and default.enabled)


# Shown as "(redacted)" by PROXY CONFIG GET; each may come from the file its *_file key names.
SECRET_KEYS = frozenset({"auth.requirepass", "cluster.password"})
REDACTED_KEYS = SECRET_KEYS | {"auth.users"}  # (rules may hold >passwords)


@dataclass(frozen=True)
class TlsSection:
    # A TLS listener beside proxy.listen (Redis's tls-* settings): "HOST:PORT", "" = none.
    listen: str = ""
    cert_file: str = ""  # PEM certificate (chain) and key of the listener; read again on SIGHUP
    key_file: str = ""
    ca_cert_file: str = ""  # the CA client certificates must chain to
    auth_clients: str = "no"  # no | optional | yes: must a client show a certificate
    ciphers: str = ""  # TLS 1.2 cipher list (OpenSSL syntax); "" = Python's secure defaults
    min_version: str = "TLSv1.2"  # TLSv1.2 or TLSv1.3
    handshake_timeout_s: float = 5.0  # a client that has not finished its handshake is closed

    def validate(self) -> None:
        if self.listen:
            parse_addr(self.listen, "tls.listen")
            if not self.cert_file or not self.key_file:
                raise ConfigError("tls.listen: needs tls.cert_file and tls.key_file")
        if self.auth_clients not in ("no", "optional", "yes"):
            raise ConfigError(f"tls.auth_clients: expected no, optional or yes, got "
                              f"{self.auth_clients!r}")
        if self.auth_clients != "no" and not self.ca_cert_file:
            raise ConfigError("tls.auth_clients: checking client certificates needs "
                              "tls.ca_cert_file")
        if self.min_version not in ("TLSv1.2", "TLSv1.3"):
            raise ConfigError(f"tls.min_version: expected TLSv1.2 or TLSv1.3, got "
                              f"{self.min_version!r}")
        if self.handshake_timeout_s <= 0:
            raise ConfigError("tls.handshake_timeout_s: must be > 0")


@dataclass(frozen=True)
class Config:
    proxy: ProxySection = field(default_factory=ProxySection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    timeouts: TimeoutsSection = field(default_factory=TimeoutsSection)
    cluster: ClusterSection = field(default_factory=ClusterSection)
    commands: CommandsSection = field(default_factory=CommandsSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    embedded: EmbeddedSection = field(default_factory=EmbeddedSection)
    auth: AuthSection = field(default_factory=AuthSection)
    tls: TlsSection = field(default_factory=TlsSection)

    def validate(self) -> Config:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()
        if self.metrics.listen and self.proxy.workers != 1:
            raise ConfigError("metrics.listen: served by one process; not with proxy.workers "
                              f"= {self.proxy.workers} (use one worker, or no metrics)")
        return self

    def check_exposure(self) -> None:
        """Protected mode (Redis's protected-mode): no listening beyond loopback without a
        password, unless proxy.protected_mode = false. Checked once the configuration is
        complete (``load``), not at every step of building one."""
        listeners = [("proxy.listen", self.listen_addr[0])]
        if self.tls.listen:
            listeners.append(("tls.listen", parse_addr(self.tls.listen, "tls.listen")[0]))
        for key, host in listeners:
            if self.proxy.protected_mode and not is_loopback(host) \
                    and not self.auth.password_required():
                raise self._exposed(key, host)

    @staticmethod
    def _exposed(key: str, host: str) -> ConfigError:
        return ConfigError(
            f"{key}: {host} is not a loopback address and no password is set, so anyone who "
            "reaches the port could use the cluster. Set a password (RPROXY_AUTH_REQUIREPASS, "
            "or auth.requirepass_file), listen on 127.0.0.1, or set proxy.protected_mode = "
            "false (RPROXY_PROXY_PROTECTED_MODE=false) to accept it")

    @property
    def listen_addr(self) -> tuple[str, int]:
        return parse_addr(self.proxy.listen, "proxy.listen")

    @property
    def seed_addrs(self) -> list[tuple[str, int]]:
        return [parse_addr(s, "proxy.seeds") for s in self.proxy.seeds]

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every key, as the TOML file would hold it (for handing the config to a worker)."""
        return {
            f.name: {k: list(v) if isinstance(v, tuple) else v
                     for k, v in dataclasses.asdict(getattr(self, f.name)).items()}
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> Config:
        return _apply(cls(), data, from_text=False).validate()

    def replace(self, section: str, **values: Any) -> Config:
        """A copy with some keys of one section changed (validated)."""
        sec = dataclasses.replace(getattr(self, section), **values)
        return dataclasses.replace(self, **{section: sec}).validate()


RUNTIME_KEYS = frozenset({
    # The keys SIGHUP applies at once: the proxy reads them where it uses them. Every other
    # changed key is logged as needing a restart, and keeps its running value.
    "commands.cross_slot_writes", "commands.cross_slot_transactions", "limits.max_clients",
    "proxy.log_level", "timeouts.client_idle_s", "metrics.slowlog_log_slower_than",
    "metrics.slowlog_max_len",
})


def reload_plan(running: Config, loaded: Config) -> tuple[Config, list[str], list[str]]:
    """A reloaded configuration against the running one: the configuration to run from now on
    (the running one with the changed runtime keys of ``loaded``), the runtime keys changed,
    and the changed keys that need a restart (``section.key``, sorted)."""
    old, new = running.to_dict(), loaded.to_dict()
    applied, restart = [], []
    merged: dict[str, dict[str, Any]] = {section: dict(keys) for section, keys in old.items()}
    for section, keys in new.items():
        for key, value in keys.items():
            if old[section].get(key) == value:
                continue
            name = f"{section}.{key}"
            if name in RUNTIME_KEYS:
                merged[section][key] = value
                applied.append(name)
            else:
                restart.append(name)
    return Config.from_dict(merged), sorted(applied), sorted(restart)


def set_runtime(running: Config, name: str, text: str) -> Config:
    """``running`` with the runtime key ``name`` (``section.key``) set from ``text`` (PROXY
    CONFIG SET), validated; ConfigError names what is wrong."""
    if name not in RUNTIME_KEYS:
        raise ConfigError(f"{name}: not a key that can change at run time (those are: "
                          f"{', '.join(sorted(RUNTIME_KEYS))}); others need a restart")
    section, key = name.split(".", 1)
    target = _section_types(running)[section][key]
    return running.replace(section, **{key: _coerce(name, text, target, from_text=True)})


def _coerce(key: str, value: Any, target: type[Any] | str, from_text: bool) -> Any:
    """Convert a file or environment value to the field's type, or raise naming the key."""
    t = target if isinstance(target, str) else target.__name__
    try:
        if t == "bool":
            if from_text:
                if str(value).lower() in ("1", "true", "yes", "on"):
                    return True
                if str(value).lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if not isinstance(value, bool):
                raise ValueError
            return value
        if t == "int":
            if isinstance(value, bool) or (not from_text and not isinstance(value, int)):
                raise ValueError
            return int(value)
        if t == "float":
            if isinstance(value, bool) or (not from_text and not isinstance(value, (int, float))):
                raise ValueError
            return float(value)
        if t == "str":
            if not from_text and not isinstance(value, str):
                raise ValueError
            return str(value)
        if t.startswith("tuple"):
            if from_text:
                return tuple(s.strip() for s in str(value).split(",") if s.strip())
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise ValueError
            return tuple(value)
    except ValueError:
        pass
    raise ConfigError(f"{key}: expected {t.replace('tuple[str, ...]', 'a list of strings')}, "
                      f"got {value!r}")


def _section_types(cfg: Config) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for sf in dataclasses.fields(cfg):
        sec = getattr(cfg, sf.name)
        out[sf.name] = {f.name: str(f.type) for f in dataclasses.fields(sec)}
    return out


def _apply(cfg: Config, values: Mapping[str, Mapping[str, Any]], from_text: bool) -> Config:
    types = _section_types(cfg)
    for sec_name, sec_values in values.items():
        if sec_name not in types:
            raise ConfigError(f"{sec_name}: unknown section (known: {', '.join(types)})")
        if not isinstance(sec_values, Mapping):
            raise ConfigError(f"{sec_name}: expected a table of keys")
        changes = {}
        for key, value in sec_values.items():
            if key not in types[sec_name]:
                raise ConfigError(f"{sec_name}.{key}: unknown key")
            changes[key] = _coerce(f"{sec_name}.{key}", value, types[sec_name][key], from_text)
        sec = dataclasses.replace(getattr(cfg, sec_name), **changes)
        cfg = dataclasses.replace(cfg, **{sec_name: sec})
    return cfg


_ENV_SHORT = {
    "RPROXY_LISTEN": ("proxy", "listen"),
    "RPROXY_SEEDS": ("proxy", "seeds"),
    "RPROXY_LOG_LEVEL": ("proxy", "log_level"),
    "RPROXY_LOG_FORMAT": ("proxy", "log_format"),
    "RPROXY_WORKERS": ("proxy", "workers"),
}


def _env_values(env: Mapping[str, str], cfg: Config) -> dict[str, dict[str, str]]:
    types = _section_types(cfg)
    out: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        if not name.startswith("RPROXY_") or name in ("RPROXY_CONFIG", "RPROXY_WORKER_CONFIG"):
            continue
        if name in _ENV_SHORT:
            sec, key = _ENV_SHORT[name]
        else:
            rest = name[len("RPROXY_") :].lower()
            sec, _, key = rest.partition("_")
            if sec not in types or key not in types[sec]:
                raise ConfigError(f"{name}: unknown setting (use RPROXY_<SECTION>_<KEY>)")
        out.setdefault(sec, {})[key] = value
    return out


def load(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Build the configuration: defaults < file < environment < ``overrides`` (the flags)."""
    env = env if env is not None else {}
    cfg = Config()
    path = path or env.get("RPROXY_CONFIG") or None
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r}: not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(path)!r}: {exc}") from None
        cfg = _apply(cfg, data, from_text=False)
    cfg = _apply(cfg, _env_values(env, cfg), from_text=True)
    if overrides:
        cfg = _apply(cfg, overrides, from_text=False)
    cfg = read_secrets(cfg.validate())
    cfg.auth.acl_users()  # (refuses a rule Redis would refuse, before anything starts)
    cfg.check_exposure()
    return cfg


def read_secrets(cfg: Config) -> Config:
    """The password files' first lines, into the keys they stand for."""
    for name in sorted(SECRET_KEYS):
        section, key = name.split(".")
        path = getattr(getattr(cfg, section), f"{key}_file")
        if not path:
            continue
        try:
            with open(path, encoding="utf-8") as fh:
                secret = fh.readline().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"{name}_file: cannot read {path!r}: "
                              f"{exc.strerror or exc}") from None
        if not secret:
            raise ConfigError(f"{name}_file: {path!r} holds no password (its first line is "
                              "empty)")
        cfg = cfg.replace(section, **{key: secret})
    return cfg
