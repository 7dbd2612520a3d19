"""The sampler role: a thin actor around :func:`lire_ray.sampling.build_sampler`.

The class is not decorated; a job applies ``ray.remote(**resources)(SamplerActor)`` with the
recipe's ``resources.sampler`` (so no CPU/GPU count is fixed here), or hands the class to Ray
Data ``map_batches`` (it is callable on a batch).

Batches are column dicts (Ray Data's numpy format): ``prompt_id`` and ``prompt`` are required;
``prompt_messages`` (a JSON array of chat turns, or null) is used instead of ``prompt`` when
present, formatted with the tokenizer's chat template. The output holds every input column plus
``responses`` (list<str>), ``sources`` (list<str>, ``"policy@e{version}"`` as in
:mod:`lire_ray.pool`) and ``policy_version`` (list<int>). When the input already has these
three list columns (e.g. human-written candidates kept by sec. 4.7 of the paper), the new
candidates are appended to each row's lists.

Each batch is sampled with a seed derived from ``sampler.seed``, the policy version and the
batch's prompt_ids (:func:`lire_ray.sampling.call_seed`), so a pool does not depend on which
replica sampled which batch, nor on restarts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from lire_ray.config import ModelConfig, SamplerConfig
from lire_ray.errors import DataError
from lire_ray.pool import policy_source
from lire_ray.sampling import Candidate, build_sampler, call_seed

_CANDIDATE_COLUMNS = ("responses", "sources", "policy_version")


def _as_list(column: Any) -> list:
    return column.tolist() if hasattr(column, "tolist") else list(column)


class SamplerActor:
    """Samples K (or, with RSO, N) candidates per prompt with the current policy.

    Args:
        model_path: Local directory or hub id of the initial policy (version 0).
        sampler: The recipe's ``sampler`` section (or its dict form).
        model: The recipe's ``model`` section (LoRA, dtype, prompt limit); defaults if omitted.
        served_file: JSON file naming the weights the driver last pushed (see
            :func:`lire_ray.pipeline.Roles.push_weights`); a restarted actor reloads them, so it
            never falls back to the initial policy in the middle of a run.

    Raises:
        ConfigError, ModelLoadError, DependencyError: From :func:`build_sampler`.
    """

    def __init__(self, model_path: str, sampler: SamplerConfig | Mapping,
                 model: ModelConfig | Mapping | None = None, served_file: str | None = None):
        self._cfg = sampler if isinstance(sampler, SamplerConfig) \
            else SamplerConfig.model_validate(sampler)
        model_cfg = model if isinstance(model, ModelConfig) \
            else ModelConfig.model_validate(model or {})
        self._model_path = str(model_path)
        self._trust = model_cfg.trust_remote_code
        self._tokenizer = None
        self.num_candidates = (self._cfg.rso.num_samples if self._cfg.rso.enabled
                               else self._cfg.num_candidates)
        self.sampler = build_sampler(
            self._model_path, self._cfg, lora=model_cfg.lora if model_cfg.lora.enabled else None,
            trust_remote_code=model_cfg.trust_remote_code, dtype=model_cfg.dtype,
            max_prompt_tokens=model_cfg.max_prompt_tokens)
        if served_file and os.path.isfile(served_file):
            with open(served_file, encoding="utf-8") as fh:
                served = json.load(fh)
            load = self.sampler.load_adapter if served["adapter"] else self.sampler.load_weights
            load(served["path"], int(served["version"]))

    def _chat_text(self, messages_json: str, row: int) -> str:
        if self._tokenizer is None:
            from lire_ray.models import load_tokenizer

            self._tokenizer = load_tokenizer(self._model_path, trust_remote_code=self._trust)
        try:
            messages = json.loads(messages_json)
            return self._tokenizer.apply_chat_template(messages, tokenize=False,
                                                       add_generation_prompt=True)
        except Exception as err:  # bad JSON, bad roles, no template: all a data problem
            raise DataError(f"cannot format chat turns: {type(err).__name__}: {err}", row=row,
                            field="prompt_messages") from err

    def generate(self, batch: Mapping[str, Any]) -> dict[str, list]:
        """Sample candidates for a batch of prompts.

        Args:
            batch: Columns ``prompt_id`` and ``prompt`` (B rows each), optionally
                ``prompt_messages`` and existing ``responses``/``sources``/``policy_version``.

        Returns:
            Every input column as a list, with the candidate columns set or extended.

        Raises:
            DataError: A required column is missing or a prompt is malformed.
        """
        for col in ("prompt_id", "prompt"):
            if col not in batch:
                raise DataError(f"sampler input has no '{col}' column (has {sorted(batch)})",
                                field=col)
        out = {name: _as_list(col) for name, col in batch.items()}
        ids = [str(p) for p in out["prompt_id"]]
        messages = out.get("prompt_messages") or [None] * len(ids)
        prompts = [self._chat_text(m, i) if m else p
                   for i, (p, m) in enumerate(zip(out["prompt"], messages, strict=True))]
        version = self.sampler.policy_version
        seed = call_seed(self._cfg.seed, version, ids)
        groups: list[list[Candidate]] = self.sampler.generate(prompts, n=self.num_candidates,
                                                              seed=seed)
        new = {"responses": [[c.text for c in g] for g in groups],
               "sources": [[policy_source(c.policy_version) for c in g] for g in groups],
               "policy_version": [[c.policy_version for c in g] for g in groups]}
        extend = all(col in out for col in _CANDIDATE_COLUMNS)
        for col in _CANDIDATE_COLUMNS:
            if extend:
                out[col] = [_as_list(old) + add for old, add in zip(out[col], new[col],
                                                                    strict=True)]
            else:
                out[col] = new[col]
        return out

    __call__ = generate

    def sample(self, prompts: list[str], *, n: int, keys: list[str] | None = None,
               temperature: float | None = None, seed: int | None = None) -> list[list[Candidate]]:
        """Sample ``n`` candidates per prompt (the driver's entry point: pool stages, evaluation).

        Args:
            prompts: B prompt texts.
            n: Candidates per prompt.
            keys: Per-prompt ids; when given (and ``seed`` is not), the seed is derived from
                them and the policy version, so a retried batch gets the same candidates.
            temperature: Overrides ``sampler.temperature`` for this call (0 = greedy).
            seed: Explicit sampling seed.

        Returns:
            B lists of n :class:`~lire_ray.sampling.Candidate`.
        """
        if seed is None and keys is not None:
            seed = call_seed(self._cfg.seed, self.sampler.policy_version, keys)
        return self.sampler.generate(list(prompts), n=n, seed=seed, temperature=temperature)

    def load_weights(self, path: str, version: int) -> int:
        """Serve the full checkpoint in ``path`` as policy ``version``; returns the version."""
        self.sampler.load_weights(path, version)
        return self.sampler.policy_version

    def load_adapter(self, path: str, version: int) -> int:
        """Serve the LoRA adapter in ``path`` as policy ``version``; returns the version."""
        self.sampler.load_adapter(path, version)
        return self.sampler.policy_version

    def sleep(self) -> None:
        """Free the engine's device memory while the trainer runs (``sampler.sleep_level``).

        Raises:
            ConfigError: The backend or the device cannot sleep.
        """
        self.sampler.sleep(self._cfg.sleep_level)

    def wake_up(self) -> None:
        """Undo :meth:`sleep`; a no-op when awake."""
        self.sampler.wake_up()

    def ping(self) -> dict:
        """Liveness probe: the served policy version, backend and process id."""
        return {"policy_version": self.sampler.policy_version, "backend": self._cfg.backend,
                "pid": os.getpid()}

    def close(self) -> None:
        """Release the engine (frees the device memory before the actor exits)."""
        self.sampler.close()
