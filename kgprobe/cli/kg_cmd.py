"""``kgprobe kg``: inspect and convert KG files.

``stats`` prints :func:`kgprobe.kg.formats.load_kg`'s graph's ``statistics()``; ``convert`` calls
:func:`kgprobe.kg.sources.convert_kg`.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from kgprobe.cli.options import OutputPath

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
@click.argument("target", type=OutputPath())
@click.option("--from", "src_fmt", default=None, help=FORMAT_HELP)
@click.option("--to", "dst_fmt", default=None, help=FORMAT_HELP)
@click.option("--overwrite", is_flag=True, help="Replace an existing TARGET file (written atomically).")
def convert(source: Path, target: Path, src_fmt: str | None, dst_fmt: str | None, overwrite: bool) -> None:
    """Read the KG at SOURCE and write it to TARGET (format from the suffix, e.g. .ttl).

    An existing TARGET is never replaced without --overwrite (a directory TARGET never: it must
    be new or empty).
    """
    from kgprobe.kg.sources import convert_kg

    graph, written = convert_kg(source, target, source_format=src_fmt, target_format=dst_fmt, overwrite=overwrite)
    click.echo(f"wrote {graph.num_triples} triples to {written}")
