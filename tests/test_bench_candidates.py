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
    # per relation: the counts add up, and the count-weighted mean is the overall MRR
    table = result["per_relation_all_candidates"]
    assert sum(r["test_triples"] for r in table.values()) == len(test)
    weighted = sum(r["mrr"] * r["test_triples"] for r in table.values()) / len(test)
    assert weighted == pytest.approx(rows["all"]["mrr"], abs=1e-4)
    assert all(r["symmetric"] == (r["mutual_share"] >= 0.5) for r in table.values())
    assert any(r["symmetric"] for r in table.values())  # UMLS: degree_of, precedes, result_of
    sets = bench.candidate_sets(test, split.all_triples, n, [small], [0])
    picked = sets[f"size_{small}_seed0"]
    assert len(picked) == small and set(needed.tolist()) <= set(picked.tolist())
    assert torch.equal(picked, bench.candidate_sets(test, split.all_triples, n, [small], [0])[f"size_{small}_seed0"])
    with pytest.raises(SystemExit, match="fewer than the"):
        bench.candidate_sets(test, split.all_triples, n, [len(needed) - 1], [0])


def test_query_entity_itself_by_brute_force(trained):
    from kgprobe.linkpred.run import load_for_evaluation

    bench = load_bench("bench_candidates")
    run_dir, data = trained
    run, split, entities = load_for_evaluation(run_dir, data, device="cpu")
    relations = run.model.relations.weight.detach().float()
    test, known = split.triples["test"], split.all_triples
    with torch.no_grad():
        got = bench.query_entity_first(entities, relations, run.model.scorer, test, known)
        # every tail query (h, r, ?) scored against every entity; known tails of (h, r) removed
        scores = run.model.scorer.score(entities[test[:, 0], None], relations[test[:, 1], None], entities[None])
    answer = scores[torch.arange(len(test)), test[:, 2]]
    own = scores[torch.arange(len(test)), test[:, 0]]
    assert got["tail_queries_head_above_answer"] == pytest.approx(float((own > answer).float().mean()), abs=1e-5)
    known_tails = torch.zeros_like(scores, dtype=torch.bool)
    for i, (h, r) in enumerate(test[:, :2].tolist()):
        known_tails[i, known[(known[:, 0] == h) & (known[:, 1] == r)][:, 2]] = True
    known_tails[torch.arange(len(test)), test[:, 0]] = False  # the entity itself is what is ranked
    others = scores.masked_fill(known_tails, float("-inf"))
    others[torch.arange(len(test)), test[:, 0]] = float("-inf")
    first = (own > others.max(dim=1).values).float().mean()  # no ties with float scores of a trained model
    assert got["tail_queries_head_first"] == pytest.approx(float(first), abs=1e-5)
    assert 0.0 <= got["head_queries_tail_first"] <= 1.0 and 0.0 <= got["head_queries_tail_above_answer"] <= 1.0
