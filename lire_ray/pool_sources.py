"""Three ways of building the pool D_e of an Evolve step, behind one interface.

:func:`pool_source` picks one from the recipe; each returns, for step e, a :class:`PoolFeed`
whose ``dataset`` the trainer consumes and whose :meth:`PoolFeed.finish` finalizes the pool
``pools/e{k}`` (every prompt exactly once) once training has run.

- :class:`StreamedPools` (``placement: split``, ``max_staleness: 0``): the trainer consumes D_e
  from the Ray Data stream while later prompts are still being sampled and scored; every
  candidate still comes from policy e-1 (strict Algorithm 1).
- :class:`MaterialisedPools` (``placement: colocate``): D_e is sampled and scored completely,
  written, then trained on from disk (the phases alternate on shared devices).
- :class:`SampledAheadPools` (``split`` with ``max_staleness >= 1``): as streamed, and as soon
  as every prompt of D_e is persisted, D_{e+1} is sampled in a background thread while D_e
  trains, by the policy the samplers still serve (e-1 until policy e is served, so its
  candidates lag at most one version; each records its version, and :meth:`PoolFeed.finish`
  checks the bound).

Parts of a step being built live in ``pools/.e{k}.parts`` and survive a crash (a resumed run
reuses the trusted ones); parts sampled ahead live in ``pools/.e{k}.ahead`` and are never
trusted after a crash.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lire_ray.config import Recipe
from lire_ray.errors import DataError
from lire_ray.pool import HUMAN, PoolRow, read_pool, table_to_rows
from lire_ray.pool.parts import persisted_ids
from lire_ray.rewards import NORM_METADATA_KEY
from lire_ray.rundir import RunDir
from lire_ray.runtime import PoolBuilder
from lire_ray.runtime.pools import TIMING_DIR
from lire_ray.timing import busy_intervals

log = logging.getLogger(__name__)


@dataclass
class PoolFeed:
    """The pool D_e of one step as the trainer sees it.

    Attributes:
        step: e.
        dataset: What the trainer consumes (a stream, or the finished pool on disk).
        presampled: Whether D_e was sampled ahead, while the previous step trained.
    """

    step: int
    dataset: object
    presampled: bool
    _finish: Callable[[], dict]

    def finish(self) -> dict:
        """Finalize D_e (if the trainer's stream did not) and return its statistics:
        ``{"manifest", "rows", "busy"}`` (busy: the sampling/scoring intervals)."""
        return self._finish()


def _pool_dataset(pool_dir: Path):
    """A finished pool as a Ray dataset, read (and verified) here: one step's pool is small, and
    reading it in Ray Data tasks would mean starting worker processes on every step."""
    import ray.data

    return ray.data.from_arrow(read_pool(pool_dir))


def pool_stats(rows: Sequence[PoolRow], reward: str, step: int) -> dict:
    """Mean training reward of the policy and human candidates, pool size, candidate lag."""
    policy = [(r.rewards[reward][j], v) for r in rows for j, v in enumerate(r.policy_version)
              if v >= 0]
    human = [r.rewards[reward][j] for r in rows for j, s in enumerate(r.sources) if s == HUMAN]
    return {"prompts": len(rows), "candidates": sum(r.num_candidates for r in rows),
            "policy_reward_mean": sum(s for s, _ in policy) / max(1, len(policy)),
            "human_reward_mean": sum(human) / max(1, len(human)),
            "max_staleness_seen": max((step - 1 - v for _, v in policy), default=0)}


class StreamedPools:
    """D_e streamed into training (see the module docstring).

    Args:
        recipe: The run's recipe.
        rundir: The run directory (pools and parts live under ``pools/``).
        builder: The pool builder (sample, score, reference as the loss needs).
        rows: The prompt rows of every step.
        metadata: Stored in every pool's manifest (e.g. the frozen reward normalisation).
    """

    def __init__(self, recipe: Recipe, rundir: RunDir, builder: PoolBuilder,
                 rows: Sequence[PoolRow], metadata: dict):
        self.recipe, self.rundir, self.builder = recipe, rundir, builder
        self.rows, self.metadata = list(rows), metadata

    def parts_dir(self, step: int) -> Path:
        return self.rundir.root / "pools" / f".e{step}.parts"

    def _finish(self, step: int, parts: Path, extra_busy: Callable[[], list] = list) -> dict:
        meta = {"evolve_step": step, **self.metadata}
        if not (self.rundir.pool_dir(step) / "manifest.json").is_file():
            self.builder.finalize(self.rows, parts_dir=parts, out_dir=self.rundir.pool_dir(step),
                                  metadata=meta, overwrite=True)
        busy = busy_intervals(parts / TIMING_DIR) if (parts / TIMING_DIR).is_dir() else []
        shutil.rmtree(parts, ignore_errors=True)
        rows = table_to_rows(read_pool(self.rundir.pool_dir(step)))
        stats = pool_stats(rows, self.recipe.train_reward_name or "", step)
        if stats["max_staleness_seen"] > self.recipe.evolve.max_staleness:
            raise DataError(f"pool e{step} holds candidates {stats['max_staleness_seen']} policy "
                            f"versions old; evolve.max_staleness is "
                            f"{self.recipe.evolve.max_staleness}",
                            source=str(self.rundir.pool_dir(step)))
        return {"stats": stats, "busy": busy + extra_busy()}

    def _written(self, step: int) -> PoolFeed | None:
        """A feed from D_step on disk when an earlier attempt already finalized it."""
        if not (self.rundir.pool_dir(step) / "manifest.json").is_file():
            return None
        log.info("Evolve step %d: its pool was already complete; training on it", step)
        parts = self.parts_dir(step)
        return PoolFeed(step, _pool_dataset(self.rundir.pool_dir(step)), False,
                        lambda: self._finish(step, parts))

    def open(self, step: int) -> PoolFeed:
        """Start building D_step; the trainer's consumption drives the stream."""
        written = self._written(step)
        if written is not None:
            return written
        parts = self.parts_dir(step)
        ds = self.builder.stream(self.rows, parts_dir=parts, evolve_step=step)
        return PoolFeed(step, ds, False, lambda: self._finish(step, parts))

    def close(self) -> None:
        """Stop background work (none here)."""


class MaterialisedPools(StreamedPools):
    """D_e built completely and written before training reads it from disk."""

    def open(self, step: int) -> PoolFeed:
        written = self._written(step)
        if written is not None:
            return written
        parts = self.parts_dir(step)
        self.builder.run(self.rows, parts_dir=parts, evolve_step=step,
                         what=f"Evolve step {step}: sampled and scored")
        self.builder.finalize(self.rows, parts_dir=parts, out_dir=self.rundir.pool_dir(step),
                              metadata={"evolve_step": step, **self.metadata}, overwrite=True)
        return PoolFeed(step, _pool_dataset(self.rundir.pool_dir(step)), False,
                        lambda: self._finish(step, parts))


class SampledAheadPools(StreamedPools):
    """D_e streamed; D_{e+1} sampled in the background once D_e is fully persisted."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._ahead: _Ahead | None = None

    def ahead_dir(self, step: int) -> Path:
        return self.rundir.root / "pools" / f".e{step}.ahead"

    def open(self, step: int) -> PoolFeed:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.step == step:
            parts = ahead.result()
            feed = PoolFeed(step, None, True, lambda: self._finish(step, parts))
            self.rundir.discard_pool(step)
            self.builder.finalize(self.rows, parts_dir=parts,
                                  out_dir=self.rundir.pool_dir(step),
                                  metadata={"evolve_step": step, **self.metadata})
            feed.dataset = _pool_dataset(self.rundir.pool_dir(step))
        else:
            if ahead is not None:
                ahead.cancel()
            shutil.rmtree(self.ahead_dir(step), ignore_errors=True)  # left by a crash
            feed = super().open(step)
            parts = self.parts_dir(step)
        if step < self.recipe.evolve.steps:
            nxt = self.ahead_dir(step + 1)
            self._ahead = _Ahead(lambda stop: self.builder.run(
                self.rows, parts_dir=nxt, evolve_step=step + 1, stop=stop,
                what=f"sampled ahead (e{step + 1})"), nxt, step=step + 1, wait_for=parts,
                expected=[r.prompt_id for r in self.rows])
            feed._finish = self._with_ahead_busy(feed._finish, nxt / TIMING_DIR)
        return feed

    @staticmethod
    def _with_ahead_busy(finish: Callable[[], dict], timing: Path) -> Callable[[], dict]:
        """Count the next step's sampling, which ran while this step trained, as overlap."""
        def wrapped() -> dict:
            out = finish()
            return {**out, "busy": out["busy"] + (busy_intervals(timing) if timing.is_dir()
                                                  else [])}
        return wrapped

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.cancel()
            self._ahead = None


class _Ahead:
    """Runs one pool build in a background thread once ``wait_for`` covers every prompt."""

    def __init__(self, run: Callable[[Callable[[], bool]], None], parts_dir: Path, *, step: int,
                 wait_for: Path,
                 expected: Sequence[str], poll_s: float = 0.5):
        shutil.rmtree(parts_dir, ignore_errors=True)
        self.parts_dir, self.step = parts_dir, step
        self._run, self._wait_for, self._expected = run, wait_for, set(expected)
        self._poll_s, self._cancel = poll_s, threading.Event()
        self._error: BaseException | None = None
        self._done = False
        self._thread = threading.Thread(target=self._main, name=f"ahead-e{step}", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            cache: dict[str, list[str]] = {}
            while not self._expected <= persisted_ids(self._wait_for, cache):
                if self._cancel.wait(self._poll_s):
                    return
            log.info("sampling ahead: Evolve step %d's pool starts while training continues",
                     self.step)
            started = time.time()
            self._run(self._cancel.is_set)
            self._done = not self._cancel.is_set()
            log.info("sampled ahead Evolve step %d's pool in %.1f s", self.step,
                     time.time() - started)
        except BaseException as exc:  # re-raised in the driver's thread by result()
            self._error = exc

    def result(self) -> Path:
        """Wait for the build to finish and return its parts directory.

        Raises:
            Exception: Whatever the build raised (e.g. ``ActorFailure``).
            RuntimeError: It was cancelled.
        """
        self._thread.join()
        if self._error is not None:
            raise self._error
        if not self._done:
            raise RuntimeError(f"sampling ahead for Evolve step {self.step} was cancelled")
        return self.parts_dir

    def cancel(self, timeout: float = 5.0) -> None:
        """Stop waiting (a batch in flight still completes) and drop the parts."""
        self._cancel.set()
        self._thread.join(timeout)
        shutil.rmtree(self.parts_dir, ignore_errors=True)


def pool_source(recipe: Recipe, rundir: RunDir, builder: PoolBuilder, rows: Sequence[PoolRow],
                *, norm: dict | None = None) -> StreamedPools:
    """The way of building D_e that the recipe's placement and staleness bound ask for.

    Args:
        recipe: The run's recipe.
        rundir: The run directory.
        builder: The pool builder.
        rows: The prompt rows of every step.
        norm: Frozen reward normalisation, recorded in every pool's manifest.
    """
    metadata = {NORM_METADATA_KEY: norm} if norm else {}
    if recipe.resources.placement == "colocate":
        cls: type[StreamedPools] = MaterialisedPools
    elif recipe.evolve.max_staleness >= 1:
        cls = SampledAheadPools
    else:
        cls = StreamedPools
    return cls(recipe, rundir, builder, rows, metadata)
