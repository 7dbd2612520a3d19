"""Policy weights in transit: bounded buckets of whole layers, serialised as safetensors bytes.

A resident trainer sends a new policy to the samplers without writing a checkpoint first: rank 0
cuts its weights (the full model, or only the LoRA adapter) into buckets of at most
``train.weight_sync.bucket_mb`` MiB, and each sampler loads a bucket before the next one is
made, so each side holds at most one bucket beyond its own weights. Buckets hold whole decoder
layers (``...layers.<i>.``), never part of one: vLLM's in-place reload processes a layer once all
its weights (q, k, v, ... fused into one kernel tensor) have arrived. A layer larger than the
bucket size travels alone.

Buckets travel as safetensors bytes (no pickle), which any process can read back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_LAYER = re.compile(r"^(.*?\.layers\.\d+)\.")


def layer_key(name: str) -> str:
    """The unit a weight travels with: its decoder layer (``model.layers.3``), or itself."""
    m = _LAYER.match(name)
    return m.group(1) if m else name


def layer_buckets(named: Iterable[tuple[str, object]], max_bytes: int) -> Iterator[dict]:
    """Group named tensors into buckets of whole layers, each at most ``max_bytes`` (unless one
    layer alone is larger).

    Args:
        named: ``(name, tensor)`` pairs in model order (tensors of one layer consecutive).
        max_bytes: Bucket size bound.

    Yields:
        ``{name: tensor}`` dicts covering every pair once, in order.

    Raises:
        ValueError: ``max_bytes`` < 1, or the tensors of one layer are not consecutive.
    """
    if max_bytes < 1:
        raise ValueError(f"bucket size must be positive, got {max_bytes}")
    bucket: dict = {}
    size = 0
    layer: dict = {}
    layer_size = 0
    key = None
    seen: set[str] = set()

    def close_layer():
        nonlocal bucket, size
        if bucket and size + layer_size > max_bytes:
            yield bucket
            bucket, size = {}, 0
        bucket.update(layer)
        size += layer_size

    for name, tensor in named:
        k = layer_key(name)
        if k != key:
            if key is not None:
                yield from close_layer()
                seen.add(key)
            if k in seen:
                raise ValueError(f"weights of {k} are not consecutive ({name})")
            key, layer, layer_size = k, {}, 0
        layer[name] = tensor
        layer_size += tensor.numel() * tensor.element_size()  # type: ignore[attr-defined]
    if key is not None:
        yield from close_layer()
    if bucket:
        yield bucket


def to_bytes(bucket: dict) -> bytes:
    """A bucket as safetensors bytes (tensors made contiguous on the CPU)."""
    from safetensors.torch import save

    # Cloned: tied weights (embeddings = lm_head) share storage, which safetensors refuses.
    return save({k: v.detach().to("cpu").clone().contiguous() for k, v in bucket.items()})


def from_bytes(blob: bytes) -> dict:
    """The ``{name: tensor}`` dict of :func:`to_bytes`."""
    from safetensors.torch import load

    return load(blob)
