"""One call that seeds every random number generator a kgprobe job draws from."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and every GPU): same
    seed, same result, whichever of them a component happens to use."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
