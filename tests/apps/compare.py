"""Comparing what an application observed against redis-server and through rproxy.

An observation is a JSON-like dict; its `meta` entry (protocol, timings, conflict counts: what
may differ between two correct runs) and `stack` are reported but never compared."""

from __future__ import annotations

import json
from typing import Any

UNCOMPARED = ("meta", "stack", "exit_code")


def without_meta(obs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obs.items() if k not in UNCOMPARED}


def differences(want: Any, got: Any, path: str = "", *, common_only: bool = False) -> list[str]:
    """Where two observation trees differ, one line each (the standalone value first).
    ``common_only``: keys only one side has are not differences (a run that stopped early)."""
    if isinstance(want, dict) and isinstance(got, dict):
        out: list[str] = []
        for key in sorted(set(want) | set(got), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in got:
                if not common_only:
                    out.append(f"{where}: missing through the proxy (standalone: {want[key]!r})")
            elif key not in want:
                if not common_only:
                    out.append(f"{where}: only through the proxy: {got[key]!r}")
            else:
                out.extend(differences(want[key], got[key], where))
        return out
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        out = []
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            out.extend(differences(a, b, f"{path}[{i}]"))
        return out
    return [] if want == got else [f"{path}: standalone {want!r}, proxy {got!r}"]


def assert_ran(where: str, obs: dict[str, Any]) -> None:
    """The application ran its scenario to the end (ok, exit status 0)."""
    assert obs.get("ok") and obs.get("exit_code", 0) == 0, (
        f"{where}: {obs.get('error')}\n(last step: {obs.get('meta', {}).get('step')}; "
        f"observations so far: {json.dumps(without_meta(obs), sort_keys=True, default=str)})")


def assert_same(standalone_obs: dict[str, Any], proxy_obs: dict[str, Any]) -> None:
    """The run through the proxy ended well and saw what the run against redis-server saw.
    A run that stopped early is reported with its error and the differences before it."""
    want, got = without_meta(standalone_obs), without_meta(proxy_obs)
    if not (proxy_obs.get("ok") and proxy_obs.get("exit_code", 0) == 0):
        diff = differences({k: v for k, v in want.items() if k not in ("ok", "error")},
                           {k: v for k, v in got.items() if k not in ("ok", "error")},
                           common_only=True)
        raise AssertionError(
            f"through the proxy the application failed: {proxy_obs.get('error')}\n"
            f"(last step: {proxy_obs.get('meta', {}).get('step')})\n"
            + ("differences before that:\n" + "\n".join(diff[:40]) if diff
               else "no difference before that"))
    diff = differences(want, got)
    assert not diff, "through the proxy the application saw something else:\n" + "\n".join(
        diff[:40])
