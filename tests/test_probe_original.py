"""ConceptVectors' validation protocol (kgprobe.probe.original): metrics, generation, noise, restore, resume."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.probe import original
from kgprobe.probe.concepts import QA, Concept
from kgprobe.probe.hooks import value_vectors
from kgprobe.probe.original import (
    OriginalParams,
    bleu,
    generate_answers,
    noise_seed,
    noise_std_for,
    original_concept,
    original_table,
    plot_original,
    rouge_l,
    validate_original,
)
from tiny_models import smollm2_tokenizer, tiny_llama

QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?", "The capital of Peru is",
             "Name a colour.", "How many legs has a spider?", "Where is Kyoto?"]
FAST = dict(max_new_tokens=8, batch_size="auto")


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(tok)


def concepts(with_unrelated: bool = False) -> list[dict]:
    items = [{"id": "c:a", "name": "A", "layer": 1, "index": 3, "questions": QUESTIONS[:2]},
             {"id": "c:b", "name": "B", "layer": 0, "index": 5, "questions": QUESTIONS[2:4]},
             {"id": "c:c", "name": "C", "layer": 1, "index": 7, "questions": QUESTIONS[4:]}]
    if with_unrelated:
        for item in items:
            item["unrelated"] = [q for q in QUESTIONS if q not in item["questions"]][:3]
    return items


def weights(model) -> list[torch.Tensor]:
    return [value_vectors(model, layer).contiguous().view(torch.uint8) for layer in range(2)]


# ------------------------------------------------------------------ metrics
def test_bleu_and_rouge_on_known_strings():
    same = "the capital of France is Paris"
    assert bleu(same, same) == 1.0
    assert rouge_l(same, same) == pytest.approx(1.0, abs=1e-8)  # the package's F has an epsilon
    # values of nltk 3.10.4 / rouge 1.0.1 themselves: one substituted word of five
    assert bleu("a b c d e", "a b c x e") == pytest.approx(0.42728700639623407)
    assert rouge_l("a b c d e", "a b c x e") == pytest.approx(0.8, abs=1e-8)
    # identical answers shorter than 4 words score below 1 (smoothing method3), as in the original
    assert bleu("Paris", "Paris") == pytest.approx(2 ** -1.5)
    # empty answers: BLEU 0, ROUGE-L raises inside the package -> 0.0
    assert bleu("", "x") == 0.0 and rouge_l("", "x") == 0.0 and rouge_l("x", "") == 0.0
    # argument order: candidate first, reference second (brevity penalty acts on the candidate only)
    assert bleu("a b c d", "a b c d e f") != bleu("a b c d e f", "a b c d")


# ------------------------------------------------------------------ generation
def test_left_padded_batch_equals_one_at_a_time(model, tok):
    tok.padding_side = "right"
    try:
        batched = generate_answers(model, tok, QUESTIONS, max_new_tokens=8, batch_size=len(QUESTIONS))
        assert tok.padding_side == "right"  # restored
    finally:
        tok.padding_side = "left"
    single = [generate_answers(model, tok, [q], max_new_tokens=8, batch_size=1)[0] for q in QUESTIONS]
    assert batched == single
    assert all(a and "Question:" not in a for a in batched)  # new tokens only
    assert generate_answers(model, tok, QUESTIONS[:3], max_new_tokens=8) == batched[:3]  # "auto"
    assert generate_answers(model, tok, [], max_new_tokens=8) == []


def test_generation_sets_and_restores_a_missing_pad_token(model):
    tok = smollm2_tokenizer()
    tok.pad_token = None
    answers = generate_answers(model, tok, QUESTIONS[:2], max_new_tokens=4, batch_size=2)
    assert len(answers) == 2 and tok.pad_token is None


# ------------------------------------------------------------------ noise and restore
def test_noise_std_follows_the_column_norm(model):
    v = value_vectors(model, 1)[3].float()
    assert noise_std_for(model, 1, 3, noise_ratio=4.0) == pytest.approx(4.0 * float(v.norm()) / v.numel() ** 0.5)
    assert original.ORIGINAL_NOISE_RATIO == 4.0
    assert noise_seed(0, 1, 3) == noise_seed(0, 1, 3) != noise_seed(1, 1, 3) != noise_seed(0, 1, 4)


def test_column_restored_bit_exact(model, tok):
    before = weights(model)
    records = validate_original(model, tok, concepts(), params=OriginalParams(**FAST))
    assert all(torch.equal(a, b) for a, b in zip(before, weights(model)))
    assert all(r["noise_norm"] > 0 for r in records)


def test_column_restored_when_generation_fails(model):
    before = weights(model)

    def boom():
        assert not all(torch.equal(a, b) for a, b in zip(before, weights(model)))  # the noise is in
        raise RuntimeError("generation failed")

    with pytest.raises(RuntimeError, match="generation failed"):
        original._with_noise(model, 1, 3, 0.5, 0, boom)
    assert all(torch.equal(a, b) for a, b in zip(before, weights(model)))


def test_bfloat16_model_restored_and_noised(model, tok):
    half = copy.deepcopy(model).to(torch.bfloat16)
    before = weights(half)
    [record] = validate_original(half, tok, concepts()[:1], params=OriginalParams(max_new_tokens=4))
    assert all(torch.equal(a, b) for a, b in zip(before, weights(half)))
    assert record["noise_norm"] > 0 and record["noise_ratio"] == pytest.approx(4.0)


def test_no_noise_scores_one_and_huge_noise_lowers_target(model, tok):
    clean = validate_original(model, tok, concepts(), params=OriginalParams(noise_ratio=0.0, **FAST))
    for r in clean:
        assert r["target_bleu"] == 1.0 and r["target_rouge_l"] == pytest.approx(1.0, abs=1e-8)
        assert r["unrelated_bleu"] == 1.0 and r["noise_norm"] == 0.0
    noisy = validate_original(model, tok, concepts(), params=OriginalParams(noise_ratio=1e4, **FAST))
    assert all(r["target_bleu"] < 1.0 and r["target_rouge_l"] < 1.0 for r in noisy)
    assert original_table(noisy)["target_bleu"] < original_table(clean)["target_bleu"] == 1.0


def test_absolute_noise_std_overrides_the_ratio(model, tok):
    [r] = validate_original(model, tok, concepts()[:1], params=OriginalParams(noise_std=0.25, **FAST))
    assert r["noise_std"] == 0.25 and r["settings"]["noise_ratio"] is None
    assert r["noise_ratio"] == pytest.approx(0.25 * 32 ** 0.5 / r["column_norm"])


def test_same_seed_same_records_other_seed_other_noise(model, tok):
    params = OriginalParams(noise_ratio=50.0, **FAST)
    first = validate_original(model, tok, concepts(), params=params)
    assert validate_original(model, tok, concepts(), params=params) == first
    other = validate_original(model, tok, concepts(), params=OriginalParams(noise_ratio=50.0, seed=1, **FAST))
    assert [r["noise_norm"] for r in other] != [r["noise_norm"] for r in first]
    z0 = original._noise(32, 1.0, 0, 1, 3)
    assert torch.equal(z0, original._noise(32, 1.0, 0, 1, 3)) and not torch.equal(z0, original._noise(32, 1.0, 1, 1, 3))


def test_unrelated_questions_sampled_from_other_concepts(model, tok):
    records = validate_original(model, tok, concepts(), params=OriginalParams(unrelated_size=3, **FAST))
    assert [r["n_unrelated"] for r in records] == [3, 3, 3]
    assert all(len(r["scores"]["unrelated_bleu"]) == 3 for r in records)  # every unrelated answer scored
    items = concepts()
    for item in items:
        picked = original._unrelated(items, item, OriginalParams(unrelated_size=3))
        assert not set(picked) & set(item["questions"])
        # per-concept seed: the same sample whatever the concept order
        assert picked == original._unrelated(items[::-1], item, OriginalParams(unrelated_size=3))
    explicit = validate_original(model, tok, concepts(with_unrelated=True)[:1], params=OriginalParams(**FAST))
    assert explicit[0]["n_unrelated"] == 3


# ------------------------------------------------------------------ resume
def test_resume_gives_identical_records(model, tok, tmp_path):
    params = OriginalParams(noise_ratio=50.0, **FAST)
    items = concepts(with_unrelated=True)
    fresh = validate_original(model, tok, items, params=params)
    log = tmp_path / "original.jsonl"
    validate_original(model, tok, items[:1], params=params, log_path=log)  # a run that stopped after one
    assert validate_original(model, tok, items, params=params, log_path=log) == fresh

    # a kill right after the first concept was logged (here: the progress callback raises)
    killed = tmp_path / "killed.jsonl"

    def die(_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        validate_original(model, tok, concepts(), params=params, log_path=killed, progress=die)
    assert len(killed.read_text().splitlines()) == 1
    assert validate_original(model, tok, concepts(), params=params, log_path=killed) == \
        validate_original(model, tok, concepts(), params=params)


def test_finished_log_is_not_recomputed(model, tok, tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    params = OriginalParams(**FAST)
    first = validate_original(model, tok, concepts(), params=params, log_path=log)
    monkeypatch.setattr(original, "_validate_one", lambda *a, **k: pytest.fail("recomputed a logged concept"))
    assert validate_original(model, tok, concepts(), params=params, log_path=log) == first
    assert [json.loads(line)["chunk"] for line in log.read_text().splitlines()] == [0, 1, 2]


def test_log_of_other_concepts_or_settings_refused(model, tok, tmp_path):
    log = tmp_path / "log.jsonl"
    validate_original(model, tok, concepts()[:1], params=OriginalParams(**FAST), log_path=log)
    with pytest.raises(KgprobeError, match="checkpoint line 0 is for 'c:a', not 'c:b'") as err:
        validate_original(model, tok, concepts()[1:], params=OriginalParams(**FAST), log_path=log)
    assert "\n" not in str(err.value)
    with pytest.raises(KgprobeError, match="other settings"):
        validate_original(model, tok, concepts()[:1], params=OriginalParams(seed=3, **FAST), log_path=log)


# ------------------------------------------------------------------ inputs, table, plot
@pytest.mark.parametrize("change, message", [
    ({"layer": 9}, "layer 9 out of range"),
    ({"index": 64}, "neuron index 64 out of range"),
    ({"questions": []}, "has no question"),
    ({"questions": ["ok", ""]}, "list of non-empty strings"),
    ({"unrelated": "not a list"}, "unrelated questions must be a list"),
])
def test_bad_concepts_are_one_line_errors(model, tok, change, message):
    with pytest.raises(KgprobeError, match=message):
        validate_original(model, tok, [{**concepts()[0], **change}], params=OriginalParams(**FAST))


def test_bad_params_and_missing_keys(model, tok):
    with pytest.raises(KgprobeError, match="missing questions"):
        validate_original(model, tok, [{"id": "x", "name": "X", "layer": 0, "index": 0}])
    with pytest.raises(KgprobeError, match="noise_ratio"):
        validate_original(model, tok, concepts(), params=OriginalParams(noise_ratio=-1.0))
    with pytest.raises(KgprobeError, match="batch_size"):
        validate_original(model, tok, concepts(), params=OriginalParams(batch_size=0))


def test_concept_objects_become_question_dicts():
    c = Concept(id="country:france", name="France", kind="country", qa=[QA("The capital of France is", "Paris")])
    assert original_concept(c, 3, 17) == {"id": "country:france", "name": "France", "layer": 3, "index": 17,
                                          "questions": ["The capital of France is"]}


def test_table_and_plot(model, tok, tmp_path):
    records = validate_original(model, tok, concepts(), params=OriginalParams(noise_ratio=50.0, **FAST))
    table = original_table(records)
    assert table["concepts"] == 3
    for key in ("target_bleu", "target_rouge_l", "unrelated_bleu", "unrelated_rouge_l"):
        assert table[key] == pytest.approx(sum(r[key] for r in records) / 3)
    assert table["noise"]["noise_ratio"] == 50.0 and table["noise"]["seed"] == 0
    assert table["implementations"] == "nltk 3.10.4 sentence_bleu smoothing method3; rouge 1.0.1 rouge-l f"
    json.dumps(table)
    path = plot_original(records, tmp_path / "hist.png", model_name="tiny-llama")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert records[0]["examples"][0]["question"] == QUESTIONS[0] and len(records[0]["examples"]) == 2
