"""Custom Ray metrics of a self-enhancement run, exported with ``ray.util.metrics``.

They appear in the Ray dashboard's metrics view (and Prometheus, where configured): the
training reward's mean over each Evolve step's policy candidates, the pool size, the largest
candidate staleness seen, and training tokens per second. Exporting never fails a run.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_GAUGES = {
    "policy_reward_mean": "Mean training reward of the policy candidates of an Evolve step",
    "pool_candidates": "Candidates in the pool of an Evolve step",
    "max_staleness_seen": "Largest policy-version lag of a candidate in an Evolve step",
    "tokens_per_s": "Training tokens per second at the end of an Evolve step",
}
_cache: dict = {}


def export_step(stats: dict, *, run: str) -> None:
    """Set each gauge from an Evolve step's statistics (keys as in ``_GAUGES``)."""
    try:
        from ray.util.metrics import Gauge

        for key, doc in _GAUGES.items():
            value = stats.get(key)
            if value is None:
                continue
            if key not in _cache:
                _cache[key] = Gauge(f"lire_{key}", description=doc, tag_keys=("run",))
            _cache[key].set(float(value), tags={"run": run})
    except Exception as exc:  # metrics are a view, never a reason to stop training
        log.debug("could not export Ray metrics: %s", exc)
