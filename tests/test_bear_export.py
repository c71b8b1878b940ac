"""BEAR export (kgprobe.probe.bear): lm-pub-quiz reads the fact set back, and scores as kgprobe does."""
import json

import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.probe.bear import METADATA_FILE, export_bear, relation_code
from kgprobe.probe.fact_sets import Fact, FactSet, build_fact_set

lm_pub_quiz = pytest.importorskip("lm_pub_quiz")

TEMPLATES = {"capital": "The capital of [X] is [Y].", "continent": "[X] is in [Y]."}


def _kg() -> KnowledgeGraph:
    """12 countries with a capital each and one of 4 continents; WordNet-like numeric city ids."""
    triples, labels = [], {}
    for i in range(12):
        labels[f"C{i}"], labels[f"{i:08d}"] = f"Country {i}", f"City {i}"
        triples += [(f"C{i}", "capital", f"{i:08d}"), (f"C{i}", "continent", f"cont{i % 4}")]
    labels.update({f"cont{i}": name for i, name in enumerate(["Africa", "Asia", "Europe", "America"])})
    return KnowledgeGraph.from_labeled_triples(triples, entity_labels=labels, name="tiny")


def test_round_trip_through_lm_pub_quiz(tmp_path):
    fs = build_fact_set(_kg(), TEMPLATES, k="all", max_facts_per_relation=9, name="tiny")
    path = export_bear(fs, tmp_path / "bear")
    meta = json.loads((path / METADATA_FILE).read_text())
    assert meta["capital"]["templates"] == [TEMPLATES["capital"]]
    dataset = lm_pub_quiz.Dataset.from_path(path)
    assert sorted(dataset.relation_codes) == ["capital", "continent"]
    for relation in dataset:
        facts = [f for f in fs.facts if f.relation == relation.relation_code]
        table = relation.instance_table
        space = relation.answer_space
        assert relation.templates == [fs.templates[relation.relation_code]]
        assert list(table.sub_label) == [f.subject for f in facts]
        # the answer space is what kgprobe ranked (k="all" on a functional relation), in id order
        assert all(set(space) == set(f.options) for f in facts)
        assert list(space.index) == sorted(space.index)
        assert [space.iloc[i] for i in table.answer_idx] == [f.answer for f in facts]
    # numeric-looking ids survive as the answer space's ids (strings), answer_idx says the object
    assert dataset["capital"].answer_space.index[0] == min(f.answer_id for f in fs.facts if f.relation == "capital")


def test_options_of_one_label_are_one_answer_and_codes_are_file_safe(tmp_path):
    facts = [Fact("a/b.c", "S1", "Paris", ("PARIS", "Rome"), "s1", "p2", ("p1", "r")),
             Fact("a/b.c", "S2", "Rome", ("paris",), "s2", "r", ("p3",))]
    path = export_bear(FactSet("x", {"a/b.c": "[X]: [Y]."}, facts), tmp_path)
    assert relation_code("a/b.c") == "a_b_c" and (path / "a_b_c.jsonl").is_file()
    meta = json.loads((path / METADATA_FILE).read_text())["a_b_c"]
    assert meta["answer_space_ids"] == ["p1", "r"] and meta["kgprobe_relation"] == "a/b.c"
    rows = [json.loads(line) for line in (path / "a_b_c.jsonl").read_text().splitlines()]
    assert [(r["obj_id"], r["answer_idx"]) for r in rows] == [("p1", 0), ("r", 1)]
    with pytest.raises(KgprobeError, match="relations 'a.b' and 'a/b' would both be lm-pub-quiz's 'a_b'"):
        export_bear(FactSet("x", {"a.b": "[X] [Y]", "a/b": "[X] [Y]"},
                            [Fact("a.b", "s", "o", ("p",), "s", "o", ("p",)),
                             Fact("a/b", "s", "o", ("p",), "s", "o", ("p",))]), tmp_path / "y")


# ------------------------------------------------------------------ agreement on tiny models
SUBJECTS = [("France", "Paris"), ("Italy", "Rome"), ("Japan", "Tokyo")]
ANSWERS = ["Paris", "Rome", "Tokyo", "Lima", "Berlin"]


def _statements():
    from kgprobe.probe.statements import fill

    return [[fill(TEMPLATES["capital"], s, a) for a in ANSWERS] for s, _ in SUBJECTS]


def _theirs(model, tokenizer, model_type: str, **kw) -> dict[str, list[float]]:
    out = {}
    for conditional in (False, True):
        evaluator = lm_pub_quiz.Evaluator.from_model(model, tokenizer=tokenizer, model_type=model_type,
                                                     device="cpu", conditional_score=conditional, **kw)
        out["conditional" if conditional else "statement"] = [
            s for subject, _ in SUBJECTS
            for s in evaluator.score_answers(template=TEMPLATES["capital"], answers=ANSWERS, subject=subject,
                                             reduction="sum", batch_size=4)]
    return out


def test_causal_scores_equal_lm_pub_quiz():
    from transformers import AutoTokenizer

    from kgprobe.models import model_source
    from kgprobe.probe.statements import score_causal
    from tiny_models import smollm2_tokenizer, tiny_llama

    tokenizer = smollm2_tokenizer()  # left padding, as kgprobe loads it
    model = tiny_llama(tokenizer)
    ours = score_causal(model, tokenizer, _statements(), batch_size=8)
    # lm-pub-quiz needs its own right-padding tokenizer: with left padding it scores the pads' positions
    theirs = _theirs(model, AutoTokenizer.from_pretrained(model_source("smollm2-135m")), "CLM")
    for span in ("statement", "conditional"):
        assert torch.allclose(ours.score(span), torch.tensor(theirs[span], dtype=torch.float64), atol=1e-4), span


@pytest.mark.parametrize("pll", ["within_word_l2r", "original"])
def test_masked_scores_equal_lm_pub_quiz(bert_dir, pll):
    from transformers import AutoTokenizer, BertForMaskedLM

    from kgprobe.probe.statements import score_masked

    model = BertForMaskedLM.from_pretrained(bert_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    flat = [s for group in _statements() for s in group]
    ours = score_masked(model, tokenizer, flat, pll=pll, batch_size=16)
    theirs = _theirs(model, tokenizer, "MLM", pll_metric=pll)
    for span in ("statement", "conditional"):
        assert torch.allclose(ours.score(span), torch.tensor(theirs[span], dtype=torch.float64), atol=1e-4), span
