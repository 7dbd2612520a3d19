"""The studies' pieces without Ray: arms and per-loss parameters reaching the loss, the SFT
target ``human`` on HH pairs (hand-computed), refusals of unusable pools before Ray starts,
sweep parsing, the grid's seed statistics and the TL;DR human reference."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from _dist import naive_logps
from _studies import ROOT, label_recipe, write_hh_pairs

from lire_ray.adapters.prepare import prepare_pool
from lire_ray.collate import tokenize_group
from lire_ray.config import Recipe, load_recipe
from lire_ray.errors import ConfigError, DataError
from lire_ray.losses import build_loss
from lire_ray.pool import PoolRow, read_pool, table_to_rows, write_pool
from lire_ray.studies import candidates as cands
from lire_ray.studies.compare import loss_arms
from lire_ray.studies.grid import cell_stats, grid_table
from lire_ray.studies.sweep import parse_sweep, runner_for, sweep_arms
from lire_ray.training.step import micro_batch_loss

RECIPE = ROOT / "configs" / "tiny-compare.yaml"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from lire_ray.demo.tiny_models import build_tiny_policy
    from lire_ray.models import load_causal_lm, load_tokenizer

    path = build_tiny_policy(tmp_path_factory.mktemp("m") / "policy", seed=0)
    return load_causal_lm(path, dtype="float32").eval(), load_tokenizer(path)


@pytest.fixture(scope="module")
def hh_pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("hh")
    prepare_pool("hh", str(write_hh_pairs(root / "hh.jsonl", 4)), root / "pool")
    return root / "pool"


def _group(row: PoolRow, tok, reward: str):
    return tokenize_group(row, tok, max_prompt_tokens=64, max_response_tokens=32,
                          reward_name=reward, chat_template="never")


# ---------------------------------------------------------------------------------------------
# Per-loss parameters.
# ---------------------------------------------------------------------------------------------

def test_params_by_name_reach_every_arm_and_are_described():
    recipe = load_recipe(RECIPE, ["loss.params_by_name.dpo.beta=0.5",
                                  "loss.params_by_name.slic.pairs=all_ranked"])
    arms = {a.label: a for a in loss_arms(recipe, ["lire", "dpo", "ipo", "slic", "sft"])}
    desc = {k: a.describe() for k, a in arms.items()}
    assert desc["dpo"]["params"]["beta"] == 0.5 and desc["ipo"]["params"]["beta"] == 0.1
    assert desc["lire"]["params"]["temperature"] == 2.0  # loss.params of the recipe's loss
    assert desc["dpo"]["pairing"] == "pairs: best_vs_rest"
    assert desc["slic"]["pairing"] == "pairs: all_ranked"
    assert desc["lire"]["pairing"].startswith("listwise") and desc["sft"]["needs_reference"] \
        is False
    with pytest.raises(ConfigError, match="params_by_name.lire"):
        load_recipe(RECIPE, ["loss.params_by_name.lire.temperature=1"])
    with pytest.raises(ConfigError, match=r"'dpo': unknown parameter\(s\) temp"):
        loss_arms(load_recipe(RECIPE, ["loss.params_by_name.dpo.temp=1"]), ["dpo"])[0] \
            .describe()


def test_dpo_beta_from_params_by_name_changes_the_trained_loss(model, hh_pool):
    net, tok = model
    row = table_to_rows(read_pool(hh_pool))[0]
    row = PoolRow(**{**row.__dict__, "rewards": {"label": (1.0, 0.0)},
                     "ref_logps": (-30.0, -20.0)})
    group = _group(row, tok, "label")
    s = naive_logps(net, group).detach()
    got = {}
    for beta in (0.1, 0.5):
        recipe = load_recipe(RECIPE, [f"loss.params_by_name.dpo.beta={beta}"])
        arm = loss_arms(recipe, ["dpo"])[0]
        # As the trainer worker does: the recipe travels as JSON and is validated again.
        worker = Recipe.model_validate(arm.recipe.model_dump(mode="json"))
        loss = build_loss(worker.loss.name, worker.loss.params)
        with torch.no_grad():
            out = micro_batch_loss(net, [group], loss, packing="padded", chunk_size=64)
        margin = (s[0] - (-30.0)) - (s[1] - (-20.0))
        want = float(-F.logsigmoid(beta * margin))
        assert out.loss_sum.item() == pytest.approx(want, rel=1e-4)
        assert out.metrics["candidates"] == 2.0
        got[beta] = out.loss_sum.item()
    assert got[0.1] != pytest.approx(got[0.5])


# ---------------------------------------------------------------------------------------------
# SFT target "human": the labelled preferred answer, whatever the training reward prefers.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,params", [
    ("lire", {"sft_weight": 0.5, "sft_target": "human", "temperature": 2.0}),
    ("sft", {"target": "human"}),
])
def test_sft_target_human_trains_on_the_preferred_answer(model, hh_pool, name, params):
    net, tok = model
    row = table_to_rows(read_pool(hh_pool))[1]
    assert row.sources == ("human", "human") and row.preferred == 0
    # The reward model prefers the rejected reply: "best" would train on it, "human" must not.
    row = PoolRow(**{**row.__dict__, "rewards": {"rm": (-1.0, 2.0)}})
    group = _group(row, tok, "rm")
    assert group.human_reference == 0
    s = naive_logps(net, group).detach()
    lens = [len(r) for r in group.response_ids]
    nll = [-float(s[j]) / lens[j] for j in range(2)]
    with torch.no_grad():
        human = micro_batch_loss(net, [group], build_loss(name, params), packing="padded",
                                 chunk_size=64).loss_sum.item()
        best_params = {k: ("best" if v == "human" else v) for k, v in params.items()}
        best = micro_batch_loss(net, [group], build_loss(name, best_params), packing="padded",
                                chunk_size=64).loss_sum.item()
    listwise = 0.0
    if name == "lire":
        q = torch.softmax(s / 2.0, 0)
        r = torch.softmax(torch.tensor([-1.0, 2.0]), 0)
        listwise = -float((q * r).sum())
    weight = params.get("sft_weight", 1.0)
    assert human == pytest.approx(listwise + weight * nll[0], rel=1e-4)
    assert best == pytest.approx(listwise + weight * nll[1], rel=1e-4)


# ---------------------------------------------------------------------------------------------
# Candidates: refused before Ray starts; labels give training scores.
# ---------------------------------------------------------------------------------------------

def test_pool_mode_scores_hh_pairs_from_their_labels(tmp_path, hh_pool):
    recipe = load_recipe(label_recipe(tmp_path / "r.yaml"), [f"data.train={hh_pool}"])
    rows = cands.training_rows(recipe, "pool")
    assert [r.rewards["label"] for r in rows] == [(1.0, 0.0)] * 4
    summary = cands.pool_summary(rows)
    assert summary["k_rows"] == {"2": 4} and summary["sources"] == {"human": 8}
    assert cands.default_mode(recipe) == "pool"


def test_pool_mode_refuses_unscored_pools_and_rows_without_candidates(tmp_path, hh_pool):
    recipe = load_recipe(RECIPE, [f"data.train={hh_pool}"])  # trains on vader: not scored
    with pytest.raises(DataError, match=r"no scores from the training reward 'vader'.*no scores "
                                        r"at all") as err:
        cands.training_rows(recipe, "pool")
    assert str(hh_pool) in str(err.value) and "rewards.vader" in str(err.value)
    scored = tmp_path / "scored"
    rows = table_to_rows(read_pool(hh_pool))
    write_pool([PoolRow(**{**r.__dict__, "rewards": {"afinn": (1.0, 0.0)}}) for r in rows],
               scored)
    with pytest.raises(DataError, match=r"the pool has \['afinn'\]"):
        cands.training_rows(load_recipe(RECIPE, [f"data.train={scored}"]), "pool")
    prompts = tmp_path / "prompts"
    write_pool([PoolRow("p1", "Review of a lamp:", (), (), ())], prompts)
    with pytest.raises(DataError, match="have no candidates.*--candidates sample"):
        cands.training_rows(load_recipe(RECIPE, [f"data.train={prompts}"]), "pool")
    with pytest.raises(ConfigError, match="builtin:reviews"):
        cands.training_rows(load_recipe(RECIPE), "pool")
    assert cands.default_mode(load_recipe(RECIPE)) == "sample"


def test_compare_job_refuses_an_unscored_pool_before_ray_starts(tmp_path, hh_pool):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "compare.py"), "--config", str(RECIPE),
         f"data.train={hh_pool}", f"run.dir={tmp_path}", f"run.cache_dir={tmp_path / 'cache'}"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "training reward 'vader'" in proc.stderr and "Traceback" not in proc.stderr
    assert "Ray" not in proc.stderr.split("error:")[0]  # failed before connecting
    # ... and before the tiny policy was built or any output written.
    assert not (tmp_path / "cache").exists() and not (tmp_path / "compare").exists()


# ---------------------------------------------------------------------------------------------
# Sweeps and the grid's statistics.
# ---------------------------------------------------------------------------------------------

def test_sweep_values_and_runner():
    key, values = parse_sweep("loss.params.temperature=0.5,1,2e0")
    assert key == "loss.params.temperature" and values == [0.5, 1, 2.0]
    assert runner_for("loss.params.sft_weight") == "compare"
    assert runner_for("train.lr", self_enhance=True) == "self_enhance"
    assert runner_for("evolve.steps") == "self_enhance"
    with pytest.raises(ConfigError, match="model.policy.*once per value"):
        runner_for("model.policy")
    with pytest.raises(ConfigError, match="two distinct values"):
        parse_sweep("loss.params.temperature=1,1")
    recipe = load_recipe(RECIPE)
    arms = sweep_arms(recipe, "loss.params.sft_weight", [0, 0.02])
    assert [a.recipe.loss.params["sft_weight"] for a in arms] == [0, 0.02]
    assert arms[1].label == "loss.params.sft_weight=0.02" and arms[1].slug == "sft_weight=0.02"
    with pytest.raises(ConfigError, match="temperature.*must be > 0"):
        sweep_arms(recipe, "loss.params.temperature", [1, -1])
    with pytest.raises(ConfigError, match="--sweep train.epochs=0"):
        sweep_arms(recipe, "train.epochs", [1, 0])


def test_grid_cells_aggregate_seeds_with_worst_and_best():
    records = [{"E": e, "I": 1, "seed": s, "reward": 0.1 * e + 0.01 * s, "avg_win_rate": 0.5}
               for e in (1, 2) for s in (0, 1, 2)]
    stats = cell_stats(records, "reward")
    assert stats[(2, 1)]["mean"] == pytest.approx(0.21)
    assert (stats[(2, 1)]["worst"], stats[(2, 1)]["best"]) == (pytest.approx(0.2),
                                                                pytest.approx(0.22))
    line = grid_table(records).splitlines()[2]
    assert line.startswith("| I=1 | 0.1100 ± ") and "[0.1000, 0.1200]" in line
    assert all(math.isfinite(c["half_width"]) for c in stats.values())


# ---------------------------------------------------------------------------------------------
# TL;DR: the labelled-preferred summary is the human reference.
# ---------------------------------------------------------------------------------------------

def test_tldr_human_reference_is_the_preferred_summary(tmp_path):
    prepare_pool("tldr", str(ROOT / "tests" / "fixtures" / "tldr.jsonl"), tmp_path / "pool")
    rows = {r.prompt_id: r for r in table_to_rows(read_pool(tmp_path / "pool"))}
    a, b = rows["t3_a"], rows["t3_b"]
    # t3_a: "Cups fall." won 2 of 3 comparisons; the poster's own TL;DR stays human-written.
    assert a.human_reference == "Cups fall." and a.human_reference_index == a.preferred == 2
    assert a.sources == ("dataset", "human", "human")
    assert a.meta["policies"] == ["sup2", "ref", "pretrain"]
    # t3_b has no poster's TL;DR: before, it had no human reference and no win rate.
    assert b.human_reference == "New bike broken after a day." and b.sources[1] == "human"
