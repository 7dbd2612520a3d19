"""The resident trainer's parts without Ray: dealing rows to workers, weight buckets, and a
sampler loading a new policy from memory exactly as from its checkpoint on disk."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from lire_ray.sampling.weights import from_bytes, layer_buckets, layer_key, to_bytes
from lire_ray.training.data import deal


def _tables(sizes):
    start = 0
    for n in sizes:
        yield pa.table({"x": list(range(start, start + n))})
        start += n


@pytest.mark.parametrize("sizes,world,rows,micro", [
    ([5, 3, 9], 2, 8, 3), ([1] * 17, 3, 5, 2), ([20], 2, 10, 4), ([7], 2, 3, 8), ([4, 4], 1, 8, 4),
])
def test_deal_gives_each_worker_its_rows_in_micro_batches(sizes, world, rows, micro):
    got = list(deal(_tables(sizes), world_size=world, rows_per_worker=rows,
                    micro_batch_prompts=micro))
    per = {r: [x for rank, t in got if rank == r for x in t["x"].to_pylist()]
           for r in range(world)}
    # Every worker gets exactly its quota, no row twice, in stream order, the remainder dropped.
    assert all(len(v) == rows for v in per.values())
    flat = sorted(x for v in per.values() for x in v)
    assert flat == list(range(world * rows))
    assert all(v == sorted(v) for v in per.values())
    assert all(t.num_rows <= micro for _, t in got)
    # Round robin: worker r's micro-batches are r, r + W, ... of the stream.
    assert [rank for rank, _ in got][:world] == list(range(world))


def test_layer_buckets_keep_layers_whole_and_bound_the_size():
    named = [(f"model.layers.{i}.{p}", torch.zeros(10)) for i in range(4)
             for p in ("q.weight", "k.weight", "mlp.weight")]
    named = [("model.embed_tokens.weight", torch.zeros(30))] + named + \
        [("model.norm.weight", torch.zeros(5)), ("lm_head.weight", torch.zeros(30))]
    buckets = list(layer_buckets(named, max_bytes=70 * 4))
    assert [k for b in buckets for k in b] == [n for n, _ in named]
    for b in buckets:
        layers = {layer_key(k) for k in b}
        size = sum(t.numel() * t.element_size() for t in b.values())
        # Within the bound, or a single layer that is larger on its own.
        assert size <= 70 * 4 or len(layers) == 1
        for key in layers:  # whole layers only
            assert sum(layer_key(n) == key for n, _ in named) == sum(layer_key(k) == key
                                                                    for k in b)
    assert len(buckets) > 2
    with pytest.raises(ValueError, match="not consecutive"):
        list(layer_buckets([("model.layers.0.a", torch.zeros(1)), ("x", torch.zeros(1)),
                            ("model.layers.0.b", torch.zeros(1))], max_bytes=100))


def test_bucket_bytes_round_trip_tied_weights():
    shared = torch.randn(4, 3)
    blob = to_bytes({"embed.weight": shared, "lm_head.weight": shared, "b": torch.arange(3)})
    back = from_bytes(blob)
    assert torch.equal(back["embed.weight"], shared) and torch.equal(back["lm_head.weight"], shared)
    assert torch.equal(back["b"], torch.arange(3))


def test_hf_sampler_serves_weights_sent_from_memory_as_from_disk(tmp_path):
    from lire_ray.config import SamplerConfig
    from lire_ray.demo.tiny_models import build_tiny_policy
    from lire_ray.models import load_causal_lm
    from lire_ray.sampling import build_sampler

    base = build_tiny_policy(tmp_path / "a", hidden_size=64, num_heads=1, seed=0)
    other = build_tiny_policy(tmp_path / "b", hidden_size=64, num_heads=1, seed=1)
    cfg = SamplerConfig(backend="hf", max_new_tokens=8, temperature=0.0)
    from_disk = build_sampler(str(base), cfg)
    from_disk.load_weights(str(other), 1)
    in_memory = build_sampler(str(base), cfg)
    sd = load_causal_lm(other, dtype="float32").state_dict()
    in_memory.load_weight_buckets((to_bytes(b) for b in layer_buckets(sd.items(), 1 << 16)), 1)
    prompts = ["The movie was", "Tell me about the hotel."]
    got = in_memory.generate(prompts, n=1, seed=0)
    assert [c[0].token_ids for c in got] == [c[0].token_ids for c in
                                             from_disk.generate(prompts, n=1, seed=0)]
    assert in_memory.policy_version == 1
    assert [c[0].token_ids for c in got] != [c[0].token_ids for c in
                                             build_sampler(str(base), cfg).generate(prompts, n=1,
                                                                                    seed=0)]
    # Served == trained: every greedy token after the push is the pushed checkpoint's argmax
    # under teacher forcing, and the base checkpoint disagrees somewhere.
    from _served import served_mismatches

    tokens = [c[0].token_ids for c in got]
    assert served_mismatches(str(other), prompts, tokens) == []
    assert served_mismatches(str(base), prompts, tokens) != []
