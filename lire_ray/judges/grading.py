"""Questions in, judgments out: single-answer grading (MT-Bench style) and pairwise verdicts.

Single mode: each question (FastChat's ``question.jsonl`` shape: ``question_id``, ``category``,
``turns`` [, ``reference``]) was answered turn by turn in one conversation; every turn is graded
1-10 with the earlier turns and answers in view (``templates.single``, or
``templates.single_reference`` when the question carries a reference answer for that turn).

Pairwise mode: the policy's answer and the human-written one are shown in both orders (policy
as A, then as B); :func:`lire_ray.judges.verdicts.pair_outcome` turns the two verdicts into a
win, tie or loss.

A judgment record (one line of ``judgments.jsonl``) has ``policy``, ``question_id``, ``turn``
(1-based), ``category``, ``score`` (single) or ``verdict`` (pairwise: win/tie/loss), ``valid``
(a usable verdict), ``failed`` (the judge gave no answer after its retries), ``error``, ``raw``
(the judge's text; pairwise: both orders) and ``cached``. Invalid and failed items are counted,
never turned into a score or a verdict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lire_ray.config.judge import JudgeConfig
from lire_ray.errors import DataError
from lire_ray.judges.client import Answer, JudgeClient, cache_key
from lire_ray.judges.templates import messages, transcript
from lire_ray.judges.verdicts import order_consistent, pair_outcome, parse_choice, parse_score

#: The eight MT-Bench categories, in the order radar plots draw them.
CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem",
              "humanities")


@dataclass(frozen=True)
class Question:
    """One multi-turn question.

    Attributes:
        question_id: Its id (an int or a string in the file; kept as text).
        category: Its category (e.g. one of :data:`CATEGORIES`).
        turns: The user's turns, in order.
        reference: Reference answers per turn, or None.
    """

    question_id: str
    category: str
    turns: tuple[str, ...]
    reference: tuple[str, ...] | None = None


def load_questions(path: str | Path) -> list[Question]:
    """Read a ``question.jsonl`` file.

    Raises:
        DataError: Missing file, a line that is not a JSON object, a missing or empty field,
            a repeated ``question_id`` (names the file, line and field).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such questions file", source=str(path))
    out, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as err:
            raise DataError(f"not JSON: {err}", source=str(path), row=n) from None
        if not isinstance(obj, dict):
            raise DataError("not a JSON object", source=str(path), row=n)
        qid, cat, turns = obj.get("question_id"), obj.get("category"), obj.get("turns")
        if not isinstance(qid, (int, str)) or isinstance(qid, bool) or str(qid) == "":
            raise DataError("missing or not an int/string", source=str(path), row=n,
                            field="question_id")
        if str(qid) in seen:
            raise DataError(f"question_id {qid} repeats an earlier line", source=str(path),
                            row=n, field="question_id")
        if not isinstance(cat, str) or not cat:
            raise DataError("missing or not a string", source=str(path), row=n, field="category")
        if not isinstance(turns, list) or not turns or \
                not all(isinstance(t, str) and t.strip() for t in turns):
            raise DataError("must be a non-empty list of non-empty strings", source=str(path),
                            row=n, field="turns")
        ref = obj.get("reference")
        if ref is not None and (not isinstance(ref, list)
                                or not all(isinstance(r, str) for r in ref)):
            raise DataError("must be a list of strings", source=str(path), row=n,
                            field="reference")
        seen.add(str(qid))
        out.append(Question(str(qid), cat, tuple(turns), tuple(ref) if ref else None))
    if not out:
        raise DataError("holds no questions", source=str(path))
    return out


def conversation(question: Question, answers: Sequence[str], turn: int) -> list[dict[str, str]]:
    """The chat turns the policy answers turn ``turn`` (0-based) from: every earlier user turn
    with the policy's own answer, then the new user turn."""
    msgs: list[dict[str, str]] = []
    for t in range(turn):
        msgs += [{"role": "user", "content": question.turns[t]},
                 {"role": "assistant", "content": answers[t]}]
    return msgs + [{"role": "user", "content": question.turns[turn]}]


def _single_request(cfg: JudgeConfig, q: Question, answers: Sequence[str], t: int):
    ref = q.reference[t] if q.reference and t < len(q.reference) and q.reference[t] else None
    name = "single_reference" if ref is not None else "single"
    template = getattr(cfg.templates, name)
    fields = {"question": q.turns[t], "answer": answers[t], "reference": ref or "",
              "conversation": transcript(list(zip(q.turns[:t], answers[:t])))}
    msgs = messages(cfg.templates.system, template, **fields)
    key = cache_key(str(cfg.model), cfg.templates.system + "\x00" + template,
                    {"turns": list(q.turns[:t + 1]), "reference": ref}, list(answers[:t + 1]))
    return key, msgs


def _base(policy: str, qid: str, turn: int, category: str, answer: Answer) -> dict:
    return {"policy": policy, "question_id": qid, "turn": turn, "category": category,
            "failed": answer.text is None, "error": answer.error, "cached": answer.cached}


def grade_single(client: JudgeClient, questions: Sequence[Question],
                 answers: Sequence[Sequence[str]], *, policy: str) -> list[dict]:
    """Grade every turn of every question.

    Args:
        client: The judge client.
        questions: Q questions.
        answers: [Q][turns] the policy's answers.
        policy: The policy's label in the records.

    Returns:
        One record per question turn (see the module docstring).
    """
    index = [(q, t) for q in questions for t in range(len(q.turns))]
    by_id = {q.question_id: a for q, a in zip(questions, answers)}
    requests = [_single_request(client.cfg, q, by_id[q.question_id], t) for q, t in index]
    records = []
    for (q, t), answer in zip(index, client.judge_all(requests)):
        score = parse_score(answer.text) if answer.text is not None else None
        records.append({**_base(policy, q.question_id, t + 1, q.category, answer),
                        "score": score, "valid": score is not None, "raw": answer.text})
    return records


@dataclass(frozen=True)
class PairItem:
    """One prompt with the policy's answer and the human-written one."""

    question_id: str
    category: str
    prompt: str
    policy_answer: str
    human_answer: str


def grade_pairwise(client: JudgeClient, items: Sequence[PairItem], *, policy: str) -> list[dict]:
    """Judge every pair in both orders (policy as A, then policy as B).

    Returns:
        One record per pair: ``verdict`` win/tie/loss for the policy (None when invalid or
        failed), ``choices`` (the raw A/B/C of each order), ``order_consistent``.
    """
    cfg = client.cfg
    template = cfg.templates.system + "\x00" + cfg.templates.pairwise
    requests = []
    for it in items:
        for a, b in ((it.policy_answer, it.human_answer), (it.human_answer, it.policy_answer)):
            requests.append((cache_key(str(cfg.model), template, it.prompt, [a, b]),
                             messages(cfg.templates.system, cfg.templates.pairwise,
                                      question=it.prompt, answer_a=a, answer_b=b)))
    answers = client.judge_all(requests)
    records = []
    for k, it in enumerate(items):
        first, second = answers[2 * k], answers[2 * k + 1]
        choices = [parse_choice(x.text) if x.text is not None else None for x in (first, second)]
        verdict = pair_outcome(*choices)
        failed = first.text is None or second.text is None
        records.append({
            "policy": policy, "question_id": it.question_id, "turn": 1,
            "category": it.category, "verdict": verdict, "valid": verdict is not None,
            "failed": failed, "error": first.error or second.error,
            "cached": first.cached and second.cached, "choices": choices,
            "order_consistent": order_consistent(*choices),
            "raw": [first.text, second.text]})
    return records


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def summarise_single(records: Sequence[dict]) -> dict:
    """Per-category and overall means of the valid grades, with counts.

    Returns:
        ``{"categories": {cat: {"mean", "valid", "invalid", "failed", "n"}}, "overall": {...},
        "turns": {turn: {...}}}``; the mean is NaN where no grade was valid.
    """
    def block(rs: Sequence[dict]) -> dict:
        scores = [r["score"] for r in rs if r["valid"]]
        return {"mean": _mean(scores), "n": len(rs), "valid": len(scores),
                "failed": sum(r["failed"] for r in rs),
                "invalid": sum(not r["valid"] and not r["failed"] for r in rs)}

    cats = [c for c in CATEGORIES if any(r["category"] == c for r in records)]
    cats += sorted({r["category"] for r in records} - set(cats))
    return {"categories": {c: block([r for r in records if r["category"] == c]) for c in cats},
            "turns": {str(t): block([r for r in records if r["turn"] == t])
                      for t in sorted({r["turn"] for r in records})},
            "overall": block(records)}


def summarise_pairwise(records: Sequence[dict]) -> dict:
    """Win / tie / loss shares over the valid pairs, the order-inconsistent share among them,
    and the invalid and failed shares over all pairs."""
    valid = [r for r in records if r["valid"]]
    n, v = len(records), len(valid)

    def share(k: int, of: int) -> float:
        return k / of if of else math.nan

    counts = {x: sum(r["verdict"] == x for r in valid) for x in ("win", "tie", "loss")}
    return {"pairs": n, "valid": v,
            **{x: share(c, v) for x, c in counts.items()},
            "counts": counts,
            "order_inconsistent": share(sum(r["order_consistent"] is False for r in valid), v),
            "invalid": share(sum(not r["valid"] and not r["failed"] for r in records), n),
            "failed": share(sum(r["failed"] for r in records), n)}
