"""Dequantize a GGUF checkpoint once and keep it as a safetensors folder.

transformers can read GGUF, but it dequantizes all tensors on every load (about 15-20 s for
SmolLM2-135M on 2 cores). Saving the dequantized model with ``save_pretrained`` makes every later
load a plain safetensors read (about a second). Weights are kept in float32: the dequantized
values are exact in float32, while bf16 would round them a second time.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from kgprobe.atomic import atomic_path
from kgprobe.models.registry import kgprobe_home

_MARKER = "kgprobe-gguf-cache.json"


def cache_dir_for(gguf_path: Path) -> Path:
    """Cache folder for one GGUF file, keyed by its name and size (a re-download changes size)."""
    return kgprobe_home() / "models" / f"{gguf_path.stem}-{gguf_path.stat().st_size}"


def ensure_dequantized(gguf_path: Path) -> Path:
    """Return a folder ``from_pretrained`` can load fast, building it on first use."""
    gguf_path = Path(gguf_path)
    target = cache_dir_for(gguf_path)
    if (target / _MARKER).exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # A GGUF-loaded model refuses save_pretrained (it counts as quantized), so the dequantized
    # weights go into a plain model built from the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    with atomic_path(target, directory=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps({"source": str(gguf_path), "size": gguf_path.stat().st_size}))
    return target
