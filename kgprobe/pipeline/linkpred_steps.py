"""Pipeline step of the link-prediction capability: ``linkpred_train``.

``data`` is an inductive split directory: one written by an earlier ``build_dataset`` step with
``inductive: true`` and ``out:`` (a relative path is looked up under the pipeline's ``out_dir``
first), or an existing one. ``out`` is the run directory, under ``out_dir``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal


from kgprobe.errors import KgprobeError
from kgprobe.linkpred.run import LinkPredOptions
from kgprobe.pipeline.config import StepConfig
from kgprobe.pipeline.steps import RunContext, StepSpec, _check_model, register


class LinkPredTrainStep(StepConfig, LinkPredOptions):
    type: Literal["linkpred_train"] = "linkpred_train"
    data: Path
    out: Path


def _check_linkpred_train(step: LinkPredTrainStep, defined: set[str]):
    from kgprobe.linkpred.run import check_names

    for key in ("encoder", "scorer", "loss", "sampler"):
        try:
            check_names(**{key: getattr(step, key)})
        except KgprobeError as err:
            return key, str(err)
    if step.encoder == "transformer" and (problem := _check_model(step.model)) is not None:
        return "model", problem
    from kgprobe.linkpred.samplers import check_sampler_options

    try:
        check_sampler_options(step.sampler, step.sampler_options)
    except KgprobeError as err:
        return "sampler_options", str(err)
    if step.sampler in ("lemon", "knn-hard"):
        frozen = step.sampler_options.get("model", "minilm-l6")
        if (problem := _check_model(frozen)) is not None:
            return "sampler_options", problem
    made_by_a_step = any(name.endswith(".train") for name in defined)
    if not made_by_a_step and not step.data.is_dir():
        return "data", (f"no split directory {step.data} and no earlier build_dataset step with "
                        "inductive: true makes one")
    return None


def _run_linkpred_train(step: LinkPredTrainStep, ctx: RunContext) -> None:
    from kgprobe.linkpred.run import LinkPredConfig, run_training

    data = step.data
    if not data.is_absolute() and (ctx.out_dir / data).is_dir():
        data = ctx.out_dir / data
    options = step.model_dump(exclude={"type", "data", "out"})
    cfg = LinkPredConfig(data=data, out=ctx.out_dir / step.out, device=str(ctx.device), seed=ctx.seed, **options)
    summary = run_training(cfg, echo=ctx.echo)
    keep = {k: v for k, v in summary.items()
            if k in ("best_epoch", "epochs_run") or k.startswith("both.realistic.")}
    ctx.results.setdefault("linkpred", {})[str(step.out)] = keep


register("linkpred_train", StepSpec(
    config=LinkPredTrainStep, run=_run_linkpred_train, check=_check_linkpred_train,
    description="train and test a BLP-style link-prediction model on an inductive split",
))
