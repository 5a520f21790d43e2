"""Development tool: draw rproxy's imports as a Mermaid flowchart for the README.

    python -m rproxy.tools.imports                    # print the drawing
    python -m rproxy.tools.imports --update README.md # rewrite it between the markers

The graph comes from grimp (import-linter's graph builder; a test dependency, not a runtime one)
and includes imports under ``TYPE_CHECKING``. One box per layer (top: the command line and
tools; then ``rproxy.net``; then ``rproxy.core``), one node per module, an arrow from importer
to imported. ``tests/unit/test_architecture.py`` fails when the README's drawing is out of date.
Not imported by the proxy.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

START = "<!-- imports:start -->"
END = "<!-- imports:end -->"
LAYERS = (("top", "rproxy (command line, tools)"), ("net", "rproxy.net: trio and sockets"),
          ("core", "rproxy.core: sans-IO"))


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ("net", "core") else "top"


def _short(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[2:]) if _layer(module) != "top" else ".".join(parts[1:])


def edges() -> tuple[list[str], list[tuple[str, str]]]:
    """Every module of rproxy (packages' ``__init__`` left out) and every import between two
    of them, sorted."""
    import grimp

    graph = grimp.build_graph("rproxy", include_external_packages=False)
    packages = {"rproxy", "rproxy.core", "rproxy.net", "rproxy.tools"}
    modules = sorted(m for m in graph.modules if m not in packages)
    pairs = sorted({(a, b) for a in modules for b in graph.find_modules_directly_imported_by(a)
                    if b in modules and b != a})
    return modules, pairs


def mermaid() -> str:
    modules, pairs = edges()
    ident = {m: m.replace(".", "_") for m in modules}
    lines = ["```mermaid", "flowchart TB"]
    for layer, title in LAYERS:
        lines.append(f'  subgraph {layer}["{title}"]')
        lines.extend(f'    {ident[m]}["{_short(m)}"]' for m in modules if _layer(m) == layer)
        lines.append("  end")
    lines.extend(f"  {ident[a]} --> {ident[b]}" for a, b in pairs)
    lines.append("```")
    return "\n".join(lines)


def update(path: Path) -> bool:
    """Rewrite the drawing between the markers; True if the file changed."""
    text = path.read_text()
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: markers {START} ... {END} not found")
    new = pattern.sub(lambda _: f"{START}\n{mermaid()}\n{END}", text)
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rproxy.tools.imports", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--update", metavar="FILE", type=Path, help="rewrite the drawing in FILE")
    args = p.parse_args(argv)
    if args.update:
        print("updated" if update(args.update) else "up to date", file=sys.stderr)
    else:
        print(mermaid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
