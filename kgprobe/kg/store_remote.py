"""The store API over any SPARQL 1.1 endpoint, with the standard library's urllib.

Queries follow the SPARQL 1.1 Protocol: ``POST`` with ``query=`` (form-encoded), asking for
``application/sparql-results+json`` (SELECT, ASK) or N-Triples / Turtle (CONSTRUCT, DESCRIBE):
the endpoint picks by the query's form. Loads and allowed updates are SPARQL 1.1 Update requests
(``POST``, ``application/sparql-update``) to ``update_url`` (by default the endpoint's own URL, as
most servers take both there): ``DROP SILENT GRAPH`` then ``INSERT DATA`` in chunks of N-Triples
lines, with the same ``kgp:loading`` mark and final record in the bookkeeping graph as a local
store. What the default graph of a query holds is the endpoint's choice (the union of the named
graphs on some servers, a graph of its own on others): ``GRAPH ?g`` always works.
"""
from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
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
    update_refused,
)

#: N-Triples lines per INSERT DATA request (a few MB: under the usual request size limits)
INSERT_CHUNK_LINES = 20_000
ACCEPT = ("application/sparql-results+json, application/n-triples;q=0.9, text/turtle;q=0.8, "
          "application/sparql-results+xml;q=0.1")
_RDF_TYPES = {"application/n-triples": "N_TRIPLES", "text/plain": "N_TRIPLES", "text/turtle": "TURTLE",
              "application/rdf+xml": "RDF_XML", "application/ld+json": "JSON_LD"}


class RemoteStore:
    """A SPARQL 1.1 endpoint at ``url`` (see the module docstring); made by :func:`kgprobe.kg.store.open_store`."""

    def __init__(self, url: str, *, update_url: str | None = None, read_only: bool = True):
        self.url, self.update_url, self.read_only = url, update_url or url, read_only

    def __repr__(self) -> str:
        return f"RemoteStore({self.url!r}, read_only={self.read_only})"

    def __enter__(self) -> "RemoteStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: every request is its own connection."""

    # ------------------------------------------------------------------ HTTP
    def _request(self, url: str, body: bytes, content_type: str, *, accept: str,
                 timeout_s: float | None) -> tuple[str, bytes]:
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": content_type, "Accept": accept})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                media = response.headers.get_content_type()
                return media, response.read()
        except urllib.error.HTTPError as err:
            detail = " ".join(err.read(600).decode("utf-8", "replace").split())[:300]
            raise _HttpError(err.code, f"SPARQL endpoint {url} answered {err.code} {err.reason}: {detail}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, TimeoutError) or isinstance(err, TimeoutError):
                raise KgprobeError(f"SPARQL endpoint {url} did not answer within {timeout_s:g} s") from None
            raise KgprobeError(f"cannot reach SPARQL endpoint {url}: {reason}") from None

    def _post_query(self, sparql: str, timeout_s: float | None) -> tuple[str, bytes]:
        body = urllib.parse.urlencode({"query": sparql}).encode("utf-8")
        return self._request(self.url, body, "application/x-www-form-urlencoded", accept=ACCEPT, timeout_s=timeout_s)

    def _post_update(self, sparql: str, timeout_s: float | None = None) -> None:
        self._request(self.update_url, sparql.encode("utf-8"), "application/sparql-update; charset=utf-8",
                      accept="*/*", timeout_s=timeout_s)

    # ------------------------------------------------------------------ API
    def query(self, sparql: str, *, timeout_s: float | None = 30.0, max_rows: int = 10_000,
              allow_update: bool = False) -> QueryResult:
        """Send a query (see :meth:`kgprobe.kg.store_local.LocalStore.query`); ``timeout_s`` bounds
        each wait on the endpoint. An update is refused unless ``allow_update``."""
        import pyoxigraph

        start = time.perf_counter()
        try:
            media, data = self._post_query(sparql, timeout_s)
        except _HttpError as err:
            if err.code == 400 and is_update(sparql):
                return self._update(sparql, allow_update=allow_update, timeout_s=timeout_s)
            raise KgprobeError(str(err)) from None
        seconds = time.perf_counter() - start
        try:
            if media in _RDF_TYPES:
                triples = pyoxigraph.parse(data, format=getattr(pyoxigraph.RdfFormat, _RDF_TYPES[media]))
                return QueryResult.from_triples((q.triple for q in triples), max_rows=max_rows, seconds=seconds)
            if media == "application/sparql-results+xml":
                parsed = pyoxigraph.parse_query_results(data, format=pyoxigraph.QueryResultsFormat.XML)
            else:
                parsed = pyoxigraph.parse_query_results(data, format=pyoxigraph.QueryResultsFormat.JSON)
        except (SyntaxError, ValueError) as err:
            raise KgprobeError(f"SPARQL endpoint {self.url} sent an unreadable {media} answer: {err}") from None
        if isinstance(parsed, pyoxigraph.QueryBoolean):
            return QueryResult("ask", boolean=bool(parsed), seconds=seconds)
        return QueryResult.from_solutions(parsed, max_rows=max_rows, seconds=seconds)

    def _update(self, sparql: str, *, allow_update: bool, timeout_s: float | None) -> QueryResult:
        if not allow_update:
            raise update_refused()
        if self.read_only:
            raise KgprobeError(f"store {self.url} is open read-only; an update needs read_only=False")
        start = time.perf_counter()
        try:
            self._post_update(sparql, timeout_s)
        except _HttpError as err:
            raise KgprobeError(str(err)) from None
        return QueryResult("update", seconds=time.perf_counter() - start)

    def _select(self, sparql: str) -> list[dict[str, Any]]:
        result = self.query(sparql, timeout_s=None, max_rows=10**9)
        return [dict(zip(result.variables, row)) for row in result.values()]

    def graphs(self) -> list[tuple[str, int]]:
        """``(graph IRI, triple count)`` for every named graph of the endpoint but kgprobe's
        bookkeeping graph and unfinished loads, sorted by IRI."""
        marks = f"SELECT ?g WHERE {{ GRAPH <{BOOKKEEPING_GRAPH}> {{ ?g <{LOADING}> ?x }} }}"
        loading = {r["g"] for r in self._select(marks)}
        rows = self._select("SELECT ?g (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s ?p ?o } } GROUP BY ?g")
        return sorted((r["g"], int(r["n"])) for r in rows if r["g"] != BOOKKEEPING_GRAPH and r["g"] not in loading)

    def load(self, kg_or_path: KnowledgeGraph | KgSource | str | Path, *, graph: str | None = None,
             base: str = DEFAULT_BASE, progress: bool = False) -> LoadReport:
        """Load a KG into the named graph ``graph`` (as :meth:`kgprobe.kg.store_local.LocalStore.load`),
        replacing it; chunks of :data:`INSERT_CHUNK_LINES` triples, each its own request."""
        import sys

        from tqdm import tqdm

        if self.read_only:
            raise KgprobeError(f"store {self.url} is open read-only; open it with read_only=False to load")
        start = time.perf_counter()
        source = read_kg_source(kg_or_path, progress=progress)
        iri = check_graph_iri(graph or graph_iri(source.name, base=base))
        try:
            replaced = bool(self.query(f"ASK {{ GRAPH <{iri}> {{ ?s ?p ?o }} }}", timeout_s=None).boolean)
            self._post_update(begin_update(iri))
            self._post_update(f"DROP SILENT GRAPH <{iri}>")
            with tqdm(desc=f"loading {source.name}", unit=" triples", unit_scale=True, disable=not progress,
                      file=sys.stderr, leave=False) as bar:
                for lines in _line_chunks(ntriples_chunks(source.kg, base=base, graph=iri), INSERT_CHUNK_LINES):
                    self._post_update(f"INSERT DATA {{ GRAPH <{iri}> {{\n{''.join(lines)}}} }}")
                    bar.update(len(lines))
            count = self.query(f"SELECT (COUNT(*) AS ?n) WHERE {{ GRAPH <{iri}> {{ ?s ?p ?o }} }}", timeout_s=None)
            triples = int(count.values()[0][0])
            self._post_update(finish_update(iri, triples, source.source))
        except _HttpError as err:
            raise KgprobeError(str(err)) from None
        return LoadReport(iri, triples, time.perf_counter() - start, source.source, replaced)


class _HttpError(KgprobeError):
    """An HTTP error status, with its code (a 400 may be an update sent as a query)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _line_chunks(chunks: Any, size: int) -> Any:
    """Lists of at most ``size`` lines from text chunks of whole lines."""
    lines: list[str] = []
    for chunk in chunks:
        # split on "\n" only: str.splitlines would also split inside literals at U+2028 and friends
        lines.extend(line + "\n" for line in chunk.split("\n")[:-1])
        if len(lines) >= size:
            yield lines
            lines = []
    if lines:
        yield lines

