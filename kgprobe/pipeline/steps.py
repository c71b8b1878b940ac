"""Every pipeline step, registered by name in :data:`STEPS` (see :mod:`kgprobe.pipeline.registry`).

Each group of steps lives in its own module and registers its steps when imported, with
:func:`~kgprobe.pipeline.registry.step`: the general ones (:mod:`~kgprobe.pipeline.core_steps`)
and one module per capability. This is the only module that imports the step modules, always in
the same (alphabetical) order; step modules import :mod:`~kgprobe.pipeline.registry`, never each
other. A new step module is one more import line here.
"""
from __future__ import annotations

# each import registers the module's steps
import kgprobe.pipeline.core_steps  # noqa: F401
import kgprobe.pipeline.harvest_steps  # noqa: F401
import kgprobe.pipeline.index_steps  # noqa: F401
import kgprobe.pipeline.linkpred_steps  # noqa: F401
import kgprobe.pipeline.probe_steps  # noqa: F401
from kgprobe.pipeline.registry import STEPS

__all__ = ["STEPS"]
