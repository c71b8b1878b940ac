"""Null-controlled concept-vector tests (kgprobe.probe.nulls) on tiny config-built LMs."""
from __future__ import annotations

import math

import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.probe.concepts import QA
from kgprobe.probe.hooks import damage_value_vectors, value_vectors
from kgprobe.probe.nulls import InterventionRunner, NullParams, adjust, gpd_tail_p, monte_carlo_p, null_test
from kgprobe.probe.qa import answer_logprobs
from tiny_models import smollm2_tokenizer, tiny_gpt2, tiny_llama

FEW_SHOT = "The capital of Texas is Austin.\n"
ITEMS = [QA("The capital of France is", "Paris"), QA("The capital of Peru is", "Lima"),
         QA("The largest planet is", "Jupiter"), QA("Gold has the symbol", "Au"),
         QA("The Nile flows through", "Egypt and Sudan")]


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request, tok):
    return tiny_llama(tok) if request.param == "llama" else tiny_gpt2(tok)


def _manual(model, tok, targets, **damage):
    with torch.no_grad(), damage_value_vectors(model, targets, **damage):
        return answer_logprobs(model, tok, ITEMS, few_shot=FEW_SHOT).double()


def test_intact_scores_equal_the_qa_scorer(model, tok):
    runner = InterventionRunner(model, tok, ITEMS, few_shot=FEW_SHOT)
    with torch.no_grad():
        expect = answer_logprobs(model, tok, ITEMS, few_shot=FEW_SHOT).double()
    assert torch.allclose(runner.base, expect, atol=1e-4)


def test_zeroing_in_replicas_equals_zeroing_the_weights(model, tok):
    runner = InterventionRunner(model, tok, ITEMS, few_shot=FEW_SHOT)
    base = _manual(model, tok, [])
    sets = [[(1, 3)], [(0, 5), (1, 7)], [(1, 3), (1, 9)]]
    for per_pass in (1, 3):
        got = runner.deltas(sets, params=NullParams(replicas_per_pass=per_pass), generator=torch.Generator())
        for s, row in zip(sets, got):
            assert torch.allclose(row, _manual(model, tok, s) - base, atol=1e-4), (s, per_pass)
    # the layers below layer 1 are skipped for the first set where the model allows it (not GPT-2)
    assert runner._skip_ok[1] == (type(model).__name__ == "LlamaForCausalLM")


def test_noise_in_replicas_equals_noise_on_the_weights(model, tok):
    runner = InterventionRunner(model, tok, ITEMS, few_shot=FEW_SHOT)
    layer, j, ratio = 1, 4, 3.0
    v = value_vectors(model, layer)[j].detach().float()
    std = ratio * float(v.norm()) / math.sqrt(v.numel())
    got = runner.deltas([[(layer, j)]], params=NullParams(intervention="noise", noise_ratio=ratio),
                        generator=torch.Generator().manual_seed(7))[0]
    expect = _manual(model, tok, [(layer, j)], mode="noise", noise_std=std, seed=7) - _manual(model, tok, [])
    assert torch.allclose(got, expect, atol=1e-4)
    assert float(got.abs().max()) > 0


def test_mean_ablation_sets_the_activation_to_its_mean(tok):
    model = tiny_llama(tok)
    runner = InterventionRunner(model, tok, ITEMS, few_shot=FEW_SHOT)
    mu = runner.mean_activation(1)
    got = runner.deltas([[(1, 2)]], params=NullParams(intervention="mean"), generator=torch.Generator())[0]
    from kgprobe.probe.hooks import edit

    def to_mean(a):
        a = a.clone()
        a[..., 2] = mu[2]
        return a
    with torch.no_grad(), edit(model, {"blocks.1.mlp.hook_post": to_mean}):
        expect = answer_logprobs(model, tok, ITEMS, few_shot=FEW_SHOT).double() - runner.base
    assert torch.allclose(got, expect, atol=1e-4)


def test_adjusted_p_values_match_hand_computed_ones():
    p = [0.01, 0.04, 0.03, 0.5]
    # BH: sorted 0.01, 0.03, 0.04, 0.5 -> 0.04, 0.04*... m p / i = 0.04, 0.06, 0.0533, 0.5 -> cummin from the top
    assert adjust(p, method="bh") == pytest.approx([0.04, 0.0533333, 0.0533333, 0.5], rel=1e-5)
    # Holm: (m - i + 1) p_(i) = 0.04, 0.09, 0.08 -> cummax 0.04, 0.09, 0.09, 0.5
    assert adjust(p, method="holm") == pytest.approx([0.04, 0.09, 0.09, 0.5])
    with pytest.raises(KgprobeError, match="correction 'bonferroni'"):
        adjust(p, method="bonferroni")


def test_monte_carlo_and_tail_p_values():
    null = torch.randn(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert monte_carlo_p(null, 10.0, min_exceed=10, complete=True) == pytest.approx(1 / 1001)
    # stopped early with h exceedances: h / k
    assert monte_carlo_p(null[:40], -10.0, min_exceed=10, complete=False) == 1.0
    tail = gpd_tail_p(null, 4.0)  # a normal's tail beyond 4 sd: 3.2e-5
    assert tail is not None and 1e-7 < tail < 1 / 1001
    assert gpd_tail_p(null[:20], 4.0) is None  # too few draws to fit a tail


def _plant(model, tok, layer: int, j: int, answer: str) -> None:
    """Neuron j of ``layer`` always fires (a = z^2 sigmoid(z) >= 0 with gate = up) and writes the
    unembedding row of ``answer``'s first token: removing it takes mass from that answer only."""
    token = tok(" " + answer, add_special_tokens=False)["input_ids"][0]
    mlp = model.model.layers[layer].mlp
    with torch.no_grad():
        w = torch.randn(mlp.up_proj.weight.shape[1], generator=torch.Generator().manual_seed(1))
        mlp.up_proj.weight[j] = mlp.gate_proj.weight[j] = 3 * w
        mlp.down_proj.weight[:, j] = 20 * model.lm_head.weight[token] / model.lm_head.weight[token].norm()


def test_a_planted_concept_vector_beats_its_null_and_random_ones_do_not(tok):
    model = tiny_llama(tok)
    _plant(model, tok, 1, 11, "Paris")
    concept = [QA("The capital of France is", "Paris"), QA("France's capital city is", "Paris")]
    runner = InterventionRunner(model, tok, concept + ITEMS[2:], few_shot=FEW_SHOT)
    params = NullParams(null_size=60, min_exceed=5, norm_tolerance=10.0, replicas_per_pass=16)
    got = null_test(runner, [(1, 11)], n_concept=2, params=params, key="paris")
    assert got["effect"] > 0.3 and got["exceed"] == 0 and got["draws"] == 60
    assert got["p_monte_carlo"] == pytest.approx(1 / 61) and got["p"] <= 1 / 61
    assert null_test(runner, [(1, 11)], n_concept=2, params=params, key="paris") == got  # same seed and key
    # a random column is no better than its null: the draws stop early at 5 exceedances
    plain = null_test(runner, [(1, 30)], n_concept=2, params=params, key="random")
    assert plain["p"] > 0.05 and plain["draws"] <= 60
    # Besag-Clifford: the draws end at the 5th exceedance, p = 5 / k, whatever the pass size
    assert plain["exceed"] == 5 and plain["null"][-1] >= plain["effect"]
    assert plain["p"] == pytest.approx(5 / plain["draws"])
    for per_pass in (1, 7, 64):
        other = NullParams(null_size=60, min_exceed=5, norm_tolerance=10.0, replicas_per_pass=per_pass)
        again = null_test(runner, [(1, 30)], n_concept=2, key="random", params=other)
        assert again["draws"] == plain["draws"] and again["p"] == plain["p"]
        assert again["null"] == pytest.approx(plain["null"], abs=1e-5)


def test_bad_parameters_are_one_line_errors(tok):
    runner = InterventionRunner(tiny_llama(tok), tok, ITEMS)
    with pytest.raises(KgprobeError, match="intervention 'scramble'"):
        null_test(runner, [(1, 3)], n_concept=2, params=NullParams(intervention="scramble"))
    with pytest.raises(KgprobeError, match="no questions"):
        InterventionRunner(tiny_llama(tok), tok, [])


def test_validate_null_resumes_to_identical_records_and_plots(tok, tmp_path):
    from kgprobe.probe.concepts import Concept
    from kgprobe.probe.validate_null import NullValidation, plot_nulls, summarise_null, validate_null

    model = tiny_llama(tok)
    _plant(model, tok, 1, 11, "Paris")
    concepts = [Concept(id="c:france", name="France", kind="country", qa=[]),
                Concept(id="c:peru", name="Peru", kind="country", qa=[]),
                Concept(id="c:none", name="Nowhere", kind="country", qa=[])]
    known = {"c:france": [QA("The capital of France is", "Paris"), QA("France's capital city is", "Paris")],
             "c:peru": [QA("The capital of Peru is", "Lima"), QA("Peru's capital city is", "Lima")],
             "c:none": [QA("Nowhere is", "here")]}
    candidates = {"c:france": [(1, 11, 0.5), (1, 12, 0.2)], "c:peru": [(1, 30, 0.4)]}
    options = NullValidation(null=NullParams(null_size=40, min_exceed=5, norm_tolerance=10.0), alpha=0.05,
                             unrelated_size=3, questions="known")
    log = tmp_path / "null.jsonl"
    first = validate_null(model, tok, concepts[:1], candidates, known, options=options, log_path=log)
    again = validate_null(model, tok, concepts, candidates, known, options=options, log_path=log)
    fresh = validate_null(model, tok, concepts, candidates, known, options=options)
    assert again == fresh  # the resumed run equals a run from scratch
    assert first[0]["tests"]["single"]["effect"] == again[0]["tests"]["single"]["effect"]
    assert set(again[0]["tests"]) == {"single", "set"} and set(again[1]["tests"]) == {"single"}
    assert again[2]["skipped"] == "1 answered questions < 2"
    with pytest.raises(KgprobeError, match="questions 'some'"):
        validate_null(model, tok, concepts, candidates, known, options=NullValidation(questions="some"))
    assert again[0]["beats_null"] and not again[1]["beats_null"]
    summary = summarise_null(again, options)
    assert summary["beat_null_concepts"] == ["c:france"] and summary["per_test"]["set"]["tested"] == 1
    unbeaten = [(r["concept"], k) for r in again for k, t in r["tests"].items()
                if t["exceed"] == 0 and t["draws"] == 40]
    assert summary["beat_every_draw"] == {"tests": len(unbeaten), "concepts": len({c for c, _ in unbeaten})}
    assert ("c:france", "single") in unbeaten
    assert summary["beat_null_by_position"] == [{"from": 1, "to": 3, "tested": 2, "beat_null": 1}]
    plot_nulls(again, tmp_path / "nulls.png")
    assert (tmp_path / "nulls.png").stat().st_size > 1000


def test_a_concept_without_unrelated_questions_is_skipped_not_nan(tok):
    from kgprobe.probe.concepts import Concept
    from kgprobe.probe.validate_null import NullValidation, validate_null

    concept = Concept(id="c:france", name="France", kind="country",
                      qa=[QA("The capital of France is", "Paris"), QA("France's capital city is", "Paris")])
    # the model answers no question of any other concept: there is nothing to contrast with
    records = validate_null(tiny_llama(tok), tok, [concept], {"c:france": [(1, 11, 0.5)]}, {"c:france": []},
                            options=NullValidation(null=NullParams(null_size=20)))
    assert records[0]["skipped"] == "no answered question of another concept to serve as unrelated"
    assert records[0]["tests"] == {} and not records[0]["beats_null"]
