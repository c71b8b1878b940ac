"""Batched cloze-QA scoring: padding invariance, answer boundary, exact match, gradient path."""
from __future__ import annotations

import math

import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.probe.concepts import QA
from kgprobe.probe.qa import accuracy, answer_logprobs, mean_logprob, score_qa

ITEMS = [
    QA("The capital of France is", "Paris"),
    QA("People in Japan speak", "Japanese"),
    QA("The official currency of the United States of America is the", "US dollar"),
    QA("A", "B"),
    QA("Ouagadougou is the capital city of", "Burkina Faso"),
]


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from kgprobe.models import model_source

    tokenizer = AutoTokenizer.from_pretrained(model_source("smollm2-135m"))
    tokenizer.padding_side = "left"
    return tokenizer


@pytest.fixture(scope="module")
def llama(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def gpt2(tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=len(tok), n_positions=256)).eval()


def manual_scores(model, tok, item: QA, few_shot: str = "") -> tuple[float, bool, int]:
    """One unpadded sequence, log-probs read off the full logits by hand."""
    prompt = tok(few_shot + item.prompt)["input_ids"]
    answer = tok(" " + item.answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    total, correct = 0.0, True
    for j, token in enumerate(answer):
        pos = len(prompt) + j - 1  # the position that predicts answer token j
        total += float(logprobs[pos, token])
        correct &= int(logits[pos].argmax()) == token
    return total, correct, len(answer)


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_padded_batch_equals_single_unpadded_runs(which, request, tok):
    model = request.getfixturevalue(which)
    batched = score_qa(model, tok, ITEMS, batch_size=4)   # two batches, rows of different lengths
    for i, item in enumerate(ITEMS):
        single = score_qa(model, tok, [item])
        total, correct, n = manual_scores(model, tok, item)
        assert batched.logprob[i] == pytest.approx(float(single.logprob[0]), abs=1e-4)
        assert batched.logprob[i] == pytest.approx(total, abs=1e-4)
        assert bool(batched.correct[i]) == correct == bool(single.correct[0])
        assert int(batched.n_tokens[i]) == n
        assert batched.mean_logprob[i] == pytest.approx(total / n, abs=1e-4)


def test_answer_tokens_are_tokenised_apart_from_the_prompt(tok, llama):
    # "Burkina Faso" is two or more tokens; the boundary is the answer's own tokenisation
    scores = score_qa(llama, tok, ITEMS)
    expected = [len(tok(" " + it.answer, add_special_tokens=False)["input_ids"]) for it in ITEMS]
    assert scores.n_tokens.tolist() == expected


@pytest.fixture()
def forced(tok):
    """A tiny Llama whose next-token distribution is the same everywhere: a bias favours " Paris"."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    head = torch.nn.Linear(32, len(tok), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        paris = tok(" Paris", add_special_tokens=False)["input_ids"]
        assert len(paris) == 1
        head.bias[paris[0]] = 10.0
    model.lm_head = head
    return model, paris[0]


def test_correct_flag_is_every_answer_token_at_argmax(forced, tok):
    model, paris = forced
    assert tok(" Paris Paris", add_special_tokens=False)["input_ids"] == [paris, paris]
    items = [QA("The capital of France is", "Paris"), QA("Hello", "Paris Paris"),
             QA("The capital of France is", "Paris is"), QA("x", "London")]
    scores = score_qa(model, tok, items)
    assert scores.correct.tolist() == [True, True, False, False]
    # p(Paris) = e^10 / (e^10 + V - 1) everywhere; every other token has e^0 / (same)
    log_z = math.log(math.exp(10.0) + len(tok) - 1)
    assert scores.logprob[0] == pytest.approx(10.0 - log_z, abs=1e-4)
    assert scores.logprob[1] == pytest.approx(2 * (10.0 - log_z), abs=1e-4)
    n_is = int(scores.n_tokens[2])
    assert scores.logprob[2] == pytest.approx((10.0 - log_z) + (n_is - 1) * (0.0 - log_z), abs=1e-4)
    assert accuracy(scores) == 0.5
    assert mean_logprob(scores) == pytest.approx(float(scores.logprob.mean()))


def test_few_shot_moves_the_context_not_the_answer_boundary(forced, tok, llama):
    model, _ = forced
    shot = "The capital of Texas is Austin.\nThe largest planet is Jupiter.\n"
    plain, primed = score_qa(model, tok, ITEMS), score_qa(model, tok, ITEMS, few_shot=shot)
    # the forced model ignores context, so only a shifted boundary could change a number
    assert torch.allclose(plain.logprob, primed.logprob, atol=1e-5)
    assert torch.equal(plain.n_tokens, primed.n_tokens)
    assert torch.equal(plain.correct, primed.correct)
    primed = score_qa(llama, tok, ITEMS, few_shot=shot, batch_size=3)
    uncached = score_qa(llama, tok, ITEMS, few_shot=shot, batch_size=3, cache_prefix=False)
    for i, item in enumerate(ITEMS):
        assert primed.logprob[i] == pytest.approx(manual_scores(llama, tok, item, shot)[0], abs=1e-4)
    assert torch.allclose(primed.logprob, uncached.logprob, atol=1e-4)
    assert torch.equal(primed.correct, uncached.correct)


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_cached_few_shot_prefix_matches_the_joint_sequence(which, request, tok):
    model = request.getfixturevalue(which)
    shot = "Q: a fact.\nThe capital of Texas is Austin.\n"
    cached = score_qa(model, tok, ITEMS, few_shot=shot, batch_size=2)
    with_grad = answer_logprobs(model, tok, ITEMS, few_shot=shot, batch_size=2)
    for i, item in enumerate(ITEMS):
        total, correct, _ = manual_scores(model, tok, item, shot)
        assert cached.logprob[i] == pytest.approx(total, abs=1e-4)
        assert bool(cached.correct[i]) == correct
    assert torch.allclose(with_grad.detach(), cached.logprob, atol=1e-4)


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_shared_prefix_cache_equals_no_cache_scores_and_gradients(which, request, tok):
    """The few-shot key/value cache (kgprobe.models.lm) gives the numbers, and the gradients, of
    running the full prompt in every row with no cache at all."""
    from kgprobe.probe.concepts import FEW_SHOT

    model = request.getfixturevalue(which)
    cached = score_qa(model, tok, ITEMS, few_shot=FEW_SHOT, batch_size=2)
    full = score_qa(model, tok, ITEMS, few_shot=FEW_SHOT, batch_size=2, cache_prefix=False)
    assert torch.allclose(cached.logprob, full.logprob, atol=1e-4)
    assert torch.equal(cached.correct, full.correct) and torch.equal(cached.n_tokens, full.n_tokens)
    grads = []
    for cache_prefix in (True, False):
        model.zero_grad(set_to_none=True)
        answer_logprobs(model, tok, ITEMS, few_shot=FEW_SHOT, batch_size=2, cache_prefix=cache_prefix).sum().backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    model.zero_grad(set_to_none=True)
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():  # the loss also differentiates through the cached prefix
        assert torch.allclose(grad, grads[1][name], atol=1e-5, rtol=1e-3), name


def test_gradient_path_matches_inference_path(tok, llama):
    scores = score_qa(llama, tok, ITEMS, batch_size=2)
    logprobs = answer_logprobs(llama, tok, ITEMS, batch_size=2)
    assert logprobs.requires_grad
    assert torch.allclose(logprobs.detach(), scores.logprob, atol=1e-5)
    llama.zero_grad()
    (-logprobs.sum()).backward()
    grad = llama.model.layers[0].mlp.down_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    llama.zero_grad(set_to_none=True)


def test_empty_and_bad_inputs(tok, llama):
    empty = score_qa(llama, tok, [])
    assert len(empty) == 0 and accuracy(empty) == 0.0 and mean_logprob(empty) == 0.0
    assert answer_logprobs(llama, tok, []).shape == (0,)
    with pytest.raises(KgprobeError, match="batch_size"):
        score_qa(llama, tok, ITEMS, batch_size=0)


def test_same_items_same_scores_whatever_the_batch_size(tok, llama):
    a = score_qa(llama, tok, ITEMS * 3, batch_size=1)
    b = score_qa(llama, tok, ITEMS * 3, batch_size=7)
    assert torch.allclose(a.logprob, b.logprob, atol=1e-4) and torch.equal(a.correct, b.correct)


@pytest.mark.slow
def test_real_smollm2_padded_equals_unpadded():
    from kgprobe.models import load_causal_lm
    from kgprobe.probe.concepts import FEW_SHOT

    model, tok = load_causal_lm("smollm2-135m", device="cpu")
    items = ITEMS[:3]
    batched = score_qa(model, tok, items, few_shot=FEW_SHOT)
    for i, item in enumerate(items):
        single = score_qa(model, tok, [item], few_shot=FEW_SHOT)
        assert batched.logprob[i] == pytest.approx(float(single.logprob[0]), abs=1e-4)
        assert bool(batched.correct[i]) == bool(single.correct[0])
    assert bool(batched.correct[0])  # SmolLM2 knows the capital of France
