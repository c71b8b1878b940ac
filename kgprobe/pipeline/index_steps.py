"""Pipeline step of the embeddings capability: ``embed``, the same call as ``kgprobe embed``
(:func:`kgprobe.index.build.build_embeddings`) on a KG an earlier step made.

It writes the embeddings directory to ``out`` under the pipeline's ``out_dir`` (``embeddings``
unless said): vectors, ids, labels, meta.json, the index and, with ``clusters``, the k-means
clusters; ``kgprobe neighbors OUT_DIR/embeddings "query"`` searches it. A rerun of the pipeline
replaces that directory (it is this step's own output); a folder of other files there is refused
when the step starts, as ``kgprobe embed --out`` refuses it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from kgprobe.pipeline.registry import (
    CheckContext,
    RunContext,
    StepConfig,
    check_kg_defined,
    check_model,
    check_model_kind,
    step,
)


class EmbedStep(StepConfig):
    """The options of ``kgprobe embed``, by the same names (``--no-normalize`` is ``normalize: false``)."""

    type: Literal["embed"] = "embed"
    kg: str
    out: Path = Path("embeddings")
    model: str = "minilm-l6"
    text: Literal["label", "description", "both"] = "label"
    batch_size: int = Field(default=256, ge=1)
    fp16: bool = False
    normalize: bool = True
    # auto (the default, as in `kgprobe embed`): the kind chosen by size, see kgprobe.index.plan
    index: Literal["auto", "flat", "ivf", "hnsw", "none"] = "auto"
    metric: Literal["ip", "l2", "cosine"] = "ip"
    nlist: int | None = Field(default=None, ge=1)
    nprobe: int = Field(default=16, ge=1)
    hnsw_m: int = Field(default=32, ge=1)
    ef_search: int = Field(default=64, ge=1)
    clusters: int | None = Field(default=None, ge=1)
    taxonomy: str | list[str] | None = "auto"  # is-a relations to keep for taxonomy-aware search
    cache: bool = True  # read and write the encoder cache ($KGPROBE_HOME/embeddings)


def _check_embed(step: EmbedStep, ctx: CheckContext) -> None:
    check_kg_defined(step.kg, ctx, key="kg")
    check_model(step.model)
    check_model_kind(step.model, ("sentence-encoder",), "a sentence encoder")


@step("embed", config=EmbedStep, check=_check_embed,
      description="embed a KG's entities with a sentence encoder and index them (as kgprobe embed)")
def _run_embed(step: EmbedStep, ctx: RunContext) -> None:
    from kgprobe.index.build import build_embeddings

    options = step.model_dump(exclude={"type", "kg", "out"})
    result = build_embeddings(ctx.kgs[step.kg], out=ctx.out_dir / step.out, device=ctx.device, seed=ctx.seed,
                              **options)
    ctx.echo(f"embedded {result.entities} entities of {step.kg} ({result.unique_texts} distinct texts, "
             f"dim {result.dim}, index {result.index}) into {result.out} in {result.seconds:.1f}s")
    ctx.results.setdefault("embed", {})[str(step.out)] = {
        "entities": result.entities, "dim": result.dim, "index": result.index, "clusters": result.clusters,
        "taxonomy": result.taxonomy, "cache_hit": result.cache_hit}
