"""Methods added to every vLLM worker process (``LLM(worker_extension_cls=...)``).

vLLM imports this module inside its worker processes, so it imports nothing heavy at module
level and nothing from vLLM until a method runs there.
"""

from __future__ import annotations

#: Qualified name passed to ``LLM(worker_extension_cls=...)``.
EXTENSION_QUALNAME = "lire_ray.sampling.vllm_worker.SamplerWorkerExtension"


#: vLLM's in-place reload warns about every layer none of whose tensors the checkpoint holds.
#: The rotary embedding's only tensor is ``cos_sin_cache``, a buffer vLLM computes from the
#: config (no checkpoint has it, HF's ``inv_freq`` is not even saved): vLLM puts the cache
#: back as it was, which is right, after warning "RotaryEmbedding: Failed to load weights" on
#: every reload, from disk or from memory. That one line is dropped; any other layer that
#: fails to load is still reported.
_HARMLESS_RELOAD_WARNING = "RotaryEmbedding: Failed to load weights"


def _is_reported(record) -> bool:
    return record.getMessage() != _HARMLESS_RELOAD_WARNING


class SamplerWorkerExtension:
    """Mixed into vLLM's worker class; called with ``llm.collective_rpc(name, args=...)``."""

    def lire_drop_harmless_reload_warning(self) -> None:
        """Drop vLLM's rotary-embedding reload warning in this worker (see
        ``_HARMLESS_RELOAD_WARNING``)."""
        import logging

        logger = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
        if _is_reported not in logger.filters:
            logger.addFilter(_is_reported)

    def lire_reseed(self, seed: int) -> None:
        """Reseed the worker's sampling generators (Python, NumPy, torch CPU and device).

        Unseeded vLLM requests draw their noise from the worker's global torch generator, so
        reseeding it makes the next batch reproducible without per-request seeds (which make
        vLLM sample each request separately, ~25x slower on CPU).

        Args:
            seed: The new seed.
        """
        from vllm.utils.torch_utils import set_random_seed

        set_random_seed(int(seed))

    def lire_load_weights(self, blob: bytes) -> int:
        """Load one bucket of weights, sent as safetensors bytes, into the running model.

        Tensors do not survive vLLM's RPC encoding inside nested containers, so a bucket
        travels as one ``bytes`` object. Buckets are whole decoder layers (see
        :func:`lire_ray.sampling.weights.layer_buckets`): vLLM's in-place reload processes a
        layer once all of its weights have arrived.

        Args:
            blob: ``safetensors.torch.save`` of ``{hf_name: tensor}``.

        Returns:
            The number of tensors loaded.
        """
        from safetensors.torch import load

        weights = load(blob)
        # The vLLM worker class this extension is mixed into provides model_runner.
        runner = self.model_runner  # type: ignore[attr-defined]
        runner.reload_weights(weights_iterator=list(weights.items()), is_checkpoint_format=True)
        return len(weights)
