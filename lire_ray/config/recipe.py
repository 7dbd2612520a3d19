"""A whole recipe: the sections together and the checks that span them."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import Field, field_validator, model_validator

from lire_ray.config.judge import JudgeConfig
from lire_ray.config.sections import (
    DataConfig,
    EvalConfig,
    EvolveConfig,
    LossConfig,
    ModelConfig,
    RayConfig,
    ResourcesConfig,
    RewardModelConfig,
    RMTrainConfig,
    RunConfig,
    SamplerConfig,
    TrainConfig,
    _Strict,
)


class Recipe(_Strict):
    """A whole recipe. Every section has defaults; a YAML file overrides what it names."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    rewards: list[RewardModelConfig] = Field(default_factory=list)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evolve: EvolveConfig = Field(default_factory=EvolveConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    rm_train: RMTrainConfig = Field(default_factory=RMTrainConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    judge: JudgeConfig | None = Field(None, description="An LLM judge (jobs/judge.py; judge "
                                      "columns in the comparison and the main job's report).")

    @model_validator(mode="before")
    @classmethod
    def _seeds_default_to_run_seed(cls, data: Any) -> Any:
        # Filled in the raw recipe so that config.yaml records the seeds a run really used.
        if not isinstance(data, dict) or not isinstance(data.get("run", {}), dict):
            return data
        seed = data.get("run", {}).get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            return data  # validation names run.seed
        data = dict(data)
        for section in ("sampler", "train"):
            sub = data.get(section)
            if sub is None:
                data[section] = {"seed": seed}
            elif isinstance(sub, dict) and sub.get("seed") is None:
                data[section] = {**sub, "seed": seed}
        return data

    @field_validator("rewards")
    @classmethod
    def _unique_rm_names(cls, value: list[RewardModelConfig]) -> list[RewardModelConfig]:
        names = [rm.name for rm in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"reward model names must be unique, repeated: {dupes}")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Recipe:
        names = [rm.name for rm in self.rewards]
        if self.evolve.train_reward is not None and self.evolve.train_reward not in names:
            raise ValueError(f"evolve.train_reward '{self.evolve.train_reward}' is not one of the "
                             f"reward models {names}")
        unknown = [j for j in self.eval.judges if j not in names]
        if unknown:
            raise ValueError(f"eval.judges {unknown} are not reward models {names}")
        labels = [rm.name for rm in self.rewards if rm.kind == "label"]
        if [j for j in self.eval.judges if j in labels]:
            raise ValueError(f"eval.judges: {labels} are of kind label, which scores only a "
                             "dataset's own candidates and cannot judge new responses")
        if self.sampler.rso.enabled and self.train_reward_name in labels:
            raise ValueError(f"sampler.rso selects samples by the training reward, but "
                             f"'{self.train_reward_name}' is of kind label, which cannot score "
                             "new samples")
        if self.evolve.max_staleness > 0 and self.resources.placement != "split":
            raise ValueError("evolve.max_staleness > 0 samples the next pool while the trainer "
                             "runs, which needs resources.placement=split")
        if self.sampler.sleep_level == 2 and self.model.lora.enabled:
            raise ValueError("sampler.sleep_level=2 drops the base weights that LoRA adapters "
                             "apply to; use sleep_level=1 with model.lora.enabled")
        room = self.sampler.max_model_len - self.sampler.max_new_tokens
        if self.sampler.backend == "vllm" and room < self.model.max_prompt_tokens:
            # Otherwise the sampler would cut prompts shorter than training sees them.
            raise ValueError(f"sampler.max_model_len ({self.sampler.max_model_len}) must hold "
                             f"model.max_prompt_tokens ({self.model.max_prompt_tokens}) + "
                             f"sampler.max_new_tokens ({self.sampler.max_new_tokens})")
        bad = [n for n in self.rm_train.compare_with if n not in names or n in labels]
        if bad:
            raise ValueError(f"rm_train.compare_with {bad} must name reward models of the "
                             f"recipe that score new text (not kind label); have {names}")
        if self.resources.trainer.use_gpu and self.resources.trainer.gpus_per_worker == 0:
            raise ValueError("resources.trainer.use_gpu needs gpus_per_worker > 0")
        return self

    @property
    def train_reward_name(self) -> str | None:
        """The reward model the policy is trained on (``evolve.train_reward`` or the first)."""
        if self.evolve.train_reward:
            return self.evolve.train_reward
        return self.rewards[0].name if self.rewards else None

    @property
    def judge_names(self) -> list[str]:
        """The reward models that judge held-out responses: ``eval.judges``, default every one
        that can score new text (all but ``kind: label``)."""
        return list(self.eval.judges) or [rm.name for rm in self.rewards if rm.kind != "label"]

    def to_yaml(self) -> str:
        """The fully resolved recipe as YAML (what a run directory snapshots)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
