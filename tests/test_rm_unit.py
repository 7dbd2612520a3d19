"""Reward-model training pieces without Ray: the Bradley-Terry loss against a hand computation,
pairs from pool rows, the refusals of bad data (naming pool and field), the evaluation numbers,
and one DeepSpeed step of a decoder backbone whose tokenizer has no pad token."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lire_ray.config import load_recipe
from lire_ray.errors import DataError
from lire_ray.losses import bradley_terry_loss
from lire_ray.pool import HUMAN, PoolRow, rows_to_table, table_to_rows, write_pool
from lire_ray.rm.data import load_pair_data
from lire_ray.rm.evaluate import agreement, calibration, pair_metrics
from lire_ray.rm.pairs import PREFERENCE, preference_pairs, row_pairs, split_rows


def _row(pid: str, responses, *, preferred=-1, rewards=None, metadata=None) -> PoolRow:
    k = len(responses)
    return PoolRow(prompt_id=pid, prompt=f"prompt {pid}", responses=tuple(responses),
                   sources=(HUMAN,) * k, policy_version=(-1,) * k, preferred=preferred,
                   rewards=rewards or {}, metadata=json.dumps(metadata) if metadata else None)


def test_bradley_terry_loss_matches_a_hand_computation():
    chosen = torch.tensor([2.0, 0.5, -1.0], requires_grad=True)
    rejected = torch.tensor([1.0, 0.5, 1.0])
    loss, m = bradley_terry_loss(chosen, rejected)
    # gaps 1, 0, -2: -log sigmoid(g) = log(1 + exp(-g))
    want = [math.log(1 + math.exp(-1.0)), math.log(2.0), math.log(1 + math.exp(2.0))]
    assert loss.tolist() == pytest.approx(want, rel=1e-6)
    assert float(m["accuracy"]) == pytest.approx(1 / 3)  # the tie counts as wrong
    assert float(m["margin"]) == pytest.approx(-1 / 3)
    loss.sum().backward()
    # d/dc -log sigmoid(c - r) = -(1 - sigmoid(c - r)) = -sigmoid(r - c)
    assert chosen.grad.tolist() == pytest.approx(
        [-1 / (1 + math.exp(1.0)), -0.5, -1 / (1 + math.exp(-2.0))], rel=1e-6)
    with_margin, _ = bradley_terry_loss(chosen.detach(), rejected, margin=1.0)
    assert with_margin.tolist() == pytest.approx(
        [math.log(2.0), math.log(1 + math.e), math.log(1 + math.exp(3.0))], rel=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        bradley_terry_loss(chosen, rejected[:2])


def test_pair_schemes_follow_the_ranking_and_skip_ties():
    scores = [0.2, 0.9, 0.2, -1.0]
    assert row_pairs(scores, "best_vs_rest") == [(1, 0), (1, 2), (1, 3)]
    assert row_pairs(scores, "best_vs_worst") == [(1, 3)]
    assert sorted(row_pairs(scores, "all_ranked")) == [(0, 3), (1, 0), (1, 2), (1, 3), (2, 3)]
    assert row_pairs([1.0, 1.0], "all_ranked") == [] and row_pairs([1.0], "all_ranked") == []


def test_pairs_from_labels_and_from_reward_scores():
    rows = [_row("a", ["x", "y", "z"], preferred=2),
            _row("b", ["p", "q"], metadata={"labels": [False, True]}),
            _row("c", ["only"], preferred=0),
            _row("d", ["u", "v"])]
    table, stats = preference_pairs(rows_to_table(rows), source="pool-x", preference="label",
                                    scheme="best_vs_rest")
    got = [(r.prompt_id, r.responses, r.preferred, dict(r.rewards)) for r in
           table_to_rows(table)]
    assert got == [("a/2>0", ("z", "x"), 0, {PREFERENCE: (1.0, 0.0)}),
                   ("a/2>1", ("z", "y"), 0, {PREFERENCE: (1.0, 0.0)}),
                   ("b/1>0", ("q", "p"), 0, {PREFERENCE: (1.0, 0.0)})]
    assert (stats.rows, stats.pairs, stats.single_candidate, stats.no_preference) == (4, 3, 1, 1)
    scored = [_row("r", ["lo", "hi", "mid"], rewards={"rm": (0.0, 2.0, 1.0)})]
    table, _ = preference_pairs(rows_to_table(scored), source="s", preference="rm",
                                scheme="all_ranked")
    assert sorted(r.responses for r in table_to_rows(table)) == [
        ("hi", "lo"), ("hi", "mid"), ("mid", "lo")]


@pytest.mark.parametrize("rows, preference, field, words", [
    ([_row("a", ["x", "y"]), _row("b", ["p", "q"])], "label", "preferred",
     "no row has a preferred candidate"),
    ([_row("a", ["x", "y"], rewards={"other": (1.0, 0.0)})], "rm", "rewards.rm",
     "scores of reward model 'rm'"),
    ([_row("a", ["x"], preferred=0), _row("b", ["y"], preferred=0)], "label", "responses",
     "fewer than two candidates"),
    ([_row("a", ["x", "y"], rewards={"rm": (1.0, 1.0)}),
      _row("b", ["p", "q", "r"], rewards={"rm": (0.5, 0.5, 0.5)})], "rm", "rewards.rm",
     "ties only"),
])
def test_data_that_gives_no_pair_is_refused_naming_pool_and_field(rows, preference, field,
                                                                 words):
    with pytest.raises(DataError) as err:
        preference_pairs(rows_to_table(rows), source="pools/bad", preference=preference,
                         scheme="best_vs_rest")
    assert err.value.field == field and err.value.source == "pools/bad"
    assert words in str(err.value) and "pools/bad" in str(err.value)


def test_load_pair_data_holds_out_whole_prompts(tmp_path):
    rows = [_row(f"p{i}", [f"good {i}", f"bad {i}", f"worse {i}"], preferred=0)
            for i in range(20)]
    write_pool(rows, tmp_path / "pool")
    recipe = load_recipe(None, [f"data.train={tmp_path / 'pool'}", "rm_train.eval_fraction=0.25",
                                "data.eval=null"])
    data = load_pair_data(recipe)
    assert data.train.num_rows == 15 * 2 and data.heldout.num_rows == 5 * 2
    src = {json.loads(m)["source_prompt_id"] for m in data.train.column("metadata").to_pylist()}
    held = {json.loads(m)["source_prompt_id"]
            for m in data.heldout.column("metadata").to_pylist()}
    assert len(src) == 15 and len(held) == 5 and not src & held
    # The same seed gives the same split; the chit-chat prompt set (one candidate) is refused.
    train, _ = split_rows(rows_to_table(rows), 0.25, seed=0, source="x")
    assert sorted(train.column("prompt_id").to_pylist()) == sorted(src)
    with pytest.raises(DataError, match="fewer than two candidates") as err:
        load_pair_data(load_recipe(None, ["data.train=builtin:reviews", "data.eval=null"]))
    assert err.value.source == "builtin:reviews" and err.value.field == "responses"


def test_calibration_and_agreement_by_hand():
    gaps = [0.1, -0.2, 3.0, 2.0]
    buckets = calibration(gaps, 2)
    assert [b["n"] for b in buckets] == [2, 2]
    assert buckets[0]["accuracy"] == 0.5 and buckets[1]["accuracy"] == 1.0
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert buckets[0]["predicted"] == pytest.approx((sig(0.1) + sig(0.2)) / 2)
    m = pair_metrics([1.0, 0.0, 3.0, 2.0], [0.9, 0.2, 0.0, 0.0], buckets=2)
    assert m["accuracy"] == 0.75 and m["mean_margin"] == pytest.approx(sum(gaps) / 4)
    a = agreement(([1.0, 0.0, 3.0, 2.0], [0.9, 0.2, 0.0, 0.0]),
                  ([1.0, 1.0, 0.0, 5.0], [0.0, 0.0, 1.0, 5.0]))
    # other gaps: 1, 1, -1, 0 -> accuracy 2/4, one tie; same side as learned: pair 0 only
    assert a["accuracy"] == 0.5 and a["ties"] == 0.25 and a["same_preference"] == 0.25


def test_a_decoder_backbone_without_pad_token_trains_one_step(tmp_path, tiny_cache):
    """A Llama tokenizer with its pad token removed pads with eos; the model's config records
    that id, so the score is read at the last real token of left- and right-padded inputs alike,
    and the Bradley-Terry step runs through DeepSpeed."""
    from _dist import one_rank_group

    from lire_ray.demo.tiny_policy import ensure_tiny_policy
    from lire_ray.models import load_tokenizer
    from lire_ray.rm.worker import load_reward_backbone, rm_train_step
    from lire_ray.training.engine import build_engine

    src = ensure_tiny_policy(tiny_cache)
    tok = load_tokenizer(src)
    tok.pad_token = None
    backbone = tmp_path / "decoder"
    tok.save_pretrained(backbone)
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(src)
    lm.config.pad_token_id = None
    lm.save_pretrained(backbone)
    tokenizer, model = load_reward_backbone(str(backbone))
    assert tokenizer.pad_token == tokenizer.eos_token
    assert model.config.pad_token_id == tokenizer.eos_token_id
    model.eval()
    short = tokenizer(["It was great."], return_tensors="pt")
    with torch.no_grad():
        alone = model(**short).logits[0, 0]
        for side in ("left", "right"):
            tokenizer.padding_side = side
            batch = tokenizer(["It was great.", "The food was awful and the staff were rude."],
                              padding=True, return_tensors="pt")
            assert float(model(**batch).logits[0, 0]) == pytest.approx(float(alone), abs=1e-5)
    rows = [_row(f"r{i}", ["It was great.", "It was awful."], preferred=0) for i in range(4)]
    pairs, _ = preference_pairs(rows_to_table(rows), source="t", preference="label",
                                scheme="best_vs_rest")
    recipe = load_recipe(None, ["train.zero_stage=2", "train.lr=1e-3"])
    with one_rank_group():
        model.train()
        engine = build_engine(model, recipe.train, use_gpu=False, total_steps=2)
        stats = rm_train_step(engine, [pairs.slice(0, 2), pairs.slice(2, 2)], tokenizer,
                              template="plain", max_length=32, margin=0.0)
    assert stats.num_prompts == 4 and math.isfinite(stats.loss) and stats.grad_norm > 0
    assert stats.metrics["accuracy"] in (0.0, 1.0)  # four copies of one pair


def test_lora_targets_are_checked_and_the_merged_copy_scores_like_the_adapter(tmp_path):
    from lire_ray.config import LoraConfig
    from lire_ray.demo.tiny_models import build_tiny_encoder
    from lire_ray.errors import ConfigError
    from lire_ray.rm.worker import apply_reward_lora, check_lora_targets, load_reward_backbone

    enc = str(build_tiny_encoder(tmp_path / "enc"))
    with pytest.raises(ConfigError, match="q_proj.*no such modules in BertForSequence"):
        check_lora_targets(enc, LoraConfig(enabled=True))
    lora = LoraConfig(enabled=True, target_modules=["query", "value"], dropout=0.0)
    check_lora_targets(enc, lora)
    torch.manual_seed(0)
    tokenizer, model = load_reward_backbone(enc)
    peft_model = apply_reward_lora(model, lora, seed=0)
    trainable = {n.split(".")[-2] if "lora" in n else n for n, p in
                 peft_model.named_parameters() if p.requires_grad}
    assert any("classifier" in n for n in trainable) and any("pooler" in n for n in trainable)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    batch = tokenizer(["how was it?"], ["it was great."], return_tensors="pt")
    import copy

    peft_model.eval()
    merged = copy.deepcopy(peft_model).merge_and_unload().eval()
    with torch.no_grad():
        want, got = peft_model(**batch).logits, merged(**batch).logits
    assert float(got) == pytest.approx(float(want), abs=1e-5)
    assert not any("lora" in k for k in merged.state_dict())
