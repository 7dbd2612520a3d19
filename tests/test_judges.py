"""LLM judges without Ray: verdict parsing, questions files, summaries, the report, and the
client against a scripted HTTP server on 127.0.0.1 (HTTP 500s, 429, garbage text, truncated
JSON, answers slower than the timeout, an API key), the disk cache, and the job's short error
when the judge answers nothing."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _judge_server import ScriptedJudge

from lire_ray.config import JudgeConfig, load_recipe
from lire_ray.errors import ConfigError, DataError
from lire_ray.judges import (
    CATEGORIES,
    JudgeCache,
    JudgeClient,
    JudgeUnavailable,
    OpenAITransport,
    PairItem,
    Question,
    grade_pairwise,
    grade_single,
    load_questions,
    order_consistent,
    pair_outcome,
    parse_choice,
    parse_score,
    summarise_pairwise,
    summarise_single,
    write_judge_report,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "configs" / "questions" / "mt-sample.jsonl"


@pytest.mark.parametrize("text,score", [
    ("Clear and right.\nScore: [[7]]", 7), ("[[10]]", 10), ("Rating: [[ 1 ]]", 1),
    ("Score: [[0]]", None), ("Score: [[11]]", None), ("Score: [[7.5]]", None),
    ("7/10", None), ("Score: 8", None), ("[[3]] then [[4]]", None), ("", None),
    ("[[seven]]", None), ("a perfect 1.2", None)])
def test_scores_are_parsed_strictly(text, score):
    assert parse_score(text) == score


@pytest.mark.parametrize("text,choice", [
    ("A is better. [[A]]", "A"), ("[[B]]", "B"), ("equal [[C]]", "C"), ("[[A]] ... [[A]]", "A"),
    ("[[A]] or [[B]]", None), ("A", None), ("[[D]]", None), ("[[a]]", None), ("", None)])
def test_choices_are_parsed_strictly(text, choice):
    assert parse_choice(text) == choice


@pytest.mark.parametrize("first,second,outcome,consistent", [
    ("A", "B", "win", True), ("B", "A", "loss", True), ("C", "C", "tie", True),
    ("A", "A", "tie", False), ("B", "B", "tie", False), ("A", "C", "tie", False),
    (None, "B", None, None), ("A", None, None, None)])
def test_a_win_needs_both_orders(first, second, outcome, consistent):
    # first: policy shown as A; second: policy shown as B.
    assert pair_outcome(first, second) == outcome
    assert order_consistent(first, second) is consistent


def test_template_placeholders_are_checked():
    JudgeConfig(templates={"pairwise": "{question} | {answer_a} | {answer_b} [[A]]/[[B]]/[[C]]"})
    with pytest.raises(ValueError, match="unknown placeholders"):
        JudgeConfig(templates={"single": "{question} {answer} {score}"})
    with pytest.raises(ValueError, match="missing placeholders"):
        JudgeConfig(templates={"pairwise": "{question} {answer_a}"})
    with pytest.raises(ValueError, match="not the key itself"):
        JudgeConfig(api_key_env="sk-123-secret")
    with pytest.raises(ConfigError, match="judge.timeout_s"):
        load_recipe(ROOT / "configs" / "tiny-judge.yaml", ["judge.timeout_s=0"])


def test_sample_questions_cover_every_category():
    qs = load_questions(SAMPLE)
    assert {q.category for q in qs} == set(CATEGORIES)
    assert all(len(q.turns) == 2 for q in qs)
    assert {q.category for q in qs if q.reference} == {"reasoning", "math", "coding"}


@pytest.mark.parametrize("line,field", [
    ('{"category": "math", "turns": ["x"]}', "question_id"),
    ('{"question_id": 1, "turns": ["x"]}', "category"),
    ('{"question_id": 1, "category": "math", "turns": []}', "turns"),
    ('{"question_id": 1, "category": "math", "turns": ["x"], "reference": "y"}', "reference"),
])
def test_bad_questions_name_line_and_field(tmp_path, line, field):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question_id": 0, "category": "math", "turns": ["ok"]}\n' + line + "\n")
    with pytest.raises(DataError) as err:
        load_questions(path)
    assert err.value.row == 2 and err.value.field == field and str(path) in str(err.value)


def _rec(cat, turn, score, failed=False):
    return {"category": cat, "turn": turn, "score": score, "valid": score is not None,
            "failed": failed}


def test_single_summary_by_hand():
    recs = [_rec("math", 1, 4), _rec("math", 2, None), _rec("math", 1, 8),
            _rec("writing", 1, 9), _rec("writing", 2, None, failed=True)]
    s = summarise_single(recs)
    assert list(s["categories"]) == ["writing", "math"]  # MT-Bench order
    assert s["categories"]["math"] == {"mean": 6.0, "n": 3, "valid": 2, "failed": 0,
                                       "invalid": 1}
    assert s["categories"]["writing"]["failed"] == 1 and s["categories"]["writing"]["mean"] == 9
    assert s["overall"]["mean"] == pytest.approx(7.0) and s["overall"]["valid"] == 3
    assert s["turns"]["2"]["valid"] == 0 and math.isnan(s["turns"]["2"]["mean"])


def test_pairwise_summary_by_hand():
    def rec(verdict, consistent, failed=False):
        return {"verdict": verdict, "valid": verdict is not None, "failed": failed,
                "order_consistent": consistent}

    s = summarise_pairwise([rec("win", True), rec("tie", False), rec("tie", True),
                            rec("loss", True), rec(None, None), rec(None, None, failed=True)])
    assert s["pairs"] == 6 and s["valid"] == 4
    assert (s["win"], s["tie"], s["loss"]) == (0.25, 0.5, 0.25)
    assert s["order_inconsistent"] == 0.25
    assert s["invalid"] == pytest.approx(1 / 6) and s["failed"] == pytest.approx(1 / 6)


def _cfg(url: str, **kw) -> JudgeConfig:
    return JudgeConfig(**{"base_url": url, "model": "scripted", "concurrency": 3,
                          "timeout_s": 0.5, "max_retries": 2, "backoff_s": 0.0, **kw})


CASES = ["ok", "garbage", "e500", "flaky", "r429", "truncated", "slow"]


def _questions():
    return [Question(str(i), CATEGORIES[i], (f"Question CASE={c}?",))
            for i, c in enumerate(CASES)]


def test_misbehaving_server_gives_counted_items_and_caches_only_answers(tmp_path):
    cache = JudgeCache(tmp_path / "cache")
    qs = _questions()
    with ScriptedJudge(slow_s=3.0) as srv:
        client = JudgeClient(_cfg(srv.url), OpenAITransport(_cfg(srv.url)), cache)
        recs = {r["question_id"]: r for r in grade_single(client, qs, [["an answer"]] * len(qs),
                                                          policy="p")}
        by_case = {c: recs[str(i)] for i, c in enumerate(CASES)}
        for case in ("ok", "flaky", "r429"):
            assert by_case[case]["score"] == 7 and by_case[case]["valid"], case
        assert by_case["garbage"]["valid"] is False and by_case["garbage"]["failed"] is False
        assert by_case["garbage"]["score"] is None and "eight" in by_case["garbage"]["raw"]
        for case, why in (("e500", "HTTP 500"), ("truncated", "not chat-completions JSON"),
                          ("slow", "timed out")):
            r = by_case[case]
            assert r["failed"] and not r["valid"] and r["score"] is None and r["raw"] is None
            assert why in r["error"], (case, r["error"])
        # Retries: 3 attempts for each hopeless case, 2 for the flaky ones, 1 otherwise.
        assert srv.hits == {"ok": 1, "garbage": 1, "e500": 3, "flaky": 2, "r429": 2,
                            "truncated": 3, "slow": 3}
        assert client.stats["answered"] == 4 and client.stats["failed"] == 3
        assert len(cache) == 4  # the answers, garbage included; no failure
        summary = summarise_single(list(recs.values()))["overall"]
        assert (summary["valid"], summary["invalid"], summary["failed"]) == (3, 1, 3)

        # A rerun asks only what failed before.
        srv.hits.clear()
        again = JudgeClient(_cfg(srv.url), OpenAITransport(_cfg(srv.url)), cache)
        rerun = {r["question_id"]: r for r in grade_single(again, qs, [["an answer"]] * len(qs),
                                                           policy="p")}
        assert set(srv.hits) == {"e500", "truncated", "slow"}
        assert again.stats["cached"] == 4
        assert rerun["0"]["cached"] and rerun["0"]["score"] == 7
        # A different answer is a different judgment.
        grade_single(again, qs[:1], [["another answer"]], policy="p")
        assert srv.hits["ok"] == 1


def test_pairwise_judge_that_always_says_a_gives_ties(tmp_path):
    items = [PairItem(str(i), "all", f"prompt {i}", f"policy {i}", f"human {i}")
             for i in range(3)]
    with ScriptedJudge() as srv:
        client = JudgeClient(_cfg(srv.url), OpenAITransport(_cfg(srv.url)),
                             JudgeCache(tmp_path))
        recs = grade_pairwise(client, items, policy="p")
        assert srv.hits["ok"] == 6  # both orders of every pair
    assert [r["verdict"] for r in recs] == ["tie"] * 3
    assert all(r["choices"] == ["A", "A"] and r["order_consistent"] is False for r in recs)
    s = summarise_pairwise(recs)
    assert (s["win"], s["tie"], s["loss"], s["order_inconsistent"]) == (0.0, 1.0, 0.0, 1.0)


def test_a_judge_that_answers_nothing_stops_after_abort_after(tmp_path):
    qs = [Question(str(i), "math", (f"q{i}",)) for i in range(20)]
    with ScriptedJudge(always="e500") as srv:
        cfg = _cfg(srv.url, concurrency=1, abort_after=3)
        client = JudgeClient(cfg, OpenAITransport(cfg), JudgeCache(tmp_path))
        with pytest.raises(JudgeUnavailable) as err:
            grade_single(client, qs, [["a"]] * 20, policy="p")
        assert srv.hits["e500"] == 3 * 3  # three items, three attempts each, then stop
    assert "judge 'scripted' at " + srv.url in str(err.value) and "HTTP 500" in str(err.value)
    assert len(JudgeCache(tmp_path)) == 0


def test_api_key_comes_from_the_named_variable_and_is_written_nowhere(tmp_path, monkeypatch):
    secret = "sk-test-DO-NOT-LEAK-1234"
    monkeypatch.setenv("LIRE_JUDGE_TEST_KEY", secret)
    with ScriptedJudge() as srv:
        cfg = _cfg(srv.url, api_key_env="LIRE_JUDGE_TEST_KEY")
        client = JudgeClient(cfg, OpenAITransport(cfg), JudgeCache(tmp_path / "cache"))
        recs = grade_single(client, [Question("1", "math", ("q",))], [["a"]], policy="p")
        assert srv.auth == [f"Bearer {secret}"]
    out = tmp_path / "out"
    out.mkdir()
    write_judge_report(out, mode="single", meta={"judge": client.label, "questions": "q",
                                                 "data": None,
                                                 "config": cfg.model_dump(mode="json")},
                       records={"p": recs}, stats=client.stats, wall_s=1.0)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path
    monkeypatch.delenv("LIRE_JUDGE_TEST_KEY")
    with pytest.raises(ConfigError, match="LIRE_JUDGE_TEST_KEY"):
        OpenAITransport(cfg)


def test_report_has_every_category_and_a_radar_per_policy(tmp_path):
    qs = load_questions(SAMPLE)
    recs = {}
    for p, base in (("base", 3), ("trained", 6)):
        recs[p] = [{"policy": p, "question_id": q.question_id, "turn": t + 1,
                    "category": q.category, "score": base + t, "valid": True, "failed": False,
                    "error": None, "cached": False, "raw": f"Score: [[{base + t}]]"}
                   for q in qs for t in range(2)]
    recs["trained"][0].update(score=None, valid=False, raw="off format")
    stats = {"requests": 0, "retries": 0, "answered": 0, "failed": 0, "cached": 0}
    report = write_judge_report(tmp_path, mode="single", meta={"judge": "j", "questions": "q",
                                                               "data": None},
                                records=recs, stats=stats, wall_s=0.0)
    text = report.read_text()
    for cat in CATEGORIES:
        assert f"| {cat} |" in text
    assert "| **overall** | 3.50 (32/32) | 6.52 (31/32) |" in text
    lines = (tmp_path / "judgments.jsonl").read_text().splitlines()
    assert len(lines) == 64 and json.loads(lines[32])["valid"] is False
    png = (tmp_path / "plots" / "radar.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and "plots/radar.png" in text
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["summary"]["base"]["categories"]["math"]["mean"] == 3.5


def test_job_with_a_dead_judge_ends_with_a_short_error(tmp_path):
    with ScriptedJudge(always="e500") as srv:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [sys.executable, str(ROOT / "jobs" / "judge.py"), "--config",
             "configs/tiny-judge.yaml", f"judge.base_url={srv.url}", "judge.model=dead",
             "judge.backoff_s=0", "judge.max_retries=1", f"questions={SAMPLE}",
             f"run.dir={tmp_path}", "mode=single"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert f"judge 'dead' at {srv.url}" in proc.stderr and "HTTP 500" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) <= 4, proc.stderr
    assert srv.hits["e500"] == 2
    assert not (tmp_path / "judge").exists()


def test_study_judge_columns_and_their_report_section(tmp_path):
    from lire_ray.inputs import load_prompt_rows
    from lire_ray.judges.report import judge_section
    from lire_ray.studies.judge import judge_columns

    rows = load_prompt_rows("builtin:reviews-heldout", 3)
    answers = {"base": ["a", "b", "c"], "lire s0": ["d", "e", "f"]}
    with ScriptedJudge() as srv:
        recipe = load_recipe(ROOT / "configs" / "tiny-judge.yaml", [
            f"judge.base_url={srv.url}", "judge.model=scripted", f"run.dir={tmp_path}"])
        result = judge_columns(recipe, rows, answers, namespace="unused", out=tmp_path)
        assert srv.hits["ok"] == 12  # 2 policies x 3 prompts x 2 orders
    assert set(result["summary"]) == {"base", "lire s0"}
    assert result["summary"]["base"]["tie"] == 1.0  # the scripted judge always says A
    assert len((tmp_path / "llm_judge.jsonl").read_text().splitlines()) == 6
    heading, body = judge_section(result)
    assert "Fig. 2" in heading and "| lire s0 | 3 | 3 | 0.0% | 100.0% | 0.0% |" in body
    with ScriptedJudge(always="e500") as srv:
        recipe = load_recipe(ROOT / "configs" / "tiny-judge.yaml", [
            f"judge.base_url={srv.url}", "judge.model=scripted", "judge.max_retries=0",
            f"run.dir={tmp_path}", "judge.abort_after=2", "judge.concurrency=1"])
        cached = judge_columns(recipe, rows, answers, namespace="unused", out=tmp_path)
        assert cached["summary"] == result["summary"] and srv.hits["e500"] == 0  # the cache
        recipe = load_recipe(ROOT / "configs" / "tiny-judge.yaml", [
            f"judge.base_url={srv.url}", "judge.model=scripted", "judge.max_retries=0",
            f"run.dir={tmp_path / 'other'}", "judge.abort_after=2", "judge.concurrency=1"])
        failed = judge_columns(recipe, rows, answers, namespace="unused", out=tmp_path)
    assert "HTTP 500" in failed["error"] and "No verdicts" in judge_section(failed)[1]


def test_comparison_with_a_dead_judge_stops_before_training(tmp_path):
    with ScriptedJudge(always="e500") as srv:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [sys.executable, str(ROOT / "jobs" / "compare.py"), "--config",
             "configs/tiny-judge.yaml", f"judge.base_url={srv.url}", "judge.model=dead",
             "judge.max_retries=0", f"run.dir={tmp_path}", "--losses", "lire"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and f"judge 'dead' at {srv.url}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "compare").exists()


def test_main_job_judges_the_first_held_out_responses_before_and_after(tmp_path):
    from types import SimpleNamespace

    from lire_ray.inputs import load_prompt_rows
    from lire_ray.self_enhance import _llm_judge

    rows = load_prompt_rows("builtin:reviews-heldout", 2)

    def ev(tag):  # EvalResult.to_json() shape: greedy (one sample) and T=1 (two)
        return {"generations": {"1.0": {"responses": [["x", "y"]] * 2},
                                "0.0": {"responses": [[f"{tag} 0"], [f"{tag} 1"]]}}}

    with ScriptedJudge() as srv:
        recipe = load_recipe(ROOT / "configs" / "tiny-judge.yaml", [
            f"judge.base_url={srv.url}", "judge.model=scripted", f"run.dir={tmp_path}"])
        result = _llm_judge(recipe, SimpleNamespace(root=tmp_path), rows, ev("before"),
                            ev("after"))
        assert srv.hits["ok"] == 8
    assert result is not None and set(result["summary"]) == {"before", "after"}
    lines = [json.loads(x) for x in (tmp_path / "llm_judge.jsonl").read_text().splitlines()]
    # The greedy (lowest-temperature) response of each policy was judged.
    assert [(r["policy"], r["answer"]) for r in lines] == [
        ("before", "before 0"), ("before", "before 1"), ("after", "after 0"),
        ("after", "after 1")]
    assert [r["human_answer"] for r in lines[:2]] == [row.human_reference for row in rows]
    recipe_no_judge = load_recipe(ROOT / "configs" / "tiny.yaml", [f"run.dir={tmp_path}"])
    assert _llm_judge(recipe_no_judge, SimpleNamespace(root=tmp_path), rows, ev("b"),
                      ev("a")) is None
