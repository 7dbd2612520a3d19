"""Peer bench: TRL's ``DPOTrainer`` against lire-ray's ``jobs/train.py`` on the same work.

Both trainers run one after the other, each as the command its user would run (TRL: a script,
:mod:`bench.peer_trl`; lire-ray: ``jobs/train.py`` on ``configs/tiny-labels.yaml``), on the same
model folder, the same preference data in the same order and the same hyperparameters: beta,
lr, one epoch, 4 pairs (prompts) a step, cosine without warmup, AdamW, gradient clipping 1.0,
fp32, full weights. The data are real human conversations (``chitchat-dataset``): the prompt is a
conversation's opening turn, the preferred answer its real reply, the others replies taken from
other conversations.

- ``--k 2``: one pair per prompt; DPO on both sides (lire-ray computes the reference log-probs
  in its training run, TRL with its reference model). Per-step losses must agree.
- ``--k 4``: four candidates per prompt. lire-ray trains LIRE on all four and DPO with
  ``pairs=best_vs_rest``; TRL trains DPO on the three equivalent best-vs-rest pairs per prompt
  (three times as many rows, 4 pairs a step).

Recorded per side: per-step losses, training time (the optimizer steps; for lire-ray plus its
reference pass), whole-command wall time, tokens the model ran (TRL: padded ``input_ids``;
lire-ray: the shared-prefix tokens) and tokens/s, peak memory summed over the command's whole
process tree (RSS sampled every 0.1 s: Ray's processes included), and the final weights.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import fmt, table

ROOT = Path(__file__).resolve().parents[1]
LN2 = math.log(2.0)
RECIPE = ROOT / "configs" / "tiny-labels.yaml"


def chitchat_items(n: int, k: int, seed: int, *, max_chars: int = 240) -> list[dict]:
    """``n`` prompts with ``k`` responses each, the first one preferred (see the module doc)."""
    import importlib.util

    spec = importlib.util.find_spec("chitchat_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the peer bench needs chitchat-dataset (pip install chitchat-dataset)")
    data = json.loads((Path(spec.submodule_search_locations[0]) / "dataset.json")
                      .read_text(encoding="utf-8"))
    turns = []
    for conv_id in sorted(data):
        msgs = data[conv_id].get("messages") or []
        if len(msgs) < 2:
            continue
        first = " ".join(m["text"] for m in msgs[0]).strip()
        reply = " ".join(m["text"] for m in msgs[1]).strip()
        if 8 <= len(first) <= max_chars and 8 <= len(reply) <= max_chars:
            turns.append((first, reply))
    rng = random.Random(seed)
    rng.shuffle(turns)
    items = []
    for i in range(n):
        prompt, reply = turns[i]
        others = [turns[n + (i * (k - 1) + j) % (len(turns) - n)][1] for j in range(k - 1)]
        items.append({"prompt": f"{prompt}\n", "responses": [reply, *others]})
    return items


def write_inputs(work: Path, items: list[dict], *, lire_overrides: list[str]
                 ) -> tuple[Path, Path, int]:
    """The lire-ray pool and TRL's pairs (JSONL) in lire-ray's training order.

    Returns:
        The pool directory, the pairs file, and the number of pairs.
    """
    from lire_ray.config import load_recipe
    from lire_ray.inputs import load_training_pool
    from lire_ray.pool import PoolRow, write_pool

    rows = [PoolRow(prompt_id=f"p{i:04d}", prompt=it["prompt"], responses=tuple(it["responses"]),
                    sources=("human",) * len(it["responses"]),
                    policy_version=(-1,) * len(it["responses"]), preferred=0)
            for i, it in enumerate(items)]
    pool = work / "pool"
    write_pool(rows, pool)
    recipe = load_recipe(RECIPE, [*lire_overrides, f"data.train={pool}"])
    order = load_training_pool(recipe, str(pool)).column("prompt_id").to_pylist()
    by_id = {r.prompt_id: r for r in rows}
    pairs = work / "pairs.jsonl"
    n = 0
    with open(pairs, "w", encoding="utf-8") as fh:
        for pid in order:
            r = by_id[pid]
            for rejected in r.responses[1:]:
                fh.write(json.dumps({"prompt": r.prompt, "chosen": r.responses[0],
                                     "rejected": rejected}) + "\n")
                n += 1
    return pool, pairs, n


class TreeMemory:
    """Peak RSS summed over a process and all its descendants, sampled by a thread."""

    def __init__(self, pid: int, interval_s: float = 0.1):
        import psutil

        self._root = psutil.Process(pid)
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak_bytes = 0
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            try:
                procs = [self._root, *self._root.children(recursive=True)]
            except psutil.Error:
                procs = []
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_bytes = max(self.peak_bytes, total)
            time.sleep(self._interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_command(cmd: list[str], *, log: Path, timeout_s: float) -> dict:
    """Run a command, timing it and sampling its process tree's memory.

    Raises:
        RuntimeError: The command failed (the message holds its log's tail).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    # A cluster of the command's own, started and stopped inside the timed and measured tree,
    # never one found running on the machine.
    env.setdefault("RAY_ADDRESS", "local")
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        mem = TreeMemory(proc.pid)
        try:
            rc = proc.wait(timeout=timeout_s)
        finally:
            mem.stop()
            if proc.poll() is None:
                proc.kill()
    wall = time.perf_counter() - started
    if rc != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed (exit {rc}):\n{tail}")
    return {"wall_s": wall, "peak_gib": mem.peak_bytes / 1024 ** 3}


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    out: dict = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def weight_diff(init: Path, a: Path, b: Path) -> dict:
    """Largest |a - b| over the common tensors, and the largest update |a - init|."""
    wi, wa, wb = _weights(init), _weights(a), _weights(b)
    keys = sorted(set(wa) & set(wb) & set(wi))
    diff = max(float((wa[k] - wb[k]).abs().max()) for k in keys)
    update = max(float((wa[k] - wi[k]).abs().max()) for k in keys)
    return {"max_abs_diff": diff, "max_update": update, "tensors": len(keys)}


def run_trl(policy: Path, pairs: Path, work: Path, *, lr: float, beta: float, seed: int,
            timeout_s: float) -> dict:
    """TRL's command, its timings and per-step records."""
    out, result = work / "trl-out", work / "trl.json"
    cmd = [sys.executable, str(ROOT / "bench" / "peer_trl.py"), "--model", str(policy),
           "--data", str(pairs), "--output", str(out), "--result", str(result),
           "--lr", repr(lr), "--beta", repr(beta), "--batch", "4", "--seed", str(seed)]
    run = run_command(cmd, log=work / "trl.log", timeout_s=timeout_s)
    rec = json.loads(result.read_text(encoding="utf-8"))
    tokens = sum(rec["tokens"])
    steps_s = sum(rec["step_s"])
    return {"command": "python bench/peer_trl.py ...", **run, "losses": rec["losses"],
            "steps": len(rec["losses"]), "train_s": steps_s, "train_loop_s": rec["train_s"],
            "tokens": tokens, "tokens_per_s": tokens / max(steps_s, 1e-9),
            "pairs": rec["pairs"], "output": str(out)}


def run_lire(policy: Path, pool: Path, work: Path, *, loss: str, overrides: list[str],
             timeout_s: float) -> dict:
    """``jobs/train.py`` with ``loss``, its timings and per-step records."""
    run_dir = work / f"lire-{loss}"
    args = [f"policy={policy}", f"data={pool}", f"loss={loss}", *overrides,
            f"run.dir={run_dir}"]
    cmd = [sys.executable, str(ROOT / "jobs" / "train.py"), "--config", str(RECIPE), *args]
    run = run_command(cmd, log=work / f"lire-{loss}.log", timeout_s=timeout_s)
    records = [json.loads(line) for line in
               (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    steps = [r for r in records if r.get("event") == "train_step"]
    steps_s = sum(r["step_seconds"] for r in steps)
    ref_s = sum(r.get("reference_s", 0.0) for r in steps)
    tokens = sum(r["tokens"] for r in steps)
    train_s = steps_s + ref_s
    return {"command": "python jobs/train.py --config configs/tiny-labels.yaml "
                       + " ".join(a for a in args if not a.startswith(("policy=", "data=",
                                                                       "run.dir="))),
            **run, "losses": [r["loss"] for r in steps], "steps": len(steps),
            "train_s": train_s, "steps_s": steps_s, "reference_s": ref_s, "tokens": tokens,
            "tokens_per_s": tokens / max(train_s, 1e-9),
            "output": str(run_dir / "checkpoints" / "train")}


def run_peer_bench(*, policy: str, k: int = 2, prompts: int = 64, lr: float | None = None,
                   beta: float = 0.1, seed: int = 0, timeout_s: float = 1800,
                   work_dir: str | None = None) -> dict:
    """Run both sides and compare (see the module docstring).

    Args:
        policy: ``tiny`` (the embedded tiny policy) or an HF model folder.
        k: Candidates per prompt (2 or 4).
        prompts: Prompts (pairs at K = 2).
        lr: Learning rate (default: 5e-4 for tiny, 1e-5 otherwise).
        beta: DPO's beta.
        seed: Data and training seed.
        timeout_s: Limit of each command.
        work_dir: Where the runs go (default a temporary directory, removed afterwards).

    Returns:
        The result document's ``peer`` section.
    """
    import shutil

    if k not in (2, 4):
        raise ValueError(f"--k must be 2 or 4, got {k}")
    if policy == "tiny":
        from lire_ray.demo.tiny_policy import ensure_tiny_policy

        path = Path(ensure_tiny_policy(ROOT / ".cache" / "lire-ray"))
    else:
        path = Path(policy).resolve()
        if not (path / "config.json").is_file():
            raise ValueError(f"--policy {policy}: not 'tiny' nor an HF model folder")
    lr = lr if lr is not None else (5e-4 if policy == "tiny" else 1e-5)
    overrides = ["data.chat_template=never", "model.max_prompt_tokens=256",
                 "model.max_response_tokens=512", f"train.lr={lr}", "train.epochs=1",
                 "train.micro_batch_prompts=4", "train.grad_accum=1", "train.warmup_ratio=0",
                 "train.max_grad_norm=1.0", f"train.seed={seed}", "train.logger=none",
                 "resources.trainer.max_failures=0", f"loss.params_by_name.dpo.beta={beta}",
                 "loss.params_by_name.dpo.pairs=best_vs_rest"]
    work = Path(work_dir or tempfile.mkdtemp(prefix="lire-peer-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        items = chitchat_items(prompts, k, seed)
        pool, pairs, n_pairs = write_inputs(work, items, lire_overrides=overrides)
        trl = run_trl(path, pairs, work, lr=lr, beta=beta, seed=seed, timeout_s=timeout_s)
        lire: dict[str, Any] = {}
        for loss in (["dpo"] if k == 2 else ["lire", "dpo"]):
            lire[loss] = run_lire(path, pool, work, loss=loss, overrides=overrides,
                                  timeout_s=timeout_s)
            lire[loss]["weights_vs_trl"] = weight_diff(path, Path(trl["output"]),
                                                       Path(lire[loss]["output"]))
        result: dict[str, Any] = {
            "config": {"policy": policy, "k": k, "prompts": prompts, "pairs": n_pairs,
                       "lr": lr, "beta": beta, "seed": seed, "overrides": overrides},
            "trl": trl, "lire": lire}
        if k == 2:
            a, b = trl["losses"], lire["dpo"]["losses"]
            result["agreement"] = {
                "steps": min(len(a), len(b)), "same_steps": len(a) == len(b),
                "max_loss_diff": max(abs(x - y) for x, y in zip(a, b, strict=False)),
                "first_trl": a[0], "first_lire": b[0], "ln2": LN2}
        result["ratios"] = {loss: {"train": r["train_s"] / trl["train_s"],
                                   "whole": r["wall_s"] / trl["wall_s"],
                                   "peak_memory": r["peak_gib"] / trl["peak_gib"]}
                            for loss, r in lire.items()}
        return result
    finally:
        if work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


def peer_markdown(result: dict) -> str:
    """The peer bench's Markdown: one row per trainer, agreement and ratio lines."""
    c = result["config"]
    trl = result["trl"]
    rows = [[f"TRL DPOTrainer ({c['pairs']} pairs)", trl["steps"], trl["train_s"],
             trl["wall_s"], trl["tokens"], trl["tokens_per_s"], trl["peak_gib"], "-", "-"]]
    for loss, r in result["lire"].items():
        w = r["weights_vs_trl"]
        rows.append([f"lire-ray {loss} ({c['prompts']} prompts x {c['k']})", r["steps"],
                     r["train_s"], r["wall_s"], r["tokens"], r["tokens_per_s"], r["peak_gib"],
                     w["max_abs_diff"], w["max_update"]])
    text = (f"Policy `{c['policy']}`, K = {c['k']}, {c['prompts']} prompts, lr {c['lr']:g}, "
            f"beta {c['beta']:g}, 1 epoch, 4 prompts (TRL: pairs) a step, cosine without "
            "warmup, fp32.\n\n"
            + table(["trainer", "steps", "training s", "whole command s", "tokens",
                     "tokens/s", "peak GiB (all processes)", "max |w - w_TRL|",
                     "max |w - w_0|"], rows))
    ag = result.get("agreement")
    if ag:
        text += (f"\n\nPer-step DPO losses over {ag['steps']} steps: largest difference "
                 f"{fmt(ag['max_loss_diff'])}; first step TRL {ag['first_trl']:.6f}, lire-ray "
                 f"{ag['first_lire']:.6f} (ln 2 = {ag['ln2']:.6f}).")
    for loss, r in result["ratios"].items():
        text += (f"\n\nlire-ray {loss} / TRL: training {r['train']:.2f}x, whole command "
                 f"{r['whole']:.2f}x, peak memory {r['peak_memory']:.2f}x.")
    return text
