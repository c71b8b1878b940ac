"""Small real runs for the `kgprobe serve` tests (tests/test_serve.py, tests/test_browser.py): a
hand-written harvest run, a concept-vector run and a tiny-model harvest, as kgprobe writes them."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from kgprobe.outdir import write_marker

XSS = "<script>alert(1)</script>"
# a 1x1 PNG
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def harvest_files(out: Path, tuples: list[list[str]], *, relation: str = "capital_of") -> Path:
    """A harvest run's files as kgprobe.harvest.run writes them (tuples.jsonl, prompts.json, run.json)."""
    out.mkdir(parents=True)
    write_marker(out, "harvest")
    prompts = ["<ENT0> is the capital of <ENT1> .", "The capital of <ENT1> is <ENT0> ."]
    rows = [{"rank": i + 1, "entities": ents, "score": round(-0.01 * i, 6),
             "prompt_scores": {p: round(-0.01 * i - j, 6) for j, p in enumerate(prompts)}}
            for i, ents in enumerate(tuples)]
    (out / "tuples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (out / "prompts.json").write_text(json.dumps({"relation": relation, "prompts": [
        {"prompt": p, "weight": w, "pos": -1.0, "neg": -5.0} for p, w in zip(prompts, (0.6, 0.4))]}))
    (out / "run.json").write_text(json.dumps({"relation": relation, "model": "hand", "tuples": len(rows),
                                              "candidates": len(rows)}))
    return out


def concepts_run(out: Path) -> Path:
    """A concept-vector run's files (kgprobe.probe.run's names and fields), with a plot."""
    out.mkdir(parents=True)
    write_marker(out, "probe")
    (out / "concepts.jsonl").write_text(json.dumps({"id": "country:france", "name": "France", "kind": "country",
                                                    "qa": [{"prompt": "The capital of France is", "answer": "Paris",
                                                            "source": "t"}]}) + "\n")
    (out / "candidates.jsonl").write_text(json.dumps({"concept": "country:france", "rank": 1, "layer": 1, "index": 48,
                                                      "token_score": 0.3, "effect": 0.1,
                                                      "top_tokens": [" France", " Paris", XSS]}) + "\n")
    test = {"vectors": [[1, 48]], "effect": 0.2, "draws": 64, "exceed": 0, "p": 0.01, "z": 4.0,
            "null_mean": 0.0, "null_std": 0.05, "null": [0.01 * (i % 7 - 3) for i in range(64)]}
    (out / "null.json").write_text(json.dumps({"summary": {"concepts": 1, "tested": 1, "beat_null": 1},
                                               "records": [{"concept": "country:france", "name": "France",
                                                            "tests": {"single": test}}]}))
    (out / "unlearning_report.json").write_text(json.dumps({
        "methods": ["npo"], "summary": {"npo": {"n_concepts": 1, "forget_acc_drop": 0.5}},
        "concepts": {"country:france": {"npo": {"before": {"forget_acc": 1.0}, "after": {"forget_acc": 0.5}}}}}))
    (out / "null.png").write_bytes(PNG)
    (out / "notes.txt").write_text("not served")
    return out


def tiny_harvest(work: Path, out: Path, *, top_k: int = 10) -> list[dict]:
    """A real harvest (kgprobe.harvest.run.harvest, writing tuples.jsonl and kg.ttl) of capital_of by
    a random 2-layer Llama with SmolLM2's tokenizer, saved under ``work``; returns its rows."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from kgprobe.harvest.run import HarvestOptions, harvest
    from kgprobe.models import model_source

    tok = AutoTokenizer.from_pretrained(model_source("smollm2-135m"))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=256, bos_token_id=tok.bos_token_id,
                                         eos_token_id=tok.eos_token_id)).eval()
    (work / "m").mkdir(parents=True)
    model.save_pretrained(work / "m")
    tok.save_pretrained(work / "m")
    rel = work / "rel.yaml"
    rel.write_text(json.dumps({"name": "capital_of", "prompts": ["<ENT0> is the capital of <ENT1> ."],
                               "seeds": [["Paris", "France"], ["Rome", "Italy"], ["Tokyo", "Japan"]],
                               "constraints": {"capitalization": "any", "stopwords": "none"}}))
    small = {"first_beam": 12, "first_candidates": 8, "branch": 4, "later_beam": 2, "later_candidates": 2,
             "max_entity_tokens": 2, "chunk": 4}
    return harvest(rel, out, device="cpu", echo=lambda s: None,
                   options=HarvestOptions(model=str(work / "m"), top_k=top_k, search=small, infer_types=False))
