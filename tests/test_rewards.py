"""Reward models driven as plain objects: Python scorers, a tiny HF classifier, templates."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lire_ray.config import RewardModelConfig
from lire_ray.demo.tiny_models import build_tiny_policy, build_tiny_reward_model
from lire_ray.errors import ConfigError, DataError, ModelLoadError
from lire_ray.pool import PoolRow
from lire_ray.rewards import (
    NORM_METADATA_KEY,
    NormStats,
    RewardSet,
    format_reward_input,
    load_norm_stats,
    save_norm_stats,
    stats_from_dict,
    stats_to_dict,
)


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


def _len_configs(normalize="zscore"):
    return [RewardModelConfig(name="len", kind="python", path=f"{__name__}:length_reward",
                              normalize=normalize),
            RewardModelConfig(name="len2", kind="python", path=f"{__name__}:length_reward")]


def test_fit_normalisation_fits_only_zscore_models():
    rs = RewardSet(_len_configs())
    stats = rs.fit_normalisation(["p"] * 2, ["a", "bbb"])
    assert set(stats) == {"len"} and stats["len"] == NormStats(mean=2.0, std=1.0)
    scores = rs.score(["p"], ["aaaa"])
    assert scores == {"len": [2.0], "len2": [4.0]}
    assert rs.score_raw(["p"], ["aaaa"], ["len"]) == {"len": [4.0]}
    with pytest.raises(KeyError, match="nope"):
        rs.score_raw(["p"], ["a"], ["nope"])


def test_norm_stats_file_round_trip(tmp_path):
    stats = {"b": NormStats(mean=-0.25, std=3.5), "a": NormStats(mean=1e-9, std=1e9)}
    path = tmp_path / "sub" / "norm.json"
    save_norm_stats(path, stats)
    assert load_norm_stats(path) == stats
    # The file holds the manifest form, and nothing else is left beside it.
    assert json.loads(path.read_text()) == {"a": {"mean": 1e-9, "std": 1e9},
                                            "b": {"mean": -0.25, "std": 3.5}}
    assert [p.name for p in path.parent.iterdir()] == ["norm.json"]
    save_norm_stats(path, {"a": NormStats(mean=0.0, std=2.0)})  # rewritten in place
    assert load_norm_stats(path) == {"a": NormStats(mean=0.0, std=2.0)}


def test_norm_stats_dict_form_and_its_checks(tmp_path):
    stats = {"rm": NormStats.fit([1.0, 2.0, 6.0])}
    as_dict = stats_to_dict(stats)
    assert as_dict == {"rm": {"mean": 3.0, "std": pytest.approx(math.sqrt(14 / 3))}}
    assert stats_from_dict(as_dict) == stats
    assert stats_from_dict({"rm": {"mean": 1, "std": 2}}) == {"rm": NormStats(1.0, 2.0)}
    for bad, needle in [([1, 2], "expected"), ({"rm": {"mean": 1.0}}, "'mean' and 'std'"),
                        ({"rm": {"mean": 1.0, "std": 0.0}}, "must be positive"),
                        ({"rm": {"mean": float("nan"), "std": 1.0}}, "not a finite number"),
                        ({"rm": {"mean": "1", "std": 1.0}}, "not a finite number"),
                        ({"rm": {"mean": True, "std": 1.0}}, "not a finite number")]:
        with pytest.raises(DataError, match=needle):
            stats_from_dict(bad, source="pool/manifest.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="broken.json"):
        load_norm_stats(tmp_path / "broken.json")
    with pytest.raises(DataError, match="missing.json"):
        load_norm_stats(tmp_path / "missing.json")


def test_norm_stats_survive_a_pool_manifest(tmp_path):
    from lire_ray.pool import read_manifest, write_pool

    stats = {"rm": NormStats(mean=0.125, std=0.75)}
    rows = [PoolRow(prompt_id="a", prompt="p", responses=["x"], sources=["human"],
                    policy_version=[-1])]
    write_pool(rows, tmp_path / "pool", metadata={NORM_METADATA_KEY: stats_to_dict(stats)})
    meta = read_manifest(tmp_path / "pool")["metadata"]
    assert stats_from_dict(meta[NORM_METADATA_KEY]) == stats


def test_reward_actor_loads_its_norm_file(tmp_path):
    from actors.reward import RewardActor

    norm = tmp_path / "norm.json"
    save_norm_stats(norm, {"len": NormStats(mean=1.0, std=2.0)})
    # A restarted actor gets its original arguments: the file wins over norm_stats.
    actor = RewardActor(_len_configs(), norm_stats={"len": NormStats(mean=0.0, std=1.0)},
                        norm_file=str(norm))
    assert actor.score(["p"], ["abcde"]) == {"len": [2.0], "len2": [5.0]}
    assert actor.score_raw(["p"], ["abcde"]) == {"len": [5.0], "len2": [5.0]}
    assert actor.normalisation() == {"len": {"mean": 1.0, "std": 2.0}}
    save_norm_stats(norm, {"len": NormStats(mean=5.0, std=0.5)})
    assert actor.reload_normalisation() == {"len": {"mean": 5.0, "std": 0.5}}
    assert actor.score_rows([PoolRow(prompt_id="a", prompt="p", responses=["abcdef"],
                                     sources=["human"], policy_version=[-1])])[0].rewards == \
        {"len": (2.0,), "len2": (6.0,)}

    later = RewardActor(_len_configs(), norm_file=str(tmp_path / "not-yet.json"))
    assert later.normalisation() == {}
    # Unfitted statistics are an error, never raw scores in disguise; raw scoring still works.
    with pytest.raises(ConfigError, match="'len'.*zscore.*fit"):
        later.score(["p"], ["ab"])
    assert later.score_raw(["p"], ["ab"]) == {"len": [2.0], "len2": [2.0]}
    with pytest.raises(DataError, match="not-yet.json"):
        later.reload_normalisation()
    with pytest.raises(DataError, match="without a norm_file"):
        RewardActor(_len_configs()).reload_normalisation()
