"""Tiny models built locally: a byte-level BPE tokenizer and small Llama policies and reward models.

Nothing can be downloaded on a CI box, so tests and the embedded default task build their own
models: a tokenizer trained on local text and a small randomly initialised Llama, saved in
Hugging Face format (safetensors) so every loading path (transformers, peft, vLLM) treats it like
a hub model.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from lire_ray.atomic import atomic_dir
from lire_ray.errors import ConfigError
from lire_ray.models import load_tokenizer


def _save_dir(out_dir: Path, save: Any, overwrite: bool) -> Path:
    """Run ``save(tmp_dir)`` in a temporary sibling, then swap it into ``out_dir``."""
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError(f"model directory '{out_dir}' already exists and is not empty; "
                          "pass overwrite=True to replace it")
    return atomic_dir(out_dir, save)


# vLLM's CPU attention accepts head_dim 64 (it rejects 16), so tiny models keep 64.
TINY_HEAD_DIM = 64
BOS, EOS, PAD, UNK = "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_SUBJECTS = ["the movie", "this book", "the food", "our trip", "the service", "the weather",
             "my day", "the song", "the game", "the hotel", "the class", "the city"]
_VERBS = ["was", "is", "felt", "seemed", "looked", "sounded"]
_ADJECTIVES = ["great", "good", "wonderful", "lovely", "happy", "fine", "bad", "terrible",
               "awful", "sad", "boring", "okay", "amazing", "poor", "nice", "dull"]
_TAILS = ["and I liked it.", "but I would not go again.", "so we stayed home.",
          "and everyone smiled.", "because it rained.", "so I told my friends.",
          "and the staff were kind.", "but the price was high."]
_QUESTIONS = ["How was your day?", "What do you think of the movie?", "Tell me about the food.",
              "Write a short review.", "Can you describe the trip?", "Why was it good?"]


def default_corpus(num_lines: int = 2000) -> list[str]:
    """A small English corpus generated in code (reviews, questions, chat turns).

    The text is fixed (its generator has its own seed) so that every tiny tokenizer built from
    it is identical whatever the model seed.

    Args:
        num_lines: Number of lines to generate.

    Returns:
        The lines.
    """
    rng = random.Random(20240611)
    lines = []
    for _ in range(num_lines):
        kind = rng.random()
        sentence = (f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} "
                    f"{rng.choice(_ADJECTIVES)} {rng.choice(_TAILS)}")
        if kind < 0.6:
            lines.append(sentence)
        elif kind < 0.85:
            lines.append(f"{rng.choice(_QUESTIONS)} {sentence}")
        else:
            lines.append(f"<|user|>\n{rng.choice(_QUESTIONS)}\n<|assistant|>\n{sentence}")
    return lines


def _train_tokenizer(corpus: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   pad_token=PAD, unk_token=UNK)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _check_heads(hidden_size: int, num_heads: int) -> None:
    if num_heads <= 0 or hidden_size != num_heads * TINY_HEAD_DIM:
        raise ConfigError(
            f"tiny model: hidden_size ({hidden_size}) must equal num_heads ({num_heads}) x "
            f"{TINY_HEAD_DIM}, because vLLM's CPU attention only accepts head_dim {TINY_HEAD_DIM}")


def _llama_config(tokenizer, *, vocab_size: int, hidden_size: int, num_layers: int,
                  num_heads: int, **extra):
    from transformers import LlamaConfig

    _check_heads(hidden_size, num_heads)
    return LlamaConfig(
        # Embedding rows beyond the tokenizer are allowed (real models pad their vocab too);
        # this lets tests ask for a large V from a small corpus.
        vocab_size=max(vocab_size, len(tokenizer)),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        head_dim=TINY_HEAD_DIM,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def build_tiny_policy(out_dir: str | os.PathLike, *, corpus: list[str] | None = None,
                      vocab_size: int = 512, hidden_size: int = 128, num_layers: int = 2,
                      num_heads: int = 2, seed: int = 0, overwrite: bool = False) -> Path:
    """Build a tiny random Llama policy and its BPE tokenizer in Hugging Face format.

    The tokenizer is a byte-level BPE trained on ``corpus`` (or :func:`default_corpus`), with
    bos/eos/pad/unk special tokens and a chat template (``<|role|>\\ncontent<|eos|>``). Output
    is identical for identical arguments.

    Args:
        out_dir: Directory to create; written via a temp dir and a rename.
        corpus: Local text lines to train the tokenizer on.
        vocab_size: Target BPE vocabulary; the model's embedding has
            ``max(vocab_size, len(tokenizer))`` rows.
        hidden_size: Model width; must equal ``num_heads * 64``.
        num_layers: Decoder layers.
        num_heads: Attention heads (head_dim is 64).
        seed: Seed of the weight initialisation.
        overwrite: Replace ``out_dir`` if it already holds files.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ConfigError: Head layout other than head_dim 64, or ``out_dir`` not empty without
            ``overwrite``.
    """
    import torch
    from transformers import LlamaForCausalLM

    _check_heads(hidden_size, num_heads)
    tokenizer = _train_tokenizer(list(corpus) if corpus is not None else default_corpus(),
                                 vocab_size)
    config = _llama_config(tokenizer, vocab_size=vocab_size, hidden_size=hidden_size,
                           num_layers=num_layers, num_heads=num_heads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return _save_dir(Path(out_dir), save, overwrite)


def build_tiny_reward_model(out_dir: str | os.PathLike, *, tokenizer_dir: str | os.PathLike,
                            hidden_size: int = 128, num_layers: int = 2, num_heads: int = 2,
                            seed: int = 0, overwrite: bool = False) -> Path:
    """Build a tiny random Llama reward model (one scalar head) sharing a tokenizer.

    Args:
        out_dir: Directory to create; written via a temp dir and a rename.
        tokenizer_dir: Directory (or hub id) of the tokenizer to share, e.g. a tiny policy's.
        hidden_size: Model width; must equal ``num_heads * 64``.
        num_layers: Decoder layers.
        num_heads: Attention heads (head_dim is 64).
        seed: Seed of the weight initialisation.
        overwrite: Replace ``out_dir`` if it already holds files.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ConfigError: Bad head layout or non-empty ``out_dir`` without ``overwrite``.
        ModelLoadError: The tokenizer cannot be loaded.
    """
    import torch
    from transformers import LlamaForSequenceClassification

    tokenizer = load_tokenizer(tokenizer_dir)
    config = _llama_config(tokenizer, vocab_size=len(tokenizer), hidden_size=hidden_size,
                           num_layers=num_layers, num_heads=num_heads, num_labels=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForSequenceClassification(config)

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return _save_dir(Path(out_dir), save, overwrite)


def build_tiny_encoder(out_dir: str | os.PathLike, *, corpus: list[str] | None = None,
                       vocab_size: int = 400, hidden_size: int = 64, num_layers: int = 2,
                       num_heads: int = 2, seed: int = 0, overwrite: bool = False) -> Path:
    """Build a tiny random BERT encoder (no task head) and its WordPiece tokenizer.

    The stand-in for a sentence encoder such as all-MiniLM-L6-v2 in reward-model tests: the
    tokenizer lower-cases, adds ``[CLS] ... [SEP]`` (and ``[CLS] a [SEP] b [SEP]`` for text
    pairs, with token type ids), and ``AutoModelForSequenceClassification`` puts a new head on
    the saved ``BertModel``.

    Args:
        out_dir: Directory to create; written via a temp dir and a rename.
        corpus: Local text lines to train the tokenizer on (default :func:`default_corpus`).
        vocab_size: Target WordPiece vocabulary.
        hidden_size: Model width.
        num_layers: Encoder layers.
        num_heads: Attention heads.
        seed: Seed of the weight initialisation.
        overwrite: Replace ``out_dir`` if it already holds files.

    Returns:
        ``out_dir`` as a Path.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import trainers as tk_trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(list(corpus) if corpus is not None else default_corpus(),
                            trainer=tk_trainers.WordPieceTrainer(
                                vocab_size=vocab_size, special_tokens=special,
                                show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]",
                                        unk_token="[UNK]", cls_token="[CLS]",
                                        sep_token="[SEP]", mask_token="[MASK]",
                                        model_input_names=["input_ids", "token_type_ids",
                                                           "attention_mask"])
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size,
                        num_hidden_layers=num_layers, num_attention_heads=num_heads,
                        intermediate_size=2 * hidden_size, max_position_embeddings=512,
                        pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return _save_dir(Path(out_dir), save, overwrite)
