"""Behavioural and intrinsic measures and the unlearning report, hand-checked on tiny models."""
from __future__ import annotations

import json
import math

import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.probe.concepts import QA
from kgprobe.probe.hooks import arch_of, logit_lens, set_value_vector, value_vectors
from kgprobe.probe.measure import behavioural, intrinsic, jaccard_rows, layer_vectors
from kgprobe.probe.qa import score_qa
from kgprobe.probe.report import SUMMARY_COLUMNS, summarise, write_report
from kgprobe.probe.unlearn import restore, snapshot, unlearn
from tiny_models import smollm2_tokenizer, tiny_gpt2, tiny_llama

FORGET = [QA("The capital of France is", "Paris"), QA("The currency of France is the", "Euro"),
          QA("France is a country in", "Europe")]
RETAIN = [QA("The capital of Germany is", "Berlin"), QA("The capital of Italy is", "Rome")]
ATTACK = [QA("The city of the Eiffel Tower is the capital of a country; that city is", "Paris")]
INTRINSIC_KEYS = {"cosine", "l2", "jaccard_topk", "layer_cosine", "layer_l2", "layer_jaccard"}


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


def _llama(tok):
    return tiny_llama(tok)


_gpt2 = tiny_gpt2


@pytest.fixture(params=["llama", "gpt2"])
def model(request, tok):
    return {"llama": _llama, "gpt2": _gpt2}[request.param](tok)


# ------------------------------------------------------------------ behavioural
def test_behavioural_matches_score_qa_and_handles_empty_sets(tok):
    model = _llama(tok)
    out = behavioural(model, tok, forget=FORGET, retain=RETAIN, attack=[])
    scores = score_qa(model, tok, FORGET)
    assert out["forget_acc"] == pytest.approx(float(scores.correct.float().mean()))
    assert out["forget_logprob"] == pytest.approx(float(scores.logprob.mean()))
    assert out["n_forget"] == 3 and out["n_retain"] == 2 and out["n_attack"] == 0
    assert out["attack_acc"] is None and out["attack_logprob"] is None
    assert 0 <= out["retain_acc"] <= 1 and out["retain_logprob"] < 0


# ------------------------------------------------------------------ intrinsic
def test_jaccard_rows_by_hand():
    a = torch.tensor([[1, 2, 3], [1, 2, 3], [7, 8, 9]])
    b = torch.tensor([[3, 4, 5], [3, 1, 2], [1, 2, 3]])
    assert jaccard_rows(a, b).tolist() == pytest.approx([1 / 5, 1.0, 0.0])


@pytest.mark.parametrize("as_snapshot", [True, False])
def test_unchanged_model_has_cosine_one_l2_zero_jaccard_one(model, as_snapshot):
    vectors = [(0, 1), (1, 7)]
    before = snapshot(model) if as_snapshot else layer_vectors(model, [0, 1])
    out = intrinsic(before, model, concept_vectors=vectors, k=10)
    assert INTRINSIC_KEYS <= set(out)
    for key in ("cosine", "jaccard_topk", "layer_cosine", "layer_jaccard"):
        assert out[key] == pytest.approx(1.0, abs=1e-6), key
    assert out["l2"] == 0 and out["layer_l2"] == 0
    assert [(v["layer"], v["index"]) for v in out["per_vector"]] == vectors and out["layers"] == [0, 1]


def test_zeroed_vector_by_hand(model, tok):
    arch = arch_of(model)
    before = snapshot(model)
    v = value_vectors(model, 1)[5].clone()
    unlearn(model, tok, method="ablation", forget=FORGET, concept_vectors=[(1, 5)])
    out = intrinsic(before, model, concept_vectors=[(1, 5)], k=10)
    n = arch.n_neurons
    assert out["cosine"] == 0.0                      # cosine with the zero vector: 0
    assert out["l2"] == pytest.approx(float(v.norm()), rel=1e-6)
    assert out["jaccard_topk"] == 0.0                # the zero vector's top-k is defined to share nothing
    assert out["layer_cosine"] == pytest.approx((n - 1) / n, abs=1e-6)
    assert out["layer_l2"] == pytest.approx(float(v.norm()) / n, rel=1e-5)
    assert out["layer_jaccard"] == pytest.approx((n - 1) / n, abs=1e-6)


def test_scaled_and_flipped_vectors_by_hand(tok):
    model = _llama(tok)   # RMSNorm: top-k tokens are invariant to a positive scale
    before = layer_vectors(model, [0])
    v2, v3 = before[0][2], before[0][3]
    set_value_vector(model, 0, 2, 2 * v2)
    set_value_vector(model, 0, 3, -v3)
    out = intrinsic(before, model, concept_vectors=[(0, 2)], k=10)
    assert out["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert out["l2"] == pytest.approx(float(v2.norm()), rel=1e-6)
    assert out["jaccard_topk"] == 1.0
    flipped = intrinsic(before, model, concept_vectors=[(0, 3)], k=10)
    assert flipped["cosine"] == pytest.approx(-1.0, abs=1e-6)
    assert flipped["l2"] == pytest.approx(2 * float(v3.norm()), rel=1e-6)
    # -v promotes the tokens v demotes: its top-10 = v's bottom-10 (vocab 49152, no overlap with v's top-10)
    assert flipped["jaccard_topk"] == 0.0
    both = intrinsic(before, model, concept_vectors=[(0, 2), (0, 3)], k=10)
    assert both["cosine"] == pytest.approx(0.0, abs=1e-6) and both["jaccard_topk"] == pytest.approx(0.5)
    n = arch_of(model).n_neurons
    assert both["layer_cosine"] == pytest.approx((n - 2) / n, abs=1e-6)


def test_snapshot_reads_before_vectors_with_the_before_readout(tok):
    model = _llama(tok)
    snap, plain = snapshot(model), layer_vectors(model, [1])
    _, ids_before = logit_lens(model, value_vectors(model, 1)[:4], k=10)
    torch.manual_seed(1)
    with torch.no_grad():   # only the final norm changes: the value vectors stay as they were
        model.model.norm.weight.copy_(torch.rand_like(model.model.norm.weight) * 4 - 2)
    same_readout = intrinsic(plain, model, concept_vectors=[(1, 0)], k=10)
    own_readout = intrinsic(snap, model, concept_vectors=[(1, 0)], k=10)
    assert same_readout["cosine"] == own_readout["cosine"] == pytest.approx(1.0)
    assert same_readout["layer_jaccard"] == pytest.approx(1.0)        # same lens both sides
    assert own_readout["layer_jaccard"] < 0.9                         # each model reads its own vector
    # the lens swap put the current norm back bitwise
    restore(model, snap)
    _, ids_again = logit_lens(model, value_vectors(model, 1)[:4], k=10)
    assert torch.equal(ids_before, ids_again)


def test_gpt2_snapshot_orientation_after_training(tok):
    model = _gpt2(tok)
    snap = snapshot(model)
    old = value_vectors(model, 0)[[3, 9]]
    unlearn(model, tok, method="gradient-ascent", forget=FORGET, steps=2, lr=1e-2, train="mlp")
    new = value_vectors(model, 0)[[3, 9]]
    out = intrinsic(snap, model, concept_vectors=[(0, 3), (0, 9)], k=10)
    expected_cos = torch.nn.functional.cosine_similarity(old, new, dim=1).mean()
    assert out["cosine"] == pytest.approx(float(expected_cos), abs=1e-6) and out["cosine"] < 1
    assert out["l2"] == pytest.approx(float((new - old).norm(dim=1).mean()), rel=1e-5)


def test_intrinsic_errors_are_one_line(tok):
    model = _llama(tok)
    with pytest.raises(KgprobeError, match="no value vectors for layer"):
        intrinsic(layer_vectors(model, [0]), model, concept_vectors=[(1, 0)])
    with pytest.raises(KgprobeError, match="outside the model"):
        intrinsic(layer_vectors(model, [0]), model, concept_vectors=[(0, 10_000)])
    with pytest.raises(KgprobeError, match="no concept vectors"):
        intrinsic(layer_vectors(model, [0]), model, concept_vectors=[])


# ------------------------------------------------------------------ report
def _run(concept: str, method: str, *, drop: float, cosine: float, attack_after: float | None = 0.5) -> dict:
    before = {"forget_acc": 1.0, "forget_logprob": -1.0, "retain_acc": 1.0, "retain_logprob": -1.0,
              "attack_acc": 1.0 if attack_after is not None else None, "attack_logprob": -2.0}
    after = {**before, "forget_acc": 1.0 - drop, "forget_logprob": -5.0, "retain_acc": 0.9,
             "attack_acc": attack_after}
    intr = {"cosine": cosine, "l2": 1 - cosine, "jaccard_topk": cosine, "layer_cosine": 1.0, "layer_l2": 0.0,
            "layer_jaccard": 1.0, "per_vector": [], "k": 50, "layers": [3]}
    return {"concept": concept, "method": method, "before": before, "after": after, "intrinsic": intr,
            "log": {"method": method, "steps": 3, "losses": [1.0, 2.0, float("nan")], "seconds": 0.1}}


def test_write_report_files_keys_and_means(tmp_path):
    results = [_run("c1", "npo", drop=1.0, cosine=0.999), _run("c2", "npo", drop=0.5, cosine=0.997),
               _run("c1", "ablation", drop=0.8, cosine=0.0, attack_after=None),
               _run("c2", "ablation", drop=0.6, cosine=0.0, attack_after=0.2)]
    paths = write_report(results, tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == \
        {"unlearning_report.json", "unlearning_summary.tsv", "unlearning_report.png"}
    report = json.loads(paths["json"].read_text())
    assert set(report) >= {"methods", "concepts", "summary", "n_concepts"}
    assert report["methods"] == ["npo", "ablation"] and report["n_concepts"] == 2
    run = report["concepts"]["c1"]["npo"]
    assert set(run) == {"before", "after", "intrinsic", "log"}
    assert run["log"]["n_steps"] == 3 and run["log"]["final_loss"] is None and "losses" not in run["log"]
    npo, abl = report["summary"]["npo"], report["summary"]["ablation"]
    assert set(npo) == set(SUMMARY_COLUMNS)
    assert npo["n_concepts"] == 2 and npo["forget_acc_drop"] == pytest.approx(0.75)
    assert npo["cosine"] == pytest.approx(0.998) and npo["retain_acc_drop"] == pytest.approx(0.1)
    assert abl["attack_acc_after"] == pytest.approx(0.2)             # the missing one is left out of the mean
    lines = paths["tsv"].read_text().splitlines()
    assert lines[0].split("\t") == ["method", *SUMMARY_COLUMNS] and len(lines) == 3
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]   # no temp files left


@pytest.mark.parametrize("results, words", [
    ([], "no results"),
    ([{"concept": "c", "method": "npo"}], "lacks before, after, intrinsic"),
    ([_run("c", "npo", drop=1, cosine=1), _run("c", "npo", drop=1, cosine=1)], "two results"),
])
def test_report_bad_results_are_one_line(tmp_path, results, words):
    with pytest.raises(KgprobeError, match=words):
        write_report(results, tmp_path)
    assert not list(tmp_path.iterdir())


def test_all_methods_end_to_end_on_a_tiny_model(tok, tmp_path):
    model = _llama(tok)
    start, vectors = snapshot(model), [(1, 4)]
    results = []
    for method in ("gradient-ascent", "gradient-difference", "npo", "ablation"):
        restore(model, start)
        before = behavioural(model, tok, forget=FORGET, retain=RETAIN, attack=ATTACK)
        log = unlearn(model, tok, method=method, forget=FORGET, retain=RETAIN, concept_vectors=vectors,
                      steps=2, lr=1e-3)
        results.append({"concept": "country:france", "method": method, "before": before,
                        "after": behavioural(model, tok, forget=FORGET, retain=RETAIN, attack=ATTACK),
                        "intrinsic": intrinsic(start, model, concept_vectors=vectors, k=20), "log": log})
    summary = summarise(results)
    assert summary["ablation"]["jaccard_topk"] == 0.0 and summary["ablation"]["cosine"] == 0.0
    assert 0 < summary["gradient-ascent"]["cosine"] < 1
    assert all(summary[m]["forget_logprob_drop"] > 0 for m in ("gradient-ascent", "gradient-difference", "npo"))
    paths = write_report(results, tmp_path, intrinsic_axis="cosine")
    assert math.isfinite(json.loads(paths["json"].read_text())["summary"]["npo"]["l2"])


@pytest.mark.slow
def test_smollm2_ablation_intrinsic():
    from kgprobe.models import load_causal_lm

    model, tok = load_causal_lm("smollm2-135m", device="cpu")
    before = layer_vectors(model, [20])
    unlearn(model, tok, method="ablation", forget=FORGET, concept_vectors=[(20, 100)])
    out = intrinsic(before, model, concept_vectors=[(20, 100)], k=50)
    assert out["cosine"] == 0.0 and out["jaccard_topk"] == 0.0
    assert out["layer_jaccard"] == pytest.approx(1535 / 1536, abs=1e-6)


def test_report_figure_falls_back_to_the_attack_styles_mean():
    """WordNet concepts have no indirect questions: the right panel plots the attack styles' mean."""
    from kgprobe.probe.report import _attack_after

    row = {"attack_acc_after": None, "attack_role_acc_after": 0.5, "attack_grandmother_acc_after": 1.0,
           "attack_in_context_acc_after": 0.0, "attack_german_acc_after": None}
    assert _attack_after(row) == pytest.approx(0.5)
    assert _attack_after({**row, "attack_acc_after": 0.2}) == pytest.approx(0.2)
    assert _attack_after({k: None for k in row}) is None
