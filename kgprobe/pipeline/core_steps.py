"""The steps any pipeline may use, whatever the capability: ``load_model``, ``build_dataset``,
``load_kg``, ``kg_stats`` and ``save_kg``."""
from __future__ import annotations

import inspect
import json
import time
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import Field

from kgprobe.atomic import atomic_path
from kgprobe.errors import KgprobeError
from kgprobe.kg.formats import FORMATS, format_for, load_kg, save_kg
from kgprobe.models import MODELS
from kgprobe.pipeline.base import RunContext, StepConfig, StepSpec, _check_model, register


def _check_kg_ref(key: str, name: str, defined: set[str]) -> tuple[str, str] | None:
    if name not in defined:
        known = ", ".join(sorted(defined)) or "none yet"
        return key, f"KG {name!r} is not defined by an earlier step (defined: {known})"
    return None


def _check_format(key: str, path: Path, fmt: str | None) -> tuple[str, str] | None:
    """``("format", why)`` for an unknown format name, ``(key, why)`` for an unusable suffix."""
    if fmt is not None:
        return None if fmt in FORMATS else ("format", f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    try:
        format_for(path)
    except KgprobeError as err:
        return key, str(err)
    return None


# ------------------------------------------------------------------ load_model
class LoadModel(StepConfig):
    type: Literal["load_model"] = "load_model"
    model: str
    kind: Literal["causal-lm", "masked-lm", "sentence-encoder"] | None = None
    as_: str | None = Field(default=None, alias="as")


def _run_load_model(step: LoadModel, ctx: RunContext) -> None:
    from kgprobe.models import load_causal_lm, load_masked_lm, load_sentence_encoder

    kind = step.kind or (MODELS[step.model].kind if step.model in MODELS else "causal-lm")
    loader = {"causal-lm": load_causal_lm, "masked-lm": load_masked_lm,
              "sentence-encoder": load_sentence_encoder}[kind]
    start = time.perf_counter()
    loaded = loader(step.model, device=ctx.device)
    model = loaded[0] if isinstance(loaded, tuple) else loaded
    params = sum(p.numel() for p in model.parameters())
    ctx.models[step.as_ or step.model] = loaded
    ctx.echo(f"loaded {kind} {step.model}: {params / 1e6:.1f}M parameters on {ctx.device} "
             f"in {time.perf_counter() - start:.1f}s")
    ctx.results.setdefault("models", {})[step.as_ or step.model] = {"kind": kind, "parameters": params}


def _check_load_model(step: LoadModel, defined: set[str]):
    if (problem := _check_model(step.model)) is not None:
        return "model", problem
    spec = MODELS.get(step.model)
    if spec is not None and step.kind is not None and step.kind != spec.kind:
        return "kind", f"model {step.model!r} is a {spec.kind}, not a {step.kind}"
    return None


register("load_model", StepSpec(
    config=LoadModel, run=_run_load_model, check=_check_load_model,
    description="load a model by registry name, local directory or hub id",
))


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


def _reusable(step: BuildDataset, out_dir: Path | None, seed: int) -> Path | None:
    from kgprobe.kg.build import find_built

    if step.out is None or out_dir is None or not step.reuse:
        return None
    seed = seed if step.seed is None else step.seed
    return find_built(step.dataset, out_dir / step.out, inductive=step.inductive, seed=seed, options=step.options)


def _check_dataset(step: BuildDataset, defined: set[str], *, out_dir: Path | None = None, seed: int = 0,
                   earlier: Sequence[Any] = ()):
    from kgprobe.kg.datasets import DATASETS

    spec = DATASETS.get(step.dataset)
    if spec is None:
        return "dataset", f"unknown dataset {step.dataset!r} (known: {', '.join(sorted(DATASETS))})"
    takes = [n for n, p in inspect.signature(spec.build).parameters.items() if p.kind is p.KEYWORD_ONLY]
    for key, value in step.options.items():
        if key not in takes:  # the builder would fail with a TypeError after the earlier steps ran
            known = f"it takes: {', '.join(takes)}" if takes else "it takes none"
            return ("options", key), f"unknown option for dataset {step.dataset!r} ({known})"
        if not isinstance(value, str):
            return ("options", key), f"must be a path, got {type(value).__name__}"
    if _reusable(step, out_dir, seed) is not None:
        return None  # built before: its sources are not needed again
    missing = spec.available()
    return ("dataset", missing) if missing else None


def _dataset_names(step: BuildDataset) -> list[str]:
    base = step.as_ or step.dataset
    return [base] + ([f"{base}.train", f"{base}.valid", f"{base}.test"] if step.inductive else [])


def _run_build_dataset(step: BuildDataset, ctx: RunContext) -> None:
    from kgprobe.kg.build import build_and_save, load_built, split_parts
    from kgprobe.kg.datasets import build_dataset
    from kgprobe.kg.split import inductive_split

    seed = ctx.seed if step.seed is None else step.seed
    start = time.perf_counter()
    names = _dataset_names(step)
    built = _reusable(step, ctx.out_dir, ctx.seed)
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


register("build_dataset", StepSpec(
    config=BuildDataset, run=_run_build_dataset, check=_check_dataset, defines=_dataset_names, check_sees_run=True,
    description="build a named dataset (optionally with a BLP inductive split)",
))


# ------------------------------------------------------------------ load_kg
class LoadKG(StepConfig):
    type: Literal["load_kg"] = "load_kg"
    path: Path
    as_: str = Field(alias="as")
    format: str | None = None


def _check_load_kg(step: LoadKG, defined: set[str]):
    if not step.path.exists():
        return "path", f"no such file or directory: {step.path}"
    if (problem := _check_format("path", step.path, step.format)) is not None:
        return problem
    try:  # read it now: a malformed file fails the check, with the file's own file:line message
        load_kg(step.path, format=step.format)
    except KgprobeError as err:
        return "path", str(err)
    return None


def _run_load_kg(step: LoadKG, ctx: RunContext) -> None:
    ctx.kgs[step.as_] = load_kg(step.path, format=step.format)
    ctx.echo(f"loaded KG {step.as_} from {step.path}")


register("load_kg", StepSpec(
    config=LoadKG, run=_run_load_kg, check=_check_load_kg, defines=lambda s: [s.as_],
    description="load a KG file or directory (tsv, jsonl, ttl, nt, graphml, KG dir)",
))


# ------------------------------------------------------------------ kg_stats
class KGStats(StepConfig):
    type: Literal["kg_stats"] = "kg_stats"
    kg: str
    out: Path | None = None


def _run_kg_stats(step: KGStats, ctx: RunContext) -> None:
    stats = ctx.kgs[step.kg].statistics()
    ctx.echo(json.dumps(stats, indent=2))
    ctx.results.setdefault("statistics", {})[step.kg] = stats
    if step.out is not None:
        with atomic_path(ctx.out_dir / step.out) as tmp:
            tmp.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")


register("kg_stats", StepSpec(
    config=KGStats, run=_run_kg_stats, check=lambda s, d: _check_kg_ref("kg", s.kg, d),
    description="print a KG's statistics (and write them as JSON)",
))


# ------------------------------------------------------------------ save_kg
class SaveKG(StepConfig):
    type: Literal["save_kg"] = "save_kg"
    kg: str
    out: Path
    format: str | None = None


def _check_save_kg(step: SaveKG, defined: set[str], *, out_dir: Path, seed: int = 0, earlier: Sequence[Any] = ()):
    if (ref := _check_kg_ref("kg", step.kg, defined)) is not None:
        return ref
    target = out_dir / step.out
    if (problem := _check_format("out", target, step.format)) is not None:
        return problem
    fmt = step.format or format_for(target)
    if fmt == "dir" and target.exists() and not target.is_dir():
        return "out", f"{target} is a file; a KG directory cannot replace it"
    if fmt != "dir" and target.is_dir():
        return "out", f"{target} is a directory; cannot write a {fmt} file there"
    return None


def _run_save_kg(step: SaveKG, ctx: RunContext) -> None:
    start = time.perf_counter()
    path = save_kg(ctx.kgs[step.kg], ctx.out_dir / step.out, format=step.format)
    ctx.echo(f"wrote {step.kg} to {path} in {time.perf_counter() - start:.1f}s")


register("save_kg", StepSpec(
    config=SaveKG, run=_run_save_kg, check=_check_save_kg, check_sees_run=True,
    description="write a KG as a KG dir, tsv, jsonl, Turtle, N-Triples or GraphML",
))
