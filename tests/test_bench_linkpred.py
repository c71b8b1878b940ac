"""eval/bench_linkpred.py parts (b) and (c): what they report comes from the runs they read or make."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_bench

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    return load_bench("bench_linkpred")


def test_part_b_reports_the_kept_pipeline_runs(tmp_path):
    bench = _bench()
    out = tmp_path / "lp.json"
    sections = bench.main(["--part", "b", "--out", str(out)])
    runs = sections["wordnet_inductive"]["runs"]
    assert runs and json.loads(out.read_text())["wordnet_inductive"] == sections["wordnet_inductive"]
    assert any(run["test"] is None for run in runs)  # the mean-pooling run: validation only
    for run in runs:
        folder = ROOT / run["folder"]
        if run["test"] is not None:
            folder = folder / "blp_transe" if (folder / "blp_transe").is_dir() else folder
        history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert run["valid_mrr_by_epoch"] == {str(r["epoch"]): pytest.approx(r["metric"], abs=1e-5)
                                             for r in history if r.get("metric") is not None}
        assert "H200" in run["device"] or "CPU" in run["device"]  # device.txt or run.json says where it ran
        if run["test"] is None:
            assert run["config"]["pooling"] == "mean"
            continue
        test = json.loads((folder / "test_metrics.json").read_text())
        assert run["test"]["both.realistic.mrr"] == pytest.approx(test["both.realistic.mrr"], abs=1e-5)
        assert run["meets_blp_wn18rr_0.285"] == (test["both.realistic.mrr"] >= 0.285)
        assert list(run["valid_mrr_by_epoch"])[-1] == str(run["config"]["epochs"])  # the last epoch validated
    best = sections["wordnet_inductive"]["best"]
    assert best["test_mrr"] == max(r["test"]["both.realistic.mrr"] for r in runs if r["test"] is not None)


def test_the_wordnet_pipeline_as_it_stands_is_a_kept_run_that_meets_blp():
    """The figure claimed for pipelines/linkpred_wordnet.yaml belongs to a run of that file as it stands."""
    import yaml

    pipeline = yaml.safe_load((ROOT / "pipelines" / "linkpred_wordnet.yaml").read_text())
    step = next(s for s in pipeline["steps"] if s["type"] == "linkpred_train")
    matching = []
    for record_path in sorted((ROOT / "eval" / "results" / "wordnet_inductive").glob("*/run.json")):
        record = json.loads(record_path.read_text())
        kept = next(s for s in record["config"]["steps"] if s["type"] == "linkpred_train")
        if record["pipeline"] == "pipelines/linkpred_wordnet.yaml" and all(kept.get(k) == v for k, v in step.items()):
            matching.append(json.loads((record_path.parent / "test_metrics.json").read_text()))
    assert matching, "no kept run of pipelines/linkpred_wordnet.yaml with its current settings"
    assert max(m["both.realistic.mrr"] for m in matching) >= 0.285


@pytest.mark.slow
def test_part_c_compares_the_samplers_on_one_budget(tmp_path):
    from kgprobe.kg.build import build_and_save

    build_and_save("umls", tmp_path / "split", inductive=True, seed=0, progress=False)
    bench = _bench()
    sections = bench.main(["--part", "c", "--c-data", str(tmp_path / "split"), "--work-dir", str(tmp_path / "w"),
                           "--c-epochs", "1", "--c-negatives", "8", "--c-seeds", "0", "1", "--c-label", "umls",
                           "--out", str(tmp_path / "lp.json")])
    c = sections["uniform_vs_lemon_umls"]
    for arm in ("uniform", "lemon"):
        assert [r["seed"] for r in c[arm]] == [0, 1]
        for row in c[arm]:
            test = json.loads((tmp_path / "w" / f"{arm}_seed{row['seed']}" / "test_metrics.json").read_text())
            assert row["test"]["both.realistic.mrr"] == pytest.approx(test["both.realistic.mrr"], abs=1e-5)
    diffs = [lemon["test"]["both.realistic.mrr"] - uniform["test"]["both.realistic.mrr"]
             for uniform, lemon in zip(c["uniform"], c["lemon"])]
    assert c["lemon_minus_uniform_test_mrr"]["per_seed"] == pytest.approx(diffs, abs=1e-5)
    assert c["lemon_minus_uniform_test_mrr"]["lemon_better_in"] == sum(d > 0 for d in diffs)
    hard = c["negatives_hardness"]
    assert set(hard) == {"model_trained_with_uniform", "model_trained_with_lemon"}
    for by_model in hard.values():
        assert set(by_model) == {"uniform", "lemon"}
        assert all(0.0 <= v["share_within_margin"] <= 1.0 for v in by_model.values())
