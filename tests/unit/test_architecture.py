"""The import contract (pyproject.toml, [tool.importlinter]) holds, and the README's drawing of
the imports is the code's own (``python -m rproxy.tools.imports --update README.md``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from importlinter.cli import lint_imports

from rproxy.tools import imports

ROOT = Path(__file__).resolve().parents[2]


def test_import_contract_is_kept(monkeypatch):
    monkeypatch.chdir(ROOT)  # lint-imports reads pyproject.toml from the working directory
    # Its report (printed) names each broken contract and the imports that break it.
    assert lint_imports(no_cache=True, no_logo=True) == 0


def test_readme_drawing_is_up_to_date():
    readme = (ROOT / "README.md").read_text()
    pattern = re.escape(imports.START) + r"\n(.*?)\n" + re.escape(imports.END)
    found = re.search(pattern, readme, re.S)
    assert found, "the README has no import drawing between the markers"
    assert found.group(1) == imports.mermaid(), (
        "the README's import drawing is out of date: "
        "python -m rproxy.tools.imports --update README.md")


def test_drawing_has_no_upward_arrow():
    rank = {"top": 0, "net": 1, "core": 2}
    _, pairs = imports.edges()
    upward = [(a, b) for a, b in pairs if rank[imports._layer(a)] > rank[imports._layer(b)]]
    assert upward == []


def test_the_runtime_does_not_import_redis_py():
    """redis-py is a test and benchmark dependency only: the proxy, its command line and the
    embedded cluster run without it."""
    code = ("import sys, rproxy.cli, rproxy.localcluster, rproxy.net.server; "
            "sys.exit(any(m == 'redis' or m.startswith('redis.') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
