"""Ray Data stages of the candidate stream: prompts -> sample -> score -> (reference) -> pool.

Every stage is a Ray Data class UDF (``map_batches(Stage, batch_format="pyarrow", ...)``) that
forwards its batch to one of the long-lived, named role actors (``sampler-0``,
``reward-0``, ...). Keeping the engines in long-lived actors, rather than in Ray Data's own
actor pool, is what lets the driver push new weights to the samplers between Evolve steps and
lets the dashboard show each role by name. Batches cross actor boundaries as lists of frozen
:class:`~lire_ray.pool.PoolRow` messages.

With statistical rejection sampling enabled (``sampler.rso``, paper sec. 4.7),
:class:`SampleStage` draws N candidates per prompt, scores them with the training reward model
through the reward actors and keeps K of them (human-written ones included) with
:func:`select_candidates`, whose random choices are seeded per prompt
(:func:`rso_seed`), so a retried batch keeps the same subset.

A role actor that dies is restarted by Ray (``max_restarts``) and the call is retried
(``max_task_retries``); if retries run out, the stage raises
:class:`~lire_ray.errors.ActorFailure` naming the role and carrying the cause.

:class:`PartWriter` persists every scored batch as one Parquet part named after the batch's
prompt ids, so a retried batch overwrites its own part instead of duplicating it; the driver
then turns the parts into a pool with :func:`finalize_parts`, which checks that every prompt is
present exactly once.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lire_ray.errors import ActorFailure, DataError
from lire_ray.pool import HUMAN, PoolRow, rows_to_table, table_to_rows, write_pool


def call_role(actors: Sequence, role: str, method: str, *args, **kwargs):
    """Call ``method`` on one actor of a role (round robin by caller) and wait for the result.

    Raises:
        ActorFailure: The actor died and could not be restarted, or the method raised.
    """
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    actor = actors[random.randrange(len(actors))]
    try:
        return ray.get(getattr(actor, method).remote(*args, **kwargs))
    except RayTaskError as exc:
        raise ActorFailure(role, f"{method} raised {exc.cause!r}") from exc
    except RayActorError as exc:
        raise ActorFailure(role, f"{method}: actor died and was not restarted: {exc}") from exc


def record_busy(timing_dir: str | None, role: str, start: float) -> None:
    """Append one busy interval (wall-clock seconds) of a stage to ``timing_dir``.

    The file appears under its final name only once complete (written, then renamed), because
    the driver reads a stream's intervals while a stream sampling ahead still writes them.
    """
    if timing_dir:
        Path(timing_dir).mkdir(parents=True, exist_ok=True)
        name = f"{role}-{uuid.uuid4().hex}"
        tmp = Path(timing_dir) / f".{name}.tmp"
        tmp.write_text(json.dumps({"role": role, "start": start, "end": time.time()}))
        os.replace(tmp, Path(timing_dir) / f"{name}.json")


def busy_intervals(timing_dir: str | Path) -> list[tuple[float, float]]:
    """The recorded busy intervals of the stages, merged where they overlap."""
    spans = sorted((d["start"], d["end"]) for d in (
        json.loads(p.read_text()) for p in Path(timing_dir).glob("*.json")))
    merged: list[tuple[float, float]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _actors(names: Sequence[str], namespace: str | None):
    import ray

    return [ray.get_actor(n, namespace=namespace) for n in names]


def merge_candidates(row: PoolRow, texts: Sequence[str], versions: Sequence[int], *,
                     keep_human: bool, evolve_step: int) -> PoolRow:
    """Row with its policy candidates replaced by new samples (paper sec. 4.7).

    Human-written candidates stay when ``keep_human``; earlier policy samples are dropped.
    Rewards and reference log-probs are cleared: they belong to the old candidate list.
    """
    keep = [i for i, s in enumerate(row.sources) if keep_human and s == HUMAN]
    preferred = keep.index(row.preferred) if row.preferred in keep else -1
    return replace(
        row,
        responses=tuple(row.responses[i] for i in keep) + tuple(texts),
        sources=tuple(row.sources[i] for i in keep) + tuple(f"policy@e{v}" for v in versions),
        policy_version=tuple(row.policy_version[i] for i in keep) + tuple(versions),
        rewards={}, ref_logps=None, preferred=preferred, evolve_step=evolve_step)


def rso_seed(seed: int, policy_version: int, prompt_id: str) -> int:
    """The RSO selection seed of one prompt: a function of what identifies its candidates.

    The sampler seeds a batch from ``sampler.seed``, the policy version and the prompt ids, so
    a retried batch gets the same candidates; seeding the selection from the same three keeps
    the same subset of them, whichever replica or retry runs it.

    Args:
        seed: ``sampler.seed``.
        policy_version: The version of the policy that sampled the candidates.
        prompt_id: The prompt's id.

    Returns:
        A 64-bit seed for :func:`~lire_ray.sampling.rso.rso_select`.
    """
    digest = hashlib.sha256(f"rso\0{seed}\0{policy_version}\0{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def select_candidates(row: PoolRow, texts: Sequence[str], versions: Sequence[int],
                      rewards: Sequence[float], *, num_candidates: int, keep_human: bool,
                      evolve_step: int, beta: float, seed: int) -> PoolRow:
    """Keep K - h of N sampled candidates by RSO and merge them into the row (paper sec. 4.7).

    h is the number of human-written candidates the row keeps (0 unless ``keep_human``); at
    least one policy candidate is kept, as without RSO. The kept candidates stay in their
    sampling order.

    Args:
        row: The prompt row (its human-written candidates are kept when ``keep_human``).
        texts: The N sampled responses.
        versions: The policy version of each sampled response.
        rewards: The training reward of each sampled response.
        num_candidates: K, candidates per prompt in the pool (human ones included).
        keep_human: Keep human-written candidates.
        evolve_step: Written to the row's ``evolve_step``.
        beta: RSO's beta (> 0).
        seed: ``sampler.seed``; the selection seed is :func:`rso_seed` of it, the candidates'
            policy version and the prompt id.

    Returns:
        The row with the kept candidates (rewards and reference log-probs cleared, as
        :func:`merge_candidates` does).

    Raises:
        DataError: ``texts``, ``versions`` and ``rewards`` differ in length, or a reward is not
            finite.
        ConfigError: ``beta`` is not a positive finite number.
    """
    from lire_ray.sampling.rso import rso_select

    if not len(texts) == len(versions) == len(rewards):
        raise DataError(f"{len(texts)} candidates, {len(versions)} versions and "
                        f"{len(rewards)} rewards", source=f"prompt {row.prompt_id!r}")
    humans = sum(s == HUMAN for s in row.sources) if keep_human else 0
    keep = min(max(num_candidates - humans, 1), len(texts))
    version = max(versions, default=-1)
    kept = sorted(rso_select(rewards, keep, beta, rng=rso_seed(seed, version, row.prompt_id)))
    return merge_candidates(row, [texts[i] for i in kept], [versions[i] for i in kept],
                            keep_human=keep_human, evolve_step=evolve_step)


class SampleStage:
    """Ray Data UDF: draws policy candidates for a batch of prompt rows.

    Args:
        actor_names: Named sampler actors.
        namespace: Their Ray namespace.
        num_candidates: K, the pool's candidates per prompt (human ones included).
        keep_human: Keep human-written candidates in the pool.
        evolve_step: Written to each row's ``evolve_step``.
        timing_dir: Where busy intervals are recorded (see :func:`record_busy`), or None.
        reward_actor_names: Named reward actors that score candidates for RSO; None (the
            default) turns RSO off: the stage draws K - h candidates per prompt and keeps them.
        train_reward: With RSO, the reward model whose scores drive the selection.
        rso_num_samples: With RSO, N: candidates drawn per prompt before selection.
        rso_beta: With RSO, its beta.
        seed: ``sampler.seed``, from which each prompt's selection seed is derived.
    """

    def __init__(self, actor_names: Sequence[str], namespace: str | None, *, num_candidates: int,
                 keep_human: bool, evolve_step: int, timing_dir: str | None = None,
                 reward_actor_names: Sequence[str] | None = None, train_reward: str | None = None,
                 rso_num_samples: int | None = None, rso_beta: float = 0.5, seed: int = 0):
        self.actors = _actors(actor_names, namespace)
        self.timing_dir = timing_dir
        self.k = num_candidates
        self.keep_human = keep_human
        self.evolve_step = evolve_step
        self.rso = reward_actor_names is not None
        if self.rso and (not reward_actor_names or not train_reward or not rso_num_samples):
            raise ValueError("RSO needs reward actors, a training reward and num_samples")
        self.reward_actors = _actors(reward_actor_names, namespace) if self.rso else []
        self.train_reward = train_reward
        self.rso_num_samples = rso_num_samples
        self.rso_beta = rso_beta
        self.seed = seed

    def __call__(self, batch: pa.Table) -> pa.Table:
        start = time.time()
        rows = table_to_rows(batch)
        humans = [sum(s == HUMAN for s in r.sources) if self.keep_human else 0 for r in rows]
        if self.rso:
            need = self.rso_num_samples if rows else 0
        else:
            need = max(max(self.k - h, 1) for h in humans) if rows else 0
        cands = call_role(self.actors, "sampler", "sample", [r.prompt for r in rows], n=need,
                          keys=[r.prompt_id for r in rows])
        out = []
        if self.rso:
            flat = call_role(self.reward_actors, "reward", "score",
                             [r.prompt for r, cs in zip(rows, cands) for _ in cs],
                             [c.text for cs in cands for c in cs])
            scores, at = flat[self.train_reward], 0
            for row, cs in zip(rows, cands):
                out.append(select_candidates(
                    row, [c.text for c in cs], [c.policy_version for c in cs],
                    scores[at:at + len(cs)], num_candidates=self.k, keep_human=self.keep_human,
                    evolve_step=self.evolve_step, beta=self.rso_beta, seed=self.seed))
                at += len(cs)
        else:
            for row, h, cs in zip(rows, humans, cands):
                cs = list(cs)[:max(self.k - h, 1)]
                out.append(merge_candidates(row, [c.text for c in cs],
                                            [c.policy_version for c in cs],
                                            keep_human=self.keep_human,
                                            evolve_step=self.evolve_step))
        record_busy(self.timing_dir, "sampler", start)
        return rows_to_table(out)


class RowStage:
    """Ray Data UDF: sends rows to a role's ``method`` that returns rows (score, reference)."""

    def __init__(self, actor_names: Sequence[str], namespace: str | None, *, role: str,
                 method: str, timing_dir: str | None = None):
        self.actors = _actors(actor_names, namespace)
        self.role = role
        self.method = method
        self.timing_dir = timing_dir

    def __call__(self, batch: pa.Table) -> pa.Table:
        start = time.time()
        rows = call_role(self.actors, self.role, self.method, table_to_rows(batch))
        record_busy(self.timing_dir, self.role, start)
        return rows_to_table(rows)


def part_name(prompt_ids: Sequence[str]) -> str:
    """A deterministic part file name for a batch: retries overwrite, never duplicate."""
    digest = hashlib.sha1("\n".join(sorted(prompt_ids)).encode()).hexdigest()[:20]
    return f"part-{digest}.parquet"


class PartWriter:
    """Ray Data UDF: persists each batch to ``parts_dir`` and passes it on unchanged."""

    def __init__(self, parts_dir: str):
        self.parts_dir = Path(parts_dir)
        self.parts_dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if batch.num_rows:
            name = part_name(batch.column("prompt_id").to_pylist())
            tmp = self.parts_dir / f".{name}.{os.getpid()}.tmp"
            pq.write_table(batch, tmp)
            os.replace(tmp, self.parts_dir / name)
        return batch


def finalize_parts(parts_dir: str | Path, out_dir: str | Path, *, expected_ids: Sequence[str],
                   metadata: dict | None = None, overwrite: bool = False) -> dict:
    """Turn persisted parts into a verified pool; return its manifest.

    Args:
        parts_dir: The directory :class:`PartWriter` wrote to.
        out_dir: The pool directory to create.
        expected_ids: Every prompt id the pool must hold, once each.
        metadata: JSON metadata stored in the pool's manifest.
        overwrite: Replace an existing pool at ``out_dir``.

    Returns:
        The new pool's manifest.

    Raises:
        DataError: A prompt is missing or present twice (names the first few ids), or
            ``out_dir`` exists and ``overwrite`` is false.
    """
    parts_dir = Path(parts_dir)
    tables = [pq.read_table(p) for p in sorted(parts_dir.glob("part-*.parquet"))]
    table = pa.concat_tables(tables) if tables else None
    ids = table.column("prompt_id").to_pylist() if table is not None else []
    seen, dupes = set(), []
    for pid in ids:
        (dupes.append(pid) if pid in seen else seen.add(pid))
    missing = sorted(set(expected_ids) - seen)
    if dupes or missing:
        raise DataError(f"pool parts are inconsistent: {len(dupes)} duplicated prompt(s) "
                        f"{dupes[:3]}, {len(missing)} missing {missing[:3]}", source=str(parts_dir))
    manifest = write_pool(table, out_dir, metadata=metadata, overwrite=overwrite)
    return manifest
