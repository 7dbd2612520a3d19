"""Tiny local models and loading of policies, reward models and tokenizers.

Nothing can be downloaded on a CI box, so the default recipe builds its own policy: a byte-level
BPE tokenizer trained on local text and a small randomly initialised Llama, saved in Hugging
Face format (safetensors) so every loading path (transformers, peft, vLLM) treats it like a hub
model. Every loader takes a hub id or a local path and turns every failure into
:class:`~lire_ray.errors.ModelLoadError`.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

from lire_ray.errors import ConfigError, ModelLoadError

logger = logging.getLogger(__name__)

# vLLM's CPU attention accepts head_dim 64 (it rejects 16), so tiny models keep 64.
TINY_HEAD_DIM = 64
BOS, EOS, PAD, UNK = "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_DTYPES = ("auto", "float32", "bfloat16", "float16")

_SUBJECTS = ["the movie", "this book", "the food", "our trip", "the service", "the weather",
             "my day", "the song", "the game", "the hotel", "the class", "the city"]
_VERBS = ["was", "is", "felt", "seemed", "looked", "sounded"]
_ADJECTIVES = ["great", "good", "wonderful", "lovely", "happy", "fine", "bad", "terrible",
               "awful", "sad", "boring", "okay", "amazing", "poor", "nice", "dull"]
_TAILS = ["and I liked it.", "but I would not go again.", "so we stayed home.",
          "and everyone smiled.", "because it rained.", "so I told my friends.",
          "and the staff were kind.", "but the price was high."]
_QUESTIONS = ["How was your day?", "What do you think of the movie?", "Tell me about the food.",
              "Write a short review.", "Can you describe the trip?", "Why was it good?"]


def default_corpus(num_lines: int = 2000) -> list[str]:
    """A small English corpus generated in code (reviews, questions, chat turns).

    The text is fixed (its generator has its own seed) so that every tiny tokenizer built from
    it is identical whatever the model seed.

    Args:
        num_lines: Number of lines to generate.

    Returns:
        The lines.
    """
    rng = random.Random(20240611)
    lines = []
    for _ in range(num_lines):
        kind = rng.random()
        sentence = (f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} "
                    f"{rng.choice(_ADJECTIVES)} {rng.choice(_TAILS)}")
        if kind < 0.6:
            lines.append(sentence)
        elif kind < 0.85:
            lines.append(f"{rng.choice(_QUESTIONS)} {sentence}")
        else:
            lines.append(f"<|user|>\n{rng.choice(_QUESTIONS)}\n<|assistant|>\n{sentence}")
    return lines


def _atomic_save(out_dir: Path, save: Any, overwrite: bool) -> Path:
    """Run ``save(tmp_dir)`` then rename the temp dir to ``out_dir``, so a crash never leaves a
    half-written model directory behind."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError(f"model directory '{out_dir}' already exists and is not empty; "
                          "pass overwrite=True to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        save(tmp)
        if out_dir.exists():
            # A directory cannot be renamed over a non-empty one: move the old one aside first.
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _train_tokenizer(corpus: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   pad_token=PAD, unk_token=UNK)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _check_heads(hidden_size: int, num_heads: int) -> None:
    if num_heads <= 0 or hidden_size != num_heads * TINY_HEAD_DIM:
        raise ConfigError(
            f"tiny model: hidden_size ({hidden_size}) must equal num_heads ({num_heads}) x "
            f"{TINY_HEAD_DIM}, because vLLM's CPU attention only accepts head_dim {TINY_HEAD_DIM}")


def _llama_config(tokenizer, *, vocab_size: int, hidden_size: int, num_layers: int,
                  num_heads: int, **extra):
    from transformers import LlamaConfig

    _check_heads(hidden_size, num_heads)
    return LlamaConfig(
        # Embedding rows beyond the tokenizer are allowed (real models pad their vocab too);
        # this lets tests ask for a large V from a small corpus.
        vocab_size=max(vocab_size, len(tokenizer)),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        head_dim=TINY_HEAD_DIM,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def build_tiny_policy(out_dir: str | os.PathLike, *, corpus: list[str] | None = None,
                      vocab_size: int = 512, hidden_size: int = 128, num_layers: int = 2,
                      num_heads: int = 2, seed: int = 0, overwrite: bool = False) -> Path:
    """Build a tiny random Llama policy and its BPE tokenizer in Hugging Face format.

    The tokenizer is a byte-level BPE trained on ``corpus`` (or :func:`default_corpus`), with
    bos/eos/pad/unk special tokens and a chat template (``<|role|>\\ncontent<|eos|>``). Output
    is identical for identical arguments.

    Args:
        out_dir: Directory to create; written via a temp dir and a rename.
        corpus: Local text lines to train the tokenizer on.
        vocab_size: Target BPE vocabulary; the model's embedding has
            ``max(vocab_size, len(tokenizer))`` rows.
        hidden_size: Model width; must equal ``num_heads * 64``.
        num_layers: Decoder layers.
        num_heads: Attention heads (head_dim is 64).
        seed: Seed of the weight initialisation.
        overwrite: Replace ``out_dir`` if it already holds files.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ConfigError: Head layout other than head_dim 64, or ``out_dir`` not empty without
            ``overwrite``.
    """
    import torch
    from transformers import LlamaForCausalLM

    _check_heads(hidden_size, num_heads)
    tokenizer = _train_tokenizer(list(corpus) if corpus is not None else default_corpus(),
                                 vocab_size)
    config = _llama_config(tokenizer, vocab_size=vocab_size, hidden_size=hidden_size,
                           num_layers=num_layers, num_heads=num_heads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return _atomic_save(Path(out_dir), save, overwrite)


def build_tiny_reward_model(out_dir: str | os.PathLike, *, tokenizer_dir: str | os.PathLike,
                            hidden_size: int = 128, num_layers: int = 2, num_heads: int = 2,
                            seed: int = 0, overwrite: bool = False) -> Path:
    """Build a tiny random Llama reward model (one scalar head) sharing a tokenizer.

    Args:
        out_dir: Directory to create; written via a temp dir and a rename.
        tokenizer_dir: Directory (or hub id) of the tokenizer to share, e.g. a tiny policy's.
        hidden_size: Model width; must equal ``num_heads * 64``.
        num_layers: Decoder layers.
        num_heads: Attention heads (head_dim is 64).
        seed: Seed of the weight initialisation.
        overwrite: Replace ``out_dir`` if it already holds files.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ConfigError: Bad head layout or non-empty ``out_dir`` without ``overwrite``.
        ModelLoadError: The tokenizer cannot be loaded.
    """
    import torch
    from transformers import LlamaForSequenceClassification

    tokenizer = load_tokenizer(tokenizer_dir)
    config = _llama_config(tokenizer, vocab_size=len(tokenizer), hidden_size=hidden_size,
                           num_layers=num_layers, num_heads=num_heads, num_labels=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForSequenceClassification(config)

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return _atomic_save(Path(out_dir), save, overwrite)


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
    """Load a causal LM (safetensors only) from a hub id or a local directory.

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
        ModelLoadError: Missing local path, unreachable hub, or no safetensors weights.
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = resolve_dtype(dtype)
    name = _resolve(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=torch_dtype, trust_remote_code=trust_remote_code, use_safetensors=True,
            attn_implementation=attn_implementation)
    except Exception as err:
        raise _load_error(name, "causal LM", err) from err
    return model.to(device).eval()


def default_device() -> str:
    """``"cuda"`` when this process sees a GPU (Ray sets CUDA_VISIBLE_DEVICES per actor), else CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
