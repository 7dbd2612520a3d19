"""Run reports: ``report.md`` with its PNG plots, and ``metrics.json`` holding every number shown.

Plots are drawn with matplotlib's non-interactive Agg backend, so reports render on a headless
node. Each function takes plain numbers; nothing here talks to Ray or a model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from lire_ray.atomic import atomic_write_text


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_reward_distribution(before: Sequence[float], after: Sequence[float], path: Path, *,
                             title: str) -> Path:
    """Histogram of per-prompt rewards before and after training (paper Fig. 7)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    lo = min(min(before, default=0), min(after, default=0))
    hi = max(max(before, default=1), max(after, default=1))
    bins = [lo + (hi - lo) * i / 20 for i in range(21)] if hi > lo else 10
    ax.hist(before, bins=bins, alpha=0.55, label=f"before (mean {sum(before)/max(1,len(before)):.3f})")
    ax.hist(after, bins=bins, alpha=0.55, label=f"after (mean {sum(after)/max(1,len(after)):.3f})")
    ax.set_xlabel("reward")
    ax.set_ylabel("prompts")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curves(history: Sequence[dict], keys: Sequence[str], path: Path, *, x: str = "step",
                title: str = "training") -> Path:
    """Line plots of ``keys`` over ``x`` from a list of metric records (training curves)."""
    plt = _plt()
    keys = [k for k in keys if any(k in h for h in history)]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(4 * max(1, len(keys)), 3))
    axes = axes if hasattr(axes, "__len__") else [axes]
    for ax, key in zip(axes, keys):
        pts = [(h.get(x, i), h[key]) for i, h in enumerate(history)
               if key in h and isinstance(h[key], (int, float)) and math.isfinite(h[key])]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".")
        ax.set_title(key)
        ax.set_xlabel(x)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(root: Path, *, title: str, sections: Sequence[tuple[str, str]],
                 metrics: dict, plots: Sequence[tuple[str, Path]] = ()) -> Path:
    """Write ``report.md`` (sections, then plots) and ``metrics.json`` under ``root``.

    Args:
        root: Output directory.
        title: The report's heading.
        sections: (heading, markdown body) pairs.
        metrics: Every number the report shows (JSON-serialisable).
        plots: (caption, PNG path) pairs; paths are linked relative to ``root``.

    Returns:
        The path of ``report.md``.
    """
    parts = [f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body, ""]
    if plots:
        parts += ["## Plots", ""]
        for caption, path in plots:
            parts += [f"![{caption}]({Path(path).resolve().relative_to(root.resolve())})", "",
                      f"*{caption}*", ""]
    atomic_write_text(root / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True,
                                                        default=float))
    report = root / "report.md"
    atomic_write_text(report, "\n".join(parts))
    return report
