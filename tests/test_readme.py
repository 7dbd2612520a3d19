"""Every command block of the README works as written, in the order shown (README, last
paragraph).

The repository's files are copied to a fresh directory and each block runs there with ``bash``,
one command after another, on the tiny task. Jobs that take a recipe get :data:`SMALL`
appended (``make demo`` through ``ARGS``), ``jobs/bench.py`` gets :data:`BENCH_SMALL`, ``make``
uses this interpreter's virtual environment, and the jobs share one local Ray cluster started
here (``RAY_ADDRESS``). ``make test`` is skipped (it runs this test). The tiny policy
built once per session goes into the copy's cache. Blocks after a
``<!-- readme-test: check -->`` marker (GPUs, several machines) are checked without running:
``pip install`` extras exist, each job's flags are in its ``--help``, ``ray start`` flags in
``ray start --help``, and every recipe loads with the command's overrides.

The parsing helpers are unit-tested here too (not integration).
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from _selfenhance import BIN, ROOT, job_env

README = ROOT / "README.md"
SMALL = "data.max_prompts=8 data.eval_prompts=4 train.epochs=1 sampler.backend=hf"
BENCH_SMALL = "--iters 1 --sampler-iters 1 --backends hf --loss-k 2,4"
#: Jobs that take a recipe (and so the small overrides).
RECIPE_JOBS = ("self_enhance", "train", "evaluate", "compare", "sample", "score")
COMMAND_WORDS = ("make", "python", "pip", "ray", "export")
CHECK_MARKER = "<!-- readme-test: check -->"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class Block:
    """One indented code block of the README that holds commands."""

    line: int
    commands: list[str]
    check_only: bool


def command_blocks(text: str) -> list[Block]:
    """The README's command blocks, in order: indented blocks whose first word is a command.

    Continued lines (ending in ``\\``) are joined; blank lines inside a block are kept out.
    """
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        starts = lines[i].startswith("    ") and lines[i].strip() and \
            (i == 0 or not lines[i - 1].strip() or lines[i - 1].strip() == CHECK_MARKER)
        if not starts:
            i += 1
            continue
        first, body = i, []
        while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
            body.append(lines[i][4:])
            i += 1
        before = [x.strip() for x in lines[:first] if x.strip()]
        commands, pending = [], ""
        for raw in body:
            if not raw.strip():
                continue
            pending += raw.strip()
            if pending.endswith("\\"):
                pending = pending[:-1].rstrip() + " "
                continue
            commands.append(pending)
            pending = ""
        if commands and commands[0].split()[0] in COMMAND_WORDS:
            blocks.append(Block(first + 1, commands, bool(before) and before[-1] == CHECK_MARKER))
    return blocks


def with_small_overrides(command: str, *, venv: Path) -> str | None:
    """The command as the test runs it; None for ``make test``.

    Raises:
        AssertionError: A command of a kind this test does not know how to run.
    """
    words = shlex.split(command, comments=True)
    if words[:2] == ["make", "test"]:
        return None
    if words[:2] == ["make", "demo"]:
        args = [w for w in words[2:] if w.startswith("ARGS=")]
        rest = [w for w in words[2:] if not w.startswith("ARGS=")]
        value = " ".join([*(a[len("ARGS="):] for a in args), SMALL])
        stamp = venv / ".lire-installed"
        # The installed environment is this one: never reinstall into it.
        return shlex.join(["make", "-o", str(stamp), f"VENV={venv}", "demo", *rest,
                           f"ARGS={value}"])
    if words[0] == "python" and len(words) > 1 and words[1].startswith("jobs/"):
        job = Path(words[1]).stem
        extra = SMALL.split() if job in RECIPE_JOBS else BENCH_SMALL.split() \
            if job == "bench" else []
        return shlex.join([*words, *extra])
    if words[:2] == ["python", "-c"]:
        return command
    raise AssertionError(f"the README test does not know how to run: {command}")


def test_blocks_are_found_joined_and_marked():
    text = ("Intro\n\n    make demo    # a comment\n    make test\n\nText\n\n"
            f"{CHECK_MARKER}\n    python jobs/x.py a=1 \\\n        b=2\n\nOutput:\n\n"
            "    vader (trained on): 0.1 -> 0.2\n")
    blocks = command_blocks(text)
    assert [(b.commands, b.check_only) for b in blocks] == [
        (["make demo    # a comment", "make test"], False),
        (["python jobs/x.py a=1 b=2"], True)]
    venv = Path("/v")
    assert with_small_overrides("make test", venv=venv) is None
    demo = shlex.split(with_small_overrides('make demo ARGS="evolve.steps=3"  # c', venv=venv))
    assert demo[-1] == f"ARGS=evolve.steps=3 {SMALL}" and "-o" in demo
    assert with_small_overrides("python jobs/train.py data=p", venv=venv).endswith(SMALL)
    assert with_small_overrides("python jobs/prepare.py --output x", venv=venv) == \
        "python jobs/prepare.py --output x"


def test_the_readme_states_what_the_test_changes():
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert f"`{SMALL}`" in text and f"`{BENCH_SMALL}`" in text
    assert "tests/test_readme.py" in text
    blocks = command_blocks(README.read_text(encoding="utf-8"))
    assert any(b.check_only for b in blocks) and any(not b.check_only for b in blocks)


# ---------------------------------------------------------------------------------------------
# Checked, not run.
# ---------------------------------------------------------------------------------------------

def _help(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=job_env(PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def check_command(command: str) -> None:
    """Validate a command that cannot run here (see the module docstring).

    Raises:
        AssertionError: An unknown extra, flag, job or recipe key.
    """
    import importlib

    import tomllib

    from lire_ray.config import load_recipe

    words = shlex.split(command, comments=True)
    if "&&" in words:
        return  # a shell line such as creating a virtual environment
    if words[:2] == ["pip", "install"]:
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"]
        named = [m.group(1) for w in words if (m := re.fullmatch(r"\.\[(.+)\]", w))]
        assert named, command
        for group in named:
            assert set(group.split(",")) <= set(extras), f"no such extra: {group}"
        return
    if words[:2] == ["ray", "start"]:
        text = _help([str(BIN / "ray"), "start", "--help"])
        for flag in (w.split("=")[0] for w in words if w.startswith("--")):
            assert flag in text, f"ray start has no {flag}"
        return
    if words[:3] == ["ray", "job", "submit"]:
        words = words[words.index("--") + 1:]
    assert words[0] == "python" and words[1].startswith("jobs/"), command
    script = ROOT / words[1]
    assert script.is_file(), f"no such job: {words[1]}"
    text = _help([sys.executable, str(script), "--help"])
    for flag in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
        assert flag in text, f"{words[1]} has no {flag}"
    if "--config" in words:
        module = importlib.import_module(f"jobs.{script.stem}")
        aliases = getattr(module, "ALIASES", {})
        # Dotted keys are recipe overrides; short ones are the job's aliases or its own options.
        overrides = [w for w in words[2:] if "=" in w and not w.startswith("--")
                     and ("." in w.split("=")[0] or w.split("=")[0] in aliases)]
        load_recipe(ROOT / words[words.index("--config") + 1], overrides, aliases=aliases)


def test_checked_blocks_are_valid():
    checked = [c for b in command_blocks(README.read_text(encoding="utf-8")) if b.check_only
               for c in b.commands]
    assert checked
    for command in checked:
        check_command(command)


# ---------------------------------------------------------------------------------------------
# Run, in order.
# ---------------------------------------------------------------------------------------------

def _copy_repository(dest: Path) -> None:
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], cwd=ROOT, capture_output=True,
                                check=True, timeout=60).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("the README test copies the repository's files with git")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)  # keeps mtimes: make must not think it changed


@pytest.fixture(scope="module")
def shared_ray():
    """One local Ray cluster for every job of the README (each would start its own)."""
    import ray

    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    info = ray.init(num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1",
                    namespace="readme-test")
    try:
        yield info.address_info["address"]
    finally:
        ray.shutdown()


@pytest.mark.integration
def test_every_readme_command_runs_in_order(tmp_path, shared_ray, tiny_cache):
    repo = tmp_path / "repo"
    _copy_repository(repo)
    # The tiny policy as its first use builds it (minutes on a busy machine), built once per
    # test session; the recipe's default run.cache_dir.
    shutil.copytree(tiny_cache, repo / ".cache" / "lire-ray")
    venv = Path(sys.prefix)
    env = job_env(PYTHONPATH=str(repo), RAY_ADDRESS=shared_ray)
    # Under `make test`, make passes its own command-line variables (ARGS) to sub-makes.
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "VIRTUAL_ENV"):
        env.pop(name, None)
    ran = []
    for block in command_blocks((repo / "README.md").read_text(encoding="utf-8")):
        if block.check_only:
            continue
        for command in block.commands:
            actual = with_small_overrides(command, venv=venv)
            if actual is None:
                continue
            proc = subprocess.run(["bash", "-c", actual], cwd=repo, env=env,
                                  capture_output=True, text=True, timeout=1800)
            assert proc.returncode == 0, (f"README line {block.line}: {command}\n"
                                          + proc.stdout[-3000:] + proc.stderr[-3000:])
            ran.append((command, proc))
    commands = [c for c, _ in ran]
    assert sum(c.startswith("make demo") for c in commands) == 2
    assert any("jobs/sample.py" in c for c in commands)
    run = repo / "runs" / "tiny"
    # make demo ARGS="evolve.steps=3" continued the demo's run and reported the step-3 policy.
    assert json.loads((run / "state.json").read_text())["completed"] == [1, 2, 3]
    assert (run / "eval_after_e3.json").is_file()
    (history,) = (run / "config_history.jsonl").read_text().splitlines()
    assert json.loads(history)["changes"] == {"evolve.steps": {"old": 2, "new": 3}}
    third = next(p for c, p in ran if "evolve.steps=3" in c)
    assert "held-out mean reward" in third.stdout
    # The jobs that ran after it wrote beside the run without breaking its resume.
    assert (run / "pools" / "sampled" / "manifest.json").is_file()
    again = subprocess.run(["bash", "-c", with_small_overrides(
        'make demo ARGS="evolve.steps=3"', venv=venv)], cwd=repo, env=env,
        capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert os.path.getsize(run / "config_history.jsonl") == len(history) + 1
    # What the README's comparison and evaluation commands wrote (the checks of these two jobs
    # live here: running them a second time elsewhere would repeat minutes of work).
    _check_compare(repo / "runs" / "tiny-compare" / "compare", seeds=(0, 1))
    _check_evaluate(run / "eval", base_recipe=repo / "configs" / "tiny.yaml")



def _small_value(key: str) -> int:
    return int(next(w for w in SMALL.split() if w.startswith(f"{key}=")).split("=")[1])


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _check_pngs(out: Path, report_text: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report_text)
    assert links, "the report links no plot"
    for link in links:
        data = (out / link).read_bytes()
        assert data[:8] == PNG_MAGIC, link
        assert mpimg.imread(out / link).ndim == 3, link
    return links


def _check_compare(out: Path, *, seeds: tuple[int, ...]) -> None:
    """``jobs/compare.py --losses lire dpo``: the Table 2 rows, one pool every run trained on,
    a complete checkpoint per (loss, seed), the plots."""
    from lire_ray.pool import verify_pool

    report = (out / "report.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    table = report.split("## Methods (paper Table 2)")[1].split("##")[0]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| method")}
    assert set(rows) == {"base policy (no training)", "lire", "dpo"}, rows
    assert set(metrics["table"]) == {"base", "lire", "dpo"}
    for method in ("lire", "dpo"):
        cells = metrics["table"][method]
        assert cells["avg_win_rate"]["n"] == len(seeds)
        assert 0.0 <= cells["avg_win_rate"]["mean"] <= 1.0
        # Several seeds: the table gives the mean with an interval.
        assert f"{cells['reward/vader']['mean']:.4f}" in rows[method] and "±" in rows[method]
    prompts = _small_value("data.max_prompts")
    manifest = verify_pool(out / "pool")
    assert manifest["num_rows"] == prompts and manifest["num_candidates"] == 4 * prompts
    # The report describes that pool, not the prompt rows it was sampled from.
    assert metrics["setup"]["pool"]["k_rows"] == {"4": prompts}
    assert sorted((r["loss"], r["seed"]) for r in metrics["runs"]) == sorted(
        (loss, s) for loss in ("lire", "dpo") for s in seeds)
    for run in metrics["runs"]:
        assert (out / "checkpoints" / f"{run['loss']}-s{run['seed']}" / "COMPLETE").is_file()
        assert _finite(run["final_loss"]) and _finite(run["kl"]["value"])
        assert all(0.0 <= v <= 1.0 for v in run["table"]["win_rate"].values())
    links = _check_pngs(out, report)
    assert {"plots/frontier.png", "plots/training.png", "plots/win_rate_vs_k_afinn.png"} \
        <= set(links)


def _check_evaluate(out: Path, *, base_recipe: Path) -> None:
    """``jobs/evaluate.py policy=<checkpoint>``: every judge at every temperature for the base
    and the trained policy, KL to the reference (the base: its own KL vanishes), negative
    flips, Best-of-n, and the rendered text of every held-out prompt."""
    from lire_ray.config import load_recipe
    from lire_ray.inputs import load_prompt_rows

    recipe = load_recipe(base_recipe, [])
    judges, temps = list(recipe.eval.judges), list(recipe.eval.temperatures)
    kl_samples, best_of_n = recipe.eval.kl_samples, list(recipe.eval.best_of_n)
    prompts = _small_value("data.eval_prompts")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["judges"] == judges and metrics["prompts"] == prompts
    rows = load_prompt_rows(recipe.data.eval or "", prompts)
    # The tiny task renders no chat template: the recorded text is the prompt itself.
    assert metrics["held_out_prompts"] == [{"prompt_id": r.prompt_id, "prompt_text": r.prompt}
                                           for r in rows]
    for key in ("base", "policy"):
        by_t = {r["temperature"]: r for r in metrics[key]["temperatures"]}
        assert set(by_t) == set(temps)
        for t, rec in by_t.items():
            assert rec["samples_per_prompt"] == (1 if t == 0.0 else kl_samples)
            assert set(rec["mean"]) == set(judges)
            assert all(_finite(v) for v in rec["mean"].values())
            assert all(0.0 <= v <= 1.0 for v in rec["win_rate"].values())
            assert math.isclose(rec["avg_win_rate"],
                                sum(rec["win_rate"].values()) / len(judges), abs_tol=1e-12)
        kl = metrics[key]["kl"]
        assert kl["n"] + kl["excluded"] == prompts * kl_samples and kl["n"] >= prompts
        assert _finite(kl["value"]) and _finite(kl["stderr"])
    # The reference is the base policy: KL(base || base) vanishes (sampler and reference
    # compute the same float32 forward; the slack covers summation order).
    base_kl = metrics["base"]["kl"]
    assert abs(base_kl["value"]) <= 4 * base_kl["stderr"] + 1e-4, base_kl
    # The trained checkpoint is not the reference: its per-sample log-ratios spread out.
    assert metrics["policy"]["kl"]["stderr"] > 1e3 * max(base_kl["stderr"], 1e-6)
    assert set(metrics["negative_flip_rate"]) == set(judges)
    assert all(0.0 <= v <= 1.0 for v in metrics["negative_flip_rate"].values())
    bon = {b["n"]: b for b in metrics["best_of_n"]["results"]}
    assert set(bon) == set(best_of_n) and metrics["best_of_n"]["picker"] == judges[0]
    # The n samples extend the smaller n's (same seeds), so picking by the first judge among
    # more of them cannot lower the pick's mean score under that judge.
    ns = sorted(bon)
    assert all(bon[b]["mean"][judges[0]] >= bon[a]["mean"][judges[0]]
               for a, b in zip(ns, ns[1:]))
    assert metrics["human"]["mean"].keys() == set(judges)
    _check_pngs(out, (out / "report.md").read_text())
