"""The one place that turns ``--device auto|cpu|cuda[:N]`` into a ``torch.device``."""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch

from kgprobe.errors import KgprobeError

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
