"""The runtime layer: the only library code that starts actors, imports ``actors/`` or drives Ray.

- :mod:`~lire_ray.runtime.cluster`: connecting to (or starting) a Ray cluster, starting named
  actors with resources from the recipe, and :func:`~lire_ray.runtime.cluster.call_role`, where
  Ray's actor errors become :class:`~lire_ray.errors.ActorFailure`.
- :mod:`~lire_ray.runtime.roles`: :class:`RoleGroup`, the sampler / reward / reference actors of
  one run or job (start, call, serve a policy, phases, reward normalisation, stop).
- :mod:`~lire_ray.runtime.pools`: :class:`PoolBuilder`, prompt rows to a verified pool through
  the Ray Data stages of :mod:`~lire_ray.runtime.stages`.
- :mod:`~lire_ray.runtime.trainer`: :class:`TrainerGroup`, Ray Train + DeepSpeed workers, one
  run per Evolve step; :mod:`~lire_ray.runtime.resident`: the resident group, one run for every
  step, new policies sent to the samplers from memory; :func:`make_trainer` picks one.
- :mod:`~lire_ray.runtime.telemetry`: per-step metrics for the Ray dashboard.

Layers, each importing only those below it: the core (everything else in ``lire_ray/`` below
the orchestration: config, losses, log-probs, pools, adapters, collate, sampling, rewards,
training, metrics) -> ``actors/`` -> this runtime layer -> Algorithm 1
(:mod:`lire_ray.algorithm`), the evaluator and the studies -> ``jobs/``.
"""

from lire_ray.runtime.cluster import (
    RayHandle,
    check_feasible,
    connect,
    disconnect,
    namespace_for,
)
from lire_ray.runtime.pools import PoolBuilder
from lire_ray.runtime.resident import ResidentTrainerGroup, make_trainer
from lire_ray.runtime.roles import RoleGroup
from lire_ray.runtime.trainer import TrainerGroup

__all__ = ["PoolBuilder", "RayHandle", "ResidentTrainerGroup", "RoleGroup", "TrainerGroup", "check_feasible", "connect",
           "disconnect", "make_trainer", "namespace_for"]
