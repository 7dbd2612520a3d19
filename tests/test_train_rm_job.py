"""``jobs/train_rm.py`` end to end (real Ray Train + DeepSpeed on CPU) on a tiny BERT encoder the
test builds: a separable preference fixture is learned well above chance, the saved folder
scores through the reward actor as a ``kind: hf`` reward model exactly as a direct forward
pass does, and a pool without preferences is refused before Ray starts."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from _selfenhance import ROOT, job_env

from lire_ray.pool import HUMAN, PoolRow, write_pool

pytestmark = pytest.mark.integration

GOOD = ["great", "wonderful", "lovely", "amazing", "nice"]
BAD = ["terrible", "awful", "sad", "boring", "poor"]
SUBJECTS = ["the movie", "this book", "the food", "our trip", "the hotel", "the song"]


def _rows(n: int, seed: int, labelled: bool = True) -> list[PoolRow]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        s = rng.choice(SUBJECTS)
        good, bad = f"{s} was {rng.choice(GOOD)}.", f"{s} was {rng.choice(BAD)}."
        first = rng.random() < 0.5  # the preferred one on either side
        rows.append(PoolRow(prompt_id=f"{seed}-{i}", prompt="Write a short review.",
                            responses=(good, bad) if first else (bad, good),
                            sources=(HUMAN, HUMAN), policy_version=(-1, -1),
                            preferred=(0 if first else 1) if labelled else -1))
    return rows


def _run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "jobs/train_rm.py", *args], env=job_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from lire_ray.demo.tiny_models import build_tiny_encoder

    base = tmp_path_factory.mktemp("rm")
    encoder = build_tiny_encoder(base / "encoder")
    write_pool(_rows(64, 1), base / "train")
    write_pool(_rows(24, 2), base / "heldout")
    run = base / "run"
    proc = _run("--config", "configs/tiny-labels.yaml", f"data={base / 'train'}",
                f"eval_data={base / 'heldout'}", f"backbone={encoder}", f"run.dir={run}",
                "rm_train.template=qa", "rm_train.max_length=32", "train.lr=3e-3",
                "train.epochs=3", "train.micro_batch_prompts=8", "ray.address=local",
                "output=rm")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return base, run / "rm", proc


def test_a_separable_fixture_is_learned_and_reported(trained):
    _, out, proc = trained
    assert (out / "model" / "COMPLETE").is_file() and (out / "report.md").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    learned = metrics["heldout"]["learned"]
    assert learned["pairs"] == 24 and learned["accuracy"] >= 0.9, learned
    assert learned["mean_margin"] > 0
    assert sum(b["n"] for b in learned["calibration"]) == 24
    report = (out / "report.md").read_text()
    for plot in ("reward_histogram.png", "calibration.png", "training.png"):
        assert (out / "plots" / plot).is_file() and f"plots/{plot}" in report
    history = [json.loads(line) for line in
               (out / "model" / "train_history.jsonl").read_text().splitlines()]
    assert len(history) == 3 * 8 and sum(h["prompts"] for h in history if h["epoch"] == 1) == 64
    assert history[-1]["loss"] < history[0]["loss"]
    assert "held-out pair accuracy" in proc.stdout


def test_the_saved_model_scores_through_the_reward_actor(trained):
    """The reward actor (as the main job hosts it) loads the folder as ``kind: hf`` and gives
    the scores of a plain transformers forward pass on the qa-encoded pair."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from actors.reward import RewardActor
    from lire_ray.config import RewardModelConfig

    _, out, _ = trained
    cfg = RewardModelConfig(name="rm", kind="hf", path=str(out / "model"), template="qa",
                            max_length=32)
    actor = RewardActor([cfg], device="cpu")
    prompts = ["Write a short review."] * 2
    responses = ["the food was lovely.", "the food was awful."]
    got = actor.score(prompts, responses)["rm"]
    tok = AutoTokenizer.from_pretrained(out / "model")
    model = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    with torch.no_grad():
        want = model(**tok(prompts, responses, padding=True, return_tensors="pt")).logits[:, 0]
    assert got == pytest.approx(want.tolist(), abs=1e-5)
    assert got[0] > got[1]
    assert tok.truncation_side == "left"  # saved with the tokenizer: scoring cuts as training


def test_a_pool_without_preferences_is_refused_before_ray(trained):
    base, _, _ = trained
    write_pool(_rows(8, 3, labelled=False), base / "unlabelled")
    run = base / "run-bad"
    proc = _run("--config", "configs/tiny-labels.yaml", f"data={base / 'unlabelled'}",
                f"backbone={base / 'encoder'}", f"run.dir={run}", timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert str(base / "unlabelled") in proc.stderr and "preferred" in proc.stderr
    assert "no row has a preferred candidate" in proc.stderr and not run.exists()
