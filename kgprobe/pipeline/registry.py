"""The step registry: what a pipeline step is, how it is registered, and the checks steps share.

A step is four things, registered together under its name in :data:`STEPS`:

- an options model, a :class:`StepConfig` subclass whose ``type`` is ``Literal["name"]``
  (unknown keys are errors; pydantic validates every option before anything runs);
- ``run(step, ctx: RunContext)``, which does the work: it reads and adds named KGs and models
  in ``ctx``, writes under ``ctx.out_dir`` and records what it found in ``ctx.results``;
- optionally ``check(step, ctx: CheckContext)``, cheap (no model or dataset is loaded), which
  raises :class:`StepCheckError` naming the option whose YAML line the error points at;
- optionally ``defines(step)``, the KG names the step makes for later steps.

To add a step, write it in a step module with the decorator::

    class MyStep(StepConfig):
        type: Literal["my_step"] = "my_step"
        kg: str

    def _check(step: MyStep, ctx: CheckContext) -> None:
        check_kg_defined(step.kg, ctx, key="kg")

    @step("my_step", config=MyStep, check=_check, description="what it does, in one line")
    def _run(step: MyStep, ctx: RunContext) -> None:
        ...

and import the module in :mod:`kgprobe.pipeline.steps` (one line; a new capability gets a new
module). Step modules import this module, never each other: what several share lives here.
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch
from pydantic import BaseModel, ConfigDict

from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.models import MODELS
from kgprobe.models.loaders import KIND_WORDS

__all__ = ["DEVICE_NAME", "KIND_WORDS", "STEPS", "CheckContext", "RunContext", "StepCheckError", "StepConfig",
           "StepSpec", "check_device_name", "check_kg_defined", "check_kg_format", "check_model", "check_model_kind",
           "problem_at", "reused_build", "step"]


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
class CheckContext:
    """What a step's check may look at: the names earlier steps define, the pipeline's output
    folder and seed (to find output of an earlier run there), and the earlier steps themselves."""

    out_dir: Path
    defined: frozenset[str] = frozenset()
    seed: int = 0
    earlier: tuple[StepConfig, ...] = ()

    def made_by(self, step_type: str, path: Path, *, option: str = "out",
                when: Callable[[Any], bool] | None = None) -> Any | None:
        """The last earlier ``step_type`` step whose ``option`` (a path under ``out_dir``) is ``path``
        there too, and for which ``when`` holds; None when no earlier step writes it."""
        for earlier in reversed(self.earlier):
            written = getattr(earlier, option, None)
            if (earlier.type == step_type and written is not None and self.out_dir / written == self.out_dir / path
                    and (when is None or when(earlier))):
                return earlier
        return None


class StepCheckError(KgprobeError):
    """Why a step cannot run. ``key`` names the option whose line the error points at: a str, a
    tuple for a nested one such as ``("options", "search")``, or None for the step itself."""

    def __init__(self, key: str | tuple | None, message: str):
        super().__init__(message)
        self.key, self.message = key, message

    @property
    def loc(self) -> tuple:
        """``key`` as a path into the step's options."""
        return () if self.key is None else (self.key,) if isinstance(self.key, str) else tuple(self.key)


RunFn = Callable[[Any, RunContext], None]


@dataclass(frozen=True)
class StepSpec:
    config: type[StepConfig]
    run: RunFn
    #: raises :class:`StepCheckError` when the step cannot run
    check: Callable[[Any, CheckContext], None] | None = None
    #: the KG names the step defines for later steps
    defines: Callable[[Any], list[str]] | None = None
    description: str = ""


STEPS: dict[str, StepSpec] = {}


def step(name: str, *, config: type[StepConfig], check: Callable[[Any, CheckContext], None] | None = None,
         defines: Callable[[Any], list[str]] | None = None, description: str = "") -> Callable[[RunFn], RunFn]:
    """Register the decorated ``run(step, ctx)`` as step ``name`` (see the module docstring).
    A name registered twice, or a config whose ``type`` is not ``name``, is a bug: ValueError."""
    def register(run: RunFn) -> RunFn:
        if name in STEPS:
            raise ValueError(f"pipeline step {name!r} is registered twice")
        declared = config.model_fields["type"].default
        if declared != name:
            raise ValueError(f"pipeline step {name!r}: its config {config.__name__} has type {declared!r}")
        STEPS[name] = StepSpec(config=config, run=run, check=check, defines=defines, description=description)
        return run

    return register


@contextlib.contextmanager
def problem_at(key: str | tuple | None) -> Iterator[None]:
    """Turn a ``KgprobeError`` raised inside into a :class:`StepCheckError` at option ``key``."""
    try:
        yield
    except StepCheckError:
        raise
    except KgprobeError as err:
        raise StepCheckError(key, str(err)) from None


# ------------------------------------------------------------------ devices and models
#: how a device is spelt (after strip and lower): the names kgprobe.models.resolve_device takes
DEVICE_NAME = re.compile(r"(auto|cpu|cuda(:\d+)?)")


def check_device_name(device: str, *, key: str | tuple = "device") -> None:
    """``device`` is spelt as a device (whether this machine has it is for the run to say)."""
    if not DEVICE_NAME.fullmatch(device.strip().lower()):
        raise StepCheckError(key, f"bad device {device!r}: use auto, cpu, cuda or cuda:N")


def check_model(name: str, *, key: str | tuple = "model") -> None:
    """A registry name that is installed (or on the hub while online), a local path, or a hub id."""
    spec = MODELS.get(name)
    if spec is not None:
        if spec.weights_path() is None and spec.hub_id is None:
            raise StepCheckError(key, f"model {name!r} is not installed: {spec.install_hint}")
        if spec.weights_path() is None and os.environ.get("HF_HUB_OFFLINE") == "1":
            raise StepCheckError(key, f"model {name!r} is not in the local cache and the hub is offline: "
                                      f"{spec.install_hint}")
        return
    if Path(name).expanduser().exists():
        return
    if os.environ.get("HF_HUB_OFFLINE") == "1" or "/" not in name:
        raise StepCheckError(key, f"unknown model {name!r} (known: {', '.join(MODELS)}; or a local directory, "
                                  "or a hub id org/name when online)")


def check_model_kind(name: str, kinds: tuple[str, ...], wanted: str, *, key: str | tuple = "model") -> None:
    """A registry model ``name`` is one of ``kinds`` (said as ``wanted``); other names pass."""
    spec = MODELS.get(name)
    if spec is not None and spec.kind not in kinds:
        raise StepCheckError(key, f"model {name!r} is {KIND_WORDS.get(spec.kind, spec.kind)}, not {wanted}")


# ------------------------------------------------------------------ KGs
def check_kg_defined(name: str, ctx: CheckContext, *, key: str | tuple = "kg") -> None:
    """KG ``name`` is made by an earlier step."""
    if name not in ctx.defined:
        known = ", ".join(sorted(ctx.defined)) or "none yet"
        raise StepCheckError(key, f"KG {name!r} is not defined by an earlier step (defined: {known})")


def check_kg_format(path: Path, fmt: str | None, *, key: str | tuple) -> None:
    """``fmt`` is a KG format name (error at ``format``), or, None, ``path``'s suffix names one
    (error at ``key``)."""
    from kgprobe.kg.formats import FORMATS, format_for

    if fmt is not None:
        if fmt not in FORMATS:
            raise StepCheckError("format", f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
        return
    with problem_at(key):
        format_for(path)


class DatasetBuild(Protocol):
    """The options of a ``build_dataset`` step that say which build it is and where it goes."""

    dataset: str
    inductive: bool
    seed: int | None
    out: Path | None
    options: dict[str, Any]
    reuse: bool


def reused_build(build: DatasetBuild, out_dir: Path | None, seed: int) -> Path | None:
    """Where a ``build_dataset`` step finds its own earlier build (its ``out``, holding a
    ``build.json`` of exactly this request) and so loads it rather than building again; else None."""
    from kgprobe.kg.build import find_built

    if build.out is None or out_dir is None or not build.reuse:
        return None
    seed = seed if build.seed is None else build.seed
    return find_built(build.dataset, out_dir / build.out, inductive=build.inductive, seed=seed,
                      options=build.options)
