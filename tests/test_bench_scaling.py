"""The cost-curve and approximate-search benchmarks (eval/bench_scaling.py, eval/bench_ann.py) at
tiny sizes: the result files have the documented shape."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _run(script: str, *args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "eval" / script), *args], check=True, env=ENV, cwd=ROOT,
                   timeout=300)


def test_bench_scaling_quick(tmp_path):
    out, png = tmp_path / "scaling.json", tmp_path / "scaling.png"
    _run("bench_scaling.py", "--quick", "--out", str(out), "--plot", str(png))
    record = json.loads(out.read_text())
    assert record["benchmark"] == "scaling"
    run = record["machines"]["cpu"]
    assert run["machine"]["cpu_count"] >= 1 and run["quick"] is True
    stages = run["stages"]
    assert set(stages) == {"kg_dir", "ntriples", "split", "embed", "index_flat", "index_ivf", "lp_eval"}
    for name, stage in stages.items():
        assert stage["expected"].startswith("linear") and stage["unit"] in {"entities", "vectors", "candidates"}
        points = [p for p in stage["points"] if "seconds" in p]
        assert len(points) >= 3, name
        sizes = [p["size"] for p in points]
        assert sizes == sorted(sizes) and sizes[-1] >= 10 * sizes[0]
        for p in points:
            assert p["seconds"] >= 0 and p["cpu_seconds"] >= 0 and p["peak_rss_bytes"] >= p["baseline_rss_bytes"] > 0
        for key in ("time_exponent", "memory_exponent", "cpu_time_exponent"):
            assert isinstance(stage[key], float) and math.isfinite(stage[key]), (name, key)
        judged = stage.get("time_exponent_from", {}).get("exponent") or stage["time_exponent"]
        assert stage["superlinear"] == (judged > 1.15)
    # IVF is judged from 65,536 vectors (below, every vector trains k-means by design): the quick
    # sizes are all below, so its whole fit is what counts
    assert stages["index_ivf"]["time_exponent_from"]["size"] == 65_536
    assert stages["kg_dir"]["points"][0]["same_kg"] and stages["ntriples"]["points"][0]["same_kg"]
    assert "encoder" in stages["embed"]
    assert png.stat().st_size > 10_000

    # a second machine's file merges in beside the first
    other = json.loads(out.read_text())
    other["machines"] = {"gpu:Test GPU": other["machines"]["cpu"]}
    (tmp_path / "gpu.json").write_text(json.dumps(other))
    _run("bench_scaling.py", "--merge", str(tmp_path / "gpu.json"), "--out", str(out), "--plot", str(png))
    assert set(json.loads(out.read_text())["machines"]) == {"cpu", "gpu:Test GPU"}


def test_bench_ann_quick(tmp_path):
    out = tmp_path / "ann.json"
    _run("bench_ann.py", "--quick", "--out", str(out))
    result = json.loads(out.read_text())
    configs = {c["name"]: c for c in result["configs"]}
    assert configs["Flat"]["searches"][0]["recall_at_10"] == 1.0
    kinds = {c.get("kind") for c in configs.values()}
    assert {"ivf", "ivfpq", "opq+ivfpq", "hnsw"} <= kinds
    for config in configs.values():
        assert config["index_bytes"] > 0 and config["build_seconds"] >= 0
        for search in config["searches"]:
            assert 0.0 <= search["recall_at_10"] <= 1.0 and search["queries_per_s"] > 0
    # IVF-Flat visiting every cell is exact
    ivf = next(c for c in configs.values() if c.get("kind") == "ivf")
    assert max(s["recall_at_10"] for s in ivf["searches"]) > 0.95
    assert result["plan"]["kind"] == "flat" and result["plans_at"]["10M"]["kind"] == "ivfpq"
    assert set(result["projected_index_bytes"]["Flat"]) == {"2M", "Wikidata5M (4.6M)", "10M"}
