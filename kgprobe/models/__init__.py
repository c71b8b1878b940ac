"""Model registry and loaders: ``load_causal_lm("smollm2-135m")``, ``load_sentence_encoder("minilm-l6")``."""
from kgprobe.models.device import (
    DEVICE_CHOICES,
    DEVICE_MAP_CHOICES,
    DTYPE_CHOICES,
    device_name,
    dtype_name,
    input_device,
    resolve_device,
    resolve_dtype,
)
from kgprobe.models.loaders import (
    check_model,
    load_causal_lm,
    load_masked_lm,
    load_sentence_encoder,
    load_text_encoder,
    model_source,
)
from kgprobe.models.registry import (
    DEFAULT_CAUSAL_LM,
    DEFAULT_SENTENCE_ENCODER,
    MODELS,
    ModelSpec,
    kgprobe_home,
    model_table,
)

__all__ = [
    "check_model", "DEVICE_CHOICES", "device_name", "DEFAULT_CAUSAL_LM", "DEFAULT_SENTENCE_ENCODER", "MODELS",
    "ModelSpec",
    "kgprobe_home", "load_causal_lm", "load_masked_lm", "load_sentence_encoder", "load_text_encoder",
    "model_source", "model_table", "resolve_device",
    "DEVICE_MAP_CHOICES", "DTYPE_CHOICES", "dtype_name", "input_device", "resolve_dtype",
]
