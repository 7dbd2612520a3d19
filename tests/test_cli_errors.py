"""Bad input across the job CLIs: a short message, a non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _selfenhance import ROOT, job_env

from lire_ray.pool import PoolRow, write_pool


def _run(script: str, *args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "jobs" / script), *args], env=job_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))


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
def cache(tmp_path_factory):
    """One tiny-policy cache for the module (the policy is built on first use)."""
    return tmp_path_factory.mktemp("cache")


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
