"""Start and stop a real local Redis Cluster made of ``redis-server`` processes.

Synchronous helper (no trio/asyncio) used by the CLI's embedded cluster, the
pytest session fixture, the load-test harness and chaos tests.  It talks to its
nodes through the proxy's own blocking control connection
(:class:`rproxy.net.control.ControlConnection`), so redis-py is not needed at
run time; replies are raw RESP2 values (bulk strings are ``bytes``).

Ownership: a :class:`LocalCluster` owns every ``redis-server`` process it
spawns and the temporary directory it creates (when ``workdir`` is None).
:meth:`LocalCluster.stop` (also called by ``__exit__``, by a failed
:meth:`LocalCluster.start` and by an ``atexit`` hook) terminates exactly those
processes, by PID, and removes that directory.  Nothing else is ever signalled.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rproxy.net.control import ControlConnection, ControlError

__all__ = ["LocalCluster", "Node", "RedisServerNotFound"]

SLOTS = 16384
_PORT_LO, _PORT_HI = 20000, 22000  # (+10000 for the bus) stays below 32768


class RedisServerNotFound(RuntimeError):
    """``redis-server`` is not installed / not on PATH."""


@dataclass
class Node:
    """One ``redis-server`` of a :class:`LocalCluster` (which owns the process).

    ``process`` is None while the node is not running (killed or stopped).
    """

    host: str
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)


def _free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def _pick_ports(host: str, n: int, avoid: set[int]) -> list[int]:
    """``n`` consecutive ports, from a random start, with port and port+10000 free."""
    span, start = _PORT_HI - _PORT_LO, random.randrange(_PORT_HI - _PORT_LO)
    chosen: list[int] = []
    for i in range(span):
        p = _PORT_LO + (start + i) % span
        if p in avoid or not (_free(host, p) and _free(host, p + 10000)):
            chosen = []
            continue
        chosen = chosen + [p] if chosen and p == chosen[-1] + 1 else [p]
        if len(chosen) == n:
            return chosen
    raise RuntimeError(f"no {n} free port pairs in {_PORT_LO}..{_PORT_HI}")


# What a failed admin command raises: an error reply, a closed connection or garbage
# (ControlError), refused / reset / timed out (OSError, TimeoutError included).
_ADMIN_ERRORS = (ControlError, OSError)


@dataclass(frozen=True)
class NodeTls:
    """TLS for every node (``LocalCluster(tls=...)``): its certificate and key (also shown as
    a client certificate, as the nodes ask for one: tls-auth-clients yes), and the CA."""

    cert_file: str
    key_file: str
    ca_cert_file: str

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_cert_file)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def cli_args(self) -> list[str]:
        """redis-cli's flags for it."""
        return ["--tls", "--cacert", self.ca_cert_file, "--cert", self.cert_file,
                "--key", self.key_file]


def _parse_info(text: str) -> dict[str, str]:
    """``INFO`` text -> {field: value} (section headers and blank lines skipped)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value
    return fields


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LocalCluster:
    """A throw-away Redis Cluster on loopback; the instance owns all its nodes."""

    def __init__(self, masters: int = 3, replicas: int = 1, *, host: str = "127.0.0.1",
                 node_timeout_ms: int = 2000, redis_server: str = "redis-server",
                 workdir: str | Path | None = None, extra_config: dict[str, str] | None = None,
                 log: Callable[[str], None] | None = None, password: str | None = None,
                 tls: NodeTls | None = None) -> None:
        """Only configures; raises RedisServerNotFound at once if redis-server is missing.
        ``password``: every node requires it (requirepass, and masterauth for its
        replication). ``tls``: the nodes speak TLS only (``port`` 0, their port is their
        tls-port, tls-cluster and tls-replication yes, client certificates required)."""
        self.password = password
        self.tls = tls
        self._tls_ctx = tls.client_context() if tls is not None else None
        server = shutil.which(redis_server)
        if server is None:
            raise RedisServerNotFound("redis-server not found on PATH: install it "
                                      "(Debian/Ubuntu: apt-get install redis-server)")
        cli = Path(server).with_name("redis-cli")
        self._server, self._cli = server, str(cli) if cli.exists() else "redis-cli"
        self.n_masters, self.n_replicas = masters, replicas
        self.host, self.node_timeout_ms = host, node_timeout_ms
        self.redis_server, self.extra_config = redis_server, dict(extra_config or {})
        self._workdir = Path(workdir) if workdir is not None else None
        self._own_dir: Path | None = None  # temp dir we created (and remove)
        self._log: Callable[[str], None] = log or (lambda _msg: None)
        self.nodes: list[Node] = []
        self._procs: list[subprocess.Popen[bytes]] = []  # every process we spawned
        self._paused: set[int] = set()  # ports currently SIGSTOPped
        self._atexit = False

    # ---- lifecycle -------------------------------------------------------
    def start(self, timeout_s: float = 60) -> LocalCluster:
        """Spawn the nodes, create the cluster, wait until it is ok and synced."""
        if self.nodes:
            raise RuntimeError("a LocalCluster can only be started once")
        t0, deadline = time.monotonic(), time.monotonic() + timeout_s
        atexit.register(self.stop)  # a crashing owner still cleans up
        self._atexit = True
        try:
            if self._workdir is None:
                self._own_dir = Path(tempfile.mkdtemp(prefix="rproxy-cluster-"))
            else:
                self._workdir.mkdir(parents=True, exist_ok=True)
            n = self.n_masters * (1 + self.n_replicas)
            ports = _pick_ports(self.host, n, set())
            self._log(f"starting {n} redis-server nodes on ports {ports[0]}..{ports[-1]}")
            for port in ports:
                self.nodes.append(self._launch_new(port, deadline))
            cmd = [self._cli, "--cluster", "create",
                   *(f"{h}:{p}" for h, p in self.seeds),
                   "--cluster-replicas", str(self.n_replicas), "--cluster-yes",
                   *(self.tls.cli_args() if self.tls is not None else [])]
            env = dict(os.environ, REDISCLI_AUTH=self.password) if self.password else None
            res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, env=env,
                                 timeout=max(1.0, deadline - time.monotonic()))
            if res.returncode != 0:
                out = (res.stdout + res.stderr).decode(errors="replace")
                raise RuntimeError(f"redis-cli --cluster create failed:\n{out}")
            self.wait_ok(max(1.0, deadline - time.monotonic()))
            self._wait_replicas_synced(deadline)
        except BaseException:
            self.stop()
            raise
        self._log(f"cluster ready in {time.monotonic() - t0:.1f}s")
        return self

    def stop(self) -> None:
        """Stop every process this instance spawned (SIGTERM, 5 s, SIGKILL); idempotent."""
        running = [p for p in self._procs if p.poll() is None]
        for p in running:
            p.send_signal(signal.SIGTERM)  # Popen never signals an already-reaped pid
            p.send_signal(signal.SIGCONT)  # in case it was paused
        end = time.monotonic() + 5
        for p in running:
            try:
                p.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for node in self.nodes:
            node.process = None
        self._paused.clear()
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None
        if self._atexit:
            atexit.unregister(self.stop)
            self._atexit = False

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- processes -------------------------------------------------------
    def _spawn(self, node: Node) -> None:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        conf = {"port": str(node.port), "bind": node.host, "protected-mode": "no",
                "cluster-enabled": "yes", "cluster-config-file": "nodes.conf",
                "cluster-node-timeout": str(self.node_timeout_ms), "appendonly": "yes",
                "appendfsync": "everysec", "save": '""', "dir": str(node.data_dir),
                "logfile": str(node.data_dir / "redis.log"), "daemonize": "no",
                "repl-diskless-sync-delay": "0",  # default 5 s would delay every sync
                **({"requirepass": self.password, "masterauth": self.password}
                   if self.password else {}),
                **({"port": "0", "tls-port": str(node.port), "tls-cluster": "yes",
                    "tls-replication": "yes", "tls-cert-file": self.tls.cert_file,
                    "tls-key-file": self.tls.key_file, "tls-ca-cert-file": self.tls.ca_cert_file,
                    "tls-auth-clients": "yes"} if self.tls is not None else {}),
                **self.extra_config}
        path = node.data_dir / "redis.conf"
        path.write_text("".join(f"{k} {v}\n" for k, v in conf.items()))
        node.process = subprocess.Popen([self._server, str(path)], cwd=node.data_dir,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        self._procs.append(node.process)

    def _wait_ping(self, node: Node, deadline: float) -> None:
        while True:
            assert node.process is not None
            if node.process.poll() is not None:
                node.process = None
                raise RuntimeError(f"redis-server on port {node.port} exited early; "
                                   f"log tail:\n{_tail(node.data_dir / 'redis.log')}")
            try:
                with self._admin(node, 0.5) as c:
                    if c.execute("PING") == b"PONG":
                        return
            except _ADMIN_ERRORS:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on port {node.port} did not answer PING")
            time.sleep(0.05)

    def _launch_new(self, port: int, deadline: float, attempts: int = 5) -> Node:
        """Start a fresh node, moving to other ports if the chosen one got taken."""
        for attempt in range(attempts):
            base = self._own_dir or self._workdir
            assert base is not None, "cluster not started"
            node = Node(self.host, port, base / f"node-{port}", None)
            shutil.rmtree(node.data_dir, ignore_errors=True)  # fresh node: no old nodes.conf
            self._spawn(node)
            try:
                self._wait_ping(node, deadline)
                return node
            except RuntimeError as e:
                if "already in use" not in str(e) or attempt == attempts - 1:
                    raise
                used = {n.port for n in self.nodes} | {port}
                port = _pick_ports(self.host, 1, used)[0]
                self._log(f"port taken, retrying on {port}")
        raise AssertionError("unreachable")

    def _alive(self, node: Node) -> bool:
        return (node.process is not None and node.process.poll() is None
                and node.port not in self._paused)

    def _live(self) -> list[Node]:
        return [n for n in self.nodes if self._alive(n)]

    def kill(self, node: Node, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to that node's process (by PID) and reap it."""
        proc = node.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            if node.port in self._paused:
                proc.send_signal(signal.SIGCONT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        node.process = None
        self._paused.discard(node.port)

    def pause(self, node: Node) -> None:
        """SIGSTOP the node; it counts as not live (wait_ok, masters...) until resumed."""
        assert node.process is not None, "node not running"
        node.process.send_signal(signal.SIGSTOP)
        self._paused.add(node.port)

    def resume(self, node: Node) -> None:
        assert node.process is not None, "node not running"
        node.process.send_signal(signal.SIGCONT)
        self._paused.discard(node.port)

    def restart(self, node: Node, timeout_s: float = 30) -> None:
        """Start a stopped node again with its data dir (nodes.conf) so it rejoins."""
        if node.process is not None and node.process.poll() is None:
            raise RuntimeError(f"node {node.port} is still running")
        self._spawn(node)
        self._wait_ping(node, time.monotonic() + timeout_s)

    def add_node(self, as_replica_of: Node | None = None, timeout_s: float = 30) -> Node:
        """Start a fresh empty node, MEET it (and REPLICATE), wait until all know it."""
        deadline = time.monotonic() + timeout_s
        port = _pick_ports(self.host, 1, {n.port for n in self.nodes})[0]
        node = self._launch_new(port, deadline)
        self.nodes.append(node)
        peer = as_replica_of or self._live()[0]
        new_id = self._cmd(node, "CLUSTER", "MYID").decode()
        self._cmd(node, "CLUSTER", "MEET", peer.host, str(peer.port))
        others = [n for n in self._live() if n is not node]
        ids = {n.port: self._myid(n) for n in others}

        def unjoined() -> str | None:
            mine = self._nodes_table(node)
            bad = [n.port for n in others if not self._nodes_table(n).get(new_id, {})
                   .get("known") or not mine.get(ids[n.port], {}).get("known")]
            return f"not yet mutually known with {bad}" if bad else None
        self._poll(deadline, f"new node {port} did not join", unjoined)
        if as_replica_of is not None:
            self._cmd(node, "CLUSTER", "REPLICATE", ids[as_replica_of.port])
            self._poll(deadline, f"new node {port} not seen as replica", lambda: next(
                (f"node {n.port} sees it as master" for n in self._live()
                 if self._nodes_table(n)[new_id]["role"] != "slave"), None))
        return node

    # ---- cluster queries -------------------------------------------------
    def _admin(self, node: Node, timeout: float = 2) -> ControlConnection:
        """Connection for our own polling: short timeouts and no retries."""
        return ControlConnection(node.addr, timeout, self.password, self._tls_ctx)

    def _cmd(self, node: Node, *args: str) -> Any:
        with self._admin(node) as c:
            return c.execute(*args)

    def _myid(self, node: Node) -> str:
        return self._cmd(node, "CLUSTER", "MYID").decode()

    def _nodes_table(self, node: Node) -> dict[str, dict[str, Any]]:
        """CLUSTER NODES of ``node``: id -> {role, known (no handshake/noaddr)}."""
        table: dict[str, dict[str, Any]] = {}
        for line in self._cmd(node, "CLUSTER", "NODES").decode().splitlines():
            f = line.split()
            flags = set(f[2].split(","))
            table[f[0]] = {"role": "master" if "master" in flags else "slave",
                           "known": not flags & {"handshake", "noaddr"}}
        return table

    def _slot_map(self, node: Node) -> list[tuple[int, int, int]]:
        """Sorted (start, end, master port) from CLUSTER SLOTS of ``node``."""
        return sorted((int(r[0]), int(r[1]), int(r[2][1]))
                      for r in self._cmd(node, "CLUSTER", "SLOTS"))

    def _role(self, node: Node) -> str:
        return self._cmd(node, "ROLE")[0].decode()

    @property
    def seeds(self) -> list[tuple[str, int]]:
        return [n.addr for n in self.nodes]

    def masters(self) -> list[Node]:
        """Live nodes whose ROLE is currently master."""
        return [n for n in self._live() if self._role(n) == "master"]

    def replicas(self) -> list[Node]:
        """Live nodes whose ROLE is currently slave."""
        return [n for n in self._live() if self._role(n) == "slave"]

    def node_by_port(self, port: int) -> Node:
        for n in self.nodes:
            if n.port == port:
                return n
        raise KeyError(f"no node on port {port}")

    def master_of_slot(self, slot: int) -> Node:
        """The master owning ``slot`` per CLUSTER SLOTS of the first live node."""
        for start, end, port in self._slot_map(self._live()[0]):
            if start <= slot <= end:
                return self.node_by_port(port)
        raise LookupError(f"slot {slot} is not assigned")

    def _cluster_problem(self) -> str | None:
        """None if the cluster is healthy, else a description of what is wrong."""
        live = self._live()
        if not live:
            return "no live nodes"
        live_ports = {n.port for n in live}
        maps: dict[int, list[tuple[int, int, int]]] = {}
        for n in live:
            try:
                info = self._cmd(n, "CLUSTER", "INFO").decode()
                if "cluster_state:ok" not in info:
                    return f"node {n.port}: cluster_state not ok"
                maps[n.port] = self._slot_map(n)
            except _ADMIN_ERRORS as e:
                return f"node {n.port}: {e!r}"
        first_port, first = next(iter(maps.items()))
        covered = sum(end - start + 1 for start, end, _ in first)
        if covered != SLOTS:
            return f"node {first_port}: only {covered}/{SLOTS} slots assigned"
        dead = sorted({p for _, _, p in first} - live_ports)
        if dead:
            return f"slots still assigned to non-live masters {dead}"
        for port, m in maps.items():
            if m != first:
                return f"nodes {first_port} and {port} disagree on the slot map"
        return None

    def wait_ok(self, timeout_s: float = 30) -> None:
        """Wait until every live node is ok, fully covered, and agrees on slots."""
        self._poll(time.monotonic() + timeout_s, "cluster not ok", self._cluster_problem)

    def _wait_replicas_synced(self, deadline: float) -> None:
        def problem() -> str | None:
            reps = self.replicas()
            if len(reps) != self.n_masters * self.n_replicas:
                return f"{len(reps)} replicas, expected {self.n_masters * self.n_replicas}"
            down = [n.port for n in reps if _parse_info(self._cmd(n, "INFO", "replication")
                    .decode()).get("master_link_status") != "up"]
            if down:
                return f"master_link_status not up on {down}"
            for n in self._live():  # gossip: every node knows who replicates whom
                seen = sum(v["role"] == "slave" for v in self._nodes_table(n).values())
                if seen != len(reps):
                    return f"node {n.port} sees {seen} replicas, expected {len(reps)}"
            return None
        self._poll(deadline, "replicas not in sync", problem)

    @staticmethod
    def _poll(deadline: float, what: str, problem: Callable[[], str | None]) -> None:
        """Call ``problem`` until it returns None; TimeoutError with its last answer."""
        while True:
            try:
                last = problem()
            except (*_ADMIN_ERRORS, KeyError, IndexError) as e:
                last = repr(e)
            if last is None:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: {last}")
            time.sleep(0.1)
