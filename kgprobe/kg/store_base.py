"""What the local and the remote SPARQL store share: the KG to load, its graph IRI, the load
bookkeeping and the query/update check.

**Bookkeeping.** Every load writes, in the graph :data:`BOOKKEEPING_GRAPH`::

    <graph> kgp:loading true .                      # while the load runs (written first, committed)
    <graph> kgp:triples 123 ; kgp:source "path" ;   # once it is complete (replacing kgp:loading,
            kgp:loaded "2025-..."^^xsd:dateTime .   #  in one transaction)

so a load killed midway leaves a graph still marked ``kgp:loading``: the local store hides such a
graph from queries and deletes it the next time it is opened for writing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple
from urllib.parse import quote

from kgprobe.errors import KgprobeError
from kgprobe.kg.formats import KG_DIR_FILES, load_kg
from kgprobe.kg.formats.rdf import DEFAULT_BASE, XSD, rdf_lines
from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.kg.sources import DATASET_PREFIX, load_kg_source

KGP = DEFAULT_BASE + "schema#"
#: the named graph holding one record per load (hidden from queries on a local store)
BOOKKEEPING_GRAPH = DEFAULT_BASE + "store/loads"
LOADING, TRIPLES, SOURCE, LOADED = KGP + "loading", KGP + "triples", KGP + "source", KGP + "loaded"
#: a harvest run directory (``kgprobe harvest --out DIR``) holds its result as this file
RUN_KG_FILE = "kg.ttl"


@dataclass(frozen=True)
class LoadReport:
    """One finished load: the named graph written, the RDF triples it now holds (distinct: a
    repeated KG triple is one plain triple, its reified statements stay apart), the seconds the
    load took, the source it came from and whether an earlier graph of that IRI was replaced."""

    graph: str
    triples: int
    seconds: float
    source: str
    replaced: bool = False


class KgSource(NamedTuple):
    """A KG read for loading: the graph, the name its default graph IRI uses, and where it came from."""

    kg: KnowledgeGraph
    name: str
    source: str


def read_kg_source(source: KnowledgeGraph | KgSource | str | Path, *, progress: bool = False) -> KgSource:
    """Read what :meth:`load` is given: a :class:`KnowledgeGraph` (named by ``kg.name``), ``dataset:NAME``,
    a harvest run directory (its ``kg.ttl``, named after the directory) or any path
    :func:`kgprobe.kg.formats.load_kg` reads (named after the file's stem or the directory)."""
    if isinstance(source, KgSource):
        return source
    if isinstance(source, KnowledgeGraph):
        return KgSource(source, source.name, f"in-memory KG {source.name!r}")
    if isinstance(source, str) and source.startswith(DATASET_PREFIX):
        return KgSource(load_kg_source(source), source[len(DATASET_PREFIX):], source)
    path = Path(source)
    if path.is_dir() and not any((path / n).exists() for n in KG_DIR_FILES) and (path / RUN_KG_FILE).is_file():
        return KgSource(load_kg(path / RUN_KG_FILE, progress=progress), path.resolve().name, str(path))
    kg = load_kg(path, progress=progress)
    return KgSource(kg, path.resolve().name if path.is_dir() else path.stem, str(path))


def graph_iri(name: str, *, base: str = DEFAULT_BASE) -> str:
    """The default named graph of a load: ``<base>graph/<name>``, the name percent-quoted."""
    return base + "graph/" + quote(name, safe="")


def check_graph_iri(iri: str) -> str:
    """``iri`` if it is an absolute IRI a graph may have (not the bookkeeping graph), else a ``KgprobeError``."""
    import pyoxigraph

    try:
        pyoxigraph.NamedNode(iri)
    except ValueError as err:
        raise KgprobeError(f"graph {iri!r} is not an absolute IRI: {err}") from None
    if ":" not in iri or iri == BOOKKEEPING_GRAPH:
        raise KgprobeError(f"graph {iri!r} cannot be loaded into (not an absolute IRI, or kgprobe's bookkeeping graph)")
    return iri


def ntriples_chunks(kg: KnowledgeGraph, *, base: str, graph: str) -> Iterator[str]:
    """The KG as N-Triples, in the chunks of :func:`kgprobe.kg.formats.rdf.rdf_lines` (the writer
    behind ``.nt`` / ``.ttl`` files, so the store holds the triples of the Turtle export, with the
    graph node and its reified statements named after the named graph ``graph``: ``<graph>`` and
    ``<graph>/triple/<i>``, where the file has ``<base>graph`` and ``<base>triple/<i>``)."""
    return rdf_lines(kg, format="ntriples", base=base, graph=graph)


def begin_update(graph: str) -> str:
    """SPARQL Update run (as one transaction) before a load: forget any earlier record of ``graph``
    and mark it as being loaded."""
    return (f"DELETE WHERE {{ GRAPH <{BOOKKEEPING_GRAPH}> {{ <{graph}> ?p ?o }} }};\n"
            f"INSERT DATA {{ GRAPH <{BOOKKEEPING_GRAPH}> {{ <{graph}> <{LOADING}> true }} }}")


def finish_update(graph: str, triples: int, source: str) -> str:
    """SPARQL Update run (as one transaction) after a load: the ``kgp:loading`` mark becomes the record."""
    loaded = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = source.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return (f"DELETE WHERE {{ GRAPH <{BOOKKEEPING_GRAPH}> {{ <{graph}> ?p ?o }} }};\n"
            f"INSERT DATA {{ GRAPH <{BOOKKEEPING_GRAPH}> {{ <{graph}> <{TRIPLES}> {triples} ; "
            f'<{SOURCE}> "{text}" ; <{LOADED}> "{loaded}"^^<{XSD}dateTime> }} }}')


def is_update(sparql: str) -> bool:
    """Whether ``sparql`` parses as a SPARQL 1.1 Update. pyoxigraph has no parser without running
    the text (and running an update, even on an empty store, may ``LOAD`` from the web), so this is
    rdflib's parser; it is only asked once pyoxigraph has refused the text as a query."""
    from rdflib.plugins.sparql.parser import parseUpdate

    try:
        parseUpdate(sparql)
    except Exception:  # noqa: BLE001 - pyparsing's ParseException and friends: not an update
        return False
    return True


def update_refused() -> KgprobeError:
    return KgprobeError("this is a SPARQL update; updates are refused here (queries only: SELECT, ASK, "
                        "CONSTRUCT, DESCRIBE)")


#: longest SPARQL syntax message shown (pyoxigraph lists every token it expected, often hundreds)
SYNTAX_MESSAGE_CHARS = 200


def syntax_error(message: str) -> KgprobeError:
    text = " ".join(message.split())
    if len(text) > SYNTAX_MESSAGE_CHARS:
        text = text[:SYNTAX_MESSAGE_CHARS - 3] + "..."
    return KgprobeError(f"SPARQL syntax error: {text}")
