"""Loading policies, reward models and tokenizers from a hub id or a local path.

Every loader takes a hub id or a local path and turns every failure into
:class:`~lire_ray.errors.ModelLoadError`. Tiny models for tests and the embedded task are built
by :mod:`lire_ray.demo.tiny_models`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lire_ray.errors import ConfigError, ModelLoadError

logger = logging.getLogger(__name__)

_DTYPES = ("auto", "float32", "bfloat16", "float16")

#: ``from_pretrained`` keywords every weight loader passes: ``model.safetensors`` is preferred
#: when present (``use_safetensors=None``); otherwise ``pytorch_model.bin`` is read with
#: ``torch.load(weights_only=True)``, whose unpickler admits tensors and plain containers only,
#: so a ``.bin`` that would import or call code is refused before anything in it runs.
SAFE_WEIGHTS = {"use_safetensors": None, "weights_only": True}


def _looks_like_path(name: str) -> bool:
    """True when ``name`` can only be a filesystem path (hub ids are ``name`` or ``org/name``)."""
    return (name.startswith(("/", "./", "../", "~", ".\\")) or "\\" in name
            or name.count("/") > 1 or name in (".", ".."))


def _resolve(name_or_path: str | os.PathLike) -> str:
    name = str(name_or_path)
    expanded = Path(name).expanduser()
    if expanded.exists():
        return str(expanded)
    if _looks_like_path(name) or isinstance(name_or_path, os.PathLike):
        raise ModelLoadError(f"local model path '{name}' does not exist")
    return name


def _load_error(name: str, what: str, err: Exception) -> ModelLoadError:
    if Path(name).expanduser().exists():
        return ModelLoadError(f"cannot load {what} from local path '{name}': {err}")
    return ModelLoadError(
        f"cannot load {what} '{name}': no such local path, and the Hugging Face Hub is "
        f"unreachable (offline) or has no such repository: {type(err).__name__}: {err}")


def ensure_pad_token(tokenizer, name: str):
    """Give ``tokenizer`` a pad token, reusing eos when it has none (as Llama tokenizers need).

    Batching needs a pad id. Padded positions are found from attention masks and sequence
    lengths, never by comparing ids with the pad id, so a real eos is never taken for padding
    and reusing eos changes no result.

    Args:
        tokenizer: A ``transformers`` tokenizer; changed in place.
        name: Its hub id or local path, for the messages.

    Returns:
        ``tokenizer``, with ``pad_token`` set.

    Raises:
        ModelLoadError: The tokenizer has neither a pad token nor an eos token.
    """
    if tokenizer.pad_token is not None:
        return tokenizer
    if tokenizer.eos_token is None:
        where = (str(Path(name).expanduser() / "tokenizer_config.json")
                 if Path(name).expanduser().is_dir() else
                 f"the tokenizer_config.json of a local copy of '{name}'")
        raise ModelLoadError(
            f"tokenizer '{name}' has neither a pad token nor an eos token, so batches cannot be "
            f"padded; set one in {where}, e.g. "
            f"\"pad_token\": \"<pad>\" or \"eos_token\": \"</s>\" naming a token of its "
            f"vocabulary")
    logger.warning("tokenizer '%s' has no pad token; using eos (%r) as pad", name,
                   tokenizer.eos_token)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(name_or_path: str | os.PathLike, *, trust_remote_code: bool = False):
    """Load a tokenizer from a hub id or a local directory, guaranteeing a pad token.

    A tokenizer without a pad token gets ``pad = eos`` (with a logged warning), see
    :func:`ensure_pad_token`.

    Args:
        name_or_path: Hub id (``org/name``) or local directory.
        trust_remote_code: Passed to ``AutoTokenizer.from_pretrained``.

    Returns:
        A ``transformers`` tokenizer with ``pad_token`` set.

    Raises:
        ModelLoadError: Missing local path, unreachable hub, or no pad and no eos token (the
            message names the path and the setting to add).
    """
    from transformers import AutoTokenizer

    name = _resolve(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except Exception as err:  # transformers raises OSError, ValueError, hub errors, ...
        raise _load_error(name, "tokenizer", err) from err
    return ensure_pad_token(tokenizer, name)


def check_tokenizers(*names_or_paths: str | os.PathLike | None,
                     trust_remote_code: bool = False) -> None:
    """Load every local tokenizer among ``names_or_paths`` once, in the driver, before Ray starts.

    The actors load their tokenizers themselves, so without this a tokenizer they cannot use
    fails only after the cluster, the actors and the run directory exist, behind an actor
    error. Hub ids are left to the actors: a driver on a cluster's head node may have neither
    network access nor the hub cache the workers use.

    Args:
        names_or_paths: Hub ids or local directories; ``None`` entries (an unset
            ``model.reference``) are skipped.
        trust_remote_code: Passed to ``AutoTokenizer.from_pretrained``.

    Raises:
        ModelLoadError: A local tokenizer cannot be loaded, or has neither a pad nor an eos
            token.
    """
    for name in dict.fromkeys(str(n) for n in names_or_paths if n is not None):
        if Path(name).expanduser().is_dir():
            load_tokenizer(name, trust_remote_code=trust_remote_code)


def resolve_dtype(dtype: str):
    """Map a recipe dtype name to what ``from_pretrained(dtype=...)`` takes.

    Args:
        dtype: One of ``auto``, ``float32``, ``bfloat16``, ``float16``.

    Returns:
        ``"auto"`` or a ``torch.dtype``.

    Raises:
        ConfigError: Unknown name.
    """
    import torch

    if dtype not in _DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(_DTYPES)}, got '{dtype}'")
    return "auto" if dtype == "auto" else getattr(torch, dtype)


def load_causal_lm(name_or_path: str | os.PathLike, *, dtype: str = "auto",
                   trust_remote_code: bool = False, device: str = "cpu",
                   attn_implementation: str = "sdpa"):
    """Load a causal LM from a hub id or a local directory.

    Weights are read as :data:`SAFE_WEIGHTS` says: safetensors when present, else a
    ``pytorch_model.bin`` through ``torch.load(weights_only=True)``.

    SDPA attention is the default because shared-prefix packing
    (:mod:`lire_ray.logprobs`) passes a custom 4D boolean mask, which SDPA accepts.

    Args:
        name_or_path: Hub id (``org/name``) or local directory.
        dtype: ``auto`` (the checkpoint's dtype), ``float32``, ``bfloat16`` or ``float16``.
        trust_remote_code: Passed to ``from_pretrained``.
        device: Torch device to move the model to.
        attn_implementation: ``sdpa``, ``eager``, ``flash_attention_2`` or ``flex_attention``.

    Returns:
        The model, in eval mode, on ``device``.

    Raises:
        ConfigError: Unknown dtype.
        ModelLoadError: Missing local path, unreachable hub, no weights, or a ``.bin`` holding
            more than tensors.
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = resolve_dtype(dtype)
    name = _resolve(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=torch_dtype, trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation, **SAFE_WEIGHTS)
    except Exception as err:
        raise _load_error(name, "causal LM", err) from err
    # typeshed's functools.wraps does not bind self on methods (PreTrainedModel.to is wrapped)
    return model.to(device).eval()  # type: ignore[arg-type]


def default_device() -> str:
    """``"cuda"`` when this process sees a GPU (Ray sets CUDA_VISIBLE_DEVICES per actor), else CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
