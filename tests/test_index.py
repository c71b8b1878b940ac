"""Entity embeddings, vector indexes, clustering, and the `embed` / `neighbors` commands."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kgprobe.cli import main
from kgprobe.errors import KgprobeError
from kgprobe.index import (
    Clustering,
    EmbeddingCache,
    EntityEmbeddings,
    VectorIndex,
    build_index,
    embed_kg,
    encode_texts,
    entity_texts,
    exact_search,
    kmeans,
    nearest_clusters,
)
from kgprobe.index.embed import unique_texts
from kgprobe.kg.graph import KnowledgeGraph


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clustered(rng: np.random.Generator, n: int, d: int, centers: int = 40) -> np.ndarray:
    """Unit vectors around a few centres: the structure real embeddings have."""
    c = _unit(rng, centers, d)
    x = c[rng.integers(0, centers, n)] + 0.15 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _same_sets(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([set(x.tolist()) == set(y.tolist()) for x, y in zip(a, b)]))


def _recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(x.tolist()) & set(y.tolist())) / exact.shape[1] for x, y in zip(approx, exact)]))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return _unit(rng, 3000, 48), _unit(rng, 200, 48)


# ----------------------------------------------------------------------------- exact search
@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_torch_backend_matches_faiss_flat(data, metric):
    base, queries = data
    base = base * np.linspace(0.5, 2.0, len(base), dtype=np.float32)[:, None]  # unequal norms
    f_scores, f_ids = build_index(base, metric=metric, backend="faiss").search(queries, 10)
    t_scores, t_ids = build_index(base, metric=metric, backend="torch", query_chunk=37).search(queries, 10)
    assert _same_sets(t_ids, f_ids) >= 0.99  # ties aside (none expected with random floats)
    np.testing.assert_allclose(t_scores, f_scores, rtol=1e-4, atol=1e-4)
    order = np.diff(f_scores, axis=1)
    assert (order <= 1e-6).all() if metric != "l2" else (order >= -1e-6).all()


def test_exact_search_chunking_and_padding(data):
    base, queries = data
    q, x = torch.from_numpy(queries), torch.from_numpy(base[:5])
    s1, i1 = exact_search(q, x, 3, query_chunk=7)
    s2, i2 = exact_search(q, x, 3, query_chunk=4096)
    assert torch.equal(i1, i2) and torch.allclose(s1, s2)
    # k larger than the base: padded like faiss (index -1, -FLT_MAX / +FLT_MAX)
    for metric in ("ip", "l2"):
        f_s, f_i = build_index(base[:5], metric=metric).search(queries[:4], 8)
        t_s, t_i = build_index(base[:5], metric=metric, backend="torch").search(queries[:4], 8)
        assert (t_i[:, 5:] == -1).all() and np.array_equal(t_i[:, 5:], f_i[:, 5:])
        assert np.array_equal(t_s[:, 5:], f_s[:, 5:])


@pytest.mark.parametrize("n", [300, 64 * 40, 64 * 40 + 13, 20_000])
def test_blocked_topk_is_exact(n):
    from kgprobe.index.exact import topk_rows

    g = torch.Generator().manual_seed(n)
    for scores in (torch.randn(6, n, generator=g), torch.randint(0, 4, (6, n), generator=g).float()):
        values, idx = topk_rows(scores, 10)
        ref_values, ref_idx = torch.topk(scores, 10, dim=1)
        assert torch.equal(values, ref_values)  # ties may pick other members, never other values
        assert torch.equal(torch.gather(scores, 1, idx), values)
        assert all(len(set(row.tolist())) == 10 for row in idx)


def _stable_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The tie rule by a stable sort: largest first, equal values by lowest column."""
    values, cols = torch.sort(scores, dim=1, descending=True, stable=True)
    return values[:, :k], cols[:, :k]


@pytest.mark.parametrize("n", [5, 300, 64 * 40 + 13, 20_000])
def test_topk_rows_ties_go_to_the_lowest_column(n):
    from kgprobe.index.exact import topk_rows

    g = torch.Generator().manual_seed(n)
    for k in (1, 3, 10):
        for scores in (torch.randint(0, 4, (5, n), generator=g).float(),
                       torch.randint(0, 50, (5, n), generator=g).float(), torch.zeros(2, n)):
            want = _stable_topk(scores, min(k, n))
            for view in (scores, scores.t().contiguous().t()):  # blocked path, and torch.topk (not contiguous)
                values, cols = topk_rows(view, min(k, n))
                assert torch.equal(values, want[0]) and torch.equal(cols, want[1]), (n, k)
    # a tie for the k-th place inside the kept blocks (settled on the candidates, not the whole row)
    scores = torch.randn(1, 64 * 50, generator=g)
    top = torch.topk(scores, 10, dim=1).indices[0]
    kth = int(top[-1])
    block = [c for c in range(kth // 64 * 64, kth // 64 * 64 + 64) if c not in top.tolist()]
    scores[0, block[0]] = scores[0, kth]
    assert torch.equal(topk_rows(scores, 10)[1], _stable_topk(scores, 10)[1])


def test_add_in_pieces_and_1d_query(data):
    base, queries = data
    index = VectorIndex(48, backend="torch")
    index.add(base[:1000]).add(torch.from_numpy(base[1000:]))
    assert len(index) == len(base)
    _, ids = index.search(queries[0], 5)  # a 1-D query is one row
    _, ref = build_index(base).search(queries[:1], 5)
    assert ids.shape == (1, 5) and np.array_equal(ids, ref)


# ----------------------------------------------------------------------------- approximate
def test_ivf_and_hnsw_recall():
    rng = np.random.default_rng(1)
    base, queries = _clustered(rng, 6000, 32), _clustered(rng, 300, 32)
    _, exact = build_index(base).search(queries, 10)
    ivf = build_index(base, kind="ivf", nlist=32, nprobe=8)
    assert ivf.nlist == 32
    assert _recall(ivf.search(queries, 10)[1], exact) > 0.9
    ivf.set_search_params(nprobe=32)  # all cells: exact
    assert _recall(ivf.search(queries, 10)[1], exact) > 0.999
    hnsw = build_index(base, kind="hnsw", m=32, ef_search=128)
    assert _recall(hnsw.search(queries, 10)[1], exact) > 0.9
    factory = build_index(base, factory="IVF16,Flat", nprobe=16)
    assert _recall(factory.search(queries, 10)[1], exact) > 0.999


def test_ivf_auto_nlist_on_small_data():
    rng = np.random.default_rng(2)
    index = build_index(_unit(rng, 100, 16), kind="ivf")
    assert index.nlist == 2  # 100 // 39: every cell gets enough training points
    assert index.search(_unit(rng, 3, 16), 4)[1].shape == (3, 4)


@pytest.mark.parametrize("kwargs", [
    dict(kind="flat"), dict(kind="flat", metric="l2"), dict(kind="flat", backend="torch", metric="cosine"),
    dict(kind="ivf", nlist=16, nprobe=4), dict(kind="hnsw", m=8, ef_search=32), dict(factory="IVF8,SQ8"),
])
def test_save_load_round_trip(tmp_path, data, kwargs):
    base, queries = data
    index = build_index(base, **kwargs)
    before = index.search(queries, 10)
    path = index.save(tmp_path / "index.faiss")
    settings = json.loads((tmp_path / "index.json").read_text())
    assert settings["ntotal"] == len(base) and settings["dim"] == 48
    loaded = VectorIndex.load(path)
    assert (loaded.kind, loaded.metric, loaded.backend) == (index.kind, index.metric, index.backend)
    after = loaded.search(queries, 10)
    assert np.array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])


def test_torch_index_saved_as_faiss_flat_loads_on_either_backend(tmp_path, data):
    base, queries = data
    path = build_index(base, backend="torch").save(tmp_path / "i.faiss")
    a = VectorIndex.load(path, backend="faiss").search(queries, 10)[1]
    b = VectorIndex.load(path).search(queries, 10)[1]
    assert _same_sets(a, b) >= 0.99


# ----------------------------------------------------------------------------- index errors
def _error(fn) -> str:
    with pytest.raises(KgprobeError) as exc:
        fn()
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_index_errors(tmp_path, data):
    base, queries = data
    flat = build_index(base)
    assert "dimension mismatch: the index has dim 48, queries have dim 47" in _error(
        lambda: flat.search(queries[:, :47], 5))
    assert "vectors have dim 12" in _error(lambda: VectorIndex(48).add(base[:, :12]))
    assert "cannot search an empty index" in _error(lambda: VectorIndex(48).search(queries, 5))
    assert "cannot search an empty index" in _error(lambda: VectorIndex(48, backend="torch").search(queries, 5))
    for k in (0, -3, 2.5):
        assert "k must be a positive integer" in _error(lambda k=k: flat.search(queries, k))
    assert "unknown index kind 'annoy'" in _error(lambda: VectorIndex(48, kind="annoy"))
    assert "unknown metric 'manhattan'" in _error(lambda: VectorIndex(48, metric="manhattan"))
    assert "unknown backend 'jax'" in _error(lambda: VectorIndex(48, backend="jax"))
    assert "torch backend is exact search only" in _error(lambda: VectorIndex(48, kind="hnsw", backend="torch"))
    assert "IVF index with nlist=64 needs at least 64 training vectors, got 20" in _error(
        lambda: VectorIndex(48, kind="ivf", nlist=64).add(base[:20]))
    assert "cannot train" in _error(lambda: VectorIndex(48, factory="IVF4,PQ8").add(base[:10]))
    assert "cannot build faiss index" in _error(lambda: VectorIndex(48, factory="NotAnIndex").add(base))
    assert "NaN" in _error(lambda: flat.search(np.full((1, 48), np.nan), 3))
    assert "must be a 2-D" in _error(lambda: flat.search(np.zeros((2, 2, 48)), 3))
    assert "positive" in _error(lambda: VectorIndex(0))
    assert "no such index file" in _error(lambda: VectorIndex.load(tmp_path / "missing.faiss"))
    (tmp_path / "junk.faiss").write_bytes(b"not an index")
    assert "index settings junk.json missing" in _error(lambda: VectorIndex.load(tmp_path / "junk.faiss"))
    (tmp_path / "junk.json").write_text(json.dumps({"format": "kgprobe-vector-index", "dim": 48}))
    assert "not a readable faiss index" in _error(lambda: VectorIndex.load(tmp_path / "junk.faiss"))


# ----------------------------------------------------------------------------- clustering
def test_kmeans_is_deterministic_and_saves(tmp_path):
    x = _clustered(np.random.default_rng(3), 2000, 32, centers=8)
    a = kmeans(x, 8, niter=10, seed=5)
    b = kmeans(x, 8, niter=10, seed=5)
    assert np.array_equal(a.centroids, b.centroids) and np.array_equal(a.assignments, b.assignments)
    assert a.centroids.shape == (8, 32) and a.assignments.shape == (2000,) and a.sizes().sum() == 2000
    c = kmeans(x, 8, niter=10, seed=6)
    assert not np.array_equal(a.centroids, c.centroids)
    a.save(tmp_path)
    assert np.array_equal(np.load(tmp_path / "centroids.npy"), a.centroids)
    assert np.array_equal(np.load(tmp_path / "assignments.npy"), a.assignments)
    again = Clustering.load(tmp_path)
    assert np.array_equal(again.assignments, a.assignments) and again.seed == 5
    assert "cannot make 9 clusters from 5 vectors" in _error(lambda: kmeans(x[:5], 9))


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_nearest_clusters_matches_brute_force(metric):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1500, 24)).astype(np.float32)
    c = rng.standard_normal((30, 24)).astype(np.float32)
    scores, idx = nearest_clusters(x, c, 3, metric=metric, chunk=256, return_scores=True)
    # brute force, one vector at a time
    for i in range(0, 1500, 7):
        if metric == "l2":
            s = ((x[i] - c) ** 2).sum(axis=1)
            ref = np.argsort(s)[:3]
        else:
            xi, cc = x[i], c
            if metric == "cosine":
                xi, cc = xi / np.linalg.norm(xi), c / np.linalg.norm(c, axis=1, keepdims=True)
            s = cc @ xi
            ref = np.argsort(-s)[:3]
        assert idx[i].tolist() == ref.tolist()
        np.testing.assert_allclose(scores[i].numpy(), s[ref], rtol=1e-4, atol=1e-4)
    assert idx.dtype == torch.long and idx.shape == (1500, 3)


def test_nearest_clusters_tensors_and_errors():
    x, c = torch.randn(10, 8), torch.randn(4, 8)
    assert nearest_clusters(x, c, 4).shape == (10, 4)
    assert "n must be between 1 and the number of clusters (4)" in _error(lambda: nearest_clusters(x, c, 5))
    assert "dimension mismatch" in _error(lambda: nearest_clusters(x, torch.randn(4, 9), 1))


# ----------------------------------------------------------------------------- texts, cache
def _tiny_kg() -> KnowledgeGraph:
    return KnowledgeGraph.from_labeled_triples(
        [("dog", "isa", "mammal"), ("cat", "isa", "mammal"), ("oak", "isa", "tree"), ("pine", "isa", "tree"),
         ("car", "isa", "vehicle"), ("bus", "isa", "vehicle"), ("puppy", "isa", "dog")],
        entity_labels={"dog": "dog", "cat": "cat", "oak": "oak", "pine": "pine tree", "car": "car",
                       "bus": "bus", "mammal": "mammal", "tree": "tree", "vehicle": "vehicle", "puppy": "puppy"},
        entity_descriptions={"dog": "a domesticated carnivorous animal that barks",
                             "cat": "a small domesticated feline", "car": "a motor vehicle with four wheels",
                             "puppy": "a young dog", "bus": "a large motor vehicle carrying passengers"},
        name="tiny",
    )


def test_entity_texts_and_dedupe():
    kg = _tiny_kg()
    i = kg.entity_index("dog")
    assert entity_texts(kg, "label")[i] == "dog"
    assert entity_texts(kg, "description")[i] == "a domesticated carnivorous animal that barks"
    assert entity_texts(kg, "both")[i] == "dog: a domesticated carnivorous animal that barks"
    assert entity_texts(kg, "description")[kg.entity_index("oak")] == "oak"  # no description: label
    assert "unknown text field 'gloss'" in _error(lambda: entity_texts(kg, "gloss"))
    unique, inverse = unique_texts(["b", "a", "b", "c", "a"])
    assert unique == ["b", "a", "c"] and inverse.tolist() == [0, 1, 0, 2, 1]


def test_cache_keys(tmp_path):
    cache = EmbeddingCache(tmp_path)
    assert cache.path_for("m", ["ab", "c"]) != cache.path_for("m", ["a", "bc"])
    assert cache.path_for("m", ["a"]) != cache.path_for("other", ["a"])
    cache.put("m", ["a", "b"], np.ones((2, 3)))
    assert cache.get("m", ["a", "b"]).shape == (2, 3) and cache.get("m", ["a"]) is None


class CountingEncoder:
    """Wraps a sentence encoder and records every text it is asked to encode."""

    def __init__(self, inner):
        self.inner, self.calls, self.texts = inner, 0, []

    def encode(self, sentences, **kwargs):
        self.calls += 1
        self.texts.extend(sentences)
        return self.inner.encode(sentences, **kwargs)


@pytest.fixture(scope="module")
def minilm():
    from kgprobe.models import load_sentence_encoder

    return load_sentence_encoder("minilm-l6", device="cpu")


def test_embed_cache_hit_skips_the_encoder(tmp_path, minilm):
    kg = _tiny_kg().merge(KnowledgeGraph.from_labeled_triples([("dog2", "isa", "mammal")],
                                                              entity_labels={"dog2": "dog"}))
    cache = EmbeddingCache(tmp_path / "cache")
    first = CountingEncoder(minilm)
    emb = embed_kg(kg, text="label", encoder=first, cache=cache, batch_size=4, progress=False)
    assert first.calls == 3  # 10 distinct labels (dog twice) in batches of 4
    assert sorted(first.texts) == sorted(set(entity_texts(kg, "label")))
    assert emb.vectors.shape == (11, 384) and emb.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(emb.vectors[kg.entity_index("dog")], emb.vectors[kg.entity_index("dog2")])
    assert emb.meta["cache_hit"] is False and emb.meta["unique_texts"] == 10
    second = CountingEncoder(minilm)
    again = embed_kg(kg, text="label", encoder=second, cache=cache, progress=False)
    assert second.calls == 0 and again.meta["cache_hit"] is True
    np.testing.assert_array_equal(again.vectors, emb.vectors)
    # batching and sorting do not change the vectors; the encoder agrees with sentence-transformers
    direct = minilm.encode(["dog", "pine tree"], normalize_embeddings=True)
    ours = encode_texts(["dog", "pine tree"], "minilm-l6", encoder=minilm, cache=False, progress=False)
    np.testing.assert_allclose(ours, direct, atol=1e-5)
    # another text field is another cache entry
    third = CountingEncoder(minilm)
    embed_kg(kg, text="both", encoder=third, cache=cache, progress=False)
    assert third.calls == 1


def test_embeddings_directory_round_trip(tmp_path):
    emb = EntityEmbeddings(ids=["a", "b"], labels=["A\nx", "B"], vectors=np.eye(2, 3, dtype=np.float32),
                           meta={"model": "m", "normalized": True})
    emb.save(tmp_path / "e", fp16=True)
    loaded = EntityEmbeddings.load(tmp_path / "e")
    assert loaded.labels == ["A x", "B"] and loaded.vectors.dtype == np.float32
    assert np.load(tmp_path / "e" / "embeddings.npy").dtype == np.float16
    assert loaded.meta["dtype"] == "float16" and loaded.meta["count"] == 2 and loaded.position("b") == 1
    assert "unknown entity id 'z'" in _error(lambda: loaded.position("z"))
    assert "meta.json missing" in _error(lambda: EntityEmbeddings.load(tmp_path))


# ----------------------------------------------------------------------------- CLI
def _run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture()
def home(tmp_path_factory, monkeypatch):
    """One embedding cache for the CLI tests of this module (so later runs hit it)."""
    path = tmp_path_factory.getbasetemp() / "kgprobe_home"
    monkeypatch.setenv("KGPROBE_HOME", str(path))
    return path


def test_cli_embed_and_neighbors(tmp_path, capsys, home):
    out_dir = tmp_path / "nations_emb"
    code, out, err = _run(["embed", "dataset:nations", "--out", str(out_dir), "--clusters", "3", "--quiet",
                           "--index", "hnsw", "--fp16"], capsys)
    assert code == 0, err
    assert "embedded 14 entities" in out
    files = sorted(p.name for p in out_dir.iterdir())
    assert files == [".kgprobe", "assignments.npy", "centroids.npy", "clusters.json", "embeddings.npy", "ids.txt",
                     "index.faiss", "index.json", "labels.txt", "meta.json"]
    meta = json.loads((out_dir / "meta.json").read_text())
    assert meta["model"] == "minilm-l6" and meta["text"] == "label" and meta["dim"] == 384
    assert meta["count"] == 14 and meta["normalized"] is True and meta["dtype"] == "float16"
    assert np.load(out_dir / "embeddings.npy").shape == (14, 384)
    ids = (out_dir / "ids.txt").read_text().split()
    assert len(ids) == 14 and "usa" in ids and len((out_dir / "labels.txt").read_text().splitlines()) == 14
    assert np.load(out_dir / "assignments.npy").shape == (14,)
    assert json.loads((out_dir / "index.json").read_text())["kind"] == "hnsw"

    code, out, err = _run(["neighbors", str(out_dir), "china", "-k", "3", "--json"], capsys)
    assert code == 0, err
    payload = json.loads(out)
    assert [r["rank"] for r in payload["results"]] == [1, 2, 3]
    assert payload["results"][0]["id"] == "china" and payload["results"][0]["score"] > 0.99
    assert payload["model"] == "minilm-l6"

    code, out, err = _run(["neighbors", str(out_dir), "--entity", "usa", "-k", "20"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 13 and all("usa" not in line.split()[1] for line in lines)  # itself excluded
    assert lines[0].split()[0] == "1"

    # a re-run hits the cache and replaces the directory
    code, out, _ = _run(["embed", "dataset:nations", "--out", str(out_dir), "--quiet", "--index", "none"], capsys)
    assert code == 0 and "(cache hit)" in out
    assert not (out_dir / "index.faiss").exists() and not (out_dir / "centroids.npy").exists()
    code, out, err = _run(["neighbors", str(out_dir), "--entity", "usa", "-k", "2", "--json"], capsys)
    assert code == 0, err
    assert len(json.loads(out)["results"]) == 2


def test_cli_embed_tiny_kg_dir_with_descriptions(tmp_path, capsys, home):
    from kgprobe.kg.formats import save_kg

    kg_dir = save_kg(_tiny_kg(), tmp_path / "tiny")
    out_dir = tmp_path / "tiny_emb"
    code, out, err = _run(["embed", str(kg_dir), "--out", str(out_dir), "--text", "both", "--quiet",
                           "--index", "ivf"], capsys)
    assert code == 0, err
    code, out, err = _run(["neighbors", str(out_dir), "a young domestic animal that barks", "-k", "2", "--json"],
                          capsys)
    assert code == 0, err
    assert {r["id"] for r in json.loads(out)["results"]} == {"dog", "puppy"}


@pytest.mark.parametrize("args, message", [
    (["embed", "{tmp}/missing_kg", "--out", "{out}"], "no such file or directory"),
    (["embed", "dataset:atlantis", "--out", "{out}"], "unknown dataset 'atlantis'"),
    (["embed", "dataset:nations", "--out", "{out}", "--clusters", "99"], "--clusters 99 is more than the 14"),
    (["embed", "dataset:nations", "--out", "{out}", "--index", "ivf", "--nlist", "50"], "--nlist 50 is more"),
    (["embed", "dataset:nations", "--out", "{out}", "--text", "gloss"], "'gloss' is not one of 'label'"),
    (["embed", "dataset:nations", "--out", "{out}", "--model", "/no/such/model"], "no such directory"),
    (["embed", "dataset:nations", "--out", "{out}", "--device", "tpu"], "bad device 'tpu'"),
    (["neighbors", "{tmp}", "query"], "meta.json missing"),
    (["neighbors", "{tmp}/nope", "query"], "no such embeddings directory"),
])
def test_cli_bad_input(tmp_path, capsys, home, args, message):
    out_dir = tmp_path / "out"
    args = [a.format(tmp=tmp_path, out=out_dir) for a in args]
    code, out, err = _run(args, capsys)
    assert code == 2
    assert err.startswith("kgprobe: error:") and err.count("\n") == 1, err
    assert message in err
    assert not out_dir.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary leftovers


def test_cli_neighbors_bad_input(tmp_path, capsys, home):
    emb = EntityEmbeddings(ids=["a", "b", "c"], labels=["A", "B", "C"], vectors=np.eye(3, dtype=np.float32),
                           meta={"model": "minilm-l6", "normalized": True})
    emb.save(tmp_path / "e")
    for args, message in (
        ([], "give either a QUERY text or --entity ID"),
        (["text", "--entity", "a"], "exactly one"),
        (["--entity", "zz"], "unknown entity id 'zz'"),
        (["--entity", "a", "-k", "0"], "-k must be a positive integer"),
        (["   "], "the query text is empty"),
        (["text"], "the query has dim 384 but the entities have dim 3"),
    ):
        code, _, err = _run(["neighbors", str(tmp_path / "e"), *args], capsys)
        assert code == 2 and err.count("\n") == 1 and message in err, (args, err)
    code, out, _ = _run(["neighbors", str(tmp_path / "e"), "--entity", "a", "-k", "5", "--json"], capsys)
    assert code == 0 and sorted(r["id"] for r in json.loads(out)["results"]) == ["b", "c"]  # a tie


def test_help_texts(capsys):
    for cmd in ("embed", "neighbors"):
        code, out, _ = _run([cmd, "--help"], capsys)
        assert code == 0 and "Example:" in out
    assert "--clusters" in _run(["embed", "--help"], capsys)[1]
    assert "--entity" in _run(["neighbors", "--help"], capsys)[1]


# ----------------------------------------------------------------------------- WordNet (slow)
@pytest.mark.slow
def test_wordnet_descriptions_neighbors(tmp_path, capsys, monkeypatch):
    """`embed --text description` + `neighbors --plain` on WordNet glosses with the real MiniLM-L6.

    Encoding all 117,659 glosses takes well over 8 minutes on a shared 2-core CPU, so this
    embeds a subset: every synset whose label contains "dog" (208) plus 20,000 random others
    (seeded), about 20k synsets and 3 minutes.

    The query "a domesticated carnivorous mammal" does NOT put a dog synset in the top 5 with
    this model: the top 5 are glosses that literally say "carnivorous mammal(s)" (procyonid,
    wolverine, fisher, mustelid, a carnivorous bat) and dog (02084071, whose gloss is "a member of
    the genus Canis (probably descended from the common wolf) that has been domesticated by man
    ...") ranks about 60th. So the test checks what does hold: every top-5 hit's gloss is about a
    carnivore, dog is in the top 100, and a query paraphrasing the dog gloss ("a domesticated
    animal descended from the wolf") ranks 02084071 first.
    """
    from kgprobe.kg.datasets import build_dataset
    from kgprobe.kg.formats import save_kg

    monkeypatch.setenv("KGPROBE_HOME", str(tmp_path / "home"))
    wn = build_dataset("wordnet")
    dogs = [e for e, label in zip(wn.entity_ids, wn.entity_labels) if "dog" in label.lower()]
    assert "02084071" in dogs and len(dogs) > 100
    rng = np.random.default_rng(0)
    others = [wn.entity_ids[i] for i in rng.choice(wn.num_entities, 20_000, replace=False)]
    subset = wn.subgraph(entities=list(dict.fromkeys(dogs + others)), drop_isolated=True)
    kg_dir = save_kg(subset, tmp_path / "wn_subset")
    out_dir = tmp_path / "wn_emb"
    code, out, err = _run(["embed", str(kg_dir), "--out", str(out_dir), "--text", "description", "--quiet"], capsys)
    assert code == 0, err
    glosses = dict(zip(wn.entity_ids, wn.entity_descriptions))

    def query(text: str, k: int) -> list[dict]:
        code, out, err = _run(["neighbors", str(out_dir), text, "-k", str(k), "--json", "--plain"], capsys)
        assert code == 0, err
        return json.loads(out)["results"]

    results = query("a domesticated carnivorous mammal", 100)
    assert all("carnivor" in glosses[r["id"]] for r in results[:5]), results[:5]
    assert "02084071" in [r["id"] for r in results]
    top = query("a domesticated animal descended from the wolf", 5)
    assert any(r["id"] == "02084071" or "dog" in r["label"].lower() for r in top), top
    assert top[0]["id"] == "02084071", top


def test_ivf_trains_on_a_seeded_sample_of_64_vectors_per_cell():
    """k-means on every vector made IVF builds grow as n^1.5; a sample of 64 per cell keeps them linear."""
    from kgprobe.index.knn import TRAIN_POINTS_PER_CELL, VectorIndex

    x = np.random.default_rng(0).standard_normal((80_000, 8)).astype("float32")
    index = VectorIndex(8, kind="ivf", nlist=1100, backend="faiss")
    index._build_faiss(len(x))
    sample = index._training_sample(x)
    assert len(sample) == TRAIN_POINTS_PER_CELL * 1100  # above the 2**16 floor
    assert np.array_equal(sample, index._training_sample(x))  # seeded: the same rows every time
    small = x[:50_000]
    assert index._training_sample(small) is small  # under the cap: every vector
    flat = VectorIndex(8, kind="flat", backend="faiss")
    flat._build_faiss(len(x))
    assert flat._training_sample(x) is x
