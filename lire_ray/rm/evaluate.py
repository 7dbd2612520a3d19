"""Held-out evaluation of a trained reward model, and its ``report.md``.

The trained folder is loaded as a ``kind: hf`` reward model (:class:`~lire_ray.rewards.
RewardSet`), exactly as a recipe would use it, and scores the chosen and the rejected response
of every held-out pair. Reported:

- pair accuracy (share of pairs with r_chosen > r_rejected; a tie counts as wrong) and the mean
  reward gap r_chosen - r_rejected;
- calibration: pairs bucketed by |gap| (equal-count buckets); per bucket the Bradley-Terry
  model's predicted probability that its pick is right, mean sigmoid(|gap|), against the
  observed accuracy;
- the histogram of the rewards of chosen and of rejected responses;
- for every reward model of ``rm_train.compare_with`` (lexicons, judges): its own pair accuracy
  on the same pairs, the share of pairs on which it and the learned model prefer the same side,
  and the Pearson correlation of the two models' scores over all held-out responses.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from lire_ray import plots
from lire_ray.config import Recipe, RewardModelConfig
from lire_ray.report import markdown_table, write_report
from lire_ray.rewards.pairs import Pairs

#: The learned model's name in the evaluation and the report.
LEARNED = "learned"


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def calibration(gaps: Sequence[float], buckets: int) -> list[dict[str, float]]:
    """Accuracy per |gap| bucket against the Bradley-Terry prediction.

    Args:
        gaps: Per pair r_chosen - r_rejected.
        buckets: Number of equal-count buckets (fewer when there are fewer pairs).

    Returns:
        Per bucket, in increasing |gap|: ``low`` and ``high`` (|gap| range), ``n``,
        ``predicted`` (mean sigmoid(|gap|)) and ``accuracy`` (share with gap > 0).
    """
    ordered = sorted(gaps, key=abs)
    k = max(1, min(buckets, len(ordered)))
    out = []
    for b in range(k):
        part = ordered[b * len(ordered) // k:(b + 1) * len(ordered) // k]
        if not part:
            continue
        out.append({"low": abs(part[0]), "high": abs(part[-1]), "n": len(part),
                    "predicted": statistics.fmean(_sigmoid(abs(g)) for g in part),
                    "accuracy": statistics.fmean(float(g > 0) for g in part)})
    return out


def pair_metrics(chosen: Sequence[float], rejected: Sequence[float], *,
                 buckets: int = 5) -> dict[str, Any]:
    """Pair accuracy, mean gap and calibration of one reward model's scores.

    Args:
        chosen: [N] scores of the preferred responses.
        rejected: [N] scores of the rejected responses.
        buckets: Calibration buckets.

    Returns:
        ``pairs``, ``accuracy``, ``mean_margin``, ``mean_chosen``, ``mean_rejected``,
        ``calibration`` (see :func:`calibration`).
    """
    gaps = [c - r for c, r in zip(chosen, rejected, strict=True)]
    n = len(gaps)
    return {"pairs": n,
            "accuracy": statistics.fmean(float(g > 0) for g in gaps) if n else math.nan,
            "mean_margin": statistics.fmean(gaps) if n else math.nan,
            "mean_chosen": statistics.fmean(chosen) if n else math.nan,
            "mean_rejected": statistics.fmean(rejected) if n else math.nan,
            "calibration": calibration(gaps, buckets)}


def _pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    if len(xs) < 2 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return math.nan
    return statistics.correlation(xs, ys)


def agreement(learned: tuple[Sequence[float], Sequence[float]],
              other: tuple[Sequence[float], Sequence[float]]) -> dict[str, float]:
    """How another reward model relates to the learned one on the same pairs.

    Args:
        learned: (chosen [N], rejected [N]) scores of the learned model.
        other: (chosen [N], rejected [N]) scores of the other model.

    Returns:
        ``accuracy`` (the other model's pair accuracy; ties count as wrong), ``ties`` (share
        of pairs it scores equal), ``same_preference`` (share of pairs on which both prefer the
        same side; a tie of the other model counts as disagreeing) and ``pearson`` (of the
        scores over all 2N responses; NaN when one side is constant).
    """
    lg = [c - r for c, r in zip(*learned, strict=True)]
    og = [c - r for c, r in zip(*other, strict=True)]
    n = max(1, len(lg))
    return {"accuracy": sum(g > 0 for g in og) / n, "ties": sum(g == 0 for g in og) / n,
            "same_preference": sum((a > 0) == (b > 0) and b != 0 for a, b in zip(lg, og)) / n,
            "pearson": _pearson(list(learned[0]) + list(learned[1]),
                                list(other[0]) + list(other[1]))}


def learned_config(recipe: Recipe, path: str | Path) -> RewardModelConfig:
    """The ``kind: hf`` recipe entry that uses a trained reward model as it was trained."""
    rm = recipe.rm_train
    return RewardModelConfig(name=LEARNED, kind="hf", path=str(Path(path).resolve()),
                             template=rm.template, max_length=rm.max_length,
                             batch_size=rm.eval_batch_size)


def score_pairs(recipe: Recipe, model_dir: str | Path, pairs: pa.Table) -> dict[str, tuple]:
    """Score every held-out pair by the learned model and the ``compare_with`` models.

    Args:
        recipe: The recipe (``rm_train``, ``rewards``).
        model_dir: The trained reward model.
        pairs: Pair rows (chosen first, see :mod:`lire_ray.rm.pairs`).

    Returns:
        Per model name, ``(chosen scores [N], rejected scores [N])``.
    """
    from lire_ray.inputs import absolute_reward_paths
    from lire_ray.rewards import RewardSet

    others = [rm for rm in recipe.rewards if rm.name in recipe.rm_train.compare_with]
    rewards = RewardSet([learned_config(recipe, model_dir), *absolute_reward_paths(others)])
    rows = pairs.to_pylist()
    prompts = [r["prompt"] for r in rows]
    turns = [json.loads(r["prompt_messages"]) if r["prompt_messages"] else None for r in rows]
    meta = [json.loads(r["metadata"]) if r["metadata"] else None for r in rows]
    sides = []
    for side in (0, 1):
        flat = Pairs.flat(prompts, [r["responses"][side] for r in rows], meta, turns)
        sides.append(rewards.score_pairs_raw(flat))
    return {name: (sides[0][name], sides[1][name]) for name in rewards.names}


def evaluate(recipe: Recipe, model_dir: str | Path, pairs: pa.Table) -> dict[str, Any]:
    """Every held-out number of the report (JSON-serialisable).

    Returns:
        ``learned``: :func:`pair_metrics` of the learned model plus ``scores`` (chosen,
        rejected); ``compare``: per ``compare_with`` model, :func:`pair_metrics` (no scores)
        merged with :func:`agreement`.
    """
    scores = score_pairs(recipe, model_dir, pairs)
    buckets = recipe.rm_train.calibration_buckets
    learned = scores.pop(LEARNED)
    out: dict[str, Any] = {"learned": {**pair_metrics(*learned, buckets=buckets),
                                       "scores": {"chosen": learned[0], "rejected": learned[1]}},
                           "compare": {}}
    for name, other in scores.items():
        m = pair_metrics(*other, buckets=buckets)
        m.pop("calibration")
        out["compare"][name] = {**m, **agreement(learned, other)}
    return out


def write_rm_report(root: Path, *, recipe: Recipe, model_dir: Path, result: dict[str, Any],
                    history: Sequence[dict], facts: dict[str, Any], command: str) -> Path:
    """Write ``report.md``, ``metrics.json`` and ``plots/`` of a reward-model run.

    Args:
        root: The output directory (beside the model folder).
        recipe: The recipe.
        model_dir: The trained model folder.
        result: :func:`evaluate`'s output.
        history: Per-step training records.
        facts: Data facts (pools, pair counts, skipped rows, wall time).
        command: The command line that made it.

    Returns:
        The path of ``report.md``.
    """
    rm, learned = recipe.rm_train, result["learned"]
    plot_dir = root / "plots"
    made = [
        ("held-out rewards of chosen and rejected responses",
         plots.plot_histograms({"chosen": learned["scores"]["chosen"],
                                "rejected": learned["scores"]["rejected"]},
                               plot_dir / "reward_histogram.png", xlabel="reward",
                               title="learned reward on held-out pairs")),
        ("calibration: observed pair accuracy per |gap| bucket against sigmoid(|gap|)",
         plots.plot_calibration(learned["calibration"], plot_dir / "calibration.png")),
        ("training loss and pair accuracy per optimizer step",
         plots.plot_curves(list(history), ["loss", "accuracy", "margin"],
                           plot_dir / "training.png", title="reward-model training")),
    ]
    headline = markdown_table(
        ["model", "held-out pairs", "pair accuracy", "mean gap (chosen - rejected)",
         "same preference as learned", "Pearson with learned"],
        [[f"{LEARNED} (this model)", learned["pairs"], learned["accuracy"],
          learned["mean_margin"], "-", "-"]]
        + [[name, c["pairs"], c["accuracy"], c["mean_margin"], c["same_preference"],
            c["pearson"]] for name, c in result["compare"].items()])
    calib = markdown_table(["|gap| from", "to", "pairs", "predicted", "observed accuracy"],
                           [[b["low"], b["high"], b["n"], b["predicted"], b["accuracy"]]
                            for b in learned["calibration"]])
    usage = ("```yaml\nrewards:\n  - name: rm\n    kind: hf\n"
             f"    path: {model_dir}\n    template: {rm.template}\n"
             f"    max_length: {rm.max_length}\n```")
    data = markdown_table(["fact", "value"], [[k, v] for k, v in facts.items()])
    last = history[-1] if history else {}
    sections = [
        ("Command", f"```\n{command}\n```"),
        ("Held-out pairs", headline + "\n\nPair accuracy counts a tie as wrong; chance is 0.5."),
        ("Calibration", calib),
        ("Data and training", data + f"\n\nBackbone `{rm.backbone}`, template `{rm.template}`, "
         f"pairs `{rm.pairs}` by `{rm.preference}`, margin {rm.margin:g}, "
         f"{len(history)} optimizer steps, last training loss "
         f"{last.get('loss', math.nan):.4f}, last step pair accuracy "
         f"{last.get('accuracy', math.nan):.3f}."),
        ("Use it as a reward model", usage),
    ]
    metrics = {"heldout": {LEARNED: {k: v for k, v in learned.items() if k != "scores"},
                           **result["compare"]},
               "facts": facts, "final_train": last}
    return write_report(root, title="Reward model", sections=sections, metrics=metrics,
                        plots=made)
