"""``run.seed`` makes the main job's pools reproducible; forwarded secrets reach the actors and
are written nowhere; the main job resumes into a run directory that ``jobs/sample.py`` wrote
into first.

Four jobs on the tiny task (8 prompts, one Evolve step of one epoch, no held-out evaluation,
the ``transformers`` sampler, whose start is a fraction of vLLM's on two cores), each a
subprocess with its own local Ray cluster:

1. ``jobs/sample.py`` writes ``A/pools/sampled``;
2. the main job with ``resume=true`` in ``A``, ``run.seed=0``, a secret in its environment
   that ``ray.forward_env`` names; a reward function (``probe``) scores 1 exactly where the
   secret reached the reward actor (it compares hashes: the value is in no file);
3. the main job in ``B`` with ``run.seed=0``;
4. the main job in ``C`` with ``run.seed=1``.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from _selfenhance import ROOT, job_env

from lire_ray.pool import read_pool, table_to_rows

pytestmark = pytest.mark.integration

SECRET_NAME = "LIRE_TEST_SECRET"
SMALL = ["data.max_prompts=8", "evolve.steps=1", "train.epochs=1", "data.eval=null",
         "sampler.backend=hf", "ray.address=local", f"ray.forward_env=[{SECRET_NAME}]"]

PROBE = '''
import hashlib, os

def secret_seen(prompts, responses):
    value = os.environ.get({name!r}, "")
    ok = hashlib.sha256(value.encode()).hexdigest() == {digest!r}
    return [1.0 if ok else 0.0 for _ in responses]
'''


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, tiny_cache):
    tmp = tmp_path_factory.mktemp("seeds")
    secret = "s3cr3t-" + secrets.token_hex(16)
    probe_dir = tmp / "probe"
    probe_dir.mkdir()
    (probe_dir / "lire_probe.py").write_text(PROBE.format(
        name=SECRET_NAME, digest=hashlib.sha256(secret.encode()).hexdigest()))
    recipe = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    recipe["rewards"].append({"name": "probe", "kind": "python",
                              "path": "lire_probe:secret_seen"})
    recipe_path = tmp / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    cache = tiny_cache
    # Ray's temporary files (its logs) where this test can search them; short, since Ray's
    # socket paths under it must stay below the Unix limit.
    ray_tmp = Path(tempfile.mkdtemp(prefix="lrse", dir="/tmp"))
    env = job_env(**{SECRET_NAME: secret, "PYTHONPATH": f"{probe_dir}:{ROOT}",
                     "RAY_TMPDIR": str(ray_tmp)})

    def run(job: str, run_dir: Path, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, str(ROOT / "jobs" / job),
                               "--config", str(recipe_path), f"run.dir={run_dir}",
                               f"run.cache_dir={cache}", *args],
                              env=env, capture_output=True, text=True, timeout=1200, cwd=ROOT)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    out = {"secret": secret, "dirs": {}, "procs": [], "ray_tmp": ray_tmp}
    a, b, c = tmp / "A", tmp / "B", tmp / "C"
    try:
        out["procs"].append(run("sample.py", a, "input=builtin:reviews",
                                "output=pools/sampled", *SMALL))
        out["procs"].append(run("self_enhance.py", a, "resume=true", "run.seed=0", *SMALL))
        out["procs"].append(run("self_enhance.py", b, "run.seed=0", *SMALL))
        out["procs"].append(run("self_enhance.py", c, "run.seed=1", *SMALL))
        out["dirs"] = {"A": a, "B": b, "C": c}
        yield out
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _pool(run: Path) -> dict:
    return {r.prompt_id: (r.responses, r.sources, r.policy_version, r.rewards)
            for r in table_to_rows(read_pool(run / "pools" / "e1"))}


def test_the_main_job_runs_beside_a_sampled_pool(jobs):
    a = jobs["dirs"]["A"]
    assert (a / "config.yaml").is_file() and (a / "pools" / "e1" / "manifest.json").is_file()
    assert len(table_to_rows(read_pool(a / "pools" / "sampled"))) == 8, "the job's pool stays"


def test_same_seed_same_pool_other_seed_other_pool(jobs):
    pools = {name: _pool(path) for name, path in jobs["dirs"].items()}
    assert len(pools["A"]) == 8
    assert pools["A"] == pools["B"], "two runs with run.seed=0 sampled different pools"
    assert pools["A"].keys() == pools["C"].keys()
    differ = [k for k in pools["A"] if pools["A"][k][0] != pools["C"][k][0]]
    assert differ, "run.seed=1 sampled the same candidates as run.seed=0"
    for name in "ABC":
        seeds = yaml.safe_load((jobs["dirs"][name] / "config.yaml").read_text())
        want = 1 if name == "C" else 0
        assert (seeds["run"]["seed"], seeds["sampler"]["seed"], seeds["train"]["seed"]) == \
            (want, want, want)


def test_a_forwarded_secret_reaches_the_actors_and_is_written_nowhere(jobs):
    for name, path in jobs["dirs"].items():
        for rewards in (row[3] for row in _pool(path).values()):
            assert rewards["probe"] and all(x == 1.0 for x in rewards["probe"]), \
                f"{name}: the reward actor did not get {SECRET_NAME}"
    secret = jobs["secret"].encode()
    leaked = [str(f) for path in jobs["dirs"].values() for f in path.rglob("*")
              if f.is_file() and secret in f.read_bytes()]
    assert not leaked, f"the forwarded secret's value was written to {leaked}"
    for proc in jobs["procs"]:
        assert jobs["secret"] not in proc.stdout + proc.stderr, "the secret was logged"
    # Ray's own logs of the clusters the jobs started (its runtime-env agent logs every runtime
    # env at INFO, values included, unless told otherwise).
    logs = list(jobs["ray_tmp"].rglob("*.log"))
    assert any(f.name == "runtime_env_agent.log" for f in logs), "Ray logs not found"
    leaked = [str(f) for f in logs if f.is_file() and secret in f.read_bytes()]
    assert not leaked, f"Ray logged the forwarded secret's value in {leaked}"
    for path in jobs["dirs"].values():  # the recipe records the name only
        assert yaml.safe_load((path / "config.yaml").read_text())["ray"]["forward_env"] == \
            [SECRET_NAME]
