"""Held-out evaluation of whatever policy the samplers serve (paper sec. 4.3-4.5, A.8).

An :class:`Evaluator` holds the held-out prompt rows and the scores of their human-written
answers. For the served policy it samples every prompt at each evaluation temperature (greedy
decoding draws one response, other temperatures several), scores the samples with every reward
model, estimates D_tau (the KL estimate at tau = 1) from the sampler's log-probs and the
reference actor's, and measures distinct-n. Evaluation samples with ``top_p = 1`` whatever the
recipe's pool sampling uses: vLLM reports log-probs of the untruncated temperature-1
distribution, so the KL needs samples drawn from exactly that distribution. The same sampling
seed is used for every policy (common random numbers). The formulas are in
:mod:`lire_ray.metrics`.

Every job that evaluates (the main job's before/after, ``jobs/evaluate.py``, the comparison,
the grid and the sweeps) goes through this class.

Shape notation: P held-out prompts, n samples per prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from lire_ray.config import Recipe
from lire_ray.errors import ConfigError
from lire_ray.metrics.stats import distinct_n
from lire_ray.metrics.summary import kl_summary, sample_summary
from lire_ray.pool import PoolRow, policy_source
from lire_ray.runtime import RoleGroup

log = logging.getLogger(__name__)

#: The temperature at which D_tau is the KL(pi || pi_ref) estimate.
KL_TEMPERATURE = 1.0
DISTINCT_NOTE = ("distinct-n: distinct word n-grams / all word n-grams over every sampled "
                 "response at that temperature; it falls when the policy collapses onto a few "
                 "templates.")


@dataclass(frozen=True)
class Generation:
    """Samples of one policy at one temperature, with their scores and log-probs.

    Attributes:
        temperature: Sampling temperature (0: greedy, n = 1).
        responses: [P][n] response texts.
        scores: ``{rm: [P][n]}`` rewards.
        policy_logps: [P][n] the sampler's summed log-probs (None where not reported).
        token_ids: [P][n] the generated token ids.
        prompt_texts: [P] the exact prompt text each prompt was sampled from (chat template
            applied), as the samplers report it.
    """

    temperature: float
    responses: list[list[str]]
    scores: dict[str, list[list[float]]]
    policy_logps: list[list[float | None]]
    token_ids: list[list[tuple[int, ...]]]
    prompt_texts: list[str] = field(default_factory=list)


@dataclass
class EvalResult:
    """One policy's evaluation: a record per temperature, the generations behind them, and the
    held-out prompts as sampled (``{"prompt_id", "prompt_text"}`` each: the rendered text, so
    a run can be audited token for token)."""

    records: list[dict]
    generations: dict[float, Generation] = field(default_factory=dict)
    prompts: list[dict] = field(default_factory=list)

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

    def to_json(self) -> dict:
        """Records, the held-out prompts' rendered texts, and per-prompt responses (text and
        token ids) and scores, JSON-ready."""
        return {"records": self.records, "held_out_prompts": self.prompts, "generations": {
            str(t): {"responses": g.responses, "scores": g.scores,
                     "token_ids": [[list(ids) for ids in per] for per in g.token_ids]}
            for t, g in self.generations.items()}}


class Evaluator:
    """Evaluates whichever policy the samplers serve on fixed held-out prompts.

    Args:
        recipe: The run's recipe (sampler seed and limits, model limits, chat template).
        roles: The role group; samplers and reward actors are used, reference actors (when
            started) for D_tau.
        rows: The P held-out prompt rows (with human-written answers for win rates).
        tokenizer: The policy's tokenizer (checks that samples re-tokenise to their tokens).

    Raises:
        ConfigError: No held-out prompts.
    """

    def __init__(self, recipe: Recipe, roles: RoleGroup, rows: Sequence[PoolRow], *, tokenizer):
        if not rows:
            raise ConfigError("evaluation needs held-out prompts (data.eval)")
        self.recipe, self.roles, self.rows = recipe, roles, list(rows)
        self.tokenizer = tokenizer
        self.seed = recipe.sampler.seed
        self.human = self._score_human()

    def _score_human(self) -> dict[str, list[float | None]] | None:
        refs = [(i, r.human_reference) for i, r in enumerate(self.rows)]
        have = [(i, text) for i, text in refs if text is not None]
        if len(have) < len(self.rows):
            log.info("%d of %d held-out prompts have a human-written answer; win rates count "
                     "those only", len(have), len(self.rows))
        if not have:
            return None
        # Scored like the policy's samples (the same models, the same metadata).
        scored = self.roles.call("reward", "score_samples", [self.rows[i] for i, _ in have],
                                 [[text] for _, text in have])
        out: dict[str, list[float | None]] = {}
        for rm, per in scored.items():
            out[rm] = [None] * len(self.rows)
            for (i, _), s in zip(have, per):
                out[rm][i] = s[0]
        return out

    def _rows_with(self, responses: Sequence[Sequence[str]]) -> list[PoolRow]:
        return [replace(r, responses=tuple(texts), sources=(policy_source(0),) * len(texts),
                        policy_version=(0,) * len(texts), rewards={}, preferred=-1,
                        ref_logps=None)
                for r, texts in zip(self.rows, responses)]

    def generate(self, temperature: float, n: int) -> Generation:
        """Sample n responses per prompt from the served policy and score them."""
        samples = self.roles.map("sampler", "sample_rows", self.rows, n=n,
                                 temperature=temperature, top_p=1.0, seed=self.seed)
        texts = [[c.text for c in s.candidates] for s in samples]
        scores = self.roles.call("reward", "score_samples", self.rows, texts)
        return Generation(temperature, texts, scores,
                          [[c.cumulative_logprob for c in s.candidates] for s in samples],
                          [[tuple(c.token_ids) for c in s.candidates] for s in samples],
                          [s.prompt_text for s in samples])

    def matched(self, gen: Generation) -> list[list[bool]]:
        """[P][n]: whether each response re-tokenises (as the reference scores it) to its tokens."""
        from lire_ray.collate import tokenize_group

        out = []
        for row, ids in zip(self._rows_with(gen.responses), gen.token_ids):
            group = tokenize_group(row, self.tokenizer,
                                   max_prompt_tokens=self.recipe.model.max_prompt_tokens,
                                   max_response_tokens=self.recipe.sampler.max_new_tokens,
                                   chat_template=self.recipe.data.chat_template)
            out.append([tuple(g) == tuple(t) for g, t in zip(group.response_ids, ids)])
        return out

    def divergence(self, gen: Generation) -> dict:
        """D_tau of the served policy from its samples ``gen`` (KL at tau = 1); NaN without a
        reference actor."""
        if not self.roles.references:
            return kl_summary([[None] * len(s) for s in gen.policy_logps],
                              [[0.0] * len(s) for s in gen.policy_logps])
        ref = self.roles.map("reference", "logps", self._rows_with(gen.responses),
                             max_response_tokens=self.recipe.sampler.max_new_tokens)
        return kl_summary(gen.policy_logps, ref, self.matched(gen))

    def evaluate(self, *, temperatures: Sequence[float] | None = None,
                 num_samples: int | None = None, judges: Sequence[str] | None = None,
                 with_kl: bool = True) -> EvalResult:
        """Evaluate the served policy at every temperature (and at 1 for the KL, ``with_kl``).

        Greedy decoding (temperature 0) draws one response per prompt; other temperatures
        draw ``max(eval.num_samples, eval.kl_samples)``, all of which enter the reward, the
        win rate, distinct-n and D_tau.

        Args:
            temperatures: Default ``eval.temperatures``.
            num_samples: Samples per prompt at temperatures above 0; default
                ``max(eval.num_samples, eval.kl_samples)``.
            judges: The reward models averaged into the average win rate; default
                ``eval.judges`` or every reward model that can score new text.
            with_kl: Also sample at temperature 1 and estimate the KL.

        Returns:
            An :class:`EvalResult` with the held-out prompts' rendered texts and one record per
            temperature: ``{"temperature",
            "samples_per_prompt", "mean", "win_rate", "win_rate_prompts", "avg_win_rate",
            "divergence", "distinct"}``.
        """
        ev = self.recipe.eval
        temps = ev.temperatures if temperatures is None else temperatures
        n_hot = num_samples or max(ev.num_samples, ev.kl_samples)
        judges = list(judges or self.recipe.judge_names)
        result = EvalResult(records=[])
        extra = {KL_TEMPERATURE} if with_kl else set()
        for t in sorted({float(x) for x in temps} | extra):
            gen = self.generate(t, 1 if t == 0.0 else n_hot)
            flat = [x for s in gen.responses for x in s]
            result.generations[t] = gen
            if not result.prompts:
                result.prompts = [{"prompt_id": r.prompt_id, "prompt_text": text}
                                  for r, text in zip(self.rows, gen.prompt_texts)]
            result.records.append({
                "temperature": t, "samples_per_prompt": len(gen.responses[0]),
                **sample_summary(gen.scores, self.human, judges),
                "divergence": self.divergence(gen),
                "distinct": {"1": distinct_n(flat, 1), "2": distinct_n(flat, 2)}})
        return result

    def best_of_n(self, ns: Sequence[int], *, temperature: float, picker: str,
                  judges: Sequence[str]) -> dict:
        """Best-of-n of the served policy (paper sec. 4.4) for every n in ``ns``."""
        from lire_ray.metrics.summary import best_of_n_summary

        gen = self.generate(temperature, max(ns))
        return {"temperature": temperature, "picker": picker, "judges": list(judges),
                "results": best_of_n_summary(gen.scores, self.human, picker=picker,
                                             judges=judges, ns=sorted(set(ns)))}
