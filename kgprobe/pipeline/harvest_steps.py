"""Pipeline steps of the harvest capability: ``harvest`` and ``harvest_eval``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import ConfigDict, Field, create_model

from kgprobe.errors import KgprobeError
from kgprobe.harvest.run import HarvestOptions
from kgprobe.pipeline.base import (
    _KIND_WORDS,
    RunContext,
    StepConfig,
    StepSpec,
    _check_model,
    _check_model_kind,
    register,
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


def _check_harvest(step: HarvestStep, defined: set[str]):
    from kgprobe.harvest.relation import load_relation

    if (problem := _check_model(step.model)) is not None:
        return "model", problem
    if (problem := _check_model_kind(step.model, ("causal-lm", "masked-lm"), "a causal or masked LM")) is not None:
        return "model", problem
    kind = step.options.model_kind
    if kind != "auto" and (problem := _check_model_kind(step.model, (kind,), _KIND_WORDS[kind])) is not None:
        return ("options", "model_kind"), problem
    try:
        load_relation(step.relation)
    except KgprobeError as err:
        return "relation", str(err)
    return None


def _run_harvest(step: HarvestStep, ctx: RunContext) -> None:
    from kgprobe.harvest.run import harvest

    out = ctx.out_dir / step.out
    options = step.harvest_options(ctx.seed)
    loaded = ctx.models.get(step.model)
    rows = harvest(step.relation, out, options=options, device=str(ctx.device), batch_size=step.batch_size,
                   resume=step.resume and (out / "config.json").exists(), echo=ctx.echo,
                   loaded_model=loaded if isinstance(loaded, tuple) else None)
    ctx.results.setdefault("harvest", {})[str(step.out)] = {"tuples": len(rows)}


register("harvest", StepSpec(
    config=HarvestStep, run=_run_harvest, check=_check_harvest,
    description="harvest a ranked KG of one relation from an LM (BertNet-style)",
))


class HarvestEvalStep(StepConfig):
    type: Literal["harvest_eval"] = "harvest_eval"
    run: Path
    reference: str | None = None


def _run_harvest_eval(step: HarvestEvalStep, ctx: RunContext) -> None:
    import json

    from kgprobe.harvest.evaluate import evaluate_run

    run_dir = ctx.out_dir / step.run
    ref = json.loads((run_dir / "config.json").read_text())["relation"].get("reference")
    reference = step.reference or (f"{ref['kg']}:{ref['relation']}" if ref else None)
    if reference is None:
        raise KgprobeError(f"harvest_eval: {run_dir} has no reference; set `reference:` in the step")
    same = ref is not None and reference == f"{ref['kg']}:{ref['relation']}"
    result = evaluate_run(run_dir, reference, head_slot=ref["head"] if same else 0,
                          tail_slot=ref["tail"] if same else 1)
    summary = {k: v for k, v in result.items() if k.startswith("precision") or k == "coverage"}
    ctx.echo(f"harvest_eval {step.run}: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if v is not None))
    ctx.results.setdefault("harvest_eval", {})[str(step.run)] = summary


def _check_harvest_eval(step: HarvestEvalStep, defined: set[str], *, out_dir: Path, seed: int = 0,
                        earlier: Sequence[Any] = ()):
    """The run comes from an earlier harvest step (or is there already), and a reference is known."""
    if step.reference is not None and (":" not in step.reference or not all(step.reference.rsplit(":", 1))):
        return "reference", (f"reference {step.reference!r}: expected DATASET:RELATION or KG_PATH:RELATION "
                             "(e.g. countries:capital)")
    maker = next((s for s in reversed(earlier)
                  if isinstance(s, HarvestStep) and out_dir / s.out == out_dir / step.run), None)
    if maker is None:
        if not (out_dir / step.run / "config.json").is_file():
            return "run", (f"no earlier harvest step writes {step.run}, and {out_dir / step.run} holds no "
                           "harvest run")
        return None
    if step.reference is None:
        from kgprobe.harvest.relation import load_relation

        if load_relation(maker.relation).reference is None:  # loaded fine by the harvest step's check
            return "run", (f"the relation of {step.run} ({maker.relation}) has no reference: set `reference:` "
                           "in this step")
    return None


register("harvest_eval", StepSpec(
    config=HarvestEvalStep, run=_run_harvest_eval, check=_check_harvest_eval, check_sees_run=True,
    description="precision@k and coverage of a harvest run against a reference KG",
))
