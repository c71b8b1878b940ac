"""A slot whose seeds are numbers (birth years, calling codes) is searched, filtered and typed as
numbers: SmolLM2's tokenizer writes " 1756" as a bare space and four digits, which the name search
could neither start nor fit in its four tokens."""
from __future__ import annotations

import json

import pytest

from kgprobe.harvest.filters import NUMBER, EntityFilter, numeric_slots
from kgprobe.harvest.relation import Constraints, relation_from_options

YEARS = ["Mozart|1756", "Einstein|1879", "Darwin|1809", "Newton|1643", "Picasso|1881"]


def test_numeric_slots_are_those_whose_every_seed_is_a_number():
    assert numeric_slots([("Mozart", "1756"), ("Everest", "8,848")]) == {1}
    assert numeric_slots([("Mozart", "1756"), ("Einstein", "about 1879")]) == set()
    assert numeric_slots([("3.14", "pi"), ("2.72", "e")]) == {0}
    f = EntityFilter(Constraints(), ["<ENT0> was born in <ENT1> ."])
    assert f.ok("1756", numeric=True) and f.ok("8,848", numeric=True)
    assert not any(f.ok(v, numeric=True) for v in ("17a6", "1756.", "", "Paris", "²"))
    assert not f.ok("1756") and f.ok("Paris")  # a name slot still wants a letter


def test_the_masks_start_a_number_with_the_bare_space_token():
    from kgprobe.harvest.search import VocabMasks
    from kgprobe.models.lm import CausalLMRunner
    from tiny_models import smollm2_tokenizer, tiny_llama

    tok = smollm2_tokenizer()
    masks = VocabMasks(CausalLMRunner(tiny_llama(tok), tok, batch_size=4))
    space, one = tok.convert_tokens_to_ids("Ġ"), tok.encode("1")[0]
    assert [tok.decode([i]) for i in tok.encode(" 1756")] == [" ", "1", "7", "5", "6"]
    spaced, plain = masks.starts(spaced=True, numeric=True), masks.starts(spaced=False, numeric=True)
    assert spaced[space] and not spaced[one] and plain[one] and not plain[space]
    assert masks.number_cont[one] and not masks.number_cont[space]
    assert not masks.starts(spaced=True, numeric=False)[space]  # a name never starts with a bare space
    # the digits are all the continuations a number has (and its separators)
    conts = {tok.decode([i]) for i in masks.number_cont.nonzero().squeeze(1).tolist()}
    assert {str(d) for d in range(10)} | {",", "."} == conts


@pytest.mark.slow
def test_a_birth_year_relation_harvests_years_with_smollm2(tmp_path):
    from kgprobe.harvest.run import HarvestOptions, harvest
    from kgprobe.models import load_causal_lm

    rel = relation_from_options(["<ENT0> was born in <ENT1> ."], YEARS)
    search = {"first_beam": 32, "first_candidates": 12}
    options = HarvestOptions(top_k=8, critic=False, search=search)
    rows = harvest(rel, tmp_path / "run", options=options, device="cpu",
                   loaded_model=load_causal_lm("smollm2-135m", device="cpu"), echo=lambda s: None)
    years = [r["entities"][1] for r in rows]
    # before, the search proposed places ("Jesus Christ -> Bethlehem") and no number at all
    assert len(rows) >= 5 and all(NUMBER.fullmatch(y) and 1000 <= int(y) <= 2030 for y in years), years
    types = json.loads((tmp_path / "run" / "types.json").read_text())
    assert types["inferred"]["1"]["method"] == "number" and set(types["1"].values()) == {"number"}
    props = json.loads((tmp_path / "run" / "properties.json").read_text())
    assert props["symmetric_from"] == "types" and props["functional"] is True


def _tiny_harvest(seeds: list[str], out, lines: list[str]) -> list[dict]:
    from kgprobe.harvest.run import HarvestOptions, harvest
    from tiny_models import smollm2_tokenizer, tiny_llama

    tok = smollm2_tokenizer()
    rel = relation_from_options(["<ENT0> was born in <ENT1> ."], seeds)
    search = {"first_beam": 16, "first_candidates": 6, "branch": 4, "later_beam": 4, "later_candidates": 2}
    options = HarvestOptions(top_k=6, critic=False, search=search)
    return harvest(rel, out, options=options, device="cpu", loaded_model=(tiny_llama(tok), tok), echo=lines.append)


def test_a_random_lm_fills_a_numeric_slot_with_numbers_only(tmp_path):
    lines: list[str] = []
    rows = _tiny_harvest(YEARS, tmp_path / "run", lines)
    candidates = [json.loads(x)["entities"] for x in (tmp_path / "run" / "candidates.jsonl").read_text().splitlines()]
    assert rows and candidates and all(NUMBER.fullmatch(c[1]) for c in candidates)
    assert "slot 1 typed as number: 0 of" in "\n".join(lines)


def test_a_slot_of_mostly_numbers_says_why_it_is_searched_as_names(tmp_path):
    lines: list[str] = []
    _tiny_harvest(["Mozart|1756", "Einstein|1879", "Darwin|about 1809"], tmp_path / "run", lines)
    assert "slot 1: not searched as numbers, as some seed values are not numbers (about 1809)" in lines
