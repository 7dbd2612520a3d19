"""Ray Data stages of the candidate stream: prompts -> sample -> score -> (reference) -> parts.

Every stage is a Ray Data class UDF (``map_batches(Stage, batch_format="pyarrow", ...)``) that
forwards its batch to one of the long-lived, named role actors (``sampler-0``, ``reward-0``,
...). Keeping the engines in long-lived actors, rather than in Ray Data's own actor pool, is
what lets the driver serve new weights to the samplers between Evolve steps and lets the
dashboard show each role by name. Batches cross actor boundaries as lists of frozen
:class:`~lire_ray.pool.PoolRow` messages.

With statistical rejection sampling (``sampler.rso``, paper sec. 4.7), :class:`SampleStage`
draws N candidates per prompt, scores them with the training reward model through the reward
actors and keeps K of them with :func:`~lire_ray.sampling.rso.select_candidates`, seeded per
prompt, so a retried batch keeps the same subset.

A role actor that dies is restarted by Ray (``max_restarts``) and the call is retried
(``max_task_retries``); if retries run out, the stage raises
:class:`~lire_ray.errors.ActorFailure` naming the role.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from lire_ray.faults import fault_env, fault_point
from lire_ray.pool import HUMAN, rows_to_table, table_to_rows
from lire_ray.pool.parts import part_name, write_part
from lire_ray.runtime.cluster import call_role
from lire_ray.sampling import merge_candidates
from lire_ray.sampling.rso import select_candidates
from lire_ray.timing import record_busy, record_start


def _actors(names: Sequence[str], namespace: str) -> list:
    import ray

    return [ray.get_actor(n, namespace=namespace) for n in names]


@dataclass(frozen=True)
class RSOSpec:
    """Statistical rejection sampling in the sample stage.

    Attributes:
        reward_names: Named reward actors that score the N samples.
        train_reward: The reward model whose scores drive the selection.
        num_samples: N, candidates drawn per prompt before selection.
        beta: RSO's beta.
        seed: ``sampler.seed``, from which each prompt's selection seed is derived.
    """

    reward_names: tuple[str, ...]
    train_reward: str
    num_samples: int
    beta: float
    seed: int


class SampleStage:
    """Ray Data UDF: draws policy candidates for a batch of prompt rows.

    Args:
        sampler_names: Named sampler actors.
        namespace: Their Ray namespace.
        num_candidates: K, the pool's candidates per prompt (human ones included).
        keep_human: Keep human-written candidates in the pool.
        evolve_step: Written to each row's ``evolve_step``.
        timing_dir: Where busy intervals are recorded, or None.
        rso: Select K of N samples by RSO; None keeps the K - h samples drawn.
    """

    def __init__(self, sampler_names: Sequence[str], namespace: str, *, num_candidates: int,
                 keep_human: bool, evolve_step: int, timing_dir: str | None = None,
                 rso: RSOSpec | None = None):
        self.samplers = _actors(sampler_names, namespace)
        self.rewards = _actors(rso.reward_names, namespace) if rso else []
        self.k, self.keep_human, self.evolve_step = num_candidates, keep_human, evolve_step
        self.timing_dir, self.rso = timing_dir, rso

    def __call__(self, batch: pa.Table) -> pa.Table:
        start = time.time()
        rows = table_to_rows(batch)
        if not rows:
            return batch
        key = part_name([r.prompt_id for r in rows])[len("part-"):-len(".parquet")]
        record_start(self.timing_dir, "sampler", key)
        # At least one policy candidate per prompt, whatever K and the human answers allow.
        new = [max(self.k - (sum(s == HUMAN for s in r.sources) if self.keep_human else 0), 1)
               for r in rows]
        n = self.rso.num_samples if self.rso else max(new)
        samples = call_role(self.samplers, "sampler", "sample_rows", rows, n=n)
        if self.rso:
            scores = call_role(self.rewards, "reward", "score_samples", rows,
                               [[c.text for c in s.candidates] for s in samples])
            out = [select_candidates(r, s, scores[self.rso.train_reward][i],
                                     num_candidates=self.k, keep_human=self.keep_human,
                                     evolve_step=self.evolve_step, beta=self.rso.beta,
                                     seed=self.rso.seed)
                   for i, (r, s) in enumerate(zip(rows, samples))]
        else:
            out = [merge_candidates(r, s, keep_human=self.keep_human,
                                    evolve_step=self.evolve_step, keep=range(m))
                   for r, s, m in zip(rows, samples, new)]
        record_busy(self.timing_dir, "sampler", start, key)
        return rows_to_table(out)


class RowStage:
    """Ray Data UDF: sends rows to a role's ``method`` that returns rows (score, reference)."""

    def __init__(self, actor_names: Sequence[str], namespace: str, *, role: str, method: str,
                 timing_dir: str | None = None):
        self.actors = _actors(actor_names, namespace)
        self.role, self.method, self.timing_dir = role, method, timing_dir

    def __call__(self, batch: pa.Table) -> pa.Table:
        start = time.time()
        rows = call_role(self.actors, self.role, self.method, table_to_rows(batch))
        record_busy(self.timing_dir, self.role, start)
        return rows_to_table(rows)


class PartStage:
    """Ray Data UDF: persists each batch as a pool part and passes it on unchanged."""

    def __init__(self, parts_dir: str):
        self.parts_dir = parts_dir

    def __call__(self, batch: pa.Table) -> pa.Table:
        write_part(self.parts_dir, batch)
        if fault_env():  # fault tests: stop once the n-th part is persisted
            fault_point("pool_part", str(len(list(Path(self.parts_dir).glob("*.sha256")))))
        return batch
