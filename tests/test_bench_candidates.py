"""eval/bench_candidates.py: test MRR against candidate sets of different sizes."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import load_bench

from kgprobe.cli import main
from kgprobe.linkpred.run import load_split_data


def _cli(args):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cand")
    _cli(["data", "build", "umls", "--inductive", "--out", str(root / "umls")])
    _cli(["linkpred", "train", "--data", str(root / "umls"), "--out", str(root / "run"), "--encoder", "bow",
          "--epochs", "2", "--lr", "1e-2", "--max-train-triples", "800", "--device", "cpu", "--quiet"])
    return root / "run", root / "umls"


def test_fewer_candidates_never_rank_worse(trained):
    bench = load_bench("bench_candidates")
    run_dir, data = trained
    split = load_split_data(data)
    test = split.triples["test"]
    needed = torch.unique(torch.cat([test[:, 0], test[:, 2]]))
    n = split.graph.num_entities
    small = len(needed) + 3
    result = bench.scaling(run_dir, data, sizes=[n, small], seeds=[0, 1], device="cpu")
    rows = result["candidates"]
    reported = json.loads((run_dir / "test_metrics.json").read_text())
    assert rows["all"]["candidates"] == n
    assert rows["all"]["mrr"] == pytest.approx(reported["both.realistic.mrr"], abs=1e-5)
    for seed in (0, 1):
        full = rows[f"size_{n}_seed{seed}"]
        assert full["candidates"] == n and full["mrr"] == pytest.approx(rows["all"]["mrr"], abs=1e-5)
        assert rows[f"size_{small}_seed{seed}"]["mrr"] >= rows["all"]["mrr"]
    assert rows[f"size_{small}_mean"]["mrr"] == pytest.approx(
        (rows[f"size_{small}_seed0"]["mrr"] + rows[f"size_{small}_seed1"]["mrr"]) / 2, abs=1e-5)
    sets = bench.candidate_sets(test, split.all_triples, n, [small], [0])
    picked = sets[f"size_{small}_seed0"]
    assert len(picked) == small and set(needed.tolist()) <= set(picked.tolist())
    assert torch.equal(picked, bench.candidate_sets(test, split.all_triples, n, [small], [0])[f"size_{small}_seed0"])
    with pytest.raises(SystemExit, match="fewer than the"):
        bench.candidate_sets(test, split.all_triples, n, [len(needed) - 1], [0])
