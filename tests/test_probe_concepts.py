"""Concept files: format, errors with file:line, the shipped data, concept tokens, the builder."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kgprobe.errors import KgprobeError
from kgprobe.probe.concepts import (
    FEW_SHOT,
    QA,
    Concept,
    build_concepts,
    concept_token_ids,
    country_facts,
    load_concepts,
    plural_demonym,
    save_concepts,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "kg_data" / "concepts"


def needs_sources():
    from kgprobe.kg.datasets import countries

    if countries.available() or not (countries.ISO_CODES_DIR / "iso_639-2.json").is_file():
        pytest.skip("countryinfo data or Debian iso-codes JSON not installed")


def sample() -> list[Concept]:
    return [
        Concept(id="country:france", name="France", kind="country", aliases=["French Republic"],
                related=["Paris", "French", "euro"],
                qa=[QA("The capital of France is", "Paris", "countryinfo:capital"),
                    QA("People in France speak", "French")],
                attack=[QA("The capital of the country whose people are called French is", "Paris")]),
        Concept(id="noun:dog", name="dog", kind="noun", qa=[QA("A puppy is a young", "dog")]),
    ]


def test_save_load_round_trip(tmp_path):
    path = tmp_path / "c.jsonl"
    save_concepts(sample(), path)
    assert load_concepts(path) == sample()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["qa"][0]["source"] == "countryinfo:capital"


GOOD = {"id": "x", "name": "X", "kind": "country", "qa": [{"prompt": "p", "answer": "a"}]}


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "qa"}), "missing key(s) qa"),
    (json.dumps({**GOOD, "qa": []}), "no qa item"),
    (json.dumps({**GOOD, "qa": [{"prompt": " ", "answer": "a"}]}), "qa[0] has an empty or missing prompt"),
    (json.dumps({**GOOD, "qa": [{"prompt": "p", "answer": ""}]}), "qa[0] has an empty or missing answer"),
    (json.dumps({**GOOD, "attack": [{"prompt": "p"}]}), "attack[0] has an empty or missing answer"),
    (json.dumps({**GOOD, "aliases": "X"}), "aliases must be a list of strings"),
    (json.dumps({**GOOD, "name": ""}), "name must be a non-empty string"),
    (json.dumps([1, 2]), "must be a JSON object"),
])
def test_bad_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({**GOOD, "id": "ok"}) + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(KgprobeError) as err:
        load_concepts(path)
    text = str(err.value)
    assert text.startswith(f"{path}:3: ") and message in text and "\n" not in text


def test_duplicate_ids_and_missing_file(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text((json.dumps(GOOD) + "\n") * 2, encoding="utf-8")
    with pytest.raises(KgprobeError, match=r"dup.jsonl:2: duplicate concept id 'x' \(first on line 1\)"):
        load_concepts(path)
    with pytest.raises(KgprobeError, match="cannot read concepts file"):
        load_concepts(tmp_path / "missing.jsonl")


def test_shipped_files_load_and_are_big_enough():
    files = sorted(SHIPPED.glob("*.jsonl"))
    assert files and (SHIPPED / "README.md").is_file()
    concepts = [c for f in files for c in load_concepts(f)]
    assert sum(len(c.qa) >= 5 for c in concepts) >= 50
    assert len({c.id for c in concepts}) == len(concepts)
    for c in concepts:
        assert all(q.prompt == q.prompt.rstrip() and q.answer == q.answer.strip() for q in c.qa + c.attack)
        # an attack question must not name the concept it asks about ("Brazilian" may stay)
        assert not any(re.search(rf"\b{re.escape(c.name)}\b", q.prompt) for q in c.attack), c.id


def test_builder_is_deterministic_and_matches_the_shipped_file(tmp_path):
    needs_sources()
    built = build_concepts(sources=["countries"])
    assert built == build_concepts(sources=["countries"])
    assert built == load_concepts(SHIPPED / "countries.jsonl")
    assert [c.id for c in built] == sorted(c.id for c in built)
    with pytest.raises(KgprobeError, match="unknown concept source"):
        build_concepts(sources=["planets"])


def test_country_facts_from_countryinfo():
    needs_sources()
    facts = {f.name: f for f in country_facts()}
    france = facts["France"]
    assert (france.capital, france.continent, france.languages[0], france.currency, france.demonym) == \
        ("Paris", "Europe", "French", "euro", "French")
    assert "Spain" in france.borders and "FRA" not in france.aliases
    assert facts["Japan"].currency == "yen" and facts["Brazil"].continent == "South America"
    assert facts["United States"].capital == "Washington"
    assert plural_demonym("Canadian") == "Canadians" and plural_demonym("Japanese") == "Japanese"


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from kgprobe.models import model_source

    return AutoTokenizer.from_pretrained(model_source("smollm2-135m"))


def test_concept_token_ids_on_the_real_tokenizer(tok):
    france = sample()[0]
    ids = concept_token_ids(france, tok)
    assert ids == sorted(set(ids))
    for word in (" France", " Paris", "France"):
        (token,) = tok(word, add_special_tokens=False)["input_ids"]
        assert token in ids
    own = concept_token_ids(france, tok, include_related=False)
    assert set(own) < set(ids) and tok(" Paris", add_special_tokens=False)["input_ids"][0] not in own
    # a multi-token word contributes its first token only when that piece has >= 3 characters
    long_word = Concept(id="c", name="Ouagadougou", kind="country", qa=[QA("p", "a")])
    pieces = tok(" Ouagadougou", add_special_tokens=False)["input_ids"]
    got = concept_token_ids(long_word, tok)
    assert (pieces[0] in got) == (len(tok.decode(pieces[:1]).strip()) >= 3)
    assert all(t == pieces[0] or t == tok("Ouagadougou", add_special_tokens=False)["input_ids"][0] for t in got)


@pytest.mark.slow
def test_smollm2_knows_most_france_questions_with_the_few_shot_prefix():
    from kgprobe.models import load_causal_lm
    from kgprobe.probe.concepts import known_questions

    model, tok = load_causal_lm("smollm2-135m", device="cpu")
    france = next(c for c in load_concepts(SHIPPED / "countries.jsonl") if c.id == "country:france")
    known = known_questions(model, tok, [france], few_shot=FEW_SHOT)["country:france"]
    assert sum(known) >= 5


def test_few_shot_prefix_tokenises_apart_from_the_prompts(tok):
    # score_qa tokenises the prefix on its own; that must equal the joint string's tokens
    assert FEW_SHOT.endswith("\n")
    concepts = load_concepts(SHIPPED / "countries.jsonl")
    prompts = [q.prompt for c in concepts[:20] for q in c.qa + c.attack]
    alone = tok(FEW_SHOT)["input_ids"]
    for prompt, ids in zip(prompts, tok([FEW_SHOT + p for p in prompts])["input_ids"]):
        assert ids == alone + tok(prompt, add_special_tokens=False)["input_ids"], prompt
