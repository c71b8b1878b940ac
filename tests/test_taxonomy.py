"""Taxonomy-aware search (kgprobe.index.taxonomy, `kgprobe embed --taxonomy`, `neighbors`)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from kgprobe.cli import main
from kgprobe.errors import KgprobeError
from kgprobe.index import Taxonomy, taxonomy_search
from kgprobe.index.taxonomy import find_isa_relations, named_classes
from kgprobe.kg.graph import KnowledgeGraph


def _run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("KGPROBE_HOME", str(tmp_path / "home"))


def test_closure_is_reflexive_transitive_and_survives_cycles():
    # 0 -> 1 -> 2 -> 0 is a cycle; 3 -> 2; 4 -> 3; 5 stands alone
    t = Taxonomy.from_edges([0, 1, 2, 3, 4], [1, 2, 0, 2, 3], 6)
    expected = np.array([
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 0],
        [0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 1],
    ])
    assert (t.descendants.toarray() == expected).all()
    # a diamond: 3 under 1 and 2, both under 0; 3 is counted once under 0
    d = Taxonomy.from_edges([1, 2, 3, 3], [0, 0, 1, 2], 4)
    assert d.descendants.toarray()[0].tolist() == [1, 1, 1, 1]
    rows, summed = d.members(np.array([1, 2]), np.array([0.5, 0.25]))
    assert rows.tolist() == [1, 2, 3] and summed.tolist() == [0.5, 0.25, 0.75]
    with pytest.raises(KgprobeError, match="outside 0..3"):
        Taxonomy.from_edges([4], [0], 4)


def test_isa_relations_found_by_name():
    rels = ["_hypernym", "_has_part", "http://www.w3.org/2000/01/rdf-schema#subClassOf", "P31", "rdf:type",
            "/r/IsA", "capital_of", "hypernymy_score"]
    assert find_isa_relations(rels) == ["_hypernym", "http://www.w3.org/2000/01/rdf-schema#subClassOf", "P31",
                                        "rdf:type", "/r/IsA"]


def test_from_kg_and_save_load(tmp_path):
    kg = KnowledgeGraph.from_labeled_triples([("dog", "isa", "canine"), ("canine", "isa", "carnivore"),
                                              ("dog", "likes", "bone")])
    t = Taxonomy.from_kg(kg)
    assert t.relations == ["isa"]
    carnivore = kg.entity_index("carnivore")
    under = {kg.entity_ids[i] for i in t.descendants[carnivore].indices}
    assert under == {"carnivore", "canine", "dog"}
    assert Taxonomy.from_kg(kg, ["likes"]).descendants[kg.entity_index("bone")].nnz == 2
    assert Taxonomy.from_kg(KnowledgeGraph.from_labeled_triples([("a", "likes", "b")])) is None
    with pytest.raises(KgprobeError, match="unknown relation 'is_a' for the taxonomy; the KG has: isa, likes"):
        Taxonomy.from_kg(kg, ["is_a"])
    path = t.save(tmp_path / "t.npz")
    back = Taxonomy.load(path)
    assert back.relations == ["isa"] and (back.descendants != t.descendants).nnz == 0
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(KgprobeError, match="bad.npz: unreadable taxonomy"):
        Taxonomy.load(tmp_path / "bad.npz")


def test_search_scores_by_the_named_classes():
    # entities: 0 animal-ish class A, 1 class B, 2 under A and B, 3 under A only, 4 under nothing
    tax = Taxonomy.from_edges([2, 2, 3], [0, 1, 0], 5)
    vectors = np.array([[1, 0, 0], [0, 1, 0], [0.2, 0.2, 1], [0.5, 0, 1], [0.9, 0.9, 0.1]], np.float32)
    query = np.array([1.0, 1.0, 0.0], np.float32)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cos = unit @ (query / np.linalg.norm(query))
    order = np.argsort(-cos, kind="stable")
    rows, scores, cosine = taxonomy_search(query * 3, hit_rows=order, hit_scores=cos[order], vectors=vectors * 2,
                                           taxonomy=tax, top=3, floor=0.5, own_weight=0.1)
    # classes: the 3 nearest (4, 0, 1); 4's cos 0.99 names it, 0 and 1 (0.707) weigh 0.207 each
    assert order[:3].tolist() == [4, 0, 1]
    w = cos - 0.5
    expected = {0: 0.1 * cos[0] + w[0], 1: 0.1 * cos[1] + w[1], 2: 0.1 * cos[2] + w[0] + w[1],
                3: 0.1 * cos[3] + w[0], 4: 0.1 * cos[4] + w[4]}
    assert rows.tolist() == sorted(expected, key=lambda r: (-expected[r], r))
    assert scores == pytest.approx([expected[r] for r in rows.tolist()], abs=1e-6)
    assert cosine == pytest.approx(cos[rows], abs=1e-6)
    assert named_classes(order, cos[order], top=3, floor=0.8)[0].tolist() == [4]
    # a class below the floor names nothing: plain lambda * cos for everyone it would have covered
    rows, scores, _ = taxonomy_search(query, hit_rows=order, hit_scores=cos[order], vectors=vectors, taxonomy=tax,
                                      top=3, floor=0.99, own_weight=0.1, k=2)
    assert rows.tolist() == [4, 0] and scores[1] == pytest.approx(0.1 * cos[0], abs=1e-6)
    with pytest.raises(KgprobeError, match="the number of classes must be positive"):
        named_classes(order, cos[order], top=0)
    with pytest.raises(KgprobeError, match="covers 5 entities but there are 4"):
        taxonomy_search(query, hit_rows=order, hit_scores=cos[order], vectors=vectors[:4], taxonomy=tax)


def _animals_kg() -> KnowledgeGraph:
    isa = [("dog", "carnivore"), ("dog", "domestic animal"), ("cat", "carnivore"), ("cat", "domestic animal"),
           ("wolf", "carnivore"), ("lion", "carnivore"), ("cow", "domestic animal"), ("sheep", "domestic animal"),
           ("carnivore", "mammal"), ("domestic animal", "animal"), ("mammal", "animal"), ("tulip", "flower")]
    triples = [(a, "_hypernym", b) for a, b in isa] + [("dog", "_has_part", "tail")]
    return KnowledgeGraph.from_labeled_triples(triples, name="animals")


def test_cli_taxonomy_search(tmp_path, capsys, home):
    from kgprobe.kg.formats import save_kg

    kg_dir = save_kg(_animals_kg(), tmp_path / "animals")
    out_dir = tmp_path / "emb"
    code, out, err = _run(["embed", str(kg_dir), "--out", str(out_dir), "--quiet"], capsys)
    assert code == 0, err
    meta = json.loads((out_dir / "meta.json").read_text())
    # 13 (entity, itself) pairs + 23 (entity, ancestor) pairs
    assert meta["taxonomy"] == {"file": "taxonomy.npz", "relations": ["_hypernym"], "pairs": 36}
    query = "a domesticated carnivorous mammal"

    code, out, err = _run(["neighbors", str(out_dir), query, "-k", "3", "--json", "--plain"], capsys)
    assert code == 0, err
    plain = json.loads(out)
    assert plain["search"] == "plain" and "taxonomy" not in plain
    assert plain["results"][0]["id"] in {"carnivore", "domestic animal"}

    code, out, err = _run(["neighbors", str(out_dir), query, "-k", "3", "--json"], capsys)
    assert code == 0, err
    payload = json.loads(out)
    assert payload["search"] == "taxonomy"
    assert payload["taxonomy"] == {"relations": ["_hypernym"], "classes": 10, "class_floor": 0.4,
                                   "own_weight": 0.05}
    top = payload["results"]
    assert {r["id"] for r in top[:2]} == {"dog", "cat"}, top  # the only ones under both classes
    dog = next(r for r in top if r["id"] == "dog")
    assert {"carnivore", "domestic animal"} <= set(dog["under"])
    assert all(a["score"] >= b["score"] for a, b in zip(top, top[1:]))
    # the text output shows the same order
    code, out, err = _run(["neighbors", str(out_dir), query, "-k", "3"], capsys)
    assert code == 0 and [line.split()[1] for line in out.splitlines()] == [r["id"] for r in top]
    # --entity queries stay plain
    code, out, err = _run(["neighbors", str(out_dir), "--entity", "dog", "-k", "2", "--json"], capsys)
    assert code == 0 and json.loads(out)["search"] == "plain"

    code, out, err = _run(["embed", str(kg_dir), "--out", str(out_dir), "--quiet", "--taxonomy", "none"], capsys)
    assert code == 0 and not (out_dir / "taxonomy.npz").exists() and "taxonomy" not in json.loads(
        (out_dir / "meta.json").read_text())


def test_cli_taxonomy_bad_input(tmp_path, capsys, home):
    from kgprobe.kg.formats import save_kg

    kg_dir = save_kg(_animals_kg(), tmp_path / "animals")
    out_dir = tmp_path / "emb"
    code, out, err = _run(["embed", str(kg_dir), "--out", str(out_dir), "--taxonomy", "_is_a"], capsys)
    assert code == 2 and err.count("\n") == 1 and "unknown relation '_is_a' for the taxonomy" in err, err
    assert not out_dir.exists()
    code, out, err = _run(["embed", str(kg_dir), "--out", str(out_dir), "--taxonomy", " , "], capsys)
    assert code == 2 and "--taxonomy names no relation" in err
    code, _, err = _run(["embed", str(kg_dir), "--out", str(out_dir), "--quiet", "--metric", "l2"], capsys)
    assert code == 0, err
    code, out, err = _run(["neighbors", str(out_dir), "a dog"], capsys)
    assert code == 2 and err.count("\n") == 1 and "taxonomy search needs cosine scores but the index is l2" in err
    code, out, err = _run(["neighbors", str(out_dir), "a dog", "--plain", "-k", "1"], capsys)
    assert code == 0 and out.split()[1] == "dog"
