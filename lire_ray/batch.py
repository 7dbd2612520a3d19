"""Token-level containers shared by collation (``lire_ray.collate``) and log-prob computation
(``lire_ray.logprobs``).

Shape notation for this module and its users: B prompts per micro-batch, K candidates per
prompt (variable per prompt; padded to ``K_max`` with a boolean mask, never with fake
candidates), L tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TokenizedGroup:
    """One prompt with all of its candidates, tokenised and truncated.

    Attributes:
        prompt_id: The pool's prompt_id.
        prompt_ids: Prompt token ids (already left-truncated), length >= 1.
        response_ids: One list of token ids per candidate (already right-truncated); a
            response may be empty only if the tokenizer produced no tokens for it.
        rewards: One float per candidate (the training reward model's scores), or ``None``.
        ref_logps: One float per candidate (reference summed log-probs), or ``None``.
        is_human: One bool per candidate, ``True`` where the candidate is human-written.
        human_reference: Index of the prompt's human reference answer
            (:attr:`~lire_ray.pool.PoolRow.human_reference_index`: the human-preferred one
            where the labels name it), the target of SFT terms with target ``human``; None when
            the row has no human-written candidate or the group was built without it.
        prompt_truncated: Tokens dropped from the left of the prompt.
        responses_truncated: Tokens dropped from the right of each response.
    """

    prompt_id: str
    prompt_ids: tuple[int, ...]
    response_ids: tuple[tuple[int, ...], ...]
    rewards: tuple[float, ...] | None = None
    ref_logps: tuple[float, ...] | None = None
    is_human: tuple[bool, ...] | None = None
    human_reference: int | None = None
    prompt_truncated: int = 0
    responses_truncated: tuple[int, ...] = field(default_factory=tuple)

    @property
    def num_candidates(self) -> int:
        return len(self.response_ids)

    @property
    def num_tokens_shared(self) -> int:
        """Tokens when the prompt is computed once: prompt + all responses."""
        return len(self.prompt_ids) + sum(len(r) for r in self.response_ids)

    @property
    def num_tokens_naive(self) -> int:
        """Tokens when every candidate recomputes its prompt (pairwise-trainer style)."""
        return sum(len(self.prompt_ids) + len(r) for r in self.response_ids)
