"""The embedded default task: steer short product reviews toward positive sentiment.

Everything is generated locally (:mod:`lire_ray.demo.language`), so the task needs no download:

* prompts ``"Review of a <attribute> <product>:"``; the training and held-out splits use
  disjoint product lists and share the attributes ("premium", "refurbished", "blue", ...),
  which set the odds of a review's sentiment;
* one "human-written" review per prompt, drawn with those odds (the dataset's own candidate);
* an SFT corpus of the same kind, used to build the tiny starting policy;
* two reward functions: :func:`vader_reward` (VADER compound score, the training reward) and
  :func:`afinn_reward` (AFINN lexicon sum, the held-out judge). They share no code or lexicon.

Where the two rewards disagree, on purpose (measured with vaderSentiment 3.3.2 and afinn 0.1;
``tests/test_demo.py`` pins these cases):

* negation: "not bad at all!!!" is +0.58 to VADER and -3 to AFINN; "not great" is -0.51 and +3;
* emphasis: "!", "!!!" and ALL-CAPS words raise VADER's score ("it is great." +0.63, "it is
  GREAT!!!" +0.77) and leave AFINN's unchanged (+3);
* emoticons and some interjections: ":D" is +0.51 to VADER and 0 to AFINN, "sigh" 0 and -2;
* contrast: "great design but it broke after a week" is -0.29 to VADER, +2 to AFINN.

On honest reviews (plain sentiment words, no negation) they agree in sign about 98% of the time;
on understated ones ("no complaints", "not impressed") they disagree about 80% of the time; over
the whole SFT corpus the Pearson correlation is about 0.5 and 24% of reviews get opposite signs
(``python -m lire_ray.demo.agreement`` measures the same on a policy's outputs). So a
policy trained on VADER can raise its reward in ways the held-out judge does not pay for
(emphasis, emoticons) or penalises (negated negatives), and the judge can show it.

Reward functions follow the Python-scorer convention of ``lire_ray.rewards``:
``fn(prompts: list[str], responses: list[str]) -> list[float]``.
"""

from __future__ import annotations

import hashlib
import random
from functools import lru_cache

from lire_ray.demo import language
from lire_ray.demo.language import write_review

__all__ = ["TRAIN_PRODUCTS", "HELDOUT_PRODUCTS", "prompt_for", "write_review", "sft_corpus",
           "tokenizer_corpus", "prompt_rows", "vader_reward", "afinn_reward"]

TRAIN_PRODUCTS = [
    "kettle", "toaster", "blender", "lamp", "chair", "desk", "backpack", "jacket", "umbrella",
    "phone case", "charger", "keyboard", "mouse", "monitor", "speaker", "headset", "camera",
    "tent", "sleeping bag", "water bottle", "coffee maker", "frying pan", "knife set", "pillow",
    "blanket", "mattress", "vacuum", "fan", "heater", "watch", "wallet", "belt", "scarf",
    "notebook", "pen", "printer", "router", "drone", "bicycle", "helmet",
]
HELDOUT_PRODUCTS = [
    "teapot", "rice cooker", "sofa", "bookshelf", "suitcase", "raincoat", "tablet", "microphone",
    "hammock", "lunch box", "skillet", "duvet", "air purifier", "clock", "handbag", "sketchbook",
]
SPLITS = {"train": TRAIN_PRODUCTS, "heldout": HELDOUT_PRODUCTS}


def prompt_for(product: str, attribute: str) -> str:
    """The prompt text for one product with its attribute ("Review of a used kettle:")."""
    return f"Review of a {attribute} {product}:"


def _pairs(split: str, seed: int) -> list[tuple[str, str]]:
    """Every (product, attribute) pair of a split, each once, in a fixed order.

    Row ``i`` takes attribute ``i mod A`` of an order that alternates leanings (positive,
    negative, neutral, positive, ...), so every prefix of the list (the recipe's
    ``max_prompts``/``eval_prompts``) is balanced across leanings; products come from a seeded
    shuffle, each attribute meeting every product once in the first ``A x P`` rows.
    """
    products = list(SPLITS[split])
    random.Random(f"products-{split}-{seed}").shuffle(products)
    attrs = [a for trio in zip(*language.ATTRIBUTES.values()) for a in trio]
    n_a, n_p = len(attrs), len(products)
    return [(products[(i // n_a + 7 * (i % n_a)) % n_p], attrs[i % n_a])
            for i in range(n_a * n_p)]


def sft_corpus(n: int = 3000, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (prompt, response) pairs over the training products.

    Args:
        n: Number of pairs.
        seed: Seed of the draw (the corpus is a function of ``n`` and ``seed``).

    Returns:
        (prompt, review) pairs; each review's sentiment follows its prompt's attribute.
    """
    rng = random.Random(f"sft-{seed}")
    attrs = language.all_attributes()
    out = []
    for _ in range(n):
        product, attribute = rng.choice(TRAIN_PRODUCTS), rng.choice(attrs)
        out.append((prompt_for(product, attribute),
                    language.review_for_attribute(attribute, rng)))
    return out


def tokenizer_corpus() -> list[str]:
    """Text covering every word and prompt the task can produce (to train the tokenizer on)."""
    rng = random.Random(1)
    lines = []
    for product in TRAIN_PRODUCTS + HELDOUT_PRODUCTS:
        for attribute in language.all_attributes():
            lines.append(prompt_for(product, attribute)
                         + language.review_for_attribute(attribute, rng))
    lines.append(" ".join(sorted(language.vocabulary())))
    # Capitalised words are rare in reviews, so BPE would leave them as byte soup that the tiny
    # policy garbles ("DEFEDEFECTICTE"); repeating them earns each its own tokens.
    lines += [" ".join(w.upper() for w in language.SHOUTABLE)] * 40
    return lines


def prompt_rows(split: str, n: int | None = None, seed: int = 0) -> list[dict]:
    """Prompt rows of the builtin dataset, each with one human-written review.

    Args:
        split: ``"train"`` (training products) or ``"heldout"`` (products never trained on).
        n: Number of rows; default one per product. Rows walk a fixed shuffle of every
            (product, attribute) pair, so up to ``products x attributes`` prompts are distinct
            (600 train, 240 held-out); beyond that they repeat with other human reviews.
        seed: Seed of the prompt order and of the human reviews.

    Returns:
        Dicts with ``prompt_id``, ``prompt`` and ``responses`` (the one human review).

    Raises:
        ValueError: Unknown split.
    """
    if split not in SPLITS:
        raise ValueError(f"builtin reviews split must be 'train' or 'heldout', not {split!r}")
    pairs = _pairs(split, seed)
    n = n or len(SPLITS[split])
    rng = random.Random(f"{split}-{seed}")
    rows = []
    for i in range(n):
        product, attribute = pairs[i % len(pairs)]
        prompt = prompt_for(product, attribute)
        pid = hashlib.sha1(f"{split}:{i}:{prompt}".encode()).hexdigest()[:16]
        rows.append({"prompt_id": pid, "prompt": prompt,
                     "responses": [language.review_for_attribute(attribute, rng)]})
    return rows


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@lru_cache(maxsize=1)
def _afinn():
    from afinn import Afinn

    # emoticons=False (the default) on purpose: emoticons are one of the signals only VADER reads.
    return Afinn(emoticons=False)


def vader_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """VADER compound sentiment of each response (the training reward).

    Args:
        prompts: The prompts (unused; part of the scorer signature).
        responses: The responses to score.

    Returns:
        One score in [-1, 1] per response; it reads negation, "!", capitals and emoticons.
    """
    analyzer = _vader()
    return [float(analyzer.polarity_scores(r)["compound"]) for r in responses]


def afinn_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """AFINN lexicon score of each response (the held-out judge).

    Args:
        prompts: The prompts (unused; part of the scorer signature).
        responses: The responses to score.

    Returns:
        One score per response: the sum of its words' valences (integers in [-5, 5]); blind to
        negation, punctuation, capitals and emoticons.
    """
    scorer = _afinn()
    return [float(scorer.score(r)) for r in responses]
