"""Reference actor: fills ``ref_logps`` of pool rows with log-probs under the reference policy.

Undecorated on purpose: the runtime layer applies resources from the recipe with
``ray.remote(**resources)(ReferenceActor)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from lire_ray.models import default_device
from lire_ray.pool import PoolRow
from lire_ray.reference import ReferenceScorer


class ReferenceActor:
    """Hosts a :class:`~lire_ray.reference.ReferenceScorer` (same arguments)."""

    def __init__(self, model_path: str, **kwargs):
        kwargs.setdefault("device", default_device())
        self.scorer = ReferenceScorer(model_path, **kwargs)

    def annotate_rows(self, rows: Sequence[PoolRow]) -> list[PoolRow]:
        return self.scorer.annotate(rows)

    def logps(self, rows: Sequence[PoolRow], *,
              max_response_tokens: int | None = None) -> list[list[float]]:
        return self.scorer.logps(rows, max_response_tokens=max_response_tokens)

    def ping(self) -> str:
        return "reference"
