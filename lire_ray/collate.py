"""Tokenising pool rows into :class:`~lire_ray.batch.TokenizedGroup` and batching them by tokens.

Shape notation: B prompts per batch, K candidates per prompt, L tokens.

Tokenisation policy:

- Prompt: :func:`render_prompt` is THE prompt renderer, used by sampling, training, reference
  log-probs and evaluation alike, so the prompt a candidate was sampled from is the prompt its
  log-probability is trained on. With ``chat_template`` "always", or "auto" when the row has
  chat turns (``prompt_messages``) and the tokenizer has a template, the prompt is the
  tokenizer's chat template over the turns (``add_generation_prompt=True``; a plain prompt
  becomes one user turn under "always"); otherwise it is the plain ``prompt`` text.
  :func:`encode_prompt` turns that text into ids with one rule: the tokenizer's own special
  tokens are added (e.g. BOS) and a BOS doubled by a template that already wrote one is dropped.
- Response: tokenised without special tokens, then EOS appended, so a complete response ends
  with EOS.
- Truncation: a prompt longer than ``max_prompt_tokens`` loses tokens on the LEFT (the end of
  the prompt, next to the response, matters most); a response longer than
  ``max_response_tokens`` (EOS included) loses tokens on the RIGHT. A truncated response
  therefore has no EOS: training must not teach the policy to stop mid-text. Dropped-token
  counts are kept in every group and summed by :class:`TruncationStats`.

Batching policy (:func:`batch_by_token_budget`): groups are taken in order and packed greedily;
a group is never split across batches (all K candidates of a prompt train together, as the
listwise objective of the LIRE paper, eq. 6, needs); a batch's size is the sum of its groups'
``num_tokens_shared`` (prompt once + all responses); a group larger than the budget alone forms
its own batch and is counted as over budget.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from lire_ray.batch import TokenizedGroup
from lire_ray.errors import ConfigError, DataError, ModelLoadError
from lire_ray.pool import PoolRow

log = logging.getLogger(__name__)


@dataclass
class TruncationStats:
    """Totals of what tokenisation and batching dropped or could not fit.

    Attributes:
        groups: Groups tokenised.
        prompts_truncated: Groups whose prompt was left-truncated.
        prompt_tokens: Prompt tokens kept.
        prompt_tokens_dropped: Prompt tokens dropped.
        responses: Candidates tokenised.
        responses_truncated: Candidates right-truncated.
        response_tokens: Response tokens kept.
        response_tokens_dropped: Response tokens dropped.
        groups_over_budget: Groups larger than a batch token budget (batched alone).
    """

    groups: int = 0
    prompts_truncated: int = 0
    prompt_tokens: int = 0
    prompt_tokens_dropped: int = 0
    responses: int = 0
    responses_truncated: int = 0
    response_tokens: int = 0
    response_tokens_dropped: int = 0
    groups_over_budget: int = 0

    def add(self, group: TokenizedGroup) -> None:
        """Count one tokenised group."""
        self.groups += 1
        self.prompts_truncated += group.prompt_truncated > 0
        self.prompt_tokens += len(group.prompt_ids)
        self.prompt_tokens_dropped += group.prompt_truncated
        self.responses += group.num_candidates
        self.responses_truncated += sum(n > 0 for n in group.responses_truncated)
        self.response_tokens += sum(len(r) for r in group.response_ids)
        self.response_tokens_dropped += sum(group.responses_truncated)

    def merge(self, other: TruncationStats) -> TruncationStats:
        """Sum of two reports (e.g. from several workers)."""
        a, b = asdict(self), asdict(other)
        return TruncationStats(**{k: a[k] + b[k] for k in a})

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def summary(self) -> str:
        """One line for logs."""
        return (f"{self.groups} prompts ({self.prompts_truncated} truncated, "
                f"{self.prompt_tokens_dropped} tokens dropped), {self.responses} responses "
                f"({self.responses_truncated} truncated, {self.response_tokens_dropped} tokens "
                f"dropped), {self.groups_over_budget} prompts over the batch token budget")


#: Values of ``data.chat_template``.
CHAT_TEMPLATE_MODES = ("auto", "always", "never")


def _wants_template(prompt_messages: str | None, tokenizer, mode: str) -> bool:
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if mode == "auto":
        return has_template and prompt_messages is not None
    if mode == "always":
        if not has_template:
            raise ModelLoadError("data.chat_template=always but the tokenizer has no "
                                 "chat_template")
        return True
    if mode == "never":
        return False
    raise ConfigError(f"chat_template must be one of {', '.join(CHAT_TEMPLATE_MODES)}, "
                      f"got {mode!r}")


def render_prompt(prompt: str, prompt_messages: str | None, tokenizer, *,
                  chat_template: str = "auto") -> str:
    """The exact prompt text a policy is conditioned on, for sampling and training alike.

    Args:
        prompt: The row's plain-text prompt.
        prompt_messages: The row's chat turns (a JSON array of ``{role, content}``), or None.
        tokenizer: The policy's tokenizer.
        chat_template: "auto", "always" or "never" (``data.chat_template``; see the module
            docstring).

    Returns:
        The rendered prompt text (a pool row records it as ``prompt_text``).

    Raises:
        ConfigError: Unknown ``chat_template`` value.
        ModelLoadError: "always" with a tokenizer that has no chat template.
        DataError: The chat turns cannot be rendered by the template.
    """
    if not _wants_template(prompt_messages, tokenizer, chat_template):
        return prompt
    messages = (json.loads(prompt_messages) if prompt_messages is not None
                else [{"role": "user", "content": prompt}])
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True)
    except Exception as err:  # a template raising on roles or content is a data problem
        raise DataError(f"the chat template cannot render these turns: "
                        f"{type(err).__name__}: {err}", field="prompt_messages") from err


def _ids(tokenizer, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=add_special_tokens)
            ["input_ids"]]


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a rendered prompt: the tokenizer's special tokens added, a doubled BOS
    (a template that writes BOS, plus the tokenizer's own) dropped.

    Args:
        tokenizer: The policy's tokenizer.
        text: A prompt from :func:`render_prompt`.

    Returns:
        The ids (possibly empty for an empty text and a tokenizer without BOS).
    """
    ids = list(tokenizer(text)["input_ids"])
    bos = tokenizer.bos_token_id
    if bos is not None and ids[:2] == [bos, bos]:
        ids = ids[1:]
    return ids


def tokenize_group(row: PoolRow, tokenizer, *, max_prompt_tokens: int, max_response_tokens: int,
                   reward_name: str | None = None, chat_template: str = "auto") -> TokenizedGroup:
    """Tokenise one pool row with the policy in the module docstring.

    Args:
        row: The prompt and its K candidates.
        tokenizer: A Hugging Face (fast) tokenizer with an EOS token.
        max_prompt_tokens: Prompt length limit (left truncation), >= 1.
        max_response_tokens: Per-response length limit including EOS (right truncation), >= 1.
        reward_name: Reward model whose K scores go into ``rewards``; None leaves it None.
        chat_template: "auto", "always" or "never" (see :func:`render_prompt`).

    Returns:
        The group: ``prompt_ids`` length <= max_prompt_tokens, K ``response_ids`` each of
        length <= max_response_tokens, K rewards/ref_logps/is_human, dropped-token counts.

    Raises:
        ConfigError: A limit below 1 or a bad ``chat_template`` value.
        ModelLoadError: The tokenizer has no EOS token, or no template while one is required.
        DataError: ``reward_name`` is not among the row's rewards, or the prompt yields no
            tokens.
    """
    if max_prompt_tokens < 1 or max_response_tokens < 1:
        raise ConfigError(f"max_prompt_tokens and max_response_tokens must be >= 1, got "
                          f"{max_prompt_tokens} and {max_response_tokens}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ModelLoadError("the tokenizer has no eos_token; responses must end with EOS")
    try:
        text = render_prompt(row.prompt, row.prompt_messages, tokenizer,
                             chat_template=chat_template)
    except DataError as err:
        raise DataError(err.message, source=f"prompt_id {row.prompt_id}",
                        field="prompt_messages") from err
    prompt = encode_prompt(tokenizer, text)
    if not prompt:
        raise DataError("prompt tokenises to no tokens", source=f"prompt_id {row.prompt_id}",
                        field="prompt")
    prompt_cut = max(0, len(prompt) - max_prompt_tokens)
    responses, cuts = [], []
    for ids in _ids(tokenizer, list(row.responses), add_special_tokens=False):
        ids = ids + [eos]
        cuts.append(max(0, len(ids) - max_response_tokens))
        responses.append(tuple(ids[:max_response_tokens]))
    rewards = None
    if reward_name is not None:
        if reward_name not in row.rewards:
            raise DataError(f"no scores from reward model {reward_name!r} (has "
                            f"{sorted(row.rewards)})", source=f"prompt_id {row.prompt_id}",
                            field=f"rewards.{reward_name}")
        rewards = tuple(row.rewards[reward_name])
    return TokenizedGroup(
        prompt_id=row.prompt_id, prompt_ids=tuple(prompt[prompt_cut:]),
        response_ids=tuple(responses), rewards=rewards, ref_logps=row.ref_logps,
        is_human=row.is_human, human_reference=row.human_reference_index,
        prompt_truncated=prompt_cut, responses_truncated=tuple(cuts))


def tokenize_groups(rows: Iterable[PoolRow], tokenizer, *, stats: TruncationStats | None = None,
                    **kwargs) -> list[TokenizedGroup]:
    """Tokenise many rows with :func:`tokenize_group` (same keyword arguments).

    Args:
        rows: Pool rows.
        tokenizer: As for :func:`tokenize_group`.
        stats: Report to add every group's truncation counts to.
        **kwargs: ``max_prompt_tokens``, ``max_response_tokens``, ``reward_name``,
            ``chat_template``.

    Returns:
        One group per row, in order.
    """
    groups = [tokenize_group(r, tokenizer, **kwargs) for r in rows]
    if stats is not None:
        for g in groups:
            stats.add(g)
    return groups


def batch_by_token_budget(groups: Sequence[TokenizedGroup], max_tokens: int,
                          max_prompts: int | None = None, *,
                          stats: TruncationStats | None = None) -> list[list[TokenizedGroup]]:
    """Pack groups, in order, into batches of at most ``max_tokens`` shared-prefix tokens.

    Args:
        groups: Tokenised groups.
        max_tokens: Budget per batch, counted as the sum of ``num_tokens_shared``; >= 1.
        max_prompts: Optional cap on groups (B) per batch; >= 1.
        stats: Report whose ``groups_over_budget`` counts groups that alone exceed the budget.

    Returns:
        Batches (lists of whole groups) covering every group once, in order.

    Raises:
        ConfigError: ``max_tokens`` or ``max_prompts`` below 1.
    """
    if max_tokens < 1 or (max_prompts is not None and max_prompts < 1):
        raise ConfigError(f"max_tokens and max_prompts must be >= 1, got {max_tokens} and "
                          f"{max_prompts}")
    batches: list[list[TokenizedGroup]] = []
    current: list[TokenizedGroup] = []
    used = over = 0
    for g in groups:
        n = g.num_tokens_shared
        if n > max_tokens:
            over += 1
            if current:
                batches.append(current)
            batches.append([g])
            current, used = [], 0
            continue
        if current and (used + n > max_tokens
                        or (max_prompts is not None and len(current) >= max_prompts)):
            batches.append(current)
            current, used = [], 0
        current.append(g)
        used += n
    if current:
        batches.append(current)
    if over:
        log.warning("%d prompt group(s) exceed the batch budget of %d tokens and form batches "
                    "of their own; lower max_prompt_tokens/max_response_tokens or raise the "
                    "budget", over, max_tokens)
    if stats is not None:
        stats.groups_over_budget += over
    return batches
