"""The dataset builders produce the graphs their docs promise, from the locally installed sources."""
from __future__ import annotations

from pathlib import Path

import pytest

from kgprobe.errors import KgprobeError
from kgprobe.kg.datasets import DATASETS, build_dataset, countries, pykeen_tsv, wordnet


@pytest.fixture(scope="module")
def wn():
    return build_dataset("wordnet")


@pytest.fixture(scope="module")
def geo():
    return build_dataset("countries")


def _has(kg, head: str, relation: str, tail: str) -> bool:
    h, r, t = kg.entity_index(head), kg.relation_index(relation), kg.entity_index(tail)
    return bool(((kg.triples[:, 0] == h) & (kg.triples[:, 1] == r) & (kg.triples[:, 2] == t)).any())


# ----------------------------------------------------------------- registry
def test_registry_lists_every_builder_and_all_are_available_here():
    assert set(DATASETS) == {"wordnet", "wordnet-lexical", "countries", "geonames", "nations", "umls", "kinships",
                             "synthetic-10k", "synthetic-100k", "synthetic-1m", "synthetic-5m"}
    for name, spec in DATASETS.items():
        assert spec.name == name and spec.description and "\n" not in spec.description
        assert spec.available() is None, spec.available()


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(KgprobeError) as err:
        build_dataset("freebase")
    message = str(err.value)
    assert "'freebase'" in message
    for name in DATASETS:
        assert name in message


def test_missing_wordnet_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("KGPROBE_WORDNET_DIR", str(tmp_path))
    hint = wordnet.available()
    assert hint is not None and "apt-get install wordnet-base" in hint and "KGPROBE_WORDNET_DIR" in hint
    with pytest.raises(KgprobeError, match="wordnet-base"):
        build_dataset("wordnet")


# ----------------------------------------------------------------- wordnet
def test_wordnet_sizes_and_relations(wn):
    assert wn.num_entities >= 110_000
    assert wn.num_triples > 200_000
    assert wn.relation_ids == (
        "_hypernym", "_instance_hypernym", "_member_meronym", "_has_part",
        "_derivationally_related_form", "_synset_domain_topic_of", "_member_of_domain_usage",
        "_member_of_domain_region", "_verb_group", "_also_see", "_similar_to",
    )
    assert "has part" in wn.relation_labels
    per_relation = wn.statistics()["triples_per_relation"]
    assert all(count > 0 for count in per_relation.values())


def test_wordnet_every_entity_has_a_description(wn):
    assert all(wn.entity_descriptions)
    assert all(wn.entity_labels)


def test_wordnet_dog(wn):
    dog = wn.entity_index("02084071")
    assert "dog" in wn.entity_labels[dog]
    assert wn.entity_labels[dog] == "dog, domestic dog, Canis familiaris"
    assert "genus Canis" in wn.entity_descriptions[dog]
    assert _has(wn, "02084071", "_hypernym", "02083346")
    assert "canine" in wn.entity_labels[wn.entity_index("02083346")]


def test_wordnet_colliding_offsets_get_a_pos_suffix(wn):
    # 00001740 is "entity" in data.noun and "breathe" in data.verb
    assert "entity" in wn.entity_labels[wn.entity_index("00001740")]
    assert "breathe" in wn.entity_labels[wn.entity_index("00001740-v")]
    suffixed = [e for e in wn.entity_ids if "-" in e]
    assert 250 < len(suffixed) < 350
    assert all(e[-1] in "var" for e in suffixed)


def test_wordnet_no_duplicates_and_no_self_loops(wn):
    assert wn.dedup().num_triples == wn.num_triples
    assert not bool((wn.triples[:, 0] == wn.triples[:, 2]).any())


def test_wordnet_adjective_markers_are_stripped(wn):
    assert not any(label.endswith(("(a)", "(p)", "(ip)")) for label in wn.entity_labels)


# ----------------------------------------------------------------- countries
def test_france_capital_is_paris(geo):
    assert geo.entity_labels[geo.entity_index("FRA")] == "France"
    assert _has(geo, "FRA", "capital", "city:paris")
    assert geo.entity_labels[geo.entity_index("city:paris")] == "Paris"
    assert "Western Europe" in geo.entity_descriptions[geo.entity_index("FRA")]
    assert _has(geo, "FRA", "region", "region:europe")
    assert _has(geo, "FRA", "subregion", "region:western-europe")
    assert _has(geo, "FRA", "language", "language:fr")
    assert _has(geo, "FRA", "currency", "currency:EUR")


def test_countries_relations_and_size(geo):
    assert set(geo.relation_ids) == {"capital", "borders", "region", "subregion", "language", "currency", "demonym"}
    assert 1500 < geo.num_triples < 2500
    assert all(geo.entity_descriptions)
    prefixes = ("city:", "region:", "language:", "currency:", "demonym:")
    countries_ = [e for e in geo.entity_ids if not e.startswith(prefixes)]
    assert 200 < len(countries_) < 260


def test_borders_are_mostly_symmetric_and_between_countries(geo):
    borders = {(h, t) for h, r, t in geo.labeled_triples() if r == "borders"}
    assert len(borders) > 500
    symmetric = sum((t, h) in borders for h, t in borders)
    assert symmetric / len(borders) > 0.9
    assert ("FRA", "ESP") in borders and ("ESP", "FRA") in borders
    assert all(":" not in h and ":" not in t and h != t for h, t in borders)


def test_country_aliases(geo):
    aliases = countries.country_aliases()
    assert set(aliases) <= set(geo.entity_ids)
    assert "French Republic" in aliases["FRA"]
    assert "France" not in aliases["FRA"]  # the label is not repeated
    assert "United States of America" in aliases["USA"] or "America" in " ".join(aliases["USA"])


def test_currency_aliases_are_unit_words(geo):
    aliases = countries.currency_aliases()
    assert set(aliases) <= set(geo.entity_ids)
    assert aliases["currency:INR"] == ["Rupee"]  # Indian Rupee: the country adjective is no alias
    assert aliases["currency:GBP"] == ["Pound", "Sterling"]  # Pound ends Egyptian Pound
    assert "currency:JPY" not in aliases  # Yen: a one-word name adds nothing


def test_currency_aliases_add_geonames_everyday_names(geo):
    aliases = countries.currency_aliases()
    assert aliases["currency:ILS"] == ["Sheqel", "Shekel"]  # ISO's unit word, then GeoNames' spelling
    assert aliases["currency:CNY"] == ["Renminbi", "Yuan"]  # GeoNames' "Yuan Renminbi": each word
    # a retired code iso-codes no longer names: GeoNames' name for Belarus's currency (BY...),
    # without the demonym
    assert aliases["currency:BYR"] == ["Belarusian ruble", "ruble"]


def test_subregions_answer_to_their_everyday_names(geo):
    from kgprobe.harvest.evaluate import ReferenceIndex, tuple_hits

    assert set(countries.region_aliases()) <= set(geo.entity_ids)
    ref = ReferenceIndex.load("countries:subregion")
    tuples = [("Thailand", "Southeast Asia"), ("Thailand", "South-eastern Asia"), ("Morocco", "North Africa"),
              ("Canada", "North America"), ("Canada", "Northern America"), ("Thailand", "North Africa")]
    # "North America" is the continent (Mexico too), not the UN's Northern America
    assert tuple_hits(tuples, ref) == [True, True, True, False, True, False]


def test_same_capital_name_in_different_regions_is_two_cities(geo):
    assert _has(geo, "JAM", "capital", "city:kingston-americas")
    assert _has(geo, "NFK", "capital", "city:kingston-oceania")


# ----------------------------------------------------------------- pykeen benchmarks
@pytest.mark.parametrize("name,entities", [("nations", 14), ("umls", 135), ("kinships", 104)])
def test_pykeen_benchmarks_share_one_id_table(name, entities):
    splits = pykeen_tsv.load_splits(name)
    assert list(splits) == ["train", "valid", "test"]
    train = splits["train"]
    assert train.num_entities == entities
    assert list(train.entity_ids) == sorted(train.entity_ids)
    for split, kg in splits.items():
        assert kg.entity_ids == train.entity_ids and kg.relation_ids == train.relation_ids
        assert set(kg.provenance) == {split}
        assert kg.num_triples > 0
    whole = build_dataset(name)
    assert whole.entity_ids == train.entity_ids
    assert whole.num_triples == sum(kg.num_triples for kg in splits.values())
    assert whole.provenance[:train.num_triples] == ("train",) * train.num_triples


def test_pykeen_benchmarks_do_not_import_pykeen():
    import subprocess
    import sys

    code = ("import sys; from kgprobe.kg.datasets import build_dataset; build_dataset('nations'); "
            "print('pykeen' in sys.modules)")
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == "False"


def test_unknown_pykeen_name():
    with pytest.raises(KgprobeError, match="nations"):
        pykeen_tsv.load_splits("fb15k")
