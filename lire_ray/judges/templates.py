"""Default judge prompts, written for this project, and how a template becomes chat messages.

The verdict formats are fixed so that :mod:`lire_ray.judges.verdicts` can parse them strictly:
a grade is the last line ``Score: [[N]]`` with N an integer from 1 to 10; a comparison ends with
``[[A]]``, ``[[B]]`` or ``[[C]]`` (a tie). The wording follows what the paper's appendix
describes (grade helpfulness, relevance, accuracy, depth and detail on a 10-point scale; pick
the better of two answers without regard to order or length), in our own words.
"""

from __future__ import annotations

SYSTEM = ("You are a careful and impartial evaluator of AI assistant answers. You follow the "
          "requested output format exactly.")

_SINGLE_RULES = (
    "Judge how well the assistant's answer to the final question serves the user: is it "
    "helpful, relevant, correct, as deep and detailed as the question needs, and clearly "
    "written? Length alone is no merit. First explain your judgement in a few sentences. Then "
    "write, as the very last line, the score from 1 (useless) to 10 (excellent) in exactly "
    "this form: Score: [[N]]\n")

SINGLE = (
    "Grade one answer of an AI assistant.\n\n"
    "{conversation}"
    "[Question]\n{question}\n\n"
    "[Assistant's answer]\n{answer}\n\n" + _SINGLE_RULES)

SINGLE_REFERENCE = (
    "Grade one answer of an AI assistant against a reference answer that is known to be "
    "correct.\n\n"
    "{conversation}"
    "[Question]\n{question}\n\n"
    "[Reference answer]\n{reference}\n\n"
    "[Assistant's answer]\n{answer}\n\n"
    "Compare the assistant's answer with the reference and count every mistake against it. "
    + _SINGLE_RULES)

PAIRWISE = (
    "Two AI assistants answered the same request. Decide which answer serves the user "
    "better.\n\n"
    "[Request]\n{question}\n\n"
    "[Answer A]\n{answer_a}\n\n"
    "[Answer B]\n{answer_b}\n\n"
    "Consider helpfulness, accuracy, relevance and clarity. The order in which the answers are "
    "shown and their length must not sway you. Explain your choice briefly, then write, as the "
    "very last line, exactly one of: [[A]] if answer A is better, [[B]] if answer B is better, "
    "[[C]] if they are equally good.\n")

DEFAULTS = {"system": SYSTEM, "single": SINGLE, "single_reference": SINGLE_REFERENCE,
            "pairwise": PAIRWISE}


def transcript(turns: list[tuple[str, str]]) -> str:
    """The earlier turns of a conversation as the ``{conversation}`` placeholder shows them.

    Args:
        turns: (question, answer) pairs before the graded turn.

    Returns:
        An empty string for the first turn, else one block per earlier turn.
    """
    if not turns:
        return ""
    blocks = [f"[Earlier question {i}]\n{q}\n\n[Assistant's earlier answer {i}]\n{a}\n\n"
              for i, (q, a) in enumerate(turns, 1)]
    return "".join(blocks)


def messages(system: str, template: str, **fields: str) -> list[dict[str, str]]:
    """Chat messages of one judge request: the system message (when not empty) and the
    template filled with ``fields``."""
    out = [{"role": "system", "content": system}] if system else []
    return out + [{"role": "user", "content": template.format(**fields)}]
