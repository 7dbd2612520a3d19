"""Hugging Face sequence-classification reward models (``kind: hf``) and their input templates.

Weights: ``model.safetensors`` is preferred when a model has it; a model published only as
``pytorch_model.bin`` is read by ``transformers`` with ``torch.load(weights_only=True)``
(:data:`lire_ray.models.SAFE_WEIGHTS`), whose unpickler accepts tensors and plain containers
only and refuses any other global, so a ``.bin`` that would import or call code fails to load
(:class:`~lire_ray.errors.ModelLoadError`) before anything in it runs.
"""

from __future__ import annotations

from collections.abc import Sequence

from lire_ray.config import RewardModelConfig
from lire_ray.errors import ModelLoadError
from lire_ray.rewards.pairs import Messages, Pairs


def format_reward_input(template: str, prompt: str, response: str, tokenizer=None,
                        messages: Sequence[dict] | None = None):
    """The text (or text pair) a reward model of ``template`` expects.

    Args:
        template: ``plain``, ``openassistant``, ``qa`` or ``chat``.
        prompt: The prompt as plain text.
        response: The response.
        tokenizer: The reward model's tokenizer (``chat`` needs its chat template).
        messages: The prompt's chat turns, ``[{"role", "content"}, ...]``. ``chat`` renders
            them followed by an assistant turn holding the response; without them the prompt
            is one user turn. The other templates use ``prompt``.

    Returns:
        A string, or a ``(question, answer)`` tuple for the ``qa`` template.

    Raises:
        ModelLoadError: ``chat`` with a tokenizer that has no chat template.
        ValueError: Unknown template.
    """
    if template == "plain":
        return prompt + response
    if template == "openassistant":
        return f"<|prompter|>{prompt}<|endoftext|><|assistant|>{response}<|endoftext|>"
    if template == "qa":
        return (prompt, response)
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ModelLoadError("reward template 'chat' needs a tokenizer with a chat template")
        turns = list(messages) if messages else [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(
            turns + [{"role": "assistant", "content": response}], tokenize=False)
    raise ValueError(f"unknown reward template {template!r}")


class HFRewardModel:
    """A sequence-classification reward model whose first logit is the reward, scored in
    batches on one device.

    Args:
        cfg: The reward model's recipe entry (``kind: hf``).
        device: Torch device string.

    Raises:
        ModelLoadError: The tokenizer or the model cannot be loaded (missing path, unreachable
            hub, unsafe or corrupt ``.bin`` weights).
    """

    def __init__(self, cfg: RewardModelConfig, device: str = "cpu"):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from lire_ray.models import SAFE_WEIGHTS, ensure_pad_token

        assert cfg.path is not None, "RewardModelConfig requires path for kind 'hf'"
        self.cfg = cfg
        self.device = device
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                cfg.path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                cfg.path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
                dtype=torch.float32 if device == "cpu" else "auto",
                **SAFE_WEIGHTS).to(device).eval()
        except Exception as exc:  # transformers raises OSError, ValueError, UnpicklingError, ...
            at = f"'{cfg.path}'" + (f" at revision '{cfg.revision}'" if cfg.revision else "")
            raise ModelLoadError(
                f"reward model '{cfg.name}': cannot load {at} (a hub id needs network access; a "
                f"local directory must hold a HF model with model.safetensors or a "
                f"pytorch_model.bin of tensors only): {type(exc).__name__}: {exc}") from None
        ensure_pad_token(self.tokenizer, cfg.path)
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.truncated = 0

    def score_pairs(self, pairs: Pairs) -> list[float]:
        """The reward of every pair (chat turns are used by the ``chat`` template)."""
        return self(pairs.prompts, pairs.responses, pairs.messages)

    def __call__(self, prompts: list[str], responses: list[str],
                 messages: Sequence[Messages | None] | None = None) -> list[float]:
        """The reward of every (prompt, response) pair.

        Args:
            prompts: The prompt of each response.
            responses: The responses.
            messages: Optional chat turns of each prompt (see :func:`format_reward_input`).

        Returns:
            One float per response.
        """
        import torch

        scores: list[float] = []
        turns = list(messages) if messages is not None else [None] * len(responses)
        for start in range(0, len(responses), self.cfg.batch_size):
            stop = start + self.cfg.batch_size
            enc, cut = encode_reward_inputs(self.tokenizer, self.cfg.template,
                                            prompts[start:stop], responses[start:stop],
                                            turns[start:stop], max_length=self.cfg.max_length)
            self.truncated += cut
            with torch.no_grad():
                logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits
            scores.extend(float(x) for x in logits[:, 0].float().cpu())
        return scores


def encode_reward_inputs(tokenizer, template: str, prompts: Sequence[str],
                         responses: Sequence[str], messages: Sequence[Messages | None],
                         *, max_length: int):
    """Tokenise (prompt, response) pairs as a reward model of ``template`` reads them, padded
    to one batch; reward-model training encodes with this too, so a trained model is scored
    exactly as it was trained.

    Args:
        tokenizer: The reward model's tokenizer (with a pad token; its ``truncation_side``
            decides which end an over-long input loses).
        template: See :func:`format_reward_input`.
        prompts: N prompts.
        responses: N responses.
        messages: N chat-turn lists or Nones.
        max_length: Tokens per input.

    Returns:
        ``(encoding, truncated)``: the tokenizer's batch (``input_ids`` [N, L], ``attention_mask``
        [N, L], ...) as tensors, and how many of the N inputs were cut.
    """
    inputs = [format_reward_input(template, p, r, tokenizer, m)
              for p, r, m in zip(prompts, responses, messages)]
    # A chat template writes its own special tokens (BOS included); adding the tokenizer's
    # on top would double them, unlike the text the reward model was trained on.
    special = template != "chat"
    args = ([c[0] for c in inputs], [c[1] for c in inputs]) if template == "qa" else (inputs,)
    full = tokenizer(*args, add_special_tokens=special)["input_ids"]
    enc = tokenizer(*args, truncation=True, padding=True, max_length=max_length,
                    add_special_tokens=special, return_tensors="pt")
    return enc, sum(len(ids) > max_length for ids in full)
