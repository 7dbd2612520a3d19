"""The run directory of a self-enhancement run, and what ``resume=true`` may trust in it.

Layout::

    <run.dir>/
      config.yaml            resolved recipe snapshot (written first; rewritten when a resume
                             changes a continuable key, see lire_ray.drift)
      config_history.jsonl   one line per resume that changed the recipe
      pools/e{k}/            candidate pool of Evolve step k (pool manifest inside)
      pools/.e{k}.parts/     parts of a pool being built (trusted once their checksum is there)
      checkpoints/e{k}/      policy after Evolve step k (HF format, ``COMPLETE`` marker last)
      ray_train/             the trainer's run: epoch checkpoints of the training state
      metrics.jsonl          one JSON object per Evolve step
      eval_*.json            held-out evaluations behind the report
      tracking/, tracking.json   the run's experiment (TensorBoard, W&B or MLflow)
      served_policy.json, reward_norm.json   what restarted samplers and reward actors reload
      report.md, metrics.json, summary.txt, plots/   the final report
      state.json             completed steps, rewritten atomically

A run continues (``resume=true``) after the last step recorded in ``state.json`` whose
checkpoint is complete and whose pools (its own and every earlier one) are complete on disk;
anything else (a temporary directory, a checkpoint without its marker) is ignored by a resume
and overwritten, except the parts of the step being built and the trainer's epoch checkpoints,
which let an interrupted step continue where it stopped.

Other jobs (``jobs/sample.py``, ``score.py``, ``train.py``, ``evaluate.py``, ``compare.py``)
write their outputs under ``run.dir`` too, by default the same directory. They may never write
where a run keeps its own files (:func:`run_entry`: refused by :func:`confine_output`), and a
directory holding only their outputs is no run: ``resume=true`` starts a new run beside them.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lire_ray.atomic import atomic_write_text
from lire_ray.errors import RunDirError

COMPLETE_MARKER = "COMPLETE"

#: Top-level entries a self-enhancement run writes (``fnmatch`` patterns), and the
#: sub-directories of ``pools/``, ``checkpoints/`` and ``ray_train/`` it owns.
RUN_TOP = ("config.yaml", "config_history.jsonl", "state.json", "metrics.jsonl", "metrics.json",
           "report.md", "summary.txt", "plots", "served_policy.json", "reward_norm.json",
           "eval_*.json", "tracking", "tracking.json")
RUN_NESTED = {"pools": ("e[0-9]*", ".e[0-9]*"), "checkpoints": ("e[0-9]*",),
              "ray_train": ("policy*", "tensorboard")}


def run_entry(relative: str | os.PathLike) -> bool:
    """Whether a path relative to a run directory is (or lies inside) a file the run owns.

    ``pools``, ``checkpoints`` and ``ray_train`` themselves count too: replacing one would
    replace what the run keeps inside it.

    Args:
        relative: A path relative to the run directory.

    Returns:
        True for ``config.yaml``, ``pools/e1``, ``pools/e1/x.parquet``, ``pools``, ...; False
        for other jobs' outputs such as ``pools/sampled`` or ``eval``.
    """
    parts = Path(relative).parts
    if not parts:
        return False
    if any(fnmatch.fnmatchcase(parts[0], pattern) for pattern in RUN_TOP):
        return True
    nested = RUN_NESTED.get(parts[0])
    if nested is None:
        return False
    return len(parts) == 1 or any(fnmatch.fnmatchcase(parts[1], p) for p in nested)


def run_entries(root: str | os.PathLike) -> list[str]:
    """The entries of a run found in ``root`` (relative paths, sorted): what says it held one."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if child.name in RUN_NESTED and child.is_dir():
            found += [f"{child.name}/{c.name}" for c in child.iterdir()
                      if run_entry(Path(child.name, c.name))]
        elif run_entry(child.name):
            found.append(child.name)
    return sorted(found)


def confine(base: Path, relative: str | os.PathLike) -> Path:
    """Resolve ``relative`` under ``base`` and refuse anything that escapes it.

    A relative path is taken relative to ``base``; an absolute one is kept as it is, so it
    passes only when it lies inside ``base``. Symbolic links are resolved first, so a link
    inside ``base`` that points elsewhere escapes too.

    Args:
        base: The directory outputs must stay in (usually ``run.dir``).
        relative: The path to place under it.

    Returns:
        The resolved absolute path (``base`` itself for ``"."``).

    Raises:
        RunDirError: The path is absolute and outside ``base``, or climbs out of it with ``..``
            or through a symbolic link.
    """
    base = Path(base).resolve()
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise RunDirError(f"path '{relative}' escapes the run directory {base}")
    return target


@dataclass
class RunState:
    """Progress of a run: the Evolve steps whose pool, training and checkpoint all finished."""

    completed: list[int] = field(default_factory=list)
    policy_version: int = 0

    def to_json(self) -> str:
        return json.dumps({"completed": self.completed, "policy_version": self.policy_version},
                          indent=2)


class RunDir:
    """Paths and stage bookkeeping of one run directory.

    Args:
        root: The run directory.
        resume: Whether an existing, non-empty directory may be continued.

    Nothing is written until :meth:`create`, so a run refused for a bad setting leaves no
    trace.

    With ``resume``, a directory without ``config.yaml`` that holds only other jobs' outputs
    (``pools/sampled``, ``eval``, ...) starts a new run beside them.

    Raises:
        RunDirError: ``root`` is non-empty and ``resume`` is false, or ``resume`` is true but
            the directory holds files of a run (:func:`run_entries`) without its
            ``config.yaml``.
    """

    def __init__(self, root: str | os.PathLike, *, resume: bool):
        self.root = Path(root).resolve()
        has_content = self.root.is_dir() and any(self.root.iterdir())
        if has_content and not resume:
            raise RunDirError(
                f"run directory {self.root} is not empty; pass resume=true to continue the run "
                f"in it (or to start one beside other jobs' outputs) or choose another "
                f"run.dir=...")
        if resume and has_content and not self.config_path.is_file():
            found = run_entries(self.root)
            if found:
                raise RunDirError(
                    f"cannot resume: {self.root} has {', '.join(found[:4])} of a run but no "
                    f"config.yaml, the recipe it was started with; choose another run.dir=...")

    def create(self, config_yaml: str) -> None:
        """Create the directory and snapshot the recipe (kept as is when resuming)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.config_path.is_file():
            atomic_write_text(self.config_path, config_yaml)

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    def pool_dir(self, step: int) -> Path:
        return self.root / "pools" / f"e{step}"

    def checkpoint_dir(self, step: int) -> Path:
        return self.root / "checkpoints" / f"e{step}"

    def load_state(self) -> RunState:
        """The recorded state, keeping only stages whose outputs are really complete."""
        if not self.state_path.is_file():
            return RunState()
        raw = json.loads(self.state_path.read_text(encoding="utf-8"))
        # A run continues from a checkpoint: the last recorded step whose checkpoint is
        # complete and whose pools, and those of every step before it, are complete too (steps
        # in between without a checkpoint, train.checkpoint_every > 1, count with it).
        last = 0
        for k in sorted(raw.get("completed", [])):
            pools = all((self.pool_dir(j) / "manifest.json").is_file() for j in range(1, k + 1))
            if self.is_checkpoint_complete(k) and pools:
                last = k
        return RunState(completed=list(range(1, last + 1)), policy_version=last)

    def mark_complete(self, state: RunState, step: int) -> None:
        """Record Evolve step ``step`` as done (its pool and checkpoint must be complete)."""
        if not self.is_checkpoint_complete(step):
            raise RunDirError(f"checkpoint {self.checkpoint_dir(step)} is not complete")
        state.completed = list(range(1, max([step, *state.completed]) + 1))
        state.policy_version = max(state.policy_version, step)
        atomic_write_text(self.state_path, state.to_json())

    def is_checkpoint_complete(self, step: int) -> bool:
        return (self.checkpoint_dir(step) / COMPLETE_MARKER).is_file()

    def discard_pool(self, step: int) -> None:
        """Remove a finalized pool of a step that is being redone (its parts stay)."""
        if self.pool_dir(step).exists():
            shutil.rmtree(self.pool_dir(step))

    def discard_incomplete(self, step: int) -> None:
        """Remove a stage's leftovers (partial checkpoint, unfinished pool) before redoing it."""
        for path in (self.checkpoint_dir(step), self.pool_dir(step)):
            if path.exists():
                shutil.rmtree(path)

    def append_metrics(self, record: dict) -> None:
        """Append one JSON line to ``metrics.jsonl``."""
        with self.metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")


def confine_output(run_dir: str | os.PathLike, output: str | os.PathLike) -> Path:
    """A job's ``output=`` directory: under ``run.dir``, never ``run.dir`` itself.

    ``run.dir`` itself is refused because a run keeps its own ``report.md``, ``metrics.json``,
    ``plots/`` and checkpoints there, which a job's output (and ``--overwrite``) would replace.

    Args:
        run_dir: The recipe's ``run.dir``.
        output: The job's ``output=`` value, relative to ``run_dir`` (or absolute inside it).

    Returns:
        The resolved absolute directory.

    Raises:
        RunDirError: ``output`` leaves ``run_dir``, is ``run_dir`` itself, or is where a
            self-enhancement run in ``run_dir`` keeps its own files (:func:`run_entry`), which
            would break its resume.
    """
    base = Path(run_dir).resolve()
    try:
        out = confine(base, output)
    except RunDirError as exc:
        raise RunDirError(f"output={output}: {exc}; give a directory under run.dir, or set "
                          "run.dir=... to write elsewhere") from None
    if out == base:
        raise RunDirError(f"output={output} is run.dir {base} itself; name a directory under it")
    if run_entry(out.relative_to(base)):
        raise RunDirError(f"output={output}: {out.relative_to(base)} is where a "
                          f"self-enhancement run in {base} keeps its own files; name another "
                          "directory (e.g. pools/sampled, checkpoints/train, eval)")
    return out


def prepare_output(out: Path, *, overwrite: bool, owned: Sequence[str]) -> Path:
    """Create ``out``; refuse a non-empty one unless ``overwrite``, which clears ``owned`` only.

    Args:
        out: The output directory.
        overwrite: Allow a non-empty directory.
        owned: Entries this job writes (removed before it starts again); anything else stays.

    Raises:
        RunDirError: ``out`` is a file, or a non-empty directory without ``overwrite``.
    """
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise RunDirError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise RunDirError(f"output directory {out} is not empty; pass --overwrite to replace "
                              f"its results or choose another output=DIR")
        for name in owned:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def pool_output_dir(run_dir: str | os.PathLike, output: str, *, overwrite: bool) -> Path:
    """A job's output pool path, checked before anything is written.

    Args:
        run_dir: ``run.dir``; the pool must lie under it.
        output: The pool directory relative to ``run_dir``.
        overwrite: Whether an existing pool there may be replaced.

    Returns:
        The absolute pool path.

    Raises:
        RunDirError: The path escapes ``run_dir`` (absolute, or ``..``) or is ``run_dir``
            itself.
        DataError: Something is already there and may not be replaced (a pool without
            ``overwrite``; anything that is not a pool or an empty directory, always).
    """
    from lire_ray.pool import check_pool_target

    return check_pool_target(confine_output(run_dir, output), overwrite)


def check_fresh_training(out: Path, storage: Path, run_name: str, *, resume: bool,
                         what: str = "a trained policy") -> None:
    """Refuse to start a single-stage training job over an earlier one unless resuming.

    Args:
        out: The job's output directory (complete when it holds :data:`COMPLETE_MARKER`).
        storage: The Ray Train storage directory (``run.dir/ray_train``).
        run_name: The Ray Train run name prefix (its first run is ``{run_name}-v1``).
        resume: ``run.resume``: continue an interrupted run instead.
        what: What a complete output holds, for the message.

    Raises:
        RunDirError: ``out`` is complete, or ``storage`` holds the run, and not ``resume``.
    """
    if resume:
        return
    if (out / COMPLETE_MARKER).is_file():
        raise RunDirError(f"{out} already holds {what}; choose another output=... or pass "
                          "run.resume=true")
    if (storage / f"{run_name}-v1").exists():
        raise RunDirError(f"{storage / (run_name + '-v1')} holds an earlier training run; "
                          "pass run.resume=true to continue it or choose another run.dir")
