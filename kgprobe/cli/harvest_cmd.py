"""``kgprobe harvest`` and ``kgprobe harvest-eval``: each parses its options, calls one library
function (:func:`kgprobe.harvest.run.harvest`, :func:`kgprobe.harvest.run.evaluate_harvest`) and prints."""
from __future__ import annotations

import json
from pathlib import Path

import click

from kgprobe.cli.options import SEED, OutputPath


@click.command()
@click.argument("relation", type=click.Path(path_type=Path))
@click.option("--out", type=OutputPath(), required=True, help="Run directory to write.")
@click.option("--model", default="smollm2-135m", show_default=True,
              help="Registry name, local model directory, .gguf file or hub id (causal or masked LM).")
@click.option("--top-k", type=click.IntRange(min=1), default=100, show_default=True, help="Tuples to output.")
@click.option("--paraphrases", type=click.IntRange(min=0), default=0, show_default=True,
              help="Extra prompts to generate by paraphrasing with the model (0: only the file's prompts).")
@click.option("--first-candidates", type=click.IntRange(min=1), default=None,
              help="Entities kept for the first slot searched.")
@click.option("--prior-correction", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Causal LMs: discount of the log-probability of the entity written first "
                   "(its prior: how common the name is); 0 = plain sentence likelihood, 1 = PMI.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Sequences per LM forward pass.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out (same options).")
@click.option("--overwrite", is_flag=True,
              help="Replace whatever --out holds (without it, --out must be new, empty or this command's own run).")
def harvest(relation: Path, out: Path, model: str, top_k: int, paraphrases: int, first_candidates: int | None,
            prior_correction: float, device: str, batch_size: int, seed: int, resume: bool,
            overwrite: bool) -> None:
    """Harvest a ranked KG for RELATION (a YAML/JSON file with prompts and seed tuples) from an LM.

    \b
    Writes to --out: tuples.jsonl (best first), prompts.json (prompt weights), kg.ttl,
    run.json (timings, LM forward passes) and checkpoints that --resume continues from.
    See kg_data/relations/ for relation files.
    """
    from kgprobe.harvest.relation import load_relation
    from kgprobe.harvest.run import HarvestOptions
    from kgprobe.harvest.run import harvest as run_harvest
    from kgprobe.models import resolve_device

    rel = load_relation(relation)
    resolve_device(device)
    search = {"first_candidates": first_candidates} if first_candidates else {}
    options = HarvestOptions(model=model, top_k=top_k, paraphrases=paraphrases, seed=seed, search=search,
                             prior_correction=prior_correction)
    run_harvest(rel, out, options=options, device=device, batch_size=batch_size, resume=resume,
                overwrite=overwrite, echo=click.echo)


@click.command("harvest-eval")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--reference", default=None,
              help="DATASET:RELATION or KG_PATH:RELATION, e.g. countries:capital (default: the relation file's).")
@click.option("--head-slot", type=click.IntRange(min=0), default=None, help="Slot that is the reference triple's head.")
@click.option("--tail-slot", type=click.IntRange(min=0), default=None, help="Slot that is the reference triple's tail.")
def harvest_eval(run_dir: Path, reference: str | None, head_slot: int | None, tail_slot: int | None) -> None:
    """Precision@10/50/100 and coverage of a harvest run against a reference KG (writes eval.json)."""
    from kgprobe.harvest.run import evaluate_harvest

    result = evaluate_harvest(run_dir, reference, head_slot=head_slot, tail_slot=tail_slot)
    click.echo(json.dumps(result, indent=2, ensure_ascii=False))
