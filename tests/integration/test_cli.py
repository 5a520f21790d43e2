"""The command line as a user runs it: the embedded cluster, configuration sources and errors."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

from rproxy.core.slots import key_slot
from tests.support import free_port, wait_until


def _start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RPROXY_")}
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "rproxy", *args], env=full_env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _run(args: list[str], env: dict[str, str] | None = None,
         timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    p = _start(args, env)
    out, err = p.communicate(timeout=timeout_s)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _stop(p: subprocess.Popen[str]) -> tuple[int, str]:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        _, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate(timeout=10)
    return p.returncode, err


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_embedded_cluster_run_and_clean_exit(tmp_path: Path) -> None:
    """The README's run command: no seed anywhere -> an embedded 3+3 cluster, a working
    endpoint, and on SIGTERM every redis-server it started is gone."""
    port = free_port()
    p = _start(["--listen", f"127.0.0.1:{port}", "--log-format", "console"])
    try:
        client = redis.Redis(port=port, protocol=2, socket_timeout=5)
        wait_until(lambda: client.ping(), 60, "embedded proxy to answer")
        assert client.set("cli:k", "v") and client.get("cli:k") == b"v"
        assert client.info("server")["cluster_masters"] == 3
    finally:
        code, err = _stop(p)
    assert code == 0, err[-3000:]
    m = re.search(r"starting (\d+) redis-server nodes on ports (\d+)\.\.(\d+)", err)
    assert m, err[-3000:]
    assert m.group(1) == "6"
    for node_port in range(int(m.group(2)), int(m.group(3)) + 1):
        assert not _listening(node_port), f"redis-server on {node_port} left running"
    assert "ready: connect with" in err


def test_missing_redis_server_is_one_clear_line() -> None:
    res = _run(["--listen", f"127.0.0.1:{free_port()}"],
               env={"RPROXY_EMBEDDED_REDIS_SERVER": "no-such-redis-server"})
    assert res.returncode == 1
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert "redis-server" in lines[0] and "apt-get install redis-server" in lines[0]


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[limits]\nmax_clients = 10\nmax_clientz = 5\n')
    res = _run(["--config", str(bad)])
    assert res.returncode == 2
    assert "limits.max_clientz: unknown key" in res.stderr

    bad.write_text('[timeouts]\nop_timeout_s = "soon"\n')
    res = _run(["--config", str(bad)])
    assert res.returncode == 2 and "timeouts.op_timeout_s" in res.stderr

    res = _run([], env={"RPROXY_LIMITS_MAX_CLIENTS": "-1"})
    assert res.returncode == 2 and "limits.max_clients" in res.stderr

    res = _run(["--listen", "nonsense"])
    assert res.returncode == 2 and "proxy.listen" in res.stderr

    res = _run(["--config", str(tmp_path / "missing.toml")])
    assert res.returncode == 2 and "not found" in res.stderr


def test_seeds_from_file_env_and_flags(cluster, tmp_path: Path) -> None:
    """Flags beat the environment, which beats the file; JSON logs on request."""
    host, seed_port = cluster.seeds[0]
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    cfg = tmp_path / "rproxy.toml"
    cfg.write_text(f'[proxy]\nlisten = "127.0.0.1:{file_port}"\nseeds = ["{host}:{seed_port}"]\n')

    p = _start(["--config", str(cfg), "--log-format", "json"])
    try:
        wait_until(lambda: redis.Redis(port=file_port, protocol=2).ping(), 30, "file listen")
    finally:
        code, err = _stop(p)
    assert code == 0
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "listening" for e in events), err[-2000:]

    env = {"RPROXY_CONFIG": str(cfg), "RPROXY_LISTEN": f"127.0.0.1:{env_port}"}
    p = _start(["--log-level", "warning"], env)
    try:
        wait_until(lambda: redis.Redis(port=env_port, protocol=2).ping(), 30, "env listen")
    finally:
        _stop(p)

    env["RPROXY_SEEDS"] = "127.0.0.1:1"  # overridden by --seed below
    p = _start(["--listen", f"127.0.0.1:{flag_port}", "--seed", f"{host}:{seed_port}",
                "--log-level", "warning"], env)
    try:
        c = redis.Redis(port=flag_port, protocol=2)
        wait_until(lambda: c.ping(), 30, "flag listen")
        assert c.set("cli:flags", "1")
        assert not _listening(env_port)
    finally:
        _stop(p)


def test_starts_when_some_seeds_are_down(cluster) -> None:
    dead = f"127.0.0.1:{free_port()}"
    live = "{}:{}".format(*cluster.seeds[-1])
    port = free_port()
    p = _start(["--listen", f"127.0.0.1:{port}", "--seed", dead, "--seed", live,
                "--log-level", "warning"])
    try:
        c = redis.Redis(port=port, protocol=2)
        wait_until(lambda: c.ping(), 30, "proxy with a dead seed")
        assert c.set("cli:deadseed", "ok") and c.get("cli:deadseed") == b"ok"
    finally:
        _stop(p)


def test_no_reachable_seed_gives_fast_errors_not_hangs() -> None:
    port = free_port()
    p = _start(["--listen", f"127.0.0.1:{port}", "--seed", f"127.0.0.1:{free_port()}",
                "--log-level", "error"])
    try:
        c = redis.Redis(port=port, protocol=2, socket_timeout=5)
        wait_until(lambda: c.ping(), 30, "proxy up without a cluster")
        t0 = time.monotonic()
        try:
            c.get("x")
            raise AssertionError("GET without a cluster cannot succeed")
        except redis.ResponseError as exc:
            assert "no cluster topology" in str(exc)
        assert time.monotonic() - t0 < 1.0
    finally:
        _stop(p)


def test_a_second_signal_while_draining_stops_at_once(cluster) -> None:
    """SIGTERM drains (up to shutdown_grace_s while clients are busy); a second SIGTERM (or
    Ctrl-C) while draining stops at once, cleanly, without a traceback."""
    port = free_port()
    p = _start(["--listen", f"127.0.0.1:{port}", "--seed", "{}:{}".format(*cluster.seeds[0]),
                "--log-format", "console"], env={"RPROXY_TIMEOUTS_SHUTDOWN_GRACE_S": "20"})
    busy = None
    try:
        c = redis.Redis(port=port, protocol=2)
        wait_until(lambda: c.ping(), 30, "proxy to answer")
        busy = subprocess.Popen(["redis-benchmark", "-p", str(port), "-c", "2", "-n", "100000000",
                                 "-t", "get", "-q"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert p.poll() is None, "the first signal must drain, not stop: a client is busy"
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        p.wait(10)
        assert time.monotonic() - t0 < 3  # not the 20 s grace
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
        code, err = _stop(p)
    assert code == 0, err[-3000:]
    assert "second_signal_stopping_now" in err and "Traceback" not in err, err[-3000:]


def test_sighup_applies_runtime_keys_and_keeps_the_config_on_errors(cluster,
                                                                   tmp_path: Path) -> None:
    """SIGHUP reads the config file again: a runtime key (commands.cross_slot_writes) is
    applied at once, a key that needs a restart (proxy.listen) is logged as such and kept, and
    a bad file is rejected with the reason, the running configuration kept."""
    host, seed_port = cluster.seeds[0]
    port = free_port()
    cfg = tmp_path / "rproxy.toml"
    base = f'[proxy]\nlisten = "127.0.0.1:{port}"\nseeds = ["{host}:{seed_port}"]\n'
    cfg.write_text(base)
    p = _start(["--config", str(cfg), "--log-format", "json"])
    try:
        c = redis.Redis(port=port, protocol=2)
        wait_until(lambda: c.ping(), 30, "listening")
        a, b = "hup:{a}:src", "hup:{b}:dst"
        c.set(a, "v")
        try:
            c.rename(a, b)
            raise AssertionError("a cross-slot RENAME is refused by default")
        except redis.ResponseError as exc:
            assert "hash to the same slot" in str(exc)
        cfg.write_text(base.replace(str(port), str(free_port()))
                       + '[commands]\ncross_slot_writes = "emulate"\n')
        p.send_signal(signal.SIGHUP)
        wait_until(lambda: _renamed(c, a, b), 10, "the runtime key applied")
        cfg.write_text(base + '[commands]\ncross_slot_writes = "sometimes"\n')
        p.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert c.rename(b, a)  # still emulated: the bad file was rejected
    finally:
        code, err = _stop(p)
    assert code == 0
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    reloaded = [e for e in events if e.get("event") == "config_reloaded"]
    assert reloaded and reloaded[0]["applied"] == ["commands.cross_slot_writes"]
    assert reloaded[0]["needs_restart"] == ["proxy.listen"]
    rejected = [e for e in events if e.get("event") == "config_reload_rejected"]
    assert rejected and "commands.cross_slot_writes" in rejected[0]["error"]


def _renamed(c: redis.Redis, a: str, b: str) -> bool:
    try:
        return bool(c.rename(a, b))
    except redis.ResponseError:
        return False


def test_sigterm_under_load_with_dedicated_connections(cluster) -> None:
    """SIGTERM while pipelined writers, WATCH/MULTI/EXEC loops (leased connections) and blocked
    BLPOPs are running: rproxy stops accepting, answers what it received, closes the clients
    within the grace period and exits 0; no reply frame is cut in half, and every write it
    acknowledged is in the cluster (each counter at least the increments acknowledged)."""
    from rproxy.core.resp import ReplyFramer, encode_command
    from tests.support import node_client

    host, seed_port = cluster.seeds[0]
    port = free_port()
    p = _start(["--listen", f"127.0.0.1:{port}", "--seed", f"{host}:{seed_port}",
                "--log-level", "warning"], {"RPROXY_TIMEOUTS_SHUTDOWN_GRACE_S": "3"})
    run = os.urandom(3).hex()
    acked: dict[str, int] = {}
    torn: list[str] = []
    try:
        wait_until(lambda: redis.Redis(port=port, protocol=2).ping(), 30, "listening")

        def writer(w: int) -> None:
            framer, got = ReplyFramer(False), 0
            with socket.create_connection(("127.0.0.1", port)) as s:
                try:
                    counter = f"term:{run}:{w}".encode()  # one key: the cluster stays small
                    while True:
                        s.sendall(encode_command([b"INCR", counter]) * 50)
                        need = got + 50
                        while got < need:
                            data = s.recv(65536)
                            if not data:
                                raise ConnectionError
                            replies = framer.feed(data)
                            assert all(r[:1] == b":" for r in replies), replies[:2]
                            got += len(replies)
                except (ConnectionError, OSError):
                    pass
            if not framer.idle:
                torn.append(f"writer {w}")
            acked[f"w{w}"] = got

        def watcher(w: int) -> None:
            r = redis.Redis(port=port, protocol=2, socket_timeout=10)
            key, done = f"term:{run}:watch:{w}", 0
            try:
                while True:
                    with r.pipeline() as pipe:
                        pipe.watch(key)
                        value = int(pipe.get(key) or 0)
                        pipe.multi()
                        pipe.set(key, value + 1)
                        if pipe.execute() == [True]:
                            done += 1
            except (redis.ConnectionError, redis.TimeoutError, redis.WatchError):
                pass
            acked[f"watch{w}"] = done

        def blocked(w: int) -> None:
            try:
                redis.Redis(port=port, protocol=2, socket_timeout=20).blpop(
                    [f"term:{run}:never:{w}"], 0)
            except (redis.ConnectionError, redis.TimeoutError):
                pass

        threads = ([threading.Thread(target=writer, args=(i,)) for i in range(3)]
                   + [threading.Thread(target=watcher, args=(i,)) for i in range(2)]
                   + [threading.Thread(target=blocked, args=(i,)) for i in range(2)])
        for t in threads:
            t.start()
        time.sleep(1.5)
        p.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "a client hung"
    finally:
        code, err = _stop(p)
    assert code == 0, err[-2000:]
    assert not torn, torn
    for name, key in [*[(f"w{w}", f"term:{run}:{w}") for w in range(3)],
                      *[(f"watch{w}", f"term:{run}:watch:{w}") for w in range(2)]]:
        owner = node_client(cluster.master_of_slot(key_slot(key.encode())))
        assert int(owner.get(key) or 0) >= acked[name] > 0, (name, acked[name])
        owner.delete(key)
