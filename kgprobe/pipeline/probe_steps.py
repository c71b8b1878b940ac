"""Pipeline steps of the probing capability: ``concept_vectors`` (locate, validate, unlearn) and
``facts`` (BEAR-style fact probing),
registered with :func:`kgprobe.pipeline.registry.step`."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from kgprobe.pipeline.registry import (
    CheckContext,
    RunContext,
    StepCheckError,
    StepConfig,
    check_model,
    check_model_kind,
    problem_at,
    step,
)
from kgprobe.precision import DeviceMapName, DtypeName
from kgprobe.probe.facts import FactProbeOptions
from kgprobe.probe.run import DiscoverOptions, LocateOptions, UnlearnOptions, ValidateOptions

STAGES = ("locate", "validate", "unlearn")


class ConceptVectorsStep(StepConfig):
    type: Literal["concept_vectors"] = "concept_vectors"
    model: str = "smollm2-135m"
    concepts: list[Path] = Field(default_factory=list, description="concept files (none with the discover stage: "
                                 "its concepts.jsonl)")
    max_concepts: int | None = Field(default=None, ge=1, description="use only the first N concepts (file order)")
    out: Path
    few_shot: str | None = Field(default=None, description="prefix of every question (None: the concepts' default)")
    stages: list[Literal["discover", "locate", "validate", "unlearn"]] = Field(default_factory=lambda: list(STAGES))
    batch_size: int = Field(default=32, ge=1)
    #: the LM's weights: auto (bf16 on a GPU, fp32 on CPU), bf16, fp16, fp32
    dtype: DtypeName = "auto"
    #: none: the whole LM on the pipeline's device; auto: its layers spread over the GPUs (accelerate)
    device_map: DeviceMapName | None = None
    discover: DiscoverOptions = Field(default_factory=DiscoverOptions)
    locate: LocateOptions = Field(default_factory=LocateOptions)
    validate_: ValidateOptions = Field(default_factory=ValidateOptions, alias="validate")
    unlearn: UnlearnOptions = Field(default_factory=UnlearnOptions)


def _check(step: ConceptVectorsStep, ctx: CheckContext) -> None:
    from kgprobe.probe.run import load_concept_files
    from kgprobe.probe.unlearn import unlearner_names

    check_model(step.model)
    check_model_kind(step.model, ("causal-lm",), "a causal LM")  # reads its MLPs
    if "discover" in step.stages:
        if step.concepts or "locate" in step.stages:
            raise StepCheckError("stages", "the discover stage finds its own concepts: give no concepts and no "
                                           "locate stage with it")
    elif not step.concepts:
        raise StepCheckError("concepts", "give at least one concept file (or the discover stage)")
    with problem_at("concepts"):
        load_concept_files(step.concepts)
    unknown = [m for m in step.unlearn.methods if m not in unlearner_names()]
    if unknown:
        raise StepCheckError("unlearn", f"unknown unlearning method(s) {', '.join(unknown)}; "
                                        f"known: {', '.join(unlearner_names())}")


@step("concept_vectors", config=ConceptVectorsStep, check=_check,
      description="locate concept vectors in an LM's MLPs, validate them by ablation, compare unlearning methods")
def _run(step: ConceptVectorsStep, ctx: RunContext) -> None:
    from kgprobe.models import dtype_name, load_causal_lm
    from kgprobe.probe.concepts import FEW_SHOT
    from kgprobe.probe.run import discover, load_concept_files, locate, unlearn_all, validate

    concepts = load_concept_files(step.concepts)[: step.max_concepts]
    loaded = ctx.models.get(step.model)
    # unlearning trains the weights: its steps of about lr vanish when rounded into bf16 / fp16
    dtype = "fp32" if step.dtype == "auto" and "unlearn" in step.stages else step.dtype
    model, tokenizer = loaded if isinstance(loaded, tuple) else load_causal_lm(
        step.model, device=ctx.device, dtype=dtype, device_map=step.device_map)
    out = ctx.out_dir / step.out
    few_shot = FEW_SHOT if step.few_shot is None else step.few_shot
    common = dict(few_shot=few_shot, batch_size=step.batch_size, echo=ctx.echo)
    results = ctx.results.setdefault("concept_vectors", {}).setdefault(str(step.out), {})
    results["dtype"] = dtype_name(next(model.parameters()).dtype)
    if "discover" in step.stages:
        concepts = discover(model, tokenizer, out, options=step.discover, **common)[: step.max_concepts]
        results["discovered_concepts"] = len(concepts)
    if "locate" in step.stages:
        rows = locate(model, tokenizer, concepts, out, options=step.locate, **common)
        results["candidates"] = len(rows)
    if "validate" in step.stages:
        summary = validate(model, tokenizer, concepts, out, options=step.validate_, seed=ctx.seed, **common)
        # strict: validated of tested; null: beat_null of tested; original: the original-form table
        results["validation"] = {key: summary[key] for key in ("validated", "beat_null", "tested", "concepts",
                                                              "target_bleu", "target_rouge_l", "unrelated_bleu",
                                                              "unrelated_rouge_l") if key in summary}
    if "unlearn" in step.stages:
        results["unlearning"] = unlearn_all(model, tokenizer, concepts, out, options=step.unlearn, seed=ctx.seed,
                                            **common)



class FactsStep(StepConfig):
    """``kgprobe probe facts`` as a step: how much of a KG the model knows."""

    type: Literal["facts"] = "facts"
    model: str = "smollm2-135m"
    source: str = Field(description="a named fact set (countries, wordnet, nations), a KG path (with templates), "
                                    "a harvest run directory or a harvester relation file")
    templates: Path | None = Field(default=None, description="templates YAML (needed for a KG path)")
    out: Path
    model_kind: Literal["auto", "causal-lm", "masked-lm"] = "auto"
    dtype: DtypeName = "auto"
    device_map: DeviceMapName | None = None
    options: FactProbeOptions = Field(default_factory=FactProbeOptions)


def _check_facts(step: FactsStep, ctx: CheckContext) -> None:
    from kgprobe.probe.facts import fact_set_for

    check_model(step.model)
    check_model_kind(step.model, ("causal-lm", "masked-lm"), "a causal or masked LM")
    with problem_at("source"):
        fact_set_for(step.source, step.options, templates=step.templates)


@step("facts", config=FactsStep, check=_check_facts,
      description="rank each fact's true statement against statements with other objects (BEAR, lm-pub-quiz)")
def _run_facts(step: FactsStep, ctx: RunContext) -> None:
    from kgprobe.models import load_causal_lm, load_masked_lm
    from kgprobe.models.loaders import lm_kind
    from kgprobe.probe.facts import fact_set_for, probe_facts

    kind = lm_kind(step.model, step.model_kind)
    loaded = ctx.models.get(step.model)
    load = load_masked_lm if kind == "masked-lm" else load_causal_lm
    model, tokenizer = loaded if isinstance(loaded, tuple) else load(
        step.model, device=ctx.device, dtype=step.dtype, device_map=step.device_map)
    out = ctx.out_dir / step.out
    out.mkdir(parents=True, exist_ok=True)
    result = probe_facts(model, tokenizer, fact_set_for(step.source, step.options, templates=step.templates), out,
                         model_name=step.model, kind=kind, options=step.options, echo=ctx.echo)
    ctx.results.setdefault("facts", {})[str(step.out)] = result["metrics"]
