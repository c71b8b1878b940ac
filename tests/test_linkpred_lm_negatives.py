"""lemon-replaced and lm-proposed negatives (issue #27) and the share of negatives inside the margin."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.linkpred import lm_negatives
from kgprobe.linkpred.lm_negatives import candidate_pools, neighbour_table, relation_templates, select_queries
from kgprobe.linkpred.negative_stats import margin_stats, share_inside_margin
from kgprobe.linkpred.samplers import LemonReplacedSampler, LmProposedSampler, check_sampler_options, get_sampler


def _blobs(n_per=10, centers=4, dim=8, seed=0):
    """Entity ``i`` belongs to blob ``i // n_per``; blobs are orthogonal, so an entity's nearest
    neighbours are the other members of its blob."""
    rng = np.random.default_rng(seed)
    x = np.repeat(3 * np.eye(dim)[:centers], n_per, axis=0) + 0.05 * rng.normal(size=(centers * n_per, dim))
    return torch.tensor(x, dtype=torch.float32), torch.arange(centers).repeat_interleave(n_per)


def _cross_blob_triples(n=40, n_per=10, count=60, seed=0):
    """Triples whose head and tail lie in different blobs (relation 0)."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randint(n, (count,), generator=g)
    t = (h + n_per * torch.randint(1, n // n_per, (count,), generator=g)) % n
    return torch.stack([h, torch.zeros_like(h), t], dim=1)


# ------------------------------------------------------------------ neighbour table and pools
def test_neighbour_table_is_the_exact_cosine_top_k():
    vectors, _ = _blobs()
    unit = torch.nn.functional.normalize(vectors, dim=1)
    allowed = torch.arange(0, 40, 2)
    table = neighbour_table(unit, allowed, 3)
    sims = unit @ unit[allowed].T
    sims[allowed, torch.arange(len(allowed))] = -2  # an entity is not its own neighbour
    expected = allowed[torch.topk(sims, 3, dim=1).indices]
    assert torch.equal(table, expected)
    # more neighbours asked than allowed entities exist: -1 padding after the real ones
    assert torch.equal(neighbour_table(unit, allowed[:2], 3)[0], torch.tensor([2, -1, -1]))


def test_candidate_pools_interleave_answer_neighbours_and_drop_known_answers():
    # query (0, r0, ?) has answers 1 and 2; neighbours: 1 -> [2, 5, 6], 2 -> [7, 5, 1]
    neighbours = torch.full((10, 3), -1)
    neighbours[1] = torch.tensor([2, 5, 6])
    neighbours[2] = torch.tensor([7, 5, 1])
    triples = torch.tensor([[0, 0, 1], [0, 0, 2]])
    keys = select_queries(triples, 10, 1, max_queries=1)  # (0, r0, ?) is shared by both: the most frequent
    assert keys.tolist() == [0]
    from kgprobe.linkpred.filters import FilterIndex

    known = FilterIndex(torch.cat([triples, torch.tensor([[0, 0, 6]])]), num_entities=10, num_relations=1)
    pools = candidate_pools(keys, triples, neighbours, known, 4, 10, 1)
    # rank 0: 2 (known answer: out), 7; rank 1: 5 (once); rank 2: 6 (known: out), 1 (known: out)
    assert pools.tolist() == [[7, 5, -1, -1]]
    assert candidate_pools(keys, triples, neighbours, known, 1, 10, 1).tolist() == [[7]]


def test_relation_templates_wordnet_given_and_fallback():
    given = lm_negatives.check_templates({"capital of": ["{} is the capital of", "the capital of {} is"]})
    found = relation_templates(["_hypernym", "capital"], ["hypernym", "capital of"], given)
    assert found[0] == ("{} is a kind of", "a kind of {} is")
    assert found[1] == ("{} is the capital of", "the capital of {} is")
    assert relation_templates(["r9"], ["born in"])[0] == ("{} born in", "{} is the born in of")


# ------------------------------------------------------------------ lemon-replaced
def test_lemon_replaced_draws_neighbours_of_the_replaced_entity():
    vectors, blob = _blobs()
    triples = _cross_blob_triples()
    sampler = get_sampler("lemon-replaced", num_entities=40, num_relations=1, triples=triples, vectors=vectors, k=5)
    assert isinstance(sampler, LemonReplacedSampler) and sampler.known is not None  # filtered by default
    batch = triples[:32]
    out = sampler.sample_negatives(batch, 4, generator=torch.Generator().manual_seed(1))
    replaced = torch.where(out.corrupt_head, batch[:, 0:1], batch[:, 2:3])
    kept = torch.where(out.corrupt_head, batch[:, 2:3], batch[:, 0:1])
    assert bool(out.mask.all())
    # hard for the entity replaced: from its neighbour list, so from its blob, never the kept entity's
    assert bool((sampler.neighbors[replaced] == out.entities.unsqueeze(-1)).any(-1).all())
    assert torch.equal(blob[out.entities], blob[replaced]) and not bool((blob[out.entities] == blob[kept]).any())
    # each neighbour at most once per row and side (4 negatives, 5 neighbours: no repeats needed)
    for row in range(len(batch)):
        for side in (True, False):
            got = out.entities[row][out.corrupt_head[row] == side].tolist()
            assert len(got) == len(set(got))
    known = {tuple(t) for t in triples.tolist()}
    assert not any(tuple(t) in known for t in out.triples.reshape(-1, 3).tolist())
    # deterministic given the generator
    again = sampler.sample_negatives(batch, 4, generator=torch.Generator().manual_seed(1))
    other = sampler.sample_negatives(batch, 4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(out.triples, again.triples) and not torch.equal(out.triples, other.triples)


def test_lemon_replaced_filters_known_triples_and_fills_with_uniform_draws():
    vectors, blob = _blobs()
    # (0, r0, t) is true for every t of blob 1: a tail corruption of (0, r0, 10) has no surviving neighbour
    triples = torch.tensor([[0, 0, t] for t in range(10, 20)])
    sampler = get_sampler("lemon-replaced", num_entities=40, num_relations=1, triples=triples, vectors=vectors,
                          k=9, side="tail")
    lists, counts = sampler._neighbour_lists(triples[:1], torch.Generator().manual_seed(0))
    assert counts[0].tolist() == [0, 9]  # side 0 replaces the tail: all nine filtered; heads all survive
    out = sampler.sample_negatives(triples[:1].repeat(50, 1), 6, generator=torch.Generator().manual_seed(0))
    assert bool(out.mask.all())
    assert not bool(torch.isin(out.entities, torch.arange(10, 20)).any())  # no known tail comes back
    # unfiltered: the neighbours (known tails) are used
    loose = get_sampler("lemon-replaced", num_entities=40, num_relations=1, triples=triples, vectors=vectors,
                        k=9, side="tail", filtered=False)
    out = loose.sample_negatives(triples[:1], 6, generator=torch.Generator().manual_seed(0))
    assert bool((blob[out.entities] == 1).all())


def test_lemon_replaced_uniform_share():
    vectors, blob = _blobs(n_per=10, centers=8)
    n = len(vectors)
    triples = _cross_blob_triples(n=n, count=200)
    sampler = get_sampler("lemon-replaced", num_entities=n, num_relations=1, triples=triples, vectors=vectors,
                          k=9, uniform_share=0.5, side="tail")
    out = sampler.sample_negatives(triples, 8, generator=torch.Generator().manual_seed(0))
    same = blob[out.entities] == blob[triples[:, 2:3]]
    assert bool(same[:, :4].all())  # the first half: neighbours of the true tail
    assert float(same[:, 4:].float().mean()) < 0.3  # the last half: uniform (1 blob in 8)
    assert sampler.describe()["uniform_share"] == 0.5


def test_option_values_are_checked_without_building():
    for name, options, message in [
        ("lemon-replaced", {"k": 0}, "k must be a positive integer"),
        ("lemon-replaced", {"uniform_share": 1.5}, "uniform_share must be a number from 0 to 1"),
        ("lemon-replaced", {"uniform_share": True}, "uniform_share"),
        ("lm-proposed", {"score": "max"}, "score must be one of: sum, mean"),
        ("lm-proposed", {"top": -1}, "top must be a positive integer"),
        ("lm-proposed", {"max_queries": 0}, "max_queries"),
        ("lm-proposed", {"names": "all"}, "names must be one of"),
        ("lm-proposed", {"templates": {"hypernym": ["{} is a"]}}, "two prompts"),
        ("lm-proposed", {"lm_batch_size": 0}, "lm_batch_size"),
        ("lm-proposed", {"table_cache": "yes"}, "table_cache"),
        ("lm-proposed", {"n_clusters": 3}, "does not take"),
    ]:
        with pytest.raises(KgprobeError, match=message) as err:
            check_sampler_options(name, options)
        assert "\n" not in str(err.value)
    check_sampler_options("lm-proposed", {"k": 16, "top": 8, "score": "mean", "uniform_share": 0.25,
                                          "templates": {"hypernym": ["{} is a", "a {} is"]}})
    assert LmProposedSampler.loads_model({}) == "smollm2-135m"


# ------------------------------------------------------------------ lm-proposed
NAMES = ["dog", "cat", "wolf", "fox", "lion", "tiger", "horse", "cow", "canine", "feline",
         "mammal", "animal", "bird", "fish", "plant", "tree", "rose", "oak", "stone", "metal"]


@pytest.fixture(scope="module")
def tiny_lm():
    from tiny_models import smollm2_tokenizer, tiny_llama

    tokenizer = smollm2_tokenizer()
    return tiny_llama(tokenizer), tokenizer


def _animal_kg():
    triples = torch.tensor([[0, 0, 8], [1, 0, 9], [2, 0, 8], [3, 0, 8], [4, 0, 9], [5, 0, 9], [8, 0, 10],
                            [9, 0, 10], [10, 0, 11], [12, 0, 11], [16, 0, 14], [17, 0, 15], [6, 0, 10]])
    kg = KnowledgeGraph(entity_ids=[f"e{i}" for i in range(20)], relation_ids=["_hypernym"], triples=triples,
                        entity_labels=[f"{n}, {n}s" for n in NAMES], relation_labels=["hypernym"])
    rng = np.random.default_rng(0)
    return kg, torch.tensor(rng.normal(size=(20, 6)), dtype=torch.float32)


def _lm_logprob(model, tokenizer, prompt: str, name: str) -> float:
    """log p(" name" | prompt) from one plain forward pass over the whole text (no cache)."""
    p = tokenizer(prompt)["input_ids"]
    c = tokenizer(" " + name, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([p + c])).logits[0].float().log_softmax(-1)
    return float(sum(logp[len(p) - 1 + i, tok] for i, tok in enumerate(c)))


def test_lm_proposed_negatives_are_the_lm_best_wrong_answers(tiny_lm, tmp_path, monkeypatch):
    kg, vectors = _animal_kg()
    sampler = get_sampler("lm-proposed", kg=kg, vectors=vectors, lm=tiny_lm, k=6, pool_size=6, top=3,
                          cache_dir=tmp_path)
    table = sampler.table
    assert not table.cached and table.path is not None and table.path.is_file()
    known = {tuple(t) for t in kg.triples.tolist()}
    model, tokenizer = tiny_lm
    checked = 0
    for key, proposals in zip(table.keys.tolist(), table.proposals.tolist()):
        direction, anchor, _ = (int(x) for x in lm_negatives.decode_queries(torch.tensor(key), 20, 1))
        pool = candidate_pools(torch.tensor([key]), kg.triples, sampler.neighbors, sampler.known, 6, 20, 1)[0]
        pool = [c for c in pool.tolist() if c >= 0]
        prompt = ("{} is a kind of", "a kind of {} is")[direction].format(NAMES[anchor])
        scores = {c: _lm_logprob(model, tokenizer, prompt, NAMES[c]) for c in pool}
        expected = sorted(pool, key=lambda c: -scores[c])[:3]
        assert [p for p in proposals if p >= 0] == expected
        for c in expected:  # wrong answers only
            assert ((anchor, 0, c) if direction == 0 else (c, 0, anchor)) not in known
        checked += len(expected)
    assert checked > 10
    # the negatives of a covered query are its proposals, best first
    batch = torch.tensor([[0, 0, 8]])
    out = sampler.sample_negatives(batch, 3, generator=torch.Generator().manual_seed(0))
    key = lm_negatives.query_keys(batch, out.corrupt_head[0, :1], 20, 1)
    row = table.proposals[torch.searchsorted(table.keys, key)][0]
    side_entities = [e for e, h in zip(out.entities[0].tolist(), out.corrupt_head[0].tolist())
                     if h == bool(out.corrupt_head[0, 0])]
    assert side_entities == row[:len(side_entities)].tolist()
    # the same settings again: read from the file, the LM is not run
    monkeypatch.setattr(lm_negatives, "score_pools", lambda *a, **k: pytest.fail("the LM ran again"))
    again = get_sampler("lm-proposed", kg=kg, vectors=vectors, lm=tiny_lm, k=6, pool_size=6, top=3,
                        cache_dir=tmp_path)
    assert again.table.cached and torch.equal(again.table.proposals, table.proposals)
    assert again.describe()["table_cached"] is True
    # other settings: another table
    monkeypatch.undo()
    mean = get_sampler("lm-proposed", kg=kg, vectors=vectors, lm=tiny_lm, k=6, pool_size=6, top=3,
                       score="mean", cache_dir=tmp_path)
    assert not mean.table.cached and len(list(tmp_path.glob("lm-proposed-*.pt"))) == 2


def test_lm_proposed_caps_queries_falls_back_and_is_deterministic(tiny_lm):
    kg, vectors = _animal_kg()
    sampler = get_sampler("lm-proposed", kg=kg, vectors=vectors, lm=tiny_lm, k=5, pool_size=5, top=2,
                          max_queries=2, table_cache=False)
    assert len(sampler.table.keys) == 2 and sampler.table.path is None
    # the two most shared queries: (?, hypernym, canine) and (?, hypernym, feline), three triples each
    assert sampler.table.keys.tolist() == sorted(
        lm_negatives.query_keys(torch.tensor([[0, 0, 8], [0, 0, 9]]), torch.tensor(True), 20, 1).tolist())
    batch = kg.triples.repeat(4, 1)
    out = sampler.sample_negatives(batch, 4, generator=torch.Generator().manual_seed(3))
    assert bool(out.mask.all())
    known = {tuple(t) for t in kg.triples.tolist()}
    assert not any(tuple(t) in known for t in out.triples.reshape(-1, 3).tolist())
    # an uncovered tail query falls back to lemon-replaced: neighbours of the true tail
    tails = ~out.corrupt_head
    replaced = torch.where(out.corrupt_head, batch[:, 0:1], batch[:, 2:3])
    from_neighbours = (sampler.neighbors[replaced] == out.entities.unsqueeze(-1)).any(-1)
    assert bool(from_neighbours[tails].float().mean() > 0.5)
    again = sampler.sample_negatives(batch, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out.triples, again.triples)
    with pytest.raises(KgprobeError, match="needs the graph"):
        get_sampler("lm-proposed", num_entities=20, num_relations=1, triples=kg.triples, vectors=vectors,
                    lm=tiny_lm, table_cache=False)


# ------------------------------------------------------------------ the share inside the margin
class _Dot:
    """score(h, r, t) = sum(h * r * t): higher is more plausible."""

    def score(self, h, r, t):
        return (h * r * t).sum(-1)


def test_share_inside_margin_on_a_hand_made_example():
    ent = torch.tensor([[1.0], [2.0], [3.0], [0.0]])
    rel = torch.tensor([[1.0]])
    pos = torch.tensor([[0, 0, 1], [1, 0, 2]])  # scores 2 and 6
    neg = torch.tensor([[[0, 0, 2], [0, 0, 3], [0, 0, 0]],   # 3, 0, 1: inside (s- > 2 - 1): only 3
                        [[1, 0, 0], [1, 0, 3], [1, 0, 1]]])  # 2, 0, 4: inside (s- > 6 - 1): none
    stats = margin_stats(pos, neg, 1.0, entity_vectors=ent, relation_vectors=rel, scorer=_Dot())
    assert stats["share_inside_margin"] == pytest.approx(1 / 6)
    assert stats["mean_gap"] == pytest.approx(((2 - 3) + (2 - 0) + (2 - 1) + (6 - 2) + (6 - 0) + (6 - 4)) / 6)
    assert stats["negatives"] == 6
    # exactly at the margin is outside: s- = 1 = s+ - 1; a margin of 1.5 takes it in
    assert margin_stats(pos, neg, 1.5, entity_vectors=ent, relation_vectors=rel,
                        scorer=_Dot())["share_inside_margin"] == pytest.approx(2 / 6)
    # masked negatives do not count
    mask = torch.tensor([[False, True, True], [True, True, True]])
    assert margin_stats(pos, neg, 1.0, entity_vectors=ent, relation_vectors=rel, scorer=_Dot(),
                        mask=mask)["share_inside_margin"] == 0.0
    assert share_inside_margin(torch.tensor([1.0]), torch.tensor([[0.5, 2.0]]), 0.0) == 0.5


def test_margin_stats_from_a_model_encodes_only_the_triples_entities():
    from kgprobe.linkpred.samplers import Negatives
    from kgprobe.linkpred.scorers import get_scorer

    ent = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [5.0, 5.0]])
    asked = []

    class Model:
        scorer = get_scorer("transe")
        relations = torch.nn.Embedding(1, 2)

        def all_entity_vectors(self, *, entities):
            asked.append(entities.tolist())
            return ent[entities]

    Model.relations.weight.data = torch.tensor([[-1.0, 1.0]])  # e0 + r = e1
    pos = torch.tensor([[0, 0, 1]])
    negs = Negatives(triples=torch.tensor([[[0, 0, 2], [0, 0, 3], [0, 0, 0]]]),
                     mask=torch.tensor([[True, True, False]]), corrupt_head=torch.zeros(1, 3, dtype=torch.bool))
    stats = margin_stats(pos, negs, 1.5, model=Model())
    assert asked == [[0, 1, 2, 3]]  # entity 4 is in no triple: not encoded
    # s+ = 0; s- = -|(0,1)-(1,1)|_1 = -1 (inside: -1 > -1.5), -|(0,1)-(0,0)| = -1 (inside); the third is masked
    assert stats["share_inside_margin"] == 1.0 and stats["negatives"] == 2
    plain = margin_stats(pos, negs, 1.5, entity_vectors=ent, relation_vectors=Model.relations.weight.detach(),
                         scorer=Model.scorer)
    assert plain == stats


def test_built_from_a_split_and_trained_on(tiny_lm):
    """Both samplers come out of ``build_sampler`` (the run's one way) and serve ``train``; the
    trained model then gives the share of their negatives inside the margin."""
    from kgprobe.linkpred.data import SplitData
    from kgprobe.linkpred.encoders import get_encoder
    from kgprobe.linkpred.samplers import build_sampler
    from kgprobe.linkpred.trainer import train

    kg, vectors = _animal_kg()
    split = SplitData(graph=kg, triples={"train": kg.triples[:10], "valid": kg.triples[10:12],
                                         "test": kg.triples[12:]},
                      entities={"train": torch.arange(18), "valid": torch.arange(20), "test": torch.arange(20)})
    for name, options in (("lemon-replaced", {"k": 4, "uniform_share": 0.25}),
                          ("lm-proposed", {"k": 4, "pool_size": 4, "top": 2, "lm": tiny_lm, "table_cache": False})):
        sampler = build_sampler(name, split, {"vectors": vectors, **options})
        assert not bool(torch.isin(sampler.neighbors, torch.tensor([18, 19])).any())  # training entities only
        result = train(encoder=get_encoder("bow", kg=kg, dim=8, seed=0), scorer="transe", loss="margin",
                       sampler=sampler, train_triples=split.triples["train"], num_relations=1, epochs=1,
                       batch_size=5, num_negatives=4, lr=1e-2, device="cpu", progress=False)
        assert result.epochs_run == 1
        negatives = sampler.sample_negatives(split.triples["train"], 4, generator=torch.Generator().manual_seed(0))
        stats = margin_stats(split.triples["train"], negatives, 1.0, model=result.model)
        assert 0.0 <= stats["share_inside_margin"] <= 1.0 and stats["negatives"] == int(negatives.mask.sum())
