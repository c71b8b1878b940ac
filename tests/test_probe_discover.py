"""Open-vocabulary concept discovery (ConceptVectors' vector -> concept direction) on tiny models."""
from __future__ import annotations

import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.probe.concepts import QA
from kgprobe.probe.discover import (
    best_concepts,
    best_per_concept,
    build_lexicon,
    concept_questions,
    default_layers,
    discover_concepts,
    lens_top_tokens,
    wordnet_questions,
)
from kgprobe.probe.hooks import arch_of, set_value_vector, value_vectors

# A fake WordNet noun file: offset, lex file, type, word count (hex), words, pointer count,
# pointers (symbol, offset, pos, source/target), gloss.
SYNSETS = {
    "00000001": (["animal"], [("~", "00000002"), ("~", "00000005")], "a living organism that moves"),
    "00000002": (["canine", "canid"], [("@", "00000001"), ("~", "00000003")], "a mammal with long snout"),
    "00000003": (["dog", "domestic_dog"], [("@", "00000002"), ("~", "00000004"), ("~", "00000006"),
                                          ("%p", "00000007")],
                 "a member of the genus Canis domesticated by man since prehistoric times"),
    "00000004": (["puppy", "pup"], [("@", "00000003")], "a young one of its kind"),
    "00000005": (["feline", "felid"], [("@", "00000001"), ("~", "00000009")], "any of various lithe-bodied mammals"),
    "00000006": (["hound", "hound_dog"], [("@", "00000003")], "any of several breeds used for hunting"),
    "00000007": (["tail"], [("#p", "00000003")], "the posterior part of an animal"),
    "00000009": (["cat", "true_cat"], [("@", "00000005"), ("~", "00000010"), ("~", "00000011")],
                 "a small domesticated carnivore"),
    "00000010": (["lion"], [("@", "00000009")], "large gregarious predatory feline, the lion of Africa"),
    "00000011": (["tiger"], [("@", "00000009")], "large feline of forests in most of Asia"),
}


def _line(offset: str, words: list[str], pointers: list[tuple[str, str]], gloss: str) -> str:
    ws = " ".join(f"{w} 0" for w in words)
    ps = " ".join(f"{sym} {target} n 0000" for sym, target in pointers)
    return f"{offset} 05 n {len(words):02x} {ws} {len(pointers):03d} {ps} | {gloss}  "


@pytest.fixture(scope="module")
def wn_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("wordnet")
    lines = ["  1 This software and database is being provided (license header)"]
    lines += [_line(o, *SYNSETS[o]) for o in sorted(SYNSETS)]
    (root / "data.noun").write_text("\n".join(lines) + "\n", encoding="latin-1")
    # index.noun: lemma, pos, synset count, pointer count, sense count, tagged-sense count, offsets
    (root / "index.noun").write_text("".join(f"{w} n 1 0 1 {n} {o}\n" for w, n, o in
                                             [("hound", 5, "00000006"), ("puppy", 1, "00000004")]))
    for name in ("verb", "adj", "adv"):
        (root / f"data.{name}").write_text("", encoding="latin-1")
        (root / f"index.{name}").write_text("", encoding="latin-1")
    return root


@pytest.fixture(scope="module")
def tok():
    from tiny_models import smollm2_tokenizer

    return smollm2_tokenizer()


@pytest.fixture()
def llama(tok):
    from tiny_models import tiny_llama

    return tiny_llama(tok)


@pytest.fixture(scope="module")
def lexicon(tok, wn_dir):
    return build_lexicon(tok, sources=("wordnet",), wordnet_dir=wn_dir)


def _brute_force(model, layers, k):
    w = arch_of(model).unembed.detach().float()
    return torch.cat([(w @ value_vectors(model, layer).float().T).T.topk(k, dim=-1).indices for layer in layers])


# ------------------------------------------------------------------ the lens
def test_default_layers_are_the_upper_half():
    assert default_layers(30) == list(range(15, 30))
    assert default_layers(2) == [1]


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gpt2"])
def test_lens_without_final_norm_equals_brute_force(tok, which):
    import tiny_models

    model = getattr(tiny_models, which)(tok)
    top, rows = lens_top_tokens(model, layers=[1, 0], k=15)
    n = arch_of(model).n_neurons
    assert top.dtype == torch.int32 and top.shape == (2 * n, 15)
    assert rows[:2] == [(1, 0), (1, 1)] and rows[n] == (0, 0) and len(rows) == 2 * n
    assert torch.equal(top.long(), _brute_force(model, [1, 0], 15))


def test_chunking_gives_identical_results(llama):
    auto, rows = lens_top_tokens(llama, layers=[0, 1], k=12)
    for chunk in (1, 7, 64, 10_000):
        top, rows_c = lens_top_tokens(llama, layers=[0, 1], k=12, chunk=chunk)
        assert torch.equal(top, auto) and rows_c == rows


@pytest.mark.parametrize("kwargs, message", [
    ({"layers": [5]}, "layer 5 out of range"),
    ({"layers": []}, "layers is empty"),
    ({"layers": [0], "k": 0}, "k must be an integer"),
    ({"layers": [0], "chunk": 0}, "chunk must be a positive integer"),
])
def test_bad_arguments_are_one_line_errors(llama, kwargs, message):
    with pytest.raises(KgprobeError, match=message) as err:
        lens_top_tokens(llama, **kwargs)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ lexicon and discovery
def test_wordnet_lexicon_has_lemmas_and_hyponyms(lexicon):
    named = {lexicon.names[c]: {lexicon.keys[key] for key in lexicon.concept_keys[c]} for c in range(len(lexicon))}
    assert named["dog"] == {"dog", "puppy", "pup", "hound"}
    assert named["canine"] == {"canine", "dog", "puppy", "pup", "hound"}  # depth 2 from canine
    assert named["cat"] == {"cat", "lion", "tiger"}
    assert "puppy" not in named and "tail" not in named  # fewer than 3 keys
    assert lexicon.ids == sorted(lexicon.ids) and all(kind == "wordnet" for kind in lexicon.kinds)
    assert lexicon.member.shape == (len(lexicon.keys), len(lexicon))


def test_country_lexicon_drops_shared_words(tok):
    lex = build_lexicon(tok, sources=("countries",))
    keys = {lex.ids[c]: {lex.keys[key] for key in lex.concept_keys[c]} for c in range(len(lex))}
    assert {"france", "paris"} <= keys["country:france"]
    assert {"japan", "japanese", "tokyo"} <= keys["country:japan"]
    assert not any({"english", "euro", "arabic", "europe"} & k for k in keys.values())


def test_unknown_source_is_an_error(tok):
    with pytest.raises(KgprobeError, match="unknown lexicon source"):
        build_lexicon(tok, sources=("wikidata",))


def _token_ids(tok, words):
    ids = []
    for w in words:
        for form in (" " + w, w):
            got = tok(form, add_special_tokens=False)["input_ids"]
            if len(got) == 1:
                ids.append(got[0])
    return ids


def test_planted_column_is_discovered_and_named(tok, llama, lexicon):
    # make the dog tokens' unembedding rows long, then write their sum as value vector (1, 5):
    # its lens shows exactly the dog words on top
    ids = _token_ids(tok, ["dog", "puppy", "pup", "hound"])
    with torch.no_grad():
        llama.lm_head.weight[ids] *= 30
    set_value_vector(llama, 1, 5, llama.lm_head.weight[ids].sum(0))
    records = discover_concepts(llama, tok, layers=[1], k=20, lexicon=lexicon)
    planted = [r for r in records if (r["layer"], r["index"]) == (1, 5)]
    assert len(planted) == 1
    r = planted[0]
    # canine covers the same 4 words but has 5 keys: the tie goes to the more specific dog
    assert (r["concept"], r["name"], r["kind"], r["matches"]) == ("wordnet:00000003", "dog", "wordnet", 4)
    assert r["coverage"] == 1.0 and r["coherence"] == 4 / 20
    assert {t.strip().lower() for t in r["matched_tokens"]} == {"dog", "puppy", "pup", "hound"}
    assert len(r["top_tokens"]) == 20
    assert best_per_concept(records)[0]["concept"] == "wordnet:00000003"
    # chance: k times the share of the vocabulary that spells a dog word
    n_tokens = int(torch.isin(lexicon.token_key, torch.tensor(sorted(lexicon.concept_keys[
        lexicon.ids.index("wordnet:00000003")]))).sum())
    assert r["chance"] == pytest.approx(20 * n_tokens / llama.lm_head.weight.shape[0])
    strict = discover_concepts(llama, tok, layers=[1], k=20, lexicon=lexicon, min_lift=4 / r["chance"] + 1)
    assert (1, 5) not in {(x["layer"], x["index"]) for x in strict}


def test_best_concepts_counts_distinct_words(tok, lexicon):
    dog = _token_ids(tok, ["dog"])  # " dog" and "dog": one word
    hound = _token_ids(tok, ["hound"])
    row = torch.tensor([dog + hound + [0] * 4], dtype=torch.int32)
    best, matches = best_concepts(row, lexicon)
    assert int(matches[0]) == 2 and lexicon.names[int(best[0])] == "dog"
    best, matches = best_concepts(torch.zeros(3, 5, dtype=torch.int32), lexicon, max_elements=1)
    assert matches.tolist() == [0, 0, 0]


def test_best_per_concept_keeps_the_best_column():
    def rec(layer, index, concept, matches, coverage):
        return {"layer": layer, "index": index, "concept": concept, "matches": matches, "coverage": coverage}

    records = [rec(3, 1, "a", 5, 0.5), rec(2, 9, "a", 7, 0.1), rec(1, 0, "b", 5, 0.9), rec(0, 0, "a", 7, 0.1)]
    assert [(r["concept"], r["layer"], r["index"]) for r in best_per_concept(records)] == [("a", 0, 0), ("b", 1, 0)]


def test_min_matches_must_be_positive(tok, llama, lexicon):
    with pytest.raises(KgprobeError, match="min_matches"):
        discover_concepts(llama, tok, layers=[1], lexicon=lexicon, min_matches=0)


# ------------------------------------------------------------------ questions
def test_wordnet_questions_from_the_graph(wn_dir):
    qa = wordnet_questions("wordnet:00000003", wordnet_dir=wn_dir)
    # examples first (the hyponyms a dog column promotes), most tagged first, one frame each
    assert qa[:2] == [QA("One example of a dog is", "hound", "wordnet:example"),
                      QA("A well-known dog is", "puppy", "wordnet:example")]
    assert QA("A dog is a kind of", "canine", "wordnet:hypernym") in qa
    assert QA("A puppy is a kind of", "dog", "wordnet:hyponym") in qa
    assert QA("A hound is a kind of", "dog", "wordnet:hyponym") in qa
    assert QA("The tail is part of the", "dog", "wordnet:meronym") in qa
    assert QA("The word for a member of the genus Canis domesticated by man since prehistoric times is", "dog",
              "wordnet:gloss") in qa
    # a gloss that names the word gives no question
    assert not any(q.source == "wordnet:gloss" for q in wordnet_questions("00000010", wordnet_dir=wn_dir))
    cat = wordnet_questions("00000009", wordnet_dir=wn_dir)
    assert QA("The word for a small domesticated carnivore is", "cat", "wordnet:gloss") in cat
    assert len({q.prompt for q in cat}) == len(cat)
    assert concept_questions("wordnet:00000009", wordnet_dir=wn_dir) == cat


def test_questions_prefer_words_text_uses(wn_dir):
    # index.noun tags hound 5 times, puppy once: with one question per relation, hound is asked
    qa = wordnet_questions("wordnet:00000003", wordnet_dir=wn_dir, per_relation=1)
    assert [q.prompt for q in qa if q.source == "wordnet:hyponym"] == ["A hound is a kind of"]


def test_unknown_synset_is_an_error(wn_dir):
    with pytest.raises(KgprobeError, match="no noun synset"):
        wordnet_questions("wordnet:12345678", wordnet_dir=wn_dir)


def test_country_questions_come_from_the_concept_file():
    qa = concept_questions("country:france")
    assert QA("The capital of France is", "Paris", "countryinfo:capital") in qa
