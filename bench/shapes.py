"""Models and seeded random batches the benches run on.

Shape notation: B prompts, K candidates per prompt, V vocabulary.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import asdict, dataclass

import torch

from lire_ray.batch import TokenizedGroup
from lire_ray.errors import ConfigError

#: Qwen2-0.5B's layout (random weights: only the shapes matter for speed and memory).
QWEN2_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                 num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 tie_word_embeddings=True)
#: The same family at a size a CPU runs in seconds (the GPU check's CPU dry run uses it).
QWEN2_SMALL = dict(vocab_size=4096, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)


@dataclass(frozen=True)
class BatchShape:
    """A micro-batch of B prompts with K candidates each.

    Attributes:
        prompts: B.
        candidates: K.
        prompt_len: Tokens per prompt.
        resp_min: Shortest response (tokens).
        resp_max: Longest response (tokens); lengths are drawn uniformly in between.
        seed: Seed of token ids, lengths and rewards.
    """

    prompts: int
    candidates: int
    prompt_len: int
    resp_min: int
    resp_max: int
    seed: int = 0

    def __post_init__(self):
        if min(self.prompts, self.candidates, self.prompt_len, self.resp_min) < 1 \
                or self.resp_max < self.resp_min:
            raise ConfigError(f"bad batch shape {asdict(self)}: every size must be >= 1 and "
                              "resp_max >= resp_min")

    def as_dict(self) -> dict:
        return asdict(self)


def make_groups(shape: BatchShape, vocab_size: int) -> list[TokenizedGroup]:
    """B groups of random token ids (ids 1..V-1) with random response lengths, seeded.

    Args:
        shape: The batch shape.
        vocab_size: V.

    Returns:
        B :class:`TokenizedGroup` s of K candidates each.
    """
    rng = random.Random(shape.seed)
    draw = lambda n: tuple(rng.randrange(1, vocab_size) for _ in range(n))  # noqa: E731
    return [TokenizedGroup(
        prompt_id=f"bench-{b}", prompt_ids=draw(shape.prompt_len),
        response_ids=tuple(draw(rng.randint(shape.resp_min, shape.resp_max))
                           for _ in range(shape.candidates)))
        for b in range(shape.prompts)]


def make_rewards(shape: BatchShape, device: str) -> torch.Tensor:
    """``[B, K]`` float32 standard-normal rewards, seeded by ``shape.seed``."""
    gen = torch.Generator().manual_seed(shape.seed + 1)
    return torch.randn(shape.prompts, shape.candidates, generator=gen).to(device)


def tiny_llama(*, vocab_size: int, hidden_size: int, num_layers: int, device: str,
               seed: int = 0):
    """A tiny random Llama built with :func:`lire_ray.demo.tiny_models.build_tiny_policy`, float32.

    Args:
        vocab_size: V (embedding rows; the BPE tokenizer itself stays small).
        hidden_size: Width; heads are ``hidden_size // 64``.
        num_layers: Decoder layers.
        device: Torch device.
        seed: Weight seed.

    Returns:
        ``(model, description)``: the model in train mode, and its shape as a dict.
    """
    from lire_ray.demo.tiny_models import TINY_HEAD_DIM, build_tiny_policy
    from lire_ray.models import load_causal_lm

    with tempfile.TemporaryDirectory(prefix="lire-bench-") as tmp:
        path = build_tiny_policy(f"{tmp}/policy", vocab_size=vocab_size, hidden_size=hidden_size,
                                 num_layers=num_layers, num_heads=hidden_size // TINY_HEAD_DIM,
                                 seed=seed)
        model = load_causal_lm(path, dtype="float32", device=device)
    cfg = model.config
    return model.train(), {"name": "tiny-llama", "vocab_size": cfg.vocab_size,
                           "hidden_size": cfg.hidden_size, "num_layers": cfg.num_hidden_layers,
                           "dtype": "float32",
                           "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}


def qwen2(layout: dict, *, dtype: torch.dtype, device: str, seed: int = 0,
          num_layers: int | None = None):
    """A randomly initialised Qwen2 causal LM with SDPA attention, built on ``device``.

    Args:
        layout: :data:`QWEN2_05B`, :data:`QWEN2_SMALL` or another Qwen2Config dict.
        dtype: Parameter dtype (bf16 for the timed GPU runs).
        device: Torch device.
        seed: Weight seed.
        num_layers: Override of ``num_hidden_layers`` (smaller float32 checks).

    Returns:
        ``(model, description)``: the model in train mode, and its shape as a dict.
    """
    from transformers import AutoModelForCausalLM, Qwen2Config

    layout = {**layout, **({"num_hidden_layers": num_layers} if num_layers else {})}
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(Qwen2Config(**layout), dtype=dtype,
                                                 attn_implementation="sdpa")
    name = "qwen2-small"
    if layout["vocab_size"] == QWEN2_05B["vocab_size"]:
        name = "qwen2-0.5b-shape" + ("" if layout == QWEN2_05B else
                                     f" ({layout['num_hidden_layers']} layers)")
    return model.train(), {"name": name, **layout, "dtype": str(dtype).replace("torch.", ""),
                           "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}
