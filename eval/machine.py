"""What every benchmark records about the machine it ran on (import as ``from machine import ...``
from a script in eval/)."""
from __future__ import annotations

import os
import platform

import numpy as np
import torch

from kgprobe.models.device import cpu_model


def machine_info(device: torch.device | None = None) -> dict:
    """CPU model and count, versions, threads, the device, and the load average at the start."""
    model = cpu_model()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = {"cpu_count": os.cpu_count(), "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info
