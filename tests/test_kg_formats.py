"""Every KG file format: lossless round trips, interoperability, error messages, atomic saves."""
from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pytest
import rdflib
import torch

from kgprobe.errors import KgprobeError
from kgprobe.kg import FORMATS, KnowledgeGraph, format_for, from_networkx, load_kg, save_kg, to_networkx
from kgprobe.kg.formats import jsonl, rdf, tsv

LOSSLESS = {"dir": "kg", "jsonl": "kg.jsonl", "turtle": "kg.ttl", "ntriples": "kg.nt", "graphml": "kg.graphml"}
BASE = "https://kgprobe.org/kg/"

ENTITIES = {
    # id: (label, description)
    "dog.n.01": ("dog", "a domesticated\tcarnivore\nwith\r\nfour legs \\ and \"quotes\""),
    "big cat/ü #1": ("Großkatze 🐈", ""),
    "isolated one": ("nobody links here", "ünïcödé\u2028separator"),
    "#starts with hash": ("hash", "   "),
    "back\\slash%20": ("", "tab at end\t"),
    "": ("empty id", "trailing newline\n"),
    "~tilde-.": ("~", "x"),
}
RELATIONS = {"hypernym": "is a", "part of/#x": "part of", "unused relation": "never used"}
TRIPLES = [
    ("dog.n.01", "hypernym", "big cat/ü #1"),
    ("big cat/ü #1", "part of/#x", "#starts with hash"),
    ("#starts with hash", "hypernym", "back\\slash%20"),
    ("back\\slash%20", "hypernym", ""),
    ("", "part of/#x", "~tilde-."),
    ("~tilde-.", "hypernym", "dog.n.01"),
]
SCORES = [0.9, 0.33333334, 1e-8, 1.0, 0.0, -2.5]
PROVENANCE = ["wordnet", "llm: gpt\twith tab", "", "line\nbreak", "ü", "wordnet"]


def make_kg(*, scores: bool = True, provenance: bool = True, name: str = "test kg ü") -> KnowledgeGraph:
    """Entities listed before their first triple, so the order is not first-appearance order."""
    return KnowledgeGraph.from_labeled_triples(
        TRIPLES,
        entity_labels={e: label for e, (label, _) in ENTITIES.items()},
        entity_descriptions={e: description for e, (_, description) in ENTITIES.items()},
        relation_labels=RELATIONS,
        scores=SCORES if scores else None,
        provenance=PROVENANCE if provenance else None,
        name=name,
    )


def assert_same(loaded: KnowledgeGraph, kg: KnowledgeGraph) -> None:
    assert loaded.entity_ids == kg.entity_ids
    assert loaded.entity_labels == kg.entity_labels
    assert loaded.entity_descriptions == kg.entity_descriptions
    assert loaded.relation_ids == kg.relation_ids
    assert loaded.relation_labels == kg.relation_labels
    assert loaded.labeled_triples() == kg.labeled_triples()
    assert loaded.provenance == kg.provenance
    if kg.scores is None:
        assert loaded.scores is None
    else:
        assert torch.equal(loaded.scores, kg.scores)  # exact, not just close
    assert loaded.name == kg.name
    assert loaded.same_as(kg)


def no_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- format choice
@pytest.mark.parametrize("name, fmt", [
    ("kg.tsv", "tsv"), ("kg.TXT", "tsv"), ("kg.jsonl", "jsonl"), ("kg.ttl", "turtle"),
    ("kg.nt", "ntriples"), ("kg.graphml", "graphml"), ("new_dir", "dir"),
])
def test_format_for(tmp_path, name, fmt):
    assert format_for(tmp_path / name) == fmt


def test_format_for_existing_directory_with_a_dot(tmp_path):
    (tmp_path / "kg.v2").mkdir()
    assert format_for(tmp_path / "kg.v2") == "dir"


def test_formats_tuple():
    assert FORMATS == ("dir", "tsv", "jsonl", "turtle", "ntriples", "graphml")


def test_unknown_suffix_names_path_and_formats(tmp_path):
    path = tmp_path / "kg.csv"
    path.write_text("a,b,c\n")
    with pytest.raises(KgprobeError) as err:
        load_kg(path)
    message = str(err.value)
    assert message.startswith(f"{path}: unknown knowledge-graph format (suffix '.csv')")
    for known in ("dir (a directory)", "tsv (.tsv, .txt)", "jsonl (.jsonl)", "turtle (.ttl)",
                  "ntriples (.nt)", "graphml (.graphml)"):
        assert known in message
    assert "\n" not in message
    with pytest.raises(KgprobeError, match="unknown knowledge-graph format"):
        save_kg(make_kg(), tmp_path / "out.csv")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.ttl"
    with pytest.raises(KgprobeError) as err:
        load_kg(path)
    assert str(err.value).startswith(f"{path}: no such file or directory")
    assert "turtle (.ttl)" in str(err.value)


def test_explicit_format(tmp_path):
    kg = make_kg()
    path = save_kg(kg, tmp_path / "graph.data", format="jsonl")
    assert_same(load_kg(path, format="jsonl"), kg)
    with pytest.raises(KgprobeError, match="unknown knowledge-graph format 'csv'"):
        load_kg(path, format="csv")


def test_format_and_path_kind_must_agree(tmp_path):
    kg_dir = save_kg(make_kg(), tmp_path / "kg")
    with pytest.raises(KgprobeError, match=f"{kg_dir}: is a directory"):
        load_kg(kg_dir, format="jsonl")
    file = save_kg(make_kg(), tmp_path / "kg.jsonl")
    with pytest.raises(KgprobeError, match="is a file"):
        load_kg(file, format="dir")
    with pytest.raises(KgprobeError, match="is a directory; cannot write a jsonl file"):
        save_kg(make_kg(), kg_dir, format="jsonl")


# ----------------------------------------------------------------------------- lossless round trips
@pytest.mark.parametrize("fmt", list(LOSSLESS))
@pytest.mark.parametrize("scores, provenance", [(True, True), (False, False), (True, False), (False, True)])
def test_lossless_round_trip(tmp_path, fmt, scores, provenance):
    kg = make_kg(scores=scores, provenance=provenance)
    path = save_kg(kg, tmp_path / LOSSLESS[fmt])
    assert path == tmp_path / LOSSLESS[fmt]
    assert format_for(path) == fmt
    assert_same(load_kg(path), kg)


@pytest.mark.parametrize("fmt", list(LOSSLESS))
def test_round_trip_keeps_repeated_triples_and_order(tmp_path, fmt):
    kg = KnowledgeGraph.from_labeled_triples(
        [("b", "r", "a"), ("a", "r", "b"), ("b", "r", "a"), ("a", "r", "a")],
        scores=[0.1, 0.2, 0.3, 0.4], provenance=["1", "2", "3", "4"])
    assert_same(load_kg(save_kg(kg, tmp_path / LOSSLESS[fmt])), kg)


@pytest.mark.parametrize("fmt", list(LOSSLESS))
def test_round_trip_of_graphs_without_triples(tmp_path, fmt):
    empty = KnowledgeGraph.from_labeled_triples([], name="")
    assert_same(load_kg(save_kg(empty, tmp_path / ("a_" + LOSSLESS[fmt]))), empty)
    # scores=[] and provenance=() are not the same as "no scores": the flags must survive
    scored = KnowledgeGraph(entity_ids=["x"], relation_ids=["r"], triples=torch.zeros(0, 3),
                            scores=[], provenance=[], name="flags")
    assert_same(load_kg(save_kg(scored, tmp_path / ("b_" + LOSSLESS[fmt]))), scored)


@pytest.mark.parametrize("fmt", list(LOSSLESS))
def test_save_replaces_an_existing_output(tmp_path, fmt):
    path = tmp_path / LOSSLESS[fmt]
    save_kg(make_kg(), path)
    smaller = KnowledgeGraph.from_labeled_triples([("x", "r", "y")], name="smaller")
    save_kg(smaller, path)
    assert_same(load_kg(path), smaller)
    assert no_leftovers(tmp_path) == [path.name]


# ----------------------------------------------------------------------------- KG directory
def test_dir_layout(tmp_path):
    kg = make_kg()
    path = save_kg(kg, tmp_path / "kg")
    assert no_leftovers(path) == ["entities.tsv", "meta.json", "relations.tsv", "triples.tsv"]
    entities = (path / "entities.tsv").read_text(encoding="utf-8").split("\n")
    assert entities[0] == "id\tlabel\tdescription"
    assert entities[1] == ("dog.n.01\tdog\ta domesticated\\tcarnivore\\nwith\\r\\nfour legs \\\\ and "
                           '"quotes"')
    assert len(entities) == kg.num_entities + 2  # header, rows, final newline
    assert (path / "relations.tsv").read_text(encoding="utf-8").startswith("id\tlabel\nhypernym\tis a\n")
    triples = (path / "triples.tsv").read_text(encoding="utf-8").split("\n")
    assert triples[0] == "head\trelation\ttail\tscore\tprovenance"
    assert triples[1] == "dog.n.01\thypernym\tbig cat/ü #1\t0.9\twordnet"
    assert triples[2].endswith("\t0.33333334\tllm: gpt\\twith tab")
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    assert meta["name"] == kg.name
    assert meta["format"] == "kgprobe-kg"
    assert meta["version"] == 1
    assert meta["statistics"] == kg.statistics()


def test_dir_save_refuses_to_replace_an_unrelated_directory(tmp_path):
    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    with pytest.raises(KgprobeError, match=f"^{folder}: is a non-empty directory that is not a KG directory"):
        save_kg(make_kg(), folder)
    assert no_leftovers(folder) == ["thesis.tex"]
    assert no_leftovers(tmp_path) == ["papers"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_same(load_kg(save_kg(make_kg(), empty)), make_kg())


def test_dir_without_scores_has_three_columns(tmp_path):
    path = save_kg(make_kg(scores=False, provenance=False), tmp_path / "kg")
    assert (path / "triples.tsv").read_text(encoding="utf-8").startswith("head\trelation\ttail\n")


def test_dir_without_meta_json_is_named_after_the_directory(tmp_path):
    path = save_kg(make_kg(), tmp_path / "wordnet")
    (path / "meta.json").unlink()
    assert load_kg(path).name == "wordnet"


def test_dir_accepts_crlf_and_blank_lines(tmp_path):
    path = save_kg(make_kg(), tmp_path / "kg")
    for name in ("entities.tsv", "relations.tsv", "triples.tsv"):
        text = (path / name).read_text(encoding="utf-8")
        (path / name).write_text(text.replace("\n", "\r\n") + "\r\n\r\n", encoding="utf-8")
    assert_same(load_kg(path), make_kg())


def write_dir(tmp_path: Path, *, entities: str = "id\tlabel\tdescription\na\tA\t\nb\tB\tbee\n",
              relations: str = "id\tlabel\nr\tR\n",
              triples: str = "head\trelation\ttail\na\tr\tb\n", meta: str | None = None) -> Path:
    path = tmp_path / "kg"
    path.mkdir()
    (path / "entities.tsv").write_text(entities, encoding="utf-8")
    (path / "relations.tsv").write_text(relations, encoding="utf-8")
    (path / "triples.tsv").write_text(triples, encoding="utf-8")
    if meta is not None:
        (path / "meta.json").write_text(meta, encoding="utf-8")
    return path


def test_hand_written_dir_loads(tmp_path):
    kg = load_kg(write_dir(tmp_path))
    assert kg.labeled_triples() == [("a", "r", "b")]
    assert kg.entity_descriptions == ("", "bee")
    assert kg.relation_labels == ("R",)


@pytest.mark.parametrize("files, where, message", [
    (dict(entities="a\tA\t\n"), "entities.tsv:1",
     "expected a header line with columns id, label, description, got a, A,"),
    (dict(entities=""), "entities.tsv:1", "empty file, expected a header line"),
    (dict(relations="id\tname\nr\tR\n"), "relations.tsv:1",
     "expected a header line with columns id, label, got id, name"),
    (dict(triples="head\trelation\nr\tR\n"), "triples.tsv:1",
     "expected a header line with columns head, relation, tail"),
    (dict(triples="head\trelation\ttail\tweight\na\tr\tb\t1\n"), "triples.tsv:1",
     "unexpected header columns weight"),
    (dict(entities="id\tlabel\tdescription\na\tA\t\nb\tB\n"), "entities.tsv:3",
     "expected 3 tab-separated fields (id, label, description), got 2"),
    (dict(entities="id\tlabel\tdescription\na\tA\t\n\nb\tB\t\t\n"), "entities.tsv:4",
     "expected 3 tab-separated fields (id, label, description), got 4"),
    (dict(relations="id\tlabel\nr\n"), "relations.tsv:2", "expected 2 tab-separated fields (id, label), got 1"),
    (dict(entities="id\tlabel\tdescription\na\tA\t\nb\tB\t\na\tagain\t\n"), "entities.tsv:4",
     "duplicate entity id 'a' (first on line 2)"),
    (dict(relations="id\tlabel\nr\tR\nr\tR\n"), "relations.tsv:3", "duplicate relation id 'r'"),
    (dict(triples="head\trelation\ttail\na\tr\tb\nzzz\tr\tb\n"), "triples.tsv:3",
     "unknown head entity 'zzz' (not in entities.tsv)"),
    (dict(triples="head\trelation\ttail\na\tr\tb\na\tr\tzzz\n"), "triples.tsv:3",
     "unknown tail entity 'zzz' (not in entities.tsv)"),
    (dict(triples="head\trelation\ttail\na\tq\tb\n"), "triples.tsv:2",
     "unknown relation 'q' (not in relations.tsv)"),
    (dict(triples="head\trelation\ttail\tscore\na\tr\tb\t0.5\na\tr\tb\tabc\n"), "triples.tsv:3",
     "score 'abc' is not a number"),
    (dict(triples="head\trelation\ttail\tscore\na\tr\tb\n"), "triples.tsv:2",
     "expected 4 tab-separated fields (head, relation, tail, score), got 3"),
    (dict(meta='{"name": "x",\n "version": }'), "meta.json:2", "invalid JSON"),
    (dict(meta='{"name": "x", "version": 7}'), "meta.json", "unsupported version 7"),
    (dict(meta='{"format": "something-else"}'), "meta.json", "format is 'something-else'"),
])
def test_dir_errors_name_file_and_line(tmp_path, files, where, message):
    path = write_dir(tmp_path, **files)
    with pytest.raises(KgprobeError) as err:
        load_kg(path)
    assert str(err.value).startswith(f"{path / where}: ")
    assert message in str(err.value)


def test_dir_missing_file(tmp_path):
    path = write_dir(tmp_path)
    (path / "triples.tsv").unlink()
    with pytest.raises(KgprobeError, match=f"^{path}: not a KG directory: triples.tsv is missing$"):
        load_kg(path)


def test_dir_rejects_invalid_utf8_with_line(tmp_path):
    path = write_dir(tmp_path, entities="id\tlabel\tdescription\na\tA\t\n")
    (path / "entities.tsv").write_bytes(b"id\tlabel\tdescription\na\tA\t\nb\t\xff\t\n")
    with pytest.raises(KgprobeError, match=r"entities\.tsv:3: not valid UTF-8"):
        load_kg(path)


# ----------------------------------------------------------------------------- plain TSV
def test_tsv_round_trips_the_triples(tmp_path):
    kg = make_kg(provenance=False)
    path = save_kg(kg, tmp_path / "kg.tsv")
    loaded = load_kg(path)
    assert loaded.labeled_triples() == kg.labeled_triples()
    assert torch.equal(loaded.scores, kg.scores)
    assert loaded.name == "kg"
    assert loaded.provenance is None
    # ids double as labels; isolated entities and unused relations are not kept
    assert loaded.entity_labels == loaded.entity_ids
    assert "isolated one" not in loaded.entity_ids


def test_tsv_file_is_pykeen_style(tmp_path):
    kg = KnowledgeGraph.from_labeled_triples([("a b", "r/x", "c#d"), ("c#d", "r/x", "a b")])
    path = save_kg(kg, tmp_path / "train.txt")
    assert path.read_text(encoding="utf-8") == "a b\tr/x\tc#d\nc#d\tr/x\ta b\n"
    assert load_kg(path).labeled_triples() == kg.labeled_triples()


def test_tsv_escapes_a_leading_hash_and_odd_characters(tmp_path):
    kg = KnowledgeGraph.from_labeled_triples([("#tag", "r", "tab\there"), ("new\nline", "r", "back\\slash")])
    path = save_kg(kg, tmp_path / "kg.tsv")
    assert path.read_text(encoding="utf-8").startswith("\\#tag\tr\ttab\\there\n")
    assert load_kg(path).labeled_triples() == kg.labeled_triples()


def test_tsv_skips_comments_and_blank_lines_and_reads_scores(tmp_path):
    path = tmp_path / "kg.tsv"
    path.write_text("# a comment\n\na\tr\tb\t0.5\r\n   \nb\tr\tc\t1e-3\n", encoding="utf-8")
    kg = load_kg(path)
    assert kg.labeled_triples() == [("a", "r", "b"), ("b", "r", "c")]
    assert kg.scores.tolist() == pytest.approx([0.5, 1e-3])


def test_tsv_reads_a_kg_directory_triples_file(tmp_path):
    kg = make_kg()
    triples = save_kg(kg, tmp_path / "kg") / "triples.tsv"
    loaded = load_kg(triples)
    assert loaded.labeled_triples() == kg.labeled_triples()
    assert torch.equal(loaded.scores, kg.scores)
    assert loaded.provenance == kg.provenance


@pytest.mark.parametrize("text, line, message", [
    ("a\tr\tb\n# c\na\tr\n", 3, "expected 3 tab-separated fields (head, relation, tail), got 2"),
    ("a\tr\tb\tc\td\n", 1, "expected 3 tab-separated fields (head, relation, tail), got 5"),
    ("a\n", 1, "expected 3 tab-separated fields (head, relation, tail), got 1"),
    ("a\tr\tb\na\tr\tb\t0.5\n", 2, "expected 3 tab-separated fields (head, relation, tail), got 4"),
    ("a\tr\tb\t0.5\na\tr\tb\n", 2, "expected 4 tab-separated fields (head, relation, tail, score), got 3"),
    ("a\tr\tb\t0.5\na\tr\tb\thigh\n", 2, "score 'high' is not a number"),
    ("head\trelation\ttail\tprovenance\na\tr\tb\n", 2,
     "expected 4 tab-separated fields (head, relation, tail, provenance), got 3"),
])
def test_tsv_errors(tmp_path, text, line, message):
    path = tmp_path / "bad.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(KgprobeError) as err:
        load_kg(path)
    assert str(err.value) == f"{path}:{line}: {message}"


# ----------------------------------------------------------------------------- JSONL
def test_jsonl_layout(tmp_path):
    kg = make_kg()
    path = save_kg(kg, tmp_path / "kg.jsonl")
    # splitlines() also breaks at U+2028 (in one description): the writer escapes it
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 1 + kg.num_entities + kg.num_relations + kg.num_triples
    assert records[0] == {"type": "meta", "name": kg.name, "format": "kgprobe-kg", "version": 1,
                          "scores": True, "provenance": True}
    assert records[1] == {"type": "entity", "id": "dog.n.01", "label": "dog",
                          "description": ENTITIES["dog.n.01"][1]}
    assert records[1 + kg.num_entities] == {"type": "relation", "id": "hypernym", "label": "is a"}
    assert records[-kg.num_triples] == {"type": "triple", "head": "dog.n.01", "relation": "hypernym",
                                        "tail": "big cat/ü #1", "score": 0.9, "provenance": "wordnet"}
    assert "score" not in json.loads(save_kg(make_kg(scores=False), tmp_path / "b.jsonl")
                                     .read_text(encoding="utf-8").splitlines()[-1])


def test_jsonl_hand_written_records_in_any_order(tmp_path):
    path = tmp_path / "kg.jsonl"
    path.write_text('{"type": "triple", "head": "a", "relation": "r", "tail": "b"}\n\n'
                    '{"type": "entity", "id": "b"}\n{"type": "entity", "id": "a", "label": "A"}\n'
                    '{"type": "relation", "id": "r"}\n', encoding="utf-8")
    kg = load_kg(path)
    assert kg.entity_ids == ("b", "a")
    assert kg.entity_labels == ("b", "A")
    assert kg.labeled_triples() == [("a", "r", "b")]
    assert kg.name == "kg"


@pytest.mark.parametrize("lines, line, message", [
    (['{"type": "entity", "id": "a"', ], 1, "invalid JSON: Expecting ',' delimiter"),
    (['{"type": "meta"}', '[1, 2]'], 2, "expected a JSON object"),
    (['{"type": "vertex", "id": "a"}'], 1,
     "unknown record type 'vertex' (expected one of meta, entity, relation, triple)"),
    (['{"id": "a"}'], 1, "unknown record type None"),
    (['{"type": "entity", "label": "A"}'], 1, "entity record is missing key 'id'"),
    (['{"type": "entity", "id": 5}'], 1, "entity record: 'id' must be a string, got 5"),
    (['{"type": "entity", "id": "a"}', '{"type": "relation", "id": "r"}',
      '{"type": "triple", "head": "a", "relation": "r"}'], 3, "triple record is missing key 'tail'"),
    (['{"type": "entity", "id": "a"}', '{"type": "entity", "id": "a"}'], 2,
     "duplicate entity id 'a' (first on line 1)"),
    (['{"type": "relation", "id": "r"}', '{"type": "relation", "id": "r"}'], 2, "duplicate relation id 'r'"),
    (['{"type": "entity", "id": "a"}', '{"type": "relation", "id": "r"}',
      '{"type": "triple", "head": "a", "relation": "r", "tail": "a"}',
      '{"type": "triple", "head": "a", "relation": "r", "tail": "b"}'], 4,
     "unknown tail entity 'b' (no entity record with that id)"),
    (['{"type": "entity", "id": "a"}', '{"type": "triple", "head": "a", "relation": "q", "tail": "a"}'], 2,
     "unknown relation 'q' (no relation record with that id)"),
    (['{"type": "entity", "id": "a"}', '{"type": "relation", "id": "r"}',
      '{"type": "triple", "head": "a", "relation": "r", "tail": "a", "score": "high"}'], 3,
     "score 'high' is not a number"),
    (['{"type": "entity", "id": "a"}', '{"type": "relation", "id": "r"}',
      '{"type": "triple", "head": "a", "relation": "r", "tail": "a", "score": 0.5}',
      '{"type": "triple", "head": "a", "relation": "r", "tail": "a"}'], 4, "triple has no score"),
    (['{"type": "meta", "name": "x", "provenance": true}', '{"type": "entity", "id": "a"}',
      '{"type": "relation", "id": "r"}', '{"type": "triple", "head": "a", "relation": "r", "tail": "a"}'], 4,
     "triple has no provenance"),
    (['{"type": "meta", "version": 2}'], 1, "unsupported version 2"),
])
def test_jsonl_errors(tmp_path, lines, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(KgprobeError) as err:
        load_kg(path)
    assert str(err.value).startswith(f"{path}:{line}: {message}")


# ----------------------------------------------------------------------------- RDF
def relation_triple_count(graph: rdflib.Graph, base: str = BASE) -> int:
    return sum(1 for _, p, _ in graph if str(p).startswith(base + "relation/"))


@pytest.mark.parametrize("name", ["kg.ttl", "kg.nt"])
def test_plain_rdflib_sees_one_rdf_triple_per_kg_triple(tmp_path, name):
    kg = make_kg()
    path = save_kg(kg, tmp_path / name)
    graph = rdflib.Graph().parse(str(path))  # rdflib guesses the syntax from the suffix
    assert relation_triple_count(graph) == kg.num_triples
    entity = rdflib.URIRef(BASE + "entity/big%20cat%2F%C3%BC%20%231")
    relation = rdflib.URIRef(BASE + "relation/part%20of%2F%23x")
    assert (entity, relation, rdflib.URIRef(BASE + "entity/%23starts%20with%20hash")) in graph
    assert graph.value(entity, rdflib.RDFS.label) == rdflib.Literal("Großkatze 🐈")
    # isolated entities and unused relations are still declared
    kgp = rdflib.Namespace(BASE + "schema#")
    assert (rdflib.URIRef(BASE + "entity/isolated%20one"), rdflib.RDF.type, kgp.Entity) in graph
    assert (rdflib.URIRef(BASE + "relation/unused%20relation"), rdflib.RDF.type, kgp.Relation) in graph
    # scores and provenance are reified
    statements = list(graph.subjects(rdflib.RDF.type, rdflib.RDF.Statement))
    assert len(statements) == kg.num_triples
    first = rdflib.URIRef(BASE + "triple/0")
    assert graph.value(first, kgp.score) == rdflib.Literal(0.9, datatype=rdflib.XSD.double)
    assert graph.value(first, kgp.provenance) == rdflib.Literal("wordnet")
    assert graph.value(first, rdflib.RDF.subject) == rdflib.URIRef(BASE + "entity/dog.n.01")


def test_rdf_custom_base_round_trips(tmp_path):
    kg = make_kg()
    base = "http://example.org/my-kg/"
    path = rdf.save_rdf(kg, tmp_path / "kg.ttl", base=base)
    graph = rdflib.Graph().parse(str(path))
    assert relation_triple_count(graph, base) == kg.num_triples
    assert relation_triple_count(graph) == 0
    assert_same(load_kg(path), kg)


def test_to_rdf_and_from_rdf_in_memory():
    kg = make_kg()
    graph = rdf.to_rdf(kg)
    assert relation_triple_count(graph) == kg.num_triples
    assert_same(rdf.from_rdf(graph), kg)


def test_rdf_scores_are_exact_in_turtle(tmp_path):
    text = save_kg(make_kg(), tmp_path / "kg.ttl").read_text(encoding="utf-8")
    assert '"0.33333334"^^' in text


def test_foreign_rdf_loads_as_plain_graph(tmp_path):
    path = tmp_path / "foreign.ttl"
    path.write_text("""
        @prefix ex: <http://example.org/> .
        @prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
        @prefix skos: <http://www.w3.org/2004/02/skos/core#> .
        ex:dog a ex:Animal ;
            rdfs:label "chien"@fr, "dog"@en ;
            rdfs:comment "barks" ;
            ex:eats ex:meat ;
            ex:age 5 ;
            ex:likes [ ex:name "anonymous" ] .
        ex:cat ex:chases ex:mouse ; skos:prefLabel "cat" .
        ex:eats rdfs:label "eats" .
        ex:dog ex:eats ex:meat .
    """, encoding="utf-8")
    kg = load_kg(path)
    assert kg.name == "foreign"
    assert kg.labeled_triples() == [
        ("http://example.org/cat", "http://example.org/chases", "http://example.org/mouse"),
        ("http://example.org/dog", "http://example.org/eats", "http://example.org/meat"),
    ]
    labels = dict(zip(kg.entity_ids, kg.entity_labels))
    assert labels["http://example.org/dog"] == "dog"  # English preferred over French
    assert labels["http://example.org/cat"] == "cat"
    assert labels["http://example.org/meat"] == "http://example.org/meat"
    assert dict(zip(kg.entity_ids, kg.entity_descriptions))["http://example.org/dog"] == "barks"
    assert dict(zip(kg.relation_ids, kg.relation_labels))["http://example.org/eats"] == "eats"


def test_foreign_ntriples_load(tmp_path):
    path = tmp_path / "foreign.nt"
    path.write_text('<http://a> <http://p> <http://b> .\n<http://a> <http://www.w3.org/2000/01/rdf-schema#label> '
                    '"A" .\n_:x <http://p> <http://b> .\n', encoding="utf-8")
    kg = load_kg(path)
    assert kg.labeled_triples() == [("http://a", "http://p", "http://b")]
    assert kg.entity_labels == ("A", "http://b")


def test_rdf_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.ttl"
    path.write_text("@prefix ex: <http://example.org/> .\n\nex:a ex:b .\n", encoding="utf-8")
    with pytest.raises(KgprobeError) as err:
        load_kg(path)
    assert str(err.value).startswith(f"{path}:3: cannot parse as turtle")
    assert "\n" not in str(err.value)


def test_ntriples_syntax_error_names_file(tmp_path):
    path = tmp_path / "bad.nt"
    path.write_text("<http://a> <http://b> <http://c> .\n<http://a> <http://b> .\n", encoding="utf-8")
    with pytest.raises(KgprobeError, match=f"^{path}: cannot parse as ntriples"):
        load_kg(path)


def test_rdf_refuses_a_hand_added_triple_without_statement(tmp_path):
    path = save_kg(make_kg(), tmp_path / "kg.nt")
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"<{BASE}entity/dog.n.01> <{BASE}relation/hypernym> <{BASE}entity/isolated%20one> .\n")
    with pytest.raises(KgprobeError, match=f"^{path}: triple .* has no reified rdf:Statement"):
        load_kg(path)


def test_rdf_statement_without_score_is_an_error(tmp_path):
    path = save_kg(make_kg(), tmp_path / "kg.nt")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    drop = f"<{BASE}triple/2> <{BASE}schema#score>"
    path.write_text("".join(line for line in lines if not line.startswith(drop)), encoding="utf-8")
    with pytest.raises(KgprobeError, match="statement <.*triple/2> has no <.*score>"):
        load_kg(path)


def test_rdf_rejects_a_bad_base(tmp_path):
    with pytest.raises(KgprobeError, match="RDF base"):
        rdf.save_rdf(make_kg(), tmp_path / "kg.ttl", base="http://exa mple/")
    assert no_leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- GraphML
def test_networkx_sees_one_edge_per_triple(tmp_path):
    kg = make_kg()
    path = save_kg(kg, tmp_path / "kg.graphml")
    graph = nx.read_graphml(path, force_multigraph=True)
    assert graph.number_of_edges() == kg.num_triples
    assert graph.number_of_nodes() == kg.num_entities
    assert graph.nodes["big cat/ü #1"]["label"] == "Großkatze 🐈"
    assert graph.nodes["dog.n.01"]["description"] == ENTITIES["dog.n.01"][1]  # \r survives XML
    assert graph.graph["name"] == kg.name


def test_networkx_edge_count_with_repeated_triples(tmp_path):
    kg = KnowledgeGraph.from_labeled_triples([("a", "r", "b"), ("a", "r", "b"), ("a", "s", "b")])
    path = save_kg(kg, tmp_path / "kg.graphml")
    assert nx.read_graphml(path, force_multigraph=True).number_of_edges() == 3


def test_to_networkx_layout():
    kg = make_kg()
    graph = to_networkx(kg)
    assert isinstance(graph, nx.MultiDiGraph)
    assert list(graph.nodes) == list(kg.entity_ids)
    assert graph.nodes["dog.n.01"] == {"label": "dog", "description": ENTITIES["dog.n.01"][1], "index": 0}
    edge = graph.edges["dog.n.01", "big cat/ü #1", "hypernym"]
    assert edge == {"relation": "hypernym", "relation_label": "is a", "index": 0, "score": 0.9,
                    "provenance": "wordnet"}
    assert json.loads(graph.graph["relations"])[-1] == ["unused relation", "never used"]
    assert_same(from_networkx(graph), kg)


def test_to_networkx_keys_repeated_triples_apart():
    kg = KnowledgeGraph.from_labeled_triples([("a", "r", "b"), ("a", "r", "b")])
    graph = to_networkx(kg)
    assert sorted(graph["a"]["b"]) == ["r", "r@1"]
    assert_same(from_networkx(graph), kg)


def test_from_networkx_reads_plain_graphs():
    graph = nx.DiGraph(name="plain")
    graph.add_node(1, label="one")
    graph.add_edge(1, 2)
    graph.add_edge(2, 3, label="knows", weight=0.5)
    kg = from_networkx(graph)
    assert kg.entity_ids == ("1", "2", "3")
    assert kg.entity_labels == ("one", "2", "3")
    assert kg.labeled_triples() == [("1", "related_to", "2"), ("2", "knows", "3")]
    assert kg.scores is None and kg.name == "plain"


def test_from_networkx_requires_scores_on_all_edges_or_none():
    graph = nx.MultiDiGraph()
    graph.add_edge("a", "b", relation="r", score=0.5)
    graph.add_edge("b", "c", relation="r")
    with pytest.raises(KgprobeError, match="edge 'b' -> 'c' has no 'score' attribute"):
        from_networkx(graph)


def test_graphml_refuses_characters_xml_cannot_hold(tmp_path):
    kg = KnowledgeGraph.from_labeled_triples([("a", "r", "b")], entity_descriptions={"a": "bell\x07"})
    with pytest.raises(KgprobeError, match="entity description 'bell.x07' contains U\\+0007"):
        save_kg(kg, tmp_path / "kg.graphml")
    assert no_leftovers(tmp_path) == []


def test_graphml_parse_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.graphml"
    path.write_text("<?xml version='1.0'?>\n<graphml>\n<graph>\n</graphml>\n", encoding="utf-8")
    with pytest.raises(KgprobeError, match=f"^{path}:4: not valid XML"):
        load_kg(path)


def test_graphml_foreign_file_loads(tmp_path):
    graph = nx.Graph()
    graph.add_edge("x", "y")
    path = tmp_path / "foreign.graphml"
    nx.write_graphml(graph, path)
    kg = load_kg(path)
    assert kg.labeled_triples() == [("x", "related_to", "y")]
    assert kg.name == "foreign"


# ----------------------------------------------------------------------------- atomic saves
class Boom(RuntimeError):
    pass


def raise_boom(*args, **kwargs):
    raise Boom("disk full")


def fail_dir(monkeypatch):
    # statistics() is called after the three TSV files are written
    monkeypatch.setattr(KnowledgeGraph, "statistics", raise_boom)


def fail_tsv(monkeypatch):
    real = tsv._write_text

    def half_then_boom(path, lines):
        real(path, lines[: len(lines) // 2])
        raise Boom("disk full")
    monkeypatch.setattr(tsv, "_write_text", half_then_boom)


def fail_jsonl(monkeypatch):
    class FailingEncoder(json.JSONEncoder):
        calls = 0

        def encode(self, o):
            FailingEncoder.calls += 1
            if FailingEncoder.calls > 5:  # meta and a few entities are already written
                raise Boom("disk full")
            return super().encode(o)
    monkeypatch.setattr(jsonl.json, "JSONEncoder", FailingEncoder)


def fail_rdf(monkeypatch):
    # score strings are made lazily, after the entity blocks have been written
    monkeypatch.setattr(rdf, "score_strings", raise_boom)


def fail_graphml(monkeypatch):
    def half_then_boom(self, data):
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise Boom("disk full")
    monkeypatch.setattr(Path, "write_bytes", half_then_boom)


FAILURES = {"kg": fail_dir, "kg.tsv": fail_tsv, "kg.jsonl": fail_jsonl, "kg.ttl": fail_rdf,
            "kg.nt": fail_rdf, "kg.graphml": fail_graphml}


@pytest.mark.parametrize("name", list(FAILURES))
def test_failed_save_leaves_nothing_behind(tmp_path, monkeypatch, name):
    FAILURES[name](monkeypatch)
    with pytest.raises(Boom):
        save_kg(make_kg(), tmp_path / name)
    assert no_leftovers(tmp_path) == []


@pytest.mark.parametrize("name", list(FAILURES))
def test_failed_save_keeps_the_previous_output(tmp_path, monkeypatch, name):
    old = KnowledgeGraph.from_labeled_triples([("old", "r", "kg")], scores=[0.5], name="old")
    path = save_kg(old, tmp_path / name)
    FAILURES[name](monkeypatch)
    with pytest.raises(Boom):
        save_kg(make_kg(), path)
    monkeypatch.undo()
    assert no_leftovers(tmp_path) == [name]
    assert load_kg(path).labeled_triples() == old.labeled_triples()


# ----------------------------------------------------------------------------- hardening (fuzzing issue)
def test_a_directory_without_kg_files_is_not_a_kg_file(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    with pytest.raises(KgprobeError) as err:
        load_kg(folder)
    assert str(err.value).startswith(f"{folder}: is a directory, expected a KG file (tsv (.tsv, .txt), ")
    assert "or a KG directory (holding entities.tsv, relations.tsv, triples.tsv)" in str(err.value)
    ttl = tmp_path / "graph.ttl"
    ttl.mkdir()
    with pytest.raises(KgprobeError, match=f"^{ttl}: is a directory, expected a turtle file \\(.ttl\\)"):
        load_kg(ttl)
    (folder / "entities.tsv").write_text("id\tlabel\tdescription\n", encoding="utf-8")
    with pytest.raises(KgprobeError, match=f"^{folder}: not a KG directory: relations.tsv is missing$"):
        load_kg(folder)
    with pytest.raises(KgprobeError, match=f"^{tmp_path / 'nope'}: no such file or directory"):
        load_kg(tmp_path / "nope")


@pytest.mark.parametrize("name", ["kg", *LOSSLESS.values(), "kg.tsv"])
def test_a_graph_without_triples_loads_with_one_warning(tmp_path, capsys, name):
    kg = KnowledgeGraph(entity_ids=["lonely"], relation_ids=[], triples=torch.zeros(0, 3))
    path = save_kg(kg, tmp_path / name)
    capsys.readouterr()
    assert load_kg(path).num_triples == 0
    assert capsys.readouterr().err == f"kgprobe: warning: {path}: holds no triples\n"
    load_kg(path, warn_empty=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name", [n for n in LOSSLESS.values() if n != "kg"] + ["kg.tsv"])
def test_an_empty_file_is_an_empty_graph_with_a_warning(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(b"")
    kg = load_kg(path)
    assert (kg.num_entities, kg.num_relations, kg.num_triples) == (0, 0, 0)
    assert capsys.readouterr().err == f"kgprobe: warning: {path}: holds no triples\n"


@pytest.mark.parametrize("name", ["kg.ttl", "kg.nt"])
def test_rdf_progress_bar_for_big_files_only(tmp_path, capsys, monkeypatch, name):
    path = save_kg(make_kg(), tmp_path / name)
    capsys.readouterr()
    assert_same(load_kg(path), make_kg())
    assert capsys.readouterr().err == ""  # small file: no bar
    monkeypatch.setattr(rdf, "PROGRESS_MIN_BYTES", 0)
    assert_same(load_kg(path), make_kg())
    assert f"reading {name}" in capsys.readouterr().err
    assert_same(load_kg(path, progress=False), make_kg())
    assert capsys.readouterr().err == ""


def test_unfinished_temporary_outputs_are_refused(tmp_path):
    message = "is an unfinished temporary output of an interrupted kgprobe run (it is removed by the next run"
    good = save_kg(make_kg(), tmp_path / "kg.ttl")
    temporary = tmp_path / ".kg.ttl.tmp-k2j_x9ab"
    temporary.write_bytes(good.read_bytes())
    with pytest.raises(KgprobeError, match=f"^{temporary}: {re_escape(message)}"):
        load_kg(temporary)
    kg_dir = save_kg(make_kg(), tmp_path / "kg")
    temporary_dir = kg_dir.rename(tmp_path / ".kg.tmp-abcd1234")
    for path in (temporary_dir, temporary_dir / "triples.tsv"):
        with pytest.raises(KgprobeError, match=f"^{path}: {re_escape(message)}"):
            load_kg(path)
    # only kgprobe's own pattern: a hidden file or a '.tmp' name of the user's is read as usual
    hidden = tmp_path / ".kg.ttl"
    hidden.write_bytes(good.read_bytes())
    assert_same(load_kg(hidden), make_kg())


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_tsv_output_is_what_pykeen_reads(tmp_path, capsys):
    """`kgprobe kg convert KG x.tsv` writes headerless head<TAB>relation<TAB>tail[<TAB>score] lines;
    PyKEEN reads exactly the graph's triples (it ignores the score column). A KG directory's
    triples.tsv is not for PyKEEN: its header row would be read as a triple."""
    from pykeen.triples import TriplesFactory

    from kgprobe.cli import main

    kg = KnowledgeGraph.from_labeled_triples(
        [("dog.n.01", "_hypernym", "canine.n.02"), ("Zürich", "located in", "Schweiz 🇨🇭"),
         ("a#b", "r/x", "c,d;e"), ("dog.n.01", "_hypernym", "canine.n.02"), ("x y", "r/x", "'quoted'")],
        scores=[0.5, 1.0, 0.25, 0.75, 0.0], provenance=["a", "b", "c", "d", "e"])
    kg_dir = save_kg(kg, tmp_path / "kg")
    with pytest.raises(SystemExit) as exit_:
        main(["kg", "convert", str(kg_dir), str(tmp_path / "train.tsv")])
    assert exit_.value.code == 0, capsys.readouterr().err
    text = (tmp_path / "train.tsv").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "dog.n.01\t_hypernym\tcanine.n.02\t0.5"
    factory = TriplesFactory.from_path(tmp_path / "train.tsv")
    # PyKEEN keeps each distinct triple once; the file keeps the repeat (kgprobe reads it back)
    assert sorted(map(tuple, factory.triples.tolist())) == sorted(set(kg.labeled_triples()))
    assert factory.num_triples == kg.num_triples - 1
    back = load_kg(tmp_path / "train.tsv")  # and the round trip still keeps triples and scores
    assert back.labeled_triples() == kg.labeled_triples()
    assert torch.equal(back.scores, kg.scores)


def test_tsv_round_trips_a_first_triple_that_looks_like_a_header(tmp_path):
    for triples in ([("head", "relation", "tail"), ("a", "r", "b")], [("\ufeffbom", "r", "b")]):
        kg = KnowledgeGraph.from_labeled_triples(triples)
        path = save_kg(kg, tmp_path / "kg.tsv")
        assert path.read_text(encoding="utf-8").startswith("head\trelation\ttail\n")
        assert load_kg(path).labeled_triples() == kg.labeled_triples()


def test_rdf_reads_a_byte_order_mark_and_crlf(tmp_path):
    path = save_kg(make_kg(), tmp_path / "kg.ttl")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    assert_same(load_kg(path), make_kg())


def test_rdf_special_float_scores_round_trip(tmp_path):
    kg = KnowledgeGraph.from_labeled_triples([("a", "r", "b")] * 3, scores=[float("inf"), float("-inf"), 1e-45])
    path = save_kg(kg, tmp_path / "kg.nt")
    assert '"INF"^^' in path.read_text(encoding="utf-8")
    assert_same(load_kg(path), kg)
    # files written before used numpy's spelling
    path.write_text(path.read_text(encoding="utf-8").replace('"INF"^^', '"inf"^^'), encoding="utf-8")
    assert_same(load_kg(path), kg)


def test_rdf_error_messages_give_the_line(tmp_path):
    path = tmp_path / "bad.nt"
    path.write_text("<http://a> <http://b> <http://c> .\n<http://a> <http://b> .\n", encoding="utf-8")
    with pytest.raises(KgprobeError, match=f"^{path}: cannot parse as ntriples: line 2, column 23: "):
        load_kg(path)
    path = tmp_path / "bad.ttl"
    path.write_text('<http://a> <http://p> "\\uD800" .\n', encoding="utf-8")
    with pytest.raises(KgprobeError, match=f"^{path}:1: cannot parse as turtle: column 24: .*D800"):
        load_kg(path)


def test_rdf_bad_literals_are_errors_not_log_noise(tmp_path, caplog):
    kg_path = save_kg(make_kg(), tmp_path / "kg.nt")
    text = kg_path.read_text(encoding="utf-8")
    xsd = "http://www.w3.org/2001/XMLSchema#"
    kg_path.write_text(text.replace(f'"0"^^<{xsd}integer>', f'"zero"^^<{xsd}integer>', 1), encoding="utf-8")
    with pytest.raises(KgprobeError, match=f'^{kg_path}: .* has kgp:index "zero"\\^\\^<{xsd}integer>, which is not'):
        load_kg(kg_path)
    kg_path.write_text(text.replace(f'"0.9"^^<{xsd}double>', f'"{"9" * 400}"^^<{xsd}integer>'), encoding="utf-8")
    assert load_kg(kg_path).scores[0] == float("inf")
    foreign = tmp_path / "foreign.ttl"
    foreign.write_text('<http://a> <http://p> "x"^^<http://www.w3.org/2001/XMLSchema#integer> .\n'
                       "<http://a> <http://q> <http://b> .\n", encoding="utf-8")
    assert load_kg(foreign).labeled_triples() == [("http://a", "http://q", "http://b")]
    assert caplog.records == []


@pytest.mark.parametrize("name", ["kg", "kg.tsv", "kg.jsonl", "kg.ttl", "kg.nt"])
def test_text_utf8_cannot_encode_is_a_one_line_error(tmp_path, name):
    kg = KnowledgeGraph.from_labeled_triples([("a\ud800", "r", "b")])
    with pytest.raises(KgprobeError, match=f"^{tmp_path / name}: cannot write: .* holds U\\+D800"):
        save_kg(kg, tmp_path / name)
    assert no_leftovers(tmp_path) == []


def test_jsonl_numbers_beyond_float_range(tmp_path):
    path = tmp_path / "kg.jsonl"
    path.write_text('{"type": "entity", "id": "a"}\n{"type": "relation", "id": "r"}\n'
                    '{"type": "triple", "head": "a", "relation": "r", "tail": "a", "score": ' + "9" * 400 + "}\n"
                    '{"type": "triple", "head": "a", "relation": "r", "tail": "a", "score": -' + "9" * 400 + "}\n",
                    encoding="utf-8")
    assert load_kg(path).scores.tolist() == [float("inf"), float("-inf")]
    path.write_text('{"type": "meta", "version": ' + "9" * 5000 + "}\n", encoding="utf-8")
    with pytest.raises(KgprobeError, match=f"^{path}:1: invalid JSON: a number has too many digits$"):
        load_kg(path)
