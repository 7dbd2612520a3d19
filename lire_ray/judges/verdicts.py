"""Strict parsing of judge answers: an answer that does not follow the format is invalid.

An invalid answer is counted and reported as invalid; it never becomes a score, a tie or a win.

- A grade (:func:`parse_score`): exactly one ``[[N]]`` marker in the whole answer (optionally
  preceded by ``Score:`` / ``Rating:``), N an integer from 1 to 10. ``[[7.5]]``, ``[[11]]``,
  two markers, or a bare "7/10" are invalid.
- A comparison (:func:`parse_choice`): exactly one of the markers ``[[A]]``, ``[[B]]``,
  ``[[C]]`` (C: a tie), possibly repeated, never two different ones.
"""

from __future__ import annotations

import re

_MARKER = re.compile(r"\[\[([^\[\]]*)\]\]")
SCORE_RANGE = (1, 10)
CHOICES = ("A", "B", "C")


def parse_score(text: str) -> int | None:
    """The 1-10 grade of a judge answer, or None when the answer is not in the format.

    Args:
        text: The judge's raw answer.

    Returns:
        The integer grade, or None (invalid).
    """
    markers = _MARKER.findall(text or "")
    if len(markers) != 1:
        return None
    value = markers[0].strip()
    if not re.fullmatch(r"\d{1,2}", value):
        return None
    score = int(value)
    return score if SCORE_RANGE[0] <= score <= SCORE_RANGE[1] else None


def parse_choice(text: str) -> str | None:
    """``"A"``, ``"B"`` or ``"C"`` (tie) of a judge answer, or None when not in the format.

    Args:
        text: The judge's raw answer.

    Returns:
        The choice, or None (invalid: no marker, an unknown marker, or two different ones).
    """
    markers = {m.strip() for m in _MARKER.findall(text or "")}
    if len(markers) != 1:
        return None
    (choice,) = markers
    return choice if choice in CHOICES else None


def pair_outcome(policy_first: str | None, policy_second: str | None) -> str | None:
    """The outcome of one pair judged in both orders, for the answer under test.

    Args:
        policy_first: The choice when the policy's answer was shown as A (human as B).
        policy_second: The choice when the policy's answer was shown as B (human as A).

    Returns:
        ``"win"`` when both orders prefer the policy's answer, ``"loss"`` when both prefer the
        human one, ``"tie"`` otherwise (a tie in either order, or the orders disagree); None
        when either verdict is invalid.
    """
    if policy_first is None or policy_second is None:
        return None
    first = {"A": "policy", "B": "human", "C": "tie"}[policy_first]
    second = {"A": "human", "B": "policy", "C": "tie"}[policy_second]
    if first == second == "policy":
        return "win"
    if first == second == "human":
        return "loss"
    return "tie"


def order_consistent(policy_first: str | None, policy_second: str | None) -> bool | None:
    """Whether both orders name the same answer (or both a tie); None when either is invalid."""
    if policy_first is None or policy_second is None:
        return None
    flip = {"A": "B", "B": "A", "C": "C"}
    return flip[policy_first] == policy_second
