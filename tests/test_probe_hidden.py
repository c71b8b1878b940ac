"""Hidden-knowledge probing (kgprobe.probe.hidden): the split, the probe, the report, the errors."""
import json

import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.probe.fact_sets import FactSet, build_fact_set
from kgprobe.probe.hidden import (
    FIT,
    TEST,
    VALIDATION,
    HiddenOptions,
    fit_and_rank,
    plan_layers,
    plot_hidden,
    probe_hidden,
    relation_folds,
    split_facts,
    train_probe,
)
from tiny_models import smollm2_tokenizer, tiny_llama

TEMPLATES = {"capital": "The capital of [X] is [Y].", "continent": "[X] is in [Y].", "borders": "[X] borders [Y]."}


def _kg(n: int = 20) -> KnowledgeGraph:
    """``n`` countries: a capital each, one of 5 continents, borders with the next two (two facts
    per subject, so the split must keep a subject's facts together)."""
    triples, labels = [], {}
    for i in range(n):
        labels.update({f"C{i}": f"Country {i}", f"city{i}": f"City {i}", f"cont{i % 5}": f"Continent {i % 5}"})
        triples += [(f"C{i}", "capital", f"city{i}"), (f"C{i}", "continent", f"cont{i % 5}")]
        triples += [(f"C{i}", "borders", f"C{j % n}") for j in (i + 1, i + 2)]
    return KnowledgeGraph.from_labeled_triples(triples, entity_labels=labels, name="tiny")


def _facts(n: int = 20, k: int = 3) -> FactSet:
    return build_fact_set(_kg(n), TEMPLATES, k=k, relations=list(TEMPLATES), name="tiny")


@pytest.fixture(scope="module")
def lm():
    tok = smollm2_tokenizer()
    return tiny_llama(tok), tok


@pytest.fixture(scope="module")
def result(lm):
    return probe_hidden(*lm, _facts(), options=HiddenOptions(steps=50), batch_size=64, progress=False)


# ------------------------------------------------------------------ the split
def test_split_keeps_each_subject_on_one_side_and_is_seeded():
    facts = _facts().facts
    part = split_facts(facts, train_fraction=0.5, validation_fraction=0.25, seed=0)
    for rel in TEMPLATES:
        sides = {}
        for f, p in zip(facts, part):
            if f.relation == rel:
                sides.setdefault(f.subject_id, set()).add(int(p))
        assert all(len(s) == 1 for s in sides.values())  # a test subject never trains
        counts = [sum(s == {p} for s in sides.values()) for p in (FIT, VALIDATION, TEST)]
        assert counts == [8, 2, 10]
    assert (part == split_facts(facts, train_fraction=0.5, validation_fraction=0.25, seed=0)).all()
    assert (part != split_facts(facts, train_fraction=0.5, validation_fraction=0.25, seed=1)).any()


def test_relation_folds():
    assert relation_folds(["a", "b", "c"], None, 0) == [["a"], ["b"], ["c"]]
    (fold,) = relation_folds(["a", "b", "c"], 2, 0)
    assert len(fold) == 2 and fold == relation_folds(["a", "b", "c"], 2, 0)[0]
    assert relation_folds(["a"], None, 0) == []


# ------------------------------------------------------------------ the probe, on planted signals
def _planted(n_facts: int, width: int, d: int, signal: float, seed: int) -> torch.Tensor:
    """Gaussian features [n_facts * width, d]; each fact's first (true) statement shifted by
    ``signal`` along one fixed direction."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_facts * width, d, generator=g)
    direction = torch.randn(d, generator=g)
    x[::width] += signal * direction / direction.norm()
    return x


@pytest.mark.parametrize("signal, low, high", [(6.0, 0.97, 1.0), (0.0, 0.05, 0.4)])
def test_probe_finds_a_planted_direction_and_not_noise(signal, low, high):
    width, n = 5, 400
    x = _planted(n, width, 16, signal, seed=0)
    train = torch.arange(n) < n // 2
    (correct,) = fit_and_rank(x, train, [~train], width=width, l2=1e-2, steps=100)
    assert low <= correct.double().mean() <= high  # chance: 1 / 5


def test_probe_weights_the_classes_and_is_deterministic():
    x = _planted(100, 11, 8, 4.0, seed=1)
    y = torch.arange(len(x)) % 11 == 0
    w, b = train_probe(x, y, l2=1e-2, steps=100)
    w2, b2 = train_probe(x, y, l2=1e-2, steps=100)
    assert torch.equal(w, w2) and torch.equal(b, b2)
    # 1 true in 11: unweighted, the bias would call everything false; weighted, half the trues score > 0
    assert ((x[y] @ w + b) > 0).double().mean() > 0.9


# ------------------------------------------------------------------ the run
def test_result_keys_shapes_and_json(result, tmp_path):
    layers = result["layers"]
    assert layers == [0, 1, 2] and result["layer_plan"]["stride"] == 1
    assert set(result["lm_accuracy"]["relations"]) == set(TEMPLATES)
    assert len(result["probe_accuracy"]["overall"]) == len(layers)
    assert all(len(v) == len(layers) for v in result["probe_accuracy"]["relations"].values())
    assert result["best_layer"]["layer"] in layers and "validation" in result["best_layer"]["chosen_on"]
    gap = result["gap"]["overall"]
    assert gap["facts"] == result["split"]["test"]["facts"]
    assert sum(gap[c] for c in ("hidden_only", "lm_only", "both", "neither")) == pytest.approx(1)
    held = result["held_out_relations"]
    assert held["folds"] == [[r] for r in TEMPLATES] and len(held["accuracy"]["overall"]) == len(layers)
    json.dumps(result)
    plot_hidden(result, tmp_path / "hidden.png")
    assert (tmp_path / "hidden.png").stat().st_size > 1000


def test_same_seed_same_result(lm, result):
    again = probe_hidden(*lm, _facts(), options=HiddenOptions(steps=50), batch_size=64, progress=False)
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in result.items() if k != "seconds"}


def test_answer_feature_and_chosen_layers(lm):
    opts = HiddenOptions(layers=[2, 1], feature="answer", held_out_relations=2, steps=20)
    got = probe_hidden(*lm, _facts(), options=opts, batch_size=64, progress=False)
    assert got["layers"] == [1, 2] and len(got["held_out_relations"]["folds"][0]) == 2


def test_memory_budget_picks_a_stride_ending_at_the_last_layer():
    plan = plan_layers(None, n_layers=30, d=576, n_statements=100_000, budget_mb=4096)
    assert plan["stride"] == 4 and plan["layers"] == list(range(2, 31, 4)) and "one layer in 4" in plan["note"]
    assert plan["mib"] <= 4096
    assert plan_layers(None, n_layers=30, d=576, n_statements=1000, budget_mb=4096)["layers"] == list(range(31))


# ------------------------------------------------------------------ errors: one line, before the LM runs
def test_errors(lm):
    model, tok = lm
    with pytest.raises(KgprobeError, match=r"layer 3 out of range: .* 0\.\.2"):
        probe_hidden(model, tok, _facts(), options=HiddenOptions(layers=[3]), progress=False)
    with pytest.raises(KgprobeError, match="at least 3 subjects per relation"):
        probe_hidden(model, tok, FactSet("few", TEMPLATES, _facts().facts[:2]), progress=False)
    with pytest.raises(KgprobeError, match="leaves no relation to train on"):
        probe_hidden(model, tok, _facts(), options=HiddenOptions(held_out_relations=3), progress=False)
    from transformers import BertConfig, BertForMaskedLM

    bert = BertForMaskedLM(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32))
    with pytest.raises(KgprobeError, match="masked LM: hidden-state probing is for causal LMs") as err:
        probe_hidden(bert, tok, _facts(), progress=False)
    assert "\n" not in str(err.value)
    with pytest.raises(KgprobeError, match="no facts"):
        probe_hidden(model, tok, FactSet("empty", TEMPLATES, []), progress=False)


def test_bench_hidden_puts_the_gap_per_relation_into_facts_json(tmp_path):
    from conftest import load_bench

    bench = load_bench("bench_hidden")
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps({"agreement": {"k": "all"}}))
    result = {"model": "m", "best_layer": {"layer": 2, "index": 1, "chosen_on": "validation facts",
                                           "test_accuracy": 0.6},
              "lm_accuracy": {"overall": 0.5}, "probe_accuracy": {"relations": {"capital": [0.1, 0.7, 0.2]}},
              "gap": {"overall": {"hidden_only": 0.2, "lm_only": 0.1}}}
    bench.add_to_facts(result, tmp_path / "facts_hidden.json", facts)
    saved = json.loads(facts.read_text())
    assert saved["agreement"] == {"k": "all"}  # the other parts are kept
    assert saved["hidden"]["best_layer"] == 2 and saved["hidden"]["probe_accuracy_at_best_layer"] == {"capital": 0.7}
    assert saved["hidden"]["gap"]["overall"]["hidden_only"] == 0.2 and saved["hidden"]["source"] == "facts_hidden.json"
