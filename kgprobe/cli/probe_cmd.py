"""``kgprobe probe ...``: what an LM knows of a KG; concept vectors in its MLP weights, their
validation, unlearning.

Each command parses its options, calls one function of :mod:`kgprobe.probe.run` (``run_locate``,
``run_validate``, ``run_unlearn``, ``lens``) or :mod:`kgprobe.probe.facts` (``run_facts``) and
prints its result.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from kgprobe.cli.options import ALTERNATIVES, BATCH_SIZE, DEVICE_MAP, DTYPE, SEED, OutputPath, options_model

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


def _run_options(fn):
    """The options every stage shares but the concepts: run directory, model, device, dtype,
    device map, few-shot prefix."""
    for option in reversed((_OUT, _MODEL, _DEVICE, DTYPE, DEVICE_MAP, _FEW_SHOT)):
        fn = option(fn)
    return fn


def _stage_options(fn):
    """The options of the stages that read concept files: those and :func:`_run_options`'."""
    return _CONCEPTS(_MAX(_run_options(fn)))


_OPTION_NAMES = {"concepts": "n-concepts", "methods": "method"}  # option fields spelled otherwise on the CLI


@click.group()
def probe() -> None:
    """Probe what an LM knows: facts of a KG; concept vectors in its MLP weights, unlearning.

    \b
      kgprobe probe facts countries --model smollm2-135m --out runs/facts
                                             # facts.jsonl, results.json, accuracy.png
    \b
    The stages share one run directory and each resumes where it stopped:
      kgprobe probe locate   --out runs/cv   # scan.pt, known.json, candidates.jsonl
      kgprobe probe validate --out runs/cv   # validation.tsv / .json
      kgprobe probe unlearn  --out runs/cv   # unlearning_report.json / .tsv / .png
    `kgprobe run pipelines/concept_vectors.yaml` runs all three. Or from the vectors to the concepts:
      kgprobe probe discover --out runs/disc # discovered.jsonl, concepts.jsonl, candidates.jsonl
      kgprobe probe validate --out runs/disc --concepts runs/disc/concepts.jsonl --protocol original
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
@_run_options
@click.option("--layers", default=None, help="Layers to search, e.g. 15-29 or 20,21 (default: the upper half).")
@click.option("--top-tokens", type=click.IntRange(min=1), default=200, show_default=True,
              help="Raw logit-lens tokens per column (no final norm, as ConceptVectors).")
@click.option("--min-matches", type=click.IntRange(min=1), default=5, show_default=True,
              help="Distinct words of one concept among them (a small concept: half its words, at least 3).")
@click.option("--min-lift", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Also require matches >= this x the count expected by chance (weeds out broad synsets).")
@click.option("--max-concepts", type=click.IntRange(min=1), default=None,
              help="Keep the concepts with the best columns (default: all).")
def discover(out: Path, model: str, device: str, dtype: str, device_map: str | None, few_shot, layers: str | None,
             top_tokens: int, min_matches: int, min_lift: float, max_concepts: int | None) -> None:
    """From vectors to concepts: name MLP columns by the KG words among their lens tokens
    (WordNet synsets with their hyponyms, countries), with questions from the KG."""
    from kgprobe.probe.run import DiscoverOptions, run_discover

    options = options_model(DiscoverOptions, layers=_layer_list(layers), top_tokens=top_tokens,
                            min_matches=min_matches, min_lift=min_lift, max_concepts=max_concepts)
    concepts = run_discover(out, model=model, device=device, dtype=dtype, device_map=device_map, few_shot=few_shot,
                            options=options, echo=_echo, loading_bars=False)
    click.echo(json.dumps({"concepts": len(concepts), "file": str(Path(out) / "concepts.jsonl")}))


def _layer_list(text: str | None) -> list[int] | None:
    """``15-29`` or ``20,21,25`` as a list of layers (None: the default)."""
    if text is None:
        return None
    layers: list[int] = []
    try:
        for part in text.split(","):
            a, _, b = part.strip().partition("-")
            layers += list(range(int(a), int(b) + 1)) if b else [int(a)]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a layer list like 15-29 or 20,21", param_hint="--layers") from None
    return layers


@probe.command()
@_stage_options
@click.option("--protocol", type=click.Choice(["strict", "null-controlled", "original"]), default="null-controlled",
              show_default=True,
              help="strict: per-concept accuracy-drop thresholds (validation.*); null-controlled: each concept's "
                   "vector (and set of up to 4) against norm-matched random vectors of its layer, a p-value per "
                   "test, corrected over concepts (null.json, null.png); original: ConceptVectors' protocol, noise "
                   "on the vector and BLEU / ROUGE-L between greedy answers with and without it (original.json).")
@click.option("--intervention", type=click.Choice(["zero", "mean", "noise"]), default="zero", show_default=True,
              help="Null-controlled: zero the neuron, set it to its mean activation, or add noise to its vector.")
@click.option("--noise-ratio", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Expected noise norm over the vector's norm (default: 1 for the null-controlled noise; 4, an "
                   "estimate of ConceptVectors' ratio on LLaMA-2-7B, for the original protocol).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=100, show_default=True,
              help="Original protocol: tokens of each greedy answer.")
@click.option("--original-unrelated-size", type=click.IntRange(min=0), default=50, show_default=True,
              help="Original protocol: unrelated questions per concept (the original samples 50; its code "
                   "scores 10).")
@click.option("--unrelated-size", type=click.IntRange(min=1), default=40, show_default=True,
              help="Strict and null-controlled: answered questions of other concepts per concept.")
@click.option("--null-size", type=click.IntRange(min=1), default=200, show_default=True,
              help="Null-controlled: most random draws per test (stops early once 10 reach the candidate's effect).")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.01, show_default=True,
              help="Null-controlled: Benjamini-Hochberg adjusted p-value a concept must beat.")
@click.option("--mode", type=click.Choice(["zero", "noise"]), default="zero", show_default=True,
              help="Strict protocol: zero the vector (ablation) or add Gaussian noise.")
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
             few_shot, protocol: str, intervention: str, noise_ratio: float | None, max_new_tokens: int,
             original_unrelated_size: int, unrelated_size: int, null_size: int, alpha: float, mode: str,
             noise_std: float, min_concept_drop: float, max_unrelated_drop: float, vectors_per_concept: int,
             set_sizes: str, seed: int) -> None:
    """Damage each candidate and measure concept vs unrelated QA (needs `probe locate` first)."""
    from kgprobe.probe.run import ValidateOptions, run_validate

    try:
        sizes = [int(x) for x in set_sizes.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{set_sizes!r} is not a comma-separated list of integers",
                                 param_hint="--set-sizes") from None
    if any(size < 1 for size in sizes):
        raise click.BadParameter(f"{set_sizes!r}: every size must be a positive integer", param_hint="--set-sizes")
    options = options_model(ValidateOptions, renames=_OPTION_NAMES, protocol=protocol, intervention=intervention,
                            noise_ratio=noise_ratio, max_new_tokens=max_new_tokens,
                            original_unrelated_size=original_unrelated_size, unrelated_size=unrelated_size,
                            null_size=null_size, alpha=alpha, mode=mode, noise_std=noise_std,
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
              help="Unlearning method (repeat for several): also needle (noise on the concept vector, then "
                   "gradient ascent on that column only).")
@click.option("--n-concepts", type=click.IntRange(min=1), default=10, show_default=True,
              help="Concepts to unlearn (validated ones first).")
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True, help="Optimiser steps per method.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learning rate (default: each method's own, 1e-5; needle 1e-1: it moves single columns).")
@click.option("--forget-on", type=click.Choice(["questions", "text"]), default="questions", show_default=True,
              help="Train on the concept's answered questions, or on sentences stating its facts (the questions "
                   "then held out, as in ConceptVectors).")
@click.option("--seed", type=SEED, default=0, show_default=True)
def unlearn(concept_files, max_concepts, out: Path, model: str, device: str, dtype: str, device_map: str | None,
            few_shot, methods, n_concepts: int, steps: int, lr: float | None, forget_on: str, seed: int) -> None:
    """Run each unlearning method per concept and measure behaviour and weights (needs `probe validate`)."""
    from kgprobe.probe.run import UnlearnOptions, run_unlearn
    from kgprobe.probe.unlearn import unlearner_names

    unknown = [m for m in methods if m not in unlearner_names()]
    if unknown:  # before the model loads, not after
        raise click.BadParameter(f"unknown unlearning method(s) {', '.join(map(repr, unknown))}; known: "
                                 f"{', '.join(unlearner_names())}", param_hint="--method")
    options = options_model(UnlearnOptions, renames=_OPTION_NAMES, methods=list(methods), concepts=n_concepts,
                            steps=steps, lr=lr, forget_on=forget_on)
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


@probe.command()
@click.argument("source")
@click.option("--out", type=OutputPath(), required=True, help="Run directory (resumed when it holds this run).")
@click.option("--model", default="smollm2-135m", show_default=True,
              help="Causal or masked LM: registry name, local directory, .gguf file or hub id.")
@click.option("--model-kind", type=click.Choice(["auto", "causal-lm", "masked-lm"]), default="auto", show_default=True,
              help="auto: the registry or the model's config.json says.")
@click.option("--templates", type=click.Path(path_type=Path), default=None,
              help="Templates YAML (relations: {RELATION: \"... [X] ... [Y] .\"}); needed for a KG path, "
                   "replaces a named set's.")
@click.option("--relation", "relations", multiple=True, help="Probe only this relation (repeat for several).")
@click.option("--alternatives", type=ALTERNATIVES, default=None,
              help="k: statements with other objects of the relation ranked against the true one, or all: "
                   "every other object of the relation, BEAR's answer space (default: the named set's, else 10).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seeds the alternatives (and --max-facts).")
@click.option("--max-facts", type=click.IntRange(min=1), default=None,
              help="Facts per relation, a seeded sample (default: all).")
@click.option("--span", type=click.Choice(["statement", "answer", "conditional"]), default="statement",
              show_default=True, help="Tokens scored: the whole statement (lm-pub-quiz's default), the answer's, or "
                                      "the answer and what follows (lm-pub-quiz's conditional score).")
@click.option("--reduction", type=click.Choice(["sum", "mean"]), default="sum", show_default=True,
              help="Sum or mean of the span's log-likelihoods.")
@click.option("--pll", type=click.Choice(["within_word_l2r", "original"]), default="within_word_l2r",
              show_default=True, help="Masked LMs: the pseudo-log-likelihood variant.")
@click.option("--batch-size", type=BATCH_SIZE, default="auto", show_default=True,
              help="Statements per forward pass; auto: planned from free memory.")
@click.option("--hidden", is_flag=True,
              help="Also probe the hidden states: per layer a linear probe ranks the options, trained on other "
                   "subjects' facts; where it is right and the LM is not (hidden.json, hidden.png).")
@click.option("--hidden-feature", type=click.Choice(["last", "answer"]), default="last", show_default=True,
              help="With --hidden: the statement's last token's hidden state, or the mean over the answer's.")
@_DEVICE
@DTYPE
@DEVICE_MAP
@click.option("--overwrite", is_flag=True, help="Replace --out when it holds something else.")
def facts(source: str, out: Path, model: str, model_kind: str, templates: Path | None, relations: tuple[str, ...],
          alternatives: int | str | None, seed: int, max_facts: int | None, span: str, reduction: str, pll: str,
          batch_size,
          hidden: bool, hidden_feature: str, device: str, dtype: str, device_map: str | None,
          overwrite: bool) -> None:
    """How much of a KG the LM knows (BEAR / lm-pub-quiz's scheme): per fact, the true statement
    ranked against --alternatives statements with other objects of the same relation.

    \b
    SOURCE: a named fact set (countries, wordnet, nations), a KG file or directory (with
    --templates), a harvest run directory (what a second model thinks of the first one's tuples)
    or a harvester relation file (its reference relation, its first prompt).
    Writes facts.jsonl (per fact: options, scores, rank), results.json (accuracy and MRR per
    relation, micro and macro) and accuracy.png; with --hidden, hidden.json and hidden.png.
    """
    from kgprobe.probe.facts import FactProbeOptions, fact_set_for, run_facts
    from kgprobe.probe.hidden import HiddenOptions

    options = options_model(FactProbeOptions, relations=list(relations) or None, alternatives=alternatives,
                            seed=seed, max_facts=max_facts, span=span, reduction=reduction, pll=pll,
                            batch_size=batch_size)
    hidden_options = HiddenOptions(seed=seed, feature=hidden_feature) if hidden else None
    fact_set = fact_set_for(source, options, templates=templates)
    result = run_facts(fact_set, out, model=model, kind=model_kind, device=device, dtype=dtype, device_map=device_map,
                       options=options, hidden=hidden_options, overwrite=overwrite, echo=_echo, progress=True)
    click.echo(json.dumps({"out": str(out), "metrics": result["metrics"]}, indent=2))
