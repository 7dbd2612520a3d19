"""The order of sleep, weight loads and wake-up in the vLLM sampler (colocated placement).

vLLM's sleep mode needs a CUDA or ROCm GPU, so the engine here is a recorder of the calls the
sampler makes on it: the test is about the order of those calls. A resident trainer sends the
new policy at the end of training, while the driver still has the engine asleep; the weights
must be awake before anything is loaded into them, and the KV cache comes back only when the
driver wakes the engine for sampling.
"""

from __future__ import annotations

import pytest

from lire_ray.config import SamplerConfig
from lire_ray.sampling.vllm_backend import VLLMSampler


class _Engine:
    """Records the calls made on ``vllm.LLM``."""

    def __init__(self):
        self.calls: list[tuple] = []

    def sleep(self, level):
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tuple(tags) if tags else "all"))

    def collective_rpc(self, method, args=(), kwargs=None):
        self.calls.append(("load", method))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))


def _sampler(level: int) -> tuple[VLLMSampler, _Engine]:
    engine = _Engine()
    sampler = object.__new__(VLLMSampler)  # the state __init__ sets, without an engine
    sampler._cfg = SamplerConfig(backend="vllm", sleep_level=level)
    sampler._llm = engine
    sampler._version, sampler._lora_request, sampler._max_lora_rank = 0, None, 0
    sampler._sleeping, sampler._weights_awake, sampler._needs_weights = 0, False, False
    sampler._max_prompt_tokens = None
    return sampler, engine


@pytest.mark.parametrize("level", [1, 2])
def test_weights_sent_while_asleep_are_loaded_into_woken_weights(level):
    sampler, engine = _sampler(level)
    sampler.sleep(level)                                  # set_phase("train")
    sampler.load_weight_buckets([b"layer 0", b"layer 1"], 1)  # the resident trainer's push
    sampler.wake_up()                                     # set_phase("sample")
    assert engine.calls == [
        ("sleep", level), ("wake_up", ("weights",)),
        ("load", "lire_load_weights"), ("load", "lire_load_weights"), ("reset_prefix_cache",),
        ("wake_up", ("kv_cache",)), ("reset_prefix_cache",)]
    assert sampler.policy_version == 1
    assert not sampler._sleeping and not sampler._needs_weights, "ready to sample policy 1"


def test_a_second_sleep_wakes_the_weights_again_for_the_next_push():
    sampler, engine = _sampler(1)
    for version in (1, 2):
        sampler.sleep(1)
        sampler.load_weight_buckets([b"w"], version)
        sampler.wake_up()
    assert [c for c in engine.calls if c[0] in ("sleep", "wake_up")] == [
        ("sleep", 1), ("wake_up", ("weights",)), ("wake_up", ("kv_cache",))] * 2
    assert sampler.policy_version == 2


def test_level_two_without_a_push_needs_weights_before_sampling():
    sampler, engine = _sampler(2)
    sampler.sleep(2)
    sampler.wake_up()                                     # the per-step trainer: disk load next
    assert engine.calls[-2:] == [("wake_up", "all"), ("reset_prefix_cache",)]
    with pytest.raises(RuntimeError, match="dropped its weights"):
        sampler.generate(["p"], n=1)


def test_awake_engine_loads_without_waking():
    sampler, engine = _sampler(1)
    sampler.load_weight_buckets([b"w"], 3)
    assert ("wake_up", ("weights",)) not in engine.calls
    assert sampler.policy_version == 3
