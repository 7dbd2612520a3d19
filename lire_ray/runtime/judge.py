"""The in-cluster judge: a judge model served by a vLLM engine in a Ray actor.

``judge.backend: vllm`` hosts ``judge.model`` in the sampler actor class (the same vLLM backend
that samples candidates) started as role ``judge`` with ``judge.resources``; the prompts are
chat messages rendered with the judge tokenizer's chat template. :class:`VllmJudgeTransport`
gives it to :class:`~lire_ray.judges.JudgeClient`, which batches every request of a call into
one actor call (the engine batches on its own).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from lire_ray.config import ModelConfig, SamplerConfig
from lire_ray.config.judge import JudgeConfig
from lire_ray.errors import ConfigError
from lire_ray.pool import PoolRow
from lire_ray.runtime import cluster

log = logging.getLogger(__name__)

ROLE = "judge"


class VllmJudgeTransport:
    """The judge actor of ``judge.backend: vllm``; stop it with :meth:`stop`.

    Args:
        cfg: The ``judge`` section (model, resources, vLLM settings).
        namespace: The job's Ray namespace.

    Raises:
        ConfigError: No judge model.
        ActorFailure: The actor could not start.
    """

    def __init__(self, cfg: JudgeConfig, *, namespace: str):
        from actors.sampler import SamplerActor

        if not cfg.model:
            raise ConfigError("judge: backend 'vllm' needs judge.model (a hub id or directory)")
        self.cfg = cfg
        self.where = "a vLLM actor in the cluster"
        sampler = SamplerConfig(backend="vllm", num_candidates=1, temperature=cfg.temperature,
                                max_new_tokens=cfg.max_tokens,
                                gpu_memory_utilization=cfg.gpu_memory_utilization,
                                tensor_parallel_size=cfg.tensor_parallel_size,
                                enforce_eager=cfg.enforce_eager, max_model_len=cfg.max_model_len,
                                batch_size=64)
        model = ModelConfig(policy=cfg.model, dtype=cfg.dtype,
                            max_prompt_tokens=cfg.max_model_len - cfg.max_tokens)
        self.handles = cluster.start_role(SamplerActor, ROLE, cfg.resources, namespace,
                                          cfg.model, sampler, model, chat_template="always")

    def complete(self, messages: list[dict[str, str]]) -> str:
        return self.complete_many([messages])[0]

    def complete_many(self, conversations: Sequence[list[dict[str, str]]]) -> list[str]:
        """The judge's greedy (or ``judge.temperature``) answer to every conversation.

        Raises:
            ActorFailure: The judge actor failed.
        """
        rows = [PoolRow(prompt_id=f"judge-{i}", prompt=msgs[-1]["content"], responses=(),
                        sources=(), policy_version=(), prompt_messages=json.dumps(msgs))
                for i, msgs in enumerate(conversations)]
        samples = cluster.map_role(self.handles, ROLE, "sample_rows", rows, chunk=64, n=1,
                                   temperature=self.cfg.temperature, seed=0)
        return [s.candidates[0].text for s in samples]

    def stop(self) -> None:
        """Shut the engine down and kill the actor."""
        cluster.close_role(self.handles, timeout_s=30.0)
        cluster.stop_role(self.handles)
        self.handles = []
