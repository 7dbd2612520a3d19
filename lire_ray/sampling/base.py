"""The backend-neutral sampling API over vLLM and Hugging Face ``generate``.

Algorithm 1 of the LIRE paper (sec. 3.2) samples K responses per prompt from the current
policy at every Evolve step; :func:`build_sampler` returns a :class:`Sampler` that does this with
the backend named by ``sampler.backend``:

* ``vllm`` (:mod:`lire_ray.sampling.vllm_backend`): one vLLM engine; new full weights are
  reloaded in place, a LoRA-trained policy is served as a ``LoRARequest`` per call.
* ``hf`` (:mod:`lire_ray.sampling.hf_backend`): ``transformers`` sampling, and diverse beam
  search (paper sec. 4.4) implemented in :mod:`lire_ray.sampling.beam`.

Every :class:`Candidate` records the policy version that produced it, so a pool built while
training runs ahead can bound staleness. Statistical rejection sampling (paper sec. 4.7) is in
:mod:`lire_ray.sampling.rso`; it runs after scoring, on N >= K candidates.

Randomness: a sampler is seeded once from ``sampler.seed``; ``generate(..., seed=s)`` reseeds
the backend's sampling generator with ``s`` first, so the same (weights, prompts, n, s) give the
same candidates whichever process or restart serves them. The two backends draw their noise
differently: one seed gives different candidates under vLLM and under ``transformers``.

Shape notation: B prompts, K candidates per prompt, L tokens.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from lire_ray.errors import ConfigError, DataError, ModelLoadError

if TYPE_CHECKING:
    from lire_ray.config import SamplerConfig
    from lire_ray.pool import PoolRow

__all__ = [
    "Candidate",
    "Sampler",
    "call_config",
    "call_seed",
    "check_adapter_dir",
    "check_checkpoint_dir",
    "cut_at_stop",
    "encode_prompts",
    "merge_candidates",
    "prompt_budget",
]

@dataclass(frozen=True)
class Candidate:
    """One sampled response.

    Attributes:
        text: The response text, cut before the first stop string; special tokens removed.
        num_tokens: Tokens the policy generated for it, including an EOS token or the tokens of
            a stop string that were cut from ``text``.
        finish_reason: ``"stop"`` (EOS or a stop string) or ``"length"`` (max_new_tokens).
        policy_version: The policy version whose weights produced it (0: the initial policy).
        cumulative_logprob: Sum of the generated tokens' log-probabilities under the policy
            (temperature 1, no top-p), when the backend reports it (vLLM); otherwise ``None``.
        token_ids: The ``num_tokens`` generated token ids.
    """

    text: str
    num_tokens: int
    finish_reason: str
    policy_version: int
    cumulative_logprob: float | None = None
    token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class PromptSamples:
    """What a sampler returns for one prompt row: the exact prompt text it conditioned on
    (the chat template applied, before token truncation) and its candidates.

    Attributes:
        prompt_text: The rendered prompt (:func:`lire_ray.collate.render_prompt`).
        candidates: The sampled candidates, in sampling order.
    """

    prompt_text: str
    candidates: tuple[Candidate, ...]


def merge_candidates(row: PoolRow, samples: PromptSamples, *, keep_human: bool,
                     evolve_step: int, keep: Sequence[int] | None = None) -> PoolRow:
    """The row with its policy candidates replaced by new samples (paper sec. 4.7).

    Human-written candidates stay when ``keep_human``; earlier policy samples are dropped.
    Rewards and reference log-probs are cleared (they belong to the old candidate list) and the
    prompt text the sampler saw is recorded.

    Args:
        row: The prompt row.
        samples: The new samples of this row.
        keep_human: Keep human-written candidates.
        evolve_step: Written to the row's ``evolve_step``.
        keep: Indices of the samples to keep (default: all), in the order to store them.

    Returns:
        The new row.
    """
    from lire_ray.pool import HUMAN, policy_source

    cands = [samples.candidates[i] for i in (range(len(samples.candidates)) if keep is None
                                             else keep)]
    kept = [i for i, s in enumerate(row.sources) if keep_human and s == HUMAN]
    preferred = kept.index(row.preferred) if row.preferred in kept else -1
    return replace(
        row,
        responses=tuple(row.responses[i] for i in kept) + tuple(c.text for c in cands),
        sources=tuple(row.sources[i] for i in kept)
        + tuple(policy_source(c.policy_version) for c in cands),
        policy_version=tuple(row.policy_version[i] for i in kept)
        + tuple(c.policy_version for c in cands),
        rewards={}, ref_logps=None, preferred=preferred, evolve_step=evolve_step,
        prompt_text=samples.prompt_text)


@runtime_checkable
class Sampler(Protocol):
    """What every sampling backend provides."""

    @property
    def policy_version(self) -> int:
        """Version of the weights (or adapter) now being served."""

    def generate(self, prompts: Sequence[str], *, n: int, seed: int | None = None,
                 temperature: float | None = None, top_p: float | None = None,
                 max_new_tokens: int | None = None,
                 stop: Sequence[str] | None = None) -> list[list[Candidate]]:
        """Sample ``n`` candidates for each of the B prompts with the current policy.

        ``temperature``, ``top_p``, ``max_new_tokens`` and ``stop`` override the recipe's
        values for this call only (evaluation samples one engine at several temperatures).

        Args:
            prompts: B prompt texts (already chat-formatted if the policy is a chat model).
            n: K, candidates per prompt.
            seed: Seed of this call's sampling (see the module docstring); ``None``: the
                backend's own sampling stream goes on.
            temperature: Overrides ``sampler.temperature`` for this call (0: greedy).
            top_p: Overrides ``sampler.top_p`` for this call.
            max_new_tokens: Overrides ``sampler.max_new_tokens`` for this call.
            stop: Overrides ``sampler.stop`` for this call.

        Returns:
            B lists of K candidates, in prompt order.

        Raises:
            ValueError: ``n`` < 1.
            ConfigError: An out-of-range override.
            DataError: A prompt is not a non-empty string.
        """

    def load_weights(self, path: str, version: int) -> None:
        """Serve the full Hugging Face checkpoint in ``path`` as policy ``version``.

        The tokenizer is kept: a checkpoint must use the initial policy's vocabulary. Any
        served LoRA adapter is dropped (the new weights are the whole policy).

        Args:
            path: Directory with ``config.json`` and ``*.safetensors`` of the same architecture.
            version: The policy version these weights are.

        Raises:
            ModelLoadError: The directory is incomplete, or its weights cannot be loaded (or do
                not fit the running engine).
            ValueError: ``version`` is not a non-negative int.
        """

    def load_weight_buckets(self, buckets: Iterable[bytes], version: int) -> None:
        """Serve full weights sent from memory, bucket by bucket, as policy ``version``
        (buckets of whole layers as safetensors bytes, :mod:`lire_ray.sampling.weights`).

        Raises:
            ModelLoadError: A bucket cannot be loaded into the model.
            ValueError: ``version`` is not a non-negative int.
        """

    def load_adapter(self, path: str, version: int) -> None:
        """Serve the current base weights plus the peft LoRA adapter in ``path`` as ``version``.

        Args:
            path: A peft adapter directory (``adapter_config.json``, ``adapter_model.*``).
            version: The policy version the adapter is.

        Raises:
            ModelLoadError: The adapter is missing, not LoRA, or rejected by the backend (e.g.
                it does not fit the model).
            ValueError: ``version`` is not a non-negative int.
        """

    def sleep(self, level: int) -> None:
        """Free the device memory between sampling phases (colocated trainer).

        Args:
            level: 1 keeps the weights in host memory; 2 drops them (the next
                :meth:`load_weights` brings new ones).

        Raises:
            ConfigError: The backend or device cannot sleep.
        """

    def wake_up(self) -> None:
        """Reclaim the memory given up by :meth:`sleep`; a no-op when awake."""

    def close(self) -> None:
        """Release the engine and its memory."""


def call_config(cfg: SamplerConfig, *, temperature: float | None = None,
                top_p: float | None = None, max_new_tokens: int | None = None,
                stop: Sequence[str] | None = None) -> SamplerConfig:
    """The sampler section with one call's overrides applied and validated.

    Args:
        cfg: The recipe's ``sampler`` section.
        temperature: Override of ``temperature`` (``None`` keeps it).
        top_p: Override of ``top_p``.
        max_new_tokens: Override of ``max_new_tokens``.
        stop: Override of ``stop``.

    Returns:
        ``cfg`` itself when nothing is overridden, else a validated copy.

    Raises:
        ConfigError: An override is out of range.
    """
    updates: dict[str, Any] = {
        k: v for k, v in (("temperature", temperature), ("top_p", top_p),
                          ("max_new_tokens", max_new_tokens)) if v is not None}
    if stop is not None:
        updates["stop"] = list(stop)
    if not updates:
        return cfg
    from pydantic import ValidationError

    try:
        return type(cfg).model_validate({**cfg.model_dump(), **updates})
    except ValidationError as err:
        raise ConfigError(f"bad sampling override {updates}: {err}") from None


def prompt_budget(cfg: SamplerConfig, max_prompt_tokens: int | None, *,
                  context_limit: int | None) -> int | None:
    """Most prompt tokens a backend may keep so that prompt + response fits its context.

    Args:
        cfg: The sampler section (``max_new_tokens``).
        max_prompt_tokens: The recipe's prompt limit, or ``None``.
        context_limit: The backend's context length (vLLM ``max_model_len``), or ``None``.

    Returns:
        The limit, or ``None`` for no limit.

    Raises:
        ConfigError: The context cannot hold even one prompt token plus the response.
    """
    limits = [] if max_prompt_tokens is None else [max_prompt_tokens]
    if context_limit is not None:
        room = context_limit - cfg.max_new_tokens
        if room < 1:
            raise ConfigError(f"sampler.max_model_len ({context_limit}) must exceed "
                              f"sampler.max_new_tokens ({cfg.max_new_tokens})")
        limits.append(room)
    return min(limits) if limits else None


def encode_prompts(tokenizer, prompts: Sequence[str], max_tokens: int | None) -> list[list[int]]:
    """Token ids of rendered prompts (:func:`lire_ray.collate.encode_prompt`, the rule training
    uses), keeping the last ``max_tokens`` tokens.

    Left truncation keeps the end of a prompt, which holds the turn being answered.

    Args:
        tokenizer: The policy's tokenizer.
        prompts: B prompt texts from :func:`lire_ray.collate.render_prompt`.
        max_tokens: Keep at most this many tokens per prompt; ``None`` keeps all.

    Returns:
        B lists of token ids, each non-empty.

    Raises:
        DataError: A prompt is not a string, or is empty and the tokenizer has no BOS token.
    """
    from lire_ray.collate import encode_prompt

    out = []
    for i, text in enumerate(prompts):
        if not isinstance(text, str):
            raise DataError(f"prompt must be a string, got {type(text).__name__}", row=i,
                            field="prompt")
        ids = encode_prompt(tokenizer, text)
        if not ids:
            if tokenizer.bos_token_id is None:
                raise DataError("prompt is empty and the tokenizer has no BOS token to start "
                                "from", row=i, field="prompt")
            ids = [tokenizer.bos_token_id]
        if max_tokens is not None and len(ids) > max_tokens:
            ids = ids[-max_tokens:]
        out.append(ids)
    return out


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` before the earliest occurrence of any stop string.

    Args:
        text: A decoded response.
        stops: Stop strings; empty strings are ignored.

    Returns:
        The text before the first stop string, and whether one was found.
    """
    first = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:first], True) if first >= 0 else (text, False)


def call_seed(base: int, version: int, keys: Sequence[str]) -> int:
    """A 31-bit sampling seed determined by a base seed, a policy version and a batch's keys.

    Used so that a batch of prompts sampled at a given policy version gets the same candidates
    whichever sampler replica (or restarted job) samples it.

    Args:
        base: The recipe's ``sampler.seed``.
        version: The policy version being sampled.
        keys: Identifiers of the batch (e.g. its prompt_ids), in order.

    Returns:
        An int in ``[0, 2**31)``.
    """
    payload = json.dumps([int(base), int(version), [str(k) for k in keys]]).encode()
    return int.from_bytes(hashlib.sha256(payload).digest()[:4], "big") & 0x7FFFFFFF


def check_version(version: int) -> int:
    """Validate a policy version number.

    Raises:
        ValueError: ``version`` is not a non-negative int.
    """
    if isinstance(version, bool) or int(version) != version or version < 0:
        raise ValueError(f"policy version must be a non-negative int, got {version!r}")
    return int(version)


def check_checkpoint_dir(path: str) -> Path:
    """Check that ``path`` holds a Hugging Face checkpoint with safetensors weights.

    Raises:
        ModelLoadError: Missing directory, ``config.json`` or ``*.safetensors`` file.
    """
    p = Path(path)
    if not p.is_dir():
        raise ModelLoadError(f"checkpoint directory '{path}' does not exist")
    if not (p / "config.json").is_file():
        raise ModelLoadError(f"checkpoint directory '{path}' has no config.json")
    if not any(p.glob("*.safetensors")):
        raise ModelLoadError(f"checkpoint directory '{path}' has no *.safetensors weights")
    return p


def check_adapter_dir(path: str) -> dict:
    """Check that ``path`` holds a peft LoRA adapter and return its ``adapter_config.json``.

    Raises:
        ModelLoadError: Missing directory, config or weights, or not a LoRA adapter.
    """
    p = Path(path)
    if not p.is_dir():
        raise ModelLoadError(f"adapter directory '{path}' does not exist")
    cfg_file = p / "adapter_config.json"
    if not cfg_file.is_file():
        raise ModelLoadError(f"adapter directory '{path}' has no adapter_config.json")
    if not any(p.glob("adapter_model.*")):
        raise ModelLoadError(f"adapter directory '{path}' has no adapter_model weights")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{cfg_file}: unreadable adapter config: {err}") from err
    if cfg.get("peft_type") != "LORA":
        raise ModelLoadError(f"{cfg_file}: peft_type is {cfg.get('peft_type')!r}, only LORA "
                             "adapters can be served")
    return cfg
