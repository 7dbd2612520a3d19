"""How far the held-out judge agrees with the training reward on the embedded task.

The embedded task trains on VADER and judges with AFINN (:mod:`lire_ray.demo.reviews`). This
module measures, on any list of responses, how the two agree (correlation, share of sign
disagreements, responses that one calls positive and the other negative) and how healthy the
text is (share of distinct responses, share written outside the task's vocabulary, the most
common response). It reads either

* the built starting policy, sampled here with transformers on CPU (no Ray, no vLLM), greedily
  and at temperature 1 on held-out prompts, or
* a finished run directory (``eval_before.json`` / ``eval_after.json`` of the main job),

and prints a short report:

    python -m lire_ray.demo.agreement --cache-dir .cache/lire-ray      # the starting policy
    python -m lire_ray.demo.agreement --run-dir runs/tiny              # before/after of a run
    python -m lire_ray.demo.agreement --run-dir runs/tiny --sample     # ... and sampled at T=1
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from lire_ray.demo import language, reviews

_WORD = re.compile(r"[a-z']+")
#: A "high" VADER compound score (an honest "it is great." scores 0.62).
HIGH = 0.5


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant (or has fewer than 2 values)."""
    if len(xs) < 2 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return math.nan
    return statistics.correlation(xs, ys)


def agreement(train: Sequence[float], judge: Sequence[float]) -> dict:
    """Agreement statistics between two reward lists over the same responses.

    Args:
        train: Training-reward scores (VADER), one per response.
        judge: Judge scores (AFINN), one per response, in the same order.

    Returns:
        ``n``; ``pearson`` (NaN if a side is constant); ``sign_disagreement``: share of
        responses the two score with opposite signs; ``train_pos_judge_neg`` and
        ``train_neg_judge_pos``: the two directions of that; ``judge_zero_train_pos``: share the
        judge scores 0 while the training reward is positive (emphasis or emoticons only);
        ``train_high_judge_nonpos``: share with a high training reward (>= :data:`HIGH`) that
        the judge scores 0 or below (the outputs a VADER-hacking policy would write).

    Raises:
        ValueError: The lists differ in length or are empty.
    """
    if len(train) != len(judge) or not train:
        raise ValueError(f"need two non-empty lists of one length, got {len(train)} and "
                         f"{len(judge)}")
    n = len(train)
    pairs = list(zip(train, judge))
    return {
        "n": n,
        "pearson": _pearson(train, judge),
        "sign_disagreement": sum(_sign(t) * _sign(j) < 0 for t, j in pairs) / n,
        "train_pos_judge_neg": sum(t > 0 > j for t, j in pairs) / n,
        "train_neg_judge_pos": sum(t < 0 < j for t, j in pairs) / n,
        "judge_zero_train_pos": sum(t > 0 and j == 0 for t, j in pairs) / n,
        "train_high_judge_nonpos": sum(t >= HIGH and j <= 0 for t, j in pairs) / n,
    }


def in_vocabulary(response: str) -> bool:
    """Whether every word of ``response`` is one the task's review grammar can write.

    Emoticons and punctuation are ignored. A False here is a degenerate response (a word the
    grammar never writes, such as a product name spelt wrong or a broken-up token soup).
    """
    vocab = language.vocabulary()
    for emoticon in {e for es in language.EMOTICONS.values() for e in es}:
        response = response.replace(emoticon, " ")  # ":D" is no word "d"
    return all(w in vocab for w in _WORD.findall(response.lower()))


def text_health(responses: Sequence[str]) -> dict:
    """Diversity and well-formedness of a list of responses.

    Returns:
        ``distinct``: share of distinct responses; ``out_of_vocabulary``: share with a word
        outside the grammar's vocabulary; ``top`` and ``top_share``: the most common response
        and its share (a collapsed policy writes one response for every prompt).
    """
    counts = Counter(responses)
    top, top_n = counts.most_common(1)[0] if counts else ("", 0)
    n = max(1, len(responses))
    return {"distinct": len(counts) / n,
            "out_of_vocabulary": sum(not in_vocabulary(r) for r in responses) / n,
            "top": top, "top_share": top_n / n}


def summarize(prompts: Sequence[str], responses: Sequence[str]) -> dict:
    """Both rewards' means, their agreement and the text health of ``responses``."""
    train = reviews.vader_reward(list(prompts), list(responses))
    judge = reviews.afinn_reward(list(prompts), list(responses))
    return {"vader_mean": statistics.fmean(train), "vader_std": statistics.pstdev(train),
            "afinn_mean": statistics.fmean(judge), "afinn_std": statistics.pstdev(judge),
            **agreement(train, judge), **text_health(responses),
            "examples": [{"prompt": p, "response": r, "vader": t, "afinn": j}
                         for p, r, t, j in zip(prompts, responses, train, judge)]}


def sample_policy(model_dir: str | Path, prompts: Sequence[str], *, n: int = 1,
                  temperature: float = 0.0, max_new_tokens: int = 24,
                  seed: int = 0) -> list[list[str]]:
    """Generate ``n`` responses per prompt with transformers on CPU (cut at the first newline).

    Args:
        model_dir: A HF model directory (the built tiny policy or a checkpoint).
        prompts: Prompt texts.
        n: Responses per prompt (1 when greedy).
        temperature: 0 for greedy decoding, else the sampling temperature.
        max_new_tokens: Generation budget per response.
        seed: Torch seed of the sampling.

    Returns:
        ``n`` response texts per prompt.
    """
    import torch

    from lire_ray.models import load_causal_lm, load_tokenizer

    tok = load_tokenizer(model_dir)
    tok.padding_side = "left"
    model = load_causal_lm(model_dir, dtype="float32").eval()
    enc = tok(list(prompts), return_tensors="pt", padding=True)
    greedy = temperature <= 0
    kw = {"do_sample": False} if greedy else {"do_sample": True, "temperature": temperature,
                                               "top_k": 0, "num_return_sequences": n}
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens,
                             pad_token_id=tok.pad_token_id, **kw)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    texts = [t.split("\n")[0] for t in texts]
    per = 1 if greedy else n
    return [texts[i * per:(i + 1) * per] for i in range(len(prompts))]


def policy_agreement(model_dir: str | Path, *, prompts: int = 32, samples: int = 4,
                     temperature: float = 1.0, max_new_tokens: int = 24) -> dict:
    """Sample a policy on held-out prompts and summarise greedy and sampled responses.

    Returns:
        ``{"greedy": summarize(...), "sampled": summarize(...)}`` over the first ``prompts``
        held-out prompts (``samples`` responses each at ``temperature`` for "sampled").
    """
    texts = [r["prompt"] for r in reviews.prompt_rows("heldout", prompts)]
    out = {}
    for name, temp, n in (("greedy", 0.0, 1), ("sampled", temperature, samples)):
        resp = sample_policy(model_dir, texts, n=n, temperature=temp,
                             max_new_tokens=max_new_tokens)
        out[name] = summarize([p for p, rs in zip(texts, resp) for _ in rs],
                              [r for rs in resp for r in rs])
    return out


def run_agreement(run_dir: str | Path) -> dict:
    """Summarise the held-out generations a main-job run stored before and after training.

    Raises:
        FileNotFoundError: The run directory has no ``eval_before.json``/``eval_after.json``.
    """
    out = {}
    for name in ("before", "after"):
        data = json.loads((Path(run_dir) / f"eval_{name}.json").read_text(encoding="utf-8"))
        responses = [rs[0] for rs in data["responses"]]
        # The stored eval keeps responses only; the main job evaluates the first N held-out
        # rows in order, so the prompts are rebuilt from the builtin split.
        prompts = [r["prompt"] for r in reviews.prompt_rows("heldout", len(responses))]
        out[name] = summarize(prompts, responses)
    return out


def run_policies(run_dir: str | Path) -> tuple[str, str | None]:
    """The starting policy and the last complete full-model checkpoint of a run.

    Returns:
        ``(base, last)``; ``last`` is None when no full-model checkpoint is complete yet (an
        adapter-only checkpoint is not a model directory of its own).
    """
    import yaml

    run_dir = Path(run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    base = cfg["model"]["policy"]
    if base == "tiny":
        from lire_ray.demo.tiny_policy import ensure_tiny_policy

        base = str(ensure_tiny_policy(cfg["run"]["cache_dir"]))
    done = [d for d in (run_dir / "checkpoints").glob("e*")
            if (d / "COMPLETE").is_file() and (d / "config.json").is_file()]
    last = max(done, key=lambda d: int(d.name[1:]), default=None)
    return base, (str(last) if last else None)


def format_summary(title: str, s: dict, examples: int = 6) -> str:
    """A few lines of text for one :func:`summarize` result."""
    lines = [
        f"{title}: n={s['n']}  VADER {s['vader_mean']:+.3f} (sd {s['vader_std']:.3f})  "
        f"AFINN {s['afinn_mean']:+.2f} (sd {s['afinn_std']:.2f})",
        f"  pearson {s['pearson']:+.3f}  sign disagreement {s['sign_disagreement']:.1%} "
        f"(VADER+/AFINN- {s['train_pos_judge_neg']:.1%}, VADER-/AFINN+ "
        f"{s['train_neg_judge_pos']:.1%}); AFINN 0 while VADER+ {s['judge_zero_train_pos']:.1%}; "
        f"VADER>={HIGH} with AFINN<=0 {s['train_high_judge_nonpos']:.1%}",
        f"  distinct {s['distinct']:.1%}  out of vocabulary {s['out_of_vocabulary']:.1%}  "
        f"most common ({s['top_share']:.1%}): {s['top']!r}",
    ]
    lines += [f"    {e['vader']:+.2f} {e['afinn']:+3.0f} {e['response']!r}"
              for e in s["examples"][:examples]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``--run-dir`` summarises a run; otherwise the (built) starting policy."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", help="a main-job run directory (eval_before/after.json)")
    ap.add_argument("--sample", action="store_true", help="with --run-dir: also sample the "
                    "starting policy and the last checkpoint at --temperature")
    ap.add_argument("--policy", help="a HF model directory; default: the built tiny policy")
    ap.add_argument("--cache-dir", default=".cache/lire-ray", help="where the tiny policy is")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    args = ap.parse_args(argv)
    if args.run_dir:
        res = run_agreement(args.run_dir)
        for name, s in res.items():
            print(format_summary(f"held-out, greedy, {name} training", s, examples=0))
        print("same prompts, before -> after (VADER, AFINN):")
        for b, a in list(zip(res["before"]["examples"], res["after"]["examples"]))[:12]:
            print(f"  {b['prompt']}\n    {b['vader']:+.2f} {b['afinn']:+3.0f} {b['response']!r}"
                  f"\n    {a['vader']:+.2f} {a['afinn']:+3.0f} {a['response']!r}")
        if not args.sample:
            return 0
        # Greedy decoding hides what sampling still writes: sample both ends of the run.
        base, last = run_policies(args.run_dir)
        for name, policy in (("starting policy", base), ("last checkpoint", last)):
            if policy is None:
                print(f"{name}: no full-model checkpoint to sample")
                continue
            sampled = policy_agreement(policy, prompts=args.prompts, samples=args.samples,
                                       temperature=args.temperature,
                                       max_new_tokens=args.max_new_tokens)["sampled"]
            print(format_summary(f"{name}, held-out, T={args.temperature}", sampled,
                                 examples=8))
        return 0
    if args.policy:
        policy = str(args.policy)
    else:
        from lire_ray.demo.tiny_policy import ensure_tiny_policy

        policy = str(ensure_tiny_policy(args.cache_dir))
    res = policy_agreement(policy, prompts=args.prompts, samples=args.samples,
                           temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    print(format_summary(f"{policy}, held-out, greedy", res["greedy"]))
    print(format_summary(f"{policy}, held-out, T={args.temperature}", res["sampled"],
                         examples=12))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
