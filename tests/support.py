"""Test support: the proxy in a background thread, free ports, a standalone redis-server,
redis-py clients straight to the nodes of a LocalCluster.

The proxy runs its own trio loop in a thread so that tests can use ordinary blocking clients
(redis-py, redis-cli, redis-benchmark) against it, exactly as a legacy application would.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
import trio

from rproxy.core.config import Config
from rproxy.localcluster import Node
from rproxy.net.server import ProxyServer


def free_port(lo: int = 23000, hi: int = 30000) -> int:
    """A port below 32768 that is free now (the ephemeral range can be taken any time)."""
    for _ in range(200):
        port = random.randint(lo, hi)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def node_client(node: Node, **kw: Any) -> redis.Redis:
    """A plain (non-cluster) RESP2 redis-py client straight to one node of a LocalCluster,
    replies undecoded, 5 s socket timeout unless ``kw`` says otherwise; the caller closes it.
    (rproxy itself talks to the nodes without redis-py: redis-py is a test dependency.)"""
    opts: dict[str, Any] = {"protocol": 2, "decode_responses": False, "socket_timeout": 5}
    return redis.Redis(node.host, node.port, **{**opts, **kw})


def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = exc
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what or predicate}: last error {last_exc!r}")


class ProxyThread:
    """An in-process rproxy serving on 127.0.0.1:<ephemeral> in its own trio thread."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.server = ProxyServer(config)
        self.port = 0
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rproxy", daemon=True)

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self.port = await nursery.start(self.server.serve)
            self._ready.set()

    def start(self, timeout_s: float = 30) -> ProxyThread:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("proxy did not start")
        if self._error is not None:
            raise self._error
        return self

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` inside the proxy's trio thread (to inspect or poke its state)."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def stop(self, timeout_s: float = 30) -> None:
        if self._thread.is_alive() and self._token is not None:
            try:
                self.call(self.server.shutdown)
            except trio.RunFinishedError:
                pass
            self._thread.join(timeout_s)
        if self._error is not None and not isinstance(self._error, KeyboardInterrupt):
            raise self._error

    def client(self, **kw: Any) -> redis.Redis:
        """A plain (non-cluster) RESP2 redis-py client, as a legacy application uses."""
        kw.setdefault("socket_timeout", 10)
        kw.setdefault("protocol", 2)
        return redis.Redis(host="127.0.0.1", port=self.port, **kw)

    def __enter__(self) -> ProxyThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def proxy_config(seeds: list[tuple[str, int]], **sections: dict[str, Any]) -> Config:
    cfg = Config().replace(
        "proxy", listen="127.0.0.1:0", seeds=tuple(f"{h}:{p}" for h, p in seeds)
    )
    cfg = cfg.replace("timeouts", shutdown_grace_s=2.0)
    for name, values in sections.items():
        cfg = cfg.replace(name, **values)
    return cfg


class StandaloneRedis:
    """One plain (non-cluster) redis-server on loopback, for differential tests."""

    def __init__(self, *args: str) -> None:
        """``args``: more redis-server options (``--requirepass``, "s3cret")."""
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server not found: apt-get install redis-server")
        self.args = list(args)
        self.dir = Path(tempfile.mkdtemp(prefix="rproxy-standalone-"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StandaloneRedis:
        for _ in range(5):
            self.port = free_port(20000, 22000)
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                 "--logfile", str(self.dir / "redis.log"), "--enable-debug-command", "local",
                 *self.args],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                wait_until(lambda: self.client().ping() if "--requirepass" not in self.args
                           else self.client(password=self.args[self.args.index(
                               "--requirepass") + 1]).ping(), 5, "standalone redis")
                return self
            except TimeoutError:
                self.stop()
        raise RuntimeError("could not start a standalone redis-server")

    def client(self, **kw: Any) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, protocol=2, socket_timeout=10, **kw)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def raw_exchange(port: int, payload: bytes, *, timeout_s: float = 5.0,
                 expect_close: bool = False, until: bytes | None = None) -> tuple[bytes, bool]:
    """Send ``payload`` on a fresh connection and collect what comes back until the server
    closes the connection, ``until`` has been received (if given) or ``timeout_s`` passes.
    Returns (bytes received, whether the server closed the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(payload)
        got = b""
        deadline = time.monotonic() + timeout_s
        closed = False
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, min(0.2, deadline - time.monotonic())))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                if until is not None and until in got and not expect_close:
                    break
                continue
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            got += chunk
            if until is not None and got.endswith(until) and not expect_close:
                break
        return got, closed


class RawConnection:
    """A raw connection (RESP2, or RESP3 after HELLO 3): replies come back as the exact bytes
    the server sent (for byte-for-byte differential tests; redis-py would parse them)."""

    def __init__(self, port: int) -> None:
        from rproxy.core import resp

        self._resp = resp
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.framer = resp.ReplyFramer()
        self._early: list[bytes] = []  # replies (pushes) read beyond what was asked for

    def pipeline(self, commands: list[list[bytes]]) -> list[bytes]:
        self.sock.sendall(b"".join(self._resp.encode_command(c) for c in commands))
        return self.read_replies(len(commands))

    def read_replies(self, n: int) -> list[bytes]:
        """The next ``n`` replies (or pushes), in order."""
        out = self._early
        while len(out) < n:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("redis-server closed the connection")
            out.extend(self.framer.feed(data))
        self._early = out[n:]
        return out[:n]

    def __call__(self, *args: object) -> bytes:
        argv = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        return self.pipeline([argv])[0]

    def close(self) -> None:
        self.sock.close()


def keys_in_slots(n: int, prefix: str) -> list[str]:
    """``n`` keys ``<prefix>:<i>``, each in a slot of its own."""
    from rproxy.core.slots import key_slot

    out: list[str] = []
    slots: set[int] = set()
    i = 0
    while len(out) < n:
        key = f"{prefix}:{i}"
        slot = key_slot(key.encode())
        if slot not in slots:
            slots.add(slot)
            out.append(key)
        i += 1
    return out


def argv(*words: object) -> list[bytes]:
    """A command as bytes: ``argv("SET", key, 1)``."""
    return [w if isinstance(w, bytes) else str(w).encode() for w in words]


def raw_pipeline(port: int, commands: list[list[bytes]]) -> list[bytes]:
    """``commands`` pipelined on a fresh raw connection; the raw replies."""
    conn = RawConnection(port)
    try:
        return conn.pipeline(commands)
    finally:
        conn.close()


@contextlib.contextmanager
def private_redis_7_0() -> Iterator[RawConnection]:
    """A private standalone redis-server 7.0 (stopped by its PID) and a raw connection to it.
    The emulation tests compare against Redis 7.0 byte for byte: another version is a failure
    to look at, not a skip."""
    server = StandaloneRedis().start()
    conn = RawConnection(server.port)
    try:
        version = conn(b"INFO", b"server")
        assert b"redis_version:7.0." in version, (
            "the emulated replies are those of Redis 7.0; this redis-server is "
            + version.split(b"redis_version:")[1].split(b"\r\n")[0].decode()
        )
        yield conn
    finally:
        conn.close()
        server.stop()
