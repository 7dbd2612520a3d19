"""The sections of a recipe, one pydantic model each (see :mod:`lire_ray.config`).

Notation used in field descriptions: E Evolve steps, I Iterate epochs, K candidates per prompt,
T the LIRE temperature (paper eq. 5).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class LoraConfig(_Strict):
    """LoRA adapter settings (peft); the paper trained with LoRA + ZeRO-2 (sec. 4.2)."""

    enabled: bool = False
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    merge_on_save: bool = Field(True, description="Also save a merged full model beside the adapter.")


class ModelConfig(_Strict):
    """The policy and reference model."""

    policy: str = Field(
        "tiny", description="HF hub id or local directory; 'tiny' builds and caches the embedded "
        "default policy under run.cache_dir.")
    reference: str | None = Field(None, description="Reference policy; default: the initial policy.")
    trust_remote_code: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_prompt_tokens: int = Field(256, gt=0, description="Prompts are left-truncated to this.")
    max_response_tokens: int = Field(128, gt=0, description="Responses are right-truncated to this.")
    lora: LoraConfig = Field(default_factory=LoraConfig)


class RSOConfig(_Strict):
    """Statistical rejection sampling (RSO, paper sec. 4.7): sample N, keep K."""

    enabled: bool = False
    num_samples: int = Field(8, gt=0, description="N candidates drawn before selection.")
    beta: float = Field(0.5, gt=0, description="RSO's beta: lower keeps fewer low-reward samples.")


class SamplerConfig(_Strict):
    """Candidate generation."""

    backend: Literal["vllm", "hf"] = "vllm"
    num_candidates: int = Field(4, ge=1, description="K: candidates per prompt in the pool "
                                "(human-written ones included).")
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(64, gt=0)
    stop: list[str] = Field(default_factory=list, description="Stop strings, e.g. '\\n\\nHuman:'.")
    seed: int = Field(0, description="Seeds candidate sampling and the held-out evaluation's "
                      "sampling; default: run.seed.")
    diverse_beam_groups: int = Field(0, ge=0, description="HF backend only: >0 uses diverse beam "
                                     "search with this many groups (paper sec. 4.4).")
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0, description="vLLM; use ~0.25 on CPU.")
    tensor_parallel_size: int = Field(1, ge=1)
    enforce_eager: bool = Field(False, description="vLLM: run the model eagerly, without "
                                "torch.compile or CUDA graphs (faster engine start, slower "
                                "decoding; worth it for tiny models and short runs).")
    max_model_len: int = Field(512, gt=0)
    batch_size: int = Field(16, gt=0, description="Prompts per sampler call.")
    sleep_level: Literal[0, 1, 2] = Field(0, description="vLLM on a CUDA/ROCm GPU with "
                                          "colocate placement: sleep while the trainer runs "
                                          "(1: weights offloaded to host memory, 2: weights "
                                          "dropped; either way the new policy is loaded into "
                                          "woken weights, from the resident trainer's memory "
                                          "or from its checkpoint); 0: never sleep.")
    rso: RSOConfig = Field(default_factory=RSOConfig)

    @model_validator(mode="after")
    def _check(self) -> SamplerConfig:
        if self.diverse_beam_groups and self.backend != "hf":
            raise ValueError("diverse_beam_groups needs sampler.backend='hf'")
        if self.sleep_level and self.backend != "vllm":
            raise ValueError("sampler.sleep_level needs sampler.backend='vllm'")
        if self.rso.enabled and self.rso.num_samples < self.num_candidates:
            raise ValueError("sampler.rso.num_samples must be >= sampler.num_candidates")
        return self


class RewardModelConfig(_Strict):
    """One reward model, by ``kind``: ``hf`` (a sequence classifier), ``python`` (a function
    ``module:function``), ``remote`` (a server speaking OpenRLHF's ``serve_rm`` protocol) or
    ``label`` (the data's human judgement: 1 for the preferred candidate or one labelled true,
    else 0)."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_\-]+$")
    kind: Literal["hf", "python", "remote", "label"] = "hf"
    path: str | None = Field(None, description="hf: hub id or directory; python: "
                             "'module:function'; remote and label: unused.")
    revision: str | None = Field(None, description="hf: hub branch, tag or commit to load "
                                 "(default: the hub's default branch; ignored for a directory).")
    url: str | None = Field(None, description="remote: e.g. http://host:5000/get_reward.")
    template: Literal["plain", "openassistant", "qa", "chat"] = "plain"
    normalize: Literal["none", "zscore"] = "none"
    batch_size: int = Field(16, gt=0, description="hf: pairs per forward pass; remote: pairs per "
                            "request.")
    max_length: int = Field(512, gt=0)
    timeout_s: float = Field(60.0, gt=0, description="remote: seconds one request may block.")
    max_retries: int = Field(3, ge=0, description="remote: retries after a connection error, "
                             "timeout or HTTP 5xx, with exponential backoff; 4xx is never "
                             "retried.")
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _check(self) -> RewardModelConfig:
        who, kind = f"reward model '{self.name}'", self.kind
        if kind in ("hf", "python") and not self.path:
            what = "a hub id or directory" if kind == "hf" else "'module:function'"
            raise ValueError(f"{who}: kind '{kind}' needs path ({what})")
        if kind not in ("hf", "python") and self.path is not None:
            raise ValueError(f"{who}: kind '{kind}' uses no path (got {self.path!r}); remove it "
                             "or set it to null")
        if kind == "python" and ":" not in (self.path or ""):
            raise ValueError(f"{who}: kind 'python' needs path 'module:function'")
        if self.revision is not None and kind != "hf":
            raise ValueError(f"{who}: revision applies to kind 'hf' only (kind is '{kind}')")
        if kind == "remote":
            from urllib.parse import urlparse

            parsed = urlparse(self.url or "")
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError(f"{who}: kind 'remote' needs url http(s)://host:port/path "
                                 f"(got {self.url!r})")
        elif self.url is not None:
            raise ValueError(f"{who}: url applies to kind 'remote' only (kind is '{kind}')")
        return self


class LossConfig(_Strict):
    """The training objective, by registry name, with its parameters."""

    name: Literal["lire", "sft", "dpo", "ipo", "slic", "rrhf", "pro", "pl"] = "lire"
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="Keyword parameters of the loss, e.g. temperature.")
    params_by_name: dict[Literal["lire", "sft", "dpo", "ipo", "slic", "rrhf", "pro", "pl"],
                         dict[str, Any]] = Field(
        default_factory=dict, description="Parameters per loss, e.g. {dpo: {beta: 0.1}}: a "
        "comparison trains each loss with its own entry; the loss named by `name` also takes "
        "its entry, merged into `params`.")

    @model_validator(mode="before")
    @classmethod
    def _merge_own_entry(cls, data: Any) -> Any:
        # Folded into `params` so every consumer of `params` (trainer, sweeps) sees one dict.
        if not isinstance(data, dict) or not isinstance(data.get("params_by_name"), dict):
            return data
        own = data["params_by_name"].get(data.get("name", "lire"))
        if not isinstance(own, dict) or not own:
            return data
        params = dict(data.get("params") or {})
        clash = sorted(k for k, v in own.items() if k in params and params[k] != v)
        if clash:
            raise ValueError(f"loss.params and loss.params_by_name.{data.get('name', 'lire')} "
                             f"set {clash} to different values; keep one")
        return {**data, "params": {**params, **own}}


class TrackingConfig(_Strict):
    """How a run appears in the experiment tracker chosen by ``train.logger``."""

    project: str = Field("lire-ray", description="W&B project / MLflow experiment.")
    entity: str | None = Field(None, description="W&B entity (team or user).")
    name: str | None = Field(None, description="Run name; default: the run directory's name.")
    tags: list[str] = Field(default_factory=list)


class TrainConfig(_Strict):
    """Optimisation (paper sec. 4.2: cosine decay, LoRA + ZeRO-2)."""

    lr: float = Field(2e-5, gt=0)
    epochs: int = Field(1, ge=1, description="I: Iterate epochs per Evolve step.")
    micro_batch_prompts: int = Field(4, ge=1, description="Prompts (with all K candidates) per "
                                     "micro-batch per worker.")
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = Field(0, description="Seeds the order of training rows, the LoRA adapter's "
                      "initialisation and dropout; default: run.seed.")
    zero_stage: Literal[0, 1, 2, 3] = 2
    engine: Literal["auto", "deepspeed", "torch"] = Field(
        "auto", description="auto: plain PyTorch (fused AdamW, no ZeRO) for a single CPU worker "
        "with no train.deepspeed additions, DeepSpeed otherwise (every GPU run); torch: "
        "always plain PyTorch (one CPU worker only); deepspeed: always DeepSpeed.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on GPU, "
                                                      "fp32 on CPU.")
    packing: Literal["shared_prefix", "padded"] = "shared_prefix"
    logprob_chunk_size: int = Field(1024, gt=0, description="lm_head positions per chunk.")
    gradient_checkpointing: bool = False
    logger: Literal["tensorboard", "wandb", "mlflow", "none"] = Field(
        "tensorboard", description="Experiment tracker: one experiment per run (training, "
        "Evolve-step and held-out metrics against one global step); W&B offline with "
        "WANDB_MODE=offline.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    resident: bool = Field(True, description="Self-enhancement keeps one Ray Train run (the "
                           "DeepSpeed workers and the model) for every Evolve step and sends each "
                           "new policy to the samplers from memory; false starts a run per step "
                           "and serves the policy from its checkpoint on disk.")
    schedule: Literal["restart", "continue"] = Field(
        "restart", description="Resident runs: 'restart' gives every Evolve step its own warmup "
        "and cosine decay (as separate runs do); 'continue' spans one schedule over all steps.")
    checkpoint_every: int = Field(1, ge=1, description="Resident runs: write the policy "
                                  "checkpoint (HF format) every N Evolve steps, off the critical "
                                  "path; the last step is always written.")
    weight_sync_bucket_mb: int = Field(256, ge=1, description="Resident runs: weights reach the "
                                       "samplers in buckets of at most this many MiB (whole "
                                       "layers), one bucket at a time.")
    deepspeed: dict[str, Any] = Field(
        default_factory=dict, description="Merged over the generated DeepSpeed config (dicts "
        "key by key, its values win): ZeRO offload, optimizer type and parameters, bucket "
        "sizes, ... Keys the recipe sets (batch sizes, accumulation, clipping, ZeRO stage, "
        "precision, lr, weight decay, scheduler) are refused, naming the recipe key to use.")

    @field_validator("deepspeed")
    @classmethod
    def _check_deepspeed(cls, value: dict[str, Any]) -> dict[str, Any]:
        from lire_ray.training.ds_config import check_overrides

        return check_overrides(value)


class EvolveConfig(_Strict):
    """Algorithm 1 (paper sec. 3.2)."""

    steps: int = Field(2, ge=1, description="E: Evolve steps.")
    keep_human: bool = Field(True, description="Keep human-written candidates (sec. 4.7).")
    max_staleness: int = Field(0, ge=0, description="Policy versions a candidate may lag when "
                               "sampling overlaps training; 0 = strict Algorithm 1; >= 1 "
                               "samples the next pool while the trainer runs (split placement; "
                               "the lag is then at most 1).")
    train_reward: str | None = Field(None, description="Reward model trained on; default: the "
                                     "first in `rewards`.")


class DataConfig(_Strict):
    """Where prompts come from."""

    train: str = Field("builtin:reviews", description="Prepared pool directory, or 'builtin:reviews' "
                       "for the embedded default task.")
    eval: str | None = Field(None, description="Held-out pool directory (or builtin split).")
    max_prompts: int | None = Field(None, gt=0)
    eval_prompts: int | None = Field(None, gt=0)
    chat_template: Literal["auto", "always", "never"] = Field(
        "auto", description="How prompts are rendered for sampling, training, reference "
        "log-probs and evaluation alike: 'auto' applies the policy tokenizer's chat template to "
        "rows with chat turns (prompt_messages) when it has one; 'always' applies it to every "
        "prompt (a plain prompt becomes one user turn); 'never' uses the plain prompt text.")


class ActorResources(_Strict):
    """Resources of one actor role; applied with ``ray.remote(**...)`` by the jobs."""

    num_actors: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    max_restarts: int = Field(2, ge=-1)
    resources: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources, "
                                        "e.g. {node_sampler: 1} to pin a role to a node.")


class TrainerResources(_Strict):
    """Ray Train scaling of the trainer group."""

    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    resources_per_worker: dict[str, float] = Field(default_factory=dict)
    max_failures: int = Field(2, ge=-1, description="Restarts of the worker group after a "
                              "worker failure (errors in the recipe or the data are not "
                              "retried).")
    torch_threads: int | None = Field(None, ge=1, description="CPU training: torch threads per "
                                      "worker; default: with colocate placement (the samplers "
                                      "idle while training) the machine's cores divided among "
                                      "the workers, else cpus_per_worker.")


class ResourcesConfig(_Strict):
    """Placement of the roles (split: separate devices; colocate: shared, phases alternate)."""

    placement: Literal["split", "colocate"] = "split"
    sampler: ActorResources = Field(default_factory=ActorResources)
    reward: ActorResources = Field(default_factory=ActorResources)
    reference: ActorResources = Field(default_factory=ActorResources)
    trainer: TrainerResources = Field(default_factory=TrainerResources)


class RayConfig(_Strict):
    """How the job finds its Ray cluster."""

    address: str | None = Field(None, description="None: join a running cluster if any "
                                "(RAY_ADDRESS) else start a local one; 'local': always start a "
                                "new local one.")
    num_cpus: int | None = Field(None, ge=1, description="Only for a local cluster started by "
                                 "the job.")
    dashboard_host: str = "127.0.0.1"
    namespace: str = "lire-ray"
    forward_env: list[str] = Field(
        default_factory=list, description="Names of environment variables the driver passes "
        "to every actor and trainer worker when they are set (on top of tokens and tracking "
        "settings such as HF_TOKEN and WANDB_API_KEY, always passed); only names are "
        "recorded, values never.")

    @field_validator("forward_env")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        # Only what precedes '=' is shown: a mistaken NAME=value must not print the value.
        bad = [n.partition("=")[0] + ("=..." if "=" in n else "") for n in value
               if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n)]
        if bad:
            raise ValueError(f"not environment variable names: {bad} (give names, not "
                             "NAME=value: values are taken from the driver's environment)")
        return value


class EvalConfig(_Strict):
    """Evaluation (paper sec. 4.3–4.5, A.8)."""

    judges: list[str] = Field(default_factory=list, description="Reward model names used as "
                              "judges (RM*); default: all.")
    temperatures: list[float] = Field(default_factory=lambda: [0.0, 1.0])
    num_samples: int = Field(1, ge=1)
    best_of_n: list[int] = Field(default_factory=lambda: [1, 4])
    kl_samples: int = Field(4, ge=1)


class RMTrainConfig(_Strict):
    """Reward-model training (``jobs/train_rm.py``): a scalar-head sequence classifier trained
    with the Bradley-Terry loss on preference pairs formed within each pool row."""

    backbone: str | None = Field(None, description="Hub id or local directory of the encoder "
                                 "or decoder the reward model starts from (its scalar head is "
                                 "new); jobs/train_rm.py needs it.")
    preference: str = Field("label", pattern=r"^[A-Za-z0-9_\-]+$", description="What ranks "
                            "a row's candidates: 'label' (the row's preferred candidate over "
                            "the others, or its metadata 'labels', true over false) or the name "
                            "of a reward model whose scores the pool holds.")
    pairs: Literal["best_vs_rest", "best_vs_worst", "all_ranked"] = Field(
        "best_vs_rest", description="Pairs per row: the best candidate against every other, "
        "against the worst only, or every pair with a strict order; ties never pair.")
    margin: float = Field(0.0, ge=0.0, description="m in -log sigmoid(r_chosen - r_rejected - "
                          "m); 0 is the plain Bradley-Terry loss.")
    template: Literal["plain", "openassistant", "qa", "chat"] = Field(
        "plain", description="How prompt and response become the model's input, as for a "
        "reward model of kind hf ('qa': a text pair, natural for encoders; 'chat': the "
        "backbone's chat template).")
    max_length: int = Field(512, gt=0, description="Tokens per input; longer ones are cut.")
    truncation_side: Literal["left", "right"] = Field(
        "left", description="Which end of an over-long input is cut; saved with the tokenizer, "
        "so scoring as kind hf cuts the same way. 'left' keeps a conversation's latest turns "
        "and, for decoders, the last token the score is read from.")
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of the data's rows "
                                 "(prompts, before pairing) held out for evaluation when "
                                 "data.eval names no held-out pool.")
    compare_with: list[str] = Field(default_factory=list, description="Reward models of the "
                                    "recipe (not kind label) scored on the held-out pairs "
                                    "beside the learned one: their pair accuracy and agreement.")
    eval_batch_size: int = Field(32, gt=0, description="Pairs per forward pass at evaluation.")
    calibration_buckets: int = Field(5, ge=1, description="Reward-gap buckets of the "
                                     "calibration table.")


class RunConfig(_Strict):
    """Where outputs go."""

    dir: str = "runs/tiny"
    resume: bool = False
    cache_dir: str = Field(".cache/lire-ray", description="Built tiny models are cached here.")
    seed: int = Field(0, description="The run's seed: the default of sampler.seed (sampling "
                      "and evaluation) and train.seed (data order, adapter initialisation) "
                      "where the recipe does not set them itself.")
    verbose: bool = Field(False, description="Show the INFO logs of vLLM, Ray Data, Ray Train, "
                          "DeepSpeed and transformers (hidden by default; --debug shows them "
                          "too).")
