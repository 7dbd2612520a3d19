"""Diverse beam search (Vijayakumar et al. 2018, "Diverse Beam Search", Algorithm 1, Hamming
diversity), used to build candidate lists as in the LIRE paper sec. 4.4.

``transformers`` 5 moved group beam search to a Hub ``custom_generate`` repository, which an
offline machine cannot fetch, so it is implemented here on the model's forward pass with a KV
cache. The K beams of a prompt form G groups of K/G beams. At every step the groups choose in
order; group g's log-probabilities are lowered by ``diversity_penalty`` times the number of
times each token was chosen at this step by groups 0..g-1 (Hamming diversity), and the
penalised log-probabilities accumulate into the beam scores, as in transformers 4.x's
``group_beam_search``. Within a group the update is ``transformers``' beam search with
``early_stopping=True`` and ``length_penalty`` (a group stops once it holds K/G finished
hypotheses); with G = 1 this is exactly ``generate(num_beams=K, early_stopping=True)``.

Shape notation: B prompts, K beams (= candidates) per prompt, G groups, L tokens, V vocab.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lire_ray.errors import ConfigError

_NEG = -1.0e9


@dataclass(frozen=True)
class BeamHypothesis:
    """One finished beam.

    Attributes:
        token_ids: The generated tokens (EOS included when it ended the beam).
        score: Sum of the penalised log-probabilities divided by ``len ** length_penalty``.
        hit_stop: Whether it ended on EOS or a stop condition (``False``: length limit).
    """

    token_ids: tuple[int, ...]
    score: float
    hit_stop: bool


@torch.no_grad()
def diverse_beam_search(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                        num_beams: int, num_groups: int, diversity_penalty: float,
                        max_new_tokens: int, eos_token_ids: list[int],
                        length_penalty: float = 1.0,
                        stop_check: Callable[[list[int]], bool] | None = None,
                        ) -> list[list[BeamHypothesis]]:
    """Run diverse beam search for a left-padded batch of prompts.

    Args:
        model: A causal LM (``transformers`` or peft-wrapped) whose output has ``logits`` and
            a reorderable ``past_key_values`` cache.
        input_ids: ``[B, L]`` prompt token ids, left-padded.
        attention_mask: ``[B, L]`` 1 for prompt tokens, 0 for padding.
        num_beams: K, beams (and returned hypotheses) per prompt.
        num_groups: G, groups; must divide K.
        diversity_penalty: Weight of the Hamming diversity term (>= 0).
        max_new_tokens: Generation length limit.
        eos_token_ids: Tokens that end a hypothesis.
        length_penalty: Exponent of the length normalisation of finished scores.
        stop_check: Called with a candidate's generated tokens; ``True`` ends it like EOS
            (used for stop strings).

    Returns:
        B lists of K hypotheses: group 0's K/G best (best first), then group 1's, and so on.

    Raises:
        ConfigError: G does not divide K, or a non-positive size.
    """
    if num_beams < 1 or num_groups < 1 or num_beams % num_groups:
        raise ConfigError(f"diverse beam search needs num_groups ({num_groups}) to divide the "
                          f"number of candidates ({num_beams})")
    if diversity_penalty < 0:
        raise ConfigError(f"diversity_penalty must be >= 0, got {diversity_penalty}")
    device = input_ids.device
    B, K, G = input_ids.shape[0], num_beams, num_groups
    Kg = K // G
    eos = torch.tensor(sorted(set(eos_token_ids)), dtype=torch.long, device=device)
    keep = max(2, 1 + len(eos)) * Kg  # continuations considered per group, as in transformers

    ids = input_ids.repeat_interleave(K, dim=0)
    mask = attention_mask.repeat_interleave(K, dim=0).long()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    next_pos = mask.sum(-1, keepdim=True)

    seqs = torch.zeros((B, K, max_new_tokens), dtype=torch.long, device=device)
    run_scores = torch.full((B, K), _NEG, device=device)
    run_scores[:, ::Kg] = 0.0  # one live beam per group at the start, so beams do not repeat
    fin_seqs = seqs.clone()
    fin_scores = torch.full((B, K), _NEG, device=device)
    fin_len = torch.zeros((B, K), dtype=torch.long, device=device)
    fin_stop = torch.zeros((B, K), dtype=torch.bool, device=device)
    fin_full = torch.zeros((B, K), dtype=torch.bool, device=device)
    batch_base = torch.arange(B, device=device)[:, None] * K
    rank_ok = torch.arange(keep, device=device) < Kg

    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                logits_to_keep=1)
    for t in range(max_new_tokens):
        logprobs = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
        V = logprobs.shape[-1]
        logprobs = logprobs.view(B, K, V)
        chosen_counts = torch.zeros((B, V), device=device)
        new_seqs, new_scores, new_src = seqs.clone(), run_scores.clone(), []
        for g in range(G):
            sl = slice(g * Kg, (g + 1) * Kg)
            lp = logprobs[:, sl] - diversity_penalty * chosen_counts[:, None, :]
            acc = (lp + run_scores[:, sl, None]).reshape(B, Kg * V)
            top_scores, top_idx = torch.topk(acc, keep, dim=-1)
            src, tok = top_idx // V, top_idx % V
            cand = torch.gather(seqs[:, sl], 1, src[:, :, None].expand(-1, -1, max_new_tokens))
            cand = cand.clone()
            cand[:, :, t] = tok
            stop_hit = torch.isin(tok, eos)
            if stop_check is not None:
                stop_hit |= torch.tensor(
                    [[stop_check(cand[b, j, : t + 1].tolist()) for j in range(keep)]
                     for b in range(B)], dtype=torch.bool, device=device)
            hits = stop_hit | (t + 1 == max_new_tokens)

            # Live beams: the best Kg continuations that did not just finish.
            live = torch.topk(top_scores + hits.float() * _NEG, Kg, dim=-1).indices
            new_seqs[:, sl] = torch.gather(cand, 1, live[:, :, None].expand(-1, -1,
                                                                            max_new_tokens))
            new_scores[:, sl] = torch.gather(top_scores + hits.float() * _NEG, 1, live)
            new_src.append(torch.gather(src, 1, live) + g * Kg)
            chosen_counts.scatter_add_(1, torch.gather(tok, 1, live),
                                       torch.ones((B, Kg), device=device))

            # Finished: continuations ranked in the top Kg that hit a stop, if they beat the
            # worst kept hypothesis and the group is not already full.
            fin_cand = top_scores / float(t + 1) ** length_penalty
            full = fin_full[:, sl].all(dim=-1, keepdim=True)
            fin_cand = fin_cand + full.float() * _NEG + (~(hits & rank_ok)).float() * _NEG
            merged_scores = torch.cat([fin_scores[:, sl], fin_cand], dim=1)
            best = torch.topk(merged_scores, Kg, dim=-1).indices
            fin_scores[:, sl] = torch.gather(merged_scores, 1, best)
            fin_seqs[:, sl] = torch.gather(torch.cat([fin_seqs[:, sl], cand], dim=1), 1,
                                           best[:, :, None].expand(-1, -1, max_new_tokens))
            fin_len[:, sl] = torch.gather(torch.cat([fin_len[:, sl], torch.full_like(
                tok, t + 1)], dim=1), 1, best)
            fin_stop[:, sl] = torch.gather(torch.cat([fin_stop[:, sl], stop_hit], dim=1), 1,
                                           best)
            fin_full[:, sl] = torch.gather(torch.cat([fin_full[:, sl], hits & rank_ok], dim=1),
                                           1, best)
        seqs, run_scores = new_seqs, new_scores
        if bool(fin_full.all()) or t + 1 == max_new_tokens:
            break
        beam_idx = (torch.cat(new_src, dim=1) + batch_base).reshape(-1)
        cache = out.past_key_values
        cache.reorder_cache(beam_idx)
        mask = torch.cat([mask, torch.ones((B * K, 1), dtype=mask.dtype, device=device)], dim=1)
        out = model(input_ids=seqs[:, :, t].reshape(-1, 1), attention_mask=mask,
                    position_ids=next_pos + t, past_key_values=cache, use_cache=True,
                    logits_to_keep=1)

    results = []
    for b in range(B):
        hyps = []
        for j in range(K):
            n_tok = int(fin_len[b, j])
            hyps.append(BeamHypothesis(tuple(fin_seqs[b, j, :n_tok].tolist()),
                                       float(fin_scores[b, j]), bool(fin_stop[b, j])))
        results.append(hyps)
    return results
