"""The benchmark's PNG plots (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"collab": "#1f77b4", "sharedb": "#d62728"}
LABELS = {"collab": "collab (SQLite, durable)", "sharedb": "ShareDB 7 (in memory)"}


def _levels(runs: dict[Any, Any]) -> list[tuple[int, dict[str, Any]]]:
    return sorted((int(n), r) for n, r in runs.items())


def latency_plot(results: dict[str, Any], path: Path) -> Path:
    """Ack and peer latency (p50, p99) against the number of clients on the hot document."""
    hot = results["hot"]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for kind in ("collab", "sharedb"):
        levels = _levels(hot.get(kind, {}))
        if not levels:
            continue
        xs = [n for n, _ in levels]
        color = COLORS[kind]
        ax.plot(xs, [r["ack"]["p99"] for _, r in levels], "-o", color=color,
                label=f"{LABELS[kind]}: ack p99")
        ax.plot(xs, [r["ack"]["p50"] for _, r in levels], "--o", color=color, alpha=0.6,
                label=f"{LABELS[kind]}: ack p50")
        ax.plot(xs, [r["peer"]["p99"] for _, r in levels], ":s", color=color,
                label=f"{LABELS[kind]}: peer p99")
    ax.set_xlabel("clients on one document (closed loop)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title("Hot document: latency against clients")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def vs_plot(results: dict[str, Any], path: Path) -> Path:
    """Throughput and ack p99 of collab and ShareDB side by side, per client count."""
    hot = results["hot"]
    collab = dict(_levels(hot["collab"]))
    sharedb = dict(_levels(hot["sharedb"]))
    levels = sorted(set(collab) & set(sharedb))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4), dpi=120)
    width = 0.38
    xs = range(len(levels))
    for offset, kind, runs in ((-width / 2, "collab", collab), (width / 2, "sharedb", sharedb)):
        left.bar([x + offset for x in xs], [runs[n]["ops_per_second"] for n in levels], width,
                 color=COLORS[kind], label=LABELS[kind])
        right.bar([x + offset for x in xs], [runs[n]["ack"]["p99"] for n in levels], width,
                  color=COLORS[kind], label=LABELS[kind])
    for ax, title, unit in ((left, "ops sequenced per second", "ops/s"),
                            (right, "ack latency p99", "ms")):
        ax.set_xticks(list(xs), [f"{n} clients" for n in levels])
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.grid(True, axis="y", alpha=0.3)
    left.legend(fontsize=7)
    fig.suptitle("Hot document: collab against ShareDB, same clients, same machine")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_plots(results: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = [latency_plot(results, directory / "bench-latency.png")]
    if results["hot"].get("sharedb"):
        written.append(vs_plot(results, directory / "bench-vs-sharedb.png"))
    return written
