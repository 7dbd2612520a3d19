"""One trainer worker's share of reward-model training: the policy worker with another model and
another step.

:class:`RewardModelRun` is :class:`~lire_ray.training.worker.TrainingRun` (DeepSpeed engine,
schedule, shard cache, epoch checkpoints and resume, metric sink, progress lines, the Hugging
Face output with its ``COMPLETE`` marker) with two parts replaced: the model is a
``AutoModelForSequenceClassification`` with one label (the reward) on the recipe's backbone,
and a step scores the chosen and rejected response of every pair row
(:mod:`lire_ray.rm.pairs`) and descends the Bradley-Terry loss. The step record's ``prompts``
counts pairs; its metrics are the loss's (``accuracy``, ``margin``, ``chosen_reward``,
``rejected_reward``), pair-weighted over workers.

Inputs are built by :func:`lire_ray.rewards.hf.encode_reward_inputs`, the function a
``kind: hf`` reward model scores with, and the tokenizer saved beside the model keeps the
recipe's ``truncation_side``, so the saved folder scores as a ``kind: hf`` reward exactly as it
was trained. With LoRA, the adapter is merged before saving: the output is always a full model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from lire_ray.errors import ConfigError, DataError
from lire_ray.pool import table_to_rows
from lire_ray.rewards.hf import encode_reward_inputs
from lire_ray.rewards.pairs import Messages
from lire_ray.training.checkpoint import PolicySnapshot, snapshot_policy, write_policy
from lire_ray.training.step import StepStats, _begin_forward, _grad_norm
from lire_ray.training.worker import TrainingRun


def load_reward_backbone(path: str, *, dtype: str = "float32", device: Any = "cpu",
                         trust_remote_code: bool = False, truncation_side: str = "left"):
    """A tokenizer and a one-label sequence classifier on an encoder or decoder backbone.

    The classification head is new (seeded by the caller's ``torch.manual_seed``) unless the
    backbone already is a one-label classifier. A decoder reads its score at the last
    non-padding token, which ``transformers`` finds from ``config.pad_token_id``: a tokenizer
    without a pad token pads with eos (:func:`lire_ray.models.ensure_pad_token`), and the
    model's config records that id, so the saved model finds the same token when scored.

    Args:
        path: Hub id or local directory.
        dtype: ``float32`` or ``bfloat16``.
        device: Torch device.
        trust_remote_code: Passed to ``from_pretrained``.
        truncation_side: Which end the tokenizer cuts (saved with it).

    Returns:
        ``(tokenizer, model)``.

    Raises:
        ModelLoadError: The backbone cannot be loaded.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    from lire_ray.models import SAFE_WEIGHTS, _load_error, _resolve, load_tokenizer

    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    tokenizer.truncation_side = truncation_side
    name = _resolve(path)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            name, num_labels=1, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code,
            **SAFE_WEIGHTS)
    except Exception as err:  # transformers raises OSError, ValueError, hub errors, ...
        raise _load_error(name, "reward-model backbone", err) from err
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model.to(device)


def _missing_targets(model, lora) -> ConfigError | None:
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    if [t for t in lora.target_modules if t in names]:
        return None
    return ConfigError(f"model.lora.target_modules {lora.target_modules}: no such modules in "
                       f"{type(model).__name__}; it has e.g. {sorted(names)[:16]}")


def check_lora_targets(path: str, lora, *, trust_remote_code: bool = False) -> None:
    """Fail in the driver, before Ray starts, when LoRA is on and none of its target modules
    exists in the backbone (built on the meta device: no weights are read).

    Raises:
        ConfigError: No target module exists.
        ModelLoadError: The backbone's config cannot be read.
    """
    if not lora.enabled:
        return
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from lire_ray.models import _load_error, _resolve

    name = _resolve(path)
    try:
        config = AutoConfig.from_pretrained(name, num_labels=1,
                                            trust_remote_code=trust_remote_code)
    except Exception as err:  # transformers raises OSError, ValueError, hub errors, ...
        raise _load_error(name, "reward-model backbone config", err) from err
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(
            config, trust_remote_code=trust_remote_code)
    error = _missing_targets(model, lora)
    if error is not None:
        raise error


def apply_reward_lora(model, lora, *, seed: int):
    """Wrap a sequence classifier with LoRA adapters; the new head (and a BERT pooler) train in
    full, since nothing pretrained them.

    Args:
        model: A one-label ``AutoModelForSequenceClassification``.
        lora: The recipe's :class:`~lire_ray.config.LoraConfig` (``target_modules`` name the
            backbone's layers, e.g. ``[query, value]`` for BERT, ``[q_proj, v_proj]`` for Llama).
        seed: Seed of the adapter initialisation.

    Raises:
        ConfigError: None of ``target_modules`` exists in the model.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    error = _missing_targets(model, lora)
    if error is not None:
        raise error
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    full = [m for m in ("classifier", "score", "pooler") if m in names]
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), task_type="SEQ_CLS",
                        modules_to_save=full)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def pair_texts(table: pa.Table) -> tuple[list[str], list[Messages | None], list[str], list[str]]:
    """Prompts, chat turns, chosen and rejected responses of a micro-batch of pair rows.

    Raises:
        DataError: A row is not a pair row (two candidates, one preferred).
    """
    import json

    prompts, turns, chosen, rejected = [], [], [], []
    for row in table_to_rows(table):
        if row.num_candidates != 2 or row.preferred not in (0, 1):
            raise DataError("a reward-model training row must hold two candidates, one "
                            "preferred (see lire_ray.rm.pairs)", source=f"prompt_id "
                            f"{row.prompt_id!r}", field="responses")
        prompts.append(row.prompt)
        turns.append(json.loads(row.prompt_messages) if row.prompt_messages else None)
        chosen.append(row.responses[row.preferred])
        rejected.append(row.responses[1 - row.preferred])
    return prompts, turns, chosen, rejected


def rm_train_step(engine, micro_batches: Sequence[pa.Table], tokenizer, *, template: str,
                  max_length: int, margin: float) -> StepStats:
    """One optimizer step of the Bradley-Terry loss over micro-batches of pair rows.

    Each micro-batch's chosen and rejected inputs run through the model as one padded batch;
    the step objective is the mean per-pair loss over the step's pairs on this worker, with the
    accumulation boundary set at the last micro-batch (as :func:`lire_ray.training.step.
    train_step` does for policies).

    Args:
        engine: A ``DeepSpeedEngine`` around the sequence classifier.
        micro_batches: Non-empty Arrow tables of pair rows.
        tokenizer: The reward model's tokenizer.
        template: ``rm_train.template``.
        max_length: ``rm_train.max_length``.
        margin: ``rm_train.margin``.

    Returns:
        The step's :class:`~lire_ray.training.step.StepStats` (``num_prompts`` counts pairs).
    """
    from lire_ray.losses import bradley_terry_loss

    started = time.perf_counter()
    batches = [pair_texts(t) for t in micro_batches]
    n = sum(len(b[0]) for b in batches)
    if n == 0:
        raise ValueError("rm_train_step needs one or more non-empty micro-batches")
    lr = float(engine.get_lr()[0])
    loss_total, tokens = 0.0, 0
    weighted: dict[str, float] = {}
    device = next(engine.module.parameters()).device
    for i, (prompts, turns, chosen, rejected) in enumerate(batches):
        p = len(prompts)
        engine.set_gradient_accumulation_boundary(i == len(batches) - 1)
        _begin_forward(engine)
        enc, _ = encode_reward_inputs(tokenizer, template, prompts * 2, chosen + rejected,
                                      turns * 2, max_length=max_length)
        logits = engine.module(**{k: v.to(device) for k, v in enc.items()}).logits[:, 0].float()
        loss, metrics = bradley_terry_loss(logits[:p], logits[p:], margin=margin)
        engine.backward(loss.sum() / n, scale_wrt_gas=False)
        loss_total += float(loss.detach().sum())
        for k, v in metrics.items():
            weighted[k] = weighted.get(k, 0.0) + float(v) * p
        tokens += int(enc["attention_mask"].sum())
    own_norm = _grad_norm(engine) if engine.zero_optimization_stage() == 0 else None
    engine.step()
    norm = own_norm if own_norm is not None else engine.get_global_grad_norm()
    return StepStats(loss=loss_total / n, num_prompts=n,
                     metrics={k: v / n for k, v in weighted.items()}, tokens_computed=tokens,
                     tokens_naive=tokens, lr=lr, grad_norm=None if norm is None else float(norm),
                     seconds=time.perf_counter() - started)


class RewardModelRun(TrainingRun):
    """A trainer worker that trains a Bradley-Terry reward model on pair rows (see the module
    docstring); constructed like :class:`~lire_ray.training.worker.TrainingRun`.

    Raises:
        ConfigError: LoRA under ZeRO-3 (the merge before saving needs whole weights).
    """

    _merged: Any = None

    def load_model(self, *, dtype: str, device: Any):
        rm, model_cfg = self.recipe.rm_train, self.recipe.model
        if model_cfg.lora.enabled and self.recipe.train.zero_stage == 3:
            raise ConfigError("reward-model training with model.lora.enabled needs "
                              "train.zero_stage <= 2 (the adapter is merged before saving)")
        tokenizer, model = load_reward_backbone(
            self.spec.init_model, dtype=dtype, device=device,
            trust_remote_code=model_cfg.trust_remote_code, truncation_side=rm.truncation_side)
        if model_cfg.lora.enabled:
            model = apply_reward_lora(model, model_cfg.lora, seed=self.recipe.train.seed)
        return tokenizer, model

    def train_step(self, tables: list[pa.Table]) -> StepStats:
        rm = self.recipe.rm_train
        return rm_train_step(self.engine, tables, self.tokenizer, template=rm.template,
                             max_length=rm.max_length, margin=rm.margin)

    def policy_info(self) -> dict[str, Any]:
        rm = self.recipe.rm_train
        return {"task": "reward_model", "steps": self.state.step, "epochs": self.state.epoch,
                "loss": "bradley_terry", "margin": rm.margin, "pairs": self.spec.num_prompts,
                "pair_scheme": rm.pairs, "preference": rm.preference, "template": rm.template,
                "max_length": rm.max_length, "world_size": self.world_size,
                "lora_merged": self.lora}

    def snapshot(self) -> PolicySnapshot | None:
        if not self.lora:
            return snapshot_policy(self.engine, rank=self.rank, lora_enabled=False,
                                   zero_stage=self.recipe.train.zero_stage)
        if self.rank != 0:
            return None
        import copy

        # A merged copy: the engine's own adapter layers stay as they are.
        self._merged = copy.deepcopy(self.engine.module).merge_and_unload().to("cpu")
        return PolicySnapshot({k: v.detach().clone() for k, v in
                               self._merged.state_dict().items()})

    def write(self, snapshot: PolicySnapshot, output_dir: str | Path, *,
              history: list[dict] | None = None, info: dict[str, Any] | None = None) -> Path:
        module = self._merged if self._merged is not None else self.engine.module
        return write_policy(snapshot, module=module, output_dir=output_dir,
                            tokenizer=self.tokenizer, init_model=self.spec.init_model,
                            merge_on_save=False,
                            history=self.step_history() if history is None else history,
                            info=self.policy_info() if info is None else info)
