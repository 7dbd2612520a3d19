"""Recipe schema: YAML files in ``configs/`` validated by pydantic, with dotted overrides.

A recipe is loaded with :func:`load_recipe`, which reads the YAML file, applies command-line
overrides such as ``train.lr=1e-5`` or ``rewards.0.path=/models/rm``, and validates the result
against :class:`Recipe`. Unknown keys, wrong types and bad values raise
:class:`~lire_ray.errors.ConfigError` naming the key and what is allowed, before any work starts.

Modules: :mod:`~lire_ray.config.sections` (one model per recipe section),
:mod:`~lire_ray.config.recipe` (the whole recipe and its cross-section checks),
:mod:`~lire_ray.config.loading` (files, overrides, errors).
"""

from lire_ray.config.judge import JudgeConfig, JudgeTemplates
from lire_ray.config.loading import (
    DEFAULT_RECIPE,
    apply_override,
    format_validation_error,
    load_recipe,
    parse_override,
)
from lire_ray.config.recipe import Recipe
from lire_ray.config.sections import (
    ActorResources,
    DataConfig,
    EvalConfig,
    EvolveConfig,
    LoraConfig,
    LossConfig,
    ModelConfig,
    RayConfig,
    ResourcesConfig,
    RewardModelConfig,
    RMTrainConfig,
    RSOConfig,
    RunConfig,
    SamplerConfig,
    TrackingConfig,
    TrainConfig,
    TrainerResources,
)

__all__ = [
    "ActorResources",
    "DEFAULT_RECIPE",
    "DataConfig",
    "EvalConfig",
    "EvolveConfig",
    "JudgeConfig",
    "JudgeTemplates",
    "LoraConfig",
    "LossConfig",
    "ModelConfig",
    "RSOConfig",
    "RayConfig",
    "Recipe",
    "ResourcesConfig",
    "RewardModelConfig",
    "RMTrainConfig",
    "RunConfig",
    "SamplerConfig",
    "TrackingConfig",
    "TrainConfig",
    "TrainerResources",
    "apply_override",
    "format_validation_error",
    "load_recipe",
    "parse_override",
]
