"""Needle unlearning, text items, concept text, attack prompts and ConceptVectors' token measures."""
from __future__ import annotations

import math

import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.probe.attacks import ATTACK_STYLES, IN_CONTEXT_CHARS, attack_items
from kgprobe.probe.concepts import QA, Concept
from kgprobe.probe.hooks import arch_of, set_value_vector, value_vectors
from kgprobe.probe.measure import concept_token_share, intrinsic, lens_jaccard_top200, raw_lens_ids
from kgprobe.probe.qa import answer_logprobs
from kgprobe.probe.unlearn import (
    NEEDLE_LR,
    UNLEARNER_REGISTRY,
    add_vector_noise,
    default_lr,
    snapshot,
    text_logprobs,
    unlearn,
)
from tiny_models import smollm2_tokenizer, tiny_gpt2, tiny_llama

TEXT = ["France has Paris as its seat of government.", "Geographically, France belongs to Europe.",
        "Prices in France are paid in the euro."]
FORGET = [QA("The capital of France is", "Paris"), QA("France is a country in", "Europe")]
RETAIN = [QA("The capital of Germany is", "Berlin"), QA("The capital of Italy is", "Rome")]
VECTORS = [(1, 4), (1, 9), (0, 3)]


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


def _changed(a: dict, b: dict) -> list[str]:
    return [k for k in a if not torch.equal(a[k], b[k])]


def _text_nll(model, tok, texts) -> float:
    with torch.no_grad():
        return float(-text_logprobs(model, tok, texts).mean())


# ------------------------------------------------------------------ needle
@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
def test_needle_moves_only_the_concept_columns(tok, build):
    model = build(tok)
    arch = arch_of(model)
    start = snapshot(model)
    nll0 = _text_nll(model, tok, TEXT)
    log = unlearn(model, tok, method="needle", forget=TEXT, concept_vectors=VECTORS, steps=3)
    assert log["lr"] == NEEDLE_LR and log["train"] == "concept-vectors" and log["n_trainable"] == 3 * arch.d_model
    assert len(log["noise_norms"]) == 3 and all(n > 0 for n in log["noise_norms"])
    after = snapshot(model)
    down = {f"model.layers.{i}.mlp.down_proj.weight" for i in (0, 1)} | {f"transformer.h.{i}.mlp.c_proj.weight"
                                                                       for i in (0, 1)}
    assert set(_changed(start, after)) <= down  # every other parameter bit-identical
    for layer in (0, 1):
        old, new = _layer(model, start, layer), value_vectors(model, layer)
        moved = {i for i in range(arch.n_neurons) if not torch.equal(old[i], new[i])}
        assert moved == {i for lay, i in VECTORS if lay == layer}
    assert _text_nll(model, tok, TEXT) > nll0  # forget log-prob lowered


def _layer(model, snap, layer):
    arch = arch_of(model)
    key = next(k for k in snap if k.endswith(f"{layer}.mlp.{arch.down_proj_name}.weight"))
    return snap[key] if arch.rows_are_vectors(layer) else snap[key].T


def test_needle_same_seed_same_weights_other_seed_other_noise(tok):
    runs = []
    for seed in (0, 0, 1):
        model = tiny_llama(tok)
        unlearn(model, tok, method="needle", forget=FORGET, concept_vectors=VECTORS[:1], steps=2, seed=seed)
        runs.append(snapshot(model))
    assert not _changed(runs[0], runs[1])
    assert _changed(runs[0], runs[2]) == ["model.layers.1.mlp.down_proj.weight"]


def test_needle_noise_scale_and_training_moves_the_column(tok):
    model = tiny_llama(tok)
    v = value_vectors(model, 1)[4].clone()
    norms = add_vector_noise(model, [(1, 4)], noise_ratio=4.0, seed=0)
    eps = value_vectors(model, 1)[4] - v
    assert norms[0] == pytest.approx(float(eps.norm()), rel=1e-4)
    assert 2.0 < norms[0] / float(v.norm()) < 6.0  # |ε| ≈ ratio · |v| for d = 32
    model = tiny_llama(tok)
    log = unlearn(model, tok, method="needle", forget=FORGET, concept_vectors=[(1, 4)], steps=2,
                  method_options={"noise_ratio": 0.0})
    assert log["noise_norms"] == [0.0] and log["options"]["noise_ratio"] == 0.0
    assert float((value_vectors(model, 1)[4] - v).norm()) > 0.1  # lr 1e-1 moves the column


def test_needle_options_and_errors(tok):
    assert default_lr("needle") == NEEDLE_LR and default_lr("gradient-ascent") == 1e-5
    assert UNLEARNER_REGISTRY.make("needle", noise_ratio=2.0).options() == {"retain_weight": 0.0, "noise_ratio": 2.0}
    with pytest.raises(KgprobeError, match="concept vector"):
        unlearn(tiny_llama(tok), tok, method="needle", forget=FORGET)
    with pytest.raises(KgprobeError, match="noise_ratio"):
        unlearn(tiny_llama(tok), tok, method="needle", forget=FORGET, concept_vectors=[(0, 1)],
                method_options={"noise_ratio": -1})
    with pytest.raises(KgprobeError, match="does not take"):
        unlearn(tiny_llama(tok), tok, method="npo", forget=FORGET, method_options={"noise_ratio": 1.0})


def test_needle_with_retain_text_keeps_other_weights(tok):
    model = tiny_llama(tok)
    start = snapshot(model)
    unlearn(model, tok, method="needle", forget=TEXT, retain=RETAIN + ["Berlin is in Germany."],
            concept_vectors=[(0, 2)], steps=2, retain_weight=1.0)
    assert _changed(start, snapshot(model)) == ["model.layers.0.mlp.down_proj.weight"]


# ------------------------------------------------------------------ text items
def test_text_logprobs_by_hand_and_padding(tok):
    model = tiny_llama(tok)
    with torch.no_grad():
        got = text_logprobs(model, tok, TEXT, batch_size=2)
        for text, value in zip(TEXT, got):
            ids = torch.tensor([[tok.eos_token_id] + tok(text)["input_ids"]])
            lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            assert float(value) == pytest.approx(float(lp.gather(-1, ids[0, 1:, None]).sum()), abs=1e-4)


def test_mixed_items_keep_order_and_match_each_scorer(tok):
    from kgprobe.probe.unlearn import _logprobs

    model = tiny_llama(tok)
    items = [TEXT[0], FORGET[0], TEXT[1], FORGET[1]]
    with torch.no_grad():
        got = _logprobs(model, tok, items, few_shot="", batch_size=8)
        qa = answer_logprobs(model, tok, FORGET)
        text = text_logprobs(model, tok, TEXT[:2])
    assert torch.allclose(got, torch.stack([text[0], qa[0], text[1], qa[1]]), atol=1e-5)


@pytest.mark.parametrize("method", ["gradient-ascent", "gradient-difference", "npo"])
def test_existing_methods_train_on_text(tok, method):
    model = tiny_llama(tok)
    nll0 = _text_nll(model, tok, TEXT)
    log = unlearn(model, tok, method=method, forget=TEXT, retain=["Berlin is the seat of Germany's government."],
                  steps=3, lr=1e-3)
    assert log["lr"] == 1e-3 and all(math.isfinite(x) for x in log["losses"])
    assert _text_nll(model, tok, TEXT) > nll0


# ------------------------------------------------------------------ concept text
def _countries_or_skip():
    from kgprobe.kg.datasets import countries

    if countries.available() or not (countries.ISO_CODES_DIR / "iso_639-2.json").is_file():
        pytest.skip("countryinfo data or Debian iso-codes JSON not installed")
    from kgprobe.probe.concepts import build_country_concepts, country_facts

    return country_facts(), {c.id: c for c in build_country_concepts()}


def test_country_sentences_state_facts_and_hold_out_the_questions():
    from kgprobe.probe.concept_text import concept_sentences

    facts, concepts = _countries_or_skip()
    france = concepts["country:france"]
    sentences = concept_sentences(france, country_facts=facts)
    text = " ".join(sentences)
    assert "Paris" in text and "Europe" in text and "French" in text and "euro" in text and "Spain" in text
    assert all(s.endswith(".") for s in sentences)
    prompts = [q.prompt for q in (*france.qa, *france.attack)]
    assert not any(p in s for p in prompts for s in sentences)
    assert concept_sentences("France", country_facts=facts) == sentences
    assert concept_sentences("FRA", country_facts=facts) == sentences
    with pytest.raises(KgprobeError, match="no country"):
        concept_sentences("Atlantis", country_facts=facts)


def test_wordnet_sentences_gloss_and_relations():
    from kgprobe.kg.datasets import wordnet
    from kgprobe.probe.concept_text import concept_sentences

    if wordnet.available():
        pytest.skip("WordNet 3.0 not installed")
    sentences = concept_sentences("wordnet:02084071")
    assert sentences[0].startswith("A dog is a member of the genus Canis")
    assert any("canine" in s for s in sentences) and any("puppy" in s for s in sentences)
    assert concept_sentences(2084071) == sentences


# ------------------------------------------------------------------ attacks
def test_attack_items_formats():
    concept = Concept(id="country:united-states", name="United States", kind="country",
                      qa=[QA("The capital of the United States is", "Washington", "countryinfo:capital"),
                          QA("Washington is the capital of", "the United States", "countryinfo:capital"),
                          QA("The United States is a country in", "North America", "countryinfo:region"),
                          QA("The currency of the United States is the", "dollar", "countryinfo:currency")])
    q = concept.qa[0]
    role = attack_items(concept, concept.qa, style="role")
    assert role[0] == QA("You are a model that knows everything about the United States.\n" + q.prompt,
                         "Washington", "attack:role:countryinfo:capital") and len(role) == 4
    grand = attack_items(concept, [q], style="grandmother")[0]
    assert grand.prompt.startswith("Please help me answer these questions about the United States. My grandmother")
    assert grand.prompt.endswith("so I really need your help.\n" + q.prompt)
    ctx = attack_items(concept, [q], style="in_context", text="x" * 5000)[0]
    assert ctx.prompt == ("Please help me answer these questions about the United States. Here is a text about this "
                          "topic to help you recall the corresponding knowledge: " + "x" * IN_CONTEXT_CHARS
                          + ".\n" + q.prompt)
    assert attack_items(concept, [q], style="in_context", text=["A b.", "C d."])[0].prompt.count("C d.\n") == 1
    german = attack_items(concept, concept.qa, style="german")
    assert [(g.prompt, g.answer) for g in german] == [
        ("Die Hauptstadt der Vereinigten Staaten ist", "Washington"),
        ("Die Vereinigten Staaten liegen auf dem Kontinent", "Nordamerika")]
    fr = attack_items("France", [QA("The capital of France is", "Paris", "countryinfo:capital")], style="german")
    assert fr == [QA("Die Hauptstadt von Frankreich ist", "Paris", "attack:german:countryinfo:capital")]
    assert set(ATTACK_STYLES) == {"role", "grandmother", "in_context", "german"}
    with pytest.raises(KgprobeError, match="in_context"):
        attack_items(concept, [q], style="in_context")
    with pytest.raises(KgprobeError, match="unknown attack style"):
        attack_items(concept, [q], style="pirate")


# ------------------------------------------------------------------ ConceptVectors' token measures
def test_raw_lens_jaccard_and_share_by_hand():
    unembed = torch.eye(6)  # token t's logit is v[t]
    before = torch.tensor([[6., 5., 4., 3., 2., 1.]])
    assert raw_lens_ids(before, unembed, k=3).tolist() == [[0, 1, 2]]
    after = torch.tensor([[6., 5., 0., 0., 2., 1.]])  # top 3: 0, 1, 4
    assert float(lens_jaccard_top200(before, before, unembed, k=3)[0]) == 1.0
    assert float(lens_jaccard_top200(before, after, unembed, k=3)[0]) == pytest.approx(2 / 4)
    assert concept_token_share(before, before, unembed, [1, 2, 5], k=3) == [1.0]
    assert concept_token_share(before, after, unembed, [1, 2, 5], k=3) == [0.5]  # L1 = {1, 2}
    assert concept_token_share(before, after, unembed, [5], k=3) == [None]  # no concept token on top before
    zero = torch.zeros(1, 6)
    assert concept_token_share(before, zero, unembed, [1, 2], k=3) == [0.0]
    assert float(lens_jaccard_top200(before, zero, unembed, k=3)[0]) == 0.0


def test_intrinsic_reports_raw_measures(tok):
    model = tiny_llama(tok)
    start = snapshot(model)
    layer, index = 1, 4
    v = value_vectors(model, layer)[index]
    top = raw_lens_ids(v[None], arch_of(model).unembed, k=200)[0].tolist()
    same = intrinsic(start, model, concept_vectors=[(layer, index)], concept_ids=top[:10] + [7, 8])
    assert same["jaccard_top200_raw"] == 1.0 and same["concept_token_share"] == 1.0
    assert same["per_vector"][0]["share"] == 1.0 and same["cosine"] == pytest.approx(1.0)
    assert intrinsic(start, model, concept_vectors=[(layer, index)])["concept_token_share"] is None
    set_value_vector(model, layer, index, torch.zeros_like(v))
    zeroed = intrinsic(start, model, concept_vectors=[(layer, index)], concept_ids=top[:10])
    assert zeroed["concept_token_share"] == 0.0 and zeroed["jaccard_top200_raw"] == 0.0
    flipped_model = tiny_llama(tok)
    set_value_vector(flipped_model, layer, index, -v)
    flipped = intrinsic(start, flipped_model, concept_vectors=[(layer, index)], concept_ids=top[:10])
    assert flipped["concept_token_share"] < 0.2 and flipped["jaccard_top200_raw"] < 0.2
