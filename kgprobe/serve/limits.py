"""The bounds of everything ``kgprobe serve`` reads, computes or returns for one request."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Upper bounds; a request asking for more gets at most this much (or a 400 where it says so)."""

    #: run directories listed on the runs page, and how deep under RUNS_DIR they are looked for
    max_runs: int = 2000
    max_depth: int = 4
    #: rows of one page of a table (the harvest page's ``size``)
    page_size: int = 500
    default_page_size: int = 100
    #: lines read from one JSONL file (tuples.jsonl, discovered.jsonl, ...)
    max_lines: int = 200_000
    #: bytes of one JSON record file read whole (run.json, null.json, ...)
    max_json_bytes: int = 64 * 2**20
    #: facts shown on an entity page, and neighbours drawn in its graph
    max_facts: int = 200
    max_graph_nodes: int = 40
    #: answers per (entity, relation, ?) and relations asked, for link prediction; neighbours shown
    max_predictions: int = 10
    max_relations: int = 20
    max_neighbors: int = 20
    #: characters of a new entity's text encoded on the entity page, and of a filter string
    max_text_chars: int = 2000
    #: SPARQL: characters of a query, seconds it may run, rows it may return
    max_query_chars: int = 20_000
    query_timeout_s: float = 30.0
    max_result_rows: int = 10_000
    #: SPARQL queries evaluated at once (each is a process): more would only share the cores and all
    #: run past their time limit together; the others wait for a slot, up to query_timeout_s (then 503)
    max_concurrent_queries: int = max(1, os.cpu_count() or 1)
    #: trained models and loaded graphs kept in memory at once
    cached_models: int = 2
    cached_graphs: int = 8
