"""Reward functions over plain text that need no model (``kind: python``).

``answer_f1`` scores a response by how much of the human-written reference answer it says: the
unigram F1 between the response's and the answer's lower-cased word multisets (SQuAD's answer
F1). It reads the reference from the pair metadata key ``answer`` (the chit-chat prompt set,
:mod:`lire_ray.adapters.chitchat`, puts it there). Unlike a sentiment lexicon it rewards
staying on the human's topic and length, and it is blind to tone.
"""

from __future__ import annotations

import re
from collections import Counter

from lire_ray.errors import DataError

_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """Lower-cased words (letters, digits, apostrophes) of ``text``."""
    return _WORD.findall(text.lower())


def unigram_f1(response: str, reference: str) -> float:
    """Unigram F1 of two texts' word multisets; 0 when either has no word."""
    a, b = Counter(words(response)), Counter(words(reference))
    common = sum((a & b).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(a.values()), common / sum(b.values())
    return 2 * precision * recall / (precision + recall)


def answer_f1(prompts: list[str], responses: list[str], *,
              metadata: list[dict] | None = None) -> list[float]:
    """Unigram F1 of each response with its pair's human reference answer.

    Args:
        prompts: The prompts (unused).
        responses: The responses to score.
        metadata: One dict per pair with the reference under ``answer``.

    Returns:
        One score in [0, 1] per response.

    Raises:
        DataError: A pair without an ``answer`` (names the prompt_id when known).
    """
    out = []
    for i, response in enumerate(responses):
        meta = (metadata or [{}] * len(responses))[i]
        if not isinstance(meta.get("answer"), str):
            raise DataError("answer_f1 needs the reference answer in the row metadata "
                            "('answer'), as builtin:chitchat rows have",
                            source=str(meta.get("prompt_id", f"pair {i}")), field="metadata.answer")
        out.append(unigram_f1(response, meta["answer"]))
    return out
