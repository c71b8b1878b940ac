"""eval/bench_scale.py: merging the parts' result files into eval/results/scale.json."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_bench

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_scale")


def test_parts_sit_side_by_side_by_machine(bench):
    cpu = {"machine": {"cuda": False, "device_name": "cpu"}, "x": 1}
    gpu = {"machine": {"cuda": True, "device_name": "NVIDIA H200"}, "x": 2}
    record = bench.merge(None, "ddp", cpu)
    record = bench.merge(record, "ddp", gpu)
    record = bench.merge(record, "index", cpu)
    record = bench.merge(record, "ddp", {**cpu, "x": 3})  # a rerun replaces its own machine's entry only
    assert record["parts"] == {"ddp": {"cpu": {**cpu, "x": 3}, "gpu:NVIDIA H200": gpu}, "index": {"cpu": cpu}}
    assert record["scripts"]["harvest"] == "eval/scale_harvest.py"


def test_add_merges_a_written_file_and_refuses_an_unknown_part(tmp_path):
    part = tmp_path / "h.json"
    part.write_text(json.dumps({"machine": {"cuda": False}, "tuples_per_s": 0.3}))
    out = tmp_path / "scale.json"
    script = [sys.executable, str(ROOT / "eval" / "bench_scale.py")]
    done = subprocess.run([*script, "--add", f"harvest={part}", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["parts"]["harvest"]["cpu"]["tuples_per_s"] == 0.3
    bad = subprocess.run([*script, "--add", f"walk={part}", "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "--add wants NAME=FILE with NAME one of harvest, ddp, index" in bad.stderr
