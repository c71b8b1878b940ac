"""An embedded SPARQL store for kgprobe's knowledge graphs, or the same API over a SPARQL endpoint.

::

    from kgprobe.kg.store import open_store

    with open_store("kgstore", create=True, read_only=False) as store:
        store.load("runs/capital_of")                 # a harvest run directory: its kg.ttl
        store.load("dataset:wordnet", progress=True)  # any KG kgprobe reads, or a KnowledgeGraph
    with open_store("kgstore") as store:              # read-only: servers and CLI queries can share it
        result = store.query("SELECT ?s ?o WHERE { ?s ?p ?o } LIMIT 5")
        print(result.serialize("table").decode())

A directory is an on-disk pyoxigraph (RocksDB) store (:class:`~kgprobe.kg.store_local.LocalStore`:
what is stored and how is described there); an ``http://`` or ``https://`` URL is any SPARQL 1.1
endpoint (:class:`~kgprobe.kg.store_remote.RemoteStore`). Both hold each KG in its own named
graph (``<base>graph/<name>`` by default), written by the Turtle/N-Triples exporter
(:func:`kgprobe.kg.formats.rdf.rdf_lines`), so the IRIs and reified scores are those of
``kgprobe kg convert KG x.ttl``; loading a graph IRI again replaces that graph. Results are
:class:`~kgprobe.kg.sparql_results.QueryResult`.
"""
from __future__ import annotations

from pathlib import Path

from kgprobe.kg.formats.rdf import DEFAULT_BASE
from kgprobe.kg.sparql_results import MEDIA_TYPES, QueryResult
from kgprobe.kg.store_base import BOOKKEEPING_GRAPH, KgSource, LoadReport, check_graph_iri, graph_iri, read_kg_source
from kgprobe.kg.store_local import LocalStore
from kgprobe.kg.store_remote import RemoteStore

Store = LocalStore | RemoteStore


def is_url(location: str | Path) -> bool:
    """Whether a store location is an endpoint URL rather than a directory."""
    return isinstance(location, str) and location.lower().startswith(("http://", "https://"))


def open_store(path_or_url: str | Path, *, create: bool = False, read_only: bool = True,
               update_url: str | None = None) -> Store:
    """Open the store at ``path_or_url``: a store directory, or a SPARQL endpoint's URL.

    ``create``: make the directory if it does not exist (it must then be new, empty or already a
    store; needs ``read_only=False``). ``read_only``: open a directory without taking its write
    lock, so that other processes can read it at the same time (loads and updates are refused).
    ``update_url``: for an endpoint, where SPARQL updates go (default: ``path_or_url``).
    """
    if is_url(path_or_url):
        return RemoteStore(str(path_or_url), update_url=update_url, read_only=read_only)
    return LocalStore(path_or_url, create=create, read_only=read_only)


__all__ = ["BOOKKEEPING_GRAPH", "DEFAULT_BASE", "KgSource", "LoadReport", "LocalStore", "MEDIA_TYPES", "QueryResult",
           "RemoteStore", "Store", "check_graph_iri", "graph_iri", "is_url", "open_store", "read_kg_source"]
