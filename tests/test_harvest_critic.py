"""The hidden-state critic (kgprobe.harvest.critic): features, negatives, fit, leave-one-out weight."""
from __future__ import annotations

import json

import pytest
import torch

from kgprobe.harvest.critic import (
    PRIOR_WEIGHT,
    critic_scores,
    default_layer,
    fit_critic,
    hidden_states,
    loo_weight,
    negatives,
    seeds_tell_nothing,
)
from kgprobe.harvest.relation import Template

TEXTS = ["Paris is the capital of France .", "Lima is the capital of Peru .",
         "The city of Nairobi is the capital of Kenya , a country in East Africa .", "Ottawa ."]
SEEDS = [("Paris", "France"), ("Tokyo", "Japan"), ("Nairobi", "Kenya"), ("Lima", "Peru"), ("Ottawa", "Canada")]
POOL = {0: ["Berlin", "Madrid", "Rome", "Cairo", "Oslo", "Moscow", "London", "Sydney", "Lagos", "Beijing"],
        1: ["Germany", "Spain", "Italy", "Egypt", "Norway", "Russia", "England", "Australia", "Nigeria", "China"]}


@pytest.fixture(scope="module")
def smollm2():
    from kgprobe.models import load_causal_lm

    return load_causal_lm("smollm2-135m", device="cpu")


def _alone_vs_batch(model, tok, **kwargs) -> torch.Tensor:
    batch = hidden_states(model, tok, TEXTS, batch_size=len(TEXTS), **kwargs)
    alone = torch.cat([hidden_states(model, tok, [t], **kwargs) for t in TEXTS])
    assert batch.dtype == torch.float32 and batch.device.type == "cpu"
    torch.testing.assert_close(batch, alone, atol=1e-4, rtol=0)
    return batch


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_hidden_states_of_tiny_causal_lms_do_not_depend_on_the_batch(family):
    from tiny_models import smollm2_tokenizer, tiny_gpt2, tiny_llama

    tok = smollm2_tokenizer()  # pads on the left: hidden_states pads itself, on the right
    model = tiny_llama(tok) if family == "llama" else tiny_gpt2(tok)
    feats = _alone_vs_batch(model, tok, layer=2)
    assert feats.shape == (4, 32)
    both = hidden_states(model, tok, TEXTS, layer=[1, 2], batch_size=3)
    assert both.shape == (4, 64)
    torch.testing.assert_close(both[:, 32:], feats, atol=1e-4, rtol=0)
    # the last real token's state: a text's state equals that of its own last position, run alone
    ids = torch.tensor([tok(TEXTS[1])["input_ids"]])
    with torch.no_grad():
        ref = model(input_ids=ids, output_hidden_states=True).hidden_states[2][0, -1]
    torch.testing.assert_close(feats[1], ref, atol=1e-4, rtol=0)
    assert hidden_states(model, tok, [], layer=1).shape == (0, 32)


def test_hidden_states_of_a_masked_lm_are_means_over_real_tokens(tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from tiny_models import save_tiny_masked_lm

    save_tiny_masked_lm(tmp_path)
    model, tok = AutoModelForMaskedLM.from_pretrained(tmp_path).eval(), AutoTokenizer.from_pretrained(tmp_path)
    feats = _alone_vs_batch(model, tok)  # default layer: (2 * 2) // 3 = 1
    assert default_layer(model) == 1 and feats.shape == (4, 32)
    with torch.no_grad():
        ref = model(**tok(TEXTS[0], return_tensors="pt"), output_hidden_states=True).hidden_states[1][0].mean(0)
    torch.testing.assert_close(feats[0], ref, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_hidden_states_of_smollm2_do_not_depend_on_the_batch(smollm2):
    model, tok = smollm2
    assert default_layer(model) == 20  # 30 layers
    assert _alone_vs_batch(model, tok).shape == (4, 576)


def test_negatives_are_corrupted_seeds_drawn_deterministically():
    first = negatives(SEEDS, POOL, per_seed=8, seed=0)
    assert first == negatives(SEEDS, POOL, per_seed=8, seed=0)
    assert first != negatives(SEEDS, POOL, per_seed=8, seed=1)
    truth = {tuple(e.lower() for e in s) for s in SEEDS}
    for s, negs in zip(SEEDS, first):
        assert len(negs) == 8 and len(set(negs)) == 8
        assert not truth & {tuple(e.lower() for e in t) for t in negs}
        # one slot changed, the other kept
        assert all(sum(a != b for a, b in zip(s, t)) == 1 for t in negs)
    assert any(t[0] in POOL[0] or t[1] in POOL[1] for negs in first for t in negs)
    assert [len(n) for n in negatives(SEEDS, POOL, per_seed=3, seed=0)] == [3] * 5
    # without a pool: every other seed's value of every slot, and no more
    swaps = negatives(SEEDS, {}, per_seed=100, seed=0)
    assert [len(n) for n in swaps] == [8] * 5
    assert set(swaps[0]) == {(c, "France") for c, _ in SEEDS[1:]} | {("Paris", k) for _, k in SEEDS[1:]}
    # a pool value that would rebuild a seed (case aside) is never used
    assert ("Tokyo", "Japan") not in negatives([("Tokyo", "France"), *SEEDS[1:]], {1: ["japan"]}, per_seed=50,
                                               seed=0)[0]


def test_fit_critic_separates_two_gaussian_clouds_deterministically():
    g = torch.Generator().manual_seed(0)
    shift = torch.zeros(20)
    shift[:3] = 2.0
    pos, neg = torch.randn(60, 20, generator=g) + shift, torch.randn(200, 20, generator=g) - shift
    critic = fit_critic(pos, neg)
    g2 = torch.Generator().manual_seed(1)
    test_pos, test_neg = torch.randn(500, 20, generator=g2) + shift, torch.randn(500, 20, generator=g2) - shift
    acc = torch.cat([critic.logit(test_pos) > 0, critic.logit(test_neg) <= 0]).float().mean()
    assert acc > 0.95
    again = fit_critic(pos, neg)
    assert torch.equal(critic.logit(test_pos), again.logit(test_pos))
    z = critic.standardised(torch.cat([pos, neg]))
    assert abs(float(z.std(unbiased=False)) - 1) < 1e-4


def _synthetic(signal: float, base_signal: float, generator_seed: int, *, seeds: int = 5, per_seed: int = 8):
    """Seeds and their negatives: feature 0 carries the label by ``signal``, the base score by
    ``base_signal``; the other 15 features are noise."""
    g = torch.Generator().manual_seed(generator_seed)
    pos = torch.randn(seeds, 16, generator=g)
    pos[:, 0] += signal
    negs = [torch.randn(per_seed, 16, generator=g) for _ in range(seeds)]
    for x in negs:
        x[:, 0] -= signal
    pos_base = torch.randn(seeds, generator=g) + base_signal
    neg_base = [torch.randn(per_seed, generator=g) for _ in range(seeds)]
    return {"pos_feats": pos, "neg_feats": negs, "pos_base": pos_base, "neg_base": neg_base}


@pytest.mark.parametrize("generator_seed", range(5))
def test_loo_weight_is_zero_for_noise_features_and_positive_for_informative_ones(generator_seed):
    weight, table = loo_weight(**_synthetic(0.0, 1.0, generator_seed))
    assert weight == 0
    assert [row["weight"] for row in table] == [0, 0.25, 0.5, 1, 2, 4, "base", "critic"]
    assert table[0]["mrr"] == table[-2]["mrr"]  # w = 0 is the base score alone
    weight, table = loo_weight(**_synthetic(3.0, 0.0, generator_seed))
    assert weight > 0
    mrr = {row["weight"]: row["mrr"] for row in table}
    assert mrr[weight] > mrr["base"] and mrr["critic"] > 0.8
    json.dumps(table)


def test_loo_weight_with_min_t_zero_takes_the_best_weight_smallest_first():
    for generator_seed in range(5):
        weight, table = loo_weight(**_synthetic(0.0, 0.5, generator_seed), min_t=0.0)
        rows = [r for r in table if isinstance(r["weight"], float)]
        best = max(r["mrr"] for r in rows)
        assert weight == min(r["weight"] for r in rows if r["mrr"] == best)


def test_loo_weight_with_a_perfect_base_falls_back_to_the_prior():
    data = _synthetic(3.0, 0.0, 0)
    data["pos_base"] = torch.full((5,), 100.0)  # every seed first whatever the weight: the seeds tell nothing
    weight, table = loo_weight(**data, min_t=0.0)
    assert weight == PRIOR_WEIGHT == 0.25 and seeds_tell_nothing(table)
    assert all(row["mrr"] == 1.0 for row in table if row["weight"] != "critic")
    assert loo_weight(**data, prior=0.0)[0] == 0
    # one seed that some weight moves: the seeds do tell, and leave-one-out decides
    data = _synthetic(3.0, 0.0, 0)
    weight, table = loo_weight(**data)
    assert not seeds_tell_nothing(table) and weight > 0


@pytest.mark.slow
def test_critic_scores_on_smollm2_capitals(smollm2):
    from kgprobe.harvest.backends import CausalBackend
    from kgprobe.harvest.relation import relation_from_options
    from kgprobe.harvest.search import SearchParams

    model, tok = smollm2
    prompt = "<ENT0> is the capital of <ENT1> ."
    template = Template.parse(prompt)
    rel = relation_from_options([prompt], ["|".join(s) for s in SEEDS])
    # prior_correction 0.5 (the default is 1): a base score that misranks one held-out seed, so
    # leave-one-out has something to decide (with 1 every seed is first and the prior applies)
    backend = CausalBackend(model, tok, rel, batch_size=32, min_weight=0.5, search=SearchParams(), search_prompts=1,
                            prior_correction=0.5)
    seed_base = torch.stack([backend.score(template, [s], leave_out=i)[0] for i, s in enumerate(SEEDS)])
    candidates = [("Berlin", "Germany"), ("Berlin", "Peru"), ("Madrid", "Spain"), ("Cairo", "Canada")]
    scores, report = critic_scores(model, tok, template=template, seeds=SEEDS, candidates=candidates,
                                   seed_base=seed_base, base_fn=lambda ts: backend.score(template, ts), pool=POOL)
    json.dumps(report)
    assert report["layer"] == 20 and report["n_pos"] == 5 and report["n_neg"] == 40
    assert report["train_accuracy"] == 1.0  # 576 features, 45 examples
    mrr = {row["weight"]: row["mrr"] for row in report["table"]}
    # What SmolLM2-135M shows with five seeds: its own score ranks 4 of 5 held-out seeds first among
    # their corruptions; the critic alone is about chance (MRR of a random rank among 9: 0.31), and
    # the one seed that some critic weights lift to first is not enough to pass the 2-se gate, so
    # the critic gets weight 0 and adds nothing (the critic, refitted on all seeds, also puts
    # (Berlin, Peru) above (Berlin, Germany) at layer 20: it has not learnt the relation).
    assert mrr["base"] == 0.9 and mrr["critic"] < 0.5
    assert report["weight"] == 0 and torch.equal(scores, torch.zeros(4))
