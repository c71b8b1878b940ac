"""``kgprobe data``: build the bundled datasets as KG directories."""
from __future__ import annotations

import json
from pathlib import Path

import click

from kgprobe.cli.options import SEED, OutputPath


@click.group()
def data() -> None:
    """Build reference KGs from offline sources (WordNet, countryinfo, PyKEEN's small KGs)."""


@data.command("list")
def list_datasets() -> None:
    """List the datasets and whether their source is installed."""
    from kgprobe.kg.datasets import DATASETS

    order = list(DATASETS)  # by family name, then as registered (synthetic-10k before synthetic-100k)
    width = max(len(name) for name in DATASETS)
    for name, spec in sorted(DATASETS.items(), key=lambda item: (item[0].split("-")[0], order.index(item[0]))):
        missing = spec.available()
        click.echo(f"{name:<{width}} {'yes' if missing is None else 'no ':<4} {spec.description}")
        if missing:
            click.echo(f"{'':<{width + 5}} {missing}")


@data.command("build")
@click.argument("name")
@click.option("--out", type=OutputPath(), required=True,
              help="Output KG directory (entities.tsv, relations.tsv, triples.tsv, meta.json).")
@click.option("--inductive", is_flag=True,
              help="Also write a BLP inductive split: OUT/train, OUT/valid, OUT/test and their entity lists.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the inductive split.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--overwrite", is_flag=True,
              help="Replace whatever --out holds (without it, --out must be new, empty or an earlier build).")
def build(name: str, out: Path, inductive: bool, seed: int, quiet: bool, overwrite: bool) -> None:
    """Build dataset NAME (see `kgprobe data list`) into the directory --out.

    The directory is written atomically: an interrupted build leaves no partial output (its
    temporary is removed by the next build), and an earlier build in --out is replaced only
    when the new one is complete.
    """
    from kgprobe.kg.build import build_and_save

    kg, split = build_and_save(name, out, inductive=inductive, seed=seed, progress=not quiet, overwrite=overwrite)
    stats = kg.statistics()
    click.echo(f"{name}: {stats['entities']} entities, {stats['relations']} relations, "
               f"{stats['triples']} triples -> {out}")
    if split is not None:
        click.echo(json.dumps(split.stats(), indent=2))
