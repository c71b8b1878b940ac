"""Pipeline steps of the harvest capability: ``harvest`` and ``harvest_eval`` (registered with
:func:`kgprobe.pipeline.registry.step`)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, create_model

from kgprobe.errors import KgprobeError
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

#: options the step sets itself (``seed`` is the pipeline's), so not allowed again under ``options``
_STEP_LEVEL = ("model", "top_k", "paraphrases", "seed")

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
    relation: Path
    out: Path
    model: str = "smollm2-135m"
    top_k: int = Field(default=100, ge=1)
    paraphrases: int = Field(default=0, ge=0)
    resume: bool = True
    batch_size: int = Field(default=64, ge=1)
    options: HarvestStepOptions = Field(default_factory=HarvestStepOptions)

    def harvest_options(self, seed: int) -> HarvestOptions:
        """The run's options: only the keys the file gives are passed on, so config.json (which
        lists the given search/weighting keys only) matches runs started before this model."""
        given = {name: getattr(self.options, name) for name in self.options.model_fields_set}
        return HarvestOptions(model=self.model, top_k=self.top_k, paraphrases=self.paraphrases, seed=seed, **given)


def _check_harvest(step: HarvestStep, ctx: CheckContext) -> None:
    from kgprobe.harvest.relation import load_relation

    check_model(step.model)
    check_model_kind(step.model, ("causal-lm", "masked-lm"), "a causal or masked LM")
    kind = step.options.model_kind
    if kind != "auto":
        check_model_kind(step.model, (kind,), KIND_WORDS[kind], key=("options", "model_kind"))
    with problem_at("relation"):
        load_relation(step.relation)


@step("harvest", config=HarvestStep, check=_check_harvest,
      description="harvest a ranked KG of one relation from an LM (BertNet-style)")
def _run_harvest(step: HarvestStep, ctx: RunContext) -> None:
    from kgprobe.harvest.run import harvest

    out = ctx.out_dir / step.out
    options = step.harvest_options(ctx.seed)
    loaded = ctx.models.get(step.model)
    rows = harvest(step.relation, out, options=options, device=str(ctx.device), batch_size=step.batch_size,
                   resume=step.resume and (out / "config.json").exists(), echo=ctx.echo,
                   loaded_model=loaded if isinstance(loaded, tuple) else None)
    ctx.results.setdefault("harvest", {})[str(step.out)] = {"tuples": len(rows)}


class HarvestEvalStep(StepConfig):
    type: Literal["harvest_eval"] = "harvest_eval"
    run: Path
    reference: str | None = None


def _check_harvest_eval(step: HarvestEvalStep, ctx: CheckContext) -> None:
    """The run comes from an earlier harvest step (or is there already), and a reference is known."""
    if step.reference is not None and (":" not in step.reference or not all(step.reference.rsplit(":", 1))):
        raise StepCheckError("reference", f"reference {step.reference!r}: expected DATASET:RELATION or "
                                          "KG_PATH:RELATION (e.g. countries:capital)")
    maker = ctx.made_by("harvest", step.run)
    if maker is None:
        if not (ctx.out_dir / step.run / "config.json").is_file():
            raise StepCheckError("run", f"no earlier harvest step writes {step.run}, and {ctx.out_dir / step.run} "
                                        "holds no harvest run")
        return
    if step.reference is None:
        from kgprobe.harvest.relation import load_relation

        if load_relation(maker.relation).reference is None:  # loaded fine by the harvest step's check
            raise StepCheckError("run", f"the relation of {step.run} ({maker.relation}) has no reference: set "
                                        "`reference:` in this step")


@step("harvest_eval", config=HarvestEvalStep, check=_check_harvest_eval,
      description="precision@k and coverage of a harvest run against a reference KG")
def _run_harvest_eval(step: HarvestEvalStep, ctx: RunContext) -> None:
    from kgprobe.harvest.run import evaluate_harvest, recorded_reference

    run_dir = ctx.out_dir / step.run
    if step.reference is None and recorded_reference(run_dir) is None:
        raise KgprobeError(f"harvest_eval: {run_dir} has no reference; set `reference:` in the step")
    result = evaluate_harvest(run_dir, step.reference)
    summary = {k: v for k, v in result.items() if k.startswith("precision") or k == "coverage"}
    ctx.echo(f"harvest_eval {step.run}: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if v is not None))
    ctx.results.setdefault("harvest_eval", {})[str(step.run)] = summary
