"""Frozen z-score statistics of reward models, and their manifest and file forms.

Statistics are fitted once (on the initial pool) and then frozen, so that rewards of different
Evolve steps stay comparable. They are recorded in a pool manifest's metadata under
:data:`NORM_METADATA_KEY` as ``{name: {"mean": float, "std": float}}`` (:func:`stats_to_dict`,
:func:`stats_from_dict`), and handed to reward actors as a JSON file of the same form
(:func:`save_norm_stats`, :func:`load_norm_stats`), so an actor restarted by Ray loads the same
frozen statistics.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lire_ray.errors import DataError

#: Key of the frozen z-score statistics in a pool manifest's ``metadata``.
NORM_METADATA_KEY = "reward_normalisation"


@dataclass(frozen=True)
class NormStats:
    """Frozen z-score statistics of one reward model."""

    mean: float
    std: float

    @classmethod
    def fit(cls, scores: Sequence[float]) -> NormStats:
        """Mean and (population) standard deviation; a constant score gets std 1."""
        n = len(scores)
        if n == 0:
            raise ValueError("cannot fit normalisation statistics on no scores")
        mean = sum(scores) / n
        var = sum((s - mean) ** 2 for s in scores) / n
        return cls(mean=mean, std=math.sqrt(var) if var > 0 else 1.0)

    def apply(self, scores: Sequence[float]) -> list[float]:
        return [(s - self.mean) / self.std for s in scores]


def stats_to_dict(stats: Mapping[str, NormStats]) -> dict[str, dict[str, float]]:
    """The manifest form of normalisation statistics.

    Args:
        stats: Statistics by reward-model name.

    Returns:
        ``{name: {"mean": float, "std": float}}``, names sorted.
    """
    return {name: {"mean": float(stats[name].mean), "std": float(stats[name].std)}
            for name in sorted(stats)}


def stats_from_dict(data: object, source: str = "reward normalisation") -> dict[str, NormStats]:
    """Statistics from their manifest form, checked.

    Args:
        data: ``{name: {"mean": number, "std": number}}``.
        source: Where ``data`` came from, named in errors (a file or a manifest).

    Returns:
        :class:`NormStats` by reward-model name.

    Raises:
        DataError: ``data`` is not of that form, a value is not a finite number, or a standard
            deviation is not positive (it would divide by zero or flip the ranking).
    """
    if not isinstance(data, Mapping):
        raise DataError(f"expected {{name: {{mean, std}}}}, got {type(data).__name__}",
                        source=source, field=NORM_METADATA_KEY)
    out = {}
    for name, entry in data.items():
        where = f"{NORM_METADATA_KEY}.{name}"
        if not isinstance(entry, Mapping) or set(entry) != {"mean", "std"}:
            raise DataError("expected exactly the keys 'mean' and 'std'", source=source,
                            field=where)
        values = []
        for key in ("mean", "std"):
            value = entry[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise DataError(f"'{key}' is {value!r}, not a finite number", source=source,
                                field=where)
            values.append(float(value))
        if values[1] <= 0:
            raise DataError(f"'std' is {values[1]}, must be positive", source=source, field=where)
        out[str(name)] = NormStats(mean=values[0], std=values[1])
    return out


def save_norm_stats(path: str | os.PathLike, stats: Mapping[str, NormStats]) -> None:
    """Write statistics to a JSON file atomically (a reader never sees half a file).

    Args:
        path: The file to (re)write.
        stats: Statistics by reward-model name.
    """
    from lire_ray.atomic import atomic_write_text

    atomic_write_text(Path(path), json.dumps(stats_to_dict(stats), indent=2, allow_nan=False))


def load_norm_stats(path: str | os.PathLike) -> dict[str, NormStats]:
    """Read statistics written by :func:`save_norm_stats`.

    Args:
        path: The JSON file.

    Returns:
        :class:`NormStats` by reward-model name.

    Raises:
        DataError: The file is missing, not JSON, or not of the form ``{name: {mean, std}}``.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read normalisation statistics: {exc}", source=str(path)) from None
    return stats_from_dict(data, source=str(path))
