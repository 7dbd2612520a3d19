"""LLM judges against real servers: vLLM's OpenAI-compatible server of the tiny policy, started
here on 127.0.0.1, grades ``jobs/judge.py`` end to end in both modes, and the in-cluster vLLM
judge actor answers exactly what that server answers.

The tiny policy writes short reviews, so as a judge it answers off format: the tests check that
every answer is recorded and counted (valid exactly when the strict parser accepts its raw
text), and that the report covers every category, not what the grades are. Short templates
keep the judge prompts inside the tiny model's 512 positions.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from _selfenhance import ROOT, job_env

from lire_ray.demo.tiny_policy import ensure_tiny_policy
from lire_ray.judges import (
    CATEGORIES,
    JudgeCache,
    JudgeClient,
    OpenAITransport,
    Question,
    grade_single,
    parse_choice,
    parse_score,
)

pytestmark = pytest.mark.integration

SERVED = "tiny-judge"
TEMPLATES = {
    "system": "",
    "single": "{conversation}Question: {question}\nAnswer: {answer}\nScore: [[N]]",
    "single_reference": "Question: {question}\nReference: {reference}\nAnswer: {answer}\n"
                        "Score: [[N]]",
    "pairwise": "Request: {question}\nA: {answer_a}\nB: {answer_b}\n[[A]], [[B]] or [[C]]?",
}
# Not the sample file: one two-turn question per category, written for this test.
HIDDEN = [
    ("writing", ["Write a line about rain.", "Make it rhyme."]),
    ("roleplay", ["Be a pirate and greet me.", "Now say goodbye."]),
    ("reasoning", ["If all cats purr and Tom is a cat, does Tom purr?", "Why?"]),
    ("math", ["What is 7 times 6?", "Halve it."]),
    ("coding", ["Write a Python line that prints hello.", "Make it print twice."]),
    ("extraction", ["Name the colour in: 'a red car'.", "Name the object."]),
    ("stem", ["What does a thermometer measure?", "In which units?"]),
    ("humanities", ["Who writes a novel?", "Name one famous novel."]),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def policy(tiny_cache) -> Path:
    return ensure_tiny_policy(tiny_cache)


@pytest.fixture(scope="module")
def server(policy, tmp_path_factory):
    """vLLM's OpenAI-compatible server of the tiny policy (its tokenizer has a chat template)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(policy),
             "--host", "127.0.0.1", "--port", str(port), "--served-model-name", SERVED,
             "--dtype", "float32", "--enforce-eager", "--gpu-memory-utilization", "0.1",
             "--max-model-len", "512", "--seed", "0"],
            stdout=fh, stderr=subprocess.STDOUT, env=job_env())
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 300
    try:
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "server did not start: " + log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(url + "/models", timeout=5) as r:
                    if SERVED in r.read().decode():
                        break
            except OSError:
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, tiny_cache, server) -> Path:
    data = yaml.safe_load((ROOT / "configs" / "tiny-judge.yaml").read_text())
    data["judge"].update(base_url=server, model=SERVED, max_tokens=16, concurrency=4,
                         max_retries=1, backoff_s=0.0, templates=TEMPLATES)
    data["run"].update(cache_dir=str(tiny_cache))
    data["sampler"]["max_new_tokens"] = 24
    data["model"]["max_response_tokens"] = 24
    path = tmp_path_factory.mktemp("recipe") / "judge.yaml"
    path.write_text("# test recipe\n" + yaml.safe_dump(data))
    return path


def _job(recipe: Path, run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "jobs" / "judge.py"), "--config",
                           str(recipe), f"run.dir={run_dir}", *args], env=job_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def _chat(url: str, messages: list[dict], max_tokens: int) -> str:
    body = json.dumps({"model": SERVED, "messages": messages, "max_tokens": max_tokens,
                       "temperature": 0.0}).encode()
    req = urllib.request.Request(url + "/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["choices"][0]["message"]["content"]


def test_single_mode_grades_every_category_through_the_server(recipe, server, tmp_path):
    questions = tmp_path / "hidden.jsonl"
    questions.write_text("".join(json.dumps({"question_id": 100 + i, "category": c,
                                             "turns": t}) + "\n"
                                 for i, (c, t) in enumerate(HIDDEN)))
    proc = _job(recipe, tmp_path, "mode=single", f"questions={questions}", "output=mt")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = tmp_path / "mt"
    recs = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(recs) == 16
    assert {(r["category"], r["turn"]) for r in recs} == {(c, t) for c in CATEGORIES
                                                          for t in (1, 2)}
    for r in recs:
        assert r["failed"] is False and isinstance(r["raw"], str), r
        assert r["valid"] == (parse_score(r["raw"]) is not None)
        assert r["score"] == parse_score(r["raw"])
    report = (out / "report.md").read_text()
    for cat in CATEGORIES:
        assert f"| {cat} |" in report
    metrics = json.loads((out / "metrics.json").read_text())
    overall = metrics["summary"]["base"]["overall"]
    assert overall["n"] == 16 and overall["failed"] == 0
    assert overall["valid"] + overall["invalid"] == 16
    assert overall["valid"] == sum(r["valid"] for r in recs)
    assert (out / "plots" / "radar.png").read_bytes()[:4] == b"\x89PNG"
    # The policy answered each turn in one conversation: its greedy answers are the server's
    # (the same model) for the same chat turns, its own first answer in context.
    by_q = {}
    for r in sorted(recs, key=lambda r: r["turn"]):
        by_q.setdefault(r["question_id"], []).append(r["answer"])
    for i, (_, turns) in enumerate(HIDDEN[:3]):
        a1, a2 = by_q[str(100 + i)]
        assert a1 == _chat(server, [{"role": "user", "content": turns[0]}], 24)
        assert a2 == _chat(server, [{"role": "user", "content": turns[0]},
                                    {"role": "assistant", "content": a1},
                                    {"role": "user", "content": turns[1]}], 24)


def test_pairwise_mode_through_the_server(recipe, tmp_path):
    proc = _job(recipe, tmp_path, "mode=pairwise", "data=builtin:reviews-heldout",
                "data.eval_prompts=6", "output=pairs")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = tmp_path / "pairs"
    recs = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(recs) == 6
    for r in recs:
        assert r["failed"] is False and len(r["raw"]) == 2
        choices = [parse_choice(t) for t in r["raw"]]
        assert r["choices"] == choices
        assert r["valid"] == (None not in choices)
    s = json.loads((out / "metrics.json").read_text())["summary"]["base"]
    valid = [r for r in recs if r["valid"]]
    assert s["pairs"] == 6 and s["valid"] == len(valid)
    assert s["invalid"] == pytest.approx((6 - len(valid)) / 6)
    assert "order-inconsistent" in (out / "report.md").read_text()


def test_in_cluster_vllm_judge_answers_like_the_server(policy, server, tmp_path):
    import ray

    from lire_ray.config import JudgeConfig
    from lire_ray.runtime.judge import VllmJudgeTransport

    qs = [Question(str(i), c, tuple(t)) for i, (c, t) in enumerate(HIDDEN)]
    answers = [["the food is great.", "it is disappointing."]] * len(qs)
    common = {"model": SERVED, "max_tokens": 16, "templates": TEMPLATES, "max_retries": 0}
    http_cfg = JudgeConfig(base_url=server, **common)
    via_http = grade_single(JudgeClient(http_cfg, OpenAITransport(http_cfg), None), qs, answers,
                            policy="p")
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, namespace="judge-test")
    try:
        cfg = JudgeConfig(**{**common, "model": str(policy)}, backend="vllm",
                          gpu_memory_utilization=0.1, max_model_len=512, enforce_eager=True,
                          dtype="float32", resources={"num_cpus": 1})
        actor = VllmJudgeTransport(cfg, namespace="judge-test")
        try:
            client = JudgeClient(cfg, actor, JudgeCache(tmp_path / "cache"))
            via_actor = grade_single(client, qs, answers, policy="p")
        finally:
            actor.stop()
    finally:
        ray.shutdown()
    assert [r["raw"] for r in via_actor] == [r["raw"] for r in via_http]
    assert [r["valid"] for r in via_actor] == [r["valid"] for r in via_http]
    assert client.stats["answered"] == 16 and len(JudgeCache(tmp_path / "cache")) == 16
    assert {r["category"] for r in via_actor} == set(CATEGORIES)
