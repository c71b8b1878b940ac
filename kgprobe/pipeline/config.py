"""A pipeline YAML file, parsed and validated before any step runs.

A pipeline is ``name``, ``seed``, ``device``, ``out_dir`` and a list of ``steps``; each step is a
mapping with a ``type`` naming a registered step (see ``kgprobe.pipeline.steps``) and that step's
options. Errors point at the YAML line of the offending value: ``demo.yaml:7: steps[1].model: ...``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from kgprobe.errors import KgprobeError, warn
from kgprobe.models import DEVICE_CHOICES
from kgprobe.pipeline.registry import DEVICE_NAME, CheckContext, StepCheckError, StepConfig
from kgprobe.pipeline.steps import STEPS
from kgprobe.yamlconf import config_error, read_yaml, validate, yaml_line


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    seed: int = Field(default=0, ge=0, lt=2**32)  # numpy's seed range: every RNG is seeded with it
    device: str = "auto"
    out_dir: Path = Path("runs/pipeline")
    steps: list[Any] = Field(min_length=1)


class Pipeline:
    """A validated pipeline: its config, the typed step configs, and where it came from."""

    def __init__(self, config: PipelineConfig, steps: list[StepConfig], path: Path):
        self.config, self.steps, self.path = config, steps, path


def load_pipeline(path: str | Path, *, out_dir: str | Path | None = None, device: str | None = None,
                  strict_device: bool = False) -> Pipeline:
    """Parse and validate a pipeline file; every problem is one ``KgprobeError`` with file:line.

    ``out_dir`` overrides the file's ``out_dir`` (before the checks, which may look at earlier
    output there, e.g. a dataset built by a previous run); ``device`` overrides its device. A
    device this machine lacks (``cuda`` without a GPU) is a warning, as the file may be meant for
    another machine, unless ``strict_device`` (about to run here): then it is an error. Nothing
    is written and no model or dataset is loaded.
    """
    path = Path(path)
    data, root = read_yaml(path)
    if not isinstance(data, dict):
        raise KgprobeError("a pipeline must be a YAML mapping with name and steps", path=path, line=1)
    config = validate(PipelineConfig, data, path, root)
    if out_dir is not None:
        config.out_dir = Path(out_dir)
    elif config.out_dir.exists() and not config.out_dir.is_dir():
        raise config_error(f"{config.out_dir} is a file, not a directory", path, root, ("out_dir",))
    if device is not None:  # from the command line: its errors name no line of the file
        config.device = device
    _check_device(config.device, *((None, None) if device is not None else (path, root)), strict=strict_device)
    steps: list[StepConfig] = []
    for i, raw in enumerate(config.steps):
        loc = ("steps", i)
        if not isinstance(raw, dict) or "type" not in raw:
            raise config_error("a step must be a mapping with a 'type'", path, root, loc)
        if not isinstance(raw["type"], str):  # a list or mapping is not even hashable
            raise config_error(f"the step type must be a name, got {type(raw['type']).__name__}",
                               path, root, loc + ("type",))
        spec = STEPS.get(raw["type"])
        if spec is None:
            raise config_error(f"unknown step type {raw['type']!r} (known: {', '.join(sorted(STEPS))})",
                               path, root, loc + ("type",))
        steps.append(validate(spec.config, raw, path, root, loc))
    _check_names(steps, path, root)
    _check_references(steps, path, root, out_dir=config.out_dir, seed=config.seed)
    return Pipeline(config, steps, path)


def _check_device(device: str, path: Path | None, root: yaml.Node | None, *, strict: bool) -> None:
    """The device's spelling is an error; its absence on this machine a warning (or, ``strict``, an
    error). The messages are those of ``kgprobe.models.resolve_device``, which runs the pipeline.
    ``path`` None: the device comes from the command line, so the errors name no file."""
    from kgprobe.models import resolve_device

    where = ("device",) if path is not None else ()
    name = device.strip().lower()
    if not DEVICE_NAME.fullmatch(name):
        if name.split(":")[0] not in DEVICE_CHOICES and path is not None:
            raise config_error(f"{device!r} is not one of {', '.join(DEVICE_CHOICES)}", path, root, where)
        raise config_error(f"bad device {device!r}: use auto, cpu, cuda or cuda:N", path, root, where)
    try:
        resolve_device(name)
    except KgprobeError as err:
        if strict:  # the message names the device already: no "device:" prefix
            raise KgprobeError(str(err), path=path, line=yaml_line(root, where)) from None
        warn(str(err), path=path, line=yaml_line(root, where))


def _check_names(steps: list[StepConfig], path: Path, root: yaml.Node) -> None:
    """A name given twice (two ``as: x``, or a KG defined again) would silently replace the first."""
    first: dict[tuple[str, str], int] = {}
    for i, step in enumerate(steps):
        alias = getattr(step, "as_", None)
        if step.type == "load_model":
            names = [("model", alias)] if alias is not None else []
        else:
            defines = STEPS[step.type].defines
            names = [("KG", name) for name in (defines(step) if defines else [])]
        for kind, name in names:
            if (kind, name) in first:
                j = first[kind, name]
                where = f"steps[{j}] (line {yaml_line(root, ('steps', j))})"
                key = ("as",) if alias is not None else ("dataset",) if step.type == "build_dataset" else ()
                raise config_error(f"{kind} name {name!r} is already defined by {where}; give this step "
                                   "another `as:` name", path, root, ("steps", i) + key)
            first[kind, name] = i


def _check_references(steps: list[StepConfig], path: Path, root: yaml.Node, *, out_dir: Path, seed: int) -> None:
    """Each step's check (names used before defined, unavailable sources, ...): its
    :class:`StepCheckError` becomes ``file:line: steps[i].key: message``, at the option it names."""
    defined: set[str] = set()
    for i, step in enumerate(steps):
        spec = STEPS[step.type]
        if spec.check is not None:
            ctx = CheckContext(defined=frozenset(defined), out_dir=out_dir, seed=seed, earlier=tuple(steps[:i]))
            try:
                spec.check(step, ctx)
            except StepCheckError as err:
                raise config_error(err.message, path, root, ("steps", i) + err.loc) from None
        defined |= set(spec.defines(step)) if spec.defines else set()
