"""Bad input across the job CLIs: a short message, a non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _selfenhance import ROOT, job_env

from lire_ray.pool import PoolRow, write_pool


def _run(script: str, *args, timeout=300, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "jobs" / script), *args], env=job_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=str(cwd))


def _assert_clean_failure(proc, *needles):
    """Non-zero exit, no traceback, and an ``error:`` message of a few lines naming the problem."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("error:"))
    message = "\n".join(lines[start:])
    assert len(lines) - start <= 6, message
    for needle in needles:
        assert needle in message, (needle, proc.stderr[-3000:])


@pytest.fixture(scope="module")
def cache(tiny_cache):
    """The session's tiny-policy cache."""
    return tiny_cache


@pytest.fixture
def pool(tmp_path):
    rows = [PoolRow(prompt_id=f"p{i}", prompt=f"Review of a lamp {i}:", responses=["it is ok."],
                    sources=["human"], policy_version=[-1]) for i in range(4)]
    write_pool(rows, tmp_path / "pool")
    return tmp_path / "pool"


@pytest.mark.parametrize("override,needle", [
    ("train.lrr=1", "unknown key 'train.lrr'"),
    ("train.lr=fast", "train.lr"),
    ("sampler.num_candidates=0", "sampler.num_candidates"),
    ("model.policy=/no/such/model", "/no/such/model"),
    ("data.train=/no/such/pool", "/no/such/pool"),
    ("data.train=builtin:nope", "builtin:nope"),
    ("loss.params={temperature: -1}", "temperature"),
    ("loss.params={beta: 1}", "beta"),
])
def test_self_enhance_refuses_bad_settings_before_writing(tmp_path, cache, override, needle):
    run = tmp_path / "run"
    proc = _run("self_enhance.py", f"run.dir={run}", f"run.cache_dir={cache}", override)
    _assert_clean_failure(proc, needle)
    assert proc.returncode == 2
    assert not run.exists(), "a refused run must not create its run directory"


def test_debug_shows_the_traceback(tmp_path):
    proc = _run("self_enhance.py", "--debug", f"run.dir={tmp_path / 'run'}", "train.lrr=1")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_corrupt_pool_is_refused(tmp_path, cache, pool):
    part = next(pool.glob("part-*.parquet"))
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    proc = _run("self_enhance.py", f"run.dir={tmp_path / 'run'}", f"data.train={pool}",
                f"run.cache_dir={cache}")
    _assert_clean_failure(proc, part.name)
    assert not (tmp_path / "run").exists()


def test_impossible_resources_are_refused(tmp_path, cache):
    proc = _run("self_enhance.py", f"run.dir={tmp_path / 'run'}", f"run.cache_dir={cache}",
                "resources.sampler.num_gpus=8")
    _assert_clean_failure(proc, "resources.sampler", "GPU")
    assert not (tmp_path / "run").exists()


def test_train_job_refuses_missing_pool(tmp_path):
    proc = _run("train.py", "data=/no/such/pool", f"run.dir={tmp_path / 'run'}")
    _assert_clean_failure(proc, "/no/such/pool")


@pytest.fixture(scope="module")
def padless_policy(tmp_path_factory):
    """A tiny local policy whose tokenizer has neither a pad nor an eos token."""
    from lire_ray.demo.tiny_models import build_tiny_policy
    from lire_ray.models import load_tokenizer

    policy = build_tiny_policy(tmp_path_factory.mktemp("padless") / "policy", hidden_size=64,
                               num_heads=1, num_layers=1)
    tok = load_tokenizer(policy)
    tok.pad_token = tok.eos_token = None
    tok.save_pretrained(policy)
    return policy


@pytest.mark.parametrize("script,output", [
    ("evaluate.py", "evals/e1"),
    ("compare.py", "ABS"),  # an absolute path inside run.dir is accepted
])
def test_tokenizer_without_pad_or_eos_is_refused_before_ray(tmp_path, padless_policy, script,
                                                             output):
    run = tmp_path / "run"
    output = str(run / "cmp") if output == "ABS" else output
    proc = _run(script, f"run.dir={run}", f"model.policy={padless_policy}", f"output={output}")
    _assert_clean_failure(proc, str(padless_policy), "neither a pad token nor an eos token",
                          "tokenizer_config.json")
    assert proc.returncode == 2
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout
    assert not run.exists(), "a refused job must not create its run or output directory"


@pytest.mark.parametrize("script,extra,output", [
    ("evaluate.py", [], "../escaped"),
    ("evaluate.py", [], "ABS_OUTSIDE"),
    ("compare.py", [], "sub/../../escaped"),
    ("compare.py", ["--grid"], "."),
])
def test_outputs_outside_run_dir_are_refused(tmp_path, script, extra, output):
    run = tmp_path / "run"
    if output == "ABS_OUTSIDE":
        output = str(tmp_path / "escaped")
    proc = _run(script, *extra, f"run.dir={run}", f"output={output}", "model.policy=/no/such")
    needle = "is run.dir" if output == "." else "escapes the run directory"
    _assert_clean_failure(proc, f"output={output}", needle)
    assert proc.returncode == 2
    # Refused first: before the missing policy is noticed, and before anything is written.
    assert "/no/such" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_prepare_writes_where_told_and_overwrites_only_pools(tmp_path):
    from lire_ray.pool import verify_pool

    data = ROOT / "tests" / "fixtures" / "listwise.jsonl"
    proc = _run("prepare.py", "--format", "listwise", "--input", str(data), "--output",
                "pools/mine", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert verify_pool(tmp_path / "pools" / "mine")["num_rows"] > 0  # relative to the cwd
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    proc = _run("prepare.py", "--format", "listwise", "--input", str(data), "--output",
                str(precious), "--overwrite", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "not a pool" in proc.stderr and str(precious) in proc.stderr
    assert [p.name for p in precious.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "pools"]
