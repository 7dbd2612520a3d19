"""Real human preference pairs from the chit-chat conversations, for reward-model training.

Each example of the built-in chit-chat set (:mod:`lire_ray.adapters.chitchat`: the last turns
of a real conversation as chat turns, the next human turn as the reference answer) becomes a
two-candidate row:

- **chosen**: the reply the person actually wrote next in that conversation;
- **rejected**: the reply written at a turn of *another* conversation of the same split,
  preferably one opened with the same topic prompt (the dataset has 36 opening prompts), so
  the pair differs in whether the reply answers *this* context, not in topic or style alone.

Why this preference and not the conversations' ratings: the ratings (witty, upbeat,
interesting, 1-10) judge whole conversations, not replies, and 55% of them are exactly 5, so a
rating difference says little about any one reply; whereas a person's real reply being a better
continuation of their own conversation than a stranger's reply is a judgement every human
reader shares. Both candidates are human-written, so the reward model cannot win by telling
human from machine text; it learns whether a reply fits its context (coherence, relevance,
answering the question asked), which is what a chat policy is to be steered towards. The
negative is drawn with a seeded generator per split, so the pool is reproducible.

Command line (writes a pool directory)::

    python -m lire_ray.rm.chitchat --output pools/chitchat-pairs [--split train] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from collections.abc import Sequence

from lire_ray.pool import HUMAN, PoolRow


def chitchat_pairs(split: str = "train", limit: int | None = None, *,
                   seed: int = 0) -> list[PoolRow]:
    """Two-candidate rows (real reply preferred over another conversation's reply).

    Args:
        split: ``train`` or ``heldout`` (the chit-chat set's split by conversation; a negative
            comes from the same split, so held-out pairs hold no training text).
        limit: Keep the first ``limit`` examples of the split.
        seed: Seed of the choice of negatives.

    Returns:
        Pool rows with ``responses`` (real reply, other reply), ``preferred`` 0, both of source
        ``human``, and the row metadata of the chit-chat example plus ``rejected_from`` (the
        conversation the negative comes from).

    Raises:
        DependencyError: The chit-chat package is not installed.
        ValueError: Unknown split, or fewer than two examples.
    """
    from lire_ray.adapters.chitchat import prompt_rows

    rows = prompt_rows(split, limit)
    if len(rows) < 2:
        raise ValueError(f"the chitchat {split} split gave {len(rows)} example(s); pairs need "
                         "two or more")
    metas = [json.loads(r.metadata or "{}") for r in rows]
    by_topic: dict[str | None, list[int]] = defaultdict(list)
    for i, m in enumerate(metas):
        by_topic[m.get("topic")].append(i)
    rng = random.Random(f"chitchat-pairs/{split}/{seed}")
    out = []
    for row, meta in zip(rows, metas):
        same = [j for j in by_topic[meta.get("topic")]
                if metas[j]["conversation"] != meta["conversation"]]
        pool = same or [j for j in range(len(rows))
                        if metas[j]["conversation"] != meta["conversation"]]
        j = rng.choice(pool)
        other = rows[j].responses[0]
        out.append(PoolRow(
            prompt_id=row.prompt_id, prompt=row.prompt, prompt_messages=row.prompt_messages,
            responses=(row.responses[0], other), sources=(HUMAN, HUMAN),
            policy_version=(-1, -1), preferred=0,
            metadata=json.dumps({**meta, "rejected_from": metas[j]["conversation"]},
                                ensure_ascii=False)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Write a chit-chat preference-pair pool (see the module docstring)."""
    from lire_ray.pool import write_pool

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pool directory to write")
    parser.add_argument("--split", default="train", choices=("train", "heldout"))
    parser.add_argument("--limit", type=int, default=None, help="first N examples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the negatives")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    rows = chitchat_pairs(args.split, args.limit, seed=args.seed)
    write_pool(rows, args.output, overwrite=args.overwrite,
               metadata={"source": f"builtin:chitchat ({args.split})",
                         "pairs": "real next reply preferred over another conversation's reply "
                                  "(same topic where possible)", "seed": args.seed})
    print(f"wrote {len(rows)} pair rows to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
