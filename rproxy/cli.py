"""Command line: ``rproxy --listen HOST:PORT --seed HOST:PORT [--seed ...] [--config FILE]``.

With no seed anywhere (flags, ``RPROXY_SEEDS``, the config file) rproxy starts an embedded
local cluster of ``redis-server`` processes, serves in front of it, and on exit stops every
process it started and removes their data.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog
import trio

from rproxy import __version__
from rproxy import log as logsetup
from rproxy.core.config import Config, ConfigError, load, reload_plan

if TYPE_CHECKING:
    from rproxy.net.server import ProxyServer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rproxy",
        description="A Redis Cluster behind one plain Redis endpoint.",
        epilog="Precedence: flags > RPROXY_* environment > config file > defaults. "
        "With no seed at all, an embedded local cluster is started.",
    )
    p.add_argument("--listen", metavar="HOST:PORT", help="address to serve on "
                   "(default 127.0.0.1:7777; env RPROXY_LISTEN)")
    p.add_argument("--seed", metavar="HOST:PORT", action="append", default=None,
                   help="a cluster node to learn the topology from (repeatable; "
                   "env RPROXY_SEEDS=h:p,h:p)")
    p.add_argument("--config", metavar="FILE", help="TOML config file (env RPROXY_CONFIG); "
                   "see config/rproxy.toml")
    p.add_argument("--workers", metavar="N|auto", help="worker processes sharing the port "
                   "(SO_REUSEPORT); auto = one per available core (default 1; env RPROXY_WORKERS)")
    p.add_argument("--cross-slot", choices=["refuse", "emulate"],
                   help="for legacy applications: emulate every command and transaction over "
                   "keys in several slots (sets commands.cross_slot_writes and "
                   "commands.cross_slot_transactions; default refuse)")
    p.add_argument("--cross-slot-writes", choices=["refuse", "emulate"],
                   help="commands.cross_slot_writes (env RPROXY_COMMANDS_CROSS_SLOT_WRITES)")
    p.add_argument("--cross-slot-transactions", choices=["refuse", "emulate"],
                   help="commands.cross_slot_transactions "
                   "(env RPROXY_COMMANDS_CROSS_SLOT_TRANSACTIONS)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve Prometheus metrics (/metrics) and the health probes (/healthz, "
                   "/readyz) over HTTP here (metrics.listen; env RPROXY_METRICS_LISTEN; "
                   "default off)")
    p.add_argument("--tls-listen", metavar="HOST:PORT",
                   help="a TLS listener beside --listen (tls.listen; env RPROXY_TLS_LISTEN)")
    p.add_argument("--tls-cert-file", metavar="FILE", help="its certificate, PEM (tls.cert_file)")
    p.add_argument("--tls-key-file", metavar="FILE", help="its private key, PEM (tls.key_file)")
    p.add_argument("--tls-ca-cert-file", metavar="FILE",
                   help="the CA client certificates must chain to (tls.ca_cert_file)")
    p.add_argument("--tls-auth-clients", choices=["no", "optional", "yes"],
                   help="must a TLS client show a certificate (tls.auth_clients; default no)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["auto", "console", "json"])
    p.add_argument("--version", action="version", version=f"rproxy {__version__}")
    return p


def config_from_args(args: argparse.Namespace, env: dict[str, str]) -> Config:
    overrides: dict[str, dict[str, Any]] = {}
    proxy: dict[str, Any] = {}
    if args.listen:
        proxy["listen"] = args.listen
    if args.seed:
        proxy["seeds"] = [s for item in args.seed for s in item.split(",") if s]
    if args.log_level:
        proxy["log_level"] = args.log_level
    if args.log_format:
        proxy["log_format"] = args.log_format
    if args.workers:
        if args.workers != "auto" and not args.workers.isdigit():
            raise ConfigError(f"--workers: expected a number or auto, got {args.workers!r}")
        proxy["workers"] = 0 if args.workers == "auto" else int(args.workers)
    if proxy:
        overrides["proxy"] = proxy
    commands: dict[str, Any] = {}
    if args.cross_slot:
        commands["cross_slot_writes"] = commands["cross_slot_transactions"] = args.cross_slot
    if args.cross_slot_writes:
        commands["cross_slot_writes"] = args.cross_slot_writes
    if args.cross_slot_transactions:
        commands["cross_slot_transactions"] = args.cross_slot_transactions
    if commands:
        overrides["commands"] = commands
    if args.metrics_listen:
        overrides["metrics"] = {"listen": args.metrics_listen}
    tls = {key: getattr(args, f"tls_{key}") for key in
           ("listen", "cert_file", "key_file", "ca_cert_file", "auth_clients")
           if getattr(args, f"tls_{key}")}
    if tls:
        overrides["tls"] = tls
    return load(args.config, env, overrides)


def raise_open_files_limit(max_clients: int) -> int:
    """Raise the soft open-files limit to the hard one (each client and backend connection is
    a file descriptor); warn when max_clients cannot fit. Returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft < max_clients + 256:
        structlog.get_logger("rproxy").warning(
            "open_files_limit_low", limit=soft, max_clients=max_clients,
            hint="raise the hard limit (ulimit -Hn) or lower limits.max_clients")
    return soft


async def _serve(config: Config, reload: Callable[[], Config] | None = None) -> None:
    from rproxy.net.server import ProxyServer

    if config.proxy.gc_threshold:  # see config/rproxy.toml, proxy.gc_threshold
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(config.proxy.gc_threshold, gen1, gen2)
    server = ProxyServer(config)
    server.on_log_level = lambda level: logsetup.configure(level, server.config.proxy.log_format)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        host = config.listen_addr[0]
        print(f"rproxy {__version__} ready: connect with  redis-cli -h {host} -p {port}",
              file=sys.stderr, flush=True)
        watcher = await nursery.start(_watch_signals, server, nursery.cancel_scope, reload)
        await server.stopped.wait()
        watcher.cancel()


async def _watch_signals(server: ProxyServer, everything: trio.CancelScope,
                         reload: Callable[[], Config] | None,
                         task_status: trio.TaskStatus[trio.CancelScope]) -> None:
    """SIGTERM/SIGINT: drain (graceful shutdown). A second one while draining: stop now.
    SIGHUP: read the configuration again (``reload``) and apply its runtime keys."""
    log = structlog.get_logger("rproxy")
    with trio.CancelScope() as scope:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started(scope)
            async for signum in signals:
                log.info("signal", signal=signal.Signals(signum).name)
                if signum == signal.SIGHUP:
                    _reload(server, reload, log)
                    continue
                if server.draining:
                    log.warning("second_signal_stopping_now")
                    everything.cancel()
                    return
                server.shutdown()


def _read_again(args: argparse.Namespace, embedded_seeds: tuple[str, ...] | None) -> Config:
    """The configuration read again from the same sources (SIGHUP); the embedded cluster's
    seeds, if rproxy started one, as they are."""
    config = config_from_args(args, dict(os.environ))
    return config if embedded_seeds is None else config.replace("proxy", seeds=embedded_seeds)


def _reload(server: ProxyServer, reload: Callable[[], Config] | None, log: Any) -> None:
    """SIGHUP: the runtime keys of the configuration read again are applied at once; other
    changed keys are logged as needing a restart; a bad configuration is rejected, with the
    reason, and the running one kept."""
    if reload is None:
        log.warning("config_reload_unavailable", reason="a worker takes its config from "
                    "the supervisor")
        return
    try:
        loaded = reload()
    except ConfigError as exc:
        log.error("config_reload_rejected", error=str(exc), kept="the running configuration")
        return
    config, applied, restart = reload_plan(server.config, loaded)
    if applied:
        server.reconfigure(config)
        if "proxy.log_level" in applied:
            logsetup.configure(config.proxy.log_level, config.proxy.log_format)
    log.info("config_reloaded", applied=applied, needs_restart=restart)
    if restart:
        log.warning("config_reload_needs_restart", keys=restart)
    server.reload_tls()  # certificates are rotated in place: read them again (same paths)


WORKER_ENV = "RPROXY_WORKER_CONFIG"


def _run_workers(config: Config, n: int) -> int:
    """Supervise ``n`` worker processes that share the listening port (SO_REUSEPORT). Each
    gets the resolved configuration in ``RPROXY_WORKER_CONFIG``. SIGTERM/SIGINT are passed on;
    the workers drain and exit. A worker that dies on its own is started again, unless it died
    within two seconds of starting (a bad port, say): then all are stopped. Returns the exit
    code."""
    log = structlog.get_logger("rproxy")
    env = dict(os.environ)
    env[WORKER_ENV] = json.dumps(config.to_dict())
    cmd = [sys.executable, "-m", "rproxy"]
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    procs = [(subprocess.Popen(cmd, env=env), time.monotonic()) for _ in range(n)]
    host, port = config.listen_addr
    print(f"rproxy {__version__}: {n} workers serving on {host}:{port}", file=sys.stderr, flush=True)
    code = 0
    while not stopping:
        time.sleep(0.2)
        for i, (proc, started) in enumerate(procs):
            if proc.poll() is None or stopping:
                continue
            if time.monotonic() - started < 2.0:
                log.error("worker_failed_at_start", pid=proc.pid, code=proc.returncode)
                stopping, code = True, 1
                break
            log.warning("worker_exited", pid=proc.pid, code=proc.returncode)
            procs[i] = (subprocess.Popen(cmd, env=env), time.monotonic())
    for proc, _ in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + config.timeouts.shutdown_grace_s + 5
    for proc, _ in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    worker_config = os.environ.get(WORKER_ENV)
    try:
        if worker_config:  # a worker started by _run_workers: serve, nothing else
            config = Config.from_dict(json.loads(worker_config))
        else:
            config = config_from_args(args, dict(os.environ))
    except ConfigError as exc:
        print(f"rproxy: configuration error: {exc}", file=sys.stderr)
        return 2
    logsetup.configure(config.proxy.log_level, config.proxy.log_format)
    log = structlog.get_logger("rproxy")
    raise_open_files_limit(config.limits.max_clients)

    cluster = None
    if not worker_config and not config.proxy.seeds:
        from rproxy.localcluster import LocalCluster, RedisServerNotFound

        emb = config.embedded
        try:
            cluster = LocalCluster(
                masters=emb.masters, replicas=emb.replicas, node_timeout_ms=emb.node_timeout_ms,
                redis_server=emb.redis_server,
                log=lambda line: print(f"embedded cluster: {line}", file=sys.stderr, flush=True),
            )
        except RedisServerNotFound as exc:
            print(f"rproxy: {exc}", file=sys.stderr)
            return 1
        try:
            cluster.start()
        except Exception as exc:
            cluster.stop()
            print(f"rproxy: could not start the embedded cluster: {exc}", file=sys.stderr)
            return 1
        config = config.replace("proxy", seeds=tuple(f"{h}:{p}" for h, p in cluster.seeds))
    # A worker serves itself; otherwise one process, or a supervisor of several.
    workers = 1 if worker_config else config.proxy.workers or len(os.sched_getaffinity(0))
    try:
        if workers > 1:
            return _run_workers(config, workers)
        trio.run(_serve, config, None if worker_config else partial(
            _read_again, args, config.proxy.seeds if cluster is not None else None))
    except OSError as exc:
        print(f"rproxy: cannot serve on {config.proxy.listen}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        if cluster is not None:
            log.info("embedded_cluster_stopping")
            cluster.stop()
    return 0
