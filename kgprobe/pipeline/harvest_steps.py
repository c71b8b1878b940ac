"""Pipeline steps of the harvest capability: ``harvest`` and ``harvest_eval`` (registered with
:func:`kgprobe.pipeline.registry.step`)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, create_model

from kgprobe.errors import KgprobeError
from kgprobe.harvest.ensemble import ensemble_problem
from kgprobe.harvest.run import HarvestOptions
from kgprobe.pipeline.registry import (
    KIND_WORDS,
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

#: options the step sets itself (``seed`` is the pipeline's), so not allowed again under ``options``
_STEP_LEVEL = ("model", "top_k", "paraphrases", "seed", "dtype", "device_map")

# The rest of HarvestOptions, field for field (ranges, nested search/weighting models with
# extra="forbid"): a bad option is an error at its own line when the pipeline is loaded.
HarvestStepOptions = create_model(
    "HarvestStepOptions",
    __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
    **{name: (field.annotation, field) for name, field in HarvestOptions.model_fields.items()
       if name not in _STEP_LEVEL},
)


class HarvestStep(StepConfig):
    type: Literal["harvest"] = "harvest"
    #: a relation file, or a folder of them (several relations)
    relation: Path | None = None
    #: several relation files (or folders of them), harvested as one job (kgprobe.harvest.many)
    relations: list[Path] | None = Field(default=None, min_length=1)
    out: Path
    model: str = "smollm2-135m"
    top_k: int = Field(default=100, ge=1)
    paraphrases: int = Field(default=0, ge=0)
    #: the LM's weights: auto (bf16 on a GPU, fp32 on CPU), bf16, fp16, fp32
    dtype: DtypeName = "auto"
    #: none: the whole LM on the pipeline's device; auto: its layers spread over the GPUs (accelerate)
    device_map: DeviceMapName | None = None
    resume: bool = True
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"  # auto: planned from free memory
    options: HarvestStepOptions = Field(default_factory=HarvestStepOptions)
    # several relations only (see kgprobe.harvest.many.harvest_many)
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    gpus_per_relation: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    cpus_per_relation: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    max_retries: int = Field(default=3, ge=0)

    @property
    def many(self) -> bool:
        """Several relations: a ``relations`` list, or a folder in ``relation``."""
        return self.relations is not None or (self.relation is not None and self.relation.is_dir())

    def harvest_options(self, seed: int) -> HarvestOptions:
        """The run's options: only the keys the file gives are passed on, so config.json (which
        lists the given search/weighting keys only) matches runs started before this model."""
        given = {name: getattr(self.options, name) for name in self.options.model_fields_set}
        return HarvestOptions(model=self.model, top_k=self.top_k, paraphrases=self.paraphrases, seed=seed,
                              dtype=self.dtype, device_map=self.device_map, **given)


#: the options of a harvest of several relations
_MANY_ONLY = ("executor", "ray_address", "gpus_per_relation", "cpus_per_relation", "max_retries")


def _check_harvest(step: HarvestStep, ctx: CheckContext) -> None:
    from kgprobe.harvest.relation import load_relation

    check_model(step.model)
    check_model_kind(step.model, ("causal-lm", "masked-lm"), "a causal or masked LM")
    kind = step.options.model_kind
    if kind != "auto":
        check_model_kind(step.model, (kind,), KIND_WORDS[kind], key=("options", "model_kind"))
    for i, name in enumerate(step.options.ensemble):
        check_model(name, key=("options", "ensemble", i))
        check_model_kind(name, ("causal-lm", "masked-lm"), "a causal or masked LM", key=("options", "ensemble", i))
    problem = ensemble_problem(step.model, step.options.ensemble)
    if problem:  # HarvestOptions' own check, which the step's copy of its fields does not carry
        raise StepCheckError(("options", "ensemble"), problem)
    if (step.relation is None) == (step.relations is None):
        raise StepCheckError(None, "give `relation` (a relation file, or a folder of them) or `relations` "
                                   "(a list of relation files), one of the two")
    if step.many:
        _check_many(step)
        return
    with problem_at("relation"):
        load_relation(step.relation)
    given = [name for name in _MANY_ONLY if name in step.model_fields_set]
    if given:
        raise StepCheckError(given[0], "only for several relations (`relations`, or a folder in `relation`)")


def _check_many(step: HarvestStep) -> None:
    """Every relation file loads, names are unique, Ray is installed where it is asked for."""
    import importlib.util

    from kgprobe.harvest.many import load_relations, relation_files

    keys = [("relation",)] if step.relation is not None else [("relations", i) for i in range(len(step.relations))]
    paths = [step.relation] if step.relation is not None else step.relations
    for key, path in zip(keys, paths):
        with problem_at(key):
            load_relations(relation_files([path]))
    with problem_at(keys[0][0]):
        load_relations(relation_files(paths))
    if step.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise StepCheckError("executor", "Ray is not installed: pip install 'kgprobe[ray]'")


@step("harvest", config=HarvestStep, check=_check_harvest,
      description="harvest a ranked KG of one relation, or of several (one merged KG), from an LM (BertNet-style)")
def _run_harvest(step: HarvestStep, ctx: RunContext) -> None:
    from kgprobe.harvest.run import harvest

    if step.many:
        _run_harvest_many(step, ctx)
        return
    out = ctx.out_dir / step.out
    options = step.harvest_options(ctx.seed)
    loaded = ctx.models.get(step.model)
    rows = harvest(step.relation, out, options=options, device=str(ctx.device), batch_size=step.batch_size,
                   resume=step.resume and (out / "config.json").exists(), echo=ctx.echo,
                   loaded_model=loaded if isinstance(loaded, tuple) else None)
    ctx.results.setdefault("harvest", {})[str(step.out)] = {"tuples": len(rows)}


def _run_harvest_many(step: HarvestStep, ctx: RunContext) -> None:
    """:func:`kgprobe.harvest.many.harvest_many`; on Ray a relation runs on a GPU when it asks for a
    share of one (``gpus_per_relation``), else on CPU."""
    from kgprobe.harvest.many import harvest_many

    out = ctx.out_dir / step.out
    local = step.executor == "local"
    loaded = ctx.models.get(step.model) if local else None
    done = harvest_many([step.relation] if step.relation is not None else step.relations, out,
                        options=step.harvest_options(ctx.seed),
                        device=str(ctx.device) if local else "auto" if step.gpus_per_relation > 0 else "cpu",
                        batch_size=step.batch_size, executor=step.executor, ray_address=step.ray_address,
                        gpus_per_relation=step.gpus_per_relation, cpus_per_relation=step.cpus_per_relation,
                        max_retries=step.max_retries, resume=step.resume and (out / "job.json").exists(),
                        echo=ctx.echo, loaded_model=loaded if isinstance(loaded, tuple) else None)
    ctx.results.setdefault("harvest", {})[str(step.out)] = {
        "tuples": sum(r.tuples for r in done.relations), "kg_triples": done.triples,
        "relations": {r.relation: {"tuples": r.tuples, **r.precision} for r in done.relations}}


class HarvestEvalStep(StepConfig):
    type: Literal["harvest_eval"] = "harvest_eval"
    run: Path
    reference: str | None = None
    fact_probe: bool = Field(default=False, description="also the run model's fact-probe accuracy on the recorded "
                                                         "reference (kgprobe.pipeline.harvest_facts)")


def _check_harvest_eval(step: HarvestEvalStep, ctx: CheckContext) -> None:
    """The run comes from an earlier harvest step (or is there already), and a reference is known."""
    if step.reference is not None and (":" not in step.reference or not all(step.reference.rsplit(":", 1))):
        raise StepCheckError("reference", f"reference {step.reference!r}: expected DATASET:RELATION or "
                                          "KG_PATH:RELATION (e.g. countries:capital)")
    maker = ctx.made_by("harvest", step.run)
    if maker is not None and maker.many:
        raise StepCheckError("run", f"{step.run} is a harvest of several relations: give one of its run "
                                    f"directories, {step.run}/relations/NAME (its summary.tsv has their precision)")
    relation = _relation_of(maker) if maker is not None else _relation_in_job(step.run, ctx)
    if relation is None:
        if not (ctx.out_dir / step.run / "config.json").is_file():
            raise StepCheckError("run", f"no earlier harvest step writes {step.run}, and {ctx.out_dir / step.run} "
                                        "holds no harvest run")
        return
    if step.reference is None and relation.reference is None:
        raise StepCheckError("run", f"the relation of {step.run} ({relation.source}) has no reference: set "
                                    "`reference:` in this step")


def _relation_of(maker: HarvestStep):
    from kgprobe.harvest.relation import load_relation

    return load_relation(maker.relation)  # loaded fine by the harvest step's check


def _relation_in_job(run: Path, ctx: CheckContext):
    """The relation whose run directory ``run`` is, ``JOB/relations/NAME``, when an earlier harvest
    step of several relations writes ``JOB``; else None."""
    if run.parent.name != "relations":
        return None
    maker = ctx.made_by("harvest", run.parent.parent, when=lambda s: s.many)
    if maker is None:
        return None
    from kgprobe.harvest.many import load_relations, relation_files

    paths = [maker.relation] if maker.relation is not None else maker.relations
    return next((rel for rel in load_relations(relation_files(paths)) if rel.name == run.name), None)


@step("harvest_eval", config=HarvestEvalStep, check=_check_harvest_eval,
      description="precision@k and coverage of a harvest run against a reference KG")
def _run_harvest_eval(step: HarvestEvalStep, ctx: RunContext) -> None:
    from kgprobe.harvest.run import evaluate_harvest, recorded_reference

    run_dir = ctx.out_dir / step.run
    if step.reference is None and recorded_reference(run_dir) is None:
        raise KgprobeError(f"harvest_eval: {run_dir} has no reference; set `reference:` in the step")
    result = evaluate_harvest(run_dir, step.reference)
    summary = {k: v for k, v in result.items() if k.startswith("precision") or k == "coverage"}
    if step.fact_probe:
        from kgprobe.pipeline.harvest_facts import harvest_fact_probe

        probe = harvest_fact_probe(run_dir, device=ctx.device)
        summary.update({"fact_probe_accuracy": probe["accuracy"], "fact_probe_mrr": probe["mrr"]})
    ctx.echo(f"harvest_eval {step.run}: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if v is not None))
    ctx.results.setdefault("harvest_eval", {})[str(step.run)] = summary
