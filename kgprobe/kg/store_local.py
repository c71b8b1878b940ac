"""An on-disk SPARQL store: a pyoxigraph (RocksDB) database in a directory, one named graph per load.

What is stored: each load writes the KG exactly as ``kgprobe kg convert KG x.nt`` would (the same
IRIs under the same base, each KG triple as a plain triple plus its reified ``rdf:Statement``
with ``kgp:index``, ``kgp:score``, ``kgp:provenance``), into its own named graph; the
bookkeeping graph records every finished load (see :mod:`kgprobe.kg.store_base`).

How: a load marks its graph ``kgp:loading`` (committed), drops the graph's old triples, streams
the N-Triples into RocksDB with ``bulk_load`` (fast, not transactional), then replaces the mark by
the record in one transaction. A killed load thus leaves a marked graph, which queries never see
and the next writable open deletes. Queries run in a child process that opens the store
read-only (pyoxigraph holds the GIL while it evaluates, so only a process can be stopped at the
time limit); their default graph is the union of the finished graphs (and the store's own default
graph), ``GRAPH ?g`` sees only those, and the bookkeeping graph stays out of both.

Several readers (a server, a CLI query) may share a directory; one process at a time may write,
and readers opened before a load see the store as it was when they opened it.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kgprobe.errors import KgprobeError
from kgprobe.kg.formats.rdf import DEFAULT_BASE
from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.kg.sparql_results import QueryResult
from kgprobe.kg.store_base import (
    BOOKKEEPING_GRAPH,
    LOADING,
    KgSource,
    LoadReport,
    begin_update,
    check_graph_iri,
    finish_update,
    graph_iri,
    is_update,
    ntriples_chunks,
    read_kg_source,
    syntax_error,
    update_refused,
)

WORKER = Path(__file__).with_name("sparql_worker.py")
#: a file every RocksDB database directory has; a non-empty directory without it is not a store
STORE_MARKER_FILE = "CURRENT"


def check_store_dir(path: Path, *, create: bool) -> None:
    """Refuse a path that is not a store: missing (unless ``create``), a file, or a folder of other files."""
    if not path.exists():
        if not create:
            raise KgprobeError("no such store directory (make one with 'kgprobe kg load KG --store DIR')", path=path)
        return
    if not path.is_dir():
        raise KgprobeError("is a file, not a store directory", path=path)
    if any(path.iterdir()) and not (path / STORE_MARKER_FILE).is_file():
        # pyoxigraph would write its database files among the user's own
        raise KgprobeError("is a folder that is not a SPARQL store (no RocksDB 'CURRENT' file); "
                           "give a new or empty directory", path=path)


class _Chunks:
    """A file-like object over text chunks, for ``bulk_load``; counts lines into a progress bar."""

    def __init__(self, chunks: Any, bar: Any):
        self.chunks, self.bar, self.buffer = iter(chunks), bar, b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.bar.update(chunk.count("\n"))
            self.buffer += chunk.encode("utf-8")
        if size < 0:
            size = len(self.buffer)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


class LocalStore:
    """A store directory (see the module docstring); made by :func:`kgprobe.kg.store.open_store`."""

    def __init__(self, path: str | Path, *, create: bool = False, read_only: bool = True):
        import pyoxigraph

        self.path, self.read_only = Path(path), read_only
        if create and read_only:
            raise KgprobeError("a store is created only when opened for writing (read_only=False)")
        check_store_dir(self.path, create=create)
        try:
            self._store = pyoxigraph.Store.read_only(str(self.path)) if read_only else pyoxigraph.Store(str(self.path))
        except OSError as err:
            raise _open_error(self.path, err) from None
        if not read_only:
            self._clear_incomplete()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.path)!r}, read_only={self.read_only})"

    def __enter__(self) -> "LocalStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush and release the database (RocksDB's lock, for a writable store)."""
        if getattr(self, "_store", None) is not None:
            if not self.read_only:
                self._store.flush()
            self._store = None

    # ------------------------------------------------------------------ bookkeeping
    def _incomplete(self) -> list[str]:
        import pyoxigraph

        marks = self._store.quads_for_pattern(None, pyoxigraph.NamedNode(LOADING), None,
                                              pyoxigraph.NamedNode(BOOKKEEPING_GRAPH))
        return [q.subject.value for q in marks]

    def _clear_incomplete(self) -> None:
        """Delete the graphs of killed loads, and their marks."""
        import pyoxigraph

        for iri in self._incomplete():
            self._store.remove_graph(pyoxigraph.NamedNode(iri))
            self._store.update(f"DELETE WHERE {{ GRAPH <{BOOKKEEPING_GRAPH}> {{ <{iri}> ?p ?o }} }}")

    def _visible(self) -> list[str]:
        """The named graphs queries see: all but the bookkeeping graph and unfinished loads."""
        hidden = {BOOKKEEPING_GRAPH, *self._incomplete()}
        import pyoxigraph

        names = (g for g in self._live().named_graphs() if isinstance(g, pyoxigraph.NamedNode))
        return sorted(g.value for g in names if g.value not in hidden)

    def _live(self) -> Any:
        if self._store is None:
            raise KgprobeError(f"store {self.path} is closed")
        return self._store

    # ------------------------------------------------------------------ API
    def graphs(self) -> list[tuple[str, int]]:
        """``(graph IRI, triple count)`` for every finished named graph, sorted by IRI."""
        import pyoxigraph

        visible = self._visible()
        if not visible:
            return []
        counts = self._live().query(
            "SELECT ?g (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s ?p ?o } } GROUP BY ?g",
            named_graphs=[pyoxigraph.NamedNode(g) for g in visible])
        found = {s["g"].value: int(s["n"].value) for s in counts}
        return [(g, found.get(g, 0)) for g in visible]

    def load(self, kg_or_path: KnowledgeGraph | KgSource | str | Path, *, graph: str | None = None,
             base: str = DEFAULT_BASE, progress: bool = False) -> LoadReport:
        """Load a KG (a :class:`KnowledgeGraph`, or a path / ``dataset:NAME`` read with
        :func:`~kgprobe.kg.store_base.read_kg_source`) into the named graph ``graph`` (default
        ``<base>graph/<name>``), replacing that graph if it exists. ``base``: the IRI base of the
        entities and relations, as in :func:`kgprobe.kg.formats.rdf.rdf_lines`. ``progress``: a
        progress bar on stderr (RDF triples written). Safe to interrupt (see the module docstring)."""
        import pyoxigraph
        from tqdm import tqdm

        if self.read_only:
            raise KgprobeError(f"store {self.path} is open read-only; open it with read_only=False to load")
        store, start = self._live(), time.perf_counter()
        source = read_kg_source(kg_or_path, progress=progress)
        iri = check_graph_iri(graph or graph_iri(source.name, base=base))
        node = pyoxigraph.NamedNode(iri)
        replaced = any(g == node for g in store.named_graphs())
        store.update(begin_update(iri))
        store.remove_graph(node)  # the old triples, if any
        with tqdm(desc=f"loading {source.name}", unit=" triples", unit_scale=True, disable=not progress,
                  file=sys.stderr, leave=False) as bar:
            store.bulk_load(_Chunks(ntriples_chunks(source.kg, base=base, graph=iri), bar),
                            format=pyoxigraph.RdfFormat.N_TRIPLES, to_graph=node)
        count = next(iter(store.query(f"SELECT (COUNT(*) AS ?n) WHERE {{ GRAPH <{iri}> {{ ?s ?p ?o }} }}")))
        triples = int(count["n"].value)
        store.update(finish_update(iri, triples, source.source))
        store.flush()
        return LoadReport(iri, triples, time.perf_counter() - start, source.source, replaced)

    def query(self, sparql: str, *, timeout_s: float | None = 30.0, max_rows: int = 10_000,
              allow_update: bool = False) -> QueryResult:
        """Run a SPARQL query over the union of the finished graphs (``GRAPH ?g`` names them).

        It runs in a child process killed after ``timeout_s`` seconds (``None``: no limit), which
        is a ``KgprobeError``; at most ``max_rows`` rows (or triples) are kept and
        ``result.truncated`` says whether more were cut. An update is a ``KgprobeError`` unless
        ``allow_update`` (and the store is writable); it then runs here, without a time limit.
        """
        if max_rows < 0:
            raise KgprobeError(f"max_rows must be >= 0, not {max_rows}")
        visible = self._visible()
        if not self.read_only:
            self._live().flush()  # the child reads what is on disk
        request = {"store": str(self.path.resolve()), "query": sparql, "default_graphs": ["", *visible],
                   "named_graphs": visible, "max_rows": max_rows}
        start = time.perf_counter()
        header, body = _run_worker(request, timeout_s)
        seconds = time.perf_counter() - start
        if header.get("error") == "syntax":
            if not is_update(sparql):
                raise syntax_error(header["message"])
            return self._update(sparql, allow_update=allow_update)
        if "error" in header:
            raise KgprobeError(f"store {self.path}: the query failed: {header['message']}")
        if header["kind"] == "ask":
            return QueryResult("ask", boolean=header["boolean"], seconds=seconds)
        if header["kind"] == "graph":
            return QueryResult.from_ntriples(body, truncated=header["truncated"], seconds=seconds)
        return QueryResult.from_tsv(body, truncated=header["truncated"], seconds=seconds)

    def _update(self, sparql: str, *, allow_update: bool) -> QueryResult:
        if not allow_update:
            raise update_refused()
        if self.read_only:
            raise KgprobeError(f"store {self.path} is open read-only; an update needs read_only=False")
        start = time.perf_counter()
        try:
            self._live().update(sparql)
        except (SyntaxError, OSError, ValueError) as err:
            raise KgprobeError(f"store {self.path}: the update failed: {err}") from None
        return QueryResult("update", seconds=time.perf_counter() - start)


def _run_worker(request: dict, timeout_s: float | None) -> tuple[dict, bytes]:
    """Run :mod:`kgprobe.kg.sparql_worker` on ``request``; kill it at the time limit."""
    if timeout_s is not None and timeout_s <= 0:
        raise KgprobeError(f"the time limit must be positive, not {timeout_s} s")
    proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(json.dumps(request).encode("utf-8"), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise KgprobeError(f"the query ran past its time limit of {timeout_s:g} s and was stopped") from None
    first, _, body = out.partition(b"\n")
    if proc.returncode != 0 or not first:
        detail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise KgprobeError(f"the query process failed: {detail[0]}")
    return json.loads(first), body


def _open_error(path: Path, err: OSError) -> KgprobeError:
    text = " ".join(str(err).split())
    if "lock" in text.lower():
        return KgprobeError("the store is open for writing in another process (one writer at a time)", path=path)
    return KgprobeError(f"cannot open the store: {text[:300]}", path=path)
