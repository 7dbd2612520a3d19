"""The role group: the sampler, reward and reference actors of one run or job.

A :class:`RoleGroup` starts the roles a job needs, each with ``resources.<role>`` from the recipe
and named ``<role>-<i>`` in the job's namespace; if one fails to start, the ones already started
are stopped before the error propagates. It is the only place that

- calls the roles (:meth:`RoleGroup.call`, errors translated by
  :func:`~lire_ray.runtime.cluster.call_role`);
- serves a policy on the samplers (:meth:`RoleGroup.serve`: full weights or a LoRA adapter, as
  :func:`lire_ray.training.result.policy_in` decided), recording it first in
  ``served_policy.json`` so that a sampler Ray restarts later serves the same weights;
- switches phases in colocated placement (:meth:`RoleGroup.set_phase`: vLLM sleeps while the
  trainer runs);
- fixes the reward normalisation of ``normalize: zscore`` reward models
  (:meth:`RoleGroup.normalisation`: fitted once, frozen in ``reward_norm.json``, which restarted
  reward actors reload).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lire_ray.atomic import atomic_write_text
from lire_ray.config import Recipe
from lire_ray.errors import ConfigError
from lire_ray.inputs import absolute_reward_paths
from lire_ray.pool import PoolRow
from lire_ray.rewards import NormStats, save_norm_stats, stats_to_dict
from lire_ray.runtime import cluster
from lire_ray.training.result import PolicyInit

log = logging.getLogger(__name__)

ROLES = ("sampler", "reward", "reference")
SERVED_FILE = "served_policy.json"
NORM_FILE = "reward_norm.json"


#: Seconds a sampler may take to shut its engine down before it is killed anyway.
CLOSE_TIMEOUT_S = 30.0


class RoleGroup:
    """The role actors of one run or job.

    Args:
        recipe: The recipe (``resources``, ``sampler``, ``model``, ``rewards``, ``data``).
        namespace: The Ray namespace of this run or job (see
            :func:`~lire_ray.runtime.cluster.namespace_for`).
        policy: Start samplers serving this policy as version 0; None starts none.
        rewards: Start the reward actors.
        reference: Start reference actors on this model; None starts none.
        state_dir: Where ``served_policy.json`` and ``reward_norm.json`` live (the run
            directory, or a job's work directory); needed for ``normalize: zscore`` reward
            models and for samplers that must survive a restart.

    Raises:
        ConfigError: Resources the cluster can never provide, or ``zscore`` reward models
            without a ``state_dir``.
        ActorFailure: A role failed to start (those already started are stopped).
    """

    def __init__(self, recipe: Recipe, *, namespace: str, policy: str | None = None,
                 rewards: bool = False, reference: str | None = None,
                 state_dir: str | Path | None = None):
        from actors.reference import ReferenceActor
        from actors.reward import RewardActor
        from actors.sampler import SamplerActor

        self.recipe = recipe
        self.namespace = namespace
        self.state_dir = Path(state_dir).resolve() if state_dir is not None else None
        zscore = [rm.name for rm in recipe.rewards if rm.normalize == "zscore"]
        if rewards and zscore and self.state_dir is None:
            raise ConfigError(f"reward models {zscore} use normalize: zscore, whose frozen "
                              "statistics need a state directory")
        self.handles: dict[str, list] = {role: [] for role in ROLES}
        res, m = recipe.resources, recipe.model
        starts: list[tuple[str, Any, tuple, dict[str, Any]]] = []
        if policy is not None:
            starts.append(("sampler", SamplerActor, (str(policy), recipe.sampler, recipe.model),
                           {"chat_template": recipe.data.chat_template,
                            "served_file": self._state_file(SERVED_FILE)}))
        if rewards:
            starts.append(("reward", RewardActor, (absolute_reward_paths(recipe.rewards),),
                           {"norm_file": self._state_file(NORM_FILE)}))
        if reference is not None:
            starts.append(("reference", ReferenceActor, (str(reference),), {
                "max_prompt_tokens": m.max_prompt_tokens,
                "max_response_tokens": m.max_response_tokens, "dtype": m.dtype,
                "trust_remote_code": m.trust_remote_code, "packing": recipe.train.packing,
                "chunk_size": recipe.train.logprob_chunk_size,
                "chat_template": recipe.data.chat_template}))
        try:
            for role, cls, args, kwargs in starts:
                self.handles[role] = cluster.start_role(cls, role, getattr(res, role),
                                                        namespace, *args, **kwargs)
        except BaseException:
            self.stop()
            raise

    def _state_file(self, name: str) -> str | None:
        return str(self.state_dir / name) if self.state_dir is not None else None

    def __enter__(self) -> RoleGroup:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def samplers(self) -> list:
        return self.handles["sampler"]

    @property
    def rewards(self) -> list:
        return self.handles["reward"]

    @property
    def references(self) -> list:
        return self.handles["reference"]

    def names(self, role: str) -> list[str]:
        """The actor names of ``role`` (``sampler-0``, ...)."""
        return [f"{role}-{i}" for i in range(len(self.handles[role]))]

    def call(self, role: str, method: str, *args, **kwargs):
        """Call ``method`` on one actor of ``role`` and wait (see
        :func:`~lire_ray.runtime.cluster.call_role`)."""
        return cluster.call_role(self.handles[role], role, method, *args, **kwargs)

    def map(self, role: str, method: str, rows: Sequence, *, chunk: int | None = None,
            **kwargs) -> list:
        """Run ``method`` over ``rows`` in chunks spread over the role's actors (see
        :func:`~lire_ray.runtime.cluster.map_role`); chunks of ``sampler.batch_size`` rows by
        default."""
        return cluster.map_role(self.handles[role], role, method, rows,
                                chunk=chunk or self.recipe.sampler.batch_size, **kwargs)

    def call_all(self, role: str, method: str, *args, **kwargs) -> list:
        """Call ``method`` on every actor of ``role`` and wait for all."""
        return [cluster.call_role([h], role, method, *args, **kwargs)
                for h in self.handles[role]]

    def serve(self, policy: PolicyInit, version: int) -> None:
        """Serve ``policy`` (from disk) on every sampler as policy ``version``.

        The choice is recorded first in ``served_policy.json`` so that a sampler restarted
        later (``max_restarts``) loads the same weights.
        """
        self.record_served(policy, version, pending=False)
        path, adapter = (policy.adapter, True) if policy.adapter else (policy.model, False)
        self.call_all("sampler", "load_adapter" if adapter else "load_weights", str(path),
                      version)

    def record_served(self, policy: PolicyInit, version: int, *, pending: bool = True) -> None:
        """Record that the samplers serve ``policy`` as ``version``.

        Args:
            policy: The policy served.
            version: Its version.
            pending: Its checkpoint may still be being written (a resident trainer sent the
                weights from memory): a restarted sampler then waits for the checkpoint's
                ``COMPLETE`` marker before loading it.
        """
        served = self._state_file(SERVED_FILE)
        if served is None:
            return
        path, adapter = (policy.adapter, True) if policy.adapter else (policy.model, False)
        root = Path(path).parent if adapter else Path(path)
        atomic_write_text(Path(served), json.dumps(
            {"path": str(path), "version": version, "adapter": adapter,
             "checkpoint": str(root) if pending else None}))

    def set_phase(self, phase: str) -> None:
        """Tell the samplers which phase begins: ``"train"`` puts them to sleep and ``"sample"``
        wakes them, in colocated placement with ``sampler.sleep_level`` set (vLLM on a GPU frees
        its memory for the trainer); otherwise nothing happens."""
        if self.recipe.sampler.sleep_level == 0 or self.recipe.resources.placement != "colocate":
            return
        self.call_all("sampler", "sleep" if phase == "train" else "wake_up")

    def normalisation(self, rows: Sequence[PoolRow], *, frozen: dict | None = None,
                      max_prompts: int | None = 256) -> dict[str, dict[str, float]]:
        """Fix the z-score statistics of ``normalize: zscore`` reward models, once.

        The one rule: statistics recorded earlier are reused (``reward_norm.json`` of a resumed
        run, or ``frozen``, e.g. from an input pool's manifest); the others are fitted on the
        raw scores of the rows' own candidates plus, when samplers run, one sample of the
        served policy per prompt, over the first ``max_prompts`` rows. They are written to
        ``reward_norm.json`` before every reward actor loads them.

        Args:
            rows: The prompt rows (their candidates, e.g. human answers, enter the fit).
            frozen: Statistics fixed elsewhere, ``{name: {"mean", "std"}}``.
            max_prompts: Rows used for fitting; None uses all.

        Returns:
            ``{name: {"mean", "std"}}`` of every normalised reward model; empty when none is.

        Raises:
            DataError: Nothing to fit on (no candidates and no samplers).
        """
        from lire_ray.errors import DataError
        from lire_ray.rewards import load_norm_stats, stats_from_dict

        names = [rm.name for rm in self.recipe.rewards if rm.normalize == "zscore"]
        if not names:
            return {}
        norm_file = Path(self._state_file(NORM_FILE) or "")
        stats: dict[str, NormStats] = load_norm_stats(norm_file) if norm_file.is_file() else {}
        stats.update({k: v for k, v in stats_from_dict(frozen or {}).items()
                      if k in names and k not in stats})
        to_fit = [n for n in names if n not in stats]
        if to_fit:
            chosen = list(rows)[:max_prompts] if max_prompts else list(rows)
            pairs = [(r, text) for r in chosen for text in r.responses]
            if self.samplers:
                sampled = self.call("sampler", "sample_rows", chosen, n=1)
                pairs += [(r, c.text) for r, s in zip(chosen, sampled) for c in s.candidates]
            if not pairs:
                raise DataError(f"cannot fit z-score statistics of {to_fit}: the rows have no "
                                "candidates and no sampler runs")
            raw = self.call("reward", "score_raw", [r.prompt for r, _ in pairs],
                            [t for _, t in pairs], names=to_fit,
                            metadata=[{**r.meta, "prompt_id": r.prompt_id} for r, _ in pairs])
            stats.update({n: NormStats.fit(raw[n]) for n in to_fit})
            log.info("reward normalisation of %s fitted on %d candidates", to_fit, len(pairs))
        save_norm_stats(norm_file, stats)
        self.call_all("reward", "reload_normalisation")
        return stats_to_dict({n: stats[n] for n in names})

    def stop(self) -> None:
        """Kill every role actor (no restart); samplers first shut their engines down, so that
        the engine's own processes and memory are gone before another role group starts."""
        cluster.close_role(self.handles["sampler"], timeout_s=CLOSE_TIMEOUT_S)
        for role in ROLES:
            cluster.stop_role(self.handles[role])
            self.handles[role] = []
