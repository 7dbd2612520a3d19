"""Tokenisation, truncation and token-budget batching of pool rows."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
from _tiny_tokenizer import tiny_tokenizer

from lire_ray.adapters import prepare_pool
from lire_ray.batch import TokenizedGroup
from lire_ray.collate import (
    TruncationStats,
    batch_by_token_budget,
    tokenize_group,
    tokenize_groups,
)
from lire_ray.errors import ConfigError, DataError, ModelLoadError
from lire_ray.pool import PoolRow, read_pool, table_to_rows

FIX = Path(__file__).resolve().parent / "fixtures"
BIG = 10_000


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def chat_tok():
    return tiny_tokenizer(chat=True)


def row(**kw) -> PoolRow:
    base = dict(prompt_id="p", prompt="the quick brown fox jumps over the lazy dog",
                responses=["A small furry animal.", "Rain falls soft, drops on the roof.", ""],
                sources=["human", "policy@e1", "dataset"], policy_version=[-1, 1, -1],
                rewards={"rm": [1.0, -0.5, 2.0]}, ref_logps=[-3.0, -4.5, -0.25])
    return PoolRow(**{**base, **kw})


def test_untruncated_group_decodes_back_and_ends_with_eos(tok):
    r = row()
    g = tokenize_group(r, tok, max_prompt_tokens=BIG, max_response_tokens=BIG, reward_name="rm")
    assert tok.decode(g.prompt_ids) == r.prompt
    assert [tok.decode(ids[:-1]) for ids in g.response_ids] == list(r.responses)
    assert all(ids[-1] == tok.eos_token_id for ids in g.response_ids)
    assert g.response_ids[2] == (tok.eos_token_id,)
    assert g.rewards == (1.0, -0.5, 2.0)
    assert g.ref_logps == (-3.0, -4.5, -0.25)
    assert g.is_human == (True, False, False)
    assert (g.prompt_truncated, g.responses_truncated) == (0, (0, 0, 0))
    assert tokenize_group(r, tok, max_prompt_tokens=BIG, max_response_tokens=BIG).rewards is None


def test_prompt_left_and_responses_right_truncation_match_hf_truncation(tok):
    r = row()
    g = tokenize_group(r, tok, max_prompt_tokens=5, max_response_tokens=4)
    full_prompt = tok(r.prompt)["input_ids"]
    tok.truncation_side = "left"
    try:
        assert list(g.prompt_ids) == tok(r.prompt, truncation=True, max_length=5)["input_ids"]
    finally:
        tok.truncation_side = "right"
    assert g.prompt_truncated == len(full_prompt) - 5
    for text, ids, cut in zip(r.responses, g.response_ids, g.responses_truncated, strict=True):
        with_eos = tok(text + tok.eos_token, add_special_tokens=False)["input_ids"]
        oracle = tok(text + tok.eos_token, add_special_tokens=False, truncation=True,
                     max_length=4)["input_ids"]
        assert list(ids) == oracle
        assert cut == max(0, len(with_eos) - 4)
    # A cut response loses its EOS: it did not end there.
    assert g.responses_truncated[0] > 0 and g.response_ids[0][-1] != tok.eos_token_id
    assert g.responses_truncated[2] == 0 and g.response_ids[2] == (tok.eos_token_id,)


def test_chat_template_use(tok, chat_tok):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    r = row(prompt="\n\nSystem: Be brief.\n\nHuman: Hi\n\nAssistant:",
            prompt_messages=json.dumps(msgs))
    kw = dict(max_prompt_tokens=BIG, max_response_tokens=BIG)
    rendered = "<|system|>Be brief.\n<|user|>Hi\n<|assistant|>"
    assert chat_tok.decode(tokenize_group(r, chat_tok, **kw).prompt_ids) == rendered
    assert chat_tok.decode(tokenize_group(r, chat_tok, chat_template="never", **kw)
                           .prompt_ids) == r.prompt
    assert tok.decode(tokenize_group(r, tok, **kw).prompt_ids) == r.prompt  # no template
    plain = row()  # no prompt_messages: "auto" keeps the text, "always" wraps it as a user turn
    assert chat_tok.decode(tokenize_group(plain, chat_tok, **kw).prompt_ids) == plain.prompt
    assert chat_tok.decode(tokenize_group(plain, chat_tok, chat_template="always", **kw)
                           .prompt_ids) == f"<|user|>{plain.prompt}\n<|assistant|>"
    with pytest.raises(ModelLoadError, match="chat_template"):
        tokenize_group(r, tok, chat_template="always", **kw)
    with pytest.raises(ConfigError):
        tokenize_group(r, tok, chat_template="yes", **kw)


def test_argument_and_data_errors(tok):
    with pytest.raises(ConfigError):
        tokenize_group(row(), tok, max_prompt_tokens=0, max_response_tokens=4)
    with pytest.raises(DataError) as err:
        tokenize_group(row(), tok, max_prompt_tokens=4, max_response_tokens=4, reward_name="x")
    assert err.value.field == "rewards.x"
    no_eos = tiny_tokenizer()
    no_eos.eos_token = None
    with pytest.raises(ModelLoadError, match="eos"):
        tokenize_group(row(), no_eos, max_prompt_tokens=4, max_response_tokens=4)


def test_truncation_stats_match_a_direct_count(tok):
    rows = [row(prompt_id=str(i), prompt="the quick brown fox " * (i + 1)) for i in range(5)]
    stats = TruncationStats()
    groups = tokenize_groups(rows, tok, stats=stats, max_prompt_tokens=12, max_response_tokens=6)
    expected = dict(groups=5, prompts_truncated=0, prompt_tokens=0, prompt_tokens_dropped=0,
                    responses=0, responses_truncated=0, response_tokens=0,
                    response_tokens_dropped=0, groups_over_budget=0)
    for r in rows:
        n = len(tok(r.prompt)["input_ids"])
        expected["prompts_truncated"] += n > 12
        expected["prompt_tokens"] += min(n, 12)
        expected["prompt_tokens_dropped"] += max(0, n - 12)
        for text in r.responses:
            m = len(tok(text, add_special_tokens=False)["input_ids"]) + 1
            expected["responses"] += 1
            expected["responses_truncated"] += m > 6
            expected["response_tokens"] += min(m, 6)
            expected["response_tokens_dropped"] += max(0, m - 6)
    assert stats.as_dict() == expected
    assert expected["prompts_truncated"] > 0 and expected["responses_truncated"] > 0
    assert stats.merge(stats).as_dict() == {k: 2 * v for k, v in expected.items()}
    assert len(groups) == 5 and "5 prompts" in stats.summary()


def group(i: int, size: int) -> TokenizedGroup:
    """A group of exactly ``size`` shared tokens: a 1-token prompt and one response."""
    return TokenizedGroup(prompt_id=str(i), prompt_ids=(1,), response_ids=((2,) * (size - 1),))


def test_batching_by_hand(caplog):
    groups = [group(i, n) for i, n in enumerate([3, 4, 10, 2, 2, 2, 7])]
    stats = TruncationStats()
    with caplog.at_level(logging.WARNING, logger="lire_ray.collate"):
        batches = batch_by_token_budget(groups, 8, stats=stats)
    assert [[g.prompt_id for g in b] for b in batches] == [["0", "1"], ["2"], ["3", "4", "5"],
                                                           ["6"]]
    assert stats.groups_over_budget == 1
    assert "1 prompt group(s) exceed" in caplog.text
    capped = batch_by_token_budget(groups, 8, max_prompts=2)
    assert [[g.prompt_id for g in b] for b in capped] == [["0", "1"], ["2"], ["3", "4"], ["5"],
                                                          ["6"]]
    with pytest.raises(ConfigError):
        batch_by_token_budget(groups, 0)


@pytest.mark.parametrize("seed", range(5))
def test_batching_invariants_on_random_sizes(seed):
    rng = random.Random(seed)
    sizes = [rng.randint(1, 40) for _ in range(60)]
    budget, cap = 50, rng.choice([None, 3])
    batches = batch_by_token_budget([group(i, n) for i, n in enumerate(sizes)], budget, cap)
    flat = [int(g.prompt_id) for b in batches for g in b]
    assert flat == list(range(60))
    for b, nxt in zip(batches, batches[1:] + [None], strict=True):
        total = sum(sizes[int(g.prompt_id)] for g in b)
        assert total <= budget or len(b) == 1
        assert cap is None or len(b) <= cap
        if nxt is not None and total <= budget:
            # Greedy: the next batch's first group did not fit here.
            first = sizes[int(nxt[0].prompt_id)]
            assert total + first > budget or (cap is not None and len(b) == cap)


@pytest.mark.parametrize("fmt", ["hh", "tldr", "listwise", "chat"])
def test_prepare_read_collate_round_trip(tmp_path, tok, chat_tok, fmt):
    prepare_pool(fmt, str(FIX / f"{fmt}.jsonl"), tmp_path / "pool")
    rows = table_to_rows(read_pool(tmp_path / "pool"))
    stats = TruncationStats()
    groups = tokenize_groups(rows, tok, stats=stats, max_prompt_tokens=BIG,
                             max_response_tokens=BIG)
    for r, g in zip(rows, groups, strict=True):
        assert g.prompt_id == r.prompt_id
        assert tok.decode(g.prompt_ids) == r.prompt
        assert [tok.decode(ids[:-1]) for ids in g.response_ids] == list(r.responses)
        assert g.is_human == tuple(s == "human" for s in r.sources)
    assert stats.prompts_truncated == stats.responses_truncated == 0
    assert stats.responses == sum(len(r.responses) for r in rows)
    for r in rows:
        g = tokenize_group(r, chat_tok, max_prompt_tokens=BIG, max_response_tokens=BIG)
        if r.prompt_messages is not None:
            rendered = "".join(f"<|{m['role']}|>{m['content']}\n"
                               for m in json.loads(r.prompt_messages)) + "<|assistant|>"
            assert chat_tok.decode(g.prompt_ids) == rendered
        else:
            assert chat_tok.decode(g.prompt_ids) == r.prompt
    batches = batch_by_token_budget(groups, 64)
    assert [g for b in batches for g in b] == groups
