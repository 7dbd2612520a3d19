"""A byte-level BPE tokenizer trained in milliseconds on a few local lines, for tests.

Byte-level, so every string encodes and decodes back exactly; ``<eos>`` and ``<pad>`` are
special tokens; ``chat=True`` adds a small Jinja chat template.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

CORPUS = [
    "Human: What is a cat? Assistant: A small furry animal.",
    "SUBREDDIT: r/pets TITLE: Cat problem POST: My cat knocks cups off the table. TL;DR:",
    "Write a haiku about rain. Rain falls soft, drops on the roof.",
    "the quick brown fox jumps over the lazy dog",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer(chat: bool = False) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    out = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    if chat:
        out.chat_template = CHAT_TEMPLATE
    return out
