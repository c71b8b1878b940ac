"""LM re-ranking of retrieved entities (kgprobe.index.rerank, `kgprobe neighbors --rerank`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kgprobe.cli import main
from kgprobe.errors import KgprobeError
from kgprobe.index.rerank import REVERSE_DICTIONARY_PROMPT, combine, label_names, lm_rerank, score_names
from kgprobe.models.lm import CausalLMRunner


@pytest.fixture(scope="module")
def tiny_gpt2():
    """A random 2-layer GPT-2 with GPT-2's byte-level tokenizer built from SmolLM2's vocabulary."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from kgprobe.models import model_source

    tok = AutoTokenizer.from_pretrained(model_source("smollm2-135m"))
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=256,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return GPT2LMHeadModel(cfg).eval(), tok


def _run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_label_names():
    assert label_names("dog, domestic dog, Canis familiaris") == ["dog", "domestic dog", "Canis familiaris"]
    assert label_names("ice_cream,  ice cream") == ["ice cream"]
    assert label_names("Washington, D.C.", separator=None) == ["Washington, D.C."]
    assert label_names(" , ") == [" , ".strip() or "?"]


def _total_logprob(model, tok, prompt: str, continuation: str) -> float:
    """log p(continuation | prompt) from one plain forward pass (no cache, no batching)."""
    pre = tok(prompt)["input_ids"]
    cont = tok(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([pre + cont])).logits[0].float().log_softmax(-1)
    return float(sum(logits[len(pre) - 1 + i, t] for i, t in enumerate(cont)))


def test_scores_are_the_best_names_total_logprob(tiny_gpt2):
    model, tok = tiny_gpt2
    runner = CausalLMRunner(model, tok, batch_size=2)  # several batches
    labels = ["dog, domestic dog", "cat", "carnivore, meat eater", "wolf"]
    query = "a domesticated carnivorous mammal"
    ranked = lm_rerank(query, labels, runner=runner, prior_weight=0.0)
    prompt = REVERSE_DICTIONARY_PROMPT.format(query=query)
    for label, score, name in zip(labels, ranked.scores, ranked.names):
        # the continuation ends with the newline that closes the name
        per_name = {n: _total_logprob(model, tok, prompt, " " + n + "\n") for n in label_names(label)}
        assert score == pytest.approx(max(per_name.values()), abs=1e-3)
        assert name == max(per_name, key=per_name.get)
    order = ranked.order()
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    assert np.all(np.diff(ranked.scores[order]) <= 0)


def test_prior_weight_subtracts_the_empty_definition_score(tiny_gpt2):
    model, tok = tiny_gpt2
    runner = CausalLMRunner(model, tok)
    labels = ["dog", "cat, house cat"]
    query = "a pet"
    ranked = lm_rerank(query, labels, runner=runner, prior_weight=0.5)
    with_query = REVERSE_DICTIONARY_PROMPT.format(query=query)
    empty = REVERSE_DICTIONARY_PROMPT.format(query="")
    assert empty.endswith("Definition: \nWord:")
    for label, score, name, lp, prior in zip(labels, ranked.scores, ranked.names, ranked.logprob, ranked.prior):
        per_name = {n: (_total_logprob(model, tok, with_query, f" {n}\n"), _total_logprob(model, tok, empty, f" {n}\n"))
                    for n in label_names(label)}
        best = max(per_name, key=lambda n: per_name[n][0] - 0.5 * per_name[n][1])
        assert name == best
        assert (lp, prior) == pytest.approx(per_name[best], abs=1e-3)
        assert score == pytest.approx(lp - 0.5 * prior, abs=1e-9)
    # one scoring pass serves every weight
    names = score_names(query, labels, runner=runner)
    for w in (0.0, 0.5, 1.0):
        again = combine(names, w)
        assert np.allclose(again.scores, lm_rerank(query, labels, runner=runner, prior_weight=w).scores, atol=1e-6)
    # the retrieval score is added per candidate, after the best name is chosen
    cosine = np.array([0.9, 0.1])
    fused = combine(names, 0.5, retrieval=cosine, retrieval_weight=8.0)
    assert np.allclose(fused.scores, ranked.scores + 8.0 * cosine, atol=1e-6)
    assert fused.names == ranked.names
    with pytest.raises(KgprobeError, match="2 candidates but 3 retrieval scores"):
        combine(names, 0.5, retrieval=[1.0, 2.0, 3.0], retrieval_weight=1.0)


def test_bad_input(tiny_gpt2):
    model, tok = tiny_gpt2
    runner = CausalLMRunner(model, tok)
    with pytest.raises(KgprobeError, match="no {query} slot"):
        lm_rerank("x", ["a"], runner=runner, prompt="Word:")
    with pytest.raises(KgprobeError, match="query text is empty"):
        lm_rerank("  ", ["a"], runner=runner)
    assert lm_rerank("x", [], runner=runner).scores.shape == (0,)
    assert combine(score_names("x", ["a"], runner=runner), 0.5).scores.shape == (1,)


def test_cli_rerank_needs_a_text_query(tmp_path, capsys, monkeypatch):
    from kgprobe.index import EntityEmbeddings

    monkeypatch.setenv("KGPROBE_HOME", str(tmp_path / "home"))
    EntityEmbeddings(ids=["a", "b"], labels=["A", "B"], vectors=np.eye(2, dtype=np.float32),
                     meta={"model": "minilm-l6", "normalized": True}).save(tmp_path / "e")
    code, _, err = _run(["neighbors", str(tmp_path / "e"), "--entity", "a", "--rerank", "smollm2-135m"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--rerank needs a QUERY text" in err


@pytest.mark.slow
def test_dog_query_reranked_on_wordnet(tmp_path, capsys, monkeypatch):
    """The README's query with the real MiniLM-L6 and SmolLM2-135M on WordNet's carnivores.

    Embedding all 117,659 labels takes minutes, so the index holds a slice that keeps the
    query's hard distractors: every synset under "carnivore" (02075296, dogs, cats, bears, ...)
    and under "domestic animal" (01317541), and every synset whose label says "carnivor",
    "domestic" or "mammal" (453 in all). Embedding alone ranks the literal matches first
    ("carnivorous", "carnivore", "domestic animal"); taxonomy-aware search puts dog and its kin
    (under both "carnivore" and "domestic animal") first; LM re-ranking of the plain hits also
    puts dog in the top 5.
    """
    from kgprobe.kg.datasets import build_dataset
    from kgprobe.kg.formats import save_kg

    monkeypatch.setenv("KGPROBE_HOME", str(tmp_path / "home"))
    wn = build_dataset("wordnet")
    hyp = wn.relation_index("_hypernym")
    t = wn.triples
    keep = {wn.entity_index("02075296"), wn.entity_index("01317541")}
    frontier = set(keep)
    while frontier:  # descendants through _hypernym (child -> parent edges)
        mask = torch.isin(t[:, 2], torch.tensor(sorted(frontier))) & (t[:, 1] == hyp)
        frontier = set(t[mask, 0].tolist()) - keep
        keep |= frontier
    words = ("carnivor", "domestic", "mammal")
    keep |= {i for i, label in enumerate(wn.entity_labels) if any(w in label.lower() for w in words)}
    subset = wn.subgraph(entities=[wn.entity_ids[i] for i in sorted(keep)])
    assert subset.num_entities == len(keep)
    kg_dir = save_kg(subset, tmp_path / "wn_carnivores")
    out_dir = tmp_path / "emb"
    code, out, err = _run(["embed", str(kg_dir), "--out", str(out_dir), "--quiet"], capsys)
    assert code == 0, err
    query = "a domesticated carnivorous mammal"

    code, out, err = _run(["neighbors", str(out_dir), query, "-k", "5", "--json", "--plain"], capsys)
    assert code == 0, err
    plain = json.loads(out)["results"]
    assert "02084071" not in [r["id"] for r in plain]
    assert any("carnivor" in r["label"] for r in plain[:2])

    # taxonomy-aware search (the default: the subset keeps its _hypernym edges): things under
    # both "domestic animal" and "carnivore" first
    code, out, err = _run(["neighbors", str(out_dir), query, "-k", "5", "--json"], capsys)
    assert code == 0, err
    payload = json.loads(out)
    assert payload["search"] == "taxonomy"
    top = payload["results"]
    assert "02084071" in [r["id"] for r in top], [r["label"] for r in top]
    assert all({"01317541", "02075296"} <= set(r["under"]) for r in top), top

    code, out, err = _run(["neighbors", str(out_dir), query, "-k", "5", "--json", "--plain",
                           "--rerank", "smollm2-135m"], capsys)
    assert code == 0, err
    payload = json.loads(out)
    assert payload["rerank"] == {"model": "smollm2-135m", "depth": 200, "prior_weight": 0.0, "cosine_weight": 0.0}
    top = payload["results"]
    assert [r["rank"] for r in top] == [1, 2, 3, 4, 5]
    assert "02084071" in [r["id"] for r in top], [r["label"] for r in top]
    dog = next(r for r in top if r["id"] == "02084071")
    assert dog["name"] == "dog" and dog["retrieval_rank"] > 5
    assert all(a["rerank_score"] >= b["rerank_score"] for a, b in zip(top, top[1:]))
