"""Load a model by registry name, local directory (or .gguf file) or hub id.

Every loader returns models in eval mode on the resolved device. A name that cannot be loaded
gives one ``KgprobeError`` line that says what was tried and how to install it. The LM loaders
also take ``dtype`` (``auto``: bf16 on a GPU, fp32 on CPU; see
:func:`~kgprobe.models.device.resolve_dtype`) and ``device_map`` (layers spread over several
devices by accelerate; the model then stays where the map puts it, ``model.hf_device_map``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from kgprobe.errors import KgprobeError
from kgprobe.models.device import check_device_map, map_device, resolve_device, resolve_dtype
from kgprobe.models.gguf_cache import ensure_dequantized
from kgprobe.models.registry import MODELS, ModelKind, ModelSpec

KIND_WORDS = {"causal-lm": "a causal LM", "masked-lm": "a masked LM", "sentence-encoder": "a sentence encoder"}


def hide_loading_bars() -> None:
    """No more "Loading weights" bars: transformers draws one on every model load (for this process)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _check_registry_kind(spec: ModelSpec, kind: ModelKind | None, name: str) -> None:
    # a masked LM's encoder serves as a sentence encoder too
    if kind is not None and spec.kind != kind and not (kind == "sentence-encoder" and spec.kind == "masked-lm"):
        raise KgprobeError(f"model {name!r} is {KIND_WORDS[spec.kind]}, not {KIND_WORDS[kind]}")


def model_source(name: str, *, kind: ModelKind | None = None) -> str:
    """A path or hub id that ``from_pretrained`` accepts for ``name``.

    Registry names are checked for kind and installation; ``*.gguf`` files are dequantized
    into the cache; local directories pass through; anything else is treated as a hub id.
    """
    spec = MODELS.get(name)
    if spec is not None:
        _check_registry_kind(spec, kind, name)
        path = spec.weights_path()
        if path is None:
            if spec.hub_id is not None:
                return spec.hub_id
            raise KgprobeError(f"model {name!r} is not installed: {spec.install_hint}")
        return str(ensure_dequantized(path)) if spec.gguf_file else str(path)
    local = Path(name).expanduser()
    if local.is_file() and local.suffix == ".gguf":
        return str(ensure_dequantized(local))
    if local.exists():
        if not local.is_dir():
            raise KgprobeError(f"model {name!r}: expected a model directory or a .gguf file")
        return str(local)
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or not name.strip():
        raise KgprobeError(f"model {name!r}: no such directory (known names: {', '.join(MODELS)})")
    return name


_TRUE = ("1", "true", "yes", "on")


def hub_unreachable() -> bool:
    """True when the model hub cannot be asked: offline by setting, or no answer within 3 s.

    ``from_pretrained`` retries an unreachable hub for a minute before it fails; asking once
    with a short timeout first turns that minute into an immediate, clear error.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        return True
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
    except OSError:
        return True
    return False


def architecture_kind(config_file: Path) -> str | None:
    """``causal-lm`` / ``masked-lm`` from a model's config.json, None when it does not say."""
    try:
        archs = json.loads(config_file.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return None
    if any("MaskedLM" in a for a in archs):
        return "masked-lm"
    if any("CausalLM" in a or "LMHead" in a for a in archs):
        return "causal-lm"
    return None


def lm_kind(name: str, kind: str = "auto") -> str:
    """``causal-lm`` or ``masked-lm`` for ``kind="auto"``: the registry says, else the model's
    config.json does (a causal LM when it says neither); an explicit ``kind`` is returned as is."""
    if kind != "auto":
        return kind
    if name in MODELS:
        if MODELS[name].kind not in ("causal-lm", "masked-lm"):
            raise KgprobeError(f"model {name!r} is a {MODELS[name].kind.replace('-', ' ')}, not a causal or masked LM")
        return MODELS[name].kind
    if architecture_kind(Path(name).expanduser() / "config.json") == "masked-lm":
        return "masked-lm"
    return "causal-lm"


def _check_architecture(config_file: Path, kind: ModelKind | None, name: str) -> None:
    found = architecture_kind(config_file)
    if kind in ("causal-lm", "masked-lm") and found is not None and found != kind:
        raise KgprobeError(f"model {name!r} is {KIND_WORDS[found]}, not {KIND_WORDS[kind]}")


def check_model(name: str, *, kind: ModelKind | None = None) -> None:
    """Fail at once, loading nothing and waiting on no network, when ``name`` cannot be a model of
    ``kind``: a registry name of another kind or not installed, a missing path, a directory
    without config.json, or a hub id that is neither cached nor reachable."""
    spec = MODELS.get(name)
    if spec is not None:
        _check_registry_kind(spec, kind, name)
        if spec.weights_path() is None:
            if spec.hub_id is None or hub_unreachable():
                raise KgprobeError(f"model {name!r} is not installed: {spec.install_hint}")
        return
    local = Path(name).expanduser()
    if local.is_file():
        if local.suffix != ".gguf":
            raise KgprobeError(f"model {name!r}: expected a model directory or a .gguf file")
        return
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise KgprobeError(f"model {name!r}: the directory has no config.json (not a saved model)")
        _check_architecture(local / "config.json", kind, name)
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or not name.strip():
        raise KgprobeError(f"model {name!r}: no such directory (known names: {', '.join(MODELS)})")
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # huggingface_hub's HFValidationError: not even spelled like a hub id
        raise KgprobeError(f"unknown model {name!r}: not a registry name ({', '.join(MODELS)}), not a local "
                           "directory or .gguf file, and not a hub id (org/name)") from None
    if isinstance(cached, str):
        _check_architecture(Path(cached), kind, name)
    elif hub_unreachable():
        raise KgprobeError(f"unknown model {name!r}: not a registry name ({', '.join(MODELS)}), not a local "
                           "directory or .gguf file, and not in the hub cache (the hub cannot be reached)")


def _from_pretrained(cls: Any, source: str, name: str, **kwargs: Any) -> Any:
    try:
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        if Path(source).exists():  # a local model that is incomplete or broken: say what is wrong with it
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise KgprobeError(f"cannot load model {name!r} from {source}: {first}") from None
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        why = "the hub is not reachable (HF_HUB_OFFLINE=1)" if offline else str(err).splitlines()[0]
        raise KgprobeError(
            f"cannot load model {name!r}: not a registry name ({', '.join(MODELS)}), not a local "
            f"directory, and not loadable as a hub id: {why}"
        ) from None


def _load_lm(cls: Any, source: str, name: str, *, device: str | torch.device, dtype: str | torch.dtype,
             device_map: str | dict | None, offload_folder: str | Path | None) -> Any:
    """The model in eval mode: moved whole to ``device``, or, with a ``device_map``, left where
    accelerate dispatched its layers (``offload_folder``: where layers mapped to ``"disk"`` go)."""
    device_map = check_device_map(device_map)
    if device_map is None:
        dev = resolve_device(device)
        return _from_pretrained(cls, source, name, dtype=resolve_dtype(dtype, dev)).to(dev).eval()
    extra = {} if offload_folder is None else {"offload_folder": str(offload_folder)}
    return _from_pretrained(cls, source, name, dtype=resolve_dtype(dtype, map_device(device_map)),
                            device_map=device_map, **extra).eval()


def load_causal_lm(name: str, *, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
                   device_map: str | dict | None = None, offload_folder: str | Path | None = None):
    """``(model, tokenizer)`` for a decoder-only LM; the tokenizer pads on the left for batching.

    ``dtype``: ``auto`` (bf16 on a GPU, fp32 on CPU), ``bf16``, ``fp16``, ``fp32`` or a torch
    dtype. ``device_map``: None (the whole model on ``device``), ``"auto"`` or a
    ``{module: device}`` dict; inputs then go to :func:`~kgprobe.models.device.input_device`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolve_dtype(dtype, "cpu")  # a bad name fails before anything loads
    check_device_map(device_map)
    source = model_source(name, kind="causal-lm")
    tokenizer = _from_pretrained(AutoTokenizer, source, name)
    model = _load_lm(AutoModelForCausalLM, source, name, device=device, dtype=dtype, device_map=device_map,
                     offload_folder=offload_folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def load_masked_lm(name: str, *, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
                   device_map: str | dict | None = None, offload_folder: str | Path | None = None):
    """``(model, tokenizer)`` for an encoder with its masked-LM head (BERT, RoBERTa, ...);
    ``dtype`` and ``device_map`` as for :func:`load_causal_lm`."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    resolve_dtype(dtype, "cpu")  # a bad name fails before anything loads
    check_device_map(device_map)
    source = model_source(name, kind="masked-lm")
    tokenizer = _from_pretrained(AutoTokenizer, source, name)
    model = _load_lm(AutoModelForMaskedLM, source, name, device=device, dtype=dtype, device_map=device_map,
                     offload_folder=offload_folder)
    return model, tokenizer


def load_sentence_encoder(name: str, *, device: str | torch.device = "auto"):
    """A ``SentenceTransformer`` (frozen use: embeddings for search, clustering, negatives)."""
    from sentence_transformers import SentenceTransformer

    source = model_source(name, kind="sentence-encoder")
    dev = str(resolve_device(device))
    try:
        return SentenceTransformer(source, device=dev, local_files_only=os.environ.get("HF_HUB_OFFLINE") == "1")
    except (OSError, ValueError) as err:
        raise KgprobeError(f"cannot load sentence encoder {name!r}: {str(err).splitlines()[0]}") from None


def load_text_encoder(name: str, *, device: str | torch.device = "auto"):
    """``(model, tokenizer)`` of the bare transformer encoder, in train-ready form (for fine-tuning)."""
    from transformers import AutoModel, AutoTokenizer

    source = model_source(name, kind="sentence-encoder")
    tokenizer = _from_pretrained(AutoTokenizer, source, name)
    model = _from_pretrained(AutoModel, source, name)
    return model.to(resolve_device(device)), tokenizer
