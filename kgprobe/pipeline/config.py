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

from kgprobe.errors import KgprobeError
from kgprobe.models import DEVICE_CHOICES
from kgprobe.yamlconf import config_error, read_yaml, validate


class StepConfig(BaseModel):
    """Base of every step's options: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: str


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    seed: int = 0
    device: str = "auto"
    out_dir: Path = Path("runs/pipeline")
    steps: list[Any] = Field(min_length=1)


class Pipeline:
    """A validated pipeline: its config, the typed step configs, and where it came from."""

    def __init__(self, config: PipelineConfig, steps: list[StepConfig], path: Path):
        self.config, self.steps, self.path = config, steps, path


def load_pipeline(path: str | Path, *, out_dir: str | Path | None = None) -> Pipeline:
    """Parse and validate a pipeline file; every problem is one ``KgprobeError`` with file:line.

    ``out_dir`` overrides the file's ``out_dir`` (before the checks, which may look at earlier
    output there, e.g. a dataset built by a previous run).
    """
    from kgprobe.pipeline.steps import STEPS

    path = Path(path)
    data, root = read_yaml(path)
    if not isinstance(data, dict):
        raise KgprobeError("a pipeline must be a YAML mapping with name and steps", path=path, line=1)
    config = validate(PipelineConfig, data, path, root)
    if out_dir is not None:
        config.out_dir = Path(out_dir)
    if config.device.split(":")[0] not in DEVICE_CHOICES:
        raise config_error(f"{config.device!r} is not one of {', '.join(DEVICE_CHOICES)}", path, root, ("device",))
    steps: list[StepConfig] = []
    for i, raw in enumerate(config.steps):
        loc = ("steps", i)
        if not isinstance(raw, dict) or "type" not in raw:
            raise config_error("a step must be a mapping with a 'type'", path, root, loc)
        spec = STEPS.get(raw["type"])
        if spec is None:
            raise config_error(f"unknown step type {raw['type']!r} (known: {', '.join(sorted(STEPS))})",
                               path, root, loc + ("type",))
        steps.append(validate(spec.config, raw, path, root, loc))
    _check_references(steps, path, root, out_dir=config.out_dir, seed=config.seed)
    return Pipeline(config, steps, path)


def _check_references(steps: list[StepConfig], path: Path, root: yaml.Node, *, out_dir: Path, seed: int) -> None:
    """Semantic checks that need no heavy work: names used before defined, unavailable sources."""
    from kgprobe.pipeline.steps import STEPS

    defined: set[str] = set()
    for i, step in enumerate(steps):
        spec = STEPS[step.type]
        if spec.check is None:
            problem = None
        elif spec.check_sees_run:
            problem = spec.check(step, defined, out_dir=out_dir, seed=seed)
        else:
            problem = spec.check(step, defined)
        if problem is not None:
            key, message = problem
            raise config_error(message, path, root, ("steps", i) + ((key,) if key else ()))
        defined |= set(spec.defines(step)) if spec.defines else set()
