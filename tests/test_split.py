"""The inductive split keeps its promises: disjoint held-out sets, a usable training graph,
seeded determinism, honest stats."""
from __future__ import annotations

import time

import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.kg.split import InductiveSplit, inductive_split

MIN_NEIGHBORS = 2
MIN_RELATION_EDGES = 20


def _random_graph(*, entities: int = 2000, relations: int = 4, triples: int = 9000, seed: int = 7) -> KnowledgeGraph:
    g = torch.Generator().manual_seed(seed)
    heads = torch.randint(entities, (triples,), generator=g)
    tails = torch.randint(entities, (triples,), generator=g)
    # a skewed relation distribution, so the rarest relation is the binding constraint
    rels = torch.multinomial(torch.tensor([0.6, 0.3, 0.09, 0.01])[:relations], triples,
                             replacement=True, generator=g)
    return KnowledgeGraph(
        entity_ids=[f"e{i}" for i in range(entities)],
        relation_ids=[f"r{i}" for i in range(relations)],
        triples=torch.stack([heads, rels, tails], dim=1),
        scores=torch.rand(triples, generator=g),
        provenance=[f"p{i % 3}" for i in range(triples)],
        name="random",
    ).dedup()


@pytest.fixture(scope="module")
def graph() -> KnowledgeGraph:
    return _random_graph()


@pytest.fixture(scope="module")
def split(graph) -> InductiveSplit:
    return inductive_split(graph, seed=0, min_neighbors=MIN_NEIGHBORS,
                           min_relation_edges=MIN_RELATION_EDGES, progress=False)


def _entities_in(kg: KnowledgeGraph) -> set[int]:
    return set(kg.triples[:, [0, 2]].reshape(-1).tolist())


def _check_disjoint(split: InductiveSplit, source: KnowledgeGraph) -> None:
    train_e = set(split.train_entities.tolist())
    valid_e = set(split.valid_entities.tolist())
    test_e = set(split.test_entities.tolist())
    assert not (train_e & valid_e) and not (train_e & test_e) and not (valid_e & test_e)
    assert train_e | valid_e | test_e == set(range(source.num_entities))
    for ents in (split.train_entities, split.valid_entities, split.test_entities):
        assert torch.equal(ents, torch.sort(ents).values)
    # no held-out entity in training, no valid entity in test and vice versa
    assert _entities_in(split.train) <= train_e
    assert not (_entities_in(split.valid) & test_e)
    assert not (_entities_in(split.test) & valid_e)
    # every evaluation triple involves an entity of its own held-out set
    for kg, held in ((split.valid, split.valid_entities), (split.test, split.test_entities)):
        mask = torch.zeros(source.num_entities, dtype=torch.bool)
        mask[held] = True
        assert bool((mask[kg.triples[:, 0]] | mask[kg.triples[:, 2]]).all())
    # all parts share the source's tables, so indices are comparable
    for kg in (split.train, split.valid, split.test):
        assert kg.entity_ids == source.entity_ids and kg.relation_ids == source.relation_ids


def test_held_out_sets_are_disjoint(split, graph):
    _check_disjoint(split, graph)


def test_every_triple_is_accounted_for(split, graph):
    s = split.stats()
    assert s["train_triples"] + s["valid_triples"] + s["test_triples"] + s["discarded_valid_test_triples"] \
        == graph.num_triples


def test_sizes_follow_the_fractions(split, graph):
    s = split.stats()
    assert s["dropped_target"] == round(0.2 * graph.num_entities)
    assert s["dropped_achieved"] == s["dropped_target"] and s["dropped_short_by"] == 0
    assert s["valid_entities"] == s["test_entities"] == s["dropped_target"] // 2
    assert s["train_entities"] == graph.num_entities - s["dropped_achieved"]
    assert s["valid_triples"] > 0 and s["test_triples"] > 0


def test_neighbour_rule_holds_in_train(split, graph):
    held = torch.zeros(graph.num_entities, dtype=torch.bool)
    held[split.valid_entities] = True
    held[split.test_entities] = True
    train_neighbors: dict[int, set[int]] = {}
    for h, _, t in split.train.triples.tolist():
        if h != t:
            train_neighbors.setdefault(h, set()).add(t)
            train_neighbors.setdefault(t, set()).add(h)
    touched = set()
    for h, _, t in graph.triples.tolist():
        if held[h] and not held[t]:
            touched.add(t)
        if held[t] and not held[h]:
            touched.add(h)
    assert touched
    for entity in touched:
        assert len(train_neighbors.get(entity, ())) > MIN_NEIGHBORS


def test_relation_rule_holds_in_train(split, graph):
    before = torch.bincount(graph.triples[:, 1], minlength=graph.num_relations)
    after = torch.bincount(split.train.triples[:, 1], minlength=graph.num_relations)
    for b, a in zip(before.tolist(), after.tolist()):
        assert a == b or a >= MIN_RELATION_EDGES


def test_scores_and_provenance_follow_their_triples(split, graph):
    source = {tuple(t): (s, p) for t, s, p in zip(graph.triples.tolist(), graph.scores.tolist(), graph.provenance)}
    for kg in (split.train, split.valid, split.test):
        for t, s, p in zip(kg.triples.tolist(), kg.scores.tolist(), kg.provenance):
            assert source[tuple(t)] == (s, p)


def test_same_seed_same_split_other_seed_other_split(graph, split):
    again = inductive_split(graph, seed=0, min_neighbors=MIN_NEIGHBORS,
                            min_relation_edges=MIN_RELATION_EDGES, progress=False)
    other = inductive_split(graph, seed=1, min_neighbors=MIN_NEIGHBORS,
                            min_relation_edges=MIN_RELATION_EDGES, progress=False)
    assert torch.equal(again.test_entities, split.test_entities)
    assert torch.equal(again.valid_entities, split.valid_entities)
    assert torch.equal(again.train.triples, split.train.triples)
    assert again.stats() == split.stats()
    assert not torch.equal(other.test_entities, split.test_entities)
    _check_disjoint(other, graph)


def test_running_out_of_candidates_is_reported(graph):
    # No relation may lose an edge, so nothing can be dropped.
    split = inductive_split(graph, min_relation_edges=graph.num_triples, progress=False)
    s = split.stats()
    assert s["dropped_achieved"] == 0 and s["dropped_short_by"] == s["dropped_target"] > 0
    assert split.train.num_triples == graph.num_triples
    assert split.valid.num_triples == split.test.num_triples == 0


def test_partial_run_keeps_the_valid_test_proportion():
    kg = _random_graph(entities=300, triples=700, seed=3)
    split = inductive_split(kg, valid_fraction=0.3, test_fraction=0.3, min_neighbors=1,
                            min_relation_edges=1, progress=False)
    s = split.stats()
    assert 0 < s["dropped_achieved"] < s["dropped_target"]
    assert abs(s["valid_entities"] - s["test_entities"]) <= 1
    _check_disjoint(split, kg)


@pytest.mark.parametrize("options", [
    dict(valid_fraction=-0.1), dict(test_fraction=1.0), dict(valid_fraction=0.6, test_fraction=0.5),
    dict(min_neighbors=-1), dict(min_relation_edges=-5),
])
def test_bad_options_are_user_errors(graph, options):
    with pytest.raises(KgprobeError):
        inductive_split(graph, progress=False, **options)


@pytest.mark.slow
def test_wordnet_split():
    from kgprobe.kg.datasets import build_dataset

    wordnet = build_dataset("wordnet")
    start = time.perf_counter()
    split = inductive_split(wordnet, seed=0, progress=False)
    elapsed = time.perf_counter() - start  # printed, not asserted: the budget is < 60 s
    print(f"wordnet inductive split took {elapsed:.2f} s: {split.stats()}")
    _check_disjoint(split, wordnet)
    s = split.stats()
    assert s["dropped_target"] == round(0.2 * wordnet.num_entities)
    assert s["dropped_achieved"] == s["dropped_target"]
    assert s["valid_entities"] + s["test_entities"] == s["dropped_achieved"]
    assert s["train_triples"] + s["valid_triples"] + s["test_triples"] + s["discarded_valid_test_triples"] \
        == wordnet.num_triples
    assert s["valid_triples"] > 10_000 and s["test_triples"] > 10_000
