"""The names ``--dtype`` and ``--device-map`` take, in one place and without torch (the CLI's
options are built from them before torch is imported); :mod:`kgprobe.models.device` resolves them."""
from __future__ import annotations

from typing import Literal, get_args

#: the weights' dtype: auto (bf16 on a GPU with native bf16, fp16 on an older one, fp32 on CPU)
DtypeName = Literal["auto", "bf16", "fp16", "fp32"]
DTYPE_CHOICES: tuple[str, ...] = get_args(DtypeName)
#: where an LM's layers go: none (all on one device) or auto (spread by accelerate)
DeviceMapName = Literal["none", "auto"]
DEVICE_MAP_CHOICES: tuple[str, ...] = get_args(DeviceMapName)
