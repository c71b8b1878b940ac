"""The steps any pipeline may use, whatever the capability: ``load_model``, ``build_dataset``,
``load_kg``, ``kg_stats`` and ``save_kg``.

Each is registered with :func:`kgprobe.pipeline.registry.step` (see there how to add one)."""
from __future__ import annotations

import inspect
import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from kgprobe.atomic import atomic_path
from kgprobe.kg.formats import format_for, load_kg, save_kg
from kgprobe.models import MODELS
from kgprobe.pipeline.registry import (
    CheckContext,
    RunContext,
    StepCheckError,
    StepConfig,
    check_kg_defined,
    check_kg_format,
    check_model,
    problem_at,
    reused_build,
    step,
)
from kgprobe.precision import DeviceMapName, DtypeName


# ------------------------------------------------------------------ load_model
class LoadModel(StepConfig):
    type: Literal["load_model"] = "load_model"
    model: str
    kind: Literal["causal-lm", "masked-lm", "sentence-encoder"] | None = None
    as_: str | None = Field(default=None, alias="as")
    #: causal and masked LMs: the weights' dtype (auto: bf16 on a GPU, fp32 on CPU)
    dtype: DtypeName = "auto"
    #: causal and masked LMs: none (all on the pipeline's device) or auto (layers spread by accelerate)
    device_map: DeviceMapName | None = None


def _check_load_model(step: LoadModel, ctx: CheckContext) -> None:
    check_model(step.model)
    spec = MODELS.get(step.model)
    if spec is not None and step.kind is not None and step.kind != spec.kind:
        raise StepCheckError("kind", f"model {step.model!r} is a {spec.kind}, not a {step.kind}")


@step("load_model", config=LoadModel, check=_check_load_model,
      description="load a model by registry name, local directory or hub id")
def _run_load_model(step: LoadModel, ctx: RunContext) -> None:
    from kgprobe.models import dtype_name, load_causal_lm, load_masked_lm, load_sentence_encoder

    kind = step.kind or (MODELS[step.model].kind if step.model in MODELS else "causal-lm")
    loader = {"causal-lm": load_causal_lm, "masked-lm": load_masked_lm,
              "sentence-encoder": load_sentence_encoder}[kind]
    start = time.perf_counter()
    lm = {} if kind == "sentence-encoder" else {"dtype": step.dtype, "device_map": step.device_map}
    loaded = loader(step.model, device=ctx.device, **lm)
    model = loaded[0] if isinstance(loaded, tuple) else loaded
    params = sum(p.numel() for p in model.parameters())
    dtype = dtype_name(next(model.parameters()).dtype)
    where = getattr(model, "hf_device_map", None)
    ctx.models[step.as_ or step.model] = loaded
    ctx.echo(f"loaded {kind} {step.model}: {params / 1e6:.1f}M parameters ({dtype}) on "
             f"{'a device map' if where else ctx.device} in {time.perf_counter() - start:.1f}s")
    ctx.results.setdefault("models", {})[step.as_ or step.model] = {"kind": kind, "parameters": params,
                                                                   "dtype": dtype, "device_map": where}


# ------------------------------------------------------------------ build_dataset
class BuildDataset(StepConfig):
    type: Literal["build_dataset"] = "build_dataset"
    dataset: str
    as_: str | None = Field(default=None, alias="as")
    inductive: bool = False
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    out: Path | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    reuse: bool = True  # an ``out`` directory holding this very build (build.json) is loaded, not rebuilt


def _check_dataset(step: BuildDataset, ctx: CheckContext) -> None:
    from kgprobe.kg.datasets import DATASETS

    spec = DATASETS.get(step.dataset)
    if spec is None:
        raise StepCheckError("dataset", f"unknown dataset {step.dataset!r} (known: {', '.join(sorted(DATASETS))})")
    takes = [n for n, p in inspect.signature(spec.build).parameters.items() if p.kind is p.KEYWORD_ONLY]
    for key, value in step.options.items():
        if key not in takes:  # the builder would fail with a TypeError after the earlier steps ran
            known = f"it takes: {', '.join(takes)}" if takes else "it takes none"
            raise StepCheckError(("options", key), f"unknown option for dataset {step.dataset!r} ({known})")
        if not isinstance(value, str):
            raise StepCheckError(("options", key), f"must be a path, got {type(value).__name__}")
    if reused_build(step, ctx.out_dir, ctx.seed) is not None:
        return  # built before: its sources are not needed again
    missing = spec.available()
    if missing:
        raise StepCheckError("dataset", missing)


def _dataset_names(step: BuildDataset) -> list[str]:
    base = step.as_ or step.dataset
    return [base] + ([f"{base}.train", f"{base}.valid", f"{base}.test"] if step.inductive else [])


@step("build_dataset", config=BuildDataset, check=_check_dataset, defines=_dataset_names,
      description="build a named dataset (optionally with a BLP inductive split)")
def _run_build_dataset(step: BuildDataset, ctx: RunContext) -> None:
    from kgprobe.kg.build import build_and_save, load_built, split_parts
    from kgprobe.kg.datasets import build_dataset
    from kgprobe.kg.split import inductive_split

    seed = ctx.seed if step.seed is None else step.seed
    start = time.perf_counter()
    names = _dataset_names(step)
    built = reused_build(step, ctx.out_dir, ctx.seed)
    if built is not None:
        kg, parts = load_built(built, inductive=step.inductive)
        ctx.kgs[names[0]] = kg
        for name, graph in zip(names[1:], parts.values()):
            ctx.kgs[name] = graph
        ctx.echo(f"reused {step.dataset} from {built} (its build.json matches; reuse: false rebuilds): "
                 f"{kg.num_entities} entities, {kg.num_triples} triples")
        return
    if step.out is not None:
        kg, split = build_and_save(step.dataset, ctx.out_dir / step.out, inductive=step.inductive,
                                   seed=seed, options=step.options)
    else:
        kg = build_dataset(step.dataset, **step.options)
        split = inductive_split(kg, seed=seed) if step.inductive else None
    ctx.kgs[names[0]] = kg
    if split is not None:
        for name, (graph, _) in zip(names[1:], split_parts(split).values()):
            ctx.kgs[name] = graph
    ctx.echo(f"built {step.dataset}: {kg.num_entities} entities, {kg.num_relations} relations, "
             f"{kg.num_triples} triples in {time.perf_counter() - start:.1f}s")


# ------------------------------------------------------------------ load_kg
class LoadKG(StepConfig):
    type: Literal["load_kg"] = "load_kg"
    path: Path
    as_: str = Field(alias="as")
    format: str | None = None


def _check_load_kg(step: LoadKG, ctx: CheckContext) -> None:
    if not step.path.exists():
        raise StepCheckError("path", f"no such file or directory: {step.path}")
    check_kg_format(step.path, step.format, key="path")
    # read it now: a malformed file fails the check, with the file's own file:line message
    with problem_at("path"):
        load_kg(step.path, format=step.format)


@step("load_kg", config=LoadKG, check=_check_load_kg, defines=lambda s: [s.as_],
      description="load a KG file or directory (tsv, jsonl, ttl, nt, graphml, KG dir)")
def _run_load_kg(step: LoadKG, ctx: RunContext) -> None:
    ctx.kgs[step.as_] = load_kg(step.path, format=step.format)
    ctx.echo(f"loaded KG {step.as_} from {step.path}")


# ------------------------------------------------------------------ kg_stats
class KGStats(StepConfig):
    type: Literal["kg_stats"] = "kg_stats"
    kg: str
    out: Path | None = None


@step("kg_stats", config=KGStats, check=lambda s, ctx: check_kg_defined(s.kg, ctx, key="kg"),
      description="print a KG's statistics (and write them as JSON)")
def _run_kg_stats(step: KGStats, ctx: RunContext) -> None:
    stats = ctx.kgs[step.kg].statistics()
    ctx.echo(json.dumps(stats, indent=2))
    ctx.results.setdefault("statistics", {})[step.kg] = stats
    if step.out is not None:
        with atomic_path(ctx.out_dir / step.out) as tmp:
            tmp.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------ save_kg
class SaveKG(StepConfig):
    type: Literal["save_kg"] = "save_kg"
    kg: str
    out: Path
    format: str | None = None


def _check_save_kg(step: SaveKG, ctx: CheckContext) -> None:
    check_kg_defined(step.kg, ctx, key="kg")
    target = ctx.out_dir / step.out
    check_kg_format(target, step.format, key="out")
    fmt = step.format or format_for(target)
    if fmt == "dir" and target.exists() and not target.is_dir():
        raise StepCheckError("out", f"{target} is a file; a KG directory cannot replace it")
    if fmt != "dir" and target.is_dir():
        raise StepCheckError("out", f"{target} is a directory; cannot write a {fmt} file there")


@step("save_kg", config=SaveKG, check=_check_save_kg,
      description="write a KG as a KG dir, tsv, jsonl, Turtle, N-Triples or GraphML")
def _run_save_kg(step: SaveKG, ctx: RunContext) -> None:
    start = time.perf_counter()
    path = save_kg(ctx.kgs[step.kg], ctx.out_dir / step.out, format=step.format)
    ctx.echo(f"wrote {step.kg} to {path} in {time.perf_counter() - start:.1f}s")

