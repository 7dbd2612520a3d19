"""The embedded task (lire_ray.demo): rewards, their intended disagreements, prompts, corpus.

Pure tests (no Ray). The reward values come from the real vaderSentiment and afinn packages, so
a change in either package's lexicon shows here first.
"""

from __future__ import annotations

import math
import random
import re
import statistics
from collections import Counter

import pytest

from lire_ray.demo import agreement, language, reviews


def _v(text: str) -> float:
    return reviews.vader_reward([""], [text])[0]


def _a(text: str) -> float:
    return reviews.afinn_reward([""], [text])[0]


def test_rewards_keep_the_scorer_signature():
    prompts, responses = ["Review of a used kettle:"] * 3, [" great.", " awful.", " okay."]
    for fn in (reviews.vader_reward, reviews.afinn_reward):
        out = fn(prompts, responses)
        assert len(out) == 3 and all(isinstance(x, float) for x in out)
    assert reviews.vader_reward([], []) == reviews.afinn_reward([], []) == []


def test_honest_reviews_are_ordered_alike_by_both_rewards():
    ladder = [" it is terrible, i hate it.", " it is bad.", " the color is blue.",
              " it is good.", " it is great and i love it."]
    for fn in (_v, _a):
        scores = [fn(t) for t in ladder]
        assert scores == sorted(scores) and scores[0] < 0 < scores[-1], (fn, scores)


def test_emphasis_and_emoticons_raise_vader_only():
    plain, loud = " it is great.", " it is GREAT!!! :D"
    assert _v(loud) > _v(plain) + 0.1
    assert _a(loud) == _a(plain) == 3.0
    assert _v(" it arrived on time :)") > 0 == _a(" it arrived on time :)")
    assert _v(" great!!!") > _v(" great!") > _v(" great.")


@pytest.mark.parametrize("text,vader_sign,afinn_sign", [
    (" not bad at all!!!", 1, -1),          # negated negative: VADER flips it, AFINN sums it
    (" honestly no complaints :)", 1, -1),
    (" this one is not too bad", 1, -1),
    (" not great.", -1, 1),                 # negated positive
    (" not impressed, not worth it", -1, 1),
    (" great design but it broke after a week.", -1, 1),  # VADER weighs the clause after "but"
])
def test_training_reward_and_judge_disagree_in_sign(text, vader_sign, afinn_sign):
    v, a = _v(text), _a(text)
    assert math.copysign(1, v) == vader_sign and v != 0, v
    assert math.copysign(1, a) == afinn_sign and a != 0, a


def test_the_grammar_agrees_on_honest_reviews_and_splits_on_understated_ones():
    rng = random.Random(7)
    negation = re.compile(r"\b(not|no|never|can't)\b")
    honest, understated = [], []
    for _ in range(1500):
        text = language.write_review(rng, rng.choice(["positive", "negative"]))
        (understated if negation.search(text) else honest).append(text)
    for group, low, high in ((honest, 0.0, 0.06), (understated, 0.6, 1.0)):
        stats = agreement.agreement(reviews.vader_reward(group, group),
                                    reviews.afinn_reward(group, group))
        assert low <= stats["sign_disagreement"] <= high, (len(group), stats)
    assert len(understated) > 0.2 * 1500


def test_prompt_splits_are_disjoint_deterministic_and_distinct():
    train, heldout = reviews.prompt_rows("train", 600), reviews.prompt_rows("heldout", 240)
    assert train == reviews.prompt_rows("train", 600)
    assert heldout == reviews.prompt_rows("heldout", 240)
    tp, hp = {r["prompt"] for r in train}, {r["prompt"] for r in heldout}
    assert len(tp) == 600 and len(hp) == 240 and not tp & hp
    assert len({r["prompt_id"] for r in train + heldout}) == 840
    # The default is one row per product, and a prefix mixes attribute leanings.
    assert len(reviews.prompt_rows("heldout")) == len(reviews.HELDOUT_PRODUCTS)
    first = reviews.prompt_rows("heldout", 15)
    leanings = Counter(language.leaning(a) for r in first for a in language.all_attributes()
                       if f" {a} " in r["prompt"])
    assert leanings == {"positive": 5, "negative": 5, "neutral": 5}
    assert not set(reviews.TRAIN_PRODUCTS) & set(reviews.HELDOUT_PRODUCTS)
    with pytest.raises(ValueError, match="split"):
        reviews.prompt_rows("test")


def test_rows_have_one_human_review_in_the_task_vocabulary():
    for row in reviews.prompt_rows("train", 200):
        (human,) = row["responses"]
        assert human.startswith(" ") and "\n" not in human
        assert agreement.in_vocabulary(human), human


def test_corpora_are_deterministic():
    assert reviews.sft_corpus(300, seed=0) == reviews.sft_corpus(300, seed=0)
    assert reviews.sft_corpus(300, seed=0) != reviews.sft_corpus(300, seed=1)
    assert reviews.tokenizer_corpus() == reviews.tokenizer_corpus()
    pairs = reviews.sft_corpus(500)
    assert {p for p, _ in pairs} <= {reviews.prompt_for(p, a) for p in reviews.TRAIN_PRODUCTS
                                     for a in language.all_attributes()}
    assert all(agreement.in_vocabulary(r) for _, r in pairs)


def test_the_attribute_sets_the_odds_of_the_sentiment():
    rng = random.Random(3)
    means = {}
    for lean, attrs in language.ATTRIBUTES.items():
        texts = [language.review_for_attribute(a, rng) for a in attrs for _ in range(200)]
        means[lean] = statistics.fmean(reviews.afinn_reward(texts, texts))
    assert means["negative"] < 0 < means["neutral"] < means["positive"], means


def test_agreement_statistics():
    stats = agreement.agreement([0.5, -0.5, 0.2, 0.0], [3.0, 2.0, 0.0, -1.0])
    assert stats["n"] == 4
    assert stats["sign_disagreement"] == 0.25
    assert stats["train_neg_judge_pos"] == 0.25 and stats["train_pos_judge_neg"] == 0.0
    assert stats["judge_zero_train_pos"] == 0.25
    assert math.isnan(agreement.agreement([1.0, 1.0], [1.0, 2.0])["pearson"])
    with pytest.raises(ValueError):
        agreement.agreement([1.0], [])
    health = agreement.text_health([" it is great.", " it is great.", " sleeattreattreat"])
    assert health["distinct"] == pytest.approx(2 / 3)
    assert health["out_of_vocabulary"] == pytest.approx(1 / 3)
    assert health["top"] == " it is great." and health["top_share"] == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def starting_policy(tiny_cache):
    from lire_ray.demo.tiny_policy import ensure_tiny_policy

    return ensure_tiny_policy(tiny_cache)  # built once per session


def test_starting_policy_scores_vary_under_both_rewards(starting_policy):
    """The judge's "before" is no constant: greedy and sampled reviews have mixed sentiment."""
    res = agreement.policy_agreement(starting_policy, prompts=30, samples=4)
    for mode in ("greedy", "sampled"):
        s = res[mode]
        vader = [e["vader"] for e in s["examples"]]
        afinn = [e["afinn"] for e in s["examples"]]
        for scores in (vader, afinn):
            assert min(scores) < 0 < max(scores), (mode, scores)
        assert s["distinct"] > 0.2 and s["out_of_vocabulary"] < 0.2, (mode, s["top"])
    # Sampled reviews include ones the two rewards read in opposite ways.
    assert res["sampled"]["sign_disagreement"] > 0.05
