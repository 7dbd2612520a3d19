"""The sampler role: a thin actor around a :func:`lire_ray.sampling.build_sampler` backend.

The class is not decorated; the runtime layer applies ``ray.remote(**resources)`` with the
recipe's ``resources.sampler``, so no CPU/GPU count is fixed here.

Prompts arrive as pool rows (frozen :class:`~lire_ray.pool.PoolRow` messages) and are rendered
with :func:`lire_ray.collate.render_prompt`, the renderer training uses, so the prompt a
candidate is sampled from is the prompt it is trained on; each row's rendered text comes back
with its candidates (:class:`~lire_ray.sampling.PromptSamples`) and is recorded in the pool as
``prompt_text``. A call keyed by its rows is seeded from ``sampler.seed``, the policy version
and the rows' prompt ids (:func:`lire_ray.sampling.call_seed`), so a pool does not depend on
which replica sampled which batch, nor on restarts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

from lire_ray.collate import render_prompt
from lire_ray.config import ModelConfig, SamplerConfig
from lire_ray.errors import DataError
from lire_ray.faults import fault_point
from lire_ray.models import load_tokenizer
from lire_ray.pool import PoolRow
from lire_ray.sampling import PromptSamples, build_sampler, call_seed


def _wait_complete(checkpoint: str, timeout_s: float = 900.0) -> None:
    """Wait for a checkpoint's ``COMPLETE`` marker (a resident trainer writes checkpoints in
    the background): a sampler restarted meanwhile must load exactly the served weights.

    Raises:
        ModelLoadError: The checkpoint did not complete within ``timeout_s``.
    """
    import time

    from lire_ray.errors import ModelLoadError
    from lire_ray.rundir import COMPLETE_MARKER

    deadline = time.time() + timeout_s
    while not os.path.isfile(os.path.join(checkpoint, COMPLETE_MARKER)):
        if time.time() > deadline:
            raise ModelLoadError(f"the served checkpoint {checkpoint} did not complete within "
                                 f"{timeout_s:.0f} s")
        time.sleep(1.0)


class SamplerActor:
    """Samples candidates for prompt rows with the policy it serves.

    Args:
        model_path: Local directory or hub id of the initial policy (version 0).
        sampler: The recipe's ``sampler`` section (or its dict form).
        model: The recipe's ``model`` section (LoRA, dtype, prompt limit); defaults if omitted.
        chat_template: ``data.chat_template`` ("auto", "always" or "never").
        served_file: JSON file naming the weights the driver last served (written by the
            runtime layer's role group); a restarted actor reloads them, so it never falls back
            to the initial policy in the middle of a run.

    Raises:
        ConfigError, ModelLoadError, DependencyError: From :func:`build_sampler`.
    """

    def __init__(self, model_path: str, sampler: SamplerConfig | Mapping,
                 model: ModelConfig | Mapping | None = None, *, chat_template: str = "auto",
                 served_file: str | None = None):
        self._cfg = sampler if isinstance(sampler, SamplerConfig) \
            else SamplerConfig.model_validate(sampler)
        model_cfg = model if isinstance(model, ModelConfig) \
            else ModelConfig.model_validate(model or {})
        self._chat_template = chat_template
        self._tokenizer = load_tokenizer(model_path, trust_remote_code=model_cfg.trust_remote_code)
        self.sampler = build_sampler(
            str(model_path), self._cfg,
            lora=model_cfg.lora if model_cfg.lora.enabled else None,
            trust_remote_code=model_cfg.trust_remote_code, dtype=model_cfg.dtype,
            max_prompt_tokens=model_cfg.max_prompt_tokens)
        if served_file and os.path.isfile(served_file):
            with open(served_file, encoding="utf-8") as fh:
                served = json.load(fh)
            if served.get("checkpoint"):
                _wait_complete(served["checkpoint"])
            load = self.sampler.load_adapter if served["adapter"] else self.sampler.load_weights
            load(served["path"], int(served["version"]))

    def render(self, rows: Sequence[PoolRow]) -> list[str]:
        """The prompt text of each row, as this sampler conditions on it.

        Raises:
            DataError: A row's chat turns cannot be rendered (names the prompt_id).
        """
        out = []
        for r in rows:
            try:
                out.append(render_prompt(r.prompt, r.prompt_messages, self._tokenizer,
                                         chat_template=self._chat_template))
            except DataError as err:
                raise DataError(err.message, source=f"prompt_id {r.prompt_id}",
                                field="prompt_messages") from err
        return out

    def sample_rows(self, rows: Sequence[PoolRow], *, n: int, temperature: float | None = None,
                    top_p: float | None = None, seed: int | None = None) -> list[PromptSamples]:
        """Sample ``n`` candidates for each row's prompt.

        Args:
            rows: B prompt rows (only ``prompt_id``, ``prompt`` and ``prompt_messages`` are
                read).
            n: Candidates per prompt.
            temperature: Overrides ``sampler.temperature`` for this call (0 = greedy).
            top_p: Overrides ``sampler.top_p`` for this call.
            seed: Explicit sampling seed; default: derived from ``sampler.seed``, the policy
                version and the rows' prompt ids, so a retried batch gets the same candidates.

        Returns:
            B :class:`~lire_ray.sampling.PromptSamples`, in row order.

        Raises:
            DataError: A prompt cannot be rendered or encoded.
        """
        fault_point("sample_rows")  # fault tests: the actor dies with this batch in flight
        texts = self.render(rows)
        if seed is None:
            seed = call_seed(self._cfg.seed, self.sampler.policy_version,
                             [r.prompt_id for r in rows])
        groups = self.sampler.generate(texts, n=n, seed=seed, temperature=temperature,
                                       top_p=top_p)
        return [PromptSamples(t, tuple(g)) for t, g in zip(texts, groups, strict=True)]

    def load_weights(self, path: str, version: int) -> int:
        """Serve the full checkpoint in ``path`` as policy ``version``; returns the version."""
        self.sampler.load_weights(path, version)
        return self.sampler.policy_version

    def load_adapter(self, path: str, version: int) -> int:
        """Serve the LoRA adapter in ``path`` as policy ``version``; returns the version."""
        self.sampler.load_adapter(path, version)
        return self.sampler.policy_version

    def receive_weights(self, queue, version: int) -> int:
        """Serve full weights a resident trainer sends from memory as policy ``version``.

        Buckets arrive one at a time through ``queue`` (a one-slot ``ray.util.queue.Queue``
        of ``[object_ref]`` items, None after the last), so this actor holds one bucket at a
        time; the whole update is one call, so no sampling request runs between buckets.

        Returns:
            The version now served.
        """
        import ray

        def buckets():
            while (item := queue.get()) is not None:
                yield ray.get(item[0])

        self.sampler.load_weight_buckets(buckets(), version)
        return self.sampler.policy_version

    def load_adapter_bytes(self, blob: list, config: dict, version: int) -> int:
        """Serve a LoRA adapter a resident trainer sends from memory as policy ``version``.

        The adapter (``[object_ref]`` of its safetensors bytes, and its peft config) is written
        to a directory local to this actor, which vLLM and peft load adapters from.

        Returns:
            The version now served.
        """
        import shutil
        import tempfile

        import ray

        from lire_ray.sampling.weights import from_bytes
        from lire_ray.training.checkpoint import write_adapter

        data = ray.get(blob[0]) if not isinstance(blob[0], bytes) else blob[0]
        old, self._adapter_dir = getattr(self, "_adapter_dir", None), tempfile.mkdtemp(
            prefix=f"lire-adapter-v{version}-")
        write_adapter(self._adapter_dir, from_bytes(data), config)
        self.sampler.load_adapter(self._adapter_dir, version)
        if old:
            shutil.rmtree(old, ignore_errors=True)
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
