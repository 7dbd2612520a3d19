"""Small GGUF files written by the tests themselves with the ``gguf`` package: a tiny Llama with a
byte-level BPE tokenizer and a ChatML chat template, a truncated copy, another architecture."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HIDDEN, HEADS, KV_HEADS, FFN, LAYERS = 64, 2, 1, 96, 2
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + "
                 "'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}"
                 "{{'<|im_start|>assistant\n'}}{% endif %}")


def _byte_alphabet() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return list(bytes_to_unicode().values())


def tiny_llama_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """The weights a tiny Llama GGUF holds, by GGUF tensor name (numpy [out, in] layout)."""
    rng = np.random.default_rng(seed)
    vocab = len(SPECIALS) + 256 + 2
    head_dim = HIDDEN // HEADS

    def w(*shape):
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    out = {"token_embd.weight": w(vocab, HIDDEN),
           "output_norm.weight": (1 + rng.random(HIDDEN)).astype(np.float32)}
    for i in range(LAYERS):
        out.update({f"blk.{i}.attn_norm.weight": (1 + rng.random(HIDDEN)).astype(np.float32),
                    f"blk.{i}.attn_q.weight": w(HIDDEN, HIDDEN),
                    f"blk.{i}.attn_k.weight": w(KV_HEADS * head_dim, HIDDEN),
                    f"blk.{i}.attn_v.weight": w(KV_HEADS * head_dim, HIDDEN),
                    f"blk.{i}.attn_output.weight": w(HIDDEN, HIDDEN),
                    f"blk.{i}.ffn_norm.weight": (1 + rng.random(HIDDEN)).astype(np.float32),
                    f"blk.{i}.ffn_gate.weight": w(FFN, HIDDEN),
                    f"blk.{i}.ffn_up.weight": w(FFN, HIDDEN),
                    f"blk.{i}.ffn_down.weight": w(HIDDEN, FFN)})
    return out


def write_tiny_llama_gguf(path: Path, *, architecture: str = "llama", seed: int = 0) -> Path:
    """Write a two-layer Llama (GQA, tied embeddings) with a byte-level BPE tokenizer: the
    special tokens, the 256 byte symbols and two merges ("h e", "l l")."""
    from gguf import GGUFWriter

    tokens = SPECIALS + _byte_alphabet() + ["he", "ll"]
    writer = GGUFWriter(str(path), architecture)
    writer.add_name("tiny test llama")
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))
    writer.add_token_merges(["h e", "l l"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_chat_template(CHAT_TEMPLATE)
    for name, tensor in tiny_llama_tensors(seed).items():
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
