"""eval/bench_rerank.py: the gloss parsing and the metrics it reports."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_rerank")


def test_definition_drops_examples(bench):
    assert bench.definition('a member of the genus Canis; "the dog barked all night"') == \
        "a member of the genus Canis"
    assert bench.definition("hit something so that it bounces; bounce a ball") == "hit something so that it bounces"
    assert bench.definition('(trademark) a pocket-sized device') == "(trademark) a pocket-sized device"


def test_metrics_count_misses_beyond_the_depth_as_zero(bench):
    ranks = np.array([1, 4, 12, np.inf])
    m = bench.metrics(ranks, depth=10)
    assert m["mrr"] == pytest.approx(round((1 + 0.25) / 4, 4))
    assert (m["hits_at_1"], m["hits_at_5"], m["hits_at_10"]) == (0.25, 0.5, 0.5)
    full = bench.metrics(np.array([1, 4, 12, 200]))
    assert full["mrr"] == pytest.approx(round((1 + 0.25 + 1 / 12 + 1 / 200) / 4, 4))
    assert not math.isnan(full["mrr"])
