"""Fact sets for BEAR-style probing (kgprobe.probe.fact_sets): true facts with sound alternatives."""
import json
import re
from pathlib import Path

import pytest

from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.probe.fact_sets import (
    FACT_SETS,
    Fact,
    FactSet,
    build_fact_set,
    harvest_run_kg,
    load_fact_set,
    load_templates,
    template_from_prompt,
    templates_from_relation_files,
)
from kgprobe.probe.statements import fill  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = {"capital": "The capital of [X] is [Y].", "continent": "[X] is in [Y].",
             "borders": "[X] borders [Y]."}
CONTINENTS = ["Africa", "Asia", "Europe", "Oceania", "America"]


def _kg() -> KnowledgeGraph:
    """20 countries, each with its own capital (c0 has two, c2's is 'PARIS' next to c1's 'Paris'),
    a continent (5 objects) and borders with the next two countries (several true objects)."""
    triples, labels = [], {}
    for i in range(20):
        labels[f"C{i}"] = f"Country {i}"
        labels[f"city{i}"] = f"City {i}"
        triples.append((f"C{i}", "capital", f"city{i}"))
        triples.append((f"C{i}", "continent", f"cont{i % 5}"))
        for j in (i + 1, i + 2):
            triples.append((f"C{i}", "borders", f"C{j % 20}"))
    triples.append(("C0", "capital", "city19b"))
    labels.update({"city1": "Paris", "city2": "PARIS", "city19b": "Second City",
                   **{f"cont{i}": name for i, name in enumerate(CONTINENTS)}})
    return KnowledgeGraph.from_labeled_triples(triples, entity_labels=labels, name="tiny")


def _true(kg: KnowledgeGraph) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for h, r, t in kg.labeled_triples():
        out.setdefault((h, r), set()).add(t)
    return out


# ------------------------------------------------------------------ building
def test_alternatives_are_never_true_and_k_is_respected():
    kg = _kg()
    fs = build_fact_set(kg, TEMPLATES, k=4, relations=["capital", "borders", "continent"], name="tiny")
    true = _true(kg)
    assert len(fs.facts) == 21 + 40 + 20
    for f in fs.facts:
        assert len(f.alternatives) == len(set(f.alternatives)) == len(f.alternative_ids) == 4
        assert not true[(f.subject_id, f.relation)] & set(f.alternative_ids)
        assert f.answer.casefold() not in {a.casefold() for a in f.alternatives}
        assert f.answer_id in true[(f.subject_id, f.relation)] and f.options == (f.answer, *f.alternatives)
    country1 = next(f for f in fs.facts if f.subject_id == "C1" and f.relation == "capital")
    assert country1.answer == "Paris"
    # 'PARIS' (C2's capital) reads as the answer, so it is never an option; over many seeds
    for seed in range(30):
        again = build_fact_set(kg, TEMPLATES, k=10, seed=seed, relations=["capital"], name="tiny")
        assert all("PARIS" not in f.alternatives for f in again.facts if f.subject_id == "C1")
    assert fs.statements(country1)[0] == "The capital of Country 1 is Paris."


def test_same_seed_same_facts_other_seed_other_alternatives():
    kg = _kg()
    a = build_fact_set(kg, TEMPLATES, k=3, relations=["capital", "borders"], name="x")
    assert a == build_fact_set(kg, TEMPLATES, k=3, relations=["capital", "borders"], name="x")
    b = build_fact_set(kg, TEMPLATES, k=3, seed=1, relations=["capital", "borders"], name="x")
    assert [(f.subject_id, f.answer_id) for f in a.facts] == [(f.subject_id, f.answer_id) for f in b.facts]
    assert [f.alternative_ids for f in a.facts] != [f.alternative_ids for f in b.facts]


def test_a_subset_of_relations_gives_the_same_facts():
    kg = _kg()
    both = build_fact_set(kg, TEMPLATES, k=3, relations=["capital", "borders"], name="x")
    alone = build_fact_set(kg, TEMPLATES, k=3, relations=["borders"], name="x")
    assert alone.facts == [f for f in both.facts if f.relation == "borders"]
    assert list(alone.templates) == ["borders"]


def test_max_facts_per_relation_is_a_seeded_sample_in_kg_order():
    kg = _kg()
    full = build_fact_set(kg, TEMPLATES, k=3, relations=["borders"], name="x").facts
    some = build_fact_set(kg, TEMPLATES, k=3, relations=["borders"], max_facts_per_relation=7, name="x").facts
    assert len(some) == 7 and some == build_fact_set(kg, TEMPLATES, k=3, relations=["borders"],
                                                     max_facts_per_relation=7, name="x").facts
    order = [(f.subject_id, f.answer_id) for f in full]
    positions = [order.index((f.subject_id, f.answer_id)) for f in some]
    assert positions == sorted(positions)


def test_also_true_triples_are_never_alternatives():
    kg = _kg()
    also = KnowledgeGraph.from_labeled_triples([("C0", "borders", f"C{j}") for j in range(3, 12)])
    for seed in range(5):
        fs = build_fact_set(kg, TEMPLATES, k=5, seed=seed, relations=["borders"], also_true=also, name="x")
        for f in fs.facts:
            if f.subject_id == "C0":
                assert not {f"C{j}" for j in range(3, 12)} & set(f.alternative_ids)


def test_statements_fill_both_slots_and_start_upper_case():
    assert fill("[X] is a kind of [Y].", "dog", "canine").text == "Dog is a kind of canine."
    assert fill("The opposite of [X] is [Y].", "hot [Y]", "cold").text == "The opposite of hot [Y] is cold."
    assert fill("[Y] is the capital of [X].", "France", "Paris").answer == (0, 5)
    assert fill("The capital of [X] is [Y].", "France", "Paris").answer == (25, 30)


# ------------------------------------------------------------------ errors
def test_errors_are_one_line_and_say_what_to_do(tmp_path):
    kg = _kg()
    with pytest.raises(KgprobeError, match=r"^relation 'capitol' has no template in the templates "
                                           r"\(templates: capital, continent, borders\)$"):
        build_fact_set(kg, TEMPLATES, relations=["capitol"], name="x")
    path = tmp_path / "t.yaml"
    path.write_text("relations:\n  capital: 'The capital of [X] is [Y].'\n")
    with pytest.raises(KgprobeError, match=rf"^relation 'borders' has no template in {re.escape(str(path))} "
                                           r"\(templates: capital\)$"):
        build_fact_set(kg, path, relations=["borders"], name="x")
    with pytest.raises(KgprobeError, match=r"^relation 'language' is not in the KG 'tiny' \(relations: "
                                           r"capital, continent, borders\)$"):
        build_fact_set(kg, {"language": "[Y] is spoken in [X]."}, name="x")
    with pytest.raises(KgprobeError, match=r"^relation 'continent': a fact has only 4 other objects, fewer than "
                                           r"k=10 alternatives \(use k <= 4\)$"):
        build_fact_set(kg, TEMPLATES, relations=["continent"], name="x")
    assert len(build_fact_set(kg, TEMPLATES, k=4, relations=["continent"], name="x").facts) == 20
    with pytest.raises(KgprobeError, match=r"^k must be at least 1 alternative per fact, got 0$"):
        build_fact_set(kg, TEMPLATES, k=0, name="x")
    bare = KnowledgeGraph.from_labeled_triples([("Q142", "P36", "Q90"), ("Q17", "P36", "Q1490")])
    with pytest.raises(KgprobeError, match=r"^KG has no entity labels: the labels of 'kg' are empty or its ids "
                                           r"\(e.g. 'Q142'\); fact statements need names$"):
        build_fact_set(bare, {"P36": "The capital of [X] is [Y]."}, k=1, name="x")


@pytest.mark.parametrize("text, line, message", [
    ("relations:\n  capital: 'The capital of [X] is [Y].'\n  currency: 'The currency is [Y].'\n", 3,
     "relations.currency: the template must contain [X] once, it has it 0 times: 'The currency is [Y].'"),
    ("relations:\n  borders: '[X] borders [Y] and [Y].'\n", 2,
     "relations.borders: the template must contain [Y] once, it has it 2 times"),
    ("relations:\n  capital: 3\n", 2, "relations.capital: a template must be a non-empty string"),
    ("templates:\n  capital: '[X] [Y]'\n", 1, "a templates file must be a mapping `relations:"),
    ("relations: {capital: '[X] [Y]'}\nextra: 1\n", 2, "extra: unknown key"),
    ("relations:\n  capital: '[X] [Y]'\n  capital: '[Y] [X]'\n", 3, "key 'capital' is given twice"),
])
def test_template_file_errors_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "templates.yaml"
    path.write_text(text)
    with pytest.raises(KgprobeError) as err:
        load_templates(path)
    assert str(err.value).startswith(f"{path}:{line}: {message}")
    assert "\n" not in str(err.value)


def test_harvester_relation_files_serve_as_templates(tmp_path):
    suite = REPO / "kg_data" / "relations" / "suite"
    assert template_from_prompt("<ENT0> is the capital of <ENT1> .", head=1, tail=0) == "[Y] is the capital of [X]."
    assert load_templates(suite / "capital_of.yaml") == {"capital": "[Y] is the capital of [X]."}
    kg, table = templates_from_relation_files([suite / "capital_of.yaml", suite / "language_of.yaml"])
    assert kg == "countries" and list(table) == ["capital", "language"]
    assert all("[X]" in t and "[Y]" in t and "<ENT" not in t for t in table.values())
    with pytest.raises(KgprobeError, match="borders.yaml: reference kg 'geonames' differs from 'countries' of "):
        templates_from_relation_files([suite / "capital_of.yaml", suite / "borders.yaml"])
    with pytest.raises(KgprobeError, match="relation 'capital' is also given by"):
        templates_from_relation_files([suite / "capital_of.yaml", REPO / "kg_data/relations/capital_of.yaml"])
    fs = load_fact_set(suite / "capital_of.yaml", k=5)
    assert fs.name == "capital_of" and len(fs.facts) > 200
    assert "Paris is the capital of France." in {fs.statements(f)[0] for f in fs.facts}


# ------------------------------------------------------------------ files
def test_jsonl_round_trip(tmp_path):
    fs = build_fact_set(_kg(), TEMPLATES, k=3, relations=["capital", "borders"], name="tiny")
    path = fs.to_jsonl(tmp_path / "facts.jsonl")
    assert FactSet.from_jsonl(path) == fs
    header = json.loads(path.read_text().splitlines()[0])
    assert header == {"fact_set": "tiny", "templates": fs.templates, "facts": len(fs.facts)}
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(KgprobeError, match=rf"^{re.escape(str(path))}:1: the header says 61 facts, the file has 60"):
        FactSet.from_jsonl(path)
    path.write_text(path.read_text().splitlines()[0] + "\n{\"relation\": \"capital\"}\n")
    with pytest.raises(KgprobeError, match=rf"^{re.escape(str(path))}:2: a fact line must have the keys"):
        FactSet.from_jsonl(path)


def test_a_kg_path_with_a_templates_file(tmp_path):
    from kgprobe.kg.formats import save_kg

    kg_dir = save_kg(_kg(), tmp_path / "kg")
    templates = tmp_path / "t.yaml"
    templates.write_text("relations:\n  capital: 'The capital of [X] is [Y].'\n")
    fs = load_fact_set(kg_dir, templates=templates, k=3)
    assert fs.name == "kg" and fs.facts == build_fact_set(_kg(), TEMPLATES, k=3, relations=["capital"],
                                                          name="kg").facts
    with pytest.raises(KgprobeError, match="a KG needs templates"):
        load_fact_set(kg_dir)
    with pytest.raises(KgprobeError, match=r"^unknown fact set 'nope': neither a named set \(countries, wordnet, "
                                           r"nations\) nor a path$"):
        load_fact_set("nope")


def test_a_harvest_run_loads_as_a_one_relation_fact_set(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "relation.yaml").write_text(
        "name: capital_of\nprompts:\n  - \"<ENT0> is the capital of <ENT1> .\"\n"
        "seeds:\n  - [Paris, France]\n  - [Tokyo, Japan]\n"
        "reference:\n  kg: countries\n  relation: capital\n  head: 1\n  tail: 0\n")
    pairs = [["Paris", "France"], ["Tokyo", "Japan"], ["Lima", "Peru"], ["Rome", "Italy"], ["Madrid", "Spain"]]
    (run / "tuples.jsonl").write_text("".join(json.dumps({"entities": p, "score": -1.0}) + "\n" for p in pairs))
    kg, table = harvest_run_kg(run)
    assert table == {"capital_of": "[Y] is the capital of [X]."}
    assert kg.labeled_triples()[0] == ("France", "capital_of", "Paris")
    fs = load_fact_set(run, k=3)
    assert fs.name == "run" and len(fs.facts) == 5
    assert fs.statements(fs.facts[0])[0] == "Paris is the capital of France."
    assert all(f.answer not in f.alternatives and len(f.alternatives) == 3 for f in fs.facts)
    (run / "tuples.jsonl").write_text(json.dumps({"entities": ["Paris"]}) + "\n")
    with pytest.raises(KgprobeError, match=r"tuples.jsonl:1: not a harvest tuple line with slots 1 and 0$"):
        load_fact_set(run, k=3)


# ------------------------------------------------------------------ the named sets
def test_default_fact_sets_give_over_2000_facts():
    sizes = {}
    for name, spec in FACT_SETS.items():
        fs = load_fact_set(name)
        assert fs.name == name and set(fs.templates) == set(spec.relations or load_templates(spec.templates))
        for f in fs.facts:
            assert len(f.alternatives) == spec.k and f.answer not in f.alternatives
            assert fs.statements(f)[0][0].isupper() and fs.statements(f)[0].endswith(".")
        sizes[name] = len(fs.facts)
    assert sum(sizes.values()) >= 2000, sizes
    assert sizes["countries"] > 1500 and sizes["nations"] > 200 and sizes["wordnet"] > 2000


def test_named_sets_read_naturally():
    countries = load_fact_set("countries", relations=["capital", "currency", "demonym"], k=3)
    true = {countries.statements(f)[0] for f in countries.facts}
    assert {"The capital of France is Paris.", "The currency of Japan is the yen.",
            "The demonym of France is French."} <= true
    assert load_fact_set("countries", relations=["capital"], k=3).facts == [
        f for f in countries.facts if f.relation == "capital"]
    with pytest.raises(KgprobeError, match=r"relation 'region': a fact has only 4 other objects"):
        load_fact_set("countries", relations=["region"])
    assert len(load_fact_set("countries", relations=["region"], k=4).facts) > 200
    nations = load_fact_set("nations", relations=["treaties"])
    assert all(re.fullmatch(r"[A-Z].* has signed a treaty with .*\.", s)
               for f in nations.facts for s in nations.statements(f))


def test_wordnet_hypernyms_are_direct_and_alternatives_are_not_ancestors():
    fs = load_fact_set("wordnet", max_facts_per_relation=100_000, relations=["hypernym"], k=10)
    dog = [f for f in fs.facts if f.subject == "dog"]
    assert {f.answer for f in dog} == {"canine", "domestic animal"}
    # animal, mammal, carnivore, ... are true of a dog too: never offered as wrong
    ancestors = {"animal", "mammal", "carnivore", "organism", "placental", "vertebrate", "canine"}
    assert all(not ancestors & set(f.alternatives) for f in dog)
    antonyms = load_fact_set("wordnet", relations=["antonym"], max_facts_per_relation=100_000, k=10)
    hot = [f for f in antonyms.facts if f.subject == "hot"]
    assert "cold" in {f.answer for f in hot}
    assert all(not {"cold", "frigid", "icy", "cool"} & set(f.alternatives) for f in hot)


def test_fact_is_frozen():
    fact = Fact("r", "s", "a", ("b",), "S", "A", ("B",))
    with pytest.raises(AttributeError):
        fact.answer = "x"


# ------------------------------------------------------------------ k="all": BEAR's answer space
def test_k_all_offers_every_object_of_the_sets_facts_but_the_true_ones():
    kg = _kg()
    fs = build_fact_set(kg, TEMPLATES, k="all", relations=["capital", "continent", "borders"], name="tiny")
    true = _true(kg)
    for relation in ("capital", "continent", "borders"):
        facts = [f for f in fs.facts if f.relation == relation]
        space = {f.answer.casefold() for f in facts}
        for f in facts:
            assert list(f.alternative_ids) == sorted(f.alternative_ids)  # a fixed order: by id
            assert not true[(f.subject_id, relation)] & set(f.alternative_ids)
            # every other object of the relation (one per label) is an option, nothing else
            truth = {kg.entity_labels[kg.entity_index(o)].casefold() for o in true[(f.subject_id, relation)]}
            assert {a.casefold() for a in f.alternatives} == space - truth
            assert len(f.alternatives) == len(set(f.alternatives))
    continent = [f for f in fs.facts if f.relation == "continent"]
    assert all(len(f.alternatives) == 4 for f in continent)
    # C0 has two capitals: each of its facts leaves both out; 'PARIS' and 'Paris' are one option
    c0 = [f for f in fs.facts if f.relation == "capital" and f.subject_id == "C0"]
    c5 = next(f for f in fs.facts if f.relation == "capital" and f.subject_id == "C5")
    assert len(c0) == 2 and all(len(f.alternatives) == 18 for f in c0) and len(c5.alternatives) == 19
    assert sum(a.casefold() == "paris" for a in c5.alternatives) == 1


def test_k_all_answer_space_is_the_sampled_facts_objects_and_the_sample_is_that_of_k():
    kg = _kg()
    some = build_fact_set(kg, TEMPLATES, k="all", relations=["capital"], max_facts_per_relation=6, name="x").facts
    drawn = build_fact_set(kg, TEMPLATES, k=3, relations=["capital"], max_facts_per_relation=6, name="x").facts
    assert [(f.subject_id, f.answer_id) for f in some] == [(f.subject_id, f.answer_id) for f in drawn]
    space = {f.answer for f in some}
    assert all(set(f.options) == space for f in some if f.subject_id != "C0")
    assert some == build_fact_set(kg, TEMPLATES, k="all", seed=0, relations=["capital"], max_facts_per_relation=6,
                                  name="x").facts
    with pytest.raises(KgprobeError, match=r"^relation 'capital': a fact has no other object among the 1 of the "
                                           r"set's facts \(k='all'\): leave the relation out or ask more facts$"):
        build_fact_set(kg, TEMPLATES, k="all", relations=["capital"], max_facts_per_relation=1, name="x")
    with pytest.raises(KgprobeError, match=r"^k must be a number of alternatives per fact or 'all', got 'al'$"):
        build_fact_set(kg, TEMPLATES, k="al", name="x")


def test_k_all_named_set_and_jsonl(tmp_path):
    fs = load_fact_set("countries", k="all", relations=["capital", "subregion"], max_facts_per_relation=30)
    for relation in ("capital", "subregion"):
        facts = [f for f in fs.facts if f.relation == relation]
        assert len(facts) == 30 and all(set(f.options) == {g.answer for g in facts} for f in facts)
    assert FactSet.from_jsonl(fs.to_jsonl(tmp_path / "all.jsonl")) == fs
