"""Real human conversations as a prompt set: the Chit Chat Challenge data (``chitchat-dataset``).

The package ships ``chitchat_dataset/dataset.json``: 7,168 two-person text chats, each
``{messages: [[{text, timestamp, sender}, ...], ...], ratings, prompt, start}`` where every
inner list is one speaker's consecutive messages (a *turn*) and consecutive turns alternate
speakers. 4,018 conversations have at least two turns; those give one example each.

One example per conversation:

- The *reply turn* ``t`` (1 <= t < number of turns) is picked from a hash of the conversation id,
  so examples cover openings as well as later turns, deterministically.
- Roles: the speaker of turn ``t`` is the **assistant** (the policy plays the person whose reply
  is the human-written reference), the other speaker is the **user**. Turns therefore alternate
  user/assistant and the context always starts with a user turn, as chat templates expect.
- Context (``prompt_messages``): the last 1 or 3 turns before ``t`` (:data:`MAX_CONTEXT_TURNS`,
  an odd count, so the first one is the user's); each turn's messages are joined with newlines
  and cut to :data:`MAX_TURN_CHARS` characters at a word boundary, so a prompt stays within a
  few hundred tokens (``model.max_prompt_tokens`` still left-truncates whatever is longer).
- Reference answer: turn ``t`` joined the same way (cut to :data:`MAX_TURN_CHARS`), one
  candidate of source ``human``; also in the row metadata as ``answer`` for reward functions
  that compare with it.
- Split by conversation: a conversation is held out when the first 8 hex digits of the sha256
  of its id are 0 mod 10 (about 10%), so no conversation is in both sets; rows are ordered by
  that hash, so the first N rows of a split are a fixed, topic-mixed sample.

``prompt`` holds the turns rendered HH-style (:func:`lire_ray.adapters.formats.render_messages`),
as the ``chat`` format does, for tokenizers without a chat template.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from lire_ray.adapters.formats import render_messages
from lire_ray.errors import DependencyError
from lire_ray.pool import HUMAN, PoolRow

PACKAGE = "chitchat-dataset==0.9.0"
SPLITS = ("train", "heldout")
#: Turns of context before the reply (odd: the context starts with the other speaker).
MAX_CONTEXT_TURNS = 3
#: Characters kept of one turn (its messages joined by newlines).
MAX_TURN_CHARS = 300
HELDOUT_BUCKETS = 10


def dataset_path() -> Path:
    """The installed ``chitchat_dataset/dataset.json``.

    Raises:
        DependencyError: The package is not installed (says the pip command).
    """
    spec = importlib.util.find_spec("chitchat_dataset")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / "dataset.json" if locations else None
    if path is None or not path.is_file():
        raise DependencyError(f"the chitchat prompt set needs the package {PACKAGE}: "
                              f"pip install {PACKAGE}")
    return path


@lru_cache(maxsize=1)
def conversations() -> dict[str, dict]:
    """The raw dataset, conversation id -> record (read once per process; 40 MB)."""
    return json.loads(dataset_path().read_text(encoding="utf-8"))


def conversation_hash(conversation_id: str) -> int:
    """A stable 32-bit hash of a conversation id (sha256, never Python's salted ``hash``)."""
    return int(hashlib.sha256(conversation_id.encode("utf-8")).hexdigest()[:8], 16)


def split_of(conversation_id: str) -> str:
    """``"heldout"`` or ``"train"`` for a conversation, from its id alone."""
    return "heldout" if conversation_hash(conversation_id) % HELDOUT_BUCKETS == 0 else "train"


def clip(text: str, limit: int = MAX_TURN_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, ``" ..."`` marking a cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[:limit - 4]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip() + " ..."


def turn_text(turn: list[dict]) -> str:
    """One speaker's consecutive messages joined by newlines and clipped."""
    return clip("\n".join(m["text"].strip() for m in turn if m["text"].strip()))


def example(conversation_id: str, record: dict) -> PoolRow | None:
    """The example of one conversation (see the module docstring), or None when it has fewer
    than two non-empty turns."""
    turns = [text for text in (turn_text(t) for t in record["messages"]) if text]
    if len(turns) < 2:
        return None
    reply = 1 + conversation_hash(conversation_id + "/turn") % (len(turns) - 1)
    k = min(reply, MAX_CONTEXT_TURNS)
    k -= 1 - k % 2  # odd: the first context turn is the other speaker's
    context = turns[reply - k:reply]
    messages = [{"role": "user" if (k - i) % 2 else "assistant", "content": text}
                for i, text in enumerate(context)]
    meta = {"answer": turns[reply], "conversation": conversation_id, "turn": reply,
            "topic": record.get("prompt"), "ratings": record.get("ratings") or None}
    return PoolRow(prompt_id=f"chitchat-{conversation_id}-{reply}",
                   prompt=render_messages(messages), responses=(turns[reply],),
                   sources=(HUMAN,), policy_version=(-1,), preferred=0,
                   prompt_messages=json.dumps(messages, ensure_ascii=False),
                   metadata=json.dumps(meta, ensure_ascii=False))


def prompt_rows(split: str, limit: int | None = None) -> list[PoolRow]:
    """The examples of one split, ordered by conversation hash.

    Args:
        split: ``"train"`` or ``"heldout"``.
        limit: Keep the first ``limit`` rows.

    Returns:
        Pool rows with one human candidate each (the reference reply).

    Raises:
        ValueError: Unknown split.
        DependencyError: The package is not installed.
    """
    if split not in SPLITS:
        raise ValueError(f"chitchat split must be one of {SPLITS}, not {split!r}")
    data = conversations()
    rows = []
    for cid in sorted((c for c in data if split_of(c) == split), key=lambda c: (conversation_hash(c), c)):
        row = example(cid, data[cid])
        if row is not None:
            rows.append(row)
            if limit and len(rows) >= limit:
                break
    return rows
