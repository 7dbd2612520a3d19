"""Packing of prompt/candidate groups into model inputs for sequence log-probs.

Shape notation: B prompts (groups), K_max the largest candidate count among them, R model rows,
L tokens per row, T response tokens in total (the positions whose log-probs are gathered).

Two layouts, both pure tensor bookkeeping (no model here):

* ``padded``: one row per candidate, ``[prompt | response | pad...]``; the prompt is computed
  once per candidate, as pairwise trainers do.
* ``shared_prefix``: one row per prompt, ``[prompt | y_1 | ... | y_K | pad...]`` with a 4D
  boolean attention mask under which every response sees the whole prompt and, causally, only
  its own earlier tokens, and position ids restarting at the prompt length for every response.
  Each response then gets exactly the hidden states it would get alone, while the prompt is
  computed once for all K candidates.

In both layouts the log-prob of response token t is read from the hidden state one position
earlier; for t = 0 that is the prompt's last position, which under ``shared_prefix`` is one
position shared by all K responses (it is gathered once per response).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lire_ray.batch import TokenizedGroup
from lire_ray.errors import ConfigError, DataError

PACKINGS = ("shared_prefix", "padded")


@dataclass
class PackedBatch:
    """Model inputs plus the indices that map response tokens back to their candidates.

    Attributes:
        input_ids: ``[R, L]`` token ids (padding holds ``pad_id``).
        position_ids: ``[R, L]`` rotary positions.
        attention_mask: ``[R, L]`` int 0/1 (``padded``) or ``[R, 1, L, L]`` bool, True where
            the query may attend the key (``shared_prefix``).
        src_row: ``[T]`` row of the hidden state that predicts each response token.
        src_pos: ``[T]`` position of that hidden state in its row.
        targets: ``[T]`` the response token ids.
        slot: ``[T]`` flat candidate index ``b * K_max + k`` of each response token.
        lengths: ``[B, K_max]`` response lengths in tokens (0 where masked).
        mask: ``[B, K_max]`` True where the candidate exists.
        tokens_computed: Non-padding tokens fed through the model.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    src_row: torch.Tensor
    src_pos: torch.Tensor
    targets: torch.Tensor
    slot: torch.Tensor
    lengths: torch.Tensor
    mask: torch.Tensor
    tokens_computed: int


def validate_groups(groups: Sequence[TokenizedGroup], vocab_size: int | None = None) -> int:
    """Check the groups can be packed and return ``K_max``.

    Args:
        groups: The micro-batch, B groups.
        vocab_size: Model vocabulary size; token ids must lie in ``[0, vocab_size)``.

    Returns:
        The largest candidate count.

    Raises:
        DataError: No groups, a group without candidates, an empty prompt, or a token id
            outside the vocabulary (the message names the prompt_id and field).
    """
    if not groups:
        raise DataError("cannot compute log-probs of an empty micro-batch (no groups)")
    for group in groups:
        where = f"prompt_id '{group.prompt_id}'"
        if group.num_candidates == 0:
            raise DataError(f"{where} has no candidates", field="response_ids")
        if len(group.prompt_ids) == 0:
            raise DataError(f"{where} has an empty prompt: the first response token would "
                            "have no position to be predicted from", field="prompt_ids")
        if vocab_size is not None:
            for name, ids in [("prompt_ids", group.prompt_ids),
                              *(("response_ids", r) for r in group.response_ids)]:
                bad = [t for t in ids if not 0 <= t < vocab_size]
                if bad:
                    raise DataError(f"{where} has token id {bad[0]} outside the model "
                                    f"vocabulary [0, {vocab_size})", field=name)
    return max(g.num_candidates for g in groups)


def _index_tensors(
    src_row: list[int], src_pos: list[int], targets: list[int], slot: list[int],
    lengths: list[list[int]], k_max: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    b = len(lengths)
    length_t = torch.zeros(b, k_max, dtype=torch.long)
    mask_t = torch.zeros(b, k_max, dtype=torch.bool)
    for i, lens in enumerate(lengths):
        length_t[i, : len(lens)] = torch.tensor(lens, dtype=torch.long)
        mask_t[i, : len(lens)] = True
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return (as_long(src_row), as_long(src_pos), as_long(targets), as_long(slot), length_t,
            mask_t)


def pack_padded(groups: Sequence[TokenizedGroup], pad_id: int = 0) -> PackedBatch:
    """One right-padded row per candidate: ``[prompt | response]``.

    Args:
        groups: B groups (validated by :func:`validate_groups`).
        pad_id: Token id written at padding positions (never attended, never gathered).

    Returns:
        A :class:`PackedBatch` with R = total candidates and a 2D attention mask.
    """
    k_max = validate_groups(groups)
    rows: list[list[int]] = []
    src_row: list[int] = []
    src_pos: list[int] = []
    targets: list[int] = []
    slot: list[int] = []
    lengths: list[list[int]] = []
    for b, group in enumerate(groups):
        p = len(group.prompt_ids)
        lengths.append([len(r) for r in group.response_ids])
        for k, resp in enumerate(group.response_ids):
            r = len(rows)
            rows.append(list(group.prompt_ids) + list(resp))
            src_row += [r] * len(resp)
            src_pos += range(p - 1, p - 1 + len(resp))
            targets += resp
            slot += [b * k_max + k] * len(resp)
    width = max(len(x) for x in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for r, row in enumerate(rows):
        input_ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[r, : len(row)] = 1
    position_ids = torch.arange(width).expand(len(rows), width).clone()
    return PackedBatch(input_ids, position_ids, attention_mask,
                       *_index_tensors(src_row, src_pos, targets, slot, lengths, k_max),
                       tokens_computed=sum(len(x) for x in rows))


def pack_shared_prefix(groups: Sequence[TokenizedGroup], pad_id: int = 0) -> PackedBatch:
    """One row per prompt: ``[prompt | y_1 | ... | y_K]`` with a 4D boolean mask.

    Mask rule (query q, key k, both in one row): ``k <= q`` and either k is a prompt token and
    q is not padding, or k lies in the same segment as q (segments: prompt, each response,
    padding). Padding queries thus see only padding, which keeps every softmax row non-empty
    (no NaN) without touching real tokens.

    Args:
        groups: B groups (validated by :func:`validate_groups`).
        pad_id: Token id written at padding positions.

    Returns:
        A :class:`PackedBatch` with R = B rows and a ``[B, 1, L, L]`` bool attention mask.
    """
    k_max = validate_groups(groups)
    src_row: list[int] = []
    src_pos: list[int] = []
    targets: list[int] = []
    slot: list[int] = []
    lengths: list[list[int]] = []
    width = max(g.num_tokens_shared for g in groups)
    input_ids = torch.full((len(groups), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros(len(groups), width, dtype=torch.long)
    segment = torch.full((len(groups), width), -1, dtype=torch.long)  # -1 = padding
    for b, group in enumerate(groups):
        p = len(group.prompt_ids)
        ids = list(group.prompt_ids)
        positions = list(range(p))
        segments = [0] * p
        lengths.append([len(r) for r in group.response_ids])
        for k, resp in enumerate(group.response_ids):
            start = len(ids)
            ids += resp
            positions += range(p, p + len(resp))
            segments += [k + 1] * len(resp)
            # Token 0 is predicted by the prompt's last position, token t by its predecessor.
            if resp:
                src_pos += [p - 1, *range(start, start + len(resp) - 1)]
            src_row += [b] * len(resp)
            targets += resp
            slot += [b * k_max + k] * len(resp)
        n = len(ids)
        input_ids[b, :n] = torch.tensor(ids, dtype=torch.long)
        position_ids[b, :n] = torch.tensor(positions, dtype=torch.long)
        segment[b, :n] = torch.tensor(segments, dtype=torch.long)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    seg_q, seg_k = segment[:, :, None], segment[:, None, :]
    allowed = ((seg_k == 0) & (seg_q >= 0)) | (seg_k == seg_q)
    attention_mask = (allowed & causal).unsqueeze(1)
    return PackedBatch(input_ids, position_ids, attention_mask,
                       *_index_tensors(src_row, src_pos, targets, slot, lengths, k_max),
                       tokens_computed=sum(g.num_tokens_shared for g in groups))


def pack(groups: Sequence[TokenizedGroup], packing: str, pad_id: int = 0) -> PackedBatch:
    """Dispatch to :func:`pack_shared_prefix` or :func:`pack_padded` by name.

    Args:
        groups: B groups.
        packing: ``shared_prefix`` or ``padded``.
        pad_id: Token id written at padding positions.

    Returns:
        The packed batch.

    Raises:
        ConfigError: Unknown packing name.
    """
    if packing == "shared_prefix":
        return pack_shared_prefix(groups, pad_id)
    if packing == "padded":
        return pack_padded(groups, pad_id)
    raise ConfigError(f"packing must be one of {', '.join(PACKINGS)}, got '{packing}'")
