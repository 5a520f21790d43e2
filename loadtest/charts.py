"""PNG charts for loadtest/bench.py (--charts DIR). Needs matplotlib (pip install matplotlib)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("--charts needs matplotlib: pip install matplotlib") from exc


def _plt() -> Any:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _num(v: Optional[float]) -> float:
    return float("nan") if v is None else v



def _save(plt: Any, fig: Any, path: Path) -> Path:
    """Lay out, write as PNG, and free the figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

def _bars(ax: Any, labels: list[str], series: dict[str, list[Optional[float]]], ylabel: str, title: str) -> None:
    n = len(series)
    width = 0.8 / max(n, 1)
    xs = range(len(labels))
    for i, (name, vals) in enumerate(series.items()):
        pos = [x - 0.4 + width * (i + 0.5) for x in xs]
        bars = ax.bar(pos, [_num(v) for v in vals], width, label=name)
        for b, v in zip(bars, vals):
            if v is not None:
                ax.annotate(f"{v:,.0f}" if v >= 100 else f"{v:.2f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                            ha="center", va="bottom", fontsize=7, rotation=90 if len(labels) * n > 8 else 0)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)


def main_charts(rows: list[dict[str, Any]], outdir: Path, title: str = "rproxy vs direct") -> list[Path]:
    """Throughput (proxy vs direct) and p50/p99/p99.9 latency per scenario."""
    plt = _plt()
    outdir.mkdir(parents=True, exist_ok=True)
    labels = [r["scenario"] for r in rows]
    written = []
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels)), 4.5))
    _bars(ax, labels, {"direct": [r.get("direct_rps") for r in rows], "proxy": [r.get("proxy_rps") for r in rows]},
          "ops/s (median)", f"{title}: throughput")
    written.append(_save(plt, fig, outdir / "throughput.png"))

    fig, axes = plt.subplots(1, 3, figsize=(max(12, 3.5 * len(labels)), 4.5))
    for ax, q, name in zip(axes, ("p50", "p99", "p999"), ("p50", "p99", "p99.9")):
        _bars(ax, labels, {"direct": [r.get(f"direct_{q}_ms") for r in rows],
                           "proxy": [r.get(f"proxy_{q}_ms") for r in rows]}, "ms (median)", f"{name} latency")
    fig.suptitle(f"{title}: latency")
    written.append(_save(plt, fig, outdir / "latency.png"))
    return written


def connections_chart(rows: list[dict[str, Any]], outdir: Path) -> list[Path]:
    """Throughput and p99 vs number of client connections, proxy vs direct (log x)."""
    plt = _plt()
    outdir.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    xs = [r["clients"] for r in rows]
    for target in ("direct", "proxy"):
        ax1.plot(xs, [_num(r.get(f"{target}_rps")) for r in rows], marker="o", label=target)
        ax2.plot(xs, [_num(r.get(f"{target}_p99_ms")) for r in rows], marker="o", label=target)
    for ax, yl, t in ((ax1, "ops/s (median)", "GET -P 1 throughput"), (ax2, "p99 ms (median)", "GET -P 1 p99")):
        ax.set_xscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.set_xlabel("client connections")
        ax.set_ylabel(yl)
        ax.set_title(t)
        ax.grid(alpha=0.3)
        ax.legend()
    return [_save(plt, fig, outdir / "connections.png")]


def workers_chart(rows: list[dict[str, Any]], outdir: Path) -> list[Path]:
    plt = _plt()
    outdir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _bars(ax, [r["scenario"] for r in rows], {"1 worker": [r.get("w1_rps") for r in rows],
                                               "2 workers": [r.get("w2_rps") for r in rows]},
          "ops/s (median)", "rproxy throughput, --workers 1 vs 2")
    return [_save(plt, fig, outdir / "workers.png")]


def mix_chart(rows: list[dict[str, Any]], outdir: Path) -> list[Path]:
    """Mix: throughput and p50/p99/p99.9 per target (proxy, and direct when measured)."""
    plt = _plt()
    outdir.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    labels = [r["target"] for r in rows]
    _bars(ax1, labels, {"ops/s": [r.get("rps") for r in rows]}, "ops/s (median)", "mix throughput")
    _bars(ax2, labels, {q: [r.get(f"{k}_ms") for r in rows] for q, k in
                        (("p50", "p50"), ("p99", "p99"), ("p99.9", "p999"))}, "ms (median)", "mix latency")
    return [_save(plt, fig, outdir / "mix.png")]
