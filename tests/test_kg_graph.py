"""KnowledgeGraph: construction order, invariants and the graph operations."""
from __future__ import annotations

import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.kg import KnowledgeGraph


def scored_graph() -> KnowledgeGraph:
    return KnowledgeGraph.from_labeled_triples(
        [("a", "r", "b"), ("b", "r", "c"), ("a", "r", "b"), ("c", "s", "a")],
        scores=[0.2, 0.5, 0.9, 0.1],
        provenance=["p0", "p1", "p2", "p3"],
        name="g",
    )


# ----------------------------------------------------------------------------- construction
def test_from_labeled_triples_numbers_by_first_appearance():
    kg = KnowledgeGraph.from_labeled_triples([("x", "r", "y"), ("y", "s", "z"), ("z", "r", "x")])
    assert kg.entity_ids == ("x", "y", "z")
    assert kg.relation_ids == ("r", "s")
    assert kg.triples.tolist() == [[0, 0, 1], [1, 1, 2], [2, 0, 0]]
    assert kg.triples.dtype == torch.long
    assert kg.labeled_triples() == [("x", "r", "y"), ("y", "s", "z"), ("z", "r", "x")]


def test_from_labeled_triples_puts_declared_entities_and_relations_first():
    kg = KnowledgeGraph.from_labeled_triples(
        [("x", "r", "y")],
        extra_entities=["iso"],
        entity_labels={"y": "Y"},
        entity_descriptions={"z": "only described"},
        relation_labels={"unused": "Unused"},
    )
    assert kg.entity_ids == ("iso", "y", "z", "x")
    assert kg.entity_labels == ("iso", "Y", "z", "x")  # labels default to ids
    assert kg.entity_descriptions == ("", "", "only described", "")
    assert kg.relation_ids == ("unused", "r")
    assert kg.relation_labels == ("Unused", "r")
    assert kg.labeled_triples() == [("x", "r", "y")]


def test_empty_graph():
    kg = KnowledgeGraph.from_labeled_triples([])
    assert (kg.num_entities, kg.num_relations, kg.num_triples) == (0, 0, 0)
    assert kg.triples.shape == (0, 3)
    assert kg.statistics()["mean_degree"] == 0.0


def test_lookups():
    kg = scored_graph()
    assert kg.entity_index("c") == 2
    assert kg.relation_index("s") == 1
    with pytest.raises(KgprobeError, match="unknown entity id 'nope'"):
        kg.entity_index("nope")
    with pytest.raises(KgprobeError, match="unknown relation id 'nope'"):
        kg.relation_index("nope")


# ----------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("fields, message", [
    (dict(entity_ids=["a", "a"], relation_ids=["r"], triples=[]), "entity ids are not unique"),
    (dict(entity_ids=["a"], relation_ids=["r", "r"], triples=[]), "relation ids are not unique"),
    (dict(entity_ids=["a"], relation_ids=["r"], triples=[[0, 0, 1]]), "out of range"),
    (dict(entity_ids=["a"], relation_ids=["r"], triples=[[0, 1, 0]]), "out of range"),
    (dict(entity_ids=["a"], relation_ids=["r"], triples=[[-1, 0, 0]]), "out of range"),
    (dict(entity_ids=["a"], relation_ids=[], triples=[[0, 0, 0]]), "out of range"),
    (dict(entity_ids=["a", "b"], relation_ids=["r"], triples=[], entity_labels=["A"]),
     "entity labels: 1 given for 2 ids"),
    (dict(entity_ids=["a"], relation_ids=["r"], triples=[], entity_descriptions=["x", "y"]),
     "entity descriptions: 2 given for 1 ids"),
    (dict(entity_ids=["a"], relation_ids=["r", "s"], triples=[], relation_labels=["R"]),
     "relation labels: 1 given for 2 ids"),
    (dict(entity_ids=["a"], relation_ids=["r"], triples=[[0, 0, 0]], scores=[0.1, 0.2]),
     "2 scores for 1 triples"),
    (dict(entity_ids=["a"], relation_ids=["r"], triples=[[0, 0, 0]], provenance=[]),
     "0 provenance entries for 1 triples"),
])
def test_invariants_are_checked(fields, message):
    with pytest.raises(KgprobeError, match=message):
        KnowledgeGraph(**fields)


def test_replace_checks_invariants_again():
    kg = scored_graph()
    assert kg.replace(name="other").name == "other"
    with pytest.raises(KgprobeError, match="scores for"):
        kg.replace(scores=[1.0])


def test_fields_are_normalised():
    kg = KnowledgeGraph(entity_ids=["a", "b"], relation_ids=["r"], triples=[[0, 0, 1]], scores=[1])
    assert isinstance(kg.entity_ids, tuple)
    assert kg.entity_labels == ("a", "b")
    assert kg.entity_descriptions == ("", "")
    assert kg.scores.dtype == torch.float32
    assert kg.triples.dtype == torch.long


# ----------------------------------------------------------------------------- dedup
def test_dedup_keeps_best_scored_copy_in_original_order():
    kept = scored_graph().dedup()
    # (a, r, b) appears at 0 (score 0.2) and 2 (score 0.9): the 0.9 copy stays, in its place
    assert kept.labeled_triples() == [("b", "r", "c"), ("a", "r", "b"), ("c", "s", "a")]
    assert kept.scores.tolist() == pytest.approx([0.5, 0.9, 0.1])
    assert kept.provenance == ("p1", "p2", "p3")
    assert kept.entity_ids == scored_graph().entity_ids


def test_dedup_without_scores_keeps_first_occurrence():
    kg = KnowledgeGraph.from_labeled_triples(
        [("a", "r", "b"), ("b", "r", "a"), ("a", "r", "b"), ("b", "r", "a"), ("a", "s", "b")],
        provenance=["1", "2", "3", "4", "5"])
    kept = kg.dedup()
    assert kept.labeled_triples() == [("a", "r", "b"), ("b", "r", "a"), ("a", "s", "b")]
    assert kept.provenance == ("1", "2", "5")


def test_dedup_tied_scores_keep_first():
    kg = KnowledgeGraph.from_labeled_triples([("a", "r", "b"), ("a", "r", "b")], scores=[0.5, 0.5],
                                             provenance=["first", "second"])
    assert kg.dedup().provenance == ("first",)


def test_dedup_of_empty_graph():
    kg = KnowledgeGraph.from_labeled_triples([], extra_entities=["a"])
    assert kg.dedup().num_triples == 0


# ----------------------------------------------------------------------------- subgraph
def test_subgraph_by_entities_drops_isolated_but_keeps_requested():
    kg = KnowledgeGraph.from_labeled_triples(
        [("a", "r", "b"), ("b", "r", "c"), ("c", "s", "d")], extra_entities=["iso"], scores=[1, 2, 3])
    sub = kg.subgraph(entities=["a", "b", "iso"])
    assert sub.labeled_triples() == [("a", "r", "b")]
    assert sub.entity_ids == ("iso", "a", "b")
    assert sub.relation_ids == kg.relation_ids  # the relation table is kept
    assert sub.scores.tolist() == [1.0]


def test_subgraph_by_relations():
    kg = scored_graph()
    sub = kg.subgraph(relations=["s"])
    assert sub.labeled_triples() == [("c", "s", "a")]
    assert sub.entity_ids == ("a", "c")
    assert sub.provenance == ("p3",)
    assert sub.scores.tolist() == pytest.approx([0.1])


def test_subgraph_without_dropping_isolated_keeps_entity_table():
    kg = scored_graph()
    sub = kg.subgraph(relations=["s"], drop_isolated=False)
    assert sub.entity_ids == kg.entity_ids
    assert sub.labeled_triples() == [("c", "s", "a")]


def test_subgraph_keeps_labels_and_descriptions_aligned():
    kg = KnowledgeGraph.from_labeled_triples(
        [("a", "r", "b"), ("c", "r", "d")],
        entity_labels={"a": "A", "b": "B", "c": "C", "d": "D"},
        entity_descriptions={"c": "about c"},
    )
    sub = kg.subgraph(entities=["c", "d"])
    assert sub.entity_ids == ("c", "d")
    assert sub.entity_labels == ("C", "D")
    assert sub.entity_descriptions == ("about c", "")
    assert sub.triples.tolist() == [[0, 0, 1]]


def test_subgraph_rejects_unknown_ids():
    with pytest.raises(KgprobeError, match="unknown entity id 'zzz'"):
        scored_graph().subgraph(entities=["zzz"])
    with pytest.raises(KgprobeError, match="unknown relation id 'zzz'"):
        scored_graph().subgraph(relations=["zzz"])


def test_subgraph_with_nothing_requested_is_empty():
    sub = scored_graph().subgraph(entities=[])
    assert (sub.num_entities, sub.num_triples) == (0, 0)


# ----------------------------------------------------------------------------- merge
def test_merge_union_by_id_with_label_and_description_rules():
    left = KnowledgeGraph.from_labeled_triples(
        [("a", "r", "b")], entity_labels={"a": "left a", "b": "left b"},
        entity_descriptions={"a": "", "b": "b from left"}, relation_labels={"r": "left r"}, name="left")
    right = KnowledgeGraph.from_labeled_triples(
        [("b", "r", "c"), ("a", "s", "c")], entity_labels={"a": "right a", "c": "right c"},
        entity_descriptions={"a": "a from right", "b": "b from right"}, relation_labels={"r": "right r"},
        name="right")
    merged = left.merge(right)
    assert merged.entity_ids == ("a", "b", "c")
    assert merged.entity_labels == ("left a", "left b", "right c")  # this graph's label wins
    assert merged.entity_descriptions == ("a from right", "b from left", "")  # missing one filled
    assert merged.relation_ids == ("r", "s")
    assert merged.relation_labels == ("left r", "s")
    assert merged.labeled_triples() == [("a", "r", "b"), ("b", "r", "c"), ("a", "s", "c")]
    assert merged.name == "left"
    assert left.merge(right, name="both").name == "both"
    assert merged.scores is None and merged.provenance is None


def test_merge_keeps_duplicates_until_dedup():
    kg = KnowledgeGraph.from_labeled_triples([("a", "r", "b")])
    merged = kg.merge(kg)
    assert merged.num_triples == 2
    assert merged.dedup().num_triples == 1


def test_merge_scores_need_both_sides():
    scored = KnowledgeGraph.from_labeled_triples([("a", "r", "b")], scores=[0.5])
    plain = KnowledgeGraph.from_labeled_triples([("b", "r", "c")])
    assert scored.merge(plain).scores is None
    both = scored.merge(KnowledgeGraph.from_labeled_triples([("b", "r", "c")], scores=[0.7]))
    assert both.scores.tolist() == pytest.approx([0.5, 0.7])


def test_merge_fills_missing_provenance_with_graph_name():
    with_prov = KnowledgeGraph.from_labeled_triples([("a", "r", "b")], provenance=["harvest"], name="x")
    without = KnowledgeGraph.from_labeled_triples([("b", "r", "c"), ("c", "r", "a")], name="wordnet")
    assert with_prov.merge(without).provenance == ("harvest", "wordnet", "wordnet")
    assert without.merge(with_prov).provenance == ("wordnet", "wordnet", "harvest")


# ----------------------------------------------------------------------------- statistics
def test_statistics_values():
    kg = KnowledgeGraph.from_labeled_triples(
        [("a", "r", "b"), ("a", "r", "c"), ("b", "s", "a")],
        extra_entities=["iso"], entity_descriptions={"a": "described"},
        relation_labels={"unused": "u"}, scores=[0.25, 1.0, 0.5], name="stats")
    stats = kg.statistics()
    assert stats == {
        "name": "stats",
        "entities": 4,
        "relations": 3,
        "triples": 3,
        "entities_with_description": 1,
        "isolated_entities": 1,
        "mean_degree": 1.5,  # degrees iso 0, a 3, b 2, c 1
        "max_degree": 3,
        "triples_per_relation": {"unused": 0, "r": 2, "s": 1},
        "score_range": [0.25, 1.0],
    }


def test_statistics_has_no_score_range_without_scores():
    assert "score_range" not in KnowledgeGraph.from_labeled_triples([("a", "r", "b")]).statistics()


# ----------------------------------------------------------------------------- same_as
def test_same_as_compares_every_field():
    kg = scored_graph()
    assert kg.same_as(kg.replace())
    assert not kg.same_as(kg.replace(scores=None))
    assert not kg.same_as(kg.replace(provenance=None))
    assert not kg.same_as(kg.replace(entity_labels=["x"] * kg.num_entities))
    assert not kg.same_as(kg.replace(entity_descriptions=["x"] * kg.num_entities))
    assert not kg.same_as(kg.replace(relation_labels=["x"] * kg.num_relations))
    assert not kg.same_as(kg.replace(triples=kg.triples.flip(0)))
    assert not kg.same_as(kg.replace(scores=kg.scores + 1))
