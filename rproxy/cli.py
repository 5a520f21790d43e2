"""Command line: ``rproxy --listen HOST:PORT --seed HOST:PORT [--seed ...] [--config FILE]``.

With no seed anywhere (flags, ``RPROXY_SEEDS``, the config file) rproxy starts an embedded
local cluster of ``redis-server`` processes, serves in front of it, and on exit stops every
process it started and removes their data.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

import structlog
import trio

from rproxy import __version__
from rproxy import log as logsetup
from rproxy.config import Config, ConfigError, load


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
    if proxy:
        overrides["proxy"] = proxy
    return load(args.config, env, overrides)


async def _serve(config: Config) -> None:
    from rproxy.server import ProxyServer

    server = ProxyServer(config)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        host = config.listen_addr[0]
        print(f"rproxy {__version__} ready: connect with  redis-cli -h {host} -p {port}",
              file=sys.stderr, flush=True)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                structlog.get_logger("rproxy").info("signal", signal=signal.Signals(signum).name)
                server.shutdown()
                break
        await server.stopped.wait()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args, dict(os.environ))
    except ConfigError as exc:
        print(f"rproxy: configuration error: {exc}", file=sys.stderr)
        return 2
    logsetup.configure(config.proxy.log_level, config.proxy.log_format)
    log = structlog.get_logger("rproxy")

    cluster = None
    if not config.proxy.seeds:
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
    try:
        trio.run(_serve, config)
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
