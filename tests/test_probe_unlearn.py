"""Unlearning methods on tiny config-built Llama / GPT-2 models (and SmolLM2-135M when slow)."""
from __future__ import annotations

import math

import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.probe.concepts import QA
from kgprobe.probe.hooks import all_value_vectors, arch_of
from kgprobe.probe.qa import answer_logprobs
from kgprobe.probe.unlearn import DEFAULT_LR, UNLEARNER_REGISTRY, restore, snapshot, unlearn, unlearner_names
from tiny_models import smollm2_tokenizer, tiny_gpt2, tiny_llama

FORGET = [QA("The capital of France is", "Paris"), QA("The currency of France is the", "Euro"),
          QA("The official language of France is", "French"), QA("France is a country in", "Europe")]
RETAIN = [QA("The capital of Germany is", "Berlin"), QA("The capital of Italy is", "Rome"),
          QA("The capital of Japan is", "Tokyo"), QA("The capital of Spain is", "Madrid")]


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


def _llama(tok):
    return tiny_llama(tok, tie_word_embeddings=True)


_gpt2 = tiny_gpt2
BUILDERS = {"llama": _llama, "gpt2": _gpt2}


@pytest.fixture(params=sorted(BUILDERS))
def model(request, tok):
    return BUILDERS[request.param](tok)


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _mean_nll(model, tok, items) -> float:
    with torch.no_grad():
        return float(-answer_logprobs(model, tok, items).mean())


# ------------------------------------------------------------------ names and errors
def test_registry_names_and_unknown_method_is_one_line(tok):
    assert unlearner_names() == ["ablation", "gradient-ascent", "gradient-difference", "needle", "npo"]
    with pytest.raises(KgprobeError) as err:
        unlearn(_llama(tok), tok, method="forget-everything", forget=FORGET)
    message = str(err.value)
    assert "\n" not in message and "forget-everything" in message
    assert all(name in message for name in unlearner_names())
    assert UNLEARNER_REGISTRY.lookup("ga").name == "gradient-ascent"


@pytest.mark.parametrize("kwargs, words", [
    ({"method": "gradient-ascent", "forget": []}, "non-empty forget"),
    ({"method": "gradient-ascent", "forget": FORGET, "steps": -1}, "steps"),
    ({"method": "gradient-ascent", "forget": FORGET, "lr": 0.0}, "lr"),
    ({"method": "gradient-ascent", "forget": FORGET, "train": "attention"}, "train"),
    ({"method": "gradient-difference", "forget": FORGET, "retain": []}, "retain set is empty"),
    ({"method": "npo", "forget": FORGET, "beta": 0.0}, "beta"),
    ({"method": "npo", "forget": FORGET, "optimizer": "lbfgs"}, "unknown optimizer"),
    ({"method": "ablation", "forget": FORGET}, "concept vector"),
    ({"method": "ablation", "forget": FORGET, "concept_vectors": [(5, 0)]}, "outside the model"),
])
def test_bad_options_are_one_line_errors(tok, kwargs, words):
    with pytest.raises(KgprobeError, match=words) as err:
        unlearn(_llama(tok), tok, **kwargs)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ snapshot / restore
def test_snapshot_restore_is_bitwise(model, tok):
    start = snapshot(model)
    assert all(t.device.type == "cpu" for t in start.values())
    unlearn(model, tok, method="gradient-ascent", forget=FORGET, steps=2, lr=1e-2, seed=0)
    assert not _states_equal(start, model.state_dict())      # training moved the weights
    restore(model, start)
    assert _states_equal(start, model.state_dict())
    # the snapshot is a copy: later training does not write through into it
    unlearn(model, tok, method="gradient-ascent", forget=FORGET, steps=1, lr=1e-2, seed=0)
    restore(model, start)
    assert _states_equal(start, model.state_dict())


def test_restore_of_a_foreign_snapshot_is_one_line(tok):
    with pytest.raises(KgprobeError, match="does not fit"):
        restore(_llama(tok), snapshot(_gpt2(tok)))


# ------------------------------------------------------------------ methods
def test_ablation_zeroes_only_the_concept_rows(model, tok):
    arch = arch_of(model)
    targets = [(0, 3), (1, 17), (1, 5)]
    before_vectors, before_state = all_value_vectors(model), snapshot(model)
    log = unlearn(model, tok, method="ablation", forget=FORGET, concept_vectors=targets)
    assert log["method"] == "ablation" and log["steps"] == 0 and log["losses"] == []
    after = all_value_vectors(model)
    rows = torch.tensor([layer * arch.n_neurons + index for layer, index in targets])
    assert torch.equal(after[rows], torch.zeros(len(targets), arch.d_model))
    keep = torch.ones(len(after), dtype=torch.bool)
    keep[rows] = False
    assert torch.equal(after[keep], before_vectors[keep])
    # every other weight tensor is untouched
    down = {f"{n}.weight" for n, m in model.named_modules() if m in [arch.down_proj(i) for i in range(arch.n_layers)]}
    state = model.state_dict()
    assert all(torch.equal(state[k], before_state[k]) for k in state if k not in down)


@pytest.mark.parametrize("optimizer, lr", [("adamw", 1e-3), ("sgd", 1.0)])
def test_gradient_ascent_raises_forget_nll(model, tok, optimizer, lr):
    before = _mean_nll(model, tok, FORGET)
    log = unlearn(model, tok, method="gradient-ascent", forget=FORGET, steps=4, lr=lr, seed=0, optimizer=optimizer)
    assert len(log["losses"]) == 4 and log["n_trainable"] > 0 and log["seconds"] >= 0
    assert log["optimizer"] == optimizer and log["losses"][0] == pytest.approx(-before, rel=1e-4)
    assert _mean_nll(model, tok, FORGET) > before + 0.1


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_npo_first_loss_is_two_over_beta_log_two(model, tok, beta):
    log = unlearn(model, tok, method="npo", forget=FORGET, steps=1, lr=1e-3, beta=beta, batch_size=8)
    assert log["losses"][0] == pytest.approx(2 / beta * math.log(2), rel=1e-5)
    assert log["options"] == {"beta": beta, "retain_weight": 0.0}


def test_npo_raises_forget_nll_and_saturates(tok):
    model = _llama(tok)
    before = _mean_nll(model, tok, FORGET)
    log = unlearn(model, tok, method="npo", forget=FORGET, steps=6, lr=1e-3, beta=0.1)
    assert _mean_nll(model, tok, FORGET) > before
    # NPO loss < its start once logp drops
    assert all(0 <= loss <= 2 / 0.1 * math.log(2) + 1e-4 for loss in log["losses"][1:])


def test_gradient_difference_keeps_retain_nll_lower_than_ascent(model, tok):
    start = snapshot(model)
    unlearn(model, tok, method="gradient-ascent", forget=FORGET, retain=RETAIN, steps=4, lr=1e-3, seed=0)
    ga_forget, ga_retain = _mean_nll(model, tok, FORGET), _mean_nll(model, tok, RETAIN)
    restore(model, start)
    base_forget = _mean_nll(model, tok, FORGET)
    unlearn(model, tok, method="gradient-difference", forget=FORGET, retain=RETAIN, steps=4, lr=1e-3, seed=0)
    assert _mean_nll(model, tok, RETAIN) < ga_retain
    assert base_forget < _mean_nll(model, tok, FORGET) <= ga_forget + 1e-4


def test_same_seed_same_weights_and_flags_restored(tok):
    model = _llama(tok)
    start = snapshot(model)
    model.model.embed_tokens.weight.requires_grad_(False)   # a caller's freeze survives the run
    unlearn(model, tok, method="npo", forget=FORGET, retain=RETAIN, retain_weight=1.0, steps=3, lr=1e-3,
            batch_size=2, seed=7)
    first = snapshot(model)
    assert not model.model.embed_tokens.weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if "embed" not in n)
    assert all(p.grad is None for p in model.parameters()) and not model.training
    restore(model, start)
    unlearn(model, tok, method="npo", forget=FORGET, retain=RETAIN, retain_weight=1.0, steps=3, lr=1e-3,
            batch_size=2, seed=7)
    assert _states_equal(first, snapshot(model))


def test_train_mlp_changes_only_mlp_weights(model, tok):
    arch = arch_of(model)
    mlp_params = {id(p) for i in range(arch.n_layers) for p in arch.mlp(i).parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    log = unlearn(model, tok, method="gradient-ascent", forget=FORGET, steps=2, lr=1e-2, train="mlp")
    assert log["n_trainable"] == sum(p.numel() for i in range(arch.n_layers) for p in arch.mlp(i).parameters())
    for name, p in model.named_parameters():
        changed = not torch.equal(p.detach(), before[name])
        assert changed == (id(p) in mlp_params), name


# ------------------------------------------------------------------ the real model
@pytest.mark.slow
def test_smollm2_gradient_ascent_lowers_forget_logprob():
    from kgprobe.models import load_causal_lm

    model, tok = load_causal_lm("smollm2-135m", device="cpu")
    items = FORGET[:2]
    with torch.no_grad():
        before = answer_logprobs(model, tok, items)
    log = unlearn(model, tok, method="gradient-ascent", forget=items, steps=1, lr=DEFAULT_LR, train="mlp")
    with torch.no_grad():
        after = answer_logprobs(model, tok, items)
    assert log["losses"][0] == pytest.approx(float(before.mean()), abs=1e-3)
    assert float(after.mean()) < float(before.mean())
