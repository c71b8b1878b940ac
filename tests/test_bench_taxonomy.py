"""eval/bench_taxonomy.py and its committed result: the library's defaults are what it chose."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_bench
from kgprobe.index import Taxonomy
from kgprobe.index.taxonomy import FLOOR, OWN_WEIGHT, TOP

RESULT = Path(__file__).resolve().parent.parent / "eval" / "results" / "taxonomy.json"


def test_committed_result_matches_the_library():
    result = json.loads(RESULT.read_text())
    chosen = result["chosen_on_validation"]
    assert chosen == result["library_defaults"] == {"top": TOP, "floor": FLOOR, "own_weight": OWN_WEIGHT}
    for name in ("random", "two_parents"):
        test = result["test"][name]
        assert test["defaults"]["mrr"] > test["plain"]["mrr"] + 0.02, name
    assert result["example"]["defaults_rank_of_dog"] <= 5 < result["example"]["plain_rank_of_dog"]
    assert result["library_check"]["same_rank_as_taxonomy_search"] == result["library_check"]["queries"] > 0


def test_dense_ranks_count_strictly_better_scores():
    bench = load_bench("bench_taxonomy")
    tax = Taxonomy.from_edges([2, 2, 3], [0, 1, 0], 5)
    vectors = torch.eye(5)
    q = torch.tensor([[0.9, 0.8, 0.1, 0.0, 0.0]])
    ranker = bench.Ranker(q, vectors, tax, max_top=3)
    assert ranker.plain(np.array([1])).tolist() == [2]
    # classes 0 (0.9 - 0.5) and 1 (0.8 - 0.5): entity 2 is under both -> 0.7 + 0.1 * 0.1
    ranks = ranker.taxonomy_ranks(np.array([2]), top=3, floor=0.5, own_weights=[0.1])
    assert ranks == {0.1: [1]}
    assert bench.metrics(np.array([1, 2, 4]))["mrr"] == pytest.approx(round((1 + 0.5 + 0.25) / 3, 4))
