"""Sampling and scoring held-out prompts with the role actors (paper sec. 4.3-4.5).

An :class:`Evaluator` holds the held-out prompts, their human-written answers' scores and the
sampler, reward and reference actors. For whatever policy the samplers serve it draws samples
at each evaluation temperature, scores them with every reward model, and estimates D_tau (the
KL estimate at tau = 1) from the sampler's log-probs and the reference actor's. The formulas are
in :mod:`lire_ray.evaluate.summary`.

Shape notation: P held-out prompts, n samples per prompt.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lire_ray.config import Recipe
from lire_ray.errors import ConfigError, RunDirError
from lire_ray.evaluate.summary import kl_summary, sample_summary
from lire_ray.pool import PoolRow, policy_source

log = logging.getLogger(__name__)

#: The temperature at which D_tau is the KL(pi || pi_ref) estimate.
KL_TEMPERATURE = 1.0


def for_evaluation(recipe: Recipe) -> Recipe:
    """The recipe with ``sampler.top_p = 1``: evaluation samples the policy's own distribution.

    vLLM reports log-probs of the untruncated temperature-1 distribution, so KL(pi || pi_ref)
    needs samples drawn from exactly that distribution (temperature 1, no nucleus cut).
    """
    if recipe.sampler.top_p != 1.0:
        log.info("evaluation samples with top_p=1 (the recipe's sampler.top_p=%s is for pools)",
                 recipe.sampler.top_p)
    return recipe.model_copy(update={"sampler": recipe.sampler.model_copy(update={"top_p": 1.0})})


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


def serve(roles, path: str | Path, version: int) -> None:
    """Serve a policy checkpoint on every sampler as ``version``.

    A training checkpoint (``train_info.json``) with only a LoRA adapter is served as that
    adapter on the base weights; a full checkpoint, or any Hugging Face model directory of the
    same architecture, replaces the weights.

    Raises:
        ConfigError: ``path`` is missing or is an incomplete training checkpoint.
    """
    from lire_ray.pipeline import check_complete
    from lire_ray.training.checkpoint import INFO_FILE

    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"policy checkpoint {path} does not exist")
    info_file = path / INFO_FILE
    if info_file.is_file():
        check_complete(path)
        info = json.loads(info_file.read_text(encoding="utf-8"))
        if info.get("adapter_dir") and not info.get("full_model"):
            roles.push_weights(str(path / info["adapter_dir"]), version, adapter=True)
            return
    roles.push_weights(str(path), version, adapter=False)


def start_reference(recipe: Recipe, model_path: str, *, max_response_tokens: int) -> list:
    """Start the reference actor(s) that score evaluation samples under pi_ref.

    ``max_response_tokens`` should be ``sampler.max_new_tokens``: then a response the sampler
    cut at that length is scored without the EOS token it never generated.
    """
    from actors.reference import ReferenceActor
    from lire_ray import cluster

    m = recipe.model
    return cluster.start_role(ReferenceActor, "reference", recipe.resources.reference,
                              recipe.ray.namespace, model_path,
                              max_prompt_tokens=m.max_prompt_tokens,
                              max_response_tokens=max_response_tokens, dtype=m.dtype,
                              trust_remote_code=m.trust_remote_code)


def reference_answer(row: PoolRow) -> str | None:
    """The human-written answer a policy's response is compared with
    (:attr:`~lire_ray.pool.PoolRow.human_reference`)."""
    return row.human_reference


@dataclass(frozen=True)
class Generation:
    """Samples of one policy at one temperature, with their scores and log-probs.

    Attributes:
        temperature: Sampling temperature (0: greedy, n = 1).
        responses: [P][n] response texts.
        scores: ``{rm: [P][n]}`` rewards.
        policy_logps: [P][n] the sampler's summed log-probs (None where not reported).
        token_ids: [P][n] the generated token ids.
    """

    temperature: float
    responses: list[list[str]]
    scores: dict[str, list[list[float]]]
    policy_logps: list[list[float | None]]
    token_ids: list[list[tuple[int, ...]]]


@dataclass
class EvalResult:
    """One policy's evaluation: a record per temperature and the generations behind them."""

    records: list[dict]
    generations: dict[float, Generation] = field(default_factory=dict)

    @property
    def kl(self) -> dict:
        """The KL(pi || pi_ref) estimate (D_tau at tau = 1); NaN when not sampled at 1."""
        return next((r["divergence"] for r in self.records
                     if r["temperature"] == KL_TEMPERATURE),
                    {"value": float("nan"), "stderr": float("nan"), "n": 0, "excluded": 0})

    def record(self, temperature: float) -> dict:
        """The record of one temperature."""
        return next(r for r in self.records if r["temperature"] == temperature)

    def generation(self, temperature: float) -> Generation:
        """The samples drawn at one temperature."""
        return self.generations[temperature]


class Evaluator:
    """Evaluates whichever policy the samplers serve on fixed held-out prompts.

    Args:
        recipe: The run's recipe (sampler seed, truncation limits).
        roles: A :class:`lire_ray.pipeline.Roles` (samplers and reward actors are used).
        references: Reference actors for D_tau, or an empty list to skip it.
        rows: The P held-out prompt rows (with human-written answers for win rates).
        tokenizer: The policy's tokenizer (checks that samples re-tokenise to their tokens).
        ref_max_response_tokens: The reference actors' response limit.
    """

    def __init__(self, recipe: Recipe, roles, references: list, rows: Sequence[PoolRow], *,
                 tokenizer, ref_max_response_tokens: int):
        if not rows:
            raise ConfigError("evaluation needs held-out prompts (data.eval)")
        self.recipe = recipe
        self.roles = roles
        self.references = references
        self.rows = list(rows)
        self.tokenizer = tokenizer
        self.ref_max_response_tokens = ref_max_response_tokens
        self.seed = recipe.sampler.seed
        self.human = self._score_human()

    def _call(self, role: str, actors, method: str, *args, **kwargs):
        from lire_ray.stream import call_role

        return call_role(actors, role, method, *args, **kwargs)

    def _score_human(self) -> dict[str, list[float]] | None:
        answers = [reference_answer(r) for r in self.rows]
        if any(a is None for a in answers):
            log.warning("some held-out prompts have no human-written answer: no win rates")
            return None
        return self._call("reward", self.roles.rewards, "score", [r.prompt for r in self.rows],
                          answers)

    def generate(self, temperature: float, n: int) -> Generation:
        """Sample n responses per prompt from the served policy and score them."""
        prompts = [r.prompt for r in self.rows]
        cands = self._call("sampler", self.roles.samplers, "sample", prompts, n=n,
                           temperature=temperature, seed=self.seed)
        texts = [[c.text for c in cs] for cs in cands]
        flat = self._call("reward", self.roles.rewards, "score",
                          [p for p, cs in zip(prompts, texts) for _ in cs],
                          [c for cs in texts for c in cs])
        scores = {rm: [s[i * n:(i + 1) * n] for i in range(len(prompts))]
                  for rm, s in flat.items()}
        return Generation(temperature, texts, scores,
                          [[c.cumulative_logprob for c in cs] for cs in cands],
                          [[tuple(c.token_ids) for c in cs] for cs in cands])

    def _rows(self, gen: Generation) -> list[PoolRow]:
        return [PoolRow(prompt_id=r.prompt_id, prompt=r.prompt, responses=texts,
                        sources=[policy_source(0)] * len(texts),
                        policy_version=[0] * len(texts))
                for r, texts in zip(self.rows, gen.responses)]

    def matched(self, gen: Generation) -> list[list[bool]]:
        """[P][n]: whether each response re-tokenises (as the reference scores it) to its tokens."""
        from lire_ray.collate import tokenize_group

        out = []
        for row, ids in zip(self._rows(gen), gen.token_ids):
            group = tokenize_group(row, self.tokenizer,
                                   max_prompt_tokens=self.recipe.model.max_prompt_tokens,
                                   max_response_tokens=self.ref_max_response_tokens)
            out.append([tuple(g) == tuple(t) for g, t in zip(group.response_ids, ids)])
        return out

    def divergence(self, gen: Generation) -> dict:
        """D_tau of the served policy from its samples ``gen`` (KL at tau = 1)."""
        if not self.references:
            return kl_summary([[None] * len(s) for s in gen.policy_logps],
                              [[0.0] * len(s) for s in gen.policy_logps])
        ref = self._call("reference", self.references, "logps", self._rows(gen))
        return kl_summary(gen.policy_logps, ref, self.matched(gen))

    def evaluate(self, *, temperatures: Sequence[float], num_samples: int, kl_samples: int,
                 judges: Sequence[str], with_kl: bool = True) -> EvalResult:
        """Evaluate the served policy at every temperature (and at 1 for the KL, ``with_kl``).

        Greedy decoding (temperature 0) draws one response per prompt; other temperatures
        draw ``max(num_samples, kl_samples)``, all of which enter the reward, the win rate and
        D_tau.

        Returns:
            An :class:`EvalResult` with one record per temperature:
            ``{"temperature", "samples_per_prompt", "mean", "win_rate", "avg_win_rate",
            "divergence"}``.
        """
        result = EvalResult(records=[])
        extra = {KL_TEMPERATURE} if with_kl else set()
        for t in sorted({float(x) for x in temperatures} | extra):
            n = 1 if t == 0.0 else max(num_samples, kl_samples)
            gen = self.generate(t, n)
            result.generations[t] = gen
            result.records.append({"temperature": t, "samples_per_prompt": n,
                                   **sample_summary(gen.scores, self.human, judges),
                                   "divergence": self.divergence(gen)})
        return result

    def best_of_n(self, ns: Sequence[int], *, temperature: float, picker: str,
                  judges: Sequence[str]) -> dict:
        """Best-of-n of the served policy (paper sec. 4.4) for every n in ``ns``."""
        from lire_ray.evaluate.summary import best_of_n_summary

        gen = self.generate(temperature, max(ns))
        return {"temperature": temperature, "picker": picker, "judges": list(judges),
                "results": best_of_n_summary(gen.scores, self.human, picker=picker,
                                             judges=judges, ns=sorted(set(ns)))}
