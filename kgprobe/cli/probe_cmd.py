"""``kgprobe probe ...``: concept vectors in an LM's MLP weights, their validation, unlearning.

Each command parses its options, calls one function of :mod:`kgprobe.probe.run` (``run_locate``,
``run_validate``, ``run_unlearn``, ``lens``) and prints its result.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from kgprobe.cli.options import DEVICE_MAP, DTYPE, SEED, OutputPath, options_model

_CONCEPTS = click.option("--concepts", "concept_files", multiple=True, type=click.Path(path_type=Path),
                         default=["kg_data/concepts/countries.jsonl"], show_default=True,
                         help="Concept JSONL file(s) (repeat the option for several).")
_MAX = click.option("--max-concepts", type=click.IntRange(min=1), default=None,
                    help="Use only the first N concepts (file order); keep it the same for every stage.")
_OUT = click.option("--out", type=OutputPath(), required=True, help="Run directory (shared by the stages).")
_MODEL = click.option("--model", default="smollm2-135m", show_default=True,
                      help="Causal LM: registry name, local directory, .gguf file or hub id.")
_DEVICE = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
_FEW_SHOT = click.option("--few-shot", default=None, help="Prefix of every question (default: the concepts' own).")


def _echo(line: str) -> None:
    """A stage's progress lines go to stderr (stdout is for the result)."""
    click.echo(line, err=True)


def _stage_options(fn):
    """The options every stage shares: concepts, run directory, model, device, dtype, device map,
    few-shot prefix."""
    for option in reversed((_CONCEPTS, _MAX, _OUT, _MODEL, _DEVICE, DTYPE, DEVICE_MAP, _FEW_SHOT)):
        fn = option(fn)
    return fn


_OPTION_NAMES = {"concepts": "n-concepts", "methods": "method"}  # option fields spelled otherwise on the CLI


@click.group()
def probe() -> None:
    """Find concept vectors in an LM's MLP weights, validate them causally, compare unlearning.

    \b
    The stages share one run directory and each resumes where it stopped:
      kgprobe probe locate   --out runs/cv   # scan.pt, known.json, candidates.jsonl
      kgprobe probe validate --out runs/cv   # validation.tsv / .json
      kgprobe probe unlearn  --out runs/cv   # unlearning_report.json / .tsv / .png
    `kgprobe run pipelines/concept_vectors.yaml` runs all three.
    """


@probe.command()
@_stage_options
@click.option("--top-tokens", type=click.IntRange(min=1), default=50, show_default=True,
              help="Logit-lens tokens kept per value vector.")
@click.option("--pool", type=click.IntRange(min=1), default=200, show_default=True,
              help="Vectors per concept taken from the token match.")
@click.option("--per-concept", type=click.IntRange(min=1), default=5, show_default=True,
              help="Candidates kept per concept.")
@click.option("--rank-by", type=click.Choice(["effect", "tokens"]), default="effect", show_default=True,
              help="Order a concept's pool by its answers' use of each vector (gradient x activation) "
                   "or by token match.")
def locate(concept_files, max_concepts, out: Path, model: str, device: str, dtype: str, device_map: str | None,
           few_shot, top_tokens: int, pool: int, per_concept: int, rank_by: str) -> None:
    """Scan every value vector through the logit lens and pick candidates for each concept."""
    from kgprobe.probe.run import LocateOptions, run_locate

    options = options_model(LocateOptions, renames=_OPTION_NAMES, top_tokens=top_tokens, pool=pool,
                            per_concept=per_concept, rank_by=rank_by)
    run_locate(out, concept_files=concept_files, max_concepts=max_concepts, model=model, device=device,
               dtype=dtype, device_map=device_map, few_shot=few_shot, options=options, echo=_echo, loading_bars=False)


@probe.command()
@_stage_options
@click.option("--mode", type=click.Choice(["zero", "noise"]), default="zero", show_default=True,
              help="Damage: zero the vector (ablation) or add Gaussian noise.")
@click.option("--noise-std", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Std of the noise (--mode noise).")
@click.option("--min-concept-drop", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Relative drop of concept-QA accuracy that validates a vector.")
@click.option("--max-unrelated-drop", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Largest allowed drop of unrelated-QA accuracy (0.05 = 5 points).")
@click.option("--vectors-per-concept", type=click.IntRange(min=1), default=1, show_default=True,
              help="Also damage this many top candidates together.")
@click.option("--set-sizes", default="4,16,64", show_default=True,
              help="Also damage the m most concept-specific vectors, for each m (comma-separated; '' for none).")
@click.option("--seed", type=SEED, default=0, show_default=True)
def validate(concept_files, max_concepts, out: Path, model: str, device: str, dtype: str, device_map: str | None,
             few_shot, mode: str, noise_std: float, min_concept_drop: float, max_unrelated_drop: float,
             vectors_per_concept: int, set_sizes: str, seed: int) -> None:
    """Damage each candidate and measure concept vs unrelated QA (needs `probe locate` first)."""
    from kgprobe.probe.run import ValidateOptions, run_validate

    try:
        sizes = [int(x) for x in set_sizes.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{set_sizes!r} is not a comma-separated list of integers",
                                 param_hint="--set-sizes") from None
    if any(size < 1 for size in sizes):
        raise click.BadParameter(f"{set_sizes!r}: every size must be a positive integer", param_hint="--set-sizes")
    options = options_model(ValidateOptions, renames=_OPTION_NAMES, mode=mode, noise_std=noise_std,
                            min_concept_drop=min_concept_drop, max_unrelated_drop=max_unrelated_drop,
                            vectors_per_concept=vectors_per_concept, set_sizes=sizes)
    summary = run_validate(out, concept_files=concept_files, max_concepts=max_concepts, model=model, device=device,
                           dtype=dtype, device_map=device_map, few_shot=few_shot, options=options, seed=seed,
                           echo=_echo, loading_bars=False)
    click.echo(json.dumps(summary, indent=2))


@probe.command()
@_stage_options
@click.option("--method", "methods", multiple=True,
              default=["gradient-ascent", "gradient-difference", "npo", "ablation"], show_default=True,
              help="Unlearning method (repeat for several).")
@click.option("--n-concepts", type=click.IntRange(min=1), default=10, show_default=True,
              help="Concepts to unlearn (validated ones first).")
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True, help="Optimiser steps per method.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-5, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
def unlearn(concept_files, max_concepts, out: Path, model: str, device: str, dtype: str, device_map: str | None,
            few_shot, methods, n_concepts: int, steps: int, lr: float, seed: int) -> None:
    """Run each unlearning method per concept and measure behaviour and weights (needs `probe validate`)."""
    from kgprobe.probe.run import UnlearnOptions, run_unlearn
    from kgprobe.probe.unlearn import unlearner_names

    unknown = [m for m in methods if m not in unlearner_names()]
    if unknown:  # before the model loads, not after
        raise click.BadParameter(f"unknown unlearning method(s) {', '.join(map(repr, unknown))}; known: "
                                 f"{', '.join(unlearner_names())}", param_hint="--method")
    options = options_model(UnlearnOptions, renames=_OPTION_NAMES, methods=list(methods), concepts=n_concepts,
                            steps=steps, lr=lr)
    summary = run_unlearn(out, concept_files=concept_files, max_concepts=max_concepts, model=model, device=device,
                          dtype=dtype, device_map=device_map, few_shot=few_shot, options=options, seed=seed,
                          echo=_echo, loading_bars=False)
    click.echo(json.dumps(summary, indent=2))


@probe.command()
@_MODEL
@_DEVICE
@DTYPE
@DEVICE_MAP
@click.option("--layer", type=click.IntRange(min=0), required=True)
@click.option("--index", type=click.IntRange(min=0), required=True, help="Neuron (value vector) index in the layer.")
@click.option("-k", "k", type=click.IntRange(min=1), default=20, show_default=True)
def lens(model: str, device: str, dtype: str, device_map: str | None, layer: int, index: int, k: int) -> None:
    """Print the top tokens one value vector promotes (logit lens)."""
    from kgprobe.probe.run import lens as run_lens

    click.echo(json.dumps(run_lens(model, layer=layer, index=index, k=k, device=device, dtype=dtype,
                                   device_map=device_map, loading_bars=False), ensure_ascii=False))
