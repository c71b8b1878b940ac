"""Runs one SPARQL query on an on-disk store in a child process, so that a time limit can stop it.

pyoxigraph keeps the GIL while it evaluates a query, so neither a thread nor a signal can
interrupt a slow one; a child process that is killed at the deadline can. This file is run as a
script (``python sparql_worker.py``) and imports nothing but pyoxigraph, so the child starts in a
fraction of a second. :mod:`kgprobe.kg.sparql_results` also imports it for :func:`solutions_tsv`.

Protocol: a JSON request on stdin ``{"store": DIR, "query": TEXT, "default_graphs": [IRI or ""],
"named_graphs": [IRI], "max_rows": N}`` (``""`` is the store's own default graph); on stdout one
JSON header line, then the body:

===========  ===========================================  ======================================
kind         header                                       body
===========  ===========================================  ======================================
``select``   ``{"kind", "variables", "truncated"}``       SPARQL TSV results, at most N rows
``ask``      ``{"kind", "boolean"}``                      nothing
``graph``    ``{"kind", "truncated"}``                    N-Triples, at most N triples
(error)      ``{"error": "syntax" | "store", "message"}``  nothing
===========  ===========================================  ======================================
"""
from __future__ import annotations

import json
import sys
from typing import Any, Iterable

import pyoxigraph


def solutions_tsv(variables: list[str], solutions: Iterable[Any], max_rows: int) -> tuple[bytes, bool]:
    """At most ``max_rows`` solutions as SPARQL 1.1 TSV results, and whether more were cut.

    Each term is written as pyoxigraph renders it, which is its N-Triples form, as TSV wants;
    N-Triples escapes tabs and newlines in literals, so a row is always one line.
    """
    lines = ["\t".join("?" + v for v in variables)]
    truncated = False
    for i, solution in enumerate(solutions):
        if i == max_rows:
            truncated = True
            break
        lines.append("\t".join("" if solution[v] is None else str(solution[v]) for v in variables))
    return ("\n".join(lines) + "\n").encode("utf-8"), truncated


def run(request: dict) -> tuple[dict, bytes]:
    """The header and body for one request (see the module docstring)."""
    def graph(iri: str) -> Any:
        return pyoxigraph.DefaultGraph() if iri == "" else pyoxigraph.NamedNode(iri)

    try:
        store = pyoxigraph.Store.read_only(request["store"])
        result = store.query(request["query"], default_graph=[graph(g) for g in request["default_graphs"]],
                             named_graphs=[graph(g) for g in request["named_graphs"]])
        max_rows = request["max_rows"]
        if isinstance(result, pyoxigraph.QueryBoolean):
            return {"kind": "ask", "boolean": bool(result)}, b""
        if isinstance(result, pyoxigraph.QueryTriples):
            triples = []
            for triple in result:
                if len(triples) == max_rows:
                    return {"kind": "graph", "truncated": True}, _ntriples(triples)
                triples.append(triple)
            return {"kind": "graph", "truncated": False}, _ntriples(triples)
        variables = [v.value for v in result.variables]
        body, truncated = solutions_tsv(variables, result, max_rows)
        return {"kind": "select", "variables": variables, "truncated": truncated}, body
    except SyntaxError as err:
        return {"error": "syntax", "message": str(err)}, b""
    except (OSError, ValueError, RuntimeError) as err:  # reading the store, or evaluating (e.g. a SERVICE call)
        return {"error": "store", "message": str(err) or type(err).__name__}, b""


def _ntriples(triples: list) -> bytes:
    return pyoxigraph.serialize(triples, format=pyoxigraph.RdfFormat.N_TRIPLES) or b""


def main() -> None:
    header, body = run(json.loads(sys.stdin.buffer.read()))
    out = sys.stdout.buffer
    out.write(json.dumps(header).encode("utf-8") + b"\n")
    out.write(body)
    out.flush()


if __name__ == "__main__":
    main()
