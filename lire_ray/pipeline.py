"""Algorithm 1 of the LIRE paper (sec. 3.2): Evolve (sample -> score) x Iterate (train), on Ray.

For e in 1..E: the samplers draw candidates with policy version e-1 for every prompt (human
candidates stay, earlier policy samples are replaced, sec. 4.7), the reward actors score them,
the reference actor adds reference log-probs when the loss needs them, and the trainer group
trains I epochs on the pool D_e; the new checkpoint becomes policy version e and is pushed to
the samplers.

Overlap: with ``resources.placement=split`` the trainer consumes scored groups from the Ray Data
stream while later groups are still being sampled and scored (every candidate of D_e still comes
from policy e-1, so this is strict Algorithm 1: ``max_staleness=0``). With
``evolve.max_staleness >= 1`` (split placement only) the samplers also sample D_{e+1} while
D_e's training finishes (:mod:`lire_ray.lookahead`), so those candidates may come from policy
e-1 instead of e. With ``colocate`` the phases alternate, and a vLLM sampler on a GPU can
sleep while the trainer runs (``sampler.sleep_level``). Either way each scored batch is
persisted as it passes, and the pool
``pools/e{k}`` is finalized (every prompt exactly once, manifest written, atomic rename) before
stage k is recorded as complete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lire_ray.config import Recipe
from lire_ray.errors import ConfigError, ModelLoadError
from lire_ray.pool import HUMAN, PoolRow, read_pool, rows_to_table, table_to_rows
from lire_ray.rewards import NORM_METADATA_KEY
from lire_ray.rundir import COMPLETE_MARKER, RunDir

log = logging.getLogger(__name__)


def resolve_policy(recipe: Recipe) -> str:
    """The initial policy: 'tiny' builds (once) the embedded default; anything else is passed on.

    Raises:
        ModelLoadError: The policy names a local path that does not exist.
    """
    if recipe.model.policy == "tiny":
        from lire_ray.demo.tiny_policy import ensure_tiny_policy

        return str(ensure_tiny_policy(recipe.run.cache_dir))
    policy = recipe.model.policy
    if (policy.startswith((".", "/", "~")) or policy.count("/") > 1) and \
            not Path(policy).expanduser().exists():
        raise ModelLoadError(f"model.policy: local path '{policy}' does not exist")
    return policy


def load_prompt_rows(spec: str, limit: int | None) -> list[PoolRow]:
    """Prompt rows (with their human-written candidates) from a builtin task or a pool directory.

    Raises:
        ConfigError: Unknown builtin name.
    """
    if spec.startswith("builtin:"):
        from lire_ray.demo import reviews

        splits = {"builtin:reviews": "train", "builtin:reviews-heldout": "heldout"}
        if spec not in splits:
            raise ConfigError(f"unknown builtin dataset '{spec}'; known: {sorted(splits)}")
        return [PoolRow(prompt_id=r["prompt_id"], prompt=r["prompt"], responses=r["responses"],
                        sources=[HUMAN] * len(r["responses"]),
                        policy_version=[-1] * len(r["responses"]), preferred=-1)
                for r in reviews.prompt_rows(splits[spec], limit)]
    rows = table_to_rows(read_pool(spec))
    return rows[:limit] if limit else rows


def overlap_seconds(busy: Sequence[tuple[float, float]], train: tuple[float, float]) -> float:
    """Seconds in which some sampling/scoring batch was in flight while training ran."""
    return sum(max(0.0, min(b, train[1]) - max(a, train[0])) for a, b in busy)


class Roles:
    """The long-lived role actors of a run."""

    def __init__(self, recipe: Recipe, policy_path: str, *, needs_reference: bool,
                 state_file: str | Path | None = None):
        from actors.reference import ReferenceActor
        from actors.reward import RewardActor
        from actors.sampler import SamplerActor
        from lire_ray import cluster

        ns, res = recipe.ray.namespace, recipe.resources
        self.namespace = ns
        self.placement = res.placement
        self.sleep_level = recipe.sampler.sleep_level
        self.state_file = Path(state_file) if state_file else None
        self.samplers = cluster.start_role(
            SamplerActor, "sampler", res.sampler, ns, policy_path, recipe.sampler, recipe.model,
            served_file=str(self.state_file) if self.state_file else None)
        # Frozen reward normalisation lives in a file, so a restarted reward actor keeps it.
        self.norm_file = (self.state_file.parent / "reward_norm.json") if self.state_file \
            else None
        self.rewards = cluster.start_role(
            RewardActor, "reward", res.reward, ns, recipe.rewards,
            norm_file=str(self.norm_file) if self.norm_file else None)
        self.references = []
        if needs_reference:
            ref_path = recipe.model.reference or policy_path
            self.references = cluster.start_role(
                ReferenceActor, "reference", res.reference, ns, ref_path,
                max_prompt_tokens=recipe.model.max_prompt_tokens,
                max_response_tokens=recipe.model.max_response_tokens,
                dtype=recipe.model.dtype, trust_remote_code=recipe.model.trust_remote_code)

    def fit_normalisation(self, recipe: Recipe, rows: Sequence[PoolRow],
                          max_prompts: int = 256) -> dict:
        """Fit, freeze and load the z-score statistics of ``normalize: zscore`` reward models.

        Statistics are fitted once per run, on the initial pool: the human-written candidates
        and one sample of the initial policy for up to ``max_prompts`` prompts. They are written
        to ``norm_file`` (a resumed run reuses them) and every reward actor loads them.

        Returns:
            ``{name: {"mean", "std"}}``, empty when no reward model is normalised.
        """
        from lire_ray.jobkit import fit_reward_normalisation
        from lire_ray.rewards import stats_to_dict
        from lire_ray.stream import call_role

        names = [rm.name for rm in recipe.rewards if rm.normalize == "zscore"]
        if not names or self.norm_file is None:
            return {}
        if self.norm_file.is_file():  # a resumed run: the actors loaded the file at start
            return call_role(self.rewards, "reward", "normalisation")
        rows = list(rows)[:max_prompts]
        sampled = call_role(self.samplers, "sampler", "sample", [r.prompt for r in rows],
                            n=1, keys=[r.prompt_id for r in rows])
        pairs = [(r.prompt, c.text) for r, cs in zip(rows, sampled) for c in cs]
        pairs += [(r.prompt, text) for r in rows
                  for text, src in zip(r.responses, r.sources) if src == HUMAN]
        stats = fit_reward_normalisation(self.rewards, [p for p, _ in pairs],
                                         [t for _, t in pairs], names=names,
                                         norm_file=self.norm_file)
        log.info("reward normalisation fitted on %d candidates", len(pairs))
        return stats_to_dict(stats)

    def set_phase(self, phase: str) -> None:
        """Tell the samplers which phase begins: ``"train"`` puts them to sleep and
        ``"sample"`` wakes them, when the placement is ``colocate`` and ``sampler.sleep_level``
        is set (vLLM on a GPU frees its memory for the trainer); otherwise nothing happens."""
        import ray

        if self.sleep_level == 0 or self.placement != "colocate":
            return
        method = "sleep" if phase == "train" else "wake_up"
        ray.get([getattr(s, method).remote() for s in self.samplers])

    def names(self, role: str) -> list[str]:
        handles = {"sampler": self.samplers, "reward": self.rewards,
                   "reference": self.references}[role]
        return [f"{role}-{i}" for i in range(len(handles))]

    def push_weights(self, checkpoint_dir: str, version: int, *, adapter: bool) -> None:
        """Serve checkpoint ``version`` on every sampler (adapter only for LoRA).

        The choice is recorded first in ``state_file`` so that a sampler restarted later
        (``max_restarts``) loads the same weights.
        """
        import json

        import ray

        from lire_ray.atomic import atomic_write_text

        if self.state_file is not None:
            atomic_write_text(self.state_file, json.dumps(
                {"path": str(checkpoint_dir), "version": version, "adapter": adapter}))
        method = "load_adapter" if adapter else "load_weights"
        ray.get([getattr(s, method).remote(checkpoint_dir, version) for s in self.samplers])

    def stop(self) -> None:
        from lire_ray import cluster

        for handles in (self.samplers, self.rewards, self.references):
            cluster.stop_role(handles)


def build_stream(recipe: Recipe, roles: Roles, rows: Sequence[PoolRow], *,
                 evolve_step: int | None = None, parts_dir: Path, sample: bool = True,
                 score: bool = True):
    """The lazy Ray Data stream prompts -> sample -> score -> (reference) -> persisted parts.

    With ``sampler.rso.enabled`` the sample stage draws ``sampler.rso.num_samples`` candidates
    per prompt and keeps K of them by RSO on the training reward (scored by the reward actors).

    Args:
        recipe: The recipe (sampler, evolve.keep_human, training reward).
        roles: The role actors: a :class:`Roles`, or a :class:`lire_ray.jobkit.StageActors`
            holding the roles the chosen stages call. The reference stage runs when
            ``roles.references`` is not empty.
        rows: The prompt rows, one per prompt (human-written candidates included).
        evolve_step: Written to each sampled row's ``evolve_step``; needed when ``sample``.
        parts_dir: Where every batch is persisted (see :class:`lire_ray.stream.PartWriter`).
        sample: Replace the rows' policy candidates with new samples.
        score: Score every candidate with every reward model.

    Returns:
        A lazy Ray Data dataset of the finished rows; iterating it writes the parts.

    Raises:
        ValueError: ``sample`` without ``evolve_step``.
    """
    import ray.data

    from lire_ray.stream import PartWriter, RowStage, SampleStage

    if sample and evolve_step is None:
        raise ValueError("build_stream(sample=True) needs evolve_step")
    bs = recipe.sampler.batch_size
    ds = ray.data.from_arrow(rows_to_table(rows)).repartition(max(1, -(-len(rows) // bs)))
    common = {"batch_format": "pyarrow", "batch_size": bs, "num_cpus": 0.01}
    timing = str(parts_dir / ".timing")
    if sample:
        kwargs = {"num_candidates": recipe.sampler.num_candidates,
                  "keep_human": recipe.evolve.keep_human, "evolve_step": evolve_step,
                  "timing_dir": timing}
        rso = recipe.sampler.rso
        if rso.enabled:
            kwargs.update(reward_actor_names=roles.names("reward"),
                          train_reward=recipe.train_reward_name, rso_num_samples=rso.num_samples,
                          rso_beta=rso.beta, seed=recipe.sampler.seed)
        ds = ds.map_batches(
            SampleStage, fn_constructor_args=(roles.names("sampler"), roles.namespace),
            fn_constructor_kwargs=kwargs, concurrency=len(roles.samplers), **common)
    if score:
        ds = ds.map_batches(RowStage, fn_constructor_args=(roles.names("reward"), roles.namespace),
                            fn_constructor_kwargs={"role": "reward", "method": "score_rows",
                                                   "timing_dir": timing},
                            concurrency=len(roles.rewards), **common)
    if roles.references:
        ds = ds.map_batches(RowStage,
                            fn_constructor_args=(roles.names("reference"), roles.namespace),
                            fn_constructor_kwargs={"role": "reference", "method": "annotate_rows",
                                                   "timing_dir": timing},
                            concurrency=len(roles.references), **common)
    return ds.map_batches(PartWriter, fn_constructor_args=(str(parts_dir),), concurrency=1,
                          **common)


def pool_stats(rows: Sequence[PoolRow], reward: str, evolve_step: int) -> dict:
    """Mean training reward of the policy candidates, pool size and candidate staleness."""
    policy = [(r.rewards[reward][j], v) for r in rows for j, v in enumerate(r.policy_version)
              if v >= 0]
    human = [r.rewards[reward][j] for r in rows for j, s in enumerate(r.sources) if s == HUMAN]
    lag = [evolve_step - 1 - v for _, v in policy]
    return {"prompts": len(rows), "candidates": sum(r.num_candidates for r in rows),
            "policy_reward_mean": sum(s for s, _ in policy) / max(1, len(policy)),
            "human_reward_mean": sum(human) / max(1, len(human)),
            "max_staleness_seen": max(lag, default=0)}


def check_complete(path: Path) -> None:
    """Refuse a checkpoint directory without its completion marker."""
    if not (path / COMPLETE_MARKER).is_file():
        raise ConfigError(f"checkpoint {path} has no {COMPLETE_MARKER} marker (interrupted save)")


@dataclass(frozen=True)
class PolicyInit:
    """Where the next Evolve step's training starts.

    Attributes:
        model: Directory or hub id of a full model.
        adapter: With LoRA and ``merge_on_save: false``, the previous step's adapter (on
            ``model``, the initial policy) that training continues; None otherwise.
    """

    model: str
    adapter: str | None = None


def run_evolve_step(recipe: Recipe, rundir: RunDir, roles: Roles, trainer, rows, *, step: int,
                    init: PolicyInit, ahead=None, norm: dict | None = None
                    ) -> tuple[dict, object]:
    """One Evolve step: D_step is sampled and scored (streamed into training with ``split``
    placement, or taken from ``ahead`` when it was sampled while the previous step trained),
    the policy trains on it, and the pool is finalized.

    Args:
        norm: Frozen reward normalisation in use, recorded in the pool's manifest.

    Returns:
        The step's record, and the :class:`~lire_ray.lookahead.Lookahead` already sampling
        D_{step+1} (None unless ``evolve.max_staleness >= 1``).

    Raises:
        DataError: The pool lost or duplicated a prompt, or a candidate lags more policy
            versions than ``evolve.max_staleness`` allows.
        ActorFailure: A role actor or the trainer failed.
    """
    import shutil

    from lire_ray import lookahead
    from lire_ray.errors import DataError
    from lire_ray.pool import read_pool_dataset
    from lire_ray.stream import busy_intervals, finalize_parts

    rundir.discard_incomplete(step)
    # A half-finished Ray Train run of this step trained on candidates that are discarded now.
    shutil.rmtree(Path(trainer.storage_path) / f"{trainer.name}-v{step}", ignore_errors=True)
    expected = [r.prompt_id for r in rows]
    reward = recipe.train_reward_name
    meta = {"evolve_step": step, **({NORM_METADATA_KEY: norm} if norm else {})}
    streaming = ahead is None and recipe.resources.placement != "colocate"
    if ahead is not None:
        parts = ahead.result()
    else:
        shutil.rmtree(lookahead.ahead_dir(rundir.root, step), ignore_errors=True)  # left by a crash
        parts = rundir.root / "pools" / f".e{step}.parts"
        shutil.rmtree(parts, ignore_errors=True)
        stream = build_stream(recipe, roles, rows, evolve_step=step, parts_dir=parts)
    if streaming:
        train_ds = stream
    else:
        if ahead is None:
            for _ in stream.iter_batches(batch_size=None, batch_format="pyarrow"):
                pass
        finalize_parts(parts, rundir.pool_dir(step), expected_ids=expected, metadata=meta)
        train_ds = read_pool_dataset(rundir.pool_dir(step))
    # The samplers are idle from the moment D_step is fully persisted: sample D_{step+1} then.
    nxt = lookahead.start(recipe, rundir.root, roles, rows, step=step + 1, wait_for=parts)
    roles.set_phase("train")
    t0 = time.time()
    try:
        result = trainer.fit(train_ds, num_prompts=len(rows), init_model=init.model,
                             init_adapter=init.adapter,
                             output_dir=str(rundir.checkpoint_dir(step)),
                             epochs=recipe.train.epochs, policy_version=step)
    except BaseException:
        if nxt is not None:
            nxt.cancel()
        raise
    train_span = (t0, time.time())
    roles.set_phase("sample")
    if streaming:
        finalize_parts(parts, rundir.pool_dir(step), expected_ids=expected, metadata=meta)
    busy = busy_intervals(parts / ".timing")
    ahead_busy = busy_intervals(nxt.parts_dir / ".timing") if nxt is not None else []
    shutil.rmtree(parts, ignore_errors=True)
    check_complete(rundir.checkpoint_dir(step))
    pool_rows = table_to_rows(read_pool(rundir.pool_dir(step)))
    stats = pool_stats(pool_rows, reward, step)
    if stats["max_staleness_seen"] > recipe.evolve.max_staleness:
        raise DataError(f"pool e{step} holds candidates {stats['max_staleness_seen']} policy "
                        f"versions old; evolve.max_staleness is {recipe.evolve.max_staleness}",
                        source=str(rundir.pool_dir(step)))
    return {"step": step, **stats, "presampled": ahead is not None,
            "sample_s": sum(e - a for a, e in busy),
            "train_s": train_span[1] - train_span[0],
            "overlap_s": overlap_seconds(busy + ahead_busy, train_span),
            "final_train_metrics": result.metrics, "checkpoint": result.checkpoint_dir,
            "adapter": result.adapter_dir, "pool_rows": pool_rows}, nxt


def evaluate_policy(recipe: Recipe, roles: Roles, rows: Sequence[PoolRow], *,
                    temperature: float, n: int = 1) -> dict:
    """Generate for held-out prompts and score with every reward model.

    Returns:
        ``{"responses": [[str]*n]*P, "scores": {rm: [[float]*n]*P}, "human": {rm: [float]*P}}``
        where ``human`` scores each prompt's first human-written answer (when it has one).
    """
    from lire_ray.stream import call_role

    prompts = [r.prompt for r in rows]
    cands = call_role(roles.samplers, "sampler", "sample", prompts, n=n, temperature=temperature,
                      seed=recipe.sampler.seed)
    texts = [[c.text for c in cs] for cs in cands]
    flat_p = [p for p, cs in zip(prompts, texts) for _ in cs]
    flat_r = [c for cs in texts for c in cs]
    flat = call_role(roles.rewards, "reward", "score", flat_p, flat_r)
    scores = {name: [s[i * n:(i + 1) * n] for i in range(len(rows))] for name, s in flat.items()}
    with_human = [(r.prompt, r.responses[r.sources.index(HUMAN)]) for r in rows
                  if HUMAN in r.sources]
    human = {}
    if len(with_human) == len(rows):
        human = call_role(roles.rewards, "reward", "score", [p for p, _ in with_human],
                          [h for _, h in with_human])
    return {"responses": texts, "scores": scores, "human": human}
