"""LLM-judge evaluation (``jobs/judge.py``): MT-Bench-style grades and win rates against the
human-written answers (paper Fig. 2 and 3).

:func:`run_judging`:

1. checks the recipe's ``judge`` section and reads the questions (``mode=single``) or the
   prompts with human-written answers (``mode=pairwise``), before Ray starts; an OpenAI-
   compatible judge is asked one short question first, so a judge that is down ends the job
   with a short error naming it and its URL before any answer is generated;
2. starts a sampler on the first policy (the role group's vLLM actor, the samplers of every
   other job) and generates the answers of each policy in turn (later ones served with
   :meth:`~lire_ray.runtime.RoleGroup.serve`): greedy, a question's turns in one conversation,
   rendered with the policy's chat template (``data.chat_template``), earlier turns and the
   policy's own answers in context; then stops it;
3. grades every answer with the judge (an OpenAI-compatible server, or ``backend: vllm``: a
   judge actor in the cluster), through the client's disk cache;
4. writes ``judgments.jsonl``, ``report.md`` (tables, radar plot) and ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from lire_ray.atomic import atomic_write_text
from lire_ray.config import Recipe
from lire_ray.errors import ConfigError, DataError
from lire_ray.inputs import load_prompt_rows, resolve_policy
from lire_ray.judges import (
    JudgeCache,
    JudgeClient,
    OpenAITransport,
    PairItem,
    Question,
    conversation,
    grade_pairwise,
    grade_single,
    load_questions,
    write_judge_report,
)
from lire_ray.pool import PoolRow
from lire_ray.rundir import prepare_output
from lire_ray.runtime import RoleGroup, connect, disconnect, namespace_for
from lire_ray.training.result import policy_in

log = logging.getLogger(__name__)

MODES = ("single", "pairwise")
#: What the job writes into its output directory (cleared by ``--overwrite``).
OWNED = ("report.md", "metrics.json", "judgments.jsonl", "plots", ".state")
BASE = "base"


def check_judge(recipe: Recipe) -> None:
    """Fail before anything starts when the recipe's judge cannot run.

    Raises:
        ConfigError: No ``judge`` section, or one without its model or URL.
    """
    judge = recipe.judge
    if judge is None:
        raise ConfigError("the recipe has no judge section (judge: {backend, model, "
                          "base_url, ...}); set it in the recipe or with judge.model=... "
                          "judge.base_url=...")
    if not judge.model:
        raise ConfigError("judge.model is not set (the served model name, or for backend "
                          "vllm the judge model's hub id or directory)")
    if judge.backend == "openai" and not judge.base_url:
        raise ConfigError("judge.base_url is not set (e.g. http://127.0.0.1:8000/v1)")


def judge_cache(recipe: Recipe) -> JudgeCache:
    """The judgment cache: ``judge.cache_dir``, default ``<run.dir>/judge-cache``."""
    assert recipe.judge is not None
    return JudgeCache(recipe.judge.cache_dir or Path(recipe.run.dir) / "judge-cache")


def _plain(msgs: Sequence[dict[str, str]]) -> str:
    # Used only when no chat template applies (data.chat_template=never, or no template).
    names = {"user": "User", "assistant": "Assistant"}
    return "".join(f"{names[m['role']]}: {m['content']}\n" for m in msgs) + "Assistant:"


def answer_questions(roles: RoleGroup, recipe: Recipe,
                     questions: Sequence[Question]) -> list[list[str]]:
    """The served policy's greedy answers to every turn, one conversation per question.

    Returns:
        [Q][turns] answer texts.
    """
    answers: list[list[str]] = [[] for _ in questions]
    for t in range(max(len(q.turns) for q in questions)):
        todo = [i for i, q in enumerate(questions) if t < len(q.turns)]
        rows = []
        for i in todo:
            msgs = conversation(questions[i], answers[i], t)
            rows.append(PoolRow(prompt_id=f"{questions[i].question_id}/{t + 1}",
                                prompt=_plain(msgs), responses=(), sources=(),
                                policy_version=(), prompt_messages=json.dumps(msgs)))
        samples = roles.map("sampler", "sample_rows", rows, n=1, temperature=0.0, top_p=1.0,
                            seed=recipe.sampler.seed)
        for i, s in zip(todo, samples, strict=True):
            answers[i].append(s.candidates[0].text)
    return answers


def answer_prompts(roles: RoleGroup, recipe: Recipe, rows: Sequence[PoolRow]) -> list[str]:
    """The served policy's greedy answer to every prompt row."""
    samples = roles.map("sampler", "sample_rows", rows, n=1, temperature=0.0, top_p=1.0,
                        seed=recipe.sampler.seed)
    return [s.candidates[0].text for s in samples]


def _pair_rows(spec: str, limit: int | None) -> list[PoolRow]:
    rows = [r for r in load_prompt_rows(spec, limit) if r.human_reference is not None]
    if not rows:
        raise DataError("no prompt has a human-written answer to compare with", source=spec)
    return rows


def run_judging(recipe: Recipe, *, mode: str, policies: Sequence[str], out_dir: Path,
                questions: str | None = None, data: str | None = None,
                overwrite: bool = False) -> Path:
    """Generate each policy's answers and have the recipe's judge grade them.

    Args:
        recipe: The recipe (``judge``, ``model``, ``sampler``, ``data``, ``resources``, ``ray``).
        mode: ``"single"`` (grade 1-10 per question turn) or ``"pairwise"`` (against the
            human-written answers).
        policies: Policies to compare: ``"base"`` (the recipe's ``model.policy``) or
            checkpoint / model directories of the recipe's architecture.
        out_dir: Output directory.
        questions: ``mode=single``: a ``question.jsonl`` file.
        data: ``mode=pairwise``: a pool directory (or builtin set) whose rows carry
            human-written answers; ``data.eval_prompts`` limits the rows.
        overwrite: Replace the results of an earlier run in ``out_dir``.

    Returns:
        The path of ``report.md``.

    Raises:
        ConfigError, DataError, RunDirError: Bad recipe, inputs or output directory.
        JudgeUnavailable: The judge answers no request.
    """
    t0 = time.time()
    if mode not in MODES:
        raise ConfigError(f"mode={mode}: choose one of {', '.join(MODES)}")
    check_judge(recipe)
    judge = recipe.judge
    assert judge is not None
    if mode == "single" and not questions:
        raise ConfigError("mode=single needs questions=FILE (question.jsonl)")
    if mode == "pairwise" and not data:
        raise ConfigError("mode=pairwise needs data=POOL (prompts with human-written answers)")
    qs = load_questions(questions) if mode == "single" and questions else []
    rows = _pair_rows(data, recipe.data.eval_prompts) if mode == "pairwise" and data else []
    transport = OpenAITransport(judge) if judge.backend == "openai" else None
    client = JudgeClient(judge, transport, judge_cache(recipe)) if transport else None
    if client is not None:
        client.check()
    base = resolve_policy(recipe)
    targets = [(p, None if p == BASE else policy_in(p, base=base)) for p in policies]
    out = prepare_output(out_dir, overwrite=overwrite, owned=OWNED)
    handle = connect(recipe.ray)
    stop_judge = None
    try:
        answers: dict[str, list] = {}
        with RoleGroup(recipe, namespace=namespace_for(recipe.ray.namespace, "judge", out),
                       policy=base, state_dir=out / ".state") as roles:
            for version, (label, target) in enumerate(targets):
                if target is not None:
                    roles.serve(target, version + 1)
                log.info("answering with %s", label)
                answers[label] = (answer_questions(roles, recipe, qs) if mode == "single"
                                  else answer_prompts(roles, recipe, rows))
        if client is None:
            from lire_ray.runtime.judge import VllmJudgeTransport

            vllm = VllmJudgeTransport(judge, namespace=namespace_for(
                recipe.ray.namespace, "judge-model", out))
            stop_judge = vllm.stop
            client = JudgeClient(judge, vllm, judge_cache(recipe))
        records = {label: _grade(client, mode, qs, rows, answers[label], label)
                   for label, _ in targets}
    finally:
        if stop_judge is not None:
            stop_judge()
        disconnect(handle)
    meta = {"judge": client.label, "questions": questions, "data": data,
            "policies": list(policies), "base_policy": base,
            "templates": judge.templates.model_dump()}
    return write_judge_report(out, mode=mode, meta=meta, records=records, stats=client.stats,
                              wall_s=time.time() - t0)


def _grade(client: JudgeClient, mode: str, qs: Sequence[Question], rows: Sequence[PoolRow],
           answers: list, label: str) -> list[dict]:
    if mode == "single":
        records = grade_single(client, qs, answers, policy=label)
        by_id = {q.question_id: a for q, a in zip(qs, answers)}
        for r in records:
            r["answer"] = by_id[r["question_id"]][r["turn"] - 1]
        return records
    items = [PairItem(r.prompt_id, str(r.meta.get("category", "all")), r.prompt, a,
                      r.human_reference or "") for r, a in zip(rows, answers)]
    records = grade_pairwise(client, items, policy=label)
    for r, it in zip(records, items):
        r["answer"], r["human_answer"] = it.policy_answer, it.human_answer
    return records


def preflight(recipe: Recipe) -> None:
    """Ask an OpenAI-compatible judge one short question (nothing for the in-cluster judge,
    which starts later), so a study that adds judge columns fails before it trains.

    Raises:
        ConfigError: An incomplete ``judge`` section.
        JudgeUnavailable: The judge does not answer.
    """
    check_judge(recipe)
    assert recipe.judge is not None
    if recipe.judge.backend == "openai":
        JudgeClient(recipe.judge, OpenAITransport(recipe.judge), None).check()


def judge_columns(recipe: Recipe, rows: Sequence[PoolRow], answers: dict[str, list[str]], *,
                  namespace: str, out: Path) -> dict:
    """Pairwise judge verdicts against the human-written answers for several policies' answers
    to the same held-out prompts (the comparison's judge columns). Call with Ray connected
    when ``judge.backend`` is vllm.

    Args:
        recipe: The recipe with a ``judge`` section.
        rows: The P held-out prompt rows.
        answers: ``{label: [P] answers}`` (e.g. each policy's greedy response).
        namespace: Ray namespace of the in-cluster judge.
        out: The study's directory; the judgments are written to ``llm_judge.jsonl`` there.

    Returns:
        ``{"judge": label, "summary": {label: pairwise summary}, "requests": counters}``;
        or ``{"judge": label, "error": message}`` when the judge answered nothing, so a study
        that trained for hours still writes its report.
    """
    from lire_ray.judges import JudgeUnavailable, summarise_pairwise

    judge = recipe.judge
    assert judge is not None
    keep = [i for i, r in enumerate(rows) if r.human_reference is not None]
    stop = None
    try:
        if judge.backend == "openai":
            client = JudgeClient(judge, OpenAITransport(judge), judge_cache(recipe))
        else:
            from lire_ray.runtime.judge import VllmJudgeTransport

            vllm = VllmJudgeTransport(judge, namespace=namespace)
            stop = vllm.stop
            client = JudgeClient(judge, vllm, judge_cache(recipe))
        records = {}
        for label, texts in answers.items():
            items = [PairItem(rows[i].prompt_id, "all", rows[i].prompt, texts[i],
                              rows[i].human_reference or "") for i in keep]
            records[label] = grade_pairwise(client, items, policy=label)
            for r, it in zip(records[label], items):
                r["answer"], r["human_answer"] = it.policy_answer, it.human_answer
    except JudgeUnavailable as err:
        log.warning("no judge columns: %s", err)
        return {"judge": judge.label, "error": str(err)}
    finally:
        if stop is not None:
            stop()
    atomic_write_text(out / "llm_judge.jsonl", "".join(
        json.dumps(r, ensure_ascii=False) + "\n" for rs in records.values() for r in rs))
    return {"judge": client.label, "summary": {k: summarise_pairwise(v)
                                               for k, v in records.items()},
            "requests": client.stats}
