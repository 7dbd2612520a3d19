"""Plumbing shared by the pool jobs (``jobs/sample.py``, ``jobs/score.py``) and the main job.

:class:`StageActors` holds the role actors a job's stream calls (the jobs start only the roles
they need, where :class:`lire_ray.pipeline.Roles` starts a whole self-enhancement run's);
:func:`pool_output_dir`, :func:`source_metadata` and :func:`job_namespace` check a job's output
before anything is written, carry an input pool's metadata along and keep two jobs on one
cluster apart.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lire_ray.config import Recipe


@dataclass
class StageActors:
    """The named role actors a candidate stream calls, by role.

    It has what :func:`lire_ray.pipeline.build_stream` reads of a
    :class:`lire_ray.pipeline.Roles` (``namespace``, the handle lists and :meth:`names`), for
    jobs that start only some roles (sampling without scoring, scoring without sampling).

    Attributes:
        namespace: The actors' Ray namespace.
        samplers: Sampler actor handles (named ``sampler-0``, ...).
        rewards: Reward actor handles (``reward-0``, ...).
        references: Reference actor handles (``reference-0``, ...).
    """

    namespace: str
    samplers: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    references: list = field(default_factory=list)

    def names(self, role: str) -> list[str]:
        """The actor names of ``role`` ("sampler", "reward" or "reference")."""
        handles = {"sampler": self.samplers, "reward": self.rewards,
                   "reference": self.references}[role]
        return [f"{role}-{i}" for i in range(len(handles))]

    def stop(self) -> None:
        """Kill every actor (no restart)."""
        from lire_ray import cluster

        for handles in (self.samplers, self.rewards, self.references):
            cluster.stop_role(handles)


def start_stage_actors(recipe: Recipe, *, policy_path: str | None = None, rewards: bool = False,
                       reference_path: str | None = None,
                       norm_file: str | Path | None = None) -> StageActors:
    """Start the named role actors a job's stream needs, with resources from the recipe.

    The arguments each role gets are those :class:`lire_ray.pipeline.Roles` gives it. If a
    role fails to start, the roles already started are stopped before the error propagates.

    Args:
        recipe: The recipe (``resources``, ``ray.namespace``, ``sampler``, ``model``,
            ``rewards``).
        policy_path: Start the samplers serving this policy (as version 0); None: no samplers.
        rewards: Start the reward actors.
        reference_path: Start the reference actors on this model; None: no reference.
        norm_file: Frozen z-score statistics file for the reward actors
            (see :class:`actors.reward.RewardActor`).

    Returns:
        The started actors.

    Raises:
        ActorFailure: An actor failed in its constructor.
        ConfigError: The cluster can never provide a role's resources.
    """
    from actors.reference import ReferenceActor
    from actors.reward import RewardActor
    from actors.sampler import SamplerActor
    from lire_ray import cluster

    res, ns = recipe.resources, recipe.ray.namespace
    actors = StageActors(namespace=ns)
    try:
        if policy_path is not None:
            actors.samplers = cluster.start_role(SamplerActor, "sampler", res.sampler, ns,
                                                 policy_path, recipe.sampler, recipe.model)
        if rewards:
            actors.rewards = cluster.start_role(
                RewardActor, "reward", res.reward, ns, recipe.rewards,
                norm_file=str(norm_file) if norm_file else None)
        if reference_path is not None:
            actors.references = cluster.start_role(
                ReferenceActor, "reference", res.reference, ns, reference_path,
                max_prompt_tokens=recipe.model.max_prompt_tokens,
                max_response_tokens=recipe.model.max_response_tokens,
                dtype=recipe.model.dtype, trust_remote_code=recipe.model.trust_remote_code)
    except BaseException:
        actors.stop()
        raise
    return actors


def pool_output_dir(run_dir: str | Path, output: str, *, overwrite: bool) -> Path:
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
    from lire_ray.rundir import confine_output

    return check_pool_target(confine_output(run_dir, output), overwrite)


def source_metadata(source: str) -> dict:
    """The manifest metadata of an input pool directory; empty for a ``builtin:`` prompt set.

    Raises:
        PoolIntegrityError: The directory holds no readable manifest.
    """
    from lire_ray.pool import read_manifest

    if source.startswith("builtin:"):
        return {}
    return dict(read_manifest(source).get("metadata") or {})


def job_namespace(recipe: Recipe, job: str, out: Path) -> Recipe:
    """The recipe with a Ray namespace of the job's own output.

    The role actors are named ``sampler-0``, ``reward-0``, ...; two jobs sharing a cluster
    must not find each other's actors under those names.
    """
    digest = hashlib.sha1(f"{job}:{Path(out).resolve()}".encode()).hexdigest()[:8]
    ns = f"{recipe.ray.namespace}-{job}-{digest}"
    return recipe.model_copy(update={"ray": recipe.ray.model_copy(update={"namespace": ns})})


def fit_reward_normalisation(reward_actors: list, prompts: list[str], responses: list[str], *,
                             names: list[str], norm_file: str | Path, frozen: dict | None = None,
                             batch_size: int = 256) -> dict:
    """Fit z-score statistics on raw scores, freeze them and load them into every reward actor.

    The statistics are written to ``norm_file`` before any actor loads them, so a reward
    actor that Ray restarts later (it reads the file in its constructor) keeps them.

    Args:
        reward_actors: The reward actor handles.
        prompts: The prompt of each response (flat).
        responses: The responses whose raw scores define the statistics (flat).
        names: The reward models to fit (those with ``normalize: zscore``).
        norm_file: The statistics file the actors were started with.
        frozen: Statistics fixed earlier (by name), kept as they are.
        batch_size: Pairs per scoring call.

    Returns:
        Every frozen statistic by reward-model name (:class:`~lire_ray.rewards.NormStats`).

    Raises:
        ActorFailure: A reward actor failed.
    """
    from lire_ray.rewards import NormStats, save_norm_stats
    from lire_ray.stream import call_role

    raw: dict[str, list[float]] = {n: [] for n in names}
    for start in range(0, len(responses), batch_size):
        got = call_role(reward_actors, "reward", "score_raw", prompts[start:start + batch_size],
                        responses[start:start + batch_size], names=names)
        for n in names:
            raw[n].extend(got[n])
    stats = {**(frozen or {}), **{n: NormStats.fit(raw[n]) for n in names}}
    save_norm_stats(norm_file, stats)
    for actor in reward_actors:
        call_role([actor], "reward", "reload_normalisation")
    return stats
