"""The ``judge:`` recipe section: an LLM that grades answers (win rates, MT-Bench-style scores).

``backend: openai`` talks to any OpenAI-compatible chat-completions server (OpenAI, vLLM's
OpenAI server, others) at ``base_url``; ``backend: vllm`` hosts ``model`` in a vLLM engine
inside a Ray actor with ``resources``. The prompts are templates (``templates``); their
defaults are written for this project (:mod:`lire_ray.judges.templates`).
"""

from __future__ import annotations

import re
import string
from typing import Literal

from pydantic import Field, field_validator, model_validator

from lire_ray.config.sections import ActorResources, _Strict

#: Placeholders each template may use; those in REQUIRED_FIELDS must appear.
TEMPLATE_FIELDS = {
    "single": {"question", "answer", "conversation"},
    "single_reference": {"question", "answer", "conversation", "reference"},
    "pairwise": {"question", "answer_a", "answer_b"},
}
REQUIRED_FIELDS = {
    "single": {"question", "answer"},
    "single_reference": {"question", "answer", "reference"},
    "pairwise": {"question", "answer_a", "answer_b"},
}


def template_fields(text: str) -> set[str]:
    """The ``{name}`` placeholders of a template (``{{`` and ``}}`` are literal braces).

    Raises:
        ValueError: The template is not a valid ``str.format`` string.
    """
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def _default(name: str) -> str:
    from lire_ray.judges.templates import DEFAULTS

    return DEFAULTS[name]


class JudgeTemplates(_Strict):
    """Judge prompts (``str.format`` templates; write ``{{``/``}}`` for literal braces).

    ``single``: one answer graded 1-10 (``{question}``, ``{answer}``, ``{conversation}``: the
    earlier turns, empty on the first); ``single_reference``: the same with a reference answer
    (``{reference}``), used for questions that carry one; ``pairwise``: two answers to one
    prompt (``{question}``, ``{answer_a}``, ``{answer_b}``). ``system`` is the system message
    (empty: none). The verdict formats the parser accepts are fixed (``[[score]]`` and
    ``[[A]]``/``[[B]]``/``[[C]]``); a template must ask for them.
    """

    system: str = Field(default_factory=lambda: _default("system"))
    single: str = Field(default_factory=lambda: _default("single"))
    single_reference: str = Field(default_factory=lambda: _default("single_reference"))
    pairwise: str = Field(default_factory=lambda: _default("pairwise"))

    @model_validator(mode="after")
    def _check(self) -> JudgeTemplates:
        for name, allowed in TEMPLATE_FIELDS.items():
            text = getattr(self, name)
            try:
                used = template_fields(text)
            except ValueError as err:
                raise ValueError(f"judge.templates.{name}: not a valid template ({err}); write "
                                 "literal braces as {{ and }}") from None
            if used - allowed:
                raise ValueError(f"judge.templates.{name}: unknown placeholders "
                                 f"{sorted(used - allowed)}; allowed: {sorted(allowed)}")
            if REQUIRED_FIELDS[name] - used:
                raise ValueError(f"judge.templates.{name}: missing placeholders "
                                 f"{sorted(REQUIRED_FIELDS[name] - used)}")
        return self


class JudgeConfig(_Strict):
    """An LLM judge (paper Fig. 2 and 3: GPT-4 win rates and MT-Bench grades)."""

    backend: Literal["openai", "vllm"] = Field(
        "openai", description="openai: any OpenAI-compatible chat-completions server at "
        "base_url; vllm: `model` hosted by a vLLM engine in a Ray actor (resources).")
    model: str | None = Field(None, description="openai: the served model name; vllm: hub id "
                              "or directory of the judge model.")
    base_url: str | None = Field(None, description="openai: the API root, e.g. "
                                 "https://api.openai.com/v1 or http://host:8000/v1.")
    api_key_env: str | None = Field(None, description="openai: name of the environment "
                                    "variable holding the API key (never the key itself); "
                                    "null sends no key.")
    concurrency: int = Field(4, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds one request may take.")
    max_retries: int = Field(3, ge=0, description="Retries after HTTP 429, 5xx, a timeout, a "
                             "broken connection or an answer that is not the API's JSON, with "
                             "exponential backoff; then the item is recorded as failed.")
    backoff_s: float = Field(1.0, ge=0, description="First wait before a retry (doubles).")
    abort_after: int = Field(8, ge=1, description="The job stops with an error when this many "
                             "requests failed before any succeeded (a judge that is down).")
    max_tokens: int = Field(512, gt=0, description="Tokens the judge may write per verdict.")
    temperature: float = Field(0.0, ge=0.0)
    cache_dir: str | None = Field(None, description="Judgments cached on disk by (judge model, "
                                  "template, question, answers); default <run.dir>/judge-cache.")
    templates: JudgeTemplates = Field(default_factory=JudgeTemplates)
    resources: ActorResources = Field(default_factory=ActorResources,
                                      description="vllm: the judge actor's resources.")
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0, description="vllm; ~0.2 on CPU.")
    tensor_parallel_size: int = Field(1, ge=1, description="vllm.")
    max_model_len: int = Field(4096, gt=0, description="vllm: prompt + verdict tokens.")
    enforce_eager: bool = Field(False, description="vllm: no torch.compile / CUDA graphs.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="vllm.")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        # Only a name is accepted: a key pasted here would end up in config.yaml.
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("judge.api_key_env takes the NAME of an environment variable "
                             "(e.g. OPENAI_API_KEY), not the key itself")
        return value

    @model_validator(mode="after")
    def _check(self) -> JudgeConfig:
        if self.backend == "openai":
            from urllib.parse import urlparse

            parsed = urlparse(self.base_url or "")
            if self.base_url is not None and (parsed.scheme not in ("http", "https")
                                              or not parsed.netloc):
                raise ValueError(f"judge.base_url must be http(s)://host[:port]/path (got "
                                 f"{self.base_url!r})")
        elif self.base_url is not None:
            raise ValueError("judge.base_url applies to backend 'openai' only")
        if self.backend == "vllm" and self.max_tokens >= self.max_model_len:
            raise ValueError(f"judge.max_model_len ({self.max_model_len}) must exceed "
                             f"judge.max_tokens ({self.max_tokens})")
        return self

    @property
    def label(self) -> str:
        """How errors and reports name this judge: its model and where it runs."""
        where = self.base_url if self.backend == "openai" else "a vLLM actor"
        return f"judge '{self.model}' at {where}"
