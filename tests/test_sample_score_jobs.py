"""``jobs/sample.py`` and ``jobs/score.py`` end to end (real Ray, the tiny policy, real scorers).

One flow for the module, each job a subprocess that starts its own local Ray cluster: sample 8
builtin prompts with RSO (N = 6 samples, K = 4 kept, the human answer among them), then score
the pool with both reward models z-scored and reference log-probs. The pool handed to the
scoring job records frozen statistics for VADER only (as a pool scored earlier would), so VADER
must reuse them while AFINN's are fitted on the pool; every score is checked against the reward
functions called here directly. Bad input to either job exits 2 and writes nothing.

The sampler is the ``transformers`` backend: the vLLM engine's start (over a minute on two
cores) would triple the flow's time, and the stream and the jobs do not depend on the backend.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

import pytest
from _selfenhance import ROOT, job_env

from lire_ray.demo import reviews
from lire_ray.demo.tiny_policy import ensure_tiny_policy
from lire_ray.pool import read_manifest, read_pool, table_to_rows, write_pool

pytestmark = pytest.mark.integration

NUM_PROMPTS, K, N = 8, 4, 6


def _run(job: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "jobs" / job), *args], env=job_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _refused(proc: subprocess.CompletedProcess, needle: str) -> None:
    """Exit 2, no traceback, a short ``error:`` message naming the problem."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("error:"))
    assert len(lines) - start <= 3 and needle in lines[start], proc.stderr[-2000:]


@pytest.fixture(scope="module")
def cache(tiny_cache):
    path = tiny_cache
    ensure_tiny_policy(path)
    return path


#: Frozen statistics the scoring job must reuse for VADER instead of fitting its own.
VADER_FROZEN = {"mean": 0.25, "std": 0.5}


@pytest.fixture(scope="module")
def flow(cache, tmp_path_factory):
    run = tmp_path_factory.mktemp("jobs") / "run"
    common = [f"run.dir={run}", f"run.cache_dir={cache}", f"data.max_prompts={NUM_PROMPTS}",
              "ray.num_cpus=4", "sampler.batch_size=4", "sampler.backend=hf"]
    sample = _ok(_run("sample.py", "input=builtin:reviews", "output=pools/sampled",
                      f"sampler.num_candidates={K}", "sampler.rso.enabled=true",
                      f"sampler.rso.num_samples={N}", "sampler.rso.beta=0.5", *common))
    # The sampled pool again, now recording frozen statistics for one reward model.
    sampled = run / "pools" / "sampled"
    meta = read_manifest(sampled)["metadata"]
    write_pool(read_pool(sampled), run / "pools" / "frozen",
               metadata={**meta, "reward_normalisation": {"vader": VADER_FROZEN}})
    score = _ok(_run("score.py", f"input={run / 'pools' / 'frozen'}", "output=pools/scored",
                     "rewards.0.normalize=zscore", "rewards.1.normalize=zscore", "reference=true",
                     *common))
    return {"run": run, "sample": sample, "score": score}


def _rows(path):
    return {r.prompt_id: r for r in table_to_rows(read_pool(path))}


def test_sample_job_writes_k_candidates_per_prompt_with_rso(flow):
    run, out = flow["run"], flow["sample"].stdout
    assert f"sampled: {NUM_PROMPTS}/{NUM_PROMPTS} prompts" in flow["sample"].stderr
    pool = run / "pools" / "sampled"
    assert f"pool: {pool}" in out.strip().splitlines()[-1]
    rows = _rows(pool)
    builtin = reviews.prompt_rows("train", NUM_PROMPTS)
    assert sorted(rows) == sorted(r["prompt_id"] for r in builtin)  # each prompt exactly once
    for want in builtin:
        row = rows[want["prompt_id"]]
        assert row.prompt == want["prompt"]
        assert row.num_candidates == K
        # The human-written answer is kept; RSO chose the K - 1 policy candidates.
        assert row.sources[0] == "human" and row.responses[0] == want["responses"][0]
        assert row.sources[1:] == ("policy@e0",) * (K - 1)
        assert row.policy_version == (-1,) + (0,) * (K - 1)
        assert row.evolve_step == 1 and row.rewards == {} and row.ref_logps is None
    meta = read_manifest(pool)["metadata"]["sample"]
    assert meta["rso"] == {"num_samples": N, "beta": 0.5, "reward": "vader"}
    assert meta["policy_version"] == 0 and meta["num_candidates"] == K
    assert not [p.name for p in (run / "pools").iterdir() if p.name.startswith(".")]


def test_score_job_scores_every_candidate_with_frozen_zscore(flow):
    run, out = flow["run"], flow["score"].stdout
    assert f"scored: {NUM_PROMPTS}/{NUM_PROMPTS} prompts" in flow["score"].stderr
    assert f"pool: {run / 'pools' / 'scored'}" in out.strip().splitlines()[-1]
    sampled, scored = _rows(run / "pools" / "sampled"), _rows(run / "pools" / "scored")
    assert sorted(scored) == sorted(sampled)
    prompts = [r.prompt for r in sampled.values() for _ in r.responses]
    responses = [c for r in sampled.values() for c in r.responses]
    raw_vader = reviews.vader_reward(prompts, responses)
    raw_afinn = reviews.afinn_reward(prompts, responses)
    # AFINN's statistics are fitted on the whole input pool (population std) ...
    mean, std = statistics.fmean(raw_afinn), statistics.pstdev(raw_afinn)
    assert std > 0
    manifest = read_manifest(run / "pools" / "scored")
    stats = manifest["metadata"]["reward_normalisation"]
    assert set(stats) == {"vader", "afinn"}
    assert stats["afinn"]["mean"] == pytest.approx(mean, abs=1e-12)
    assert stats["afinn"]["std"] == pytest.approx(std, abs=1e-12)
    # ... while VADER's frozen ones are reused, not refitted.
    assert stats["vader"] == VADER_FROZEN
    assert statistics.fmean(raw_vader) != pytest.approx(VADER_FROZEN["mean"])
    assert manifest["reward_models"] == ["afinn", "vader"]
    at = 0
    for pid, row in sampled.items():
        got = scored[pid]
        assert got.responses == row.responses and got.sources == row.sources
        k = row.num_candidates
        assert got.rewards["afinn"] == pytest.approx(
            [(x - mean) / std for x in raw_afinn[at:at + k]], abs=1e-9)
        assert got.rewards["vader"] == pytest.approx(
            [(x - VADER_FROZEN["mean"]) / VADER_FROZEN["std"] for x in raw_vader[at:at + k]],
            abs=1e-9)
        # reference=true: summed log-probs of each candidate under the reference policy.
        assert got.ref_logps is not None and len(got.ref_logps) == k
        assert all(x < 0 for x in got.ref_logps)
        at += k
    # The sampling metadata travels with the pool.
    assert manifest["metadata"]["sample"]["rso"]["num_samples"] == N
    assert manifest["metadata"]["score"]["reference"] is True


def test_sample_job_refuses_an_escaping_output_and_writes_nothing(tmp_path, cache):
    run = tmp_path / "run"
    proc = _run("sample.py", "input=builtin:reviews", "output=../escape", f"run.dir={run}",
                f"run.cache_dir={cache}")
    _refused(proc, "escapes the run directory")
    assert not run.exists() and not (tmp_path / "escape").exists()


def test_score_job_refuses_an_existing_pool_and_writes_nothing(flow):
    run = flow["run"]
    before = {p.name: p.stat().st_mtime_ns for p in (run / "pools").iterdir()}
    manifest = (run / "pools" / "sampled" / "manifest.json").read_bytes()
    proc = _run("score.py", f"input={run / 'pools' / 'frozen'}", "output=pools/sampled",
                f"run.dir={run}")
    _refused(proc, "already exists")
    assert (run / "pools" / "sampled" / "manifest.json").read_bytes() == manifest
    assert {p.name: p.stat().st_mtime_ns for p in (run / "pools").iterdir()} == before


def test_sampling_an_hh_pool_records_the_chat_template_prompt(tmp_path, cache):
    """HH rows carry their dialogue as chat turns; the tiny policy's tokenizer has a chat
    template, so the sampler conditions on the rendered template (as training does) and the
    pool records exactly that text as ``prompt_text``."""
    import json

    from lire_ray.models import load_tokenizer

    run = tmp_path / "run"
    pool = run / "pools" / "hh"
    _ok(_run("prepare.py", "--format", "hh", "--input", str(ROOT / "tests" / "fixtures" /
                                                             "hh.jsonl"), "--output", str(pool)))
    _ok(_run("sample.py", f"input={pool}", "output=pools/hh-sampled", f"run.dir={run}",
             f"run.cache_dir={cache}", "data.max_prompts=3", "sampler.backend=hf",
             "sampler.num_candidates=2", "ray.num_cpus=4", "model.max_prompt_tokens=100",
             "sampler.max_model_len=200"))
    tok = load_tokenizer(ensure_tiny_policy(cache))
    rows = table_to_rows(read_pool(run / "pools" / "hh-sampled"))
    assert rows and all(r.prompt_messages is not None for r in rows)
    for row in rows:
        rendered = tok.apply_chat_template(json.loads(row.prompt_messages), tokenize=False,
                                           add_generation_prompt=True)
        assert row.prompt_text == rendered and rendered != row.prompt
        assert "policy@e0" in row.sources
