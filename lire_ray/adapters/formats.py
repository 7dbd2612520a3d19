"""Per-format record parsers: each turns one raw record into one :class:`~lire_ray.pool.PoolRow`.

Formats (the record fields each one reads):

- ``hh``: Anthropic HH-RLHF ``{"chosen": str, "rejected": str}``, transcripts of
  ``"\\n\\nHuman: ..."`` / ``"\\n\\nAssistant: ..."`` turns. The prompt is the dialogue up to and
  including the final ``"\\n\\nAssistant:"``; the candidates are the two final replies with
  leading whitespace removed, sources ``["human", "human"]``, ``preferred = 0`` (chosen). The
  turns are also kept as ``prompt_messages`` (user/assistant) so tokenizers with a chat template
  can render them. A pair whose dialogues differ before the final reply is a bad row
  (``hh_prefix_mismatch``).
- ``tldr``: summarize-from-feedback comparisons ``{"info": {"id", "post", "title",
  "subreddit"}, "summaries": [{"text", "policy"?}, ...], "choice": int}``. Prompt
  ``"SUBREDDIT: r/{subreddit}\\nTITLE: {title}\\nPOST: {post}\\nTL;DR:"`` (rows with a null
  ``post`` and an ``article``, the CNN/DM part, use ``"TITLE: {title}\\nARTICLE: {article}\\n
  TL;DR:"``); candidates are the summary texts with leading whitespace removed; prompt_id is
  ``info.id``. The human judgement in this dataset is the label: the summary the labeller
  chose (``choice``, the row's ``preferred``) has source "human" and is the row's human
  reference (the answer win rates compare with, and the SFT target ``human``), as is a
  summary whose ``policy`` is ``"ref"`` (the poster's own TL;DR); the others are "dataset".
  Each summary's ``policy`` is kept in the row metadata (``policies``). Comparisons of the
  same post are merged by :func:`merge_tldr`.
- ``listwise``: ``{"prompt": str, "responses": [str, ...], "rewards"?: [float] | {name:
  [float]}, "sources"?: [str], "prompt_id"?: str, "preferred"?: int}``, any K >= 1. A rewards
  list is stored under the reward name "given"; sources default to "dataset".
- ``chat``: ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...],
  "responses"?: [str], "rewards"?, "prompt_id"?, "preferred"?}``. When the last message is from
  the assistant it is the human-written candidate (source "human") and the prompt is the
  messages before it; ``responses`` are further candidates for that turn (source "dataset").
  ``prompt`` holds the turns rendered HH-style (``"\\n\\nHuman: ..."``, ending in
  ``"\\n\\nAssistant:"``) and ``prompt_messages`` the turns as JSON.

Every format's ``prompt_id`` is the given one or the sha1 of the prompt text. The ``trl``
format (TRL's dataset types) is read by :mod:`lire_ray.adapters.trl`.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import partial
from typing import Protocol

from lire_ray.adapters.records import BadRow, Fields
from lire_ray.pool import DATASET, HUMAN, PoolRow, source_version

HUMAN_TAG = "\n\nHuman:"
ASSISTANT_TAG = "\n\nAssistant:"
_ROLE_TAGS = {"system": "\n\nSystem:", "user": HUMAN_TAG, "assistant": ASSISTANT_TAG}


class RecordParser(Protocol):
    """What every ``parse_<format>`` function of :data:`PARSERS` is."""

    def __call__(self, f: Fields) -> PoolRow:
        """Parse one raw record of the format (layouts in the module docstring).

        Args:
            f: The record with its source and row number.

        Returns:
            One pool row.

        Raises:
            BadRow: The record is malformed (names the field and reason).
        """


def render_messages(messages: list[dict]) -> str:
    """Render chat turns as an HH-style prompt.

    Args:
        messages: ``{"role": "system"|"user"|"assistant", "content": str}`` turns.

    Returns:
        ``"\\n\\n{System|Human|Assistant}: {content}"`` per turn, then ``"\\n\\nAssistant:"``.
    """
    return "".join(f"{_ROLE_TAGS[m['role']]} {m['content']}" for m in messages) + ASSISTANT_TAG


def hh_messages(prompt: str) -> list[dict] | None:
    """Split an HH prompt into chat turns.

    Args:
        prompt: HH dialogue text ending in the final ``"\\n\\nAssistant:"``.

    Returns:
        Alternating user/assistant turns (stripped), or None when the text does not start
        with a Human turn or does not end on one.
    """
    body = prompt[: -len(ASSISTANT_TAG)]
    if not body.startswith(HUMAN_TAG):
        return None
    turns, role, rest = [], "user", body[len(HUMAN_TAG):]
    while True:
        tag = ASSISTANT_TAG if role == "user" else HUMAN_TAG
        cut = rest.find(tag)
        turns.append({"role": role, "content": (rest if cut < 0 else rest[:cut]).strip()})
        if cut < 0:
            return turns if role == "user" else None
        role, rest = ("assistant" if role == "user" else "user"), rest[cut + len(tag):]


def parse_hh(f: Fields) -> PoolRow:
    """Parse an ``hh`` record; a :class:`RecordParser`."""
    chosen, rejected = f.get("chosen", str), f.get("rejected", str)
    split = []
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        cut = text.rfind(ASSISTANT_TAG)
        if cut < 0:
            raise f.bad("missing_turn", "no '\\n\\nAssistant:' turn", name)
        split.append((text[: cut + len(ASSISTANT_TAG)], text[cut + len(ASSISTANT_TAG):].lstrip()))
    (prompt, reply_c), (prompt_r, reply_r) = split
    if prompt != prompt_r:
        at = next((i for i, (a, b) in enumerate(zip(prompt, prompt_r, strict=False))
                   if a != b), min(len(prompt), len(prompt_r)))
        raise f.bad("hh_prefix_mismatch", "chosen and rejected dialogues differ before the "
                    f"final reply (first difference at character {at})", "rejected")
    if HUMAN_TAG not in prompt:
        raise f.bad("empty_prompt", "dialogue has no '\\n\\nHuman:' turn", "chosen")
    messages = hh_messages(prompt)
    return PoolRow(
        prompt_id=f.prompt_id(prompt), prompt=prompt, responses=(reply_c, reply_r),
        sources=(HUMAN, HUMAN), policy_version=(-1, -1), preferred=0,
        prompt_messages=None if messages is None else json.dumps(messages, ensure_ascii=False))


def parse_tldr(f: Fields) -> PoolRow:
    """Parse one ``tldr`` comparison into a row of its summaries; a :class:`RecordParser`."""
    info = f.get("info", dict)
    info_field = partial(f.get, within=info, prefix="info.")
    pid = str(info_field("id", (str, int)))
    if not pid:
        raise f.bad("empty_prompt_id", "is empty", "info.id")
    post = info_field("post", str, optional=True)
    if post is None and info.get("article") is not None:
        article = info_field("article", str)
        title = info_field("title", str, optional=True) or ""
        prompt = f"TITLE: {title}\nARTICLE: {article}\nTL;DR:"
    else:
        if post is None:
            raise f.bad("missing_field", "missing field", "info.post")
        title = info_field("title", str)
        sub = info_field("subreddit", str)
        prompt = f"SUBREDDIT: r/{sub}\nTITLE: {title}\nPOST: {post}\nTL;DR:"
    if post is not None and not post.strip():
        raise f.bad("empty_prompt", "is empty", "info.post")
    summaries = f.get("summaries", list)
    if not summaries:
        raise f.bad("no_candidates", "no summaries (K = 0)", "summaries")
    texts, policies = [], []
    for j, s in enumerate(summaries):
        s = f.check(s, dict, f"summaries[{j}]")
        texts.append(f.get("text", str, within=s, prefix=f"summaries[{j}].").lstrip())
        policy = s.get("policy")
        policies.append(policy if isinstance(policy, str) else None)
    choice = f.get("choice", int)
    if not 0 <= choice < len(texts):
        raise f.bad("out_of_range", f"{choice} is not an index below {len(texts)}", "choice")
    return PoolRow(prompt_id=pid, prompt=prompt, responses=tuple(texts),
                   sources=_tldr_sources(policies, choice), policy_version=(-1,) * len(texts),
                   preferred=choice, metadata=json.dumps({"policies": policies}))


def _tldr_sources(policies: list[str | None], preferred: int) -> tuple[str, ...]:
    """Sources of TL;DR summaries: the labelled-preferred one and the poster's own are human."""
    return tuple(HUMAN if p == "ref" or j == preferred else DATASET
                 for j, p in enumerate(policies))


def merge_tldr(items: list[tuple[str, int, PoolRow]], on_bad
               ) -> list[tuple[str, int, PoolRow]]:
    """Merge comparison rows about the same post into one row per ``prompt_id``.

    Candidates are the union of distinct summary texts in order of first appearance. The
    merged ``preferred`` is the summary chosen in the most comparisons; ties go to the earliest
    candidate. It becomes the row's human reference (source "human"); summaries chosen only in
    other comparisons go back to "dataset" unless the poster wrote them (``policy`` "ref"). A later row with the same id but a different prompt is a bad row
    (``conflicting_prompt``) passed to ``on_bad``.

    Args:
        items: (file, row number, single-comparison row) in input order.
        on_bad: Called with each :class:`BadRow`; raises or records it.

    Returns:
        (file, row number of the first comparison, merged row) in order of first appearance.
    """
    groups: dict[str, dict] = {}
    for src, row_no, row in items:
        g = groups.get(row.prompt_id)
        if g is None:
            g = {"src": src, "row": row_no, "first": row, "texts": {}, "wins": Counter()}
            groups[row.prompt_id] = g
        elif row.prompt != g["first"].prompt:
            where = f"row {g['row']}" + ("" if g["src"] == src else f" of {g['src']}")
            on_bad(BadRow("conflicting_prompt", f"prompt differs from {where}, which has the "
                          "same info.id", source=src, row=row_no,
                          field="info.post"))
            continue
        for text, policy in zip(row.responses, row.meta.get("policies") or
                                [None] * row.num_candidates, strict=True):
            if g["texts"].get(text) is None:
                g["texts"][text] = policy
        g["wins"][row.responses[row.preferred]] += 1
    out = []
    for g in groups.values():
        texts, policies = list(g["texts"]), list(g["texts"].values())
        best = max(g["wins"].values())
        preferred = next(j for j, t in enumerate(texts) if g["wins"][t] == best)
        first = g["first"]
        out.append((g["src"], g["row"], PoolRow(
            prompt_id=first.prompt_id, prompt=first.prompt, responses=tuple(texts),
            sources=_tldr_sources(policies, preferred), policy_version=(-1,) * len(texts),
            preferred=preferred, metadata=json.dumps({"policies": policies}))))
    return out


def parse_listwise(f: Fields) -> PoolRow:
    """Parse a ``listwise`` record; a :class:`RecordParser`."""
    prompt = f.get("prompt", str)
    if not prompt.strip():
        raise f.bad("empty_prompt", "is empty", "prompt")
    responses = f.text_list("responses")
    return _candidates_row(f, prompt, responses, f.text_list("sources", optional=True), None)


def parse_chat(f: Fields) -> PoolRow:
    """Parse a ``chat`` record; a :class:`RecordParser`."""
    messages = f.get("messages", list)
    turns = []
    for j, m in enumerate(messages):
        m = f.check(m, dict, f"messages[{j}]")
        role = f.get("role", str, within=m, prefix=f"messages[{j}].")
        if role not in _ROLE_TAGS:
            raise f.bad("wrong_value", f"role {role!r} is not system, user or assistant",
                        f"messages[{j}].role")
        turns.append({"role": role,
                      "content": f.get("content", str, within=m, prefix=f"messages[{j}].")})
    human = []
    if turns and turns[-1]["role"] == "assistant":
        human = [turns.pop()["content"]]
    if not any(t["role"] == "user" and t["content"].strip() for t in turns):
        raise f.bad("empty_prompt", "no non-empty user message before the final reply",
                    "messages")
    extra = f.text_list("responses", optional=True) or []
    sources = [HUMAN] * len(human) + [DATASET] * len(extra)
    row = _candidates_row(f, render_messages(turns), human + extra, sources,
                          json.dumps(turns, ensure_ascii=False), field="messages")
    return row


def _candidates_row(f: Fields, prompt: str, responses: list[str], sources: list[str] | None,
                    messages: str | None, field: str = "responses") -> PoolRow:
    k = len(responses)
    if k == 0:
        raise f.bad("no_candidates", "no candidate responses (K = 0)", field)
    if sources is None:
        sources = [DATASET] * k
    elif len(sources) != k:
        raise f.bad("wrong_length", f"{len(sources)} sources for {k} responses", "sources")
    return PoolRow(
        prompt_id=f.prompt_id(prompt), prompt=prompt, responses=tuple(responses),
        sources=tuple(sources), policy_version=tuple(source_version(s) for s in sources),
        rewards=f.rewards(k), preferred=f.preferred(k), prompt_messages=messages)


PARSERS: dict[str, RecordParser] = {"hh": parse_hh, "tldr": parse_tldr, "listwise": parse_listwise,
                                     "chat": parse_chat}
