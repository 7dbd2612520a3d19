"""Evaluation plots of the paper, drawn as PNG files from plain numbers.

* :func:`plot_frontier`: reward (win rate) against D_tau over sampling temperatures (Fig. 5);
* :func:`plot_win_rate_vs_k`: win rate against the number of candidates n or K (Fig. 4);
* :func:`plot_grid`: the Evolve x Iterate reward grid as a heatmap (Table 6);
* :func:`plot_seed_bands`: mean over seeds with the best-to-worst band shaded (Fig. 6);
* :func:`plot_training_curves`: per-step training metrics of several runs;
* :func:`plot_reward_distribution`: the before/after reward histogram (Fig. 7);
* :func:`plot_before_after`: per-prompt score before against after, negative flips marked
  (Fig. 8);
* :func:`plot_curves`: metric records over a step axis;
* :func:`plot_radar`: judge grades per category, one polygon per policy (Fig. 3).

All use matplotlib's Agg backend (headless) and return the written path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["plot_before_after", "plot_calibration", "plot_curves", "plot_frontier", "plot_grid",
           "plot_histograms", "plot_radar",
           "plot_reward_distribution", "plot_seed_bands", "plot_training_curves",
           "plot_win_rate_vs_k"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def _axes(xlabel: str, ylabel: str, title: str):
    """``(figure, axes)``: a 6 x 4 inch figure whose one axes has these labels and title."""
    fig, ax = _plt().subplots(figsize=(6, 4))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig, ax


def _finite(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def plot_frontier(series: Mapping[str, Sequence[Mapping[str, float]]], path: Path, *,
                  xlabel: str = "D_tau = E[log pi - log pi_ref] (nats)",
                  ylabel: str = "win rate vs human (RM)",
                  title: str = "reward-KL frontier over sampling temperatures") -> Path:
    """Reward against divergence from the reference, one curve per policy (paper Fig. 5).

    Args:
        series: Per policy name, points ``{"x", "y", "temperature"}`` and optionally
            ``"xerr"`` (standard error of x). Points with a non-finite x or y are skipped.
        path: Output PNG.
        xlabel: X axis label.
        ylabel: Y axis label.
        title: Plot title.

    Returns:
        ``path``.
    """
    fig, ax = _axes(xlabel, ylabel, title)
    for name, points in series.items():
        pts = sorted((p for p in points if _finite(p["x"], p["y"])),
                     key=lambda p: p["temperature"])
        if not pts:
            continue
        err = [p.get("xerr", 0.0) if _finite(p.get("xerr", 0.0)) else 0.0 for p in pts]
        ax.errorbar([p["x"] for p in pts], [p["y"] for p in pts], xerr=err, marker="o",
                    capsize=3, label=name)
        for p in pts:
            ax.annotate(f"T={p['temperature']:g}", (p["x"], p["y"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))
    if series:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_win_rate_vs_k(curves: Mapping[str, Sequence[tuple[int, float]]], path: Path, *,
                       levels: Mapping[str, float] | None = None,
                       points: Mapping[str, tuple[int, float]] | None = None,
                       ylabel: str = "win rate vs human",
                       title: str = "win rate vs number of candidates") -> Path:
    """Win rate against n (Best-of-n) or K (pool size), as in paper Fig. 4.

    Args:
        curves: Per label, ``(n, win_rate)`` pairs, drawn as lines (e.g. Best-of-n by judge).
        path: Output PNG.
        levels: Per label, a win rate drawn as a horizontal dashed line (e.g. a trained policy).
        points: Per label, one ``(K, win_rate)`` marker (e.g. a method trained on K candidates).
        ylabel: Y axis label.
        title: Plot title.

    Returns:
        ``path``.
    """
    fig, ax = _axes("n (Best-of-n) / K (candidates per prompt)", ylabel, title)
    for label, pts in curves.items():
        pts = sorted((int(n), y) for n, y in pts if _finite(y))
        if pts:
            ax.plot([n for n, _ in pts], [y for _, y in pts], marker="o", label=label)
    for label, y in (levels or {}).items():
        if _finite(y):
            ax.axhline(y, linestyle="--", linewidth=1, label=label)
    marks = list((points or {}).items())
    for i, (label, (k, y)) in enumerate(marks):
        if _finite(y):
            # Methods trained on the same K would hide each other: spread them a little.
            x = k + 0.06 * (i - (len(marks) - 1) / 2)
            ax.plot([x], [y], marker="*", markersize=12, linestyle="none", label=label)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_grid(records: Sequence[Mapping[str, float]], path: Path, *, value: str = "reward",
              title: str = "reward by Evolve steps E and Iterate epochs I") -> Path:
    """Heatmap of a value over Evolve steps E (columns) and Iterate epochs I (rows) (Table 6).

    Args:
        records: ``{"E": int, "I": int, value: float}`` per grid cell; cells without a record
            stay blank. A repeated (E, I) keeps its last record.
        path: Output PNG.
        value: The record key to plot.
        title: Plot title.

    Returns:
        ``path``.

    Raises:
        ValueError: No records, or a record without E, I or ``value``.
    """
    if not records:
        raise ValueError("plot_grid needs at least one {E, I, value} record")
    for i, r in enumerate(records):
        missing = [k for k in ("E", "I", value) if k not in r]
        if missing:
            raise ValueError(f"grid record {i} has no {', '.join(missing)}: {dict(r)}")
    es = sorted({int(r["E"]) for r in records})
    is_ = sorted({int(r["I"]) for r in records})
    cells = [[float("nan")] * len(es) for _ in is_]
    for r in records:
        cells[is_.index(int(r["I"]))][es.index(int(r["E"]))] = float(r[value])
    plt = _plt()
    import numpy as np

    data = np.ma.masked_invalid(np.array(cells, dtype=float))
    fig, ax = plt.subplots(figsize=(1.6 * len(es) + 2.5, 1.0 * len(is_) + 1.8))
    im = ax.imshow(data, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(es)), [f"E={e}" for e in es])
    ax.set_yticks(range(len(is_)), [f"I={i}" for i in is_])
    lo, hi = float(data.min()), float(data.max())
    for yi, row in enumerate(cells):
        for xi, v in enumerate(row):
            if math.isfinite(v):
                # viridis is light at the top of its range: dark text there stays readable.
                bright = hi > lo and (v - lo) / (hi - lo) > 0.6
                ax.text(xi, yi, f"{v:.3f}", ha="center", va="center",
                        color="black" if bright else "white", fontsize=9)
    fig.colorbar(im, ax=ax, label=value)
    ax.set_title(title)
    return _save(fig, path)


def plot_training_curves(histories: Mapping[str, Sequence[Mapping]], path: Path, *,
                         keys: Sequence[str] = ("loss",), x: str = "step",
                         title: str = "training curves") -> Path:
    """One panel per metric key, one line per run (e.g. ``lire/seed0``).

    Args:
        histories: Per run label, its per-step metric records.
        path: Output PNG.
        keys: Metric keys to draw; keys no run has are dropped.
        x: Record key of the x axis (the record's index when absent).
        title: Figure title.

    Returns:
        ``path``.
    """
    plt = _plt()
    keys = [k for k in keys if any(k in h for hs in histories.values() for h in hs)] or \
        list(keys[:1])
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for label, hist in histories.items():
            pts = [(h.get(x, i), h[key]) for i, h in enumerate(hist)
                   if key in h and _finite(h[key])]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=label)
        ax.set_title(key)
        ax.set_xlabel(x)
        if histories:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


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


def plot_before_after(before: Sequence[float], after: Sequence[float], path: Path, *,
                      title: str) -> Path:
    """Per-prompt score after training against before (paper Fig. 8).

    Points above the diagonal improved; points strictly below it are negative flips (drawn in
    red and counted in the legend).

    Args:
        before: [P] scores of the starting policy (first sample per prompt).
        after: [P] scores of the trained policy on the same prompts.
        path: The PNG to write.
        title: The plot title.

    Raises:
        ValueError: The two lists differ in length.
    """
    if len(before) != len(after):
        raise ValueError(f"{len(before)} scores before and {len(after)} after")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    flips = [(b, a) for b, a in zip(before, after) if a < b]
    rest = [(b, a) for b, a in zip(before, after) if a >= b]
    ax.scatter([b for b, _ in rest], [a for _, a in rest], s=14, alpha=0.7,
               label=f"improved or equal ({len(rest)})")
    ax.scatter([b for b, _ in flips], [a for _, a in flips], s=14, alpha=0.8, color="tab:red",
               label=f"negative flips ({len(flips)})")
    values = [v for v in (*before, *after) if math.isfinite(v)] or [0.0, 1.0]
    lo, hi = min(values), max(values)
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
    ax.set_xlabel("score before")
    ax.set_ylabel("score after")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_seed_bands(series: Mapping[str, Sequence[Sequence[float]]], path: Path, *,
                    xlabel: str, ylabel: str, title: str) -> Path:
    """One line per series at its mean over seeds, the band between the worst and the best
    seed shaded (paper Fig. 6).

    Args:
        series: Per label, points ``(x, mean, worst, best)``.
        path: The PNG to write.
        xlabel: The x axis label.
        ylabel: The y axis label.
        title: The plot title.

    Returns:
        ``path``.
    """
    fig, ax = _axes(xlabel, ylabel, title)
    for label, pts in series.items():
        pts = sorted((p for p in pts if _finite(*p)), key=lambda p: p[0])
        if not pts:
            continue
        xs = [p[0] for p in pts]
        line = ax.plot(xs, [p[1] for p in pts], marker="o", label=label)[0]
        ax.fill_between(xs, [p[2] for p in pts], [p[3] for p in pts], alpha=0.2,
                        color=line.get_color())
    ax.set_xticks(sorted({p[0] for pts in series.values() for p in pts}))
    if series:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_histograms(groups: Mapping[str, Sequence[float]], path: Path, *, xlabel: str,
                    title: str, ylabel: str = "count") -> Path:
    """Overlaid histograms on shared bins, one per group (e.g. a reward model's scores of the
    chosen and of the rejected responses), each labelled with its mean."""
    fig, ax = _axes(xlabel, ylabel, title)
    values = [v for vs in groups.values() for v in vs if _finite(v)]
    lo, hi = min(values, default=0.0), max(values, default=1.0)
    bins = [lo + (hi - lo) * i / 24 for i in range(25)] if hi > lo else 10
    for label, vs in groups.items():
        vs = [v for v in vs if _finite(v)]
        ax.hist(vs, bins=bins, alpha=0.55, label=f"{label} (mean {sum(vs) / max(1, len(vs)):.3f})")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_calibration(buckets: Sequence[Mapping[str, float]], path: Path, *,
                     title: str = "calibration") -> Path:
    """Reliability diagram: per bucket, the observed accuracy against the predicted one.

    Args:
        buckets: Records with ``predicted`` (mean predicted probability that the preferred
            side wins), ``accuracy`` (observed) and ``n`` (pairs).
        path: Output PNG.
        title: Plot title.

    Returns:
        ``path``.
    """
    fig, ax = _axes("predicted P(pick is right) = sigmoid(|gap|)", "observed pair accuracy",
                    title)
    ax.plot([0.5, 1.0], [0.5, 1.0], linestyle="--", linewidth=1, color="grey",
            label="perfectly calibrated")
    pts = [b for b in buckets if _finite(b["predicted"], b["accuracy"])]
    ax.plot([b["predicted"] for b in pts], [b["accuracy"] for b in pts], marker="o",
            label="reward model")
    for b in pts:
        ax.annotate(f"n={int(b['n'])}", (b["predicted"], b["accuracy"]), fontsize=7,
                    textcoords="offset points", xytext=(4, -10))
    ax.set_ylim(0.0, 1.05)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_radar(series: Mapping[str, Mapping[str, float]], path: Path, *,
               title: str = "judge grade per category", limit: float = 10.0) -> Path:
    """A radar plot of per-category grades (paper Fig. 3), one polygon per policy.

    Args:
        series: ``{policy: {category: mean grade}}``; every policy over the same categories
            (those of the first). A NaN grade (no valid verdict) is drawn at 0 and marked in
            the legend.
        path: PNG file to write.
        title: The plot's title.
        limit: The radial axis' maximum (grades run 1-10).

    Returns:
        ``path``.
    """
    plt = _plt()
    cats = list(next(iter(series.values())).keys()) if series else []
    angles = [2 * math.pi * i / max(len(cats), 1) for i in range(len(cats))]
    fig = plt.figure(figsize=(6, 6))
    ax = fig.add_subplot(111, projection="polar")
    for name, grades in series.items():
        values = [grades.get(c, math.nan) for c in cats]
        missing = sum(not _finite(v) for v in values)
        drawn = [v if _finite(v) else 0.0 for v in values]
        label = name + (f" ({missing} categories without a valid grade)" if missing else "")
        ax.plot(angles + angles[:1], drawn + drawn[:1], marker="o", label=label)
        ax.fill(angles + angles[:1], drawn + drawn[:1], alpha=0.15)
    ax.set_xticks(angles)
    ax.set_xticklabels(cats)
    ax.set_ylim(0, limit)
    ax.set_title(title)
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.12), fontsize=8)
    return _save(fig, path)
