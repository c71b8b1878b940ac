"""Memory planning (kgprobe.models.memory): batch sizes from free memory, and out-of-memory
answered by halving the batch, in the library and in each place that batches (QA scoring, the
value-vector scan, link-prediction evaluation, the harvest's LM batches and search chunks)."""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.models import memory
from kgprobe.models.memory import OomHalving, halve_on_oom, plan_batch_size, resolve_batch_size

GIB = 1 << 30


# ------------------------------------------------------------------ planning
def test_plan_batch_size_fits_half_of_free_memory(monkeypatch):
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device=None: 1000)
    # (0.5 * 1000 - 100) // 30 = 13: 100 + 13 * 30 = 490 <= 500 < 100 + 14 * 30
    assert plan_batch_size(bytes_per_item=30, fixed_bytes=100) == 13
    assert plan_batch_size(bytes_per_item=30, fixed_bytes=100, fraction=1.0) == 30
    assert plan_batch_size(bytes_per_item=30, fixed_bytes=100, limit=10) == 10   # clamped above
    assert plan_batch_size(bytes_per_item=30, fixed_bytes=100, minimum=20) == 20  # and below
    assert plan_batch_size(bytes_per_item=10_000) == 1                            # nothing fits: the minimum
    assert plan_batch_size(bytes_per_item=30, fixed_bytes=10_000) == 1


def test_free_memory_reads_meminfo_then_falls_back(monkeypatch, tmp_path):
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       8000000 kB\nMemFree:  100 kB\nMemAvailable:   4000000 kB\n")
    monkeypatch.setattr(memory, "MEMINFO", info)
    assert memory.host_available_bytes() == 4_000_000 * 1024
    assert memory.free_memory_bytes("cpu") == int(0.9 * 4_000_000 * 1024)
    monkeypatch.setattr(memory, "MEMINFO", tmp_path / "missing")
    assert memory.host_available_bytes() > 0  # psutil's answer, or the constant
    assert 0 < memory.free_memory_bytes(torch.device("cpu"), safety=0.5) <= memory.host_available_bytes()


def test_resolve_batch_size():
    assert resolve_batch_size("auto") is None and resolve_batch_size(7) == 7
    for bad in (0, -1, True, 2.5, "big"):
        with pytest.raises(KgprobeError, match="positive integer or 'auto'"):
            resolve_batch_size(bad)


def test_estimators_state_their_formula():
    model = torch.nn.Linear(1, 1)  # float32 parameters: b = 4
    model.config = SimpleNamespace(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2)
    kv = 2 * 2 * 2 * 4 * (3 + 5) * 4          # L * 2 * h_kv * (d / h) * (P + T) * b
    acts = 5 * (4 * 16 + 2 * 32) * 4 + 4 * 5 * 8 * 4
    logits = 5 * 100 * (4 + 8)
    assert memory.lm_bytes_per_item(model, tokens=5, cached=3) == kv + acts + logits
    assert memory.lm_bytes_per_item(model, tokens=5, cached=3, logit_positions=1) == kv + acts + 100 * 12
    assert memory.scan_bytes_per_row(100, 2) == 400


# ------------------------------------------------------------------ halving
def _oom_above(limit: int, calls: list[int] | None = None):
    def run(chunk):
        if calls is not None:
            calls.append(len(chunk))
        if len(chunk) > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(chunk)} GiB")
        return [x * x for x in chunk]
    return run


def test_halve_on_oom_gives_the_unhalved_results_and_notes():
    items = list(range(37))
    plain = [y for part in halve_on_oom(_oom_above(100), items, 16) for y in part]
    heard: list[tuple[int, int, str]] = []
    calls: list[int] = []
    halving = OomHalving(16, what="test batch", on_halve=lambda *a: heard.append(a))
    halved = [y for part in halving.run(_oom_above(3, calls), items) for y in part]
    assert halved == plain == [x * x for x in items]
    assert [(n["from"], n["to"]) for n in halving.notes] == [(16, 8), (8, 4), (4, 2)]
    assert [(a, b) for a, b, _ in heard] == [(16, 8), (8, 4), (4, 2)]
    assert halving.notes[0]["what"] == "test batch" and "out of memory" in halving.notes[0]["reason"]
    assert calls[:4] == [16, 8, 4, 2] and set(calls[4:]) <= {1, 2}  # the reduced size is kept
    # ... for later runs too, whatever size they ask for
    calls.clear()
    halving.run(_oom_above(3, calls), items, batch_size=32)
    assert max(calls) == 2 and len(halving.notes) == 3


def test_halving_takes_cpu_allocator_errors_and_tensors():
    def run(chunk: torch.Tensor):
        if len(chunk) > 2:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 123 bytes.")
        return chunk * 2
    x = torch.arange(9)
    assert torch.equal(torch.cat(halve_on_oom(run, x, 8)), x * 2)


def test_other_errors_pass_and_batch_size_one_is_a_one_line_error():
    def broken(chunk):
        raise RuntimeError("shape mismatch")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        halve_on_oom(broken, [1, 2, 3], 2)
    with pytest.raises(KgprobeError, match=r"out of memory even at batch size 1 on cpu \(x\): CUDA out of memory"):
        halve_on_oom(_oom_above(0), [1, 2, 3], 4, device="cpu", what="x")


def test_warn_on_halve_is_one_warning_line(capsys):
    halve_on_oom(_oom_above(1), [1, 2], 2, device="cpu", on_halve=memory.warn_on_halve("QA batch", "cpu"))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kgprobe: warning: out of memory on cpu with a QA batch of 2: "
                                              "going on with 1")


# ------------------------------------------------------------------ applied: tiny models
@pytest.fixture(scope="module")
def tok():
    from tiny_models import smollm2_tokenizer

    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def llama(tok):
    from tiny_models import tiny_llama

    return tiny_llama(tok)


def _forward_ooms_above(model, monkeypatch, rows: int, *, min_width: int = 0):
    """Make ``model``'s forward raise torch.OutOfMemoryError for batches of more than ``rows`` rows
    (of at least ``min_width`` tokens); the signature stays the real one."""
    real = model.forward

    @functools.wraps(real)
    def forward(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[0] > rows and ids.shape[1] >= min_width:
            raise torch.OutOfMemoryError(f"CUDA out of memory (test: {ids.shape[0]} rows)")
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)


@dataclass(frozen=True)
class QA:
    prompt: str
    answer: str


ITEMS = [QA("The capital of France is", "Paris"), QA("Two plus two is", "four"),
         QA("The sky is", "blue"), QA("Water freezes at zero degrees", "Celsius"),
         QA("The largest planet of the solar system is", "Jupiter"), QA("Bees make", "honey"),
         QA("The opposite of hot is", "cold")]


@pytest.mark.parametrize("few_shot", ["", "Q: The capital of Italy is A: Rome\n"])
def test_qa_scoring_halves_a_batch_that_runs_out(llama, tok, monkeypatch, few_shot):
    from kgprobe.probe.qa import score_qa

    plain = score_qa(llama, tok, ITEMS, batch_size=8, few_shot=few_shot)
    assert torch.equal(score_qa(llama, tok, ITEMS, few_shot=few_shot).logprob, plain.logprob)  # auto: room
    _forward_ooms_above(llama, monkeypatch, 2)
    halving = OomHalving(device="cpu", what="QA batch")
    halved = score_qa(llama, tok, ITEMS, batch_size=8, few_shot=few_shot, memory=halving)
    assert torch.allclose(halved.logprob, plain.logprob, atol=1e-5)
    assert torch.equal(halved.correct, plain.correct) and torch.equal(halved.n_tokens, plain.n_tokens)
    assert [(n["from"], n["to"]) for n in halving.notes] == [(7, 3), (3, 1)]


def test_scan_halves_a_chunk_that_runs_out(llama, monkeypatch):
    from kgprobe.probe import scan

    plain = scan.scan_value_vectors(llama, k=5, chunk=64, progress=False)
    auto = scan.scan_value_vectors(llama, k=5, progress=False)
    assert torch.equal(auto.top_ids, plain.top_ids)
    real = scan._Projection.topk

    def topk(self, chunk, out, k):
        if chunk.shape[0] > 20:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return real(self, chunk, out, k)

    monkeypatch.setattr(scan._Projection, "topk", topk)
    halving = OomHalving(device="cpu", what="scan chunk")
    halved = scan.scan_value_vectors(llama, k=5, chunk=64, progress=False, memory=halving)
    assert torch.equal(halved.top_ids, plain.top_ids)
    assert torch.allclose(halved.top_logits, plain.top_logits, atol=1e-6)
    assert [(n["from"], n["to"]) for n in halving.notes] == [(64, 32), (32, 16)]


@pytest.mark.parametrize("block", [None, 40])  # whole candidate rows, or candidates in chunks
def test_linkpred_evaluation_halves_a_query_block_that_runs_out(block):
    from kgprobe.linkpred.evaluator import compute_ranks

    g = torch.Generator().manual_seed(0)
    n_ent, n_rel = 30, 3
    ent, rel = torch.randn(n_ent, 8, generator=g), torch.randn(n_rel, 8, generator=g)
    triples = torch.stack([torch.randint(0, n_ent, (50,), generator=g), torch.randint(0, n_rel, (50,), generator=g),
                           torch.randint(0, n_ent, (50,), generator=g)], 1)
    ent[5] = ent[6]  # some exact ties

    def tails(limit):
        def fn(h, r, blk):
            if len(h) > limit:
                raise torch.OutOfMemoryError("CUDA out of memory (test)")
            return (ent[h] * rel[r]) @ ent[blk].T
        return fn

    def heads(limit):
        def fn(r, t, blk):
            if len(t) > limit:
                raise torch.OutOfMemoryError("CUDA out of memory (test)")
            return (ent[t] * rel[r]) @ ent[blk].T
        return fn

    kw = dict(num_entities=n_ent, num_relations=n_rel, filter_triples=triples[:20], max_block_elements=block)
    plain = compute_ranks(tails(10**6), heads(10**6), triples, **kw)
    halving = OomHalving(device="cpu", what="query block")
    halved = compute_ranks(tails(5), heads(5), triples, memory=halving, **kw)
    for side in ("head", "tail"):
        a, b = plain.side(side), halved.side(side)
        assert torch.equal(a.greater, b.greater) and torch.equal(a.equal, b.equal)
        assert torch.equal(a.num_options, b.num_options)
    assert halving.notes and halving.notes[-1]["to"] <= 5
    assert all(n["what"] == "query block" for n in halving.notes)


def _relation_file(tmp_path):
    data = {
        "name": "capital_of",
        "prompts": ["<ENT0> is the capital of <ENT1> .", "The capital of <ENT1> is <ENT0> ."],
        "seeds": [["Paris", "France"], ["Rome", "Italy"], ["Tokyo", "Japan"], ["Lima", "Peru"]],
        "constraints": {"capitalization": "any", "stopwords": "none"},
    }
    path = tmp_path / "rel.yaml"
    path.write_text(json.dumps(data))
    return path


def test_harvest_halves_lm_batches_and_search_chunks(llama, tok, tmp_path, monkeypatch):
    from kgprobe.harvest.run import HarvestOptions, harvest

    small = {"first_beam": 12, "first_candidates": 6, "branch": 4, "later_beam": 2, "later_candidates": 2,
             "max_entity_tokens": 2, "chunk": 3}
    opts = HarvestOptions(top_k=20, search=small, rescore_chunk=6)
    rel = _relation_file(tmp_path)
    plain = harvest(rel, tmp_path / "plain", options=opts, device="cpu", batch_size=16,
                    echo=lambda s: None, loaded_model=(llama, tok))
    record = json.loads((tmp_path / "plain" / "run.json").read_text())
    assert record["memory"] == {"batch_size": 16, "halvings": []}
    # the search's beam steps (one token per row) always fit; wider batches of more than two rows do not
    _forward_ooms_above(llama, monkeypatch, 2, min_width=2)
    halved = harvest(rel, tmp_path / "halved", options=opts, device="cpu", batch_size=16,
                     echo=lambda s: None, loaded_model=(llama, tok))
    assert [r["entities"] for r in halved] == [r["entities"] for r in plain]
    assert [r["score"] for r in halved] == pytest.approx([r["score"] for r in plain], abs=1e-4)
    notes = json.loads((tmp_path / "halved" / "run.json").read_text())["memory"]["halvings"]
    assert {n["what"] for n in notes} == {"LM forward batch", "search chunk"}
    # the critic (on by default) reads its hidden states through the same halving
    critic = [json.loads((tmp_path / d / "critic.json").read_text()) for d in ("plain", "halved")]
    assert critic[1]["weight"] == critic[0]["weight"]
    assert critic[1]["scores"] == pytest.approx(critic[0]["scores"], abs=1e-4) and len(critic[0]["scores"]) > 0
    # the first: the 8 few-shot prefixes (2 prompts x 4 left-out seeds) of the prompt weighting
    assert (notes[0]["what"], notes[0]["from"]) == ("LM forward batch", 8)
    assert all(n["to"] == n["from"] // 2 for n in notes)
