"""TRL's side of the peer bench: ``DPOTrainer`` on the pairs the bench wrote, as a TRL user
runs it (a script that loads the model, trains and saves), in its own process.

    python bench/peer_trl.py --model DIR --data pairs.jsonl --output DIR --result trl.json \\
        --lr 1e-5 --beta 0.1 --batch 4 --seed 0

Two things differ from a stock script, both for the comparison only: the pairs are read in
file order (a sequential sampler instead of the shuffled one, so both trainers see the same
batches), and each step's loss, padded tokens and seconds are recorded from inside the trainer
(``compute_loss`` and a callback) at full precision instead of the 4-digit logged loss.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="JSONL of {prompt, chosen, rejected}")
    p.add_argument("--output", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import torch
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    started = time.perf_counter()
    rows = [json.loads(line) for line in open(args.data, encoding="utf-8") if line.strip()]
    dataset = Dataset.from_list(rows)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    losses: list[float] = []
    tokens: list[int] = []
    step_s: list[float] = []

    class Recorder(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_s.append(time.perf_counter() - self.t)

    class Recorded(DPOTrainer):
        def _get_train_sampler(self, *a, **k):
            return SequentialSampler(self.train_dataset)

        def compute_loss(self, model, inputs, *a, **k):
            out = super().compute_loss(model, inputs, *a, **k)
            loss = out[0] if isinstance(out, tuple) else out
            losses.append(float(loss.detach()))
            tokens.append(int(inputs["input_ids"].numel()))
            return out

    config = DPOConfig(
        output_dir=args.output, beta=args.beta, learning_rate=args.lr, num_train_epochs=1,
        per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
        lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=args.max_grad_norm, seed=args.seed, logging_steps=1, save_strategy="no",
        report_to=[], use_cpu=True, bf16=False, fp16=False, dataloader_num_workers=0,
        max_length=None)
    trainer = Recorded(model=model, args=config, train_dataset=dataset,
                       processing_class=tokenizer, callbacks=[Recorder()])
    ready = time.perf_counter()
    trainer.train()
    trained = time.perf_counter()
    trainer.save_model(args.output)
    result = {"losses": losses, "tokens": tokens, "step_s": step_s,
              "setup_s": ready - started, "train_s": trained - ready,
              "save_s": time.perf_counter() - trained, "pairs": len(rows),
              "torch_threads": torch.get_num_threads()}
    with open(args.result, "w", encoding="utf-8") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
