"""Pipeline step of the link-prediction capability: ``linkpred_train``.

``data`` is an inductive split directory: one written by an earlier ``build_dataset`` step with
``inductive: true`` and ``out:`` (a relative path is looked up under the pipeline's ``out_dir``
first), or an existing one. ``out`` is the run directory, under ``out_dir``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

from kgprobe.errors import KgprobeError
from kgprobe.linkpred.run import LinkPredOptions
from kgprobe.pipeline.base import RunContext, StepConfig, StepSpec, _check_model, _check_model_kind, register
from kgprobe.pipeline.core_steps import BuildDataset, _reusable


class LinkPredTrainStep(StepConfig, LinkPredOptions):
    type: Literal["linkpred_train"] = "linkpred_train"
    data: Path
    out: Path


def _check_linkpred_train(step: LinkPredTrainStep, defined: set[str], *, out_dir: Path, seed: int = 0,
                          earlier: Sequence[Any] = ()):
    from kgprobe.linkpred.run import check_names

    for key in ("encoder", "scorer", "loss", "sampler"):
        try:
            check_names(**{key: getattr(step, key)})
        except KgprobeError as err:
            return key, str(err)
    if (problem := _check_component_options(step)) is not None:
        return problem
    if step.encoder == "transformer":
        if (problem := _check_model(step.model)) is not None:
            return "model", problem
        # the encoder is a BERT-style text encoder (a masked LM's body will do)
        if (problem := _check_model_kind(step.model, ("sentence-encoder", "masked-lm"), "a sentence encoder")):
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
    return _check_split(step, out_dir, seed, earlier)


def _check_component_options(step: LinkPredTrainStep):
    """Scorer and loss options, by building the two (small, no data): a wrong option name or
    value fails here, not when training starts."""
    from kgprobe.linkpred.losses import get_loss
    from kgprobe.linkpred.scorers import get_scorer

    for key, make, name, options in (("scorer_options", get_scorer, step.scorer, step.scorer_options),
                                     ("loss_options", get_loss, step.loss, step.loss_options)):
        try:
            make(name, **options)
        except KgprobeError as err:
            return key, str(err)
        except (TypeError, ValueError) as err:  # a value of the wrong type, e.g. tau: x
            return key, f"{name}: bad option value ({err})"
    return None


def _split_dir(data: Path, out_dir: Path) -> Path:
    """Where the run reads the split: under ``out_dir`` when it is there, else as given."""
    return out_dir / data if not data.is_absolute() and (out_dir / data).is_dir() else data


def _check_split(step: LinkPredTrainStep, out_dir: Path, seed: int, earlier: Sequence[Any]):
    """The split exists or an earlier step makes it; one that exists (and is not about to be
    rebuilt) must have valid and test triples, or the run fails only after training."""
    maker = next((s for s in reversed(earlier) if isinstance(s, BuildDataset) and s.inductive
                  and s.out is not None and out_dir / s.out == out_dir / step.data), None)
    if maker is None and not _split_dir(step.data, out_dir).is_dir():
        return "data", (f"no split directory {step.data} and no earlier build_dataset step with "
                        "inductive: true makes one")
    if maker is not None and _reusable(maker, out_dir, seed) is None:
        return None  # built afresh by that step: nothing to look at yet
    return _check_split_parts(_split_dir(step.data, out_dir))


def _check_split_parts(split: Path):
    from kgprobe.kg.formats.tsv import load_dir  # the parts are KG directories; load_dir warns of nothing
    from kgprobe.linkpred.run import PARTS

    missing = [p for p in PARTS if not (split / p).is_dir() or not (split / f"{p}_entities.txt").is_file()]
    if missing:
        return "data", (f"{split}: not an inductive split directory: no {missing[0]}/ or "
                        f"{missing[0]}_entities.txt")
    for part in ("valid", "test"):  # small next to train, so cheap to read here
        try:
            triples = load_dir(split / part).num_triples
        except KgprobeError as err:
            return "data", str(err)
        except OSError as err:
            return "data", f"{split / part}: cannot read: {err.strerror or err}"
        if triples == 0:
            words = "validation" if part == "valid" else "test"  # as load_split_data says it at run time
            return "data", f"{split / part}: the split has no {words} triples"
    return None


def _run_linkpred_train(step: LinkPredTrainStep, ctx: RunContext) -> None:
    from kgprobe.linkpred.run import LinkPredConfig, run_training

    data = _split_dir(step.data, ctx.out_dir)
    options = step.model_dump(exclude={"type", "data", "out"})
    cfg = LinkPredConfig(data=data, out=ctx.out_dir / step.out, device=str(ctx.device), seed=ctx.seed, **options)
    summary = run_training(cfg, echo=ctx.echo)
    keep = {k: v for k, v in summary.items()
            if k in ("best_epoch", "epochs_run") or k.startswith("both.realistic.")}
    ctx.results.setdefault("linkpred", {})[str(step.out)] = keep


register("linkpred_train", StepSpec(
    config=LinkPredTrainStep, run=_run_linkpred_train, check=_check_linkpred_train, check_sees_run=True,
    description="train and test a BLP-style link-prediction model on an inductive split",
))
