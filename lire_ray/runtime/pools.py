"""The pool builder: prompt rows -> sample -> (RSO) -> score -> (reference) -> parts -> pool.

One :class:`PoolBuilder` serves every job that makes a pool: the main job (each Evolve step's
D_e), ``jobs/sample.py`` (sampling only), ``jobs/score.py`` (scoring only) and the comparison
(one pool for every loss). It builds the lazy Ray Data stream of the stages a job chose
(:mod:`lire_ray.runtime.stages`), persists every finished batch as a part
(:mod:`lire_ray.pool.parts`) and finalizes the parts into a verified pool.

Parts already in the parts directory whose checksums verify are trusted: their prompts are not
sampled again, so a build interrupted by a crash continues where it stopped. A stream fed to a
trainer delivers those rows first, then the new ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lire_ray.config import Recipe
from lire_ray.pool import PoolRow, rows_to_table
from lire_ray.pool.parts import finalize_parts, persisted_ids, trusted_parts
from lire_ray.progress import Progress
from lire_ray.runtime.roles import RoleGroup
from lire_ray.runtime.stages import PartStage, RowStage, RSOSpec, SampleStage

log = logging.getLogger(__name__)

TIMING_DIR = ".timing"
#: Resources of the stream's own tasks: they only move rows between the role actors, which do
#: the work, so they must not wait for a CPU that a resident trainer worker holds.
LIGHT_CPUS = 0.01


class PoolBuilder:
    """Builds pools with a role group's actors.

    Args:
        recipe: Sampler settings (K, batch size, RSO), ``evolve.keep_human``, the training
            reward.
        roles: The role group; each chosen stage needs its role started.
        sample: Replace the rows' policy candidates with new samples.
        score: Score every candidate with every reward model.
        reference: Add reference log-probs.
    """

    def __init__(self, recipe: Recipe, roles: RoleGroup, *, sample: bool = True,
                 score: bool = True, reference: bool = False):
        self.recipe, self.roles = recipe, roles
        self.sample, self.score, self.reference = sample, score, reference

    def stream(self, rows: Sequence[PoolRow], *, parts_dir: str | Path,
               evolve_step: int = 1):
        """The lazy dataset of the finished rows; iterating it persists the missing parts.

        Args:
            rows: The prompt rows, one per prompt.
            parts_dir: Where parts are persisted (and trusted ones reused).
            evolve_step: Written to each sampled row's ``evolve_step``.

        Returns:
            A ``ray.data.Dataset`` of pool rows: the rows of trusted parts, then the rest.
        """
        import ray.data

        parts_dir = Path(parts_dir)
        done = persisted_ids(parts_dir)
        todo = [r for r in rows if r.prompt_id not in done]
        if done:
            log.info("%d of %d prompts already built in %s; building the other %d",
                     len(rows) - len(todo), len(rows), parts_dir, len(todo))
        built = [ray.data.read_parquet([str(p) for p in trusted_parts(parts_dir)],
                                       partitioning=None, num_cpus=LIGHT_CPUS)] if done else []
        if not todo:
            return built[0]
        bs = self.recipe.sampler.batch_size
        table = rows_to_table(todo)
        # One block per sampler batch, so the stages run batches in parallel (no repartition
        # task, which would wait for a whole CPU while the trainer holds its own).
        ds: Any = ray.data.from_arrow([table.slice(i, bs) for i in range(0, table.num_rows, bs)])
        common: dict[str, Any] = {"batch_format": "pyarrow", "batch_size": bs,
                                  "num_cpus": LIGHT_CPUS}
        ns, timing = self.roles.namespace, str(parts_dir / TIMING_DIR)
        if self.sample:
            s = self.recipe.sampler
            rso = (RSOSpec(tuple(self.roles.names("reward")), self.recipe.train_reward_name or "",
                           s.rso.num_samples, s.rso.beta, s.seed)
                   if s.rso.enabled else None)
            ds = ds.map_batches(SampleStage, fn_constructor_args=(self.roles.names("sampler"), ns),
                                fn_constructor_kwargs={
                                    "num_candidates": s.num_candidates,
                                    "keep_human": self.recipe.evolve.keep_human,
                                    "evolve_step": evolve_step, "timing_dir": timing,
                                    "rso": rso},
                                compute=ray.data.ActorPoolStrategy(size=len(self.roles.samplers)),
                                **common)
        for on, role, method in ((self.score, "reward", "score_rows"),
                                 (self.reference, "reference", "annotate_rows")):
            if on:
                ds = ds.map_batches(RowStage, fn_constructor_args=(self.roles.names(role), ns),
                                    fn_constructor_kwargs={"role": role, "method": method,
                                                           "timing_dir": timing},
                                    compute=ray.data.ActorPoolStrategy(
                                        size=len(self.roles.handles[role])), **common)
        ds = ds.map_batches(PartStage, fn_constructor_args=(str(parts_dir),),
                            compute=ray.data.ActorPoolStrategy(size=1), **common)
        return built[0].union(ds) if built else ds

    def run(self, rows: Sequence[PoolRow], *, parts_dir: str | Path, evolve_step: int = 1,
            what: str = "built", stop: Callable[[], bool] | None = None) -> None:
        """Drive the stream to its end (every prompt persisted), logging progress.

        Args:
            rows: The prompt rows.
            parts_dir: Where parts are persisted.
            evolve_step: Written to each sampled row's ``evolve_step``.
            what: The progress lines' verb.
            stop: Polled between batches; True stops early (a batch in flight completes).
        """
        progress = Progress(what, len(rows), "prompts")
        for batch in self.stream(rows, parts_dir=parts_dir, evolve_step=evolve_step) \
                .iter_batches(batch_size=None, batch_format="pyarrow"):
            if stop is not None and stop():
                return
            progress.update(batch.num_rows)

    @staticmethod
    def finalize(rows: Sequence[PoolRow], *, parts_dir: str | Path, out_dir: str | Path,
                 metadata: dict | None = None, overwrite: bool = False) -> dict:
        """Turn the parts into the pool ``out_dir`` (every prompt exactly once); its manifest.

        Raises:
            DataError: A prompt is missing, duplicated or unexpected.
        """
        return finalize_parts(parts_dir, out_dir, expected_ids=[r.prompt_id for r in rows],
                              metadata=metadata, overwrite=overwrite)

    def build(self, rows: Sequence[PoolRow], *, out_dir: str | Path, parts_dir: str | Path,
              evolve_step: int = 1, metadata: dict | None = None, overwrite: bool = False,
              what: str = "built") -> dict:
        """Build the whole pool, then write it to ``out_dir``; return its manifest."""
        self.run(rows, parts_dir=parts_dir, evolve_step=evolve_step, what=what)
        return self.finalize(rows, parts_dir=parts_dir, out_dir=out_dir, metadata=metadata,
                             overwrite=overwrite)
