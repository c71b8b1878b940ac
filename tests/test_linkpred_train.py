"""Encoders, negative samplers and the trainer of kgprobe.linkpred (BLP / LEMON style training)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.linkpred.data import batch_slices, head_corruption_probability, load_negatives, num_batches
from kgprobe.linkpred.encoders import BowEncoder, EmbeddingEncoder, TransformerEncoder, get_encoder, sdpa_4d_mask
from kgprobe.linkpred.samplers import SAMPLERS, InBatchSampler, LemonSampler, get_sampler, mutual_share
from kgprobe.linkpred.trainer import BEST_FILE, CHECKPOINT_FILE, METRICS_FILE, TrainConfig, Trainer, train
from trainer_crash import crash_at

TYPES = ("animal", "city", "color", "tool")
PER_TYPE = 12


# --------------------------------------------------------------------------- fixtures
def _tiny_kg() -> KnowledgeGraph:
    """48 entities in 4 typed groups; 3 relations with a learnable pattern; every entity has text."""
    ids, descriptions = [], {}
    for g, kind in enumerate(TYPES):
        for i in range(PER_TYPE):
            e = f"{kind}{i}"
            ids.append(e)
            descriptions[e] = f"a {kind} called item{g * PER_TYPE + i} of group {i % 3}"
    rows = []
    for i in range(PER_TYPE):
        rows.append((f"animal{i}", "likes", f"color{i}"))
        rows.append((f"animal{i}", "likes", f"color{(i + 1) % PER_TYPE}"))
        rows.append((f"tool{i}", "sold_in", f"city{i}"))
        rows.append((f"tool{i}", "sold_in", f"city{(i + 5) % PER_TYPE}"))
        for kind in TYPES:
            rows.append((f"{kind}{i}", "next", f"{kind}{(i + 1) % PER_TYPE}"))
    return KnowledgeGraph.from_labeled_triples(rows, entity_descriptions=descriptions, extra_entities=ids,
                                               name="tiny")


@pytest.fixture(scope="module")
def kg() -> KnowledgeGraph:
    return _tiny_kg()


@pytest.fixture(scope="module")
def split_triples(kg):
    perm = torch.randperm(kg.num_triples, generator=torch.Generator().manual_seed(0))
    n_valid = 10
    return kg.triples[perm[n_valid:]], kg.triples[perm[:n_valid]]


def _tiny_bert(tmp_path, words, **config):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(words))
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab=str(tmp_path / "vocab.txt"))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, **config)
    return BertModel(cfg), tok


def _distmult_evaluate(entity_emb, relation_emb, scorer, triples, *, candidates=None, filter_triples=None):
    """A tiny local stand-in for the evaluator: filtered realistic tail+head MRR, one loop per triple."""
    ranks = []
    known = {tuple(t) for t in (filter_triples.tolist() if filter_triples is not None else [])}
    known |= {tuple(t) for t in triples.tolist()}
    for h, r, t in triples.tolist():
        tails = scorer.score(entity_emb[h][None], relation_emb[r][None], entity_emb)
        heads = scorer.score(entity_emb, relation_emb[r][None], entity_emb[t][None])
        sides = ((tails, t, lambda c, h=h, r=r: (h, r, c)), (heads, h, lambda c, r=r, t=t: (c, r, t)))
        for scores, true, other in sides:
            mask = torch.tensor([c != true and other(c) not in known for c in range(len(entity_emb))])
            s = scores[mask]
            ranks.append(float((s > scores[true]).sum()) + 0.5 * float((s == scores[true]).sum()) + 1)
    ranks = torch.tensor(ranks)
    return {"both.realistic.mrr": float((1 / ranks).mean()),
            "both.realistic.hits_at_10": float((ranks <= 10).float().mean())}


# --------------------------------------------------------------------------- encoders
def test_embedding_and_bow_encoders_shapes_and_encode_all(kg):
    emb = get_encoder("embedding", num_entities=kg.num_entities, dim=16, seed=0)
    bow = get_encoder("bow", kg=kg, dim=16, seed=0)
    assert isinstance(emb, EmbeddingEncoder) and isinstance(bow, BowEncoder)
    idx = torch.tensor([3, 0, 47, 3])
    for enc in (emb, bow):
        out = enc.encode(idx)
        assert out.shape == (4, 16) and enc.dim == 16 and enc.num_entities == kg.num_entities
        assert out.requires_grad
        full = enc.encode_all(batch_size=5)
        assert full.shape == (kg.num_entities, 16) and not full.requires_grad
        per_batch = torch.cat([enc.encode(torch.arange(s, min(s + 7, 48))) for s in range(0, 48, 7)])
        # the same numbers (a matmul over another batch size may round the last bit differently)
        assert torch.allclose(full, per_batch.detach(), rtol=0, atol=1e-6)
        assert torch.allclose(enc.encode_all(3, entities=idx), full[idx], rtol=0, atol=1e-6)
    assert torch.equal(emb.encode_all(5), emb.table.weight.detach())
    # seeded construction is reproducible
    assert torch.equal(get_encoder("bow", kg=kg, dim=16, seed=0).encode_all(), bow.encode_all())


def test_bow_vocabulary_and_empty_text():
    texts = ["red apple", "green apple", "blue sky", ""]
    bow = BowEncoder(texts, dim=4, vocab_entities=[0, 1], seed=1)
    assert set(bow.vocab) == {"red", "green", "apple"}
    vectors = bow.encode_all()
    assert torch.equal(vectors[2], torch.zeros(4)) and torch.equal(vectors[3], torch.zeros(4))
    # the mean over words: "red apple" = W (v_red + v_apple) / 2
    w = bow.words.weight
    expected = bow.proj((w[bow.vocab["red"]] + w[bow.vocab["apple"]]) / 2)
    assert torch.allclose(vectors[0], expected.detach(), atol=1e-6)


def test_trained_encoders_embed_new_entities(tmp_path):
    texts = ["red apple", "green apple", "blue sky"]
    bow = BowEncoder(texts, dim=4, seed=1)
    new = bow.for_texts(["apple red", "purple sky", "unknown words only"])
    assert new.num_entities == 3 and bow.num_entities == 3 and new.words is bow.words
    vectors = new.encode_all()
    assert torch.allclose(vectors[0], bow.encode_all()[0], atol=1e-6)  # same words, same vector
    assert torch.equal(vectors[2], torch.zeros(4))
    bert, tok = _tiny_bert(tmp_path, "red apple green blue sky purple".split())
    enc = get_encoder("transformer", texts=texts, model=bert, tokenizer=tok, dim=8)
    unseen = enc.for_texts(["purple apple", "red apple"])
    assert unseen.transformer is enc.transformer and unseen.input_ids.shape[0] == 2
    assert torch.allclose(unseen.encode_all()[1], enc.encode_all()[0], atol=1e-5)
    assert enc.input_ids.shape[0] == 3  # the original table is untouched
    with pytest.raises(KgprobeError, match="cannot embed new entities"):
        EmbeddingEncoder(3, dim=2).for_texts(["x"])


def test_encoder_registry_errors(kg):
    with pytest.raises(KgprobeError, match="unknown encoder"):
        get_encoder("nope")
    with pytest.raises(KgprobeError, match="does not take"):
        get_encoder("bow", kg=kg, dimension=3)
    with pytest.raises(KgprobeError, match="texts"):
        get_encoder("bow")
    with pytest.raises(KgprobeError, match="text field"):
        get_encoder("bow", kg=kg, text="title")
    enc = get_encoder("embedding", num_entities=3)
    assert get_encoder(enc) is enc


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_transformer_encoder_tiny_bert(tmp_path, pooling):
    texts = ["a small red dog", "dog", "the big blue house by the river near the old mill", "", "red house"]
    words = " ".join(texts).split()
    bert, tok = _tiny_bert(tmp_path, words)
    enc = get_encoder("transformer", texts=texts, model=bert, tokenizer=tok, dim=8, pooling=pooling, max_length=6,
                      seed=0)
    assert isinstance(enc, TransformerEncoder)
    assert enc.proj.bias is None and enc.proj.weight.shape == (8, 32)
    assert enc.input_ids.shape == (5, 6)  # truncated to max_length tokens, [CLS] and [SEP] included
    assert enc.lengths.tolist() == [6, 3, 6, 2, 4]
    out = enc.encode(torch.tensor([0, 1]))
    assert out.shape == (2, 8)
    enc.eval()
    with torch.no_grad():
        alone = enc.encode(torch.tensor([1]))  # trimmed to its own 3 tokens
        padded = enc.encode(torch.tensor([1, 0]))[0]  # padded to 6 tokens: the mask hides the padding
        per_batch = torch.cat([enc.encode(torch.tensor([i])) for i in range(5)])
    assert torch.allclose(alone[0], padded, atol=1e-5)
    full = enc.encode_all(batch_size=2)
    assert torch.allclose(full, per_batch, atol=1e-5)
    # gradients reach the transformer (it is fine-tuned, as in BLP)
    enc.train()
    enc.encode(torch.tensor([0, 2])).sum().backward()
    assert bert.embeddings.word_embeddings.weight.grad is not None
    with pytest.raises(KgprobeError, match="pooling"):
        get_encoder("transformer", texts=texts, model=bert, tokenizer=tok, pooling="max")


def test_sdpa_4d_mask_gives_the_same_hidden_states(tmp_path):
    """On a GPU the encoder hands BERT its padding mask in SDPA's 4-D form (no host-device wait);
    the token vectors must be those of the 2-D mask."""
    texts = ["a small red dog", "dog", "the big blue house by the river near the old mill"]
    bert, tok = _tiny_bert(tmp_path, " ".join(texts).split())
    assert bert.config._attn_implementation == "sdpa"
    enc = tok(texts, padding=True, return_tensors="pt")
    bert.eval()
    with torch.no_grad():
        two_d = bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        four_d = bert(input_ids=enc["input_ids"], attention_mask=sdpa_4d_mask(enc["attention_mask"])).last_hidden_state
    real = enc["attention_mask"].bool()
    assert not bool(real.all())  # padding is present
    assert torch.allclose(two_d[real], four_d[real], atol=1e-6)


def test_transformer_entity_text_choice(tmp_path):
    kg = KnowledgeGraph.from_labeled_triples([("a", "r", "b")], entity_labels={"a": "dog", "b": "house"},
                                             entity_descriptions={"a": "a red dog"})
    bert, tok = _tiny_bert(tmp_path, ["a", "red", "dog", "house"])
    ids = {}
    for text in ("description", "label", "both"):
        enc = get_encoder("transformer", kg=kg, text=text, model=bert, tokenizer=tok, dim=4)
        ids[text] = [tok.decode(row[:n]) for row, n in zip(enc.input_ids.tolist(), enc.lengths.tolist())]
    assert ids["description"] == ["[CLS] a red dog [SEP]", "[CLS] house [SEP]"]  # no description: the label
    assert ids["label"] == ["[CLS] dog [SEP]", "[CLS] house [SEP]"]
    assert ids["both"][0].startswith("[CLS] dog")


# --------------------------------------------------------------------------- samplers
def _check_shape(batch, negs, k):
    assert negs.shape == (len(batch), k, 3)
    assert torch.equal(negs[..., 1], batch[:, 1:2].expand(-1, k))  # the relation is kept
    same_h = negs[..., 0] == batch[:, 0:1]
    same_t = negs[..., 2] == batch[:, 2:3]
    assert bool((same_h | same_t).all())  # one side kept


def test_uniform_sampler_filters_known_and_positive(kg):
    allowed = torch.arange(0, 30)
    sampler = get_sampler("uniform", kg=kg, entities=allowed, filtered=True)
    gen = torch.Generator().manual_seed(0)
    batch = kg.triples[:20]
    # restrict the batch to allowed entities so replacements and kept sides are comparable
    out = sampler.sample_negatives(batch, 50, generator=gen)
    _check_shape(batch, out.triples, 50)
    assert bool(out.mask.all())
    known = {tuple(t) for t in kg.triples.tolist()}
    assert not any(tuple(t) in known for t in out.triples.reshape(-1, 3).tolist())
    replaced = out.entities
    assert bool(torch.isin(replaced, allowed).all())
    # same generator seed, same negatives
    again = sampler.sample(batch, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, out.triples)


def test_filtering_when_most_candidates_are_true():
    # entity 0 is linked by r to every entity but 9: the only true tail negative of (0, r, 1) is 9
    rows = [(0, 0, t) for t in range(1, 9)]
    sampler = get_sampler("uniform", num_entities=10, triples=torch.tensor(rows), side="tail", filtered=True)
    out = sampler.sample_negatives(torch.tensor([[0, 0, 1]]), 40, generator=torch.Generator().manual_seed(3))
    usable = out.triples[out.mask]
    assert len(usable) > 30  # 3 redraw rounds + uniform fallback find entity 0 or 9 nearly always
    assert set(usable[:, 2].tolist()) <= {0, 9}
    # never the positive itself, even unfiltered
    plain = get_sampler("uniform", num_entities=3, num_relations=1, side="tail")
    negs = plain.sample(torch.tensor([[0, 0, 1]] * 50), 20, generator=torch.Generator().manual_seed(0))
    assert not bool((negs[..., 2] == 1).any())


def test_in_batch_sampler_indices_within_batch(kg):
    sampler = get_sampler("in-batch", num_entities=kg.num_entities, num_relations=kg.num_relations)
    assert isinstance(sampler, InBatchSampler)
    batch = kg.triples[torch.randperm(kg.num_triples, generator=torch.Generator().manual_seed(1))[:16]]
    out = sampler.sample_negatives(batch, 64, generator=torch.Generator().manual_seed(0))
    _check_shape(batch, out.triples, 64)
    pos = out.batch_positions
    b = len(batch)
    assert pos.shape == (b, 64) and int(pos.min()) >= 0 and int(pos.max()) < 2 * b
    own = torch.arange(b).unsqueeze(1)
    assert not bool(((pos == own) | (pos == own + b)).any())  # never the triple's own head or tail
    pool = torch.cat([batch[:, 0], batch[:, 2]])
    assert torch.equal(out.entities, pool[pos])
    assert set(out.entities.unique().tolist()) <= set(pool.tolist())  # no entity from outside the batch
    lone = sampler.sample_negatives(batch[:1], 4)
    assert not bool(lone.mask.any())  # a batch of one has no candidates


def test_in_batch_without_replacement_offers_every_other_entity_once():
    b = 16  # 32 distinct entities (a repeated one would be redrawn where it equals the replaced entity)
    batch = torch.tensor([[2 * i, 0, 2 * i + 1] for i in range(b)])
    sampler = get_sampler("in-batch", num_entities=2 * b, num_relations=1, replacement=False)
    assert sampler.describe()["replacement"] is False
    out = sampler.sample_negatives(batch, 2 * b - 2, generator=torch.Generator().manual_seed(0))
    others = [sorted(set(range(2 * b)) - {i, b + i}) for i in range(b)]
    assert [sorted(row) for row in out.batch_positions.tolist()] == others  # each exactly once
    assert bool(out.mask.all())
    # more draws than positions: cycled, every position twice; fewer: no position twice
    twice = sampler.sample_negatives(batch, 2 * (2 * b - 2), generator=torch.Generator().manual_seed(0))
    assert [sorted(row) for row in twice.batch_positions.tolist()] == [sorted(o * 2) for o in others]
    few = sampler.sample_negatives(batch, 5, generator=torch.Generator().manual_seed(0)).batch_positions
    assert all(len(set(row)) == 5 for row in few.tolist())
    # with replacement (BLP's draw) that many draws repeat some positions and miss others
    plain = get_sampler("in-batch", num_entities=2 * b, num_relations=1)
    drawn = plain.sample_negatives(batch, 2 * b - 2, generator=torch.Generator().manual_seed(0)).batch_positions
    assert any(len(set(row)) < 2 * b - 2 for row in drawn.tolist())
    with pytest.raises(KgprobeError, match="replacement must be true or false"):
        get_sampler("in-batch", num_entities=3, replacement="no")


def test_in_batch_self_negatives_are_the_kept_entity(kg):
    sampler = get_sampler("in-batch", num_entities=kg.num_entities, num_relations=kg.num_relations,
                          self_negatives=2)
    assert sampler.describe()["self_negatives"] == 2
    batch = kg.triples[torch.randperm(kg.num_triples, generator=torch.Generator().manual_seed(1))[:16]]
    batch = batch[batch[:, 0] != batch[:, 2]]
    out = sampler.sample_negatives(batch, 8, generator=torch.Generator().manual_seed(0))
    kept = torch.where(out.corrupt_head, batch[:, 2:3], batch[:, 0:1])
    first, rest = out.triples[:, :2], out.triples[:, 2:]
    assert torch.equal(first[..., 0], first[..., 2]) and torch.equal(out.entities[:, :2], kept[:, :2])
    assert torch.equal(first[..., 1], batch[:, 1:2].expand(-1, 2)) and bool(out.mask[:, :2].all())
    b = len(batch)
    own = torch.arange(b).unsqueeze(1)
    assert not bool(((out.batch_positions[:, 2:] == own) | (out.batch_positions[:, 2:] == own + b)).any())
    assert not bool((rest[..., 0] == rest[..., 2]).all())
    # a self-loop that is a known triple is not a negative
    loop = torch.tensor([[0, 0, 0], [1, 0, 2], [2, 0, 1]])
    filtered = get_sampler("in-batch", num_entities=3, num_relations=1, triples=loop, filtered=True,
                           self_negatives=1, side="tail")
    negs = filtered.sample_negatives(torch.tensor([[0, 0, 1], [1, 0, 2]]), 1)
    assert negs.triples[:, 0].tolist() == [[0, 0, 0], [1, 0, 1]] and negs.mask[:, 0].tolist() == [False, True]
    for bad in (-1, 1.5, True):
        with pytest.raises(KgprobeError, match="self_negatives must be a non-negative integer"):
            get_sampler("in-batch", num_entities=3, self_negatives=bad)


def test_mutual_share_per_relation():
    # r0 symmetric (both directions), r1 one-way, r2 half mutual, r3 without triples
    triples = torch.tensor([[0, 0, 1], [1, 0, 0], [0, 1, 1], [1, 1, 2],
                            [2, 2, 3], [3, 2, 2], [0, 2, 3], [1, 2, 0]])
    share = mutual_share(triples, 4)
    assert share.tolist() == [1.0, 0.0, 0.5, 0.0]


def test_in_batch_self_negatives_only_for_asymmetric_relations():
    # relation 0 symmetric, relation 1 one-way: only relation 1's triples get (h, r, h) / (t, r, t)
    sym = torch.tensor([[i, 0, i + 1] for i in range(0, 20, 2)] + [[i + 1, 0, i] for i in range(0, 20, 2)])
    one_way = torch.tensor([[i, 1, i + 20] for i in range(20)])
    triples = torch.cat([sym, one_way])
    sampler = get_sampler("in-batch", num_entities=40, num_relations=2, triples=triples, self_negatives=1,
                          self_relations="asymmetric")
    assert sampler.self_allowed.tolist() == [False, True]
    assert sampler.describe()["relations_without_self_negatives"] == [0]
    out = sampler.sample_negatives(triples, 4, generator=torch.Generator().manual_seed(0))
    first = out.triples[:, 0]
    is_self = first[:, 0] == first[:, 2]
    assert torch.equal(is_self, triples[:, 1] == 1)
    assert bool(out.mask.all())
    with pytest.raises(KgprobeError, match="self_relations must be one of: all, asymmetric; got 'sym'"):
        get_sampler("in-batch", num_entities=40, triples=triples, self_relations="sym")
    with pytest.raises(KgprobeError, match="self_relations='asymmetric' needs the training triples"):
        get_sampler("in-batch", num_entities=40, self_negatives=1, self_relations="asymmetric")


def test_bernoulli_probabilities_from_relation_stats():
    # r0: one head, 4 tails (1-to-N): tph = 4, hpt = 1 -> p(head) = 0.8
    # r1: 4 heads, one tail (N-to-1): tph = 1, hpt = 4 -> p(head) = 0.2
    rows = [(0, 0, t) for t in range(1, 5)] + [(h, 1, 9) for h in range(5, 9)]
    triples = torch.tensor(rows)
    prob = head_corruption_probability(triples, 3)
    assert torch.allclose(prob, torch.tensor([0.8, 0.2, 0.5]))
    sampler = get_sampler("bernoulli", num_entities=10, num_relations=3, triples=triples)
    batch = torch.tensor([[0, 0, 1], [5, 1, 9]])
    out = sampler.sample_negatives(batch.repeat(200, 1), 50, generator=torch.Generator().manual_seed(0))
    rate = out.corrupt_head.float().reshape(200, 2, 50).mean(dim=(0, 2))
    assert abs(float(rate[0]) - 0.8) < 0.02 and abs(float(rate[1]) - 0.2) < 0.02
    with pytest.raises(KgprobeError, match="training triples"):
        get_sampler("uniform", num_entities=10, side="bernoulli")


def _blobs(n_per=20, centers=6, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    c = 3 * np.eye(dim)[:centers]  # orthogonal centres: well separated by cosine
    x = np.repeat(c, n_per, axis=0) + 0.05 * rng.normal(size=(centers * n_per, dim))
    return torch.tensor(x, dtype=torch.float32), torch.arange(centers).repeat_interleave(n_per)


def test_lemon_negatives_come_from_nearest_clusters():
    vectors, blob = _blobs()
    n = len(vectors)
    rng = torch.Generator().manual_seed(0)
    triples = torch.stack([torch.randint(n, (300,), generator=rng), torch.randint(2, (300,), generator=rng),
                           torch.randint(n, (300,), generator=rng)], 1)
    sampler = get_sampler("lemon", num_entities=n, num_relations=2, triples=triples, vectors=vectors,
                          n_clusters=6, n_nearest=1, filtered=False)
    assert isinstance(sampler, LemonSampler) and sampler.known is None
    # one nearest cluster: the kept entity's own cluster (k-means may split a blob, so compare clusters)
    out = sampler.sample_negatives(triples[:64], 16, generator=torch.Generator().manual_seed(1))
    kept = torch.where(out.corrupt_head, triples[:64, 2:3], triples[:64, 0:1])
    assert bool(out.mask.all())
    assert torch.equal(sampler.nearest[:, 0], sampler.assignments)
    assert torch.equal(sampler.assignments[out.entities], sampler.assignments[kept])
    # clusters follow the blobs: most entities share a cluster only with their own blob
    same_cluster = sampler.assignments.unsqueeze(0) == sampler.assignments.unsqueeze(1)
    same_blob = blob.unsqueeze(0) == blob.unsqueeze(1)
    assert float((same_cluster & ~same_blob).float().mean()) < 0.1

    near3 = get_sampler("lemon", num_entities=n, num_relations=2, triples=triples, vectors=vectors,
                        n_clusters=6, n_nearest=3)
    assert near3.known is not None  # LEMON filters known triples by default
    out = near3.sample_negatives(triples, 32, generator=torch.Generator().manual_seed(2))
    kept = torch.where(out.corrupt_head, triples[:, 2:3], triples[:, 0:1])
    cluster = near3.assignments[out.entities]
    hit = (near3.nearest[kept] == cluster.unsqueeze(-1)).any(dim=-1)
    assert bool(hit[out.mask].all())
    known = {tuple(t) for t in triples.tolist()}
    assert not any(tuple(t) in known for t in out.triples[out.mask].tolist())
    # the CSR pool of an entity is the union of its nearest clusters' members
    for e in (0, 57, 119):
        members = torch.isin(near3.assignments, near3.nearest[e]).nonzero().reshape(-1)
        assert torch.equal(near3.candidate_pool(e), members)


def test_lemon_allowed_entities_threshold_and_fallback():
    vectors, _ = _blobs()
    n = len(vectors)
    triples = torch.tensor([[0, 0, 1], [30, 0, 61], [100, 0, 5]])
    allowed = torch.arange(0, n, 2)
    sampler = get_sampler("lemon", num_entities=n, num_relations=1, triples=triples, vectors=vectors,
                          entities=allowed, n_clusters=6, n_nearest=2)
    out = sampler.sample(triples.repeat(20, 1), 8, generator=torch.Generator().manual_seed(0))
    replaced = torch.where(out[..., 0] != triples.repeat(20, 1)[:, 0:1], out[..., 0], out[..., 2])
    assert bool(torch.isin(replaced, allowed).all())
    assert int((sampler.assignments >= 0).sum()) == len(allowed)
    # a threshold no cluster reaches: every pool is empty and sampling falls back to uniform
    strict = get_sampler("lemon", num_entities=n, num_relations=1, triples=triples, vectors=vectors,
                         n_clusters=6, threshold=1.01)
    assert int(strict.pool_ptr[-1]) == 0
    neg = strict.sample_negatives(triples, 10, generator=torch.Generator().manual_seed(0))
    assert bool(neg.mask.all())
    with pytest.raises(KgprobeError, match="clusters"):
        get_sampler("lemon", num_entities=n, vectors=vectors, entities=torch.arange(4), n_clusters=6)
    with pytest.raises(KgprobeError, match="shape"):
        get_sampler("lemon", num_entities=n + 1, vectors=vectors)


def test_knn_hard_sampler_neighbors():
    vectors, _ = _blobs(n_per=10, centers=4)
    n = len(vectors)
    sampler = get_sampler("knn-hard", num_entities=n, num_relations=1, vectors=vectors, k=5)
    unit = torch.nn.functional.normalize(vectors, dim=1)
    sims = unit @ unit.T
    sims.fill_diagonal_(-2)
    expected = torch.topk(sims, 5, dim=1).indices
    assert sampler.neighbors.shape == (n, 5)
    assert not bool((sampler.neighbors == torch.arange(n).unsqueeze(1)).any())
    assert torch.equal(torch.sort(sampler.neighbors, dim=1).values, torch.sort(expected, dim=1).values)
    batch = torch.tensor([[0, 0, 11], [25, 0, 3]])
    out = sampler.sample_negatives(batch, 20, generator=torch.Generator().manual_seed(0))
    kept = torch.where(out.corrupt_head, batch[:, 2:3], batch[:, 0:1])
    assert bool((sampler.neighbors[kept] == out.entities.unsqueeze(-1)).any(dim=-1).all())


def test_given_negatives_tensor_and_files(tmp_path):
    train_t = torch.tensor([[0, 0, 1], [1, 0, 2], [2, 0, 3]])
    negs = torch.tensor([[[0, 0, 5], [6, 0, 1]], [[1, 0, 7], [8, 0, 2]], [[2, 0, 9], [4, 0, 3]]])
    sampler = get_sampler("given", num_entities=10, triples=train_t, negatives=negs)
    out = sampler.sample_negatives(train_t[[2, 0]], 2)
    assert torch.equal(out.triples, negs[[2, 0]]) and bool(out.mask.all())
    fewer = sampler.sample(train_t, 1, generator=torch.Generator().manual_seed(0))
    assert all(any(torch.equal(fewer[i, 0], negs[i, j]) for j in range(2)) for i in range(3))
    # an unknown positive gets uniform negatives
    other = sampler.sample_negatives(torch.tensor([[5, 0, 6]]), 3, generator=torch.Generator().manual_seed(0))
    assert other.triples.shape == (1, 3, 3) and bool(other.mask.all())
    # files: torch, numpy and text
    torch.save({"positives": train_t, "negatives": negs}, tmp_path / "n.pt")
    np.save(tmp_path / "n.npy", negs.numpy())
    lines = [" ".join(map(str, p.tolist() + n.reshape(-1).tolist())) for p, n in zip(train_t, negs)]
    (tmp_path / "n.tsv").write_text("\n".join(lines) + "\n")
    for name in ("n.pt", "n.npy", "n.tsv"):
        s = get_sampler("given", num_entities=10, triples=train_t, negatives=tmp_path / name)
        assert torch.equal(s.sample(train_t, 2), negs)
    positives, table = load_negatives(tmp_path / "n.tsv")
    assert torch.equal(positives, train_t) and torch.equal(table, negs)
    with pytest.raises(KgprobeError, match="shape"):
        load_negatives(torch.zeros(3, 3))
    with pytest.raises(KgprobeError, match="no such"):
        load_negatives(tmp_path / "missing.pt")
    with pytest.raises(KgprobeError, match="align"):
        get_sampler("given", num_entities=10, triples=train_t[:2], negatives=negs)


def test_sampler_registry_errors(kg):
    assert set(SAMPLERS) == {"in-batch", "uniform", "bernoulli", "lemon", "knn-hard", "given", "lemon-replaced",
                            "lm-proposed"}
    with pytest.raises(KgprobeError, match="unknown negative sampler"):
        get_sampler("random")
    with pytest.raises(KgprobeError, match="does not take"):
        get_sampler("uniform", kg=kg, n_clusters=3)
    with pytest.raises(KgprobeError, match="side"):
        get_sampler("uniform", kg=kg, side="left")
    with pytest.raises(KgprobeError, match="out of range"):
        get_sampler("uniform", kg=kg).sample(torch.tensor([[0, 0, 999]]), 2)


def test_batches_cover_everything_once():
    gen = torch.Generator().manual_seed(0)
    parts = list(batch_slices(10, 4, generator=gen))
    assert [len(p) for p in parts] == [4, 4, 2] and sorted(torch.cat(parts).tolist()) == list(range(10))
    assert num_batches(10, 4) == 3 and num_batches(10, 4, drop_last=True) == 2
    assert [len(p) for p in batch_slices(10, 4, drop_last=True)] == [4, 4]


# --------------------------------------------------------------------------- trainer
def _trainer(kg, split_triples, *, out_dir=None, encoder="bow", sampler="in-batch", callbacks=(),
             evaluate=_distmult_evaluate, loss="margin", **overrides):
    from kgprobe.linkpred.losses import get_loss
    from kgprobe.linkpred.scorers import get_scorer

    train_t, valid_t = split_triples
    if not isinstance(encoder, str):
        enc = encoder()
    elif encoder == "bow":
        enc = get_encoder("bow", kg=kg, dim=16, seed=0)
    else:
        enc = get_encoder("embedding", num_entities=kg.num_entities, dim=16, seed=0)
    settings = dict(epochs=4, batch_size=16, num_negatives=8, lr=0.02, warmup=0.25, seed=0)
    settings.update(overrides)
    return Trainer(encoder=enc, scorer=get_scorer("transe"), loss=get_loss(loss),
                   sampler=get_sampler(sampler, kg=kg), train_triples=train_t, num_relations=kg.num_relations,
                   valid_triples=valid_t, filter_triples=kg.triples, evaluate=evaluate,
                   out_dir=out_dir, device="cpu", progress=False, callbacks=callbacks, **settings)


def _comparable(history):
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in history]


@pytest.mark.parametrize("loss", ["margin", "infonce"])
def test_loss_decreases_on_a_tiny_kg(kg, split_triples, loss):
    result = _trainer(kg, split_triples, epochs=8, loss=loss).fit()
    losses = [r["loss"] for r in result.history]
    assert len(losses) == 8
    assert losses[-1] < 0.6 * losses[0]
    assert all(0 <= r["metric"] <= 1 for r in result.history)
    assert result.best_epoch is not None and result.best_metric == max(r["metric"] for r in result.history)
    # the warm-up then linear decay reached zero at the last step
    assert result.history[-1]["lr"] == 0.0


def test_all_entity_vectors_of_some_entities(kg, split_triples):
    model = _trainer(kg, split_triples, epochs=1).fit().model
    some = torch.tensor([5, 0, 3])
    vectors = model.all_entity_vectors(4, entities=some)
    torch.testing.assert_close(vectors, model.all_entity_vectors(4)[some])
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(3))  # TransE: unit vectors


def test_training_is_deterministic_with_a_seed(kg, split_triples):
    a = _trainer(kg, split_triples, epochs=3, restore_best=False).fit()
    b = _trainer(kg, split_triples, epochs=3, restore_best=False).fit()
    assert _comparable(a.history) == _comparable(b.history)
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name
    c = _trainer(kg, split_triples, epochs=3, seed=1, restore_best=False).fit()
    assert _comparable(c.history) != _comparable(a.history)


@pytest.mark.parametrize("sampler", ["in-batch", "uniform"])
def test_training_is_bitwise_deterministic_with_two_cpu_threads(kg, split_triples, sampler):
    """Batches large enough that PyTorch's CPU kernels run in parallel: the gradient of the
    entity rows gathered for positives and negatives must be summed in a fixed order (the
    backward of ``vectors[inverse]`` adds repeated rows with atomics under several threads)."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        states = []
        for _ in range(2):
            trainer = _trainer(kg, split_triples, sampler=sampler, epochs=12, batch_size=32, num_negatives=128,
                               encoder=lambda: get_encoder("bow", kg=kg, dim=64, seed=0), restore_best=False)
            trainer.valid_triples = None  # no validation: only the training steps matter here
            states.append(trainer.fit().model.state_dict())
    finally:
        torch.set_num_threads(old)
    for name, x in states[0].items():
        assert torch.equal(x, states[1][name]), name


def test_checkpoint_resume_gives_the_uninterrupted_result(kg, split_triples, tmp_path):
    full = _trainer(kg, split_triples, out_dir=tmp_path / "full", epochs=5, sampler="uniform").fit()

    class Crash(Exception):
        pass

    def crash_after_2(trainer, record):
        if record["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        _trainer(kg, split_triples, out_dir=tmp_path / "cut", epochs=5, sampler="uniform",
                 callbacks=[crash_after_2]).fit()
    saved = torch.load(tmp_path / "cut" / CHECKPOINT_FILE, weights_only=True)
    assert saved["epoch"] == 2 and len(saved["history"]) == 2 and not saved["finished"]
    assert {"model", "optimizer", "scheduler", "rng", "best_metric"} <= set(saved)
    # a torn line as after a kill mid-write: the resumed run rewrites the file from the checkpoint
    with open(tmp_path / "cut" / METRICS_FILE, "a") as fh:
        fh.write('{"epoch": 3, "lo')
    resumed = _trainer(kg, split_triples, out_dir=tmp_path / "cut", epochs=5, sampler="uniform").fit()
    assert resumed.resumed_from == 2
    assert _comparable(resumed.history) == _comparable(full.history)
    assert resumed.best_epoch == full.best_epoch and resumed.best_metric == full.best_metric
    for (name, x), (_, y) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(x, y), name
    lines = [json.loads(x) for x in (tmp_path / "cut" / METRICS_FILE).read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4, 5]
    best = torch.load(tmp_path / "cut" / BEST_FILE, weights_only=True)
    assert best["epoch"] == full.best_epoch
    # a finished run resumes to the same result without training
    again = _trainer(kg, split_triples, out_dir=tmp_path / "cut", epochs=5, sampler="uniform").fit()
    assert again.resumed_from == 5 and _comparable(again.history) == _comparable(full.history)
    # other settings cannot resume this checkpoint
    with pytest.raises(KgprobeError, match="other settings"):
        _trainer(kg, split_triples, out_dir=tmp_path / "cut", epochs=5, sampler="uniform", lr=0.5).fit()


def test_resume_with_a_dropout_transformer_is_bitwise_equal(kg, split_triples, tmp_path):
    words = " ".join(kg.entity_descriptions).split()

    def make():  # a fresh tiny BERT with other initial weights each time: the checkpoint must restore them
        bert, tok = _tiny_bert(tmp_path, words)
        return get_encoder("transformer", kg=kg, model=bert, tokenizer=tok, dim=16, max_length=12, seed=0)

    settings = dict(encoder=make, epochs=3, lr=1e-3, batch_size=24, grad_accumulation=2)
    full = _trainer(kg, split_triples, out_dir=tmp_path / "full", **settings).fit()
    assert full.model.encoder.transformer.config.hidden_dropout_prob > 0

    def crash(trainer, record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _trainer(kg, split_triples, out_dir=tmp_path / "cut", callbacks=[crash], **settings).fit()
    torch.manual_seed(1234)  # whatever the global RNG holds now, the resumed epochs are the same
    resumed = _trainer(kg, split_triples, out_dir=tmp_path / "cut", **settings).fit()
    assert resumed.resumed_from == 1
    assert _comparable(resumed.history) == _comparable(full.history)
    for (name, x), (_, y) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(x, y), name


def test_resume_from_inside_an_epoch_is_bitwise_equal(kg, split_triples, tmp_path):
    """A crash in the middle of an epoch: the checkpoint written after the last optimiser step
    (checkpoint_minutes=0: after every step) holds the batch position, the generator and RNG
    states and the running loss, and the resumed run ends exactly where an uninterrupted one does."""
    settings = _dropout_bert_settings(kg, tmp_path, checkpoint_minutes=0)
    full = _trainer(kg, split_triples, out_dir=tmp_path / "full", **settings).fit()
    n_batches = -(-len(split_triples[0]) // 8)
    assert n_batches >= 6
    cut = _trainer(kg, split_triples, out_dir=tmp_path / "cut", **settings)
    crash_at(cut, n_batches + 5)  # the 5th batch of epoch 2: after the 2nd step, inside the 3rd
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    saved = torch.load(tmp_path / "cut" / CHECKPOINT_FILE, weights_only=True)
    assert saved["epoch"] == 1 and saved["partial"]["epoch"] == 2 and saved["partial"]["batches_done"] == 4
    torch.manual_seed(1234)  # whatever the global RNG holds now
    resumed = _trainer(kg, split_triples, out_dir=tmp_path / "cut", **settings).fit()
    assert resumed.resumed_from == 1
    _same_run(full, resumed)
    assert torch.load(tmp_path / "cut" / CHECKPOINT_FILE, weights_only=True)["partial"] is None
    with pytest.raises(KgprobeError, match="checkpoint_minutes"):
        _trainer(kg, split_triples, checkpoint_minutes=-1)


def _dropout_bert_settings(kg, tmp_path, **overrides):
    words = " ".join(kg.entity_descriptions).split()

    def make():
        bert, tok = _tiny_bert(tmp_path, words)
        return get_encoder("transformer", kg=kg, model=bert, tokenizer=tok, dim=16, max_length=12, seed=0)

    return {**dict(encoder=make, epochs=2, lr=1e-3, batch_size=8, grad_accumulation=2), **overrides}


def _same_run(full, resumed):
    assert _comparable(resumed.history) == _comparable(full.history)
    for (name, x), (_, y) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(x, y), name


def test_sigterm_inside_an_epoch_checkpoints_at_the_next_step(kg, split_triples, tmp_path):
    """SIGTERM arrives during a batch that is not the last of its gradient-accumulation group: the
    run finishes that step, writes the checkpoint there, raises Stopped (exit code 143) and puts
    the previous handler back; the resumed run ends bitwise where an uninterrupted one does."""
    import signal

    from kgprobe.stopping import Stopped

    settings = _dropout_bert_settings(kg, tmp_path, checkpoint_minutes=None)
    full = _trainer(kg, split_triples, out_dir=tmp_path / "full", **settings).fit()
    n_batches = -(-len(split_triples[0]) // 8)
    cut = _trainer(kg, split_triples, out_dir=tmp_path / "cut", **settings)
    calls, batch_loss = [0], cut._batch_loss

    def signal_in_epoch_2(batch, generator):
        calls[0] += 1
        if calls[0] == n_batches + 3:  # the 3rd batch of epoch 2: the 2nd step ends after the 4th
            signal.raise_signal(signal.SIGTERM)
        return batch_loss(batch, generator)

    cut._batch_loss = signal_in_epoch_2
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped, match=r"stopped by SIGTERM in epoch 2 after batch 4 of \d+; checkpoint written") as err:
        cut.fit()
    assert err.value.exit_code == 143 and calls[0] == n_batches + 4
    assert signal.getsignal(signal.SIGTERM) is before
    saved = torch.load(tmp_path / "cut" / CHECKPOINT_FILE, weights_only=True)
    assert saved["epoch"] == 1 and saved["partial"]["batches_done"] == 4
    resumed = _trainer(kg, split_triples, out_dir=tmp_path / "cut", **settings).fit()
    assert resumed.resumed_from == 1 and calls[0] == n_batches + 4  # the resumed trainer is another object
    _same_run(full, resumed)


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler for one test: a shell starts background jobs with SIGINT ignored,
    which the trainer respects (it leaves an ignored signal ignored)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_validation_stops_at_once_and_resumes_with_it(kg, split_triples, tmp_path, python_sigint):
    import signal

    from kgprobe.stopping import Stopped

    settings = _dropout_bert_settings(kg, tmp_path, checkpoint_minutes=None, epochs=3)
    full = _trainer(kg, split_triples, out_dir=tmp_path / "full", **settings).fit()
    validations = []

    def interrupted_second_validation(*args, **kwargs):
        validations.append(1)
        if len(validations) == 2:
            signal.raise_signal(signal.SIGINT)
            raise AssertionError("the validation went on after the signal")
        return _distmult_evaluate(*args, **kwargs)

    cut = _trainer(kg, split_triples, out_dir=tmp_path / "cut", evaluate=interrupted_second_validation, **settings)
    with pytest.raises(Stopped, match="stopped by SIGINT while validating epoch 2") as err:
        cut.fit()
    assert err.value.exit_code == 130
    saved = torch.load(tmp_path / "cut" / CHECKPOINT_FILE, weights_only=True)
    n_batches = -(-len(split_triples[0]) // 8)
    assert saved["epoch"] == 1 and saved["partial"]["epoch"] == 2 and saved["partial"]["batches_done"] == n_batches
    assert [json.loads(x)["epoch"] for x in (tmp_path / "cut" / METRICS_FILE).read_text().splitlines()] == [1]
    resumed = _trainer(kg, split_triples, out_dir=tmp_path / "cut", **settings).fit()
    assert resumed.resumed_from == 1
    _same_run(full, resumed)
    # a second Ctrl-C while the first is honoured still interrupts
    from kgprobe.stopping import StopRequests

    with StopRequests() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.requested == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_early_stopping_and_best_model(kg, split_triples, tmp_path):
    scores = iter([0.3, 0.5, 0.4, 0.45, 0.9, 0.95])

    def evaluate(entity_emb, relation_emb, scorer, triples, **_):
        return {"both.realistic.mrr": next(scores), "both.realistic.hits_at_10": 0.0}

    trainer = _trainer(kg, split_triples, out_dir=tmp_path, epochs=6, patience=2)
    trainer.evaluate_fn = evaluate
    seen = {}
    trainer.callbacks.append(lambda t, rec: seen.setdefault(rec["epoch"], t.model.relations.weight.detach().clone()))
    result = trainer.fit()
    assert result.stopped_early and result.epochs_run == 4
    assert result.best_epoch == 2 and result.best_metric == 0.5
    assert [r["best"] for r in result.history] == [True, True, False, False]
    # the best model is restored at the end
    assert torch.equal(result.model.relations.weight, seen[2])
    best = torch.load(tmp_path / BEST_FILE, weights_only=True)
    assert best["epoch"] == 2 and torch.equal(best["model"]["relations.weight"], seen[2])


def test_evaluation_reuses_entity_vectors_while_the_weights_are_unchanged(kg, split_triples):
    trainer = _trainer(kg, split_triples, epochs=2, restore_best=False)
    encoder = trainer.model.encoder
    passes, original = [], encoder.encode_all

    def counting(*args, **kwargs):
        passes.append(1)
        return original(*args, **kwargs)

    def fresh():
        with torch.no_grad():
            vectors = trainer.model.all_entity_vectors(trainer.config.eval_batch_size)
        passes.pop()
        return vectors

    encoder.encode_all = counting
    trainer.fit()
    assert len(passes) == 2  # one validation per epoch, new weights each time
    test = trainer.evaluate(split_triples[1], filter_triples=kg.triples)
    assert len(passes) == 2  # right after the last validation: same weights, no second pass
    assert test == trainer.history[-1]["valid"]
    before = fresh()
    assert torch.equal(trainer._eval_vectors[1], before)
    with torch.no_grad():
        trainer.model.relations.weight[0, 0] += 1.0
    trainer.evaluate(split_triples[1], filter_triples=kg.triples)
    assert len(passes) == 3  # the digest covers every weight
    with torch.no_grad():
        next(encoder.parameters()).add_(0.5)
    trainer.evaluate(split_triples[1], filter_triples=kg.triples)
    assert len(passes) == 4
    after = fresh()
    assert torch.equal(trainer._eval_vectors[1], after) and not torch.equal(after, before)


def test_gradient_accumulation_step_count(kg, split_triples):
    trainer = _trainer(kg, split_triples, epochs=2, grad_accumulation=3, evaluate=None)
    trainer.valid_triples = None
    result = trainer.fit()
    n_batches = num_batches(len(split_triples[0]), 16)
    assert result.history[-1]["step"] == 2 * -(-n_batches // 3) == trainer.total_steps
    assert result.best_epoch == 2 and all("valid" not in r for r in result.history)


def test_in_batch_training_encodes_only_batch_entities(kg, split_triples):
    trainer = _trainer(kg, split_triples, epochs=1)
    encoder = trainer.model.encoder
    sizes, original = [], encoder.encode

    def recording(entities):
        sizes.append(len(entities))
        return original(entities)

    encoder.encode = recording
    trainer.valid_triples = None
    trainer.fit()
    assert sizes and max(sizes) <= 2 * 16  # one pass over the batch's own entities, negatives included


def test_train_by_names_with_transformer_and_real_evaluator(kg, split_triples, tmp_path):
    from kgprobe.linkpred.evaluator import evaluate_model  # noqa: F401 (the default evaluator)

    words = " ".join(kg.entity_descriptions).split()
    bert, tok = _tiny_bert(tmp_path, words)
    enc = get_encoder("transformer", kg=kg, model=bert, tokenizer=tok, dim=16, max_length=12, seed=0)
    train_t, valid_t = split_triples
    result = train(encoder=enc, scorer="distmult", loss="softplus", sampler="bernoulli",
                   sampler_kwargs={"filtered": True}, train_triples=train_t, num_relations=kg.num_relations,
                   valid_triples=valid_t, filter_triples=kg.triples, epochs=2, batch_size=32, num_negatives=4,
                   lr=1e-3, device="cpu", progress=False, out_dir=tmp_path / "run")
    record = result.history[-1]
    assert {"both.realistic.mrr", "both.realistic.hits_at_10"} <= set(record["valid"])
    assert 0 < record["metric"] <= 1
    assert (tmp_path / "run" / BEST_FILE).is_file() and (tmp_path / "run" / CHECKPOINT_FILE).is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("sampler,loss", [("in-batch", "margin"), ("uniform", "margin"), ("in-batch", "infonce")])
def test_training_on_cuda_matches_cpu(kg, split_triples, tmp_path, sampler, loss):
    """The GPU path (host indices copied without blocking, the running loss read every few steps)
    trains the same model as the CPU: same losses and validation MRR up to float rounding."""
    words = " ".join(kg.entity_descriptions).split()
    train_t, valid_t = split_triples
    runs = {}
    for device in ("cpu", "cuda"):
        # no dropout: the CPU and the GPU draw different masks
        bert, tok = _tiny_bert(tmp_path, words, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        enc = get_encoder("transformer", kg=kg, model=bert, tokenizer=tok, dim=16, max_length=12, seed=0)
        assert enc.lengths.device.type == "cpu"
        runs[device] = train(encoder=enc, scorer="transe", loss=loss, sampler=sampler,
                             train_triples=train_t, num_relations=kg.num_relations, valid_triples=valid_t,
                             filter_triples=kg.triples, epochs=2, batch_size=16, num_negatives=4, lr=1e-3,
                             amp=False, device=device, progress=False)
        assert enc.lengths.device.type == "cpu" and enc.input_ids.device.type == device
    for a, b in zip(runs["cpu"].history, runs["cuda"].history):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3, abs=1e-4)
        assert b["metric"] == pytest.approx(a["metric"], abs=0.02)


def test_trainer_config_errors(kg, split_triples):
    with pytest.raises(KgprobeError, match="warmup"):
        _trainer(kg, split_triples, warmup=1.5)
    with pytest.raises(KgprobeError, match="batch_size"):
        _trainer(kg, split_triples, batch_size=0)
    with pytest.raises(KgprobeError, match="metric"):
        _trainer(kg, split_triples, epochs=1, metric="both.realistic.nope").fit()
    assert TrainConfig().warmup == 0.2 and TrainConfig().num_negatives == 64


# --------------------------------------------------------------------------- real model (slow)
def _wordnet_subgraph(n: int = 300) -> KnowledgeGraph:
    from kgprobe.kg.datasets import build_dataset

    full = build_dataset("wordnet")
    start = full.entity_index("02084071")  # dog
    keep = torch.zeros(full.num_entities, dtype=torch.bool)
    keep[start] = True
    h, t = full.triples[:, 0], full.triples[:, 2]
    while int(keep.sum()) < n:
        touching = keep[h] | keep[t]
        frontier = torch.unique(torch.cat([h[touching], t[touching]]))
        new = frontier[~keep[frontier]][: n - int(keep.sum())]
        if not len(new):
            break
        keep[new] = True
    ids = [full.entity_ids[i] for i in keep.nonzero().reshape(-1).tolist()]
    return full.subgraph(entities=ids)


@pytest.mark.slow
def test_lemon_and_blp_with_minilm_on_wordnet(tmp_path):
    from kgprobe.models import load_sentence_encoder

    kg = _wordnet_subgraph(300)
    assert 250 <= kg.num_entities <= 300 and kg.num_triples > 200
    sentence = load_sentence_encoder("minilm-l6", device="cpu")
    sampler = get_sampler("lemon", kg=kg, encoder=sentence, cache=False, filtered=True)
    assert sampler.n_clusters == 15 and sampler.nearest.shape == (kg.num_entities, 3)
    out = sampler.sample_negatives(kg.triples[:64], 16, generator=torch.Generator().manual_seed(0))
    kept = torch.where(out.corrupt_head, kg.triples[:64, 2:3], kg.triples[:64, 0:1])
    hit = (sampler.nearest[kept] == sampler.assignments[out.entities].unsqueeze(-1)).any(dim=-1)
    assert bool(out.mask.all()) and float(hit.float().mean()) > 0.95  # rare uniform fallbacks only
    # LEMON's negatives are semantically closer to the kept entity than uniform ones
    vec = sampler.vectors
    uniform = get_sampler("uniform", kg=kg).sample_negatives(kg.triples[:64], 16,
                                                             generator=torch.Generator().manual_seed(0))
    kept_u = torch.where(uniform.corrupt_head, kg.triples[:64, 2:3], kg.triples[:64, 0:1])
    lemon_sim = (vec[out.entities] * vec[kept]).sum(-1).mean()
    uniform_sim = (vec[uniform.entities] * vec[kept_u]).sum(-1).mean()
    assert lemon_sim > uniform_sim + 0.05

    # BLP on top: minilm fine-tuned with LEMON negatives (a few steps: 2 CPU cores)
    encoder = get_encoder("transformer", kg=kg, dim=32, max_length=24, seed=0)
    assert encoder.transformer.config.hidden_size == 384
    perm = torch.randperm(kg.num_triples, generator=torch.Generator().manual_seed(0))
    train_t, valid_t = kg.triples[perm[40:136]], kg.triples[perm[:40]]
    result = train(encoder=encoder, scorer="transe", loss="margin", sampler=sampler, train_triples=train_t,
                   num_relations=kg.num_relations, valid_triples=valid_t, filter_triples=kg.triples, epochs=1,
                   batch_size=32, num_negatives=4, lr=5e-5, device="cpu", progress=False,
                   out_dir=tmp_path / "blp")
    assert result.model.normalize_entities  # TransE: unit entity vectors, as BLP
    assert result.history[0]["step"] == 3 and 0 < result.history[0]["metric"] <= 1


# --------------------------------------------------------------------------- one configuration, self-building parts
def test_train_config_is_checked_and_its_resume_key_is_the_checkpoints():
    """TrainConfig validates itself (one line naming the field) and its resume key has exactly the
    settings checkpoints have always stored."""
    from kgprobe.linkpred.config import LinkPredConfig

    with pytest.raises(KgprobeError, match=r"^warmup: Input should be less than 1 \(got 1.5\)$"):
        TrainConfig(warmup=1.5)
    with pytest.raises(KgprobeError, match="^nope: Extra inputs are not permitted"):
        TrainConfig(nope=1)
    assert set(TrainConfig().resume_key()) == {
        "batch_size", "epochs", "lr", "weight_decay", "warmup", "grad_accumulation", "num_negatives", "max_grad_norm",
        "regularization", "normalize_entities", "seed", "amp", "eval_every", "metric", "drop_last"}
    assert TrainConfig(lr=0.5).replace(epochs=3).resume_key() == {**TrainConfig().resume_key(), "lr": 0.5, "epochs": 3}
    cfg = LinkPredConfig(data="d", out="o", seed=7, epochs=3, eval_every=2, weight_decay=0.1)
    assert cfg.train_config(cfg.seed) == TrainConfig(seed=7, epochs=3, eval_every=2, weight_decay=0.1)


def test_components_build_themselves_from_a_split(kg):
    from kgprobe.linkpred.data import SplitData
    from kgprobe.linkpred.encoders import build_encoder
    from kgprobe.linkpred.samplers import KnnHardSampler, build_sampler
    from kgprobe.linkpred.scorers import get_scorer, normalizes_entities

    train_entities = torch.arange(0, 40)
    split = SplitData(graph=kg, triples={"train": kg.triples[:60], "valid": kg.triples[60:70], "test": kg.triples[70:]},
                      entities={"train": train_entities, "valid": torch.arange(40, 44), "test": torch.arange(44, 48)})
    in_batch = build_sampler("in-batch", split, {"self_negatives": 1})
    assert len(in_batch.entities) == kg.num_entities and in_batch.self_negatives == 1  # the batch decides
    uniform = build_sampler("uniform", split)
    assert torch.equal(uniform.entities, train_entities) and torch.equal(uniform.triples, kg.triples[:60])
    assert KnnHardSampler.split_inputs(split, progress=True)["kg"] is kg
    texts = [f"entity {i}" for i in range(kg.num_entities)]
    bow = build_encoder("bow", texts, {"dim": 8, "max_length": 4}, train_entities=torch.tensor([0]), seed=0)
    assert isinstance(bow, BowEncoder) and set(bow.vocab) == {"entity", "0"}  # the training entity's words
    table = build_encoder("embedding", texts, {"dim": 8}, seed=0)
    assert isinstance(table, EmbeddingEncoder) and table.num_entities == kg.num_entities
    assert normalizes_entities(get_scorer("transe")) and not normalizes_entities(get_scorer("distmult"))
    assert not normalizes_entities(get_scorer("transe"), False) and normalizes_entities(get_scorer("rotate"), True)


def test_as_triples_one_converter():
    from kgprobe.linkpred.data import as_triples

    assert as_triples([]).shape == (0, 3) and as_triples(np.array([[1, 0, 2]])).dtype == torch.long
    for bad, message in ((torch.zeros(2, 3), "must be integer indices"), (torch.zeros(2, 3, dtype=torch.bool),
                                                                           "must be integer indices"),
                         (torch.zeros(2, 2, dtype=torch.long), r"must have shape \(n, 3\)")):
        with pytest.raises(KgprobeError, match=f"^filter triples {message}"):
            as_triples(bad, what="filter triples")
