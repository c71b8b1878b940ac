"""The result of one SPARQL query, and its writers: the W3C results formats and a table for humans.

A :class:`QueryResult` keeps the result as text in a standard format (SPARQL 1.1 TSV results for
``SELECT``, N-Triples for ``CONSTRUCT`` / ``DESCRIBE``), already cut to the row limit. The JSON,
CSV and TSV writers are pyoxigraph's (``QuerySolutions.serialize``) run over that text, so every
format says exactly the same; only the plain-text table is written here.

Rows hold each term as **N-Triples text** (``<https://...>``, ``"label"``, ``"0.9"^^<...#double>``,
``"chat"@fr``, ``_:b0``; ``None`` where a variable is unbound): lossless, and an IRI never looks
like a string. :meth:`QueryResult.values` gives plain values instead (an IRI or a literal's
lexical form), as the CSV format does.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

import pyoxigraph

from kgprobe.errors import KgprobeError
from kgprobe.kg.sparql_worker import solutions_tsv

ResultKind = Literal["select", "ask", "graph", "update"]
#: fmt -> media type (SPARQL 1.1 Query Results JSON / CSV / TSV, RDF 1.1 N-Triples / Turtle)
MEDIA_TYPES = {
    "json": "application/sparql-results+json",
    "csv": "text/csv",
    "tsv": "text/tab-separated-values",
    "table": "text/plain",
    "ntriples": "application/n-triples",
    "turtle": "text/turtle",
}
SOLUTION_FORMATS = ("json", "csv", "tsv", "table")
GRAPH_FORMATS = ("ntriples", "turtle", "table")
_RESULTS_FORMATS = {"json": pyoxigraph.QueryResultsFormat.JSON, "csv": pyoxigraph.QueryResultsFormat.CSV,
                    "tsv": pyoxigraph.QueryResultsFormat.TSV}
TABLE_CELL_WIDTH = 60  # characters; longer values end in "..."
TRIPLE_VARIABLES = ("subject", "predicate", "object")
# prefixes for Turtle output: the vocabularies and kgprobe's own namespaces at the default base
TURTLE_PREFIXES = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#", "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "xsd": "http://www.w3.org/2001/XMLSchema#", "dcterms": "http://purl.org/dc/terms/",
    "kgp": "https://kgprobe.org/kg/schema#", "entity": "https://kgprobe.org/kg/entity/",
    "relation": "https://kgprobe.org/kg/relation/", "triple": "https://kgprobe.org/kg/triple/",
}


@dataclass(frozen=True)
class QueryResult:
    """One query's answer: ``kind`` is ``"select"`` (``variables`` and ``rows``), ``"ask"``
    (``boolean``), ``"graph"`` (CONSTRUCT / DESCRIBE: ``rows`` of subject, predicate, object) or
    ``"update"`` (an update run with ``allow_update``: nothing).

    ``truncated``: more rows (or triples) existed than the ``max_rows`` the query ran with; they
    were cut. ``seconds``: the time the query took.
    """

    kind: ResultKind
    variables: tuple[str, ...] = ()
    rows: list[tuple[str | None, ...]] = field(default_factory=list)
    boolean: bool | None = None
    truncated: bool = False
    seconds: float = 0.0
    body: bytes = field(default=b"", repr=False)  # TSV results (select) or N-Triples (graph)

    @classmethod
    def from_tsv(cls, body: bytes, *, truncated: bool, seconds: float = 0.0) -> "QueryResult":
        solutions = pyoxigraph.parse_query_results(body, format=pyoxigraph.QueryResultsFormat.TSV)
        variables = tuple(v.value for v in solutions.variables)
        rows = [tuple(None if s[v] is None else str(s[v]) for v in variables) for s in solutions]
        return cls("select", variables, rows, truncated=truncated, seconds=seconds, body=body)

    @classmethod
    def from_solutions(cls, solutions: Any, *, max_rows: int, seconds: float = 0.0) -> "QueryResult":
        """From a pyoxigraph ``QuerySolutions`` (e.g. parsed from an endpoint's answer), cut to ``max_rows``."""
        body, truncated = solutions_tsv([v.value for v in solutions.variables], solutions, max_rows)
        return cls.from_tsv(body, truncated=truncated, seconds=seconds)

    @classmethod
    def from_triples(cls, triples: Iterable[Any], *, max_rows: int, seconds: float = 0.0) -> "QueryResult":
        """From pyoxigraph triples, cut to ``max_rows``."""
        kept, truncated = [], False
        for triple in triples:
            if len(kept) == max_rows:
                truncated = True
                break
            kept.append(triple)
        body = pyoxigraph.serialize(kept, format=pyoxigraph.RdfFormat.N_TRIPLES) or b""
        return cls.from_ntriples(body, truncated=truncated, seconds=seconds)

    @classmethod
    def from_ntriples(cls, body: bytes, *, truncated: bool, seconds: float = 0.0) -> "QueryResult":
        triples = pyoxigraph.parse(body, format=pyoxigraph.RdfFormat.N_TRIPLES)
        rows = [(str(t.subject), str(t.predicate), str(t.object)) for t in triples]
        return cls("graph", TRIPLE_VARIABLES, rows, truncated=truncated, seconds=seconds, body=body)

    def values(self) -> list[tuple[str | None, ...]]:
        """The rows with plain values: an IRI without brackets, a literal's lexical form, a blank node's label."""
        if self.kind == "select":
            solutions = pyoxigraph.parse_query_results(self.body, format=pyoxigraph.QueryResultsFormat.TSV)
            return [tuple(None if s[v] is None else s[v].value for v in self.variables) for s in solutions]
        if self.kind == "graph":
            triples = pyoxigraph.parse(self.body, format=pyoxigraph.RdfFormat.N_TRIPLES)
            return [(t.subject.value, t.predicate.value, _value(t.object)) for t in triples]
        return []

    def formats(self) -> tuple[str, ...]:
        """The formats :meth:`serialize` can write for this result."""
        return GRAPH_FORMATS if self.kind == "graph" else SOLUTION_FORMATS

    def media_type(self, fmt: str) -> str:
        """The media type of ``serialize(fmt)`` (e.g. ``application/sparql-results+json``)."""
        self._check(fmt)
        return MEDIA_TYPES[fmt]

    def serialize(self, fmt: str) -> bytes:
        """The result as ``fmt``: ``json`` / ``csv`` / ``tsv`` (the W3C SPARQL 1.1 results formats;
        CSV has plain values, TSV N-Triples terms) or ``table`` for select and ask results;
        ``ntriples`` / ``turtle`` / ``table`` for graph results. Truncation is not written into
        the standard formats (they have no place for it): check :attr:`truncated`."""
        self._check(fmt)
        if fmt == "table":
            return self.table().encode("utf-8")
        if self.kind == "graph":
            if fmt == "ntriples":
                return self.body
            triples = pyoxigraph.parse(self.body, format=pyoxigraph.RdfFormat.N_TRIPLES)
            return pyoxigraph.serialize(triples, format=pyoxigraph.RdfFormat.TURTLE, prefixes=TURTLE_PREFIXES) or b""
        if self.kind in ("ask", "update"):
            return _boolean_results(bool(self.boolean), fmt)
        solutions = pyoxigraph.parse_query_results(self.body, format=pyoxigraph.QueryResultsFormat.TSV)
        return solutions.serialize(format=_RESULTS_FORMATS[fmt])

    def table(self) -> str:
        """A plain-text table for people: IRIs in ``<>``, literals as their text, a count below."""
        if self.kind == "ask":
            return "true\n" if self.boolean else "false\n"
        if self.kind == "update":
            return "update done\n"
        header = list(self.variables)
        cells = [[_short(_cell(v)) for v in row] for row in self.values_as_shown()]
        widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
        lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
                 "-+-".join("-" * w for w in widths)]
        lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
        noun = "triple" if self.kind == "graph" else "row"
        count = f"{len(cells)} {noun}{'' if len(cells) == 1 else 's'}"
        lines.append(f"({count}; more were cut at the row limit)" if self.truncated else f"({count})")
        return "\n".join(lines) + "\n"

    def values_as_shown(self) -> list[tuple[Any, ...]]:
        """Rows of pyoxigraph terms (``None`` for unbound), for :meth:`table`."""
        if self.kind == "select":
            solutions = pyoxigraph.parse_query_results(self.body, format=pyoxigraph.QueryResultsFormat.TSV)
            return [tuple(s[v] for v in self.variables) for s in solutions]
        triples = pyoxigraph.parse(self.body, format=pyoxigraph.RdfFormat.N_TRIPLES)
        return [(t.subject, t.predicate, t.object) for t in triples]

    def _check(self, fmt: str) -> None:
        if fmt not in MEDIA_TYPES:
            raise KgprobeError(f"unknown result format {fmt!r} (expected one of {', '.join(MEDIA_TYPES)})")
        if fmt not in self.formats():
            what = "a CONSTRUCT or DESCRIBE result" if self.kind == "graph" else f"an {self.kind.upper()} result"
            raise KgprobeError(f"{what} cannot be written as {fmt}; use one of {', '.join(self.formats())}")


def _value(term: Any) -> str:
    return term.value if hasattr(term, "value") else str(term)  # an RDF 1.2 triple term has no value


def _cell(term: Any) -> str:
    if term is None:
        return ""
    if isinstance(term, pyoxigraph.NamedNode):
        return f"<{term.value}>"
    if isinstance(term, pyoxigraph.Literal):
        return term.value
    return str(term)  # a blank node (_:x) or a triple term


def _short(text: str) -> str:
    text = " ".join(text.split())  # a table row stays one line
    return text if len(text) <= TABLE_CELL_WIDTH else text[:TABLE_CELL_WIDTH - 3] + "..."


def _boolean_results(value: bool, fmt: str) -> bytes:
    """An ASK answer in ``fmt``: pyoxigraph's writer, over the JSON form of the W3C results format."""
    parsed = pyoxigraph.parse_query_results(json.dumps({"head": {}, "boolean": value}),
                                            format=pyoxigraph.QueryResultsFormat.JSON)
    return parsed.serialize(format=_RESULTS_FORMATS[fmt])
