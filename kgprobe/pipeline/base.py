"""What every pipeline step builds on: its options base class, its spec, the shared run context,
the :data:`STEPS` registry and the model checks all steps use.

A step is an options model (``StepConfig`` subclass, validated before anything runs), a cheap
``check`` that can reject a config early (unknown model, missing dataset, a KG used before it is
made), the names it ``defines`` for later steps, and ``run(step, ctx)`` that does the work. Each
step module registers its steps with :func:`register`; :mod:`kgprobe.pipeline.steps` imports them all.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import BaseModel, ConfigDict

from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.models import MODELS


class StepConfig(BaseModel):
    """Base of every step's options: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: str


@dataclass
class RunContext:
    """What steps share while a pipeline runs: named graphs and models, the output folder."""

    out_dir: Path
    device: torch.device
    seed: int
    kgs: dict[str, KnowledgeGraph] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    echo: Callable[[str], None] = print


@dataclass(frozen=True)
class StepSpec:
    config: type[StepConfig]
    run: Callable[[Any, RunContext], None]
    #: ``(key, why)`` when the step cannot run; ``key`` names the option (a str, or a tuple for a
    #: nested one such as ``("options", "search")``) whose line the error points at
    check: Callable[..., tuple[str | tuple | None, str] | None] | None = None
    defines: Callable[[Any], list[str]] | None = None
    description: str = ""
    #: the check also gets ``out_dir=`` and ``seed=`` of the pipeline (to look at earlier output)
    #: and ``earlier=``, the steps before it
    check_sees_run: bool = False


STEPS: dict[str, StepSpec] = {}


def register(name: str, spec: StepSpec) -> None:
    STEPS[name] = spec


def _check_model(name: str) -> str | None:
    spec = MODELS.get(name)
    if spec is not None:
        if spec.weights_path() is None and spec.hub_id is None:
            return f"model {name!r} is not installed: {spec.install_hint}"
        if spec.weights_path() is None and os.environ.get("HF_HUB_OFFLINE") == "1":
            return f"model {name!r} is not in the local cache and the hub is offline: {spec.install_hint}"
        return None
    if Path(name).expanduser().exists():
        return None
    if os.environ.get("HF_HUB_OFFLINE") == "1" or "/" not in name:
        return (f"unknown model {name!r} (known: {', '.join(MODELS)}; or a local directory, or a hub id org/name "
                "when online)")
    return None


_KIND_WORDS = {"causal-lm": "a causal LM", "masked-lm": "a masked LM", "sentence-encoder": "a sentence encoder"}


def _check_model_kind(name: str, kinds: tuple[str, ...], wanted: str) -> str | None:
    """Why registry model ``name`` cannot serve a step that needs one of ``kinds`` (said as
    ``wanted``), or None; worded as the commands word it (kgprobe.models.loaders)."""
    spec = MODELS.get(name)
    if spec is None or spec.kind in kinds:
        return None
    return f"model {name!r} is {_KIND_WORDS.get(spec.kind, spec.kind)}, not {wanted}"
