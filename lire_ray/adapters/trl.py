"""The ``trl`` input format: TRL's dataset types, standard or conversational, as pool rows.

Dataset types, detected from a record's non-null columns (TRL's names; ``--columns`` renames
others to these), and the pool rows they give:

- ``preference`` (prompt, chosen, rejected) and ``preference_implicit_prompt`` (chosen,
  rejected; the prompt is what the two share): K = 2, preferred = 0 (chosen);
- ``prompt_only`` (prompt): K = 0, preferred = -1 (self-enhancement samples the candidates);
- ``prompt_completion`` (prompt, completion): K = 1, preferred = 0;
- ``unpaired_preference`` (prompt, completion, label): one row per prompt (see below).

Standard values are strings; conversational ones are lists of ``{"role": "system" | "user" |
"assistant", "content": str}`` messages. A conversational prompt is kept as ``prompt_messages``
(JSON) and rendered HH-style as ``prompt`` (:func:`~lire_ray.adapters.formats.render_messages`);
a conversational completion, chosen or rejected is one assistant message, whose content is the
candidate. Every candidate comes from the dataset: source "human", policy version -1.

Implicit prompt: for standard text the prompt is the longest common prefix of chosen and
rejected, cut back to a word boundary when it ends inside a word, with one separating space
left to the answers (``"The sky is blue."`` / ``"The sky is green."`` give ``"The sky is"`` and
``" blue."`` / ``" green."``, as TRL's own extraction does); for conversations it is the turns
before the final assistant turn, which must be the same in both. A plain ``prompt`` string next
to conversational chosen/rejected (UltraFeedback binarized) is ignored the same way TRL ignores
it: the prompt turns come from the conversations.

Extra columns: ``score_chosen`` / ``score_rejected`` (``score_completion`` for completions) are
numeric rewards stored under the ``reward_name`` given (default "given"); ``prompt_id`` is the
row id (else the sha1 of the prompt text); every other column is kept in the row's ``metadata``
JSON object under its own name (e.g. a reference ``answer`` for verifiable tasks), except nulls
(a column this row lacks) and a ``messages`` column equal to the chosen conversation
(UltraFeedback binarized repeats it).
Unpaired preference rows are grouped by prompt: the completions become the candidates, their
labels go to ``metadata["labels"]`` (one bool per candidate) and ``preferred`` is the first
completion labelled true (-1 if none); an extra column that is constant within every prompt is
stored once, otherwise as a per-candidate list.

One input holds one type and one format: a record of another type (or a standard record among
conversational ones) stops the conversion with file, row and field named, whatever
``on_bad_row`` says. Language-modeling (``text`` / ``messages`` only) and stepwise-supervision
datasets have no candidates to rank and are refused (``--format chat`` reads ``messages``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping

from lire_ray.adapters.formats import render_messages
from lire_ray.adapters.records import BadRow, Fields, _tname, source_field
from lire_ray.errors import ConfigError, DataError
from lire_ray.pool import HUMAN, PoolRow

TRL_COLUMNS = ("prompt", "chosen", "rejected", "completion", "label")
TYPES: dict[str, tuple[str, ...]] = {
    "preference": ("prompt", "chosen", "rejected"),
    "preference_implicit_prompt": ("chosen", "rejected"),
    "prompt_only": ("prompt",),
    "prompt_completion": ("prompt", "completion"),
    "unpaired_preference": ("prompt", "completion", "label"),
}
_BY_COLUMNS = {cols: name for name, cols in TYPES.items()}
_ROLES = ("system", "user", "assistant")
LABELS_KEY = "labels"


class TrlParser:
    """Parse the records of one ``trl`` input; holds the type and format seen so far.

    Args:
        reward_name: Reward name for ``score_*`` columns.
        columns: The ``--columns`` renaming, so errors name fields as the input spells them.
    """

    def __init__(self, reward_name: str = "given", columns: Mapping[str, str] | None = None):
        if not reward_name:
            raise ConfigError("the reward name for score columns must not be empty")
        self.reward_name = reward_name
        self.columns = dict(columns or {})
        self.dataset_type: str | None = None
        self.conversational: bool | None = None
        self.prompt_ignored = False
        self._first = ""

    @property
    def details(self) -> dict:
        """What the manifest records about the input: its TRL type and format."""
        kind = self.dataset_type
        if self.prompt_ignored:
            kind = "preference_implicit_prompt"
        return {"dataset_type": kind, "conversational": self.conversational}

    def __call__(self, f: Fields) -> PoolRow:
        """Parse one record (a :class:`~lire_ray.adapters.formats.RecordParser`).

        Args:
            f: The record with its file and row.

        Returns:
            Its pool row (for unpaired preference one completion, grouped by :meth:`finish`).

        Raises:
            BadRow: The record is malformed.
            DataError: The record is of another type or format than the earlier ones, or the
                input is of an unsupported type.
        """
        kind = self._type(f)
        conv = self._format(f, kind)
        prompt, messages, candidates = _PARSE[kind](self, f, conv)
        rewards, used = self._scores(f, tuple(c for c in TYPES[kind]
                                              if c in ("chosen", "rejected", "completion")))
        extras = self._extras(f, used)
        preferred = -1 if kind == "prompt_only" else 0
        if kind == "unpaired_preference":
            label = f.record["label"]
            if not isinstance(label, bool):
                raise f.bad("wrong_type", f"expected boolean, got {_tname(label)}", "label")
            if LABELS_KEY in extras:
                raise f.bad("unexpected_field", "is where the labels of a prompt's completions "
                            "go; rename it with --columns", LABELS_KEY)
            preferred = 0 if label else -1
            extras = {LABELS_KEY: [label], **extras}
        k = len(candidates)
        return PoolRow(
            prompt_id=f.prompt_id(prompt), prompt=prompt, responses=tuple(candidates),
            sources=(HUMAN,) * k, policy_version=(-1,) * k, rewards=rewards,
            preferred=preferred, prompt_messages=messages,
            metadata=json.dumps(extras, ensure_ascii=False) if extras else None)

    # ---- type and format ---------------------------------------------------------------------

    def _type(self, f: Fields) -> str:
        rec = f.record
        present = tuple(c for c in TRL_COLUMNS if rec.get(c) is not None)
        if "completions" in rec and "labels" in rec:
            raise DataError("a stepwise-supervision record (completions, labels): its steps "
                            "are not alternative answers, so --format trl does not read this "
                            "type", source=f.source, row=f.row, field=f.name("completions"))
        if not present and ("messages" in rec or "text" in rec):
            raise DataError("a language-modeling record (text or messages only) has no prompt "
                            "to answer; use --format chat for messages, or --columns to name "
                            "the prompt column", source=f.source, row=f.row,
                            field=f.name("messages" if "messages" in rec else "text"))
        kind = _BY_COLUMNS.get(present)
        if kind is not None and self.dataset_type is None:
            self.dataset_type, self._first = kind, f"{f.source} row {f.row}"
        expected = self.dataset_type or kind or _guess(present)
        if kind == expected:
            return kind
        if kind is not None:
            extra = sorted(set(TYPES[kind]) ^ set(TYPES[expected]), key=TRL_COLUMNS.index)
            raise DataError(
                f"is a {kind} record ({', '.join(TYPES[kind])}) but the input's type is "
                f"{expected} ({', '.join(TYPES[expected])}, from {self._first}); --format trl "
                "reads one dataset type per input: split it by type", source=f.source,
                row=f.row, field=f.name(extra[0]))
        missing = [c for c in TYPES[expected] if c not in present]
        if missing:
            what = "is null" if missing[0] in rec else "missing field"
            raise f.bad("missing_field", f"{what} (a {expected} record has "
                        f"{', '.join(TYPES[expected])})", missing[0])
        extra = [c for c in present if c not in TYPES[expected]]
        raise f.bad("unexpected_field", f"a {expected} record ({', '.join(TYPES[expected])}) "
                    f"has no {extra[0]!r}", extra[0])

    def _format(self, f: Fields, kind: str) -> bool:
        key = "chosen" if kind.startswith("preference") else "prompt"
        value = f.record[key]
        if not isinstance(value, (str, list)):
            raise f.bad("wrong_type", f"expected string or list of messages, got "
                        f"{_tname(value)}", key)
        conv = isinstance(value, list)
        if self.conversational is None:
            self.conversational = conv
            self.prompt_ignored = kind == "preference" and conv and isinstance(
                f.record["prompt"], str)
        elif conv != self.conversational:
            want = "conversational" if self.conversational else "standard"
            raise DataError(f"is {'conversational' if conv else 'standard'} but the input's "
                            f"earlier records are {want} (from {self._first}); --format trl "
                            "reads one format per input", source=f.source, row=f.row,
                            field=f.name(key))
        return conv

    # ---- the types -----------------------------------------------------------------------------

    def _preference(self, f: Fields, conv: bool):
        if conv and isinstance(f.record["prompt"], str):
            return self._implicit(f, conv)  # UltraFeedback binarized: turns hold the prompt
        prompt, messages = _prompt(f, conv)
        return prompt, messages, [_answer(f, "chosen", conv), _answer(f, "rejected", conv)]

    def _implicit(self, f: Fields, conv: bool):
        if conv:
            chosen = _messages(f, "chosen")
            rejected = _messages(f, "rejected")
            return _split_turns(f, chosen, rejected)
        return _split_text(f, f.get("chosen", str), f.get("rejected", str))

    def _prompted(self, f: Fields, conv: bool):  # prompt-only, prompt-completion, unpaired
        prompt, messages = _prompt(f, conv)
        has_answer = f.record.get("completion") is not None
        return prompt, messages, [_answer(f, "completion", conv)] if has_answer else []

    # ---- extra columns -----------------------------------------------------------------------

    def _scores(self, f: Fields, cand_cols: tuple[str, ...]):
        names = [f"score_{c}" for c in cand_cols]
        given = [n for n in names if n in f.record]
        if not given:
            return {}, ()
        scores = []
        for name in names:
            if name not in f.record:
                raise f.bad("missing_field", f"missing field (the input has {given[0]!r})", name)
            value = f.check(f.record[name], float, name)
            if not math.isfinite(value):
                raise f.bad("non_finite_reward", f"reward is {value}", name)
            scores.append(float(value))
        return {self.reward_name: scores}, tuple(names)

    def _extras(self, f: Fields, used: tuple[str, ...]) -> dict:
        rec = f.record
        skip = {*TRL_COLUMNS, "prompt_id", *used}
        out = {}
        for key, value in rec.items():
            # A null is a column this record lacks (Parquet has every column in every row).
            if key in skip or value is None or (key == "messages" and value == rec.get("chosen")):
                continue
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise f.bad("wrong_type", f"cannot be kept in metadata: {exc}", key) from None
            out[key] = value
        return out

    # ---- unpaired preference: one row per prompt -------------------------------------------------

    def finish(self, items: list[tuple[str, int, PoolRow]], on_bad: Callable[[BadRow], None]
               ) -> list[tuple[str, int, PoolRow]]:
        """Group unpaired-preference rows by prompt (other types pass through).

        Args:
            items: (file, row, single-completion pool row) in input order.
            on_bad: Called with each :class:`BadRow` (a conflicting prompt_id or score set);
                raises or records it.

        Returns:
            (file, row of the first completion, grouped row) in order of first appearance.
        """
        if self.dataset_type != "unpaired_preference":
            return items
        groups: dict[tuple, list] = {}
        for src, row_no, row in items:
            members = groups.setdefault((row.prompt, row.prompt_messages), [])
            if members:
                first = members[0][2]
                if row.prompt_id != first.prompt_id:
                    on_bad(BadRow("conflicting_prompt_id", f"prompt_id {row.prompt_id!r} differs "
                                  f"from {first.prompt_id!r} of row {members[0][1]}, which has "
                                  "the same prompt", source=src, row=row_no,
                                  field=source_field("prompt_id", self.columns)))
                    continue
                if set(row.rewards) != set(first.rewards):
                    on_bad(BadRow("missing_field", "score_completion given for some completions "
                                  f"of this prompt but not others (see row {members[0][1]})",
                                  source=src, row=row_no,
                                  field=source_field("score_completion", self.columns)))
                    continue
            members.append((src, row_no, row))
        metas = {key: [row.meta for _, _, row in members] for key, members in groups.items()}
        columns = {k for ms in metas.values() for m in ms for k in m if k != LABELS_KEY}
        constant = {c for c in columns
                    if all(len({json.dumps(m.get(c), sort_keys=True) for m in ms}) == 1
                           for ms in metas.values())}
        out = []
        for key, members in groups.items():
            first = members[0][2]
            rows = [r for _, _, r in members]
            ms = metas[key]
            labels = [m[LABELS_KEY][0] for m in ms]
            meta = {LABELS_KEY: labels}
            for c in sorted(columns, key=lambda c: _first_seen(c, ms)):
                meta[c] = ms[0].get(c) if c in constant else [m.get(c) for m in ms]
            k = len(rows)
            out.append((members[0][0], members[0][1], PoolRow(
                prompt_id=first.prompt_id, prompt=first.prompt,
                responses=tuple(r.responses[0] for r in rows), sources=(HUMAN,) * k,
                policy_version=(-1,) * k,
                rewards={n: tuple(r.rewards[n][0] for r in rows) for n in first.rewards},
                preferred=labels.index(True) if True in labels else -1,
                prompt_messages=first.prompt_messages,
                metadata=json.dumps(meta, ensure_ascii=False))))
        return out


_PARSE = {"preference": TrlParser._preference,
          "preference_implicit_prompt": TrlParser._implicit,
          "prompt_only": TrlParser._prompted,
          "prompt_completion": TrlParser._prompted,
          "unpaired_preference": TrlParser._prompted}


def _first_seen(column: str, metas: list[dict]) -> int:
    return min((list(m).index(column) for m in metas if column in m), default=0)


def _guess(present: tuple[str, ...]) -> str:
    """The type a record with an invalid column set most likely meant (to name what is wrong)."""
    cols = set(present)
    if cols & {"chosen", "rejected"}:
        return "preference" if "prompt" in cols else "preference_implicit_prompt"
    if "label" in cols:
        return "unpaired_preference"
    return "prompt_completion" if "completion" in cols else "prompt_only"


def _messages(f: Fields, name: str) -> list[dict]:
    value = f.get(name, list)
    turns = []
    for j, m in enumerate(value):
        m = f.check(m, dict, f"{name}[{j}]")
        role = f.get("role", str, within=m, prefix=f"{name}[{j}].")
        if role not in _ROLES:
            raise f.bad("wrong_value", f"role {role!r} is not system, user or assistant",
                        f"{name}[{j}].role")
        turns.append({"role": role,
                      "content": f.get("content", str, within=m, prefix=f"{name}[{j}].")})
    if not turns:
        raise f.bad("empty_conversation", "has no messages", name)
    return turns


def _prompt(f: Fields, conv: bool) -> tuple[str, str | None]:
    if not conv:
        prompt = f.get("prompt", str)
        if not prompt.strip():
            raise f.bad("empty_prompt", "is empty", "prompt")
        return prompt, None
    turns = _messages(f, "prompt")
    return _rendered(f, turns, "prompt")


def _rendered(f: Fields, turns: list[dict], name: str) -> tuple[str, str]:
    if not any(t["role"] == "user" and t["content"].strip() for t in turns):
        raise f.bad("empty_prompt", "no non-empty user message in the prompt turns", name)
    return render_messages(turns), json.dumps(turns, ensure_ascii=False)


def _answer(f: Fields, name: str, conv: bool) -> str:
    if not conv:
        return f.get(name, str)
    turns = _messages(f, name)
    if len(turns) != 1 or turns[0]["role"] != "assistant":
        roles = ", ".join(t["role"] for t in turns)
        raise f.bad("wrong_value", f"expected one assistant message, got {len(turns)} "
                    f"({roles})", name)
    return turns[0]["content"]


def _split_turns(f: Fields, chosen: list[dict], rejected: list[dict]):
    """Conversational implicit prompt: shared turns, then one final assistant turn each."""
    for name, turns in (("chosen", chosen), ("rejected", rejected)):
        if turns[-1]["role"] != "assistant":
            raise f.bad("wrong_value", "the final turn must be the assistant's answer, got "
                        f"{turns[-1]['role']!r}", f"{name}[{len(turns) - 1}].role")
    prompt = chosen[:-1]
    if rejected[:-1] != prompt:
        at = next((j for j, (a, b) in enumerate(zip(chosen, rejected)) if a != b),
                  min(len(chosen), len(rejected)))
        shared = f"share only {at} leading turn(s)" if at else "have no leading turn in common"
        raise f.bad("implicit_prompt_mismatch", f"chosen and rejected {shared}: they must be "
                    "the same conversation up to one final assistant turn each",
                    f"rejected[{min(at, len(rejected) - 1)}]")
    if not prompt:
        raise f.bad("empty_prompt", "no prompt turns before the final assistant turn",
                    "chosen")
    text, messages = _rendered(f, prompt, "chosen")
    return text, messages, [chosen[-1]["content"], rejected[-1]["content"]]


def _split_text(f: Fields, chosen: str, rejected: str):
    """Standard implicit prompt: the common prefix, cut at a word boundary."""
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    if chosen == rejected:
        raise f.bad("identical_answers", "chosen and rejected are the same text, so no prompt "
                    "can be told from the answers", "rejected")
    nxt = [t[n] for t in (chosen, rejected) if n < len(t)]
    if n and chosen[n - 1].isalnum() and any(c.isalnum() for c in nxt):
        while n and chosen[n - 1].isalnum():  # inside a word: the whole word is the answer's
            n -= 1
    if n and chosen[n - 1] == " ":  # the separating space goes with the answers (as in TRL)
        n -= 1
    prompt = chosen[:n]
    if not prompt.strip():
        raise f.bad("no_common_prompt", "chosen and rejected share no prompt (they differ "
                    "from the first word)", "rejected")
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not text[n:].strip():
            raise f.bad("empty_completion", "nothing is left as its answer once the prompt "
                        "shared with the other text is removed", name)
    return prompt, None, [chosen[n:], rejected[n:]]
