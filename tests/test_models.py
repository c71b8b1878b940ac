"""Model registry, device choice, and the real default models (loaded offline from PyPI packages)."""
from __future__ import annotations

import json
import time

import pytest
import torch

from kgprobe.cli import main
from kgprobe.errors import KgprobeError
from kgprobe.models import (
    load_causal_lm,
    load_masked_lm,
    load_sentence_encoder,
    load_text_encoder,
    model_source,
    resolve_device,
)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(KgprobeError, match="bad device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(KgprobeError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_registry_errors():
    with pytest.raises(KgprobeError, match="is a sentence-encoder|is a sentence encoder"):
        model_source("minilm-l6", kind="causal-lm")
    with pytest.raises(KgprobeError, match="no such directory"):
        model_source("./does/not/exist")


def test_unknown_hub_id_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(KgprobeError) as err:
        load_causal_lm("someone/not-a-model-xyz", device="cpu")
    assert "someone/not-a-model-xyz" in str(err.value) and "\n" not in str(err.value)


def test_models_json_lists_defaults_available(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["models", "--json"])
    assert exc.value.code == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name in ("smollm2-135m", "minilm-l6"):
        assert rows[name]["available"] is True
        assert rows[name]["size_bytes"] > 50_000_000


def test_masked_lm_from_local_dir(tmp_path):
    """The masked-LM path on a tiny BERT built from a config and saved like a user's model."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "paris", "is", "the", "capital", "of", "france"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64)
    BertForMaskedLM(cfg).save_pretrained(tmp_path)
    model, tok = load_masked_lm(str(tmp_path), device="cpu")
    batch = tok(["paris is the capital of [MASK]"], return_tensors="pt")
    logits = model(**batch).logits
    assert logits.shape == (1, batch.input_ids.shape[1], len(vocab))


@pytest.mark.slow
def test_real_default_models_load_and_know_a_fact():
    model, tok = load_causal_lm("smollm2-135m", device="cpu")
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    prompt = "Rome is the capital of Italy. Lima is the capital of Peru. Oslo is the capital of"
    batch = tok([prompt], return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert "Norway" in tok.decode(out[0, batch.input_ids.shape[1]:])
    # the dequantized cache makes the second load fast
    start = time.perf_counter()
    load_causal_lm("smollm2-135m", device="cpu")
    assert time.perf_counter() - start < 30

    encoder = load_sentence_encoder("minilm-l6", device="cpu")
    emb = encoder.encode(["a domestic dog", "a puppy", "a tax law"], normalize_embeddings=True)
    assert emb.shape == (3, 384)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2

    bert, btok = load_text_encoder("minilm-l6", device="cpu")
    assert bert.config.hidden_size == 384 and any(p.requires_grad for p in bert.parameters())


def test_prefix_cache_expanded_over_a_batch_equals_the_full_sequences():
    """Causality: the prefix's keys and values, computed once and expanded over a batch, give every
    continuation the logits of ``prefix + continuation`` run in one pass, and are left unchanged."""
    from kgprobe.models.lm import cache_keyword, expand_cache, forward_parameters, prefix_cache
    from tiny_models import smollm2_tokenizer, tiny_gpt2, tiny_llama

    tok = smollm2_tokenizer()
    prefix = tok("Rome is the capital of Italy.\n")["input_ids"]
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in ("Oslo is the capital of", "Lima is the")]
    rows = [r[:4] for r in rows]  # equal lengths: no padding needed
    for model in (tiny_llama(tok), tiny_gpt2(tok)):
        assert cache_keyword(model) in forward_parameters(model)
        with torch.no_grad():
            kv = prefix_cache(model, prefix)
            before = [(k.clone(), v.clone()) for k, v in kv]
            positions = torch.arange(len(prefix), len(prefix) + 4).repeat(2, 1)
            want = model(input_ids=torch.tensor([prefix + r for r in rows]), use_cache=False).logits
            for contiguous in (False, True):
                cache = expand_cache(kv, 2, model.config, contiguous=contiguous)
                got = model(input_ids=torch.tensor(rows), position_ids=positions, use_cache=True,
                            **{cache_keyword(model): cache}).logits
                assert torch.allclose(got, want[:, len(prefix):], atol=1e-4)
        assert all(torch.equal(k, k0) and torch.equal(v, v0) for (k, v), (k0, v0) in zip(kv, before))
        assert kv[0][0].shape[0] == 1 and kv[0][0].shape[-2] == len(prefix)


def test_cache_keyword_without_a_readable_signature():
    from kgprobe.models.lm import cache_keyword, forward_parameters

    class NoSignature:
        forward = None  # inspect.signature raises TypeError

    assert isinstance(forward_parameters(NoSignature()), frozenset)
    assert cache_keyword(NoSignature()) == "past_key_values"
