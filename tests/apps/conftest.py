"""Real applications, each run twice: against the standalone redis-server and through rproxy in
front of the 3+3 cluster (the session fixtures `standalone` and `proxy` of tests/conftest.py).
A test asserts that each run is correct on its own and that both observed the same thing.

The Node.js applications live in tests/apps/node (exact versions in package-lock.json). The
session fixture `node_app` installs them once with `npm ci` when node_modules is missing or
older than the lock file, and runs `node SCRIPT PORT`: the script prints one JSON line with its
observations (`meta` holds what is reported but not compared) and exits 0 when its scenario ran
to its end. Node.js and npm are required: their absence is a failure, not a skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"
NPM_CI_TIMEOUT_S = 600
SCRIPT_TIMEOUT_S = 60


def _npm_ci() -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm not found: tests/apps needs Node.js (>= 20) and npm "
                    "(apt-get install nodejs npm), then `npm ci` in tests/apps/node", pytrace=False)
    proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], check=False, cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=NPM_CI_TIMEOUT_S,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        pytest.fail(f"`npm ci` in {NODE_DIR} failed ({proc.returncode}):\n{proc.stdout}\n"
                    f"{proc.stderr}", pytrace=False)


@pytest.fixture(scope="session")
def node_app() -> Callable[[str, int], dict[str, Any]]:
    """``node_app("ioredis_app.js", port)``: the script's observations (a dict)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found: tests/apps needs Node.js (>= 20) and npm", pytrace=False)
    # npm ci writes node_modules/.package-lock.json; older than the lock file = stale install
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    if (not installed.exists()
            or installed.stat().st_mtime < (NODE_DIR / "package-lock.json").stat().st_mtime):
        _npm_ci()

    def run(script: str, port: int) -> dict[str, Any]:
        try:
            proc = subprocess.run([node, script, str(port)], check=False, cwd=NODE_DIR,
                                  capture_output=True,
                                  text=True, timeout=SCRIPT_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"node {script} {port} did not end in {SCRIPT_TIMEOUT_S} s; "
                        f"stdout: {exc.stdout!r} stderr: {exc.stderr!r}", pytrace=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if not lines:
            pytest.fail(f"node {script} {port} printed no JSON (exit {proc.returncode}):\n"
                        f"{proc.stdout}\n{proc.stderr}", pytrace=False)
        obs: dict[str, Any] = json.loads(lines[-1])
        obs["exit_code"] = proc.returncode
        if proc.stderr.strip():
            obs.setdefault("meta", {})["stderr"] = proc.stderr.strip()[-2000:]
        return obs

    return run
