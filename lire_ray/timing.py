"""Busy intervals of the pool-building stages, and how much of them overlapped training.

Each sampling or scoring batch records the wall-clock interval in which it ran as one small
JSON file in a timing directory (written then renamed, so a driver reading the directory while
a stream still runs never sees half a file). :func:`overlap_seconds` measures how long some
batch was in flight while the trainer ran: the overlap of sampling and training that split
placement buys.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from lire_ray.atomic import atomic_write_text


def record_busy(timing_dir: str | Path | None, role: str, start: float,
                key: str | None = None) -> None:
    """Record one busy interval of ``role``, from ``start`` until now (wall-clock seconds).

    Args:
        timing_dir: Where intervals go; None records nothing.
        role: The stage ("sampler", "reward", "reference").
        start: ``time.time()`` when the batch began.
        key: The batch's key given to :func:`record_start`, if any.
    """
    if timing_dir:
        path = Path(timing_dir) / f"{role}-{key or uuid.uuid4().hex}.json"
        atomic_write_text(path, json.dumps({"role": role, "start": start, "end": time.time()}))


def record_start(timing_dir: str | Path | None, role: str, key: str) -> None:
    """Mark that a batch of ``role`` (identified by ``key``) started; :func:`record_busy` with
    the same key marks it done. A start without its end is a batch in flight."""
    if timing_dir:
        atomic_write_text(Path(timing_dir) / f"{role}-{key}.start", str(time.time()))


def in_flight(timing_dir: str | Path, role: str) -> list[str]:
    """Keys of the batches of ``role`` started and not yet done."""
    done = {p.stem for p in Path(timing_dir).glob(f"{role}-*.json")}
    return [p.stem[len(role) + 1:] for p in Path(timing_dir).glob(f"{role}-*.start")
            if p.stem not in done]


def busy_intervals(timing_dir: str | Path) -> list[tuple[float, float]]:
    """The recorded busy intervals, merged where they overlap, in time order."""
    spans = sorted((d["start"], d["end"]) for d in (
        json.loads(p.read_text(encoding="utf-8")) for p in Path(timing_dir).glob("*.json")))
    merged: list[tuple[float, float]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def overlap_seconds(busy: Sequence[tuple[float, float]], span: tuple[float, float]) -> float:
    """Seconds of ``span`` (e.g. training) during which some interval of ``busy`` was running."""
    return sum(max(0.0, min(b, span[1]) - max(a, span[0])) for a, b in busy)
