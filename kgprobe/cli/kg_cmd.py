"""``kgprobe kg``: inspect and convert KG files, and keep them in a SPARQL store.

``stats`` prints :func:`kgprobe.kg.formats.load_kg`'s graph's ``statistics()``; ``convert`` calls
:func:`kgprobe.kg.sources.convert_kg`; ``load``, ``query`` and ``graphs`` work on a store of
:mod:`kgprobe.kg.store` (a directory, or a SPARQL endpoint's URL).
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from kgprobe.cli.options import OutputPath

FORMAT_HELP = "Format name (dir, tsv, jsonl, turtle, ntriples, graphml); default: from the path's suffix."


@click.group()
def kg() -> None:
    """Inspect and convert knowledge graphs (TSV, JSONL, RDF, GraphML); load and query them with SPARQL."""


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


STORE_HELP = "A store directory (made by 'kgprobe kg load') or a SPARQL 1.1 endpoint's http(s) URL."


@kg.command()
@click.argument("source")
@click.option("--store", "location", required=True, help=STORE_HELP + " A new directory is created.")
@click.option("--graph", default=None, help="Named graph IRI to load into (default: <base>graph/<KG name>); "
              "an existing graph of that IRI is replaced.")
@click.option("--base", default=None, help="IRI base of the entities and relations (default: https://kgprobe.org/kg/).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def load(source: str, location: str, graph: str | None, base: str | None, quiet: bool) -> None:
    """Load the KG at SOURCE into a SPARQL store, in its own named graph.

    SOURCE is any KG kgprobe reads (a KG directory, .tsv, .jsonl, .ttl, .nt, .graphml), a harvest
    run directory (its kg.ttl) or dataset:NAME. The triples are those of 'kgprobe kg convert
    SOURCE x.ttl'. A killed load leaves no graph that looks complete.
    """
    from kgprobe.kg.formats.rdf import DEFAULT_BASE
    from kgprobe.kg.store import check_graph_iri, open_store, read_kg_source

    # everything checked before the store directory is made: bad input creates nothing
    if graph is not None:
        check_graph_iri(graph)
    kg_source = read_kg_source(source, progress=not quiet)
    with open_store(location, create=True, read_only=False) as store:
        report = store.load(kg_source, graph=graph, base=base or DEFAULT_BASE, progress=not quiet)
    verb = "replaced" if report.replaced else "loaded"
    click.echo(f"{verb} graph <{report.graph}>: {report.triples} triples from {report.source} "
               f"in {report.seconds:.1f} s")


@kg.command()
@click.argument("location", metavar="STORE")
@click.argument("sparql", required=False)
@click.option("--file", "query_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Read the query from this file (instead of the SPARQL argument).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "tsv", "ntriples", "turtle"]),
              default="table", show_default=True,
              help="Output: a table, or a W3C SPARQL results format (json, csv, tsv); ntriples or turtle for "
                   "CONSTRUCT / DESCRIBE (whose table is N-Triples-like rows).")
@click.option("--limit", type=click.IntRange(min=0), default=10_000, show_default=True,
              help="Keep at most this many rows; a warning says when more were cut.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Stop the query after this many seconds.")
def query(location: str, sparql: str | None, query_file: Path | None, fmt: str, limit: int, timeout: float) -> None:
    """Run a SPARQL query (SELECT, ASK, CONSTRUCT, DESCRIBE) on STORE and print the result.

    The default graph is the union of the loaded graphs; GRAPH ?g names them. Updates are refused.
    """
    import sys

    from kgprobe.errors import KgprobeError, warn
    from kgprobe.kg.store import open_store

    if (sparql is None) == (query_file is None):
        raise KgprobeError("give the query either as the SPARQL argument or with --file, not both or neither")
    text = sparql if query_file is None else query_file.read_text(encoding="utf-8")
    with open_store(location) as store:
        result = store.query(text, timeout_s=timeout, max_rows=limit)
    if fmt not in result.formats():
        raise KgprobeError(f"--format {fmt}: this query's result is written as one of {', '.join(result.formats())}")
    data = result.serialize(fmt)
    sys.stdout.buffer.write(data if data.endswith(b"\n") or not data else data + b"\n")
    sys.stdout.flush()
    if result.truncated and fmt != "table":  # the table says so itself
        warn(f"the result was cut at --limit {limit} rows")


@kg.command()
@click.argument("location", metavar="STORE")
def graphs(location: str) -> None:
    """List the named graphs of STORE with their triple counts (tab-separated)."""
    from kgprobe.kg.store import open_store

    with open_store(location) as store:
        for iri, count in store.graphs():
            click.echo(f"{iri}\t{count}")
