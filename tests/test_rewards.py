"""Reward models driven as plain objects: Python scorers, a tiny HF classifier, templates."""

from __future__ import annotations

import math

import pytest
import torch

from lire_ray.config import RewardModelConfig
from lire_ray.errors import DataError, ModelLoadError
from lire_ray.models import build_tiny_policy, build_tiny_reward_model
from lire_ray.pool import PoolRow
from lire_ray.rewards import NormStats, RewardSet, format_reward_input


def length_reward(prompts, responses):
    return [float(len(r)) for r in responses]


def nan_reward(prompts, responses):
    return [math.nan for _ in responses]


def short_reward(prompts, responses):
    return [1.0]


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory):
    root = tmp_path_factory.mktemp("rm")
    policy = build_tiny_policy(root / "policy")
    return build_tiny_reward_model(root / "rm", tokenizer_dir=policy)


def test_python_scorer_and_several_models(tiny_rm):
    rs = RewardSet([
        RewardModelConfig(name="len", kind="python", path=f"{__name__}:length_reward"),
        RewardModelConfig(name="rm", kind="hf", path=str(tiny_rm), batch_size=2),
    ])
    prompts, responses = ["p1", "p2", "p3"], ["a", "bbb", "a"]
    scores = rs.score(prompts, responses)
    assert set(scores) == {"len", "rm"}
    assert scores["len"] == [1.0, 3.0, 1.0]
    # Identical text scores identically, whatever its batch.
    again = rs.score(["p3"], ["a"])
    assert again["rm"][0] == pytest.approx(scores["rm"][2], abs=1e-6)


def test_hf_scores_equal_direct_model_call(tiny_rm):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rs = RewardSet([RewardModelConfig(name="rm", path=str(tiny_rm), template="openassistant")])
    got = rs.score(["How are you?"], ["Fine."])["rm"][0]
    tok = AutoTokenizer.from_pretrained(tiny_rm)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_rm).eval()
    text = "<|prompter|>How are you?<|endoftext|><|assistant|>Fine.<|endoftext|>"
    with torch.no_grad():
        want = model(**tok([text], return_tensors="pt")).logits[0, 0].item()
    assert got == pytest.approx(want, abs=1e-5)


def test_truncation_is_counted(tiny_rm):
    rs = RewardSet([RewardModelConfig(name="rm", path=str(tiny_rm), max_length=8)])
    rs.score(["a long prompt " * 10, "hi"], ["and a long answer " * 10, "ok"])
    assert rs.truncation_counts() == {"rm": 1}


def test_templates():
    assert format_reward_input("plain", "Q", "A") == "QA"
    assert format_reward_input("qa", "Q", "A") == ("Q", "A")
    assert format_reward_input("openassistant", "Q", "A") == \
        "<|prompter|>Q<|endoftext|><|assistant|>A<|endoftext|>"
    with pytest.raises(ModelLoadError):
        format_reward_input("chat", "Q", "A", tokenizer=None)


def test_bad_scorers_fail_clearly():
    with pytest.raises(ModelLoadError, match="no_such_module"):
        RewardSet([RewardModelConfig(name="x", kind="python", path="no_such_module:f")])
    with pytest.raises(ModelLoadError, match="not a function"):
        RewardSet([RewardModelConfig(name="x", kind="python", path=f"{__name__}:nothing")])
    with pytest.raises(DataError, match="non-finite"):
        RewardSet([RewardModelConfig(name="x", kind="python",
                                     path=f"{__name__}:nan_reward")]).score(["p"], ["r"])
    with pytest.raises(DataError, match="1 scores for 2"):
        RewardSet([RewardModelConfig(name="x", kind="python",
                                     path=f"{__name__}:short_reward")]).score(["p", "q"], ["r", "s"])
    with pytest.raises(ModelLoadError, match="/nonexistent"):
        RewardSet([RewardModelConfig(name="x", path="/nonexistent/rm")])


def test_zscore_normalisation_is_fitted_once_and_frozen():
    rs = RewardSet([RewardModelConfig(name="len", kind="python", path=f"{__name__}:length_reward",
                                      normalize="zscore")])
    stats = rs.fit_normalisation(["p"] * 3, ["a", "bb", "ccc"])
    assert stats["len"].mean == pytest.approx(2.0)
    assert stats["len"].std == pytest.approx(math.sqrt(2 / 3))
    # Later batches use the frozen statistics, not their own.
    assert rs.score(["p"], ["dddd"])["len"][0] == pytest.approx((4 - 2) / math.sqrt(2 / 3))
    assert NormStats.fit([5.0, 5.0]).std == 1.0


def test_reward_actor_scores_rows_as_plain_object():
    from actors.reward import RewardActor

    actor = RewardActor([RewardModelConfig(name="len", kind="python",
                                           path=f"{__name__}:length_reward")])
    rows = [PoolRow(prompt_id="a", prompt="p", responses=["x", "yy"], sources=["human"] * 2,
                    policy_version=[-1, -1]),
            PoolRow(prompt_id="b", prompt="q", responses=["zzz"], sources=["human"],
                    policy_version=[-1])]
    out = actor.score_rows(rows)
    assert [r.rewards["len"] for r in out] == [(1.0, 2.0), (3.0,)]
    assert actor.ping() == "reward"
