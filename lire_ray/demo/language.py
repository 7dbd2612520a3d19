"""The review language of the embedded task: a small grammar of short product reviews.

The same generator writes the tiny policy's SFT corpus and the "human-written" answer of every
prompt, so what the starting policy can say is exactly what this module can write. It is built
so that the training reward (VADER) and the held-out judge (AFINN) mostly agree on honest
reviews but can be told apart (see :mod:`lire_ray.demo.reviews` for the measured numbers):

* **Honest** reviews use plain sentiment words ("great", "a waste of money"), optionally with
  intensifiers ("very", "extremely") or hedges ("kind of", "a bit"): both lexicons agree in sign.
* **Understated** reviews negate the opposite sentiment: "not bad at all", "no complaints",
  "not great", "not impressed". VADER flips a negated word's valence; AFINN sums word scores and
  ignores negation, so it reads "not bad" as negative and "not great" as positive.
* **Mixed** reviews join two opinions with "but". VADER weighs the clause after "but" more;
  AFINN just adds both.
* **Decorations** that only VADER reads: exclamation marks, ALL-CAPS words and emoticons
  (":)", ":D", "<3", ":("). AFINN (without its emoticon option) scores none of them, and
  interjections differ too ("yay" is positive to VADER only, "sigh" negative to AFINN only).

Every prompt names a product with an attribute ("Review of a refurbished kettle:"). The
attribute sets the odds of a review's sentiment and the aspects it talks about ("the battery is
..."), and the attributes are shared by the training and held-out products, so the starting
policy writes reviews of mixed sentiment whose balance depends on the prompt: its held-out
scores vary from prompt to prompt instead of sitting at 0. Words are drawn Zipf-weighted (one
dominant word per slot, as in real text), which keeps the policy's greedy reviews on the
prompt's sentiment. Reviews never name the product (held-out names never occur in the SFT
corpus, and a tiny policy asked to copy them writes garbage).
"""

from __future__ import annotations

import random
from functools import lru_cache

#: Attribute of the product in the prompt, by the sentiment it makes more likely.
ATTRIBUTES = {
    "positive": ["premium", "handmade", "top rated", "brand new", "sturdy"],
    "negative": ["cheap", "used", "secondhand", "refurbished", "budget"],
    "neutral": ["blue", "small", "large", "travel", "classic"],
}
#: What reviews of a product with this attribute talk about (the most common first). Every
#: word scores 0 under both rewards. They make the policy's text depend on the prompt beyond
#: its sentiment, so that a policy trained to be positive does not collapse to one review.
ASPECTS = {
    "premium": ["finish", "materials", "details"],
    "handmade": ["stitching", "craftsmanship", "details"],
    "top rated": ["design", "build", "finish"],
    "brand new": ["packaging", "condition", "smell"],
    "sturdy": ["frame", "build", "hinges"],
    "cheap": ["plastic", "price", "lid"],
    "used": ["condition", "wear", "battery"],
    "secondhand": ["condition", "scratches", "zipper"],
    "refurbished": ["battery", "repair", "screen"],
    "budget": ["price", "build", "buttons"],
    "blue": ["color", "paint", "shade"],
    "small": ["size", "weight", "handle"],
    "large": ["size", "capacity", "weight"],
    "travel": ["weight", "case", "straps"],
    "classic": ["look", "style", "design"],
}
#: P(sentiment of a review | leaning of the prompt's attribute).
SENTIMENT_ODDS = {
    "positive": {"positive": 0.8, "negative": 0.07, "neutral": 0.06, "mixed": 0.07},
    "negative": {"positive": 0.07, "negative": 0.8, "neutral": 0.06, "mixed": 0.07},
    # Neutral attributes lean a little positive, as real review sets do (most are 4-5 stars);
    # with symmetric odds the starting policy's greedy judge mean sits at 0 by symmetry.
    "neutral": {"positive": 0.4, "negative": 0.26, "neutral": 0.2, "mixed": 0.14},
}
#: Share of positive/negative reviews written by negating the opposite ("not bad").
UNDERSTATED = 0.3

POS_ADJ = ["great", "excellent", "wonderful", "amazing", "good", "lovely", "perfect",
           "fantastic", "nice", "awesome", "comfortable", "useful"]
# Negative reviews lean on milder words than positive ones ("disappointing" is -2 to AFINN,
# "great" +3), so a starting policy whose greedy reviews split evenly between the two does not
# average exactly 0 by symmetry.
NEG_ADJ = ["disappointing", "bad", "terrible", "poor", "awful", "horrible", "useless",
           "worthless", "ugly", "defective", "annoying", "weak"]
NEU_ADJ = ["okay", "average", "plain", "simple", "standard", "ordinary", "decent", "heavy",
           "light", "quiet"]
INTENSIFIERS = ["very", "really", "extremely", "so", "absolutely", "incredibly", "totally"]
HEDGES = ["kind of", "a bit", "somewhat", "slightly", "fairly", "pretty"]
NOUNS = ["quality", "design", "value", "build", "finish", "handle", "size"]

POS_TAIL = ["i love it", "i am happy with it", "it works well", "highly recommended",
            "worth the price", "my family enjoys it", "best purchase this year",
            "i like it a lot", "would buy again", "very pleased", "easy to use"]
NEG_TAIL = ["i hate it", "it failed quickly", "do not buy it", "a waste of money",
            "it stopped working", "i am sad about it", "worst purchase this year",
            "it broke after a week", "sent it back", "i regret it", "hard to use"]
NEU_TAIL = ["it arrived on time", "the color is blue", "it came in a box", "the size is normal",
            "it does the job", "nothing more to say", "delivery took a week",
            "it comes with a manual", "i use it every day", "it fits in the cupboard"]
#: Negated negatives: positive to VADER, negative to AFINN.
UNDERSTATED_POS = ["not bad", "not bad at all", "not too bad", "not terrible", "no complaints",
                   "no problems so far", "never had a problem", "can't complain",
                   "not disappointed", "no regrets", "not the worst", "never failed"]
#: Negated positives: negative to VADER, positive to AFINN.
UNDERSTATED_NEG = ["not great", "not good", "not very good", "not worth it",
                   "not happy with it", "not impressed", "not my favorite",
                   "not as good as i hoped", "not recommended", "not nice at all"]

INTERJECTIONS = {"positive": ["wow", "yay", "well"], "negative": ["ugh", "meh", "sigh", "well"],
                 "neutral": ["well", "so", "hmm"]}
EMOTICONS = {"positive": [":)", ":D", "<3", ";)"], "negative": [":(", ":/"],
             "neutral": [":)", ":/", ":P"]}
#: End of the review: punctuation and its odds (VADER boosts up to three "!", AFINN ignores).
ENDINGS = [(".", 0.45), ("!", 0.2), ("!!", 0.1), ("!!!", 0.1), ("", 0.15)]
JOINERS = [", ", " and ", ". ", ", ", "; "]
#: Words and phrases a review may write in capitals ("NOT BAD", "GREAT").
SHOUTABLE = UNDERSTATED_POS + UNDERSTATED_NEG + POS_ADJ + NEG_ADJ


def _pick(rng: random.Random, odds: dict[str, float]) -> str:
    return rng.choices(list(odds), weights=list(odds.values()))[0]


def _word(rng: random.Random, bank: list[str]) -> str:
    """A Zipf-weighted choice (the i-th entry has weight 1/(i+1)), like word use in real text.

    A dominant word per sentiment ("great", "disappointing") also gives the policy's greedy path a
    clear sentiment that follows the prompt; uniform choices spread the mass so thin that the
    greedy path takes whatever the sentiments share ("it is decent").
    """
    return rng.choices(bank, weights=[1 / (i + 1) for i in range(len(bank))])[0]


def _modified(rng: random.Random, adj: str) -> str:
    """An adjective, sometimes intensified ("very good") or hedged ("kind of good")."""
    roll = rng.random()
    if roll < 0.2:
        return f"{_word(rng, INTENSIFIERS)} {adj}"
    if roll < 0.3:
        return f"{_word(rng, HEDGES)} {adj}"
    return adj


def _be(noun: str) -> str:
    """The verb for a noun: every plural noun of the grammar ends in "s" ("the hinges are")."""
    return "are" if noun.endswith("s") else "is"


def _clause(rng: random.Random, sentiment: str, understated: bool, aspects: list[str]) -> str:
    """One clause of a given sentiment ("positive", "negative" or "neutral")."""
    noun = _word(rng, aspects) if rng.random() < 0.7 else _word(rng, NOUNS)
    if understated and sentiment in ("positive", "negative"):
        phrase = _word(rng, UNDERSTATED_POS if sentiment == "positive" else UNDERSTATED_NEG)
        forms = [phrase, phrase, f"honestly {phrase}"]
        if phrase.startswith("not "):
            forms.append(f"this one is {phrase}")
        return rng.choice(forms)
    if sentiment == "neutral":
        # Neutral adjectives are never intensified: a shared "it is extremely" would otherwise
        # lead the greedy path to "it is extremely plain" whatever the prompt says.
        return rng.choice([f"it is {_word(rng, NEU_ADJ)}",
                           f"the {noun} {_be(noun)} {_word(rng, NEU_ADJ)}",
                           _word(rng, NEU_TAIL), _word(rng, NEU_TAIL)])
    adj, tail = (POS_ADJ, POS_TAIL) if sentiment == "positive" else (NEG_ADJ, NEG_TAIL)
    word = _modified(rng, _word(rng, adj))
    form = rng.choices(range(5), weights=[2, 3, 4, 2, 2])[0]
    return [f"this one is {word}", f"it is {word}", f"the {noun} {_be(noun)} {word}", f"{word} {noun}",
            _word(rng, tail)][form]


def _shout(rng: random.Random, text: str, words: list[str]) -> str:
    """Write one sentiment word (or negated phrase) of ``text`` in capitals, when it has one."""
    present = [w for w in words if f" {w}" in f" {text}"]
    if not present:
        return text
    word = rng.choice(present)
    return text.replace(word, word.upper(), 1)


def write_review(rng: random.Random, sentiment: str | None = None,
                 aspects: list[str] | None = None) -> str:
    """One short review, starting with a space (it follows the prompt).

    Reviews say "it" or "this one", never the product's name: the held-out products' names
    never occur in the SFT corpus, and a tiny policy asked to copy them writes garbage.

    Args:
        rng: Source of randomness (the review is a function of its state).
        sentiment: "positive", "negative", "neutral" or "mixed"; random when None.
        aspects: Nouns the review mostly talks about ("the finish is great"); default
            :data:`NOUNS`.

    Returns:
        The review text, e.g. ``" not bad at all, it does the job!!! :)"``.
    """
    sentiment = sentiment or rng.choice(["positive", "negative", "neutral", "mixed"])
    aspects = aspects or NOUNS
    if sentiment == "mixed":
        first, second = rng.sample(["positive", "negative"], 2)
        clauses = [f"{_clause(rng, first, rng.random() < UNDERSTATED, aspects)} but "
                   f"{_clause(rng, second, rng.random() < UNDERSTATED, aspects)}"]
        tone = "neutral"
    else:
        understated = rng.random() < UNDERSTATED
        count = rng.choices([1, 2, 3], weights=[0.35, 0.45, 0.2])[0]
        clauses = [_clause(rng, sentiment, understated, aspects) for _ in range(count)]
        if count > 1 and sentiment != "neutral" and rng.random() < 0.2:
            clauses[rng.randrange(count)] = _clause(rng, "neutral", False, aspects)
        tone = sentiment
    text = clauses[0]
    for clause in clauses[1:]:
        text += rng.choice(JOINERS) + clause
    if rng.random() < 0.1:
        text = f"{rng.choice(INTERJECTIONS[tone])}, {text}"
    if rng.random() < 0.15:
        text = _shout(rng, text, SHOUTABLE)
    text += rng.choices([e for e, _ in ENDINGS], weights=[w for _, w in ENDINGS])[0]
    if rng.random() < 0.2:
        text += f" {rng.choice(EMOTICONS[tone])}"
    return " " + text


def review_for_attribute(attribute: str, rng: random.Random) -> str:
    """A review whose sentiment follows the odds of the attribute's leaning.

    Raises:
        KeyError: ``attribute`` is not one of :data:`ATTRIBUTES`.
    """
    return write_review(rng, _pick(rng, SENTIMENT_ODDS[leaning(attribute)]), ASPECTS[attribute])


def leaning(attribute: str) -> str:
    """The leaning ("positive", "negative", "neutral") of a prompt attribute.

    Raises:
        KeyError: Unknown attribute.
    """
    for lean, attrs in ATTRIBUTES.items():
        if attribute in attrs:
            return lean
    raise KeyError(attribute)


def all_attributes() -> list[str]:
    """Every prompt attribute, in a fixed order."""
    return [a for attrs in ATTRIBUTES.values() for a in attrs]


@lru_cache(maxsize=1)
def vocabulary() -> frozenset[str]:
    """Every word (lower-cased, punctuation stripped) the generator can write."""
    banks = [POS_ADJ, NEG_ADJ, NEU_ADJ, INTENSIFIERS, HEDGES, NOUNS, *ASPECTS.values(), POS_TAIL, NEG_TAIL, NEU_TAIL,
             UNDERSTATED_POS, UNDERSTATED_NEG, *INTERJECTIONS.values(),
             ["this", "one", "is", "are", "it", "the", "but", "and", "honestly"]]
    return frozenset(w for bank in banks for phrase in bank for w in phrase.split())
