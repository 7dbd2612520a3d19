"""Run reports: ``report.md`` with its PNG plots (:mod:`lire_ray.plots`), and ``metrics.json``
holding every number shown. Each function takes plain numbers; nothing here talks to Ray or a
model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from lire_ray.atomic import atomic_write_text


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
