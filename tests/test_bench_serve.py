"""eval/bench_serve.py: its small mode on a tiny KG end to end, and its committed result."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_bench

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "eval" / "results" / "serve.json"


def test_query_set_and_plan_cover_every_route_group():
    from kgprobe.kg.datasets import build_dataset

    bench = load_bench("bench_serve")
    kg = build_dataset("nations")
    queries = bench.query_set(kg)
    assert len(queries) == 10 and len({q["name"] for q in queries}) == 10
    urls, plan = bench.request_plan(kg, "nations", [{"entities": ["usa", "uk"]}], queries, n=50, entities=5, seed=0)
    assert [g for g, _ in plan].count("sparql") == 10 and {g for g, _ in plan} == set(bench.GROUPS)
    assert len(urls["entity"]) == 5 and all(u.startswith("/entity/nations/") for u in urls["entity"])


@pytest.mark.slow
def test_small_mode_serves_every_request_and_both_engines_agree(tmp_path):
    out = tmp_path / "serve.json"
    done = subprocess.run([sys.executable, str(ROOT / "eval" / "bench_serve.py"), "--dataset", "nations",
                           "--harvest-run", "none", "--requests", "40", "--concurrency", "4", "--entities", "5",
                           "--out", str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    load = result["load"]
    assert load["requests"] == 40 and load["errors"] == 0 and load["warmup"]["errors"] == 0
    assert all(load["groups"][g]["requests"] == 8 for g in ("runs", "harvest", "entity", "api", "sparql"))
    assert load["all"]["p50_ms"] <= load["all"]["p95_ms"] <= load["all"]["p99_ms"]
    assert result["store"]["rdf_triples"] > result["dataset"]["triples"] and result["store"]["store_bytes"] > 0
    engines = result["engines"]
    assert engines["all_same_rows"] and engines["all_same_values"] and len(engines["queries"]) == 10
    assert engines["rdflib_graph_triples"] == result["store"]["rdf_triples"]
    assert "cpu_count" in result["machine"]


def test_committed_result_had_no_errors_and_agreeing_engines():
    result = json.loads(RESULT.read_text())
    assert result["dataset"]["name"] == "wordnet" and result["load"]["requests"] >= 2000
    assert result["load"]["errors"] == 0 and result["load"]["warmup"]["errors"] == 0
    assert result["engines"]["all_same_rows"] and result["engines"]["all_same_values"]
