"""Attribution, validation and the locate -> validate -> unlearn stages on tiny models."""
from __future__ import annotations

import json

import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.probe.attribution import neuron_effects
from kgprobe.probe.concepts import QA, Concept
from kgprobe.probe.hooks import edit
from kgprobe.probe.qa import answer_logprobs, score_qa
from kgprobe.probe.run import LocateOptions, UnlearnOptions, ValidateOptions, locate, unlearn_all, validate
from kgprobe.probe.validate import ValidationParams, validate_concepts
from tiny_models import smollm2_tokenizer, tiny_llama

SUBJECTS = ["France", "Japan", "Kenya", "Peru", "Canada", "Norway", "Egypt", "Chile", "India", "Spain", "Italy",
            "Ghana", "Cuba", "Iran", "Laos", "Fiji"]
FRAMES = ["The capital of {} is", "People in {} speak", "The money of {} is the", "{} lies in", "{} is known for",
          "A famous city of {} is", "The flag of {} is", "The food of {} is"]


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def lm(tok):
    return tiny_llama(tok)


def _own_answer(model, tok, prompt: str) -> str | None:
    """The model's greedy next word, when it is a whole word that re-tokenises to the same token."""
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        nxt = int(model(ids).logits[0, -1].argmax())
    word = tok.decode([nxt])
    if not word.startswith(" ") or not word.strip().isalpha():
        return None
    return word.strip() if tok(" " + word.strip(), add_special_tokens=False).input_ids == [nxt] else None


@pytest.fixture(scope="module")
def concepts(lm, tok):
    """Concepts whose questions the tiny model 'knows': their answers are its own greedy words."""
    from kgprobe.probe.hooks import logit_lens, value_vectors

    # each concept's related words are what one layer-1 value vector promotes, so the scan finds it
    _, top = logit_lens(lm, value_vectors(lm, 1)[: len(SUBJECTS)], k=10)
    out = []
    for n, name in enumerate(SUBJECTS):
        qa = [QA(f.format(name), a) for f in FRAMES if (a := _own_answer(lm, tok, f.format(name)))]
        words = [w.strip() for w in tok.batch_decode(top[n, :, None]) if w.strip().isalpha()]
        out.append(Concept(id=f"country:{name.lower()}", name=name, kind="country", related=[name, *words],
                           qa=qa, attack=qa[:1]))
    good = [c for c in out if len(c.qa) >= 3]
    assert len(good) >= 4, "the tiny model should answer some of its own questions"
    return good[:4]


def test_neuron_effects_are_the_derivative_of_scaling_each_neuron(lm, tok):
    items = [QA("The capital of France is", "Paris"), QA("People in Japan speak", "Japanese")]
    effects = neuron_effects(lm, tok, items)
    assert effects.shape == (2, 64)

    def total(layer: int, index: int, alpha: float) -> float:
        def scale(t):
            t = t.clone()
            t[..., index] *= alpha
            return t
        with torch.no_grad(), edit(lm, {f"blocks.{layer}.mlp.hook_post": scale}):
            return float(answer_logprobs(lm, tok, items).sum())

    eps = 1e-2
    for layer, index in [(0, 3), (1, 17), (1, int(effects[1].abs().argmax()))]:
        numeric = (total(layer, index, 1 + eps) - total(layer, index, 1 - eps)) / (2 * eps)
        assert effects[layer, index].item() == pytest.approx(numeric, rel=0.05, abs=2e-4)


def test_validation_restores_the_model_and_uses_known_questions_only(lm, tok, concepts):
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    known = {c.id: list(c.qa) for c in concepts}
    assert score_qa(lm, tok, [q for c in concepts for q in c.qa]).correct.all()  # the model's own answers
    cands = {c.id: [(1, j, 1.0) for j in range(3)] for c in concepts}
    params = ValidationParams(min_questions=3, unrelated_size=6, vectors_per_concept=3)
    records = validate_concepts(lm, tok, concepts, cands, known, params=params)
    assert all(torch.equal(before[k], v) for k, v in lm.state_dict().items())
    for rec in records:
        assert len(rec["candidates"]) == 4  # three single vectors and the three together
        for row in rec["candidates"]:
            assert row["concept_acc_before"] == pytest.approx(1.0)
            assert row["validated"] == (row["concept_drop"] >= 0.5 and row["unrelated_drop"] <= 0.05)
    with pytest.raises(KgprobeError, match="validation mode"):
        validate_concepts(lm, tok, concepts, cands, known, params=ValidationParams(mode="melt"))


def test_zeroing_every_neuron_of_a_layer_validates_when_the_criterion_allows(lm, tok, concepts):
    """A damage that destroys the answers shows as a concept drop of 1."""
    known = {c.id: list(c.qa) for c in concepts}
    cands = {c.id: [(0, j, 1.0) for j in range(64)] for c in concepts[:1]}
    params = ValidationParams(min_questions=3, unrelated_size=6, vectors_per_concept=64, max_unrelated_drop=1.0)
    rec = validate_concepts(lm, tok, concepts[:1], cands, known, params=params)[0]
    together = rec["candidates"][-1]
    assert len(together["vectors"]) == 64
    after = score_qa(lm, tok, known[concepts[0].id]).correct.float().mean()
    assert after == 1.0  # restored
    assert rec["best"]["concept_drop"] >= together["concept_drop"]


def test_stages_write_their_files_and_resume(lm, tok, concepts, tmp_path):
    out = tmp_path / "cv"
    echo = []
    rows = locate(lm, tok, concepts, out, options=LocateOptions(top_tokens=20, pool=30, per_concept=2),
                  echo=echo.append)
    assert {p.name for p in out.iterdir()} >= {"scan.pt", "known.json", "candidates.jsonl"}
    for r in rows:
        assert 0 <= r["layer"] < 2 and 0 <= r["index"] < 64 and len(r["top_tokens"]) == 10
    by_concept = {}
    for r in rows:
        by_concept.setdefault(r["concept"], []).append(r)
    for rs in by_concept.values():  # ordered by the first-order effect on the concept's answers
        assert [r["effect"] for r in rs] == sorted((r["effect"] for r in rs), reverse=True)

    effects = [json.loads(x) for x in (out / "effects.jsonl").read_text().splitlines()]
    assert {e["concept"] for e in effects} == {c.id for c in concepts}
    assert all(len(e["vectors"]) == 64 and [v[2] for v in e["vectors"]] == sorted((v[2] for v in e["vectors"]),
                                                                                  reverse=True) for e in effects)
    opts = ValidateOptions(protocol="strict", min_questions=3, unrelated_size=6, set_sizes=[2, 8])
    summary = validate(lm, tok, concepts, out, options=opts, echo=echo.append)
    assert summary["concepts"] == len(concepts)
    assert set(summary["validated_by_set_of"]) == {"2", "8"} and set(summary["effect_sets"]) == {"2", "8"}
    assert summary["diagnosis"].startswith(f"{summary['validated']} of {summary['tested']} tested concepts")
    record = json.loads((out / "validation.jsonl").read_text().splitlines()[0])
    sets = [r for r in record["candidates"] if r["kind"] == "effect"]
    assert [len(r["vectors"]) for r in sets] == [2, 8]
    assert record["smallest_set"] == min((len(r["vectors"]) for r in sets if r["validated"]), default=None)
    table = (out / "validation.tsv").read_text().splitlines()
    assert table[0].split("\t")[:4] == ["concept", "known_questions", "validated", "layer"]
    assert len(table) == len(concepts) + 1
    log = (out / "validation.jsonl").read_text()
    assert validate(lm, tok, concepts, out, options=opts, echo=echo.append) == summary
    assert (out / "validation.jsonl").read_text() == log  # resumed: nothing recomputed or appended

    report = unlearn_all(lm, tok, concepts, out, options=UnlearnOptions(concepts=2, steps=2), echo=echo.append)
    assert set(report) == {"gradient-ascent", "gradient-difference", "npo", "ablation"}
    assert report["ablation"]["cosine"] == 0.0  # the zeroed vector shares no direction with itself
    data = json.loads((out / "unlearning_report.json").read_text())
    assert data["n_concepts"] == 2
    for runs in data["concepts"].values():  # the fact probes: the concept's facts and 40 others, before and after
        for run in runs.values():
            assert run["before"]["n_forget_facts"] >= 3 and run["before"]["n_retain_facts"] == 40
            assert 0 <= run["after"]["forget_fact_acc"] <= 1 and 0 <= run["after"]["retain_fact_acc"] <= 1
    assert report["npo"]["forget_fact_acc_drop"] is not None
    assert (out / "unlearning_report.png").stat().st_size > 10_000
    lines = (out / "unlearning.jsonl").read_text().splitlines()
    assert len(lines) == 8
    unlearn_all(lm, tok, concepts, out, options=UnlearnOptions(concepts=2, steps=2), echo=echo.append)
    assert (out / "unlearning.jsonl").read_text().splitlines() == lines
    # another order (as validating more concepts gives): records are reused by concept, method and
    # vectors, never by place, so each concept keeps its own results and nothing is recomputed
    reordered = UnlearnOptions(concepts=2, steps=2, methods=["ablation", "npo"])
    again = unlearn_all(lm, tok, concepts, out, options=reordered, echo=echo.append)
    assert (out / "unlearning.jsonl").read_text().splitlines() == lines
    assert again["npo"] == report["npo"] and again["ablation"] == report["ablation"]


def test_validate_null_protocol_writes_its_files_and_resumes(lm, tok, concepts, tmp_path):
    out = tmp_path / "cv"
    locate(lm, tok, concepts, out, options=LocateOptions(top_tokens=20, pool=30, per_concept=2, effect_set=0),
           echo=lambda s: None)
    opts = ValidateOptions(protocol="null-controlled", intervention="mean", null_size=30, alpha=0.05, unrelated_size=6)
    summary = validate(lm, tok, concepts, out, options=opts, echo=lambda s: None)
    saved = json.loads((out / "null.json").read_text())
    assert saved["summary"] == summary and summary["tested"] == len(saved["records"]) - len(summary["skipped"])
    assert summary["settings"]["null"]["intervention"] == "mean" and summary["settings"]["alpha"] == 0.05
    for r in saved["records"]:
        for t in r["tests"].values():
            assert 0 < t["p"] <= 1 and t["p_adjusted"] >= t["p"] and 1 <= t["draws"] <= 30
    assert (out / "null.png").stat().st_size > 1000 and not (out / "validation.tsv").exists()
    log = (out / "null.jsonl").read_text()
    assert validate(lm, tok, concepts, out, options=opts, echo=lambda s: None) == summary
    assert (out / "null.jsonl").read_text() == log  # resumed: nothing recomputed
    # unlearning takes the null protocol's concepts (those beating their null first), Needle and text runs too
    opts = UnlearnOptions(concepts=1, steps=1, methods=["needle", "gradient-ascent"], forget_on="text",
                          fact_set=None)
    report = unlearn_all(lm, tok, concepts, out, options=opts, echo=lambda s: None)
    assert set(report) == {"needle", "gradient-ascent"}
    runs = json.loads((out / "unlearning_report.json").read_text())["concepts"]
    run = next(iter(runs.values()))["needle"]
    assert run["log"]["train"] == "concept-vectors" and 0 <= run["intrinsic"]["jaccard_top200_raw"] <= 1
    # ConceptVectors' attacks: accuracy per style (german: none of these tiny concepts' questions translate)
    styles = run["after"]["attack_style_acc"]
    assert set(styles) == {"role", "grandmother", "in_context", "german"}
    assert all(0 <= styles[s] <= 1 for s in ("role", "grandmother", "in_context"))
    # a tested concept without an answered question is passed over, not a crash: the next one is unlearnt
    first = next(iter(runs))
    other = next(r["concept"] for r in saved["records"] if r["tests"] and r["concept"] != first)
    known = json.loads((out / "known.json").read_text())
    assert known[other]
    (out / "known.json").write_text(json.dumps({cid: (v if cid == other else []) for cid, v in known.items()}))
    said = []
    report = unlearn_all(lm, tok, concepts, out, options=opts, echo=said.append)
    runs = json.loads((out / "unlearning_report.json").read_text())["concepts"]
    assert list(runs) == [other] and report["needle"]["forget_acc_before"] is not None
    assert any("have no answered question to forget: passed over" in line for line in said)


def test_validate_original_protocol_writes_the_original_table(lm, tok, concepts, tmp_path):
    out = tmp_path / "cv"
    locate(lm, tok, concepts, out, options=LocateOptions(top_tokens=20, pool=30, per_concept=2, effect_set=0),
           echo=lambda s: None)
    opts = ValidateOptions(protocol="original", max_new_tokens=6, noise_ratio=50.0)
    table = validate(lm, tok, concepts, out, options=opts, echo=lambda s: None)
    saved = json.loads((out / "original.json").read_text())
    assert saved["table"] == table and len(saved["records"]) == table["concepts"] > 0
    for r in saved["records"]:
        assert 0 <= r["target_bleu"] <= 1 and 0 <= r["unrelated_rouge_l"] <= 1 and r["noise_ratio"] == 50.0
    assert (out / "original.png").stat().st_size > 1000


def test_discover_stage_names_a_planted_column_and_feeds_validation(tok, tmp_path):
    from kgprobe.probe.concepts import load_concepts
    from kgprobe.probe.hooks import set_value_vector
    from kgprobe.probe.run import DiscoverOptions, discover

    model = tiny_llama(tok)
    ids = [i for w in ("Japan", "Japanese", "Tokyo") for i in tok(" " + w, add_special_tokens=False)["input_ids"][:1]]
    with torch.no_grad():  # value vector (1, 9) now promotes exactly Japan's words
        model.lm_head.weight[ids] *= 30
        set_value_vector(model, 1, 9, model.lm_head.weight[ids].sum(0))
    out = tmp_path / "disc"
    concepts = discover(model, tok, out, options=DiscoverOptions(layers=[1], top_tokens=20), echo=lambda s: None)
    rows = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    japan = [r for r in rows if r["concept"] == "country:japan"]
    # the lengthened unembedding rows put Japan's words on top of other columns too: (1, 9) is among them
    assert (1, 9) in {(r["layer"], r["index"]) for r in japan}
    assert [r["rank"] for r in japan] == list(range(1, len(japan) + 1))
    saved = load_concepts(out / "concepts.jsonl")
    assert [c.id for c in saved] == [c.id for c in concepts] and "country:japan" in {c.id for c in saved}
    assert QA("The capital of Japan is", "Tokyo", "countryinfo:capital") in next(c for c in saved
                                                                                if c.id == "country:japan").qa
    assert set(json.loads((out / "known.json").read_text())) == {c.id for c in saved}


def test_stages_in_the_wrong_order_are_one_line_errors(lm, tok, concepts, tmp_path):
    with pytest.raises(KgprobeError, match="run the locate stage first"):
        validate(lm, tok, concepts, tmp_path / "empty", echo=lambda s: None)
    with pytest.raises(KgprobeError, match="unknown unlearning method"):
        unlearn_all(lm, tok, concepts, tmp_path, options=UnlearnOptions(methods=["forget-harder"]), echo=lambda s: None)


def _cli(args, capsys):
    from kgprobe.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_cli_help_pipeline_check_and_stage_order_error(tmp_path, capsys):
    code, out, _ = _cli(["probe", "--help"], capsys)
    assert code == 0 and "locate" in out and "unlearn" in out
    for pipeline in ("concept_vectors", "concept_vectors_discovered"):
        code, out, err = _cli(["run", f"pipelines/{pipeline}.yaml", "--check"], capsys)
        assert code == 0, err
    code, _, err = _cli(["probe", "validate", "--out", str(tmp_path / "none"), "--max-concepts", "2"], capsys)
    assert code == 2 and err.count("\n") == 1 and "run the locate stage first" in err
    code, _, err = _cli(["probe", "validate", "--out", str(tmp_path), "--set-sizes", "4,x"], capsys)
    assert code == 2 and "--set-sizes" in err
    assert not (tmp_path / "none").exists()
