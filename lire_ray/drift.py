"""Recipe drift: what a resumed run may change against the recipe it was started with.

A run directory's ``config.yaml`` is the resolved recipe the run started with. A resumed run
(``run.resume=true``) whose recipe differs from it would mix two experiments in one set of
pools, checkpoints and reports, so :func:`check_resume` refuses it and lists every differing key,
unless each difference is one the run can continue with (:data:`CONTINUABLE`): more Evolve
steps, logging and experiment tracking, resources and placement, how to reach Ray. Those are accepted,
appended to ``config_history.jsonl`` (one JSON object per resume that changed something: time,
and each key's old and new value) and ``config.yaml`` is rewritten with the new recipe by
:func:`record_changes`.

Cached evaluations are keyed by what they depend on: ``eval_before.json`` is the initial
policy's, ``eval_after_e{E}.json`` the policy after E Evolve steps, so more steps evaluate the
new final policy and never reuse the earlier one. No continuable key changes what an existing
evaluation measured, so none is deleted.
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from lire_ray.atomic import atomic_write_text
from lire_ray.config import Recipe, format_validation_error
from lire_ray.errors import RunDirError
from lire_ray.rundir import RunDir

#: Keys (``fnmatch`` patterns over dotted paths) a resumed run may change. Each leaves what was
#: already computed valid: the number of Evolve steps (checked against the steps done), where
#: training logs go, placement and resources, and how the job reaches Ray.
CONTINUABLE = (
    "evolve.steps",
    "train.logger",
    "train.tracking.*",
    "run.verbose",
    "resources.*",
    "ray.*",
    "sampler.sleep_level",
    "sampler.gpu_memory_utilization",
    "sampler.enforce_eager",
    "run.dir",
    "run.resume",
)

#: Recorded with the run but never a difference worth a history line.
IGNORED = ("run.resume",)

HISTORY_FILE = "config_history.jsonl"

_ABSENT = "(absent)"


@dataclass(frozen=True)
class Change:
    """One key whose value differs between the run's ``config.yaml`` and the new recipe."""

    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"


def _show(value: Any) -> str:
    return value if value == _ABSENT else json.dumps(value, default=str)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths to leaf values; dicts and lists of dicts are walked (``rewards.0.path``),
    other lists are leaves."""
    if isinstance(tree, Mapping):
        items = list(tree.items())
    elif isinstance(tree, list) and tree and all(isinstance(x, Mapping) for x in tree):
        items = [(str(i), x) for i, x in enumerate(tree)]
    else:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Every dotted key whose value differs (a key on one side only counts, as ``(absent)``).

    Args:
        old: A resolved recipe as a dict (``Recipe.model_dump(mode="json")``).
        new: Another one.

    Returns:
        The changes, sorted by key.
    """
    a, b = flatten(dict(old)), flatten(dict(new))
    return [Change(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in sorted(a.keys() | b.keys())
            if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def continuable(change: Change) -> bool:
    """Whether a resumed run may make ``change`` (its key matches :data:`CONTINUABLE`)."""
    return any(fnmatch.fnmatchcase(change.key, pattern) for pattern in CONTINUABLE)


def stored_recipe(rundir: RunDir) -> Recipe:
    """The run's ``config.yaml``, validated by today's schema (new keys get their defaults).

    Raises:
        RunDirError: The file is not YAML or no longer a valid recipe.
    """
    path = rundir.config_path
    try:
        return Recipe.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except yaml.YAMLError as exc:
        raise RunDirError(f"{path}: not valid YAML ({exc}); cannot compare the recipe with the "
                          "run's") from None
    except ValidationError as exc:
        raise RunDirError(f"{path} is not a valid recipe for this version of lire-ray, so "
                          "the run cannot be resumed with it; start a new run.dir:\n"
                          + format_validation_error(exc, str(path))) from None


def check_resume(rundir: RunDir, recipe: Recipe) -> list[Change]:
    """Refuse a resume whose recipe differs from the run's in a way it cannot continue with.

    Args:
        rundir: The run directory (nothing is written).
        recipe: The recipe the job was started with.

    Returns:
        The accepted changes (empty for a new run or an unchanged recipe), for
        :func:`record_changes`.

    Raises:
        RunDirError: Some key differs that is not :data:`CONTINUABLE`, or ``evolve.steps``
            drops below the steps the run completed, or changes although ``train.schedule`` is
            ``continue`` (one learning-rate schedule spans all steps). The message lists every
            differing key with both values.
    """
    if not rundir.config_path.is_file():
        return []
    old = stored_recipe(rundir)
    changes = [c for c in diff(old.model_dump(mode="json"), recipe.model_dump(mode="json"))
               if c.key not in IGNORED]
    refused = [c for c in changes if not continuable(c)]
    reasons = []
    steps = next((c for c in changes if c.key == "evolve.steps"), None)
    if steps is not None:
        done = max(rundir.load_state().completed, default=0)
        if steps.new < done:
            refused.append(steps)
            reasons.append(f"the run has completed {done} Evolve steps, more than "
                           f"evolve.steps={steps.new}")
        elif old.train.schedule == "continue":
            refused.append(steps)
            reasons.append("train.schedule=continue spans one learning-rate schedule over "
                           "evolve.steps, so the steps already trained followed another one")
    if not refused:
        return changes
    allowed = ", ".join(p for p in CONTINUABLE if p not in IGNORED)
    listed = "\n".join(f"  {c}" for c in sorted(set(refused), key=lambda c: c.key))
    why = "".join(f"\n({r})" for r in reasons)
    raise RunDirError(
        f"cannot resume {rundir.root} with a recipe that differs from its config.yaml in:\n"
        f"{listed}{why}\nA resumed run may change only {allowed}. Give the run's values again "
        f"(they are in {rundir.config_path}) or start a new run with run.dir=...")


def record_changes(rundir: RunDir, recipe: Recipe, changes: list[Change]) -> None:
    """Append accepted changes to ``config_history.jsonl`` and rewrite ``config.yaml``.

    Args:
        rundir: The run directory (already created).
        recipe: The recipe the run continues with.
        changes: What :func:`check_resume` returned; nothing is written when empty.
    """
    if not changes:
        return
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "completed_steps": rundir.load_state().completed,
              "changes": {c.key: {"old": c.old, "new": c.new} for c in changes}}
    with (rundir.root / HISTORY_FILE).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True, default=str) + "\n")
    atomic_write_text(rundir.config_path, recipe.to_yaml())
