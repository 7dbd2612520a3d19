"""LIRE gradient health: how often Q is numerically one-hot, and how large eq. 7's weights are.

The LIRE loss (:func:`~lire_ray.losses.lire.lire_loss`) reports two metrics per optimizer step:

* ``onehot_share``: the share of the step's prompts (with >= 2 real candidates) whose largest
  ``Q_j`` exceeds :data:`~lire_ray.losses.lire.ONEHOT_Q` (0.99);
* ``grad_weight``: the mean over those prompts of the mean over a prompt's real candidates of
  ``|w_j| = |Q_j (R~_j - E_Q[R~]) / T|``, the eq. 7 weight on the gradient of the candidate's
  score.

Both are means over each micro-batch's prompts, weighted by prompts over the step's
micro-batches and workers (as every loss metric). With summed log-probs of long responses
(human answers differ by tens of nats) and T = 2, Q is one-hot for most prompts: every weight is
then ~0 and the policy does not move. :class:`GradHealthWatch` warns once per training run when
that happens; :func:`summarize` turns a run's step records into what the reports show.

Pure numbers and the project's logger; no Ray, no model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lire_ray.losses.lire import ONEHOT_Q

log = logging.getLogger(__name__)

#: Step-record keys of the two metrics.
ONEHOT_KEY, WEIGHT_KEY = "onehot_share", "grad_weight"
#: A step is "mostly one-hot" (and the run warns) when its one-hot share exceeds this.
WARN_SHARE = 0.5

HEALTH_NOTE = (
    f"One-hot share: share of a step's prompts (with >= 2 candidates) whose largest Q_j exceeds "
    f"{ONEHOT_Q} (Q = softmax(s / T), eq. 5); gradient weight: mean over those prompts of the "
    "mean over a prompt's candidates of |Q_j (R~_j - E_Q R~) / T| (eq. 7), the weight on the "
    "gradient of candidate j's score. Near-one one-hot shares and near-zero weights mean the "
    f"policy barely moves. One-hot steps: optimizer steps whose one-hot share exceeded "
    f"{WARN_SHARE} (the run warns at the first). Raise `loss.params.temperature` or set "
    "`loss.params.score=mean` (length-normalised log-probs) to flatten Q.")


def _finite(record: Mapping, key: str) -> float | None:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def summarize(history: Iterable[Mapping[str, Any]]) -> dict[str, float] | None:
    """The gradient health of a run's optimizer steps.

    Args:
        history: Step records in order (those without the LIRE metrics are skipped).

    Returns:
        ``{"steps", "onehot_share", "onehot_share_first", "onehot_share_last",
        "grad_weight", "grad_weight_first", "grad_weight_last", "onehot_steps"}``: means over the
        steps, the first and last step's values, and how many steps had a one-hot share above
        :data:`WARN_SHARE`; None when no step carries the metrics (another loss).
    """
    pairs = [(s, w) for h in history
             if (s := _finite(h, ONEHOT_KEY)) is not None and (w := _finite(h, WEIGHT_KEY))
             is not None]
    if not pairs:
        return None
    shares, weights = [s for s, _ in pairs], [w for _, w in pairs]
    return {"steps": len(pairs), "onehot_share": sum(shares) / len(pairs),
            "onehot_share_first": shares[0], "onehot_share_last": shares[-1],
            "grad_weight": sum(weights) / len(pairs), "grad_weight_first": weights[0],
            "grad_weight_last": weights[-1],
            "onehot_steps": sum(s > WARN_SHARE for s in shares)}


def merge(summaries: Sequence[Mapping[str, float] | None]) -> dict[str, float] | None:
    """Consecutive summaries (e.g. a chain's Evolve steps) as one; means weighted by steps.

    Returns:
        The combined summary (first values of the first, last of the last), or None when none
        of ``summaries`` is a summary.
    """
    parts = [s for s in summaries if s]
    if not parts:
        return None
    n = sum(p["steps"] for p in parts)
    return {"steps": n,
            "onehot_share": sum(p["onehot_share"] * p["steps"] for p in parts) / n,
            "onehot_share_first": parts[0]["onehot_share_first"],
            "onehot_share_last": parts[-1]["onehot_share_last"],
            "grad_weight": sum(p["grad_weight"] * p["steps"] for p in parts) / n,
            "grad_weight_first": parts[0]["grad_weight_first"],
            "grad_weight_last": parts[-1]["grad_weight_last"],
            "onehot_steps": sum(p["onehot_steps"] for p in parts)}


class GradHealthWatch:
    """Watches a training run's step records and warns once when LIRE's gradient vanishes.

    The warning fires at the first optimizer step whose ``onehot_share`` exceeds
    :data:`WARN_SHARE` (most of the step's prompts have a one-hot Q), once per watch: the
    driver keeps one watch per training run. It goes to this module's logger, under the
    project's ``lire_ray`` logger, which the jobs print on the console.

    Args:
        params: The loss's full parameters (their temperature and score are named).
        run: The training run's name, for the message.
    """

    def __init__(self, params: Mapping[str, Any] | None = None, run: str = ""):
        self.params = dict(params or {})
        self.run = run
        #: The global step of the warning, or None before it fires.
        self.warned_at: int | None = None

    def observe(self, record: Mapping[str, Any]) -> bool:
        """Look at one optimizer step's record; warn if it is the first mostly one-hot step.

        Args:
            record: A step record (``step``, ``onehot_share``, ``grad_weight``, ...).

        Returns:
            Whether this call warned.
        """
        share = _finite(record, ONEHOT_KEY)
        if self.warned_at is not None or share is None or share <= WARN_SHARE:
            return False
        self.warned_at = int(record.get("step", 0))
        weight = _finite(record, WEIGHT_KEY)
        temperature = self.params.get("temperature", "?")
        score = self.params.get("score", "sum")
        where = f" ({self.run})" if self.run else ""
        advice = ("or set loss.params.score=mean (length-normalised log-probs instead of the "
                  "summed ones the run uses now)" if score != "mean" else
                  "(loss.params.score=mean, length-normalised log-probs, is already set)")
        log.warning(
            "LIRE gradient is vanishing%s: at optimizer step %d, %.0f%% of prompts have a "
            "one-hot Q (max Q > %g; mean |eq. 7 weight| %.2e), so the policy barely moves. "
            "Raise loss.params.temperature (now %s) %s. Shown once per run; every step logs "
            "onehot_share and grad_weight.", where, self.warned_at, 100 * share, ONEHOT_Q,
            weight if weight is not None else math.nan, temperature, advice)
        return True

    def observe_all(self, history: Iterable[Mapping[str, Any]]) -> bool:
        """:meth:`observe` every record in order; whether any call warned."""
        return any([self.observe(h) for h in history])
