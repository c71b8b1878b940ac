"""Link prediction: scorers, losses, the filter index and the filtered rank-based evaluator."""
from __future__ import annotations

import math

import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.linkpred import (
    SCORERS,
    FilterIndex,
    RankBasedEvaluator,
    compute_ranks,
    evaluate,
    evaluate_model,
    get_loss,
    get_scorer,
)
from kgprobe.linkpred import evaluator as evaluator_mod
from kgprobe.linkpred import scorers as scorers_mod

ALL_SCORERS = sorted(SCORERS)


# --------------------------------------------------------------------------- scorers
def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_scorer_hand_values():
    assert get_scorer("transe").score(t(1, 2), t(0.5, -1), t(1, 1)).item() == pytest.approx(-0.5)
    assert get_scorer("transe", p=2).score(t(1, 2), t(3, 0), t(1, 6)).item() == pytest.approx(-5.0)
    assert get_scorer("distmult").score(t(1, 2, 3), t(1, 0, -1), t(2, 5, 1)).item() == pytest.approx(-1.0)
    # (1+2i)(3-i) conj(2+i) = (5+5i)(2-i) = 15+5i
    assert get_scorer("complex").score(t(1, 2), t(3, -1), t(2, 1)).item() == pytest.approx(15.0)
    # [h_H|h_T]=[1|2], [r|r_inv]=[3|4], [t_H|t_T]=[5|6]: (1*3*6 + 5*4*2)/2
    assert get_scorer("simple").score(t(1, 2), t(3, 4), t(5, 6)).item() == pytest.approx(29.0)
    # coordinates h = (1, i), phases (pi/2, 0) -> (i, i); t = (0, 3+i): |i| + |-3| = 4
    h, theta, tail = t(1, 0, 0, 1), t(math.pi / 2, 0), t(0, 3, 0, 1)
    assert get_scorer("rotate").score(h, theta, tail).item() == pytest.approx(-4.0, abs=1e-6)
    assert get_scorer("rotate", p=2).score(h, theta, tail).item() == pytest.approx(-math.sqrt(10), abs=1e-6)


def test_scorer_registry_and_dims():
    with pytest.raises(KgprobeError, match="known: complex, distmult, query-encoder, rotate, simple, transe"):
        get_scorer("transh")
    assert get_scorer("TransE", p=2).p == 2
    assert get_scorer("Dist_Mult").name == "distmult"
    assert get_scorer("rotate").relation_dim(8) == 4
    assert get_scorer("complex").relation_dim(8) == 8
    with pytest.raises(KgprobeError, match="even"):
        get_scorer("complex").relation_dim(7)
    with pytest.raises(KgprobeError, match="p must be"):
        get_scorer("transe", p=3)
    with pytest.raises(KgprobeError, match="does not take margin"):
        get_scorer("distmult", margin=1)


@pytest.mark.parametrize("name,kwargs", [(n, {}) for n in ALL_SCORERS] + [("transe", {"p": 2}),
                                                                            ("rotate", {"p": 2})])
@pytest.mark.parametrize("tiny_block", [False, True])
def test_all_candidates_match_aligned(name, kwargs, tiny_block, monkeypatch):
    if tiny_block:  # force the blocked path of the distance scorers
        monkeypatch.setattr(scorers_mod, "_CPU_BLOCK", 64)
    g = torch.Generator().manual_seed(1)
    scorer = get_scorer(name, **kwargs)
    d = 8
    h, tl = torch.randn(5, d, generator=g), torch.randn(5, d, generator=g)
    r = torch.randn(5, scorer.relation_dim(d), generator=g)
    cand = torch.randn(11, d, generator=g)
    tails = scorer.score_all_tails(h, r, cand)
    heads = scorer.score_all_heads(r, tl, cand)
    assert tails.shape == heads.shape == (5, 11)
    ref_t = scorer.score(h[:, None], r[:, None], cand[None])
    ref_h = scorer.score(cand[None], r[:, None], tl[:, None])
    torch.testing.assert_close(tails, ref_t, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(heads, ref_h, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["transe", "rotate", "distmult"])
def test_all_candidates_gradient(name, monkeypatch):
    monkeypatch.setattr(scorers_mod, "_CPU_BLOCK", 64)
    g = torch.Generator().manual_seed(2)
    scorer = get_scorer(name)
    h = torch.randn(3, 6, generator=g, requires_grad=True)
    r = torch.randn(3, scorer.relation_dim(6), generator=g, requires_grad=True)
    cand = torch.randn(7, 6, generator=g, requires_grad=True)
    scorer.score_all_tails(h, r, cand).sum().backward()
    grads = [x.grad.clone() for x in (h, r, cand)]
    for x in (h, r, cand):
        x.grad = None
    scorer.score(h[:, None], r[:, None], cand[None]).sum().backward()
    for got, x in zip(grads, (h, r, cand)):
        torch.testing.assert_close(got, x.grad, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- losses
def test_losses_hand_values():
    pos = t(1.0, 0.0)
    neg = torch.tensor([[0.5, 2.0], [-2.0, 0.5]])
    # hinge terms 0.5, 2, 0, 1.5
    assert get_loss("margin")(pos, neg).item() == pytest.approx(1.0)
    assert get_loss("margin", margin=0.0)(pos, neg).item() == pytest.approx((0 + 1 + 0 + 0.5) / 4)
    mask = torch.tensor([[True, False], [True, True]])
    assert get_loss("margin")(pos, neg, mask).item() == pytest.approx((0.5 + 0 + 1.5) / 3)
    assert get_loss("nll")(t(0.0), t(0.0)).item() == pytest.approx(2 * math.log(2))
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    want = ((sp(-1.0) + (sp(0.5) + sp(2.0)) / 2) + (sp(0.0) + (sp(-2.0) + sp(0.5)) / 2)) / 2
    assert get_loss("softplus")(pos, neg).item() == pytest.approx(want, rel=1e-6)
    want_masked = ((sp(-1.0) + sp(0.5)) + (sp(0.0) + (sp(-2.0) + sp(0.5)) / 2)) / 2
    assert get_loss("softplus")(pos, neg, mask).item() == pytest.approx(want_masked, rel=1e-6)


def test_self_adversarial_loss():
    logsig = lambda x: -math.log1p(math.exp(-x))  # noqa: E731
    loss = get_loss("adversarial", gamma=0.0)
    assert loss(t(0.0), torch.zeros(1, 2)).item() == pytest.approx(2 * math.log(2))
    gamma, alpha = 0.5, 2.0
    pos, neg = t(0.3), torch.tensor([[1.0, -1.0]])
    w1 = math.exp(alpha * 1.0) / (math.exp(alpha * 1.0) + math.exp(alpha * -1.0))
    want = -logsig(gamma + 0.3) - (w1 * logsig(-gamma - 1.0) + (1 - w1) * logsig(-gamma + 1.0))
    got = get_loss("self_adversarial", gamma=gamma, alpha=alpha)(pos, neg)
    assert got.item() == pytest.approx(want, rel=1e-6)
    plain = get_loss("nssa", gamma=gamma, adversarial=False)(pos, neg).item()
    assert plain == pytest.approx(-logsig(gamma + 0.3) - (logsig(-gamma - 1.0) + logsig(-gamma + 1.0)) / 2, rel=1e-6)
    # the weights are constants: d loss / d neg_k = w_k * sigmoid(gamma + neg_k)
    neg = neg.clone().requires_grad_(True)
    get_loss("adversarial", gamma=gamma, alpha=alpha)(pos, neg).backward()
    sig = torch.sigmoid(gamma + neg.detach())[0]
    torch.testing.assert_close(neg.grad[0], torch.tensor([w1, 1 - w1]) * sig)
    # a row without valid negatives keeps only its positive term
    masked = get_loss("adversarial", gamma=gamma)(pos, neg.detach(), torch.zeros(1, 2, dtype=torch.bool))
    assert masked.item() == pytest.approx(-logsig(gamma + 0.3), rel=1e-6)


def test_infonce_loss():
    pos, neg = t(1.0, 0.0), torch.tensor([[0.0, -1.0], [2.0, 0.0]])
    tau, m = 0.5, 0.2

    def nce(p, ns):
        p = math.exp((p - m) / tau)
        return -math.log(p / (p + sum(math.exp(x / tau) for x in ns)))

    want = (nce(1.0, [0.0, -1.0]) + nce(0.0, [2.0, 0.0])) / 2
    assert get_loss("infonce", tau=tau, margin=m)(pos, neg).item() == pytest.approx(want, rel=1e-6)
    assert get_loss("crossentropy", tau=tau, margin=m)(pos, neg).item() == pytest.approx(want, rel=1e-6)
    # masked negatives leave the softmax; a row without any contributes zero
    mask = torch.tensor([[True, False], [False, False]])
    assert get_loss("softmax", tau=tau, margin=m)(pos, neg, mask).item() == pytest.approx(nce(1.0, [0.0]) / 2, rel=1e-6)
    # the gradient weights each negative by its softmax share: the hardest negative pulls most
    neg = neg.clone().requires_grad_(True)
    get_loss("infonce")(pos, neg).backward()
    assert neg.grad[1, 0] > neg.grad[1, 1] > 0
    torch.testing.assert_close(neg.grad[0] / neg.grad[0].sum(), torch.softmax(torch.tensor([0.0, -1.0]), 0))
    with pytest.raises(KgprobeError, match="tau must be positive"):
        get_loss("infonce", tau=0)


def test_loss_registry_and_shapes():
    with pytest.raises(KgprobeError, match="known: adversarial, infonce, margin, softplus"):
        get_loss("hinge2")
    assert get_loss("margin")(t(1.0, 1.0), t(0.0, 0.0)).item() == pytest.approx(0.0)  # (B,) negatives: K = 1
    with pytest.raises(KgprobeError, match="negatives must be"):
        get_loss("margin")(t(1.0, 1.0), torch.zeros(3, 2))


# --------------------------------------------------------------------------- filter index
def _random_triples(n, n_e, n_r, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(n_e, (n,), generator=g), torch.randint(n_r, (n,), generator=g),
                        torch.randint(n_e, (n,), generator=g)], dim=1)


def test_filter_index_matches_brute_force():
    n_e, n_r = 30, 4
    known = _random_triples(400, n_e, n_r, 0)
    known = torch.cat([known, known[:50]])  # repeated triples
    index = FilterIndex(known, num_entities=n_e, num_relations=n_r)
    tails, heads = {}, {}
    for h, r, tl in set(map(tuple, known.tolist())):
        tails.setdefault((h, r), set()).add(tl)
        heads.setdefault((r, tl), set()).add(h)
    assert index.num_triples == len(set(map(tuple, known.tolist())))
    q = _random_triples(200, n_e, n_r, 1)
    q = torch.cat([q, torch.tensor([[-1, 0, 0], [0, 9, 0], [n_e, 0, 0]])])  # out-of-range queries: no match
    off, val = index.tails(q[:, 0], q[:, 1])
    for i, (h, r, _) in enumerate(q.tolist()):
        assert val[off[i]:off[i + 1]].tolist() == sorted(tails.get((h, r), ()))
    off, val = index.heads(q[:, 1], q[:, 2])
    for i, (_, r, tl) in enumerate(q.tolist()):
        assert val[off[i]:off[i + 1]].tolist() == sorted(heads.get((r, tl), ()))
    known_set = set(map(tuple, known.tolist()))
    assert index.contains(q).tolist() == [tuple(x) in known_set for x in q.tolist()]
    assert index.contains(known).all()
    empty = FilterIndex(torch.zeros((0, 3), dtype=torch.long), num_entities=3, num_relations=2)
    off, val = empty.tails(torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert off.tolist() == [0, 0, 0] and val.numel() == 0
    with pytest.raises(KgprobeError, match="refers to an entity"):
        FilterIndex(torch.tensor([[0, 0, 5]]), num_entities=3)


# --------------------------------------------------------------------------- evaluator
def _reference_ranks(scorer, ent, rel, triples, known, candidates=None, filtered=True):
    """Brute force: the full score matrix from aligned scoring, Python loops over queries."""
    n_e = ent.shape[0]
    cand = set(range(n_e)) if candidates is None else set(candidates)
    known = set(map(tuple, known.tolist())) | set(map(tuple, triples.tolist()))
    out = {"head": [], "tail": []}
    for h, r, tl in triples.tolist():
        for side in ("head", "tail"):
            scores = []
            for e in range(n_e):
                trip = (e, r, tl) if side == "head" else (h, r, e)
                s = scorer.score(ent[trip[0]], rel[r], ent[trip[2]]).item()
                scores.append((e, trip, s))
            target = h if side == "head" else tl
            true = [s for e, _, s in scores if e == target][0]
            others = [s for e, trip, s in scores if e != target and e in cand and not (filtered and trip in known)]
            greater = sum(s > true for s in others)
            equal = sum(s == true for s in others)
            out[side].append((greater + 1, greater + equal + 1, greater + equal / 2 + 1, len(others) + 1))
    return out


def _tied_model(n_e=12, n_r=3, d=4, seed=0):
    """Small integer embeddings (exact arithmetic) with duplicated entities: many exact ties."""
    g = torch.Generator().manual_seed(seed)
    ent = torch.randint(-2, 3, (n_e, d), generator=g).float()
    ent[5] = ent[2]
    ent[7] = ent[2]
    ent[9] = ent[1]
    rel = torch.randint(-1, 2, (n_r, d), generator=g).float()
    return ent, rel


@pytest.mark.parametrize("scorer_name", ["distmult", "transe"])
@pytest.mark.parametrize("block", [None, 200, 7])  # one block / query batches / candidate chunks, 2 passes
@pytest.mark.parametrize("restricted", [False, True])
@pytest.mark.parametrize("dense", [True, False])  # the two filter implementations
def test_evaluator_matches_brute_force(scorer_name, block, restricted, dense, monkeypatch):
    if not dense:
        monkeypatch.setattr(evaluator_mod, "_DENSE_FILTER_ELEMENTS", 0)
    n_e, n_r = 12, 3
    ent, rel = _tied_model(n_e, n_r)
    scorer = get_scorer(scorer_name)
    known = _random_triples(60, n_e, n_r, 3)
    test = _random_triples(25, n_e, n_r, 4)
    candidates = None
    if restricted:
        candidates = [0, 1, 2, 3, 5, 7, 8, 9, 10, 11]
        keep = torch.isin(test[:, 0], torch.tensor(candidates)) & torch.isin(test[:, 2], torch.tensor(candidates))
        test = test[keep]
    metrics, ranks = evaluate_model(ent, rel, scorer, test, filter_triples=known, candidates=candidates,
                                    max_block_elements=block, return_ranks=True)
    ref = _reference_ranks(scorer, ent, rel, test, known, candidates)
    for side in ("head", "tail"):
        got = ranks.side(side)
        want = torch.tensor(ref[side], dtype=torch.float64)
        assert got.optimistic.tolist() == want[:, 0].tolist()
        assert got.pessimistic.tolist() == want[:, 1].tolist()
        assert got.realistic.tolist() == want[:, 2].tolist()
        assert got.num_options.tolist() == want[:, 3].long().tolist()
    assert any(r[1] != r[0] for side in ref.values() for r in side), "the fixture should contain ties"
    both = torch.tensor(ref["head"] + ref["tail"], dtype=torch.float64)
    for i, rank_type in enumerate(("optimistic", "pessimistic", "realistic")):
        rank = both[:, i]
        assert metrics[f"both.{rank_type}.mrr"] == pytest.approx(float((1 / rank).mean()), abs=1e-12)
        assert metrics[f"both.{rank_type}.inverse_harmonic_mean_rank"] == metrics[f"both.{rank_type}.mrr"]
        assert metrics[f"both.{rank_type}.mr"] == pytest.approx(float(rank.mean()), abs=1e-12)
        for k in (1, 3, 5, 10):
            assert metrics[f"both.{rank_type}.hits_at_{k}"] == pytest.approx(float((rank <= k).double().mean()))
        expected = float(((both[:, 3] + 1) / 2).mean())
        assert metrics[f"both.{rank_type}.amri"] == pytest.approx(1 - (float(rank.mean()) - 1) / (expected - 1))


def test_unfiltered_and_prebuilt_index():
    n_e, n_r = 12, 3
    ent, rel = _tied_model(n_e, n_r, seed=1)
    known = _random_triples(60, n_e, n_r, 5)
    test = _random_triples(20, n_e, n_r, 6)
    _, ranks = evaluate_model(ent, rel, "distmult", test, filtered=False, return_ranks=True)
    ref = _reference_ranks(get_scorer("distmult"), ent, rel, test, known, filtered=False)
    assert ranks.tail.realistic.tolist() == [x[2] for x in ref["tail"]]
    assert ranks.head.num_options.tolist() == [n_e] * len(test)
    # a prebuilt index (reused across validation runs) gives the same as building it each time
    index = FilterIndex.from_triples(known, test, num_entities=n_e, num_relations=n_r)
    a = evaluate_model(ent, rel, "distmult", test, filter_index=index)
    b = evaluate_model(ent, rel, "distmult", test, filter_triples=[known])
    assert a == b
    # an index without the test triples: they are added, as with filter_triples
    only_known = FilterIndex(known, num_entities=n_e, num_relations=n_r)
    assert evaluate_model(ent, rel, "distmult", test, filter_index=only_known) == b
    assert sorted(map(tuple, only_known.known_triples().tolist())) == sorted(set(map(tuple, known.tolist())))
    ev = RankBasedEvaluator(max_block_elements=30)
    assert ev.evaluate_model(ent, rel, "distmult", test, filter_triples=known) == b
    assert RankBasedEvaluator(batch_size=3).evaluate_model(ent, rel, "distmult", test, filter_triples=known) == b


def test_generic_evaluate_with_score_functions():
    """``evaluate`` with plain functions over a fixed score table, candidates restricted."""
    n_e, n_r = 6, 2
    g = torch.Generator().manual_seed(7)
    table = torch.randint(0, 4, (n_e, n_r, n_e), generator=g).float()  # table[h, r, t]
    test = torch.tensor([[0, 0, 1], [2, 1, 3], [4, 0, 4]])
    known = torch.tensor([[0, 0, 2], [2, 1, 5]])
    cand = torch.tensor([0, 1, 2, 3, 4])

    def tails(h, r, blk):
        return table[h, r][:, cand[blk]]

    def heads(r, tl, blk):
        return table[:, r, tl].T[:, cand[blk]]

    metrics = evaluate(tails, heads, test, num_entities=n_e, filter_triples=known, candidates=cand,
                       max_block_elements=4)
    ranks = compute_ranks(tails, heads, test, num_entities=n_e, filter_triples=known, candidates=cand)
    # tail of (0, 0, 1): candidates 0, 3, 4 compete (2 is known, 5 is not a candidate)
    row = table[0, 0]
    true = row[1]
    others = row[[0, 3, 4]]
    assert int(ranks.tail.greater[0]) == int((others > true).sum())
    assert int(ranks.tail.equal[0]) == int((others == true).sum())
    assert int(ranks.tail.num_options[0]) == 4
    assert metrics["tail.realistic.mrr"] == pytest.approx(float((1 / ranks.tail.realistic).mean()))


def test_evaluator_input_errors():
    ent, rel = torch.randn(5, 4), torch.randn(2, 4)
    test = torch.tensor([[0, 0, 4]])
    with pytest.raises(KgprobeError, match="outside the candidate set"):
        evaluate_model(ent, rel, "distmult", test, candidates=[0, 1, 2])
    with pytest.raises(KgprobeError, match="relation vectors must have 2"):
        evaluate_model(ent, rel, "rotate", test)
    with pytest.raises(KgprobeError, match="outside"):
        evaluate_model(ent, rel, "distmult", torch.tensor([[0, 0, 9]]))
    with pytest.raises(KgprobeError, match="no evaluation triples"):
        evaluate_model(ent, rel, "distmult", torch.zeros((0, 3), dtype=torch.long))
    with pytest.raises(KgprobeError, match="candidate mask"):
        evaluate_model(ent, rel, "distmult", test, candidates=torch.ones(3, dtype=torch.bool))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_evaluator_on_cuda_matches_cpu():
    ent, rel = _tied_model(40, 3, d=8, seed=2)
    known = _random_triples(200, 40, 3, 8)
    test = _random_triples(50, 40, 3, 9)
    for name in ALL_SCORERS:
        scorer = get_scorer(name)
        r = rel if scorer.relation_dim(8) == 8 else rel[:, :4]
        cpu = evaluate_model(ent, r, name, test, filter_triples=known, device="cpu")
        gpu = evaluate_model(ent, r, name, test, filter_triples=known, device="cuda")
        for key in ("both.realistic.mrr", "both.realistic.hits_at_10"):
            assert gpu[key] == pytest.approx(cpu[key], abs=1e-6)


# --------------------------------------------------------------------------- PyKEEN agreement
def test_matches_pykeen_on_nations():
    pytest.importorskip("pykeen")
    from pykeen.evaluation import RankBasedEvaluator as PykeenEvaluator
    from pykeen.models import DistMult, TransE
    from pykeen.triples import TriplesFactory

    from kgprobe.kg.datasets.pykeen_tsv import load_splits

    splits = load_splits("nations")
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    factory = TriplesFactory(mapped_triples=train.triples,
                             entity_to_id={e: i for i, e in enumerate(train.entity_ids)},
                             relation_to_id={r: i for i, r in enumerate(train.relation_ids)})
    g = torch.Generator().manual_seed(0)
    ent = torch.randn(train.num_entities, 16, generator=g)
    rel = torch.randn(train.num_relations, 16, generator=g)
    models = {
        "distmult": DistMult(triples_factory=factory, embedding_dim=16, entity_constrainer=None, regularizer=None),
        "transe": TransE(triples_factory=factory, embedding_dim=16, scoring_fct_norm=1, entity_constrainer=None),
    }
    for name, model in models.items():
        with torch.no_grad():
            model.entity_representations[0]._embeddings.weight.copy_(ent)
            model.relation_representations[0]._embeddings.weight.copy_(rel)
        ref = PykeenEvaluator(filtered=True).evaluate(
            model, test.triples, additional_filter_triples=[train.triples, valid.triples],
            batch_size=256, use_tqdm=False).to_flat_dict()
        ours = evaluate_model(ent, rel, name, test, filter_triples=[train, valid])
        shared = [k for k in ref if k in ours]
        assert len(shared) >= 60
        for key in shared:
            if key.endswith(("arithmetic_mean_rank", "rank_index")):  # PyKEEN keeps float32 ranks
                assert ours[key] == pytest.approx(ref[key], rel=1e-6), key
            else:
                assert ours[key] == pytest.approx(ref[key], abs=1e-6), key
