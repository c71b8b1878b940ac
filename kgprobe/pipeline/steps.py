"""Every pipeline step, registered by name in :data:`STEPS` (see :mod:`kgprobe.pipeline.base`).

Each group of steps lives in its own module and registers its steps when imported: the general
ones (:mod:`~kgprobe.pipeline.core_steps`) and one module per capability. Importing this module
imports them all, always in the same order.
"""
from __future__ import annotations

from kgprobe.pipeline import core_steps, harvest_steps, linkpred_steps, probe_steps  # noqa: F401  (they register)
from kgprobe.pipeline.base import STEPS

__all__ = ["STEPS"]
