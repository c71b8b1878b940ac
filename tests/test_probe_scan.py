"""kgprobe.probe.scan: the chunked value-vector scan against a naive full logit lens, the
RMSNorm fold, ScanResult files, concept scores on a hand-checked example, candidates."""
from __future__ import annotations

import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.probe.hooks import all_value_vectors, arch_of, logit_lens
from kgprobe.probe.scan import (
    ScanResult,
    _Projection,
    _rms_fold,
    bare_matmul_seconds,
    concept_scores,
    membership_matrix,
    rank_weights,
    scan_value_vectors,
    top_candidates,
)
from test_probe_hooks import KINDS, make_model


@pytest.fixture(scope="module", params=KINDS)
def model(request):
    return make_model(request.param)


# ------------------------------------------------------------------ scan
@pytest.mark.parametrize("chunk", [7, 48, 64, 1000])
def test_scan_equals_naive_logit_lens(model, chunk):
    arch = arch_of(model)
    scan = scan_value_vectors(model, k=10, chunk=chunk, progress=False)
    rows = arch.n_layers * arch.n_neurons
    assert (scan.n_layers, scan.n_neurons, scan.k, scan.vocab_size) == (arch.n_layers, arch.n_neurons, 10, 100)
    assert scan.top_ids.shape == scan.top_logits.shape == (rows, 10)
    assert scan.top_ids.dtype == torch.int32 and scan.top_logits.dtype == torch.float32
    values, ids = logit_lens(model, all_value_vectors(model), k=10)  # the whole [rows, vocab] at once
    assert torch.equal(scan.top_ids.long(), ids)  # random weights: no ties
    assert torch.allclose(scan.top_logits, values, rtol=1e-5, atol=1e-5)


def test_fold_only_for_rms_norms():
    for kind, folded in [("llama", True), ("gemma2", True), ("gpt2", False), ("olmo", False)]:
        m = make_model(kind)
        arch = arch_of(m)
        assert _Projection(arch, device=torch.device("cpu"), dtype=torch.float32).folded == folded, kind
    llama = make_model("llama")
    g, eps = _rms_fold(llama.model.norm, 32)
    assert torch.allclose(g, llama.model.norm.weight, rtol=1e-5) and eps == llama.model.norm.variance_epsilon
    gemma = make_model("gemma2")  # Gemma's RMSNorm scales by (1 + w)
    g, _ = _rms_fold(gemma.model.norm, 32)
    assert torch.allclose(g, 1 + gemma.model.norm.weight, rtol=1e-5)


def test_scan_bad_inputs(model):
    for kwargs in ({"k": 0}, {"k": -3}, {"k": 101}, {"chunk": 0}, {"k": 2.5}):
        with pytest.raises(KgprobeError) as err:
            scan_value_vectors(model, progress=False, **kwargs)
        assert "\n" not in str(err.value)


def test_bare_matmul_seconds(model):
    assert bare_matmul_seconds(model, chunk=48, repeats=2) > 0


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_scan_result_roundtrip(tmp_path, suffix):
    scan = scan_value_vectors(make_model("gpt2"), k=4, progress=False)
    path = scan.save(tmp_path / f"scan{suffix}")
    back = ScanResult.load(path)
    assert torch.equal(back.top_ids, scan.top_ids) and torch.equal(back.top_logits, scan.top_logits)
    assert (back.n_layers, back.n_neurons, back.k, back.vocab_size) == (2, 128, 4, 100)
    assert [p.name for p in tmp_path.iterdir()] == [f"scan{suffix}"]  # no temp files left
    assert back.row(1, 3) == 131 and back.layer_index(131) == (1, 3)


def test_scan_result_bad_files(tmp_path):
    scan = ScanResult(top_ids=torch.zeros(4, 2, dtype=torch.int32), top_logits=torch.zeros(4, 2), n_layers=2,
                      n_neurons=2, k=2)
    with pytest.raises(KgprobeError, match="end in .pt or .npz"):
        scan.save(tmp_path / "scan.json")
    with pytest.raises(KgprobeError, match="no such scan file"):
        ScanResult.load(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(KgprobeError, match="not a scan file") as err:
        ScanResult.load(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(KgprobeError, match="outside the scan"):
        scan.row(2, 0)


# ------------------------------------------------------------------ concept scores
def small_scan() -> ScanResult:
    """2 layers x 2 neurons, k = 3, vocab 10."""
    ids = torch.tensor([[1, 2, 3], [4, 1, 5], [6, 7, 8], [9, 0, 4]], dtype=torch.int32)
    return ScanResult(top_ids=ids, top_logits=torch.zeros(4, 3), n_layers=2, n_neurons=2, k=3, vocab_size=10)


def test_concept_scores_hand_checked():
    scan = small_scan()
    concepts = [[1, 4], [8], [0, 9, 4], []]
    counts = concept_scores(scan, concepts, weighting="count")
    assert counts.tolist() == [[1, 2, 0, 1], [0, 0, 1, 0], [0, 1, 0, 3], [0, 0, 0, 0]]
    # rank weights 1, 1/2, 1/3 normalised by 11/6: 6/11, 3/11, 2/11
    assert torch.allclose(rank_weights(3), torch.tensor([6 / 11, 3 / 11, 2 / 11]))
    ranked = concept_scores(scan, concepts)
    expect = torch.tensor([[6, 9, 0, 2], [0, 0, 2, 0], [0, 6, 0, 11], [0, 0, 0, 0]]) / 11
    assert ranked.shape == (4, 4)
    assert torch.allclose(ranked, expect)
    member = membership_matrix(concepts, vocab_size=10)
    assert member.dtype == torch.bool and member.sum(1).tolist() == [2, 1, 3, 0]
    assert torch.allclose(concept_scores(scan, member), expect)
    # float membership = token weights; blocks of rows give the same result as one block
    weights = member.float() * torch.linspace(0.1, 1.0, 10)
    assert torch.allclose(concept_scores(scan, weights, weighting="count", max_elements=1),
                          concept_scores(scan, weights, weighting="count"))
    assert torch.allclose(concept_scores(scan, weights, weighting="count")[0], torch.tensor([0.2, 0.7, 0.0, 0.5]))


def test_concept_scores_bad_inputs():
    scan = small_scan()
    with pytest.raises(KgprobeError, match="outside the vocabulary"):
        concept_scores(scan, [[1, 10]])
    with pytest.raises(KgprobeError, match="outside the vocabulary"):
        concept_scores(scan, [[-1]])
    with pytest.raises(KgprobeError, match="weighting"):
        concept_scores(scan, [[1]], weighting="tfidf")
    with pytest.raises(KgprobeError, match="membership matrix"):
        concept_scores(scan, torch.zeros(2, 5, dtype=torch.bool))


def test_top_candidates():
    scan = small_scan()
    scores = concept_scores(scan, [[1, 4], [8], [3, 5], [7]], weighting="count")
    got = top_candidates(scores, per_concept=3)
    # concept 0: counts [1, 2, 0, 1] -> row 1 (layer 0, index 1), then rows 0 and 3 tied: lower row first
    assert got[0] == [(0, 1, 2.0), (0, 0, 1.0), (1, 1, 1.0)]
    assert got[1] == [(1, 0, 1.0)]
    assert got[2] == [(0, 0, 1.0), (0, 1, 1.0)]
    assert top_candidates(scores, per_concept=1)[0] == [(0, 1, 2.0)]
    plain = scores.clone()  # a plain tensor has no n_neurons attached
    assert top_candidates(plain, per_concept=1, n_neurons=2)[3] == [(1, 0, 1.0)]
    with pytest.raises(KgprobeError, match="n_neurons"):
        top_candidates(plain, per_concept=1)
    with pytest.raises(KgprobeError, match="per_concept"):
        top_candidates(scores, per_concept=0)


def test_concepts_on_a_real_scan():
    """Planting a concept's token directions into a value vector makes that vector the top candidate."""
    model = make_model("llama")
    arch = arch_of(model)
    concept = [11, 22, 33, 44]
    direction = torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(5)), dim=0)
    with torch.no_grad():
        # the concept tokens share one unembedding direction u; after the norm gain g only
        # vector (1, 5) = u / g writes along u, every other vector is made orthogonal to it
        arch.unembed[concept] = direction + 1e-3 * torch.randn(4, 32, generator=torch.Generator().manual_seed(6))
        g = arch.final_norm.weight
        for layer in range(arch.n_layers):
            w = arch.down_proj(layer).weight  # [d, N]: columns are the vectors
            normed = w * g[:, None]
            w -= (direction[:, None] * (direction @ normed)[None]) / g[:, None]
        arch.down_proj(1).weight[:, 5] = direction / g
    scan = scan_value_vectors(model, k=10, progress=False)
    assert set(scan.top_ids[arch.n_neurons + 5, :4].tolist()) == set(concept)
    best = top_candidates(concept_scores(scan, [concept]), per_concept=1)[0]
    assert best[0][:2] == (1, 5)


@pytest.mark.slow
def test_smollm2_fold_and_first_chunk():
    from kgprobe.models import load_causal_lm

    model, _ = load_causal_lm("smollm2-135m", device="cpu")
    arch = arch_of(model)
    g, _ = _rms_fold(arch.final_norm, arch.d_model)
    assert torch.allclose(g, model.model.norm.weight, rtol=1e-5)
    proj = _Projection(arch, device=torch.device("cpu"), dtype=torch.float32)
    v = all_value_vectors(model)[:64]
    values, ids = proj.topk(v, torch.empty(64, arch.unembed.shape[0]), 20)
    lv, li = logit_lens(model, v, k=20)
    assert (ids == li).float().mean() > 0.99  # ties aside
    assert torch.allclose(values, lv, rtol=1e-4, atol=1e-4)
