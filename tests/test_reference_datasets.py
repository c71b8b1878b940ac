"""The harvest reference datasets ``geonames`` and ``wordnet-lexical`` hold the facts they promise,
built from the real installed sources (skipped, with the install hint, where one is missing)."""
from __future__ import annotations

import pytest

from kgprobe.harvest.evaluate import load_reference, normalise, reference_pairs
from kgprobe.kg.datasets import DATASETS, build_dataset, geonames, wordnet


def _labelled_pairs(kg, relation: str) -> set[tuple[str, str]]:
    r = kg.relation_index(relation)
    rows = kg.triples[kg.triples[:, 1] == r].tolist()
    return {(kg.entity_labels[h], kg.entity_labels[t]) for h, _, t in rows}


def _built(name: str, problem: str | None):
    if problem:
        pytest.skip(problem)
    return build_dataset(name)


@pytest.fixture(scope="module")
def geo():
    return _built("geonames", geonames.available())


@pytest.fixture(scope="module")
def lex():
    return _built("wordnet-lexical", wordnet.available())


def test_both_registered_with_one_line_descriptions():
    for name in ("geonames", "wordnet-lexical"):
        assert name in DATASETS and "\n" not in DATASETS[name].description


# ----------------------------------------------------------------- geonames
def test_geonames_relations_and_sizes(geo):
    assert geo.name == "geonames"
    assert geo.relation_ids == ("city_in_country", "city_in_us_state", "country_in_continent",
                                "capital", "largest_city", "neighbours")
    per_relation = geo.statistics()["triples_per_relation"]
    assert per_relation["city_in_country"] > 30_000
    assert per_relation["city_in_us_state"] > 3_000
    assert 200 < per_relation["capital"] <= 252
    assert all(count > 0 for count in per_relation.values())
    assert list(geo.entity_ids) == sorted(geo.entity_ids)


def test_geonames_facts(geo):
    assert {("Lyon", "France"), ("Osaka", "Japan")} <= _labelled_pairs(geo, "city_in_country")
    assert ("France", "Paris") in _labelled_pairs(geo, "capital")
    assert ("Australia", "Canberra") in _labelled_pairs(geo, "capital")
    continents = _labelled_pairs(geo, "country_in_continent")
    assert {("France", "Europe"), ("Brazil", "South America"), ("Japan", "Asia")} <= continents
    assert ("Japan", "Tokyo") in _labelled_pairs(geo, "largest_city")
    assert ("Houston", "Texas") in _labelled_pairs(geo, "city_in_us_state")
    neighbours = _labelled_pairs(geo, "neighbours")
    assert ("France", "Spain") in neighbours and ("Spain", "France") in neighbours


def test_geonames_ids(geo):
    assert geo.entity_labels[geo.entity_index("FR")] == "France"
    assert geo.entity_labels[geo.entity_index("us:TX")] == "Texas"
    assert geo.entity_labels[geo.entity_index("continent:SA")] == "South America"
    paris = [e for e, label in zip(geo.entity_ids, geo.entity_labels) if label == "Paris"]
    assert paris and all(e.startswith("city:") for e in paris)


def test_geonames_aliases_latin_short_and_capped():
    if geonames.available():
        pytest.skip(geonames.available())
    aliases = geonames.aliases()
    lyon = next(names for names in aliases.values() if "Lyons" in names)
    assert "Lugdunum" in lyon
    for names in aliases.values():
        assert len(names) <= geonames.MAX_CITY_ALIASES
    assert aliases["us:TX"] == ["TX"]


def test_geonames_alias_matches_through_load_reference(geo):
    kg, relation, aliases = load_reference("geonames:city_in_country")
    assert relation == "city_in_country" and aliases
    pairs = reference_pairs(kg, relation, aliases)
    assert any(normalise("Lyons") in heads and normalise("France") in tails for heads, tails in pairs)
    assert any(normalise("Lyon") in heads and normalise("France") in tails for heads, tails in pairs)


# ----------------------------------------------------------------- wordnet-lexical
@pytest.mark.slow  # builds all of WordNet at word level (~20 s)
def test_wordnet_lexical_relations_and_ids(lex):
    assert lex.name == "wordnet-lexical"
    assert lex.relation_ids == ("antonym", "synonym", "hypernym", "instance_of", "part_of", "derivation",
                                "pertainym")
    assert lex.num_entities > 140_000
    assert lex.num_triples < 5_000_000
    assert all(count > 0 for count in lex.statistics()["triples_per_relation"].values())
    assert list(lex.entity_ids) == sorted(lex.entity_ids)
    assert lex.entity_labels == lex.entity_ids
    for word in ("dog", "France", "Mozart", "domestic dog"):
        lex.entity_index(word)
    assert not [e for e in lex.entity_ids if "_" in e or e.endswith(("(a)", "(p)", "(ip)"))]


def _lex(kg, relation: str, pairs: list[tuple[str, str]]) -> list[bool]:
    """For each (head, tail) of words, whether ``relation`` joins them (ids are the words)."""
    r = kg.relation_index(relation)
    rows = kg.triples[kg.triples[:, 1] == r]
    return [bool(((rows[:, 0] == kg.entity_index(h)) & (rows[:, 2] == kg.entity_index(t))).any())
            for h, t in pairs]


@pytest.mark.slow
def test_wordnet_lexical_facts(lex):
    assert _lex(lex, "antonym", [("hot", "cold"), ("cold", "hot")]) == [True, True]
    assert _lex(lex, "synonym", [("big", "large"), ("large", "big")]) == [True, True]
    # adjective clusters: similar-to satellites are synonyms, and indirect antonyms of the head's antonym
    assert _lex(lex, "synonym", [("beautiful", "pretty"), ("big", "small")]) == [True, False]
    assert _lex(lex, "antonym", [("great", "small"), ("great", "large")]) == [True, False]
    assert _lex(lex, "pertainym", [("French", "France"), ("France", "French")]) == [True, False]
    assert _lex(lex, "hypernym", [("dog", "animal"), ("dog", "canine"), ("dog", "carnivore"),
                                  ("animal", "dog")]) == [True, True, True, False]
    hypernyms = lex.triples[lex.triples[:, 1] == lex.relation_index("hypernym")]
    assert not bool((hypernyms[:, 0] == hypernyms[:, 2]).any())
    assert all(_lex(lex, "instance_of", [("Mozart", "composer"), ("Paris", "city"), ("France", "country")]))
    # finger -> hand -> arm: part holonyms are followed transitively
    assert all(_lex(lex, "part_of", [("car door", "car"), ("finger", "hand"), ("finger", "arm")]))
    assert _lex(lex, "derivation", [("teach", "teacher"), ("teacher", "teach")]) == [True, True]
