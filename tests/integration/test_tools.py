"""The stock Redis tools, used through the proxy exactly as a user would."""

from __future__ import annotations

import subprocess

import pytest


def _cli(port: int, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["redis-cli", "-p", str(port), *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_redis_cli_commands(proxy) -> None:
    assert _cli(proxy.port, "SET", "tools:cli", "hello").stdout.strip() == "OK"
    assert _cli(proxy.port, "GET", "tools:cli").stdout.strip() == "hello"
    assert _cli(proxy.port, "INCRBY", "tools:n", "5").stdout.strip().isdigit()
    assert "redis_version:7" in _cli(proxy.port, "INFO", "server").stdout
    out = _cli(proxy.port, stdin="SET tools:a 1\nGET tools:a\nPING\nSELECT 3\n").stdout
    assert out.split("\n")[:4] == ["OK", "1", "PONG", "ERR SELECT is not allowed in cluster mode"]


def test_redis_cli_pipe_mode(proxy) -> None:
    """redis-cli --pipe (mass insertion) sends raw RESP and counts the replies."""
    lines = "".join(f"SET tools:pipe:{i} {i}\r\n" for i in range(5000))
    res = _cli(proxy.port, "--pipe", stdin=lines)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "errors: 0, replies: 5000" in res.stdout
    assert _cli(proxy.port, "GET", "tools:pipe:4321").stdout.strip() == "4321"


@pytest.mark.parametrize("pipeline", ["1", "16"])
def test_redis_benchmark_without_errors(proxy, pipeline: str) -> None:
    tests = "ping,set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange_100"
    res = subprocess.run(
        ["redis-benchmark", "-p", str(proxy.port), "-c", "50", "-n", "20000", "-P", pipeline,
         "-r", "100000", "-t", tests, "--csv"],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "error" not in (res.stdout + res.stderr).lower(), res.stderr[-2000:]
    rows = [line for line in res.stdout.splitlines() if line.startswith('"') and "rps" not in line]
    assert len(rows) >= 14, res.stdout
    for row in rows:
        assert float(row.split(",")[1].strip('"')) > 0, row
