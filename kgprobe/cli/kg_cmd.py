"""``kgprobe kg``: inspect and convert KG files."""
from __future__ import annotations

import json
from pathlib import Path

import click

FORMAT_HELP = "Format name (dir, tsv, jsonl, turtle, ntriples, graphml); default: from the path's suffix."


@click.group()
def kg() -> None:
    """Inspect and convert knowledge graphs between TSV, JSONL, RDF and GraphML."""


@kg.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default=None, help=FORMAT_HELP)
def stats(path: Path, fmt: str | None) -> None:
    """Print statistics of the KG at PATH as JSON."""
    from kgprobe.kg.formats import load_kg

    click.echo(json.dumps(load_kg(path, format=fmt).statistics(), indent=2))


@kg.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--from", "src_fmt", default=None, help=FORMAT_HELP)
@click.option("--to", "dst_fmt", default=None, help=FORMAT_HELP)
def convert(source: Path, target: Path, src_fmt: str | None, dst_fmt: str | None) -> None:
    """Read the KG at SOURCE and write it to TARGET (format from the suffix, e.g. .ttl)."""
    from kgprobe.kg.formats import load_kg, save_kg

    graph = load_kg(source, format=src_fmt)
    written = save_kg(graph, target, format=dst_fmt)
    click.echo(f"wrote {graph.num_triples} triples to {written}")
