"""Pipeline steps of the link-prediction capability: ``linkpred_train`` and ``linkpred_evaluate``
(registered with :func:`kgprobe.pipeline.registry.step`).

``data`` is an inductive split directory: one written by an earlier ``build_dataset`` step with
``inductive: true`` and ``out:`` (a relative path is looked up under the pipeline's ``out_dir``
first), or an existing one. ``linkpred_train`` writes its run directory to ``out``, under
``out_dir``; ``linkpred_evaluate`` reads one (``run``: the ``out`` of an earlier
``linkpred_train`` step, or an existing run directory, looked up like ``data``) and writes its
metrics as JSON under ``out_dir``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from kgprobe.linkpred.run import LinkPredOptions
from kgprobe.pipeline.registry import (
    CheckContext,
    RunContext,
    StepCheckError,
    StepConfig,
    check_device_name,
    check_model,
    check_model_kind,
    problem_at,
    reused_build,
    step,
)


def _under_out_dir(path: Path, out_dir: Path) -> Path:
    """Where a step reads ``path``: under ``out_dir`` when it is a directory there, else as given."""
    return out_dir / path if not path.is_absolute() and (out_dir / path).is_dir() else path


def _check_split(data: Path, ctx: CheckContext) -> None:
    """The split exists or an earlier step makes it; one that exists (and is not about to be
    rebuilt) must have valid and test triples, or the run fails only after training."""
    maker = ctx.made_by("build_dataset", data, when=lambda s: s.inductive)
    if maker is None and not _under_out_dir(data, ctx.out_dir).is_dir():
        raise StepCheckError("data", f"no split directory {data} and no earlier build_dataset step with "
                                     "inductive: true makes one")
    if maker is not None and reused_build(maker, ctx.out_dir, ctx.seed) is None:
        return  # built afresh by that step: nothing to look at yet
    _check_split_parts(_under_out_dir(data, ctx.out_dir))


def _check_split_parts(split: Path) -> None:
    from kgprobe.kg.formats.tsv import load_dir  # the parts are KG directories; load_dir warns of nothing
    from kgprobe.linkpred.run import PARTS

    missing = [p for p in PARTS if not (split / p).is_dir() or not (split / f"{p}_entities.txt").is_file()]
    if missing:
        raise StepCheckError("data", f"{split}: not an inductive split directory: no {missing[0]}/ or "
                                     f"{missing[0]}_entities.txt")
    for part in ("valid", "test"):  # small next to train, so cheap to read here
        try:
            with problem_at("data"):
                triples = load_dir(split / part).num_triples
        except OSError as err:
            raise StepCheckError("data", f"{split / part}: cannot read: {err.strerror or err}") from None
        if triples == 0:
            words = "validation" if part == "valid" else "test"  # as load_split_data says it at run time
            raise StepCheckError("data", f"{split / part}: the split has no {words} triples")


# ------------------------------------------------------------------ linkpred_train
class LinkPredTrainStep(StepConfig, LinkPredOptions):
    type: Literal["linkpred_train"] = "linkpred_train"
    data: Path
    out: Path


def _check_linkpred_train(step: LinkPredTrainStep, ctx: CheckContext) -> None:
    """Known component names and option values, the models the components load, the split."""
    from kgprobe.linkpred.encoders import ENCODER_REGISTRY
    from kgprobe.linkpred.run import check_component_option_values, check_names
    from kgprobe.linkpred.samplers import SAMPLER_REGISTRY

    for key in ("encoder", "scorer", "loss", "sampler"):
        with problem_at(key):
            check_names(**{key: getattr(step, key)})
    for component in ("scorer", "loss"):
        with problem_at(f"{component}_options"):
            check_component_option_values(component, getattr(step, component), getattr(step, f"{component}_options"))
    options = step.model_dump()
    if (model := ENCODER_REGISTRY.lookup(step.encoder).loads_model(options)) is not None:
        check_model(model)
        # the encoder is a BERT-style text encoder (a masked LM's body will do)
        check_model_kind(model, ("sentence-encoder", "masked-lm"), "a sentence encoder")
    with problem_at("sampler_options"):
        check_component_option_values("sampler", step.sampler, step.sampler_options)
    if (model := SAMPLER_REGISTRY.lookup(step.sampler).loads_model(step.sampler_options)) is not None:
        check_model(model, key="sampler_options")
    _check_split(step.data, ctx)


@step("linkpred_train", config=LinkPredTrainStep, check=_check_linkpred_train,
      description="train and test a BLP-style link-prediction model on an inductive split")
def _run_linkpred_train(step: LinkPredTrainStep, ctx: RunContext) -> None:
    from kgprobe.linkpred.run import LinkPredConfig, run_training

    data = _under_out_dir(step.data, ctx.out_dir)
    options = step.model_dump(exclude={"type", "data", "out"})
    cfg = LinkPredConfig(data=data, out=ctx.out_dir / step.out, device=str(ctx.device), seed=ctx.seed, **options)
    summary = run_training(cfg, echo=ctx.echo)
    keep = {k: v for k, v in summary.items()
            if k in ("best_epoch", "epochs_run") or k.startswith("both.realistic.")}
    ctx.results.setdefault("linkpred", {})[str(step.out)] = keep


# ------------------------------------------------------------------ linkpred_evaluate
SPLITS = ("valid", "test")


class LinkPredEvaluateStep(StepConfig):
    type: Literal["linkpred_evaluate"] = "linkpred_evaluate"
    run: Path
    data: Path
    split: str = "test"
    batch_size: int = Field(default=256, ge=1)
    device: str | None = None  # None: the pipeline's
    out: Path | None = None  # the metrics file under out_dir; None: RUN_SPLIT_metrics.json

    def metrics_file(self) -> Path:
        return self.out if self.out is not None else Path(f"{self.run.name}_{self.split}_metrics.json")


def _check_linkpred_evaluate(step: LinkPredEvaluateStep, ctx: CheckContext) -> None:
    """A known split name and device; the run and the split exist or earlier steps make them."""
    from kgprobe.linkpred.run import RUN_FILE

    if step.split not in SPLITS:
        raise StepCheckError("split", f"unknown split {step.split!r}; choose valid or test")
    if step.device is not None:
        check_device_name(step.device, key="device")
    if ctx.made_by("linkpred_train", step.run) is None:
        run_dir = _under_out_dir(step.run, ctx.out_dir)
        if not (run_dir / RUN_FILE).is_file():
            raise StepCheckError("run", f"no earlier linkpred_train step writes {step.run}, and {run_dir} holds "
                                        "no linkpred run")
    _check_split(step.data, ctx)
    target = ctx.out_dir / step.metrics_file()
    if target.is_dir():
        raise StepCheckError("out" if step.out is not None else "run",
                             f"{target} is a directory; cannot write the metrics file there")


@step("linkpred_evaluate", config=LinkPredEvaluateStep, check=_check_linkpred_evaluate,
      description="filtered rank metrics of a trained link-prediction run on the valid or test split")
def _run_linkpred_evaluate(step: LinkPredEvaluateStep, ctx: RunContext) -> None:
    from kgprobe.atomic import write_json
    from kgprobe.linkpred.run import evaluate_run

    run_dir, data = _under_out_dir(step.run, ctx.out_dir), _under_out_dir(step.data, ctx.out_dir)
    metrics = evaluate_run(run_dir, data, split=step.split, device=step.device or str(ctx.device),
                           batch_size=step.batch_size)
    target = ctx.out_dir / step.metrics_file()
    write_json(target, metrics)
    ctx.results.setdefault("linkpred_evaluate", {}).setdefault(str(step.run), {})[step.split] = metrics
    shown = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("both.realistic.mrr", "both.realistic.hits_at_10")
                      if isinstance(metrics.get(k), float))
    ctx.echo(f"linkpred_evaluate {step.run} on {step.split}: {shown or 'done'}; metrics in {target}")

