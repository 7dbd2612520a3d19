"""Hugging Face ``transformers`` sampling backend (no vLLM needed; also diverse beam search).

Sampling uses ``model.generate`` with ``num_return_sequences=K`` on left-padded batches; stop
strings end generation through ``transformers``' ``stop_strings`` criterion and the text is cut
before the first stop string. ``sampler.diverse_beam_groups > 0`` switches to diverse beam
search (:mod:`lire_ray.sampling.beam`, paper sec. 4.4), which is deterministic. Full weights are
reloaded with ``from_pretrained``; a LoRA adapter is attached with peft.

Shape notation: B prompts, K candidates per prompt, L tokens.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from lire_ray.errors import ConfigError, ModelLoadError
from lire_ray.models import load_causal_lm, load_tokenizer
from lire_ray.sampling.base import (
    Candidate,
    call_config,
    check_adapter_dir,
    check_checkpoint_dir,
    check_version,
    cut_at_stop,
    encode_prompts,
    prompt_budget,
)
from lire_ray.sampling.beam import diverse_beam_search

#: Hamming diversity weight used by diverse beam search (the ``transformers`` 4.x examples'
#: value); the recipe schema has no field for it.
DEFAULT_DIVERSITY_PENALTY = 1.0


def left_pad(token_ids: Sequence[Sequence[int]], pad_id: int,
             device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack prompts of different lengths, padding on the left so all end at the last column.

    Args:
        token_ids: B lists of token ids.
        pad_id: Padding token id.
        device: Where the tensors go.

    Returns:
        ``input_ids`` ``[B, L]`` and ``attention_mask`` ``[B, L]`` (1 on real tokens).
    """
    width = max(len(ids) for ids in token_ids)
    ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for i, row in enumerate(token_ids):
        if row:
            ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


class HFSampler:
    """A :class:`~lire_ray.sampling.Sampler` on a ``transformers`` causal LM.

    Args:
        model_path: Hub id or local directory of the initial policy (version 0).
        cfg: The recipe's ``sampler`` section.
        trust_remote_code: Passed to ``from_pretrained``.
        dtype: Model dtype (``auto`` takes the checkpoint's).
        max_prompt_tokens: Left-truncate prompts to this many tokens.
        device: Torch device; default ``cuda`` when available, else ``cpu``.
        diversity_penalty: Hamming diversity weight of diverse beam search.

    Raises:
        ModelLoadError: The policy or its tokenizer cannot be loaded.
        ConfigError: A negative ``diversity_penalty``.
    """

    def __init__(self, model_path: str, cfg, *, trust_remote_code: bool = False,
                 dtype: str = "auto", max_prompt_tokens: int | None = None,
                 device: str | None = None,
                 diversity_penalty: float = DEFAULT_DIVERSITY_PENALTY):
        if diversity_penalty < 0:
            raise ConfigError(f"diversity_penalty must be >= 0, got {diversity_penalty}")
        self._cfg = cfg
        self._dtype = dtype
        self._trust = trust_remote_code
        self._device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._diversity_penalty = float(diversity_penalty)
        self._max_prompt = prompt_budget(cfg, max_prompt_tokens, context_limit=None)
        self._tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
        self._model = self._load(model_path)
        self._version = 0
        self._adapter_name: str | None = None
        self._adapter_loads = 0
        # Unseeded calls draw their seeds from here, so a sampler's outputs depend only on
        # sampler.seed and its call sequence, never on the process's global torch generator.
        self._seeds = np.random.default_rng(cfg.seed)

    def _load(self, path: str):
        return load_causal_lm(path, dtype=self._dtype, trust_remote_code=self._trust,
                              device=self._device)

    @property
    def policy_version(self) -> int:
        """Version of the weights (or adapter) now being served."""
        return self._version

    def generate(self, prompts: Sequence[str], *, n: int, seed: int | None = None,
                 temperature: float | None = None, top_p: float | None = None,
                 max_new_tokens: int | None = None,
                 stop: Sequence[str] | None = None) -> list[list[Candidate]]:
        """Sample (or beam-search) ``n`` candidates per prompt with the current policy.

        Arguments, result and errors as in :meth:`~lire_ray.sampling.Sampler.generate`;
        ``seed=None`` draws the call's seed from the sampler's own stream (seeded by
        ``sampler.seed``). Plus:

        Raises:
            ConfigError: Diverse beam search with an ``n`` that is not a multiple of
                ``sampler.diverse_beam_groups``.
        """
        if int(n) < 1:
            raise ValueError(f"n (candidates per prompt) must be >= 1, got {n}")
        cfg = call_config(self._cfg, temperature=temperature, top_p=top_p,
                          max_new_tokens=max_new_tokens, stop=stop)
        call_seed = int(seed) if seed is not None else int(self._seeds.integers(2**31))
        token_ids = encode_prompts(self._tokenizer, prompts, self._max_prompt)
        devices = [torch.cuda.current_device()] if self._device.startswith("cuda") else []
        result: list[list[Candidate]] = []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(call_seed)
            for start in range(0, len(token_ids), cfg.batch_size):
                chunk = token_ids[start:start + cfg.batch_size]
                if cfg.diverse_beam_groups > 0:
                    result.extend(self._beam(chunk, int(n), cfg))
                else:
                    result.extend(self._sample(chunk, int(n), cfg))
        return result

    def _eos_ids(self) -> list[int]:
        eos = self._model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if self._tokenizer.eos_token_id is not None and self._tokenizer.eos_token_id not in eos:
            eos.append(self._tokenizer.eos_token_id)
        return eos

    def _candidate(self, tokens: list[int], stops: Sequence[str],
                   hit_eos_or_stop: bool) -> Candidate:
        text = self._tokenizer.decode(tokens, skip_special_tokens=True)
        text, found = cut_at_stop(text, stops)
        return Candidate(text=text, num_tokens=len(tokens),
                         finish_reason="stop" if (hit_eos_or_stop or found) else "length",
                         policy_version=self._version, token_ids=tuple(tokens))

    def _sample(self, chunk: list[list[int]], n: int, cfg) -> list[list[Candidate]]:
        input_ids, mask = left_pad(chunk, self._tokenizer.pad_token_id, self._device)
        greedy = cfg.temperature == 0.0
        gen_cfg = copy.deepcopy(self._model.generation_config)
        gen_cfg.update(do_sample=not greedy, num_beams=1, max_new_tokens=cfg.max_new_tokens,
                       max_length=None, num_return_sequences=1 if greedy else n,
                       pad_token_id=self._tokenizer.pad_token_id, eos_token_id=self._eos_ids(),
                       stop_strings=list(cfg.stop) or None)
        if greedy:
            gen_cfg.update(temperature=None, top_p=None, top_k=None)
        else:
            # top_k=0 switches off the top-50 filter transformers applies by default; vLLM
            # samples from the full (top-p) distribution.
            gen_cfg.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
        # Raw logits, before temperature and top-p: the candidates' log-probabilities under the
        # policy itself (what vLLM reports, and what the evaluation's KL estimate needs).
        gen_cfg.update(output_logits=True, return_dict_in_generate=True)
        out = self._model.generate(input_ids=input_ids, attention_mask=mask,
                                   generation_config=gen_cfg, tokenizer=self._tokenizer)
        generated = out.sequences[:, input_ids.shape[1]:]
        # [B*n, T]: log-prob of each generated token (positions after the end are unused).
        step_logps = torch.stack([torch.log_softmax(step.float(), dim=-1)
                                  for step in out.logits], dim=1)
        token_logps = step_logps.gather(-1, generated.unsqueeze(-1)).squeeze(-1).tolist()
        new = generated.tolist()
        eos, pad = self._eos_ids(), self._tokenizer.pad_token_id
        per_prompt = 1 if greedy else n
        result = []
        for i in range(len(chunk)):
            cands = []
            for k in range(i * per_prompt, (i + 1) * per_prompt):
                row = new[k]
                end = next((j for j, tok in enumerate(row) if tok in eos), None)
                if end is not None:
                    row, hit = row[:end + 1], True
                else:
                    # A row that stopped on a stop string early is padded to the batch width.
                    while row and row[-1] == pad:
                        row = row[:-1]
                    hit = False
                cands.append(dataclasses.replace(self._candidate(row, cfg.stop, hit),
                                                 cumulative_logprob=sum(token_logps[k][:len(row)])))
            result.append(cands * n if greedy else cands)
        return result

    def _beam(self, chunk: list[list[int]], n: int, cfg) -> list[list[Candidate]]:
        groups = cfg.diverse_beam_groups
        if n % groups:
            raise ConfigError(f"diverse beam search: candidates per prompt ({n}) must be a "
                              f"multiple of sampler.diverse_beam_groups ({groups})")
        input_ids, mask = left_pad(chunk, self._tokenizer.pad_token_id, self._device)
        stop_check = None
        if cfg.stop:
            def stop_check(tokens: list[int]) -> bool:
                return cut_at_stop(self._tokenizer.decode(tokens, skip_special_tokens=True),
                                   cfg.stop)[1]
        eos = self._eos_ids()
        hyps = diverse_beam_search(
            self._model, input_ids, mask, num_beams=n, num_groups=groups,
            diversity_penalty=self._diversity_penalty, max_new_tokens=cfg.max_new_tokens,
            eos_token_ids=eos, stop_check=stop_check)
        return [[self._candidate(list(h.token_ids), cfg.stop, h.hit_stop) for h in row]
                for row in hyps]

    def load_weights(self, path: str, version: int) -> None:
        """Reload the policy with ``from_pretrained``.

        Arguments and errors as in :meth:`~lire_ray.sampling.Sampler.load_weights`.
        """
        version = check_version(version)
        check_checkpoint_dir(path)
        self._model = self._load(path)
        self._adapter_name = None
        self._version = version

    def load_weight_buckets(self, buckets: Iterable[bytes], version: int) -> None:
        """Load full weights sent from memory (see :mod:`lire_ray.sampling.weights`) into the
        served model, bucket by bucket; a served LoRA adapter is dropped first.

        Raises:
            ModelLoadError: A bucket names a weight the model does not have.
        """
        from peft import PeftModel

        from lire_ray.sampling.weights import from_bytes

        version = check_version(version)
        if isinstance(self._model, PeftModel):
            self._model = self._model.unload()
            self._adapter_name = None
        for blob in buckets:
            tensors = from_bytes(blob)
            unknown = self._model.load_state_dict(tensors, strict=False).unexpected_keys
            if unknown:
                raise ModelLoadError(f"the served model has no weights named {unknown[:3]}")
        self._version = version

    def load_adapter(self, path: str, version: int) -> None:
        """Attach the LoRA adapter in ``path`` with peft.

        Arguments and errors as in :meth:`~lire_ray.sampling.Sampler.load_adapter`.
        """
        from peft import PeftModel

        version = check_version(version)
        check_adapter_dir(path)
        # A fresh name per load: peft cannot replace the active adapter under its own name.
        self._adapter_loads += 1
        name = f"policy-v{version}-{self._adapter_loads}"
        try:
            if isinstance(self._model, PeftModel):
                old = self._adapter_name
                self._model.load_adapter(path, adapter_name=name, is_trainable=False)
                self._model.set_adapter(name)
                if old is not None:
                    self._model.delete_adapter(old)
            else:
                self._model = PeftModel.from_pretrained(self._model, path, adapter_name=name,
                                                        is_trainable=False)
        except Exception as err:  # peft raises ValueError, KeyError, RuntimeError, OSError
            raise ModelLoadError(f"cannot attach LoRA adapter '{path}': "
                                 f"{type(err).__name__}: {err}") from err
        self._model.eval()
        self._adapter_name = name
        self._version = version

    def sleep(self, level: int) -> None:
        """Not supported: ``sampler.sleep_level`` needs the vLLM backend.

        Raises:
            ConfigError: Always.
        """
        raise ConfigError(f"sampler.sleep_level={level} needs sampler.backend='vllm'")

    def wake_up(self) -> None:
        """A no-op: the HF sampler never sleeps."""

    def close(self) -> None:
        """Drop the model; the sampler is unusable afterwards."""
        self._model = None
