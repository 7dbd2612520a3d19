"""The chit-chat prompt set: real human conversations split by conversation, the next human turn
as the reference answer, usable as a builtin set and through ``jobs/prepare.py``."""

from __future__ import annotations

import json

import pytest

from lire_ray.adapters import chitchat, prepare_pool
from lire_ray.errors import ConfigError
from lire_ray.inputs import load_prompt_rows
from lire_ray.pool import read_manifest, read_pool, table_to_rows


def _turn(sender: str, *texts: str) -> list[dict]:
    return [{"text": t, "timestamp": "2018-05-02T19:38:15Z", "sender": sender} for t in texts]


def test_an_example_gives_the_replying_speaker_the_assistant_role():
    # Five turns, A B A B A; whatever reply turn the hash picks, the reply's speaker is the
    # assistant, the context starts with the other speaker and alternates.
    record = {"messages": [_turn("A", "hi", "there"), _turn("B", "hello"), _turn("A", "how are you"),
                           _turn("B", "fine", "thanks"), _turn("A", "great")],
              "ratings": {"witty": 5}, "prompt": "topic"}
    texts = ["hi\nthere", "hello", "how are you", "fine\nthanks", "great"]
    for cid in (f"conv-{i}" for i in range(40)):
        row = chitchat.example(cid, record)
        meta = json.loads(row.metadata)
        reply = meta["turn"]
        assert 1 <= reply <= 4
        assert row.responses == (texts[reply],) and meta["answer"] == texts[reply]
        messages = json.loads(row.prompt_messages)
        assert len(messages) == (1 if reply < 3 else 3)
        assert [m["content"] for m in messages] == texts[reply - len(messages):reply]
        assert [m["role"] for m in messages] == ["user", "assistant", "user"][:len(messages)]
        assert row.sources == ("human",) and row.preferred == 0
        assert row.prompt.endswith("\n\nAssistant:") and row.prompt.startswith("\n\nHuman: ")
        assert chitchat.example(cid, record) == row  # deterministic
    assert chitchat.example("x", {"messages": [_turn("A", "alone")]}) is None


def test_long_turns_are_clipped_at_a_word_boundary():
    text = " ".join(["word"] * 200)
    clipped = chitchat.clip(text, 50)
    assert len(clipped) <= 50 and clipped.endswith(" ...")
    assert clipped[:-4].split() == ["word"] * len(clipped[:-4].split())
    assert chitchat.clip("short", 50) == "short"


def test_the_split_is_by_conversation_and_stable():
    # sha256-based: fixed values, not Python's per-process salted hash().
    assert chitchat.conversation_hash("abc") == int("ba7816bf", 16)
    train = load_prompt_rows("builtin:chitchat")
    heldout = load_prompt_rows("builtin:chitchat-heldout")
    conv = {name: {json.loads(r.metadata)["conversation"] for r in rows}
            for name, rows in (("train", train), ("heldout", heldout))}
    assert not conv["train"] & conv["heldout"]
    assert len(train) == len(conv["train"]) and len(heldout) == len(conv["heldout"])
    assert 0.07 < len(heldout) / (len(train) + len(heldout)) < 0.13
    assert all(chitchat.split_of(c) == "heldout" for c in conv["heldout"])
    assert [r.prompt_id for r in load_prompt_rows("builtin:chitchat-heldout", 5)] == \
        [r.prompt_id for r in heldout[:5]]


def test_prepare_writes_a_builtin_set_as_a_pool(tmp_path):
    out = tmp_path / "pool"
    report = prepare_pool("builtin", "builtin:chitchat-heldout", out, limit=12)
    assert report.num_rows == 12 and report.num_candidates == 12
    rows = table_to_rows(read_pool(out))
    assert rows == load_prompt_rows("builtin:chitchat-heldout", 12)
    assert read_manifest(out)["metadata"]["source_format"] == "builtin"
    with pytest.raises(ConfigError, match="--format builtin"):
        prepare_pool("hh", "builtin:chitchat", tmp_path / "other")
    with pytest.raises(ConfigError, match="builtin:chitchat-heldout"):
        prepare_pool("builtin", "builtin:nope", tmp_path / "other")
