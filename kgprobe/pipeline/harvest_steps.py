"""Pipeline steps of the harvest capability: ``harvest`` and ``harvest_eval``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from kgprobe.errors import KgprobeError
from kgprobe.pipeline.config import StepConfig
from kgprobe.pipeline.steps import RunContext, StepSpec, _check_model, register


class HarvestStep(StepConfig):
    type: Literal["harvest"] = "harvest"
    relation: Path
    out: Path
    model: str = "smollm2-135m"
    top_k: int = Field(default=100, ge=1)
    paraphrases: int = Field(default=0, ge=0)
    resume: bool = True
    batch_size: int = Field(default=64, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


def _check_harvest(step: HarvestStep, defined: set[str]):
    from kgprobe.harvest.relation import load_relation
    from kgprobe.harvest.run import HarvestOptions

    if (problem := _check_model(step.model)) is not None:
        return "model", problem
    try:
        load_relation(step.relation)
        HarvestOptions(model=step.model, top_k=step.top_k, paraphrases=step.paraphrases, **step.options)
    except KgprobeError as err:
        return "relation", str(err)
    except ValueError as err:  # pydantic's error for a bad option
        return "options", str(err).splitlines()[0] + ": " + " ".join(str(err).splitlines()[1:2])
    return None


def _run_harvest(step: HarvestStep, ctx: RunContext) -> None:
    from kgprobe.harvest.run import HarvestOptions, harvest

    out = ctx.out_dir / step.out
    options = HarvestOptions(model=step.model, top_k=step.top_k, paraphrases=step.paraphrases,
                             seed=ctx.seed, **step.options)
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


register("harvest_eval", StepSpec(
    config=HarvestEvalStep, run=_run_harvest_eval,
    description="precision@k and coverage of a harvest run against a reference KG",
))
