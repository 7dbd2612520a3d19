"""The embedded default task: steer short product reviews toward positive sentiment.

Everything is generated locally from templates, so the task needs no download:

* prompts ``"Review of a <product>:"`` with disjoint product lists for training and held-out
  evaluation;
* one "human-written" review per prompt, of random sentiment (the dataset's own candidate);
* an SFT corpus of the same kind, used to build the tiny starting policy;
* two reward functions: :func:`vader_reward` (VADER compound score, the training reward) and
  :func:`afinn_reward` (AFINN lexicon sum, the held-out judge). They share no code or lexicon.

Reward functions follow the Python-scorer convention of ``lire_ray.rewards``:
``fn(prompts: list[str], responses: list[str]) -> list[float]``.
"""

from __future__ import annotations

import hashlib
import random
from functools import lru_cache

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

_POSITIVE = ["great", "excellent", "wonderful", "amazing", "good", "lovely", "perfect", "fantastic"]
_NEGATIVE = ["terrible", "awful", "bad", "poor", "horrible", "disappointing", "useless", "broken"]
_NEUTRAL = ["okay", "average", "plain", "simple", "standard", "ordinary"]
_POS_TAIL = ["i love it", "i am happy with it", "it works well", "highly recommended",
             "worth the price", "my family enjoys it"]
_NEG_TAIL = ["i hate it", "i am sad about it", "it failed quickly", "do not buy it",
             "a waste of money", "it hurt my hand"]
_NEU_TAIL = ["it arrived on time", "it is blue", "it came in a box", "the size is normal",
             "it does the job", "nothing more to say"]


def prompt_for(product: str) -> str:
    """The prompt text for one product."""
    return f"Review of a {product}:"


def write_review(product: str, rng: random.Random, sentiment: str | None = None) -> str:
    """One short review of ``product``; ``sentiment`` in {positive, negative, neutral} or random."""
    sentiment = sentiment or rng.choice(["positive", "negative", "neutral"])
    adj, tail = {
        "positive": (_POSITIVE, _POS_TAIL),
        "negative": (_NEGATIVE, _NEG_TAIL),
        "neutral": (_NEUTRAL, _NEU_TAIL),
    }[sentiment]
    second = rng.choice(_NEU_TAIL + tail)
    return f" this {product} is {rng.choice(adj)}, {rng.choice(tail)} and {second}."


def sft_corpus(n: int = 3000, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (prompt, response) pairs over the training products, sentiment balanced."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        product = rng.choice(TRAIN_PRODUCTS)
        out.append((prompt_for(product), write_review(product, rng)))
    return out


def tokenizer_corpus() -> list[str]:
    """Text covering every word the task can produce (to train the tiny tokenizer on)."""
    rng = random.Random(1)
    lines = [prompt_for(p) + write_review(p, rng, s) for p in TRAIN_PRODUCTS + HELDOUT_PRODUCTS
             for s in ("positive", "negative", "neutral")]
    words = _POSITIVE + _NEGATIVE + _NEUTRAL + _POS_TAIL + _NEG_TAIL + _NEU_TAIL
    return lines + [" ".join(words)]


def prompt_rows(split: str, n: int | None = None, seed: int = 0) -> list[dict]:
    """Prompt rows of the builtin dataset, each with one human-written review.

    Args:
        split: ``"train"`` (training products) or ``"heldout"`` (products never trained on).
        n: Number of rows (cycling over products with different human reviews); default one
            per product.
        seed: Seed of the human reviews.

    Returns:
        Dicts with ``prompt_id``, ``prompt`` and ``responses`` (the one human review).

    Raises:
        ValueError: Unknown split.
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"builtin reviews split must be 'train' or 'heldout', not {split!r}")
    products = TRAIN_PRODUCTS if split == "train" else HELDOUT_PRODUCTS
    n = n or len(products)
    rng = random.Random(f"{split}-{seed}")
    rows = []
    for i in range(n):
        product = products[i % len(products)]
        prompt = prompt_for(product)
        pid = hashlib.sha1(f"{split}:{i}:{prompt}".encode()).hexdigest()[:16]
        rows.append({"prompt_id": pid, "prompt": prompt,
                     "responses": [write_review(product, rng)]})
    return rows


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@lru_cache(maxsize=1)
def _afinn():
    from afinn import Afinn

    return Afinn()


def vader_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """VADER compound sentiment of each response, in [-1, 1] (the training reward)."""
    analyzer = _vader()
    return [float(analyzer.polarity_scores(r)["compound"]) for r in responses]


def afinn_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """AFINN lexicon score of each response (sum of word valences; the held-out judge)."""
    scorer = _afinn()
    return [float(scorer.score(r)) for r in responses]
