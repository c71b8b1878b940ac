"""The one place that turns ``--device auto|cpu|cuda[:N]`` into a ``torch.device``."""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch

from kgprobe.errors import KgprobeError
from kgprobe.precision import DEVICE_MAP_CHOICES, DTYPE_CHOICES

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` picks CUDA when a GPU is visible, else CPU; asking for CUDA without one is an error."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not re.fullmatch(r"cuda(:\d+)?", name):  # a typo is a typo, GPU or not
            raise KgprobeError(f"bad device {device!r}: use auto, cpu, cuda or cuda:N")
        if not torch.cuda.is_available():
            raise KgprobeError(f"device {device!r} requested but no CUDA GPU is visible (use --device cpu or auto)")
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise KgprobeError(f"bad device {device!r}: use auto, cpu, cuda or cuda:N") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise KgprobeError(f"device {device!r}: only {torch.cuda.device_count()} GPU(s) visible")
        return dev
    raise KgprobeError(f"bad device {device!r}: use auto, cpu, cuda or cuda:N")


_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
           "half": torch.float16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}


def resolve_dtype(dtype: str | torch.dtype | None = "auto", device: str | torch.device | None = "auto") -> torch.dtype:
    """The weights' dtype for ``--dtype auto|bf16|fp16|fp32`` (or a torch dtype) on ``device``.

    ``auto``: bf16 on a CUDA GPU that computes it natively (Ampere and later), fp16 on an older
    GPU, fp32 on CPU (where bf16 is mostly emulated and slower), so CPU runs are unchanged.
    """
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise KgprobeError(f"bad dtype {dtype}: use {', '.join(DTYPE_CHOICES)}")
        return dtype
    name = "auto" if dtype is None else dtype.strip().lower() if isinstance(dtype, str) else None
    if name == "auto":
        dev = resolve_device(device)
        if dev.type != "cuda":
            return torch.float32
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch: no emulation to tell apart
            native = torch.cuda.is_bf16_supported()
        return torch.bfloat16 if native else torch.float16
    if name not in _DTYPES:
        raise KgprobeError(f"bad dtype {dtype!r}: use {', '.join(DTYPE_CHOICES)}")
    return _DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """``bf16`` / ``fp16`` / ``fp32`` (what a run record says), else torch's own name."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype).split(".")[-1])


def check_device_map(device_map: str | dict | None) -> str | dict | None:
    """``None`` (``"none"`` too): the model sits whole on one device; ``"auto"``: accelerate spreads
    its layers over the GPUs (then CPU memory, then disk); a dict ``{module name: device}`` as
    ``from_pretrained(device_map=...)`` takes it. Anything else is one ``KgprobeError`` line."""
    if device_map is None or isinstance(device_map, dict):
        return device_map
    name = device_map.strip().lower() if isinstance(device_map, str) else None
    if name not in DEVICE_MAP_CHOICES:
        raise KgprobeError(f"bad device map {device_map!r}: use none, auto or a {{module: device}} mapping")
    return None if name == "none" else name


def map_device(device_map: str | dict) -> torch.device:
    """The device a device map computes on first (what ``dtype="auto"`` is resolved against): a GPU
    when the map names one (``auto``: when one is visible), else the CPU."""
    if device_map == "auto":
        return resolve_device("auto")
    for where in device_map.values():
        if isinstance(where, int) or (isinstance(where, torch.device) and where.type == "cuda") or \
                (isinstance(where, str) and where.startswith("cuda")):
            return torch.device("cuda")
    return torch.device("cpu")


def input_device(model: torch.nn.Module) -> torch.device:
    """Where the inputs (token ids, masks, positions) of ``model`` go: the device its input
    embeddings compute on. With layers spread over devices (a device map) that is not
    ``next(model.parameters()).device``, and an offloaded embedding's weight sits on ``meta``."""
    get = getattr(model, "get_input_embeddings", None)
    module = get() if callable(get) else None
    return execution_device(module if module is not None else model, next(model.parameters()).device)


def execution_device(module: torch.nn.Module, default: torch.device) -> torch.device:
    """Where ``module`` computes: accelerate's execution device under a device map (an offloaded
    module's weights sit on ``meta``), else the device of its weights (``default`` without any)."""
    where = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    if where is not None:
        return torch.device("cuda", where) if isinstance(where, int) else torch.device(where)
    param = next(module.parameters(), None)
    return default if param is None else param.device


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``); ``platform.processor()`` alone is often empty or
    just ``x86_64`` on Linux, and is the fallback elsewhere."""
    model = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return model
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), model)


def device_name(device: torch.device) -> str:
    """What a run record says it ran on: the GPU's name, or the CPU's model and the cores torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} CPU, {torch.get_num_threads()} of {os.cpu_count()} cores"


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``. From host memory to a GPU the copy goes through pinned memory and
    does not block: a blocking copy waits until the GPU has run everything queued before it, so
    a training step with a few such copies leaves the CPU idle while the GPU works and the GPU
    idle while the CPU prepares the next batch."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX tiles): there bf16 autocast
    roughly halves a transformer step; elsewhere bf16 is emulated and slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    checks = (getattr(cpu, "_is_avx512_bf16_supported", None), getattr(cpu, "_is_amx_tile_supported", None))
    return any(check is not None and bool(check()) for check in checks)
