"""``ray job submit`` of the main job onto a two-node Ray cluster on this machine.

Two raylets run here, each with a custom resource; the recipe pins the sampler to one node and
the trainer to the other, so the candidate pool really crosses nodes. The recipe is the
embedded default, so this also checks the product claim: the held-out reward judged by a reward
model the policy was not trained on goes up. It samples ahead (``evolve.max_staleness=1``): the
second pool is sampled while the first step trains, so its candidates lag one policy version.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from _selfenhance import BIN, ROOT, check_pools, job_env, ray_cli

from lire_ray.pool import read_pool, table_to_rows

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _kill_cluster(temp) -> None:
    """SIGKILL every process of the cluster whose files live in ``temp`` (each Ray process
    names its session directory on its command line). Not ``ray stop``: that stops every Ray
    cluster on the machine, including those of tests running beside this one."""
    import signal

    marker = str(temp).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass  # gone meanwhile, or not ours to read


@pytest.fixture(scope="module")
def two_node_cluster(tmp_path_factory):
    """A head node (resource node_a) and a worker node (node_b) on this machine.

    The cluster uses token authentication with its own token file: Ray turns token auth on for
    ``ray start --head`` whenever ``~/.ray/auth_token`` exists (any earlier local ``ray.init``
    writes one), but not for the joining node, which is then refused; naming the mode and the
    token explicitly gives every process, driver included, the same settings.
    """
    import secrets

    temp = tmp_path_factory.mktemp("ray")
    # A dashboard port of its own: another local cluster on this machine (a test running in
    # parallel) may hold Ray's default one, and the job must not be submitted there.
    gcs_port, dashboard_port = _free_port(), _free_port()
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = job_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    env.pop("RAY_ADDRESS")  # the submitted job must join this cluster
    try:
        head = ray_cli("start", "--head", "--num-cpus=3", "--resources", '{"node_a": 1}',
                       "--dashboard-host=127.0.0.1", "--include-dashboard=true",
                       f"--dashboard-port={dashboard_port}",
                       f"--temp-dir={temp}", f"--port={gcs_port}", env=env, check=False)
        assert head.returncode == 0, head.stderr[-3000:]
        worker = ray_cli("start", f"--address=127.0.0.1:{gcs_port}", "--num-cpus=3", "--resources",
                         '{"node_b": 1}', env=env, check=False)
        assert worker.returncode == 0, worker.stderr[-3000:]
        yield {"address": f"127.0.0.1:{gcs_port}",
               "dashboard": f"http://127.0.0.1:{dashboard_port}", "env": env}
    finally:
        _kill_cluster(temp)


def test_ray_job_submit_two_nodes_improves_heldout_judge(two_node_cluster, tmp_path,
                                                         tiny_cache):
    run = tmp_path / "run"
    cluster = two_node_cluster
    cmd = [str(BIN / "ray"), "job", "submit", "--address", cluster["dashboard"],
           "--working-dir", str(ROOT), "--", "python", "jobs/self_enhance.py",
           f"run.dir={run}", f"run.cache_dir={tiny_cache}",
           "resources.placement=split", "evolve.max_staleness=1",
           "resources.sampler.resources={node_a: 0.5}",
           "resources.reward.resources={node_a: 0.2}",
           "resources.trainer.resources_per_worker={node_b: 0.5}"]
    proc = subprocess.run(cmd, env=cluster["env"], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "report:" in proc.stdout
    assert "held-out mean reward" in proc.stdout

    metrics = json.loads((run / "metrics.json").read_text())
    judge = metrics["heldout/afinn/T0"]  # greedy decoding
    assert judge["after"] > judge["before"], judge
    assert (run / "report.md").is_file() and (run / "plots" / "reward_afinn.png").is_file()
    check_pools(run, steps=2, num_prompts=64, max_staleness=1)
    # Sampling streamed into training: some sampling happened while the trainer ran.
    assert any(s["overlap_s"] > 0 for s in metrics["stages"]), metrics["stages"]
    first, second = metrics["stages"]
    assert not first["presampled"] and second["presampled"], metrics["stages"]
    assert first["max_staleness_seen"] == 0 and second["max_staleness_seen"] <= 1
    # D_2 was sampled during step 1's second epoch, before policy 1 existed.
    versions = {v for r in table_to_rows(read_pool(run / "pools" / "e2"))
                for v in r.policy_version if v >= 0}
    assert 0 in versions, versions

    # The state API runs in a child process that has the cluster's auth settings.
    placed = json.loads(subprocess.run(
        [sys.executable, "-c", PLACEMENT_QUERY, cluster["address"]], env=cluster["env"],
        capture_output=True, text=True, timeout=120, check=True).stdout)
    assert placed.get("SamplerActor") == ["node_a"], placed
    assert placed.get("RayTrainWorker") == ["node_b"], placed


PLACEMENT_QUERY = """
import json, sys
from ray.util.state import list_actors, list_nodes
address = sys.argv[1]
nodes = {n.node_id: n.resources_total for n in list_nodes(address=address, detail=True)}
placed = {}
for a in list_actors(address=address, detail=True, limit=10000):
    for key in ("node_a", "node_b"):
        if key in nodes.get(a.node_id, {}):
            placed.setdefault(a.class_name, set()).add(key)
print(json.dumps({k: sorted(v) for k, v in placed.items()}))
"""


def test_self_enhancement_on_a_prompt_only_pool(tmp_path, tiny_cache):
    """Prompts with no answer at all (TRL prompt-only data): every candidate is sampled, and the
    run trains and reports without win rates against human answers it does not have."""
    run, pool = tmp_path / "run", tmp_path / "prompts"
    prep = subprocess.run([sys.executable, str(ROOT / "jobs" / "prepare.py"), "--format", "trl",
                           "--input", str(ROOT / "tests" / "fixtures" / "trl_prompts.jsonl"),
                           "--output", str(pool)], env=job_env(), capture_output=True,
                          text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr[-3000:]
    rows = table_to_rows(read_pool(pool))
    assert rows and all(r.num_candidates == 0 for r in rows)
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "self_enhance.py"),
                           f"run.dir={run}", f"run.cache_dir={tiny_cache}",
                           f"data.train={pool}", "data.eval=null", "evolve.steps=1",
                           "train.epochs=1", "sampler.backend=hf", "ray.address=local"],
                          env=job_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pooled = table_to_rows(read_pool(run / "pools" / "e1"))
    assert sorted(r.prompt_id for r in pooled) == sorted(r.prompt_id for r in rows)
    assert all(r.num_candidates == 4 and set(r.sources) == {"policy@e0"} for r in pooled)
    assert all(set(r.rewards) == {"vader", "afinn"} for r in pooled)
    assert (run / "checkpoints" / "e1" / "COMPLETE").is_file()
