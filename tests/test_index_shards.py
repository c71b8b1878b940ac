"""Nearest-neighbour search over shards (issue #21, part 3): torch row shards, faiss shards,
``search_shard`` + ``merge_topk`` for processes, ``--devices``, and the tie rule that makes a
sharded search return exactly what one search over all rows returns.

The GPU tests skip with "needs CUDA GPUs" where there are none; the same code runs here over
``["cpu", "cpu", ...]``.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kgprobe.cli import main
from kgprobe.errors import KgprobeError
from kgprobe.index import EntityEmbeddings, VectorIndex, build_index, exact_search
from kgprobe.index.exact import FLT_MAX, chunk_size
from kgprobe.index.knn import faiss_has_gpu
from kgprobe.index.shards import TorchShards, merge_topk, resolve_devices, search_shard, shard_bounds

EXAMPLES = int(os.environ.get("KGPROBE_FUZZ_EXAMPLES", "0"))
GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0


def needs_gpus(n: int):
    return pytest.mark.skipif(GPUS < n, reason=f"needs CUDA GPUs ({n}; {GPUS} visible)")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(21)
    base = rng.standard_normal((1001, 24)).astype(np.float32)
    base *= np.linspace(0.5, 2.0, len(base), dtype=np.float32)[:, None]  # unequal norms
    return base, rng.standard_normal((60, 24)).astype(np.float32)


def _reference(base: np.ndarray, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The tie rule by brute force (float64): best score first, then lowest row; padded like faiss."""
    if metric == "cosine":
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    b, q = base.astype(np.float64), queries.astype(np.float64)
    if metric == "l2":
        key = -((q[:, None, :] - b[None]) ** 2).sum(axis=2)
    else:
        key = q @ b.T
    ids = np.full((len(q), k), -1, dtype=np.int64)
    for i, row in enumerate(key):
        order = np.lexsort((np.arange(len(row)), -row))[:k]
        ids[i, :len(order)] = order
    return key, ids


# ----------------------------------------------------------------------------- torch row shards
@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
@pytest.mark.parametrize("k", [7, 400, 1500])  # within a shard, more than a shard (334 rows), more than all rows
def test_sharded_torch_equals_unsharded(data, metric, k):
    base, queries = data
    one = build_index(base, metric=metric, backend="torch")
    three = build_index(base, metric=metric, devices=["cpu", "cpu", "cpu"])
    assert three.backend == "torch" and [b - a for a, b in three._shards.bounds] == [333, 334, 334]
    s1, i1 = one.search(queries, k)
    s3, i3 = three.search(queries, k)
    assert np.array_equal(i3, i1)
    np.testing.assert_allclose(s3, s1, rtol=0, atol=1e-6)
    if k > len(base):
        assert (i3[:, len(base):] == -1).all()
        assert (s3[:, len(base):] == (FLT_MAX if metric == "l2" else -FLT_MAX)).all()
    _, ref = _reference(base, queries, min(k, 50), metric)
    assert np.array_equal(i3[:, :50], ref[:, :50])  # no near-ties in this data: the float64 order


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_ties_go_to_the_lowest_row_sharded_or_not(metric):
    """Integer vectors, many duplicates: exact ties everywhere, at the k-th place too."""
    rng = np.random.default_rng(5)
    base = rng.integers(-1, 2, size=(3000, 6)).astype(np.float32)
    queries = rng.integers(-1, 2, size=(40, 6)).astype(np.float32)
    for k in (1, 10, 100):
        _, ref = _reference(base, queries, k, metric)
        plain = exact_search(torch.from_numpy(queries), torch.from_numpy(base), k, metric=metric)[1].numpy()
        assert np.array_equal(plain, ref), k
        for devices in (["cpu"] * 2, ["cpu"] * 7):
            _, ids = build_index(base, metric=metric, devices=devices).search(queries, k)
            assert np.array_equal(ids, ref), (k, len(devices))


def test_search_shard_and_merge_as_processes_would(data):
    """Unequal shards, each searched alone with its offset, gathered and merged: the unsharded result."""
    base, queries = data
    for metric in ("ip", "l2"):
        want_s, want_i = exact_search(torch.from_numpy(queries), torch.from_numpy(base), 25, metric=metric)
        cuts = [0, 10, 10, 700, 1001]  # a 10-row shard, an empty one (its rank still answers), then two big ones
        parts = [search_shard(base[a:b], queries, 25, offset=a, metric=metric, chunk=7)
                 for a, b in zip(cuts, cuts[1:])]
        assert all(s.shape == (60, 25) and i.shape == (60, 25) for s, i in parts)  # all_gather needs equal shapes
        assert (parts[1][1] == -1).all() and (parts[0][1][:, 10:] == -1).all()
        scores, ids = merge_topk(parts, 25, metric=metric)
        assert torch.equal(ids, want_i)
        assert torch.allclose(scores, want_s, rtol=0, atol=1e-5)


def test_chunks_are_planned_from_rows_dim_and_budget(data):
    assert chunk_size(200_000, 384, 10, query_chunk=1024) == 1024  # 1 GiB holds 1,300 rows of 200k scores
    assert chunk_size(2_000_000, 384, 10, query_chunk=1024) == 134
    assert chunk_size(10, 4, 1, budget_bytes=1) == 1 and chunk_size(10, 4, 1, queries=3) == 3
    base, queries = data
    small = search_shard(base, queries, 5, budget_bytes=1)  # one query per step
    assert torch.equal(small[1], search_shard(base, queries, 5)[1])


def test_add_in_pieces_save_and_load_sharded(tmp_path, data):
    base, queries = data
    index = VectorIndex(24, metric="l2", devices="cpu,cpu")
    index.add(base[:400]).add(base[400:])
    assert index.ntotal == len(base) and [b - a for a, b in index._shards.bounds] == [500, 501]
    np.testing.assert_array_equal(index.vectors(), base)
    _, ref = build_index(base, metric="l2", backend="torch").search(queries, 9)
    assert np.array_equal(index.search(queries, 9)[1], ref)
    index.save(tmp_path / "index.faiss")
    assert "devices" not in json.loads((tmp_path / "index.json").read_text())  # a search-time choice
    for devices in (None, ["cpu"] * 4):
        loaded = VectorIndex.load(tmp_path / "index.faiss", devices=devices)
        assert np.array_equal(loaded.search(queries, 9)[1], ref)


def test_threaded_shards(data):
    """The path several GPUs take (one thread per shard), here over CPU shards."""
    base, queries = data
    want = exact_search(torch.from_numpy(queries), torch.from_numpy(base), 12, metric="l2")
    shards = TorchShards(base, [torch.device("cpu")] * 3, metric="l2", threaded=True)
    assert shards.threaded and not TorchShards(base, [torch.device("cpu")] * 3).threaded
    scores, ids = shards.search(queries, 12, query_chunk=16)
    assert np.array_equal(ids, want[1].numpy())
    np.testing.assert_allclose(scores, want[0].numpy(), rtol=0, atol=1e-5)


def test_fewer_rows_than_shards():
    base = np.eye(3, 8, dtype=np.float32)
    shards = TorchShards(base, [torch.device("cpu")] * 5)
    assert shard_bounds(3, 5) == [(0, 0), (0, 1), (1, 1), (1, 2), (2, 3)]
    scores, ids = shards.search(base, 4)
    assert ids[:, 0].tolist() == [0, 1, 2] and (ids[:, 3] == -1).all()


# ----------------------------------------------------------------------------- merge_topk
@st.composite
def shard_results(draw):
    """Shards' (scores, ids) over disjoint global ids, scores from a few values (many ties), padded."""
    nq = draw(st.integers(1, 3))
    sizes = draw(st.lists(st.integers(0, 6), min_size=1, max_size=4))
    width = draw(st.integers(1, 7))
    ids = draw(st.permutations(range(sum(sizes)))) if sum(sizes) else []
    parts, start = [], 0
    for size in sizes:
        own = list(ids[start:start + size])
        start += size
        kept = min(width, size)
        s = np.full((nq, width), -FLT_MAX, dtype=np.float32)
        i = np.full((nq, width), -1, dtype=np.int64)
        for row in range(nq):
            chosen = draw(st.permutations(own))[:kept] if own else []
            i[row, :kept] = chosen
            s[row, :kept] = draw(st.lists(st.sampled_from([-1.5, 0.0, 0.25, 2.0]), min_size=kept, max_size=kept))
        parts.append((s, i))
    return parts, draw(st.integers(1, 12)), draw(st.sampled_from(["ip", "l2"]))


@settings(max_examples=EXAMPLES or 300, deadline=None, database=None, derandomize=not EXAMPLES)
@given(shard_results())
def test_merge_topk_is_a_sort(case):
    parts, k, metric = case
    if metric == "l2":  # padding of an l2 part is +FLT_MAX
        parts = [(np.where(i >= 0, s, FLT_MAX).astype(np.float32), i) for s, i in parts]
    scores, ids = merge_topk(parts, k, metric=metric)
    nq = parts[0][0].shape[0]
    assert scores.shape == ids.shape == (nq, k) and isinstance(ids, np.ndarray)
    for row in range(nq):
        pairs = [(float(s[row, j]), int(i[row, j])) for s, i in parts for j in range(i.shape[1]) if i[row, j] >= 0]
        pairs.sort(key=lambda p: ((-p[0] if metric == "ip" else p[0]), p[1]))
        pairs = pairs[:k]
        pad = FLT_MAX if metric == "l2" else -FLT_MAX
        assert ids[row].tolist() == [i for _, i in pairs] + [-1] * (k - len(pairs))
        assert scores[row].tolist() == [s for s, _ in pairs] + [pad] * (k - len(pairs))
    torch_scores, torch_ids = merge_topk([(torch.from_numpy(s), torch.from_numpy(i)) for s, i in parts], k,
                                         metric=metric)
    assert np.array_equal(torch_ids.numpy(), ids) and np.array_equal(torch_scores.numpy(), scores)


def test_merge_topk_leaves_its_inputs_alone_and_checks_them():
    s, i = np.array([[2.0, 1.0]], dtype=np.float32), np.array([[4, 3]])
    merge_topk([(s, i), (s.copy(), i + 10)], 3)
    assert s.tolist() == [[2.0, 1.0]] and i.tolist() == [[4, 3]]
    with pytest.raises(KgprobeError, match="at least one"):
        merge_topk([], 3)
    with pytest.raises(KgprobeError, match="one shape"):
        merge_topk([(s, i[:, :1])], 3)


# ----------------------------------------------------------------------------- faiss shards
@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_faiss_index_shards_equal_flat_search(data, metric):
    base, queries = data
    flat = build_index(base, metric=metric, backend="faiss")
    sharded = build_index(base, metric=metric, backend="faiss", devices=["cpu", "cpu", "cpu"])
    assert type(sharded._searched_faiss()).__name__ == "IndexShards"
    for k in (10, 1200):
        f_s, f_i = flat.search(queries, k)
        s_s, s_i = sharded.search(queries, k)
        assert np.array_equal(s_i, f_i)
        np.testing.assert_allclose(s_s, f_s, rtol=0, atol=1e-5)
    sharded.add(base[:5])  # the sharded copy is rebuilt after an add
    assert sharded.search(queries[:1], 1)[1].shape == (1, 1) and sharded._sharded.ntotal == len(base) + 5


# ----------------------------------------------------------------------------- devices
@pytest.mark.parametrize("devices, message", [
    ("tpu", "bad device 'tpu' in devices: use cpu, cuda or cuda:N"),
    (["cpu", "cuda:x"], "bad device 'cuda:x' in devices: use cpu, cuda or cuda:N"),
    ([], "devices must name at least one device (e.g. cuda:0,cuda:1)"),
    ([3], "bad device 3 in devices: use cpu, cuda or cuda:N"),
])
def test_bad_devices(devices, message):
    with pytest.raises(KgprobeError) as err:
        resolve_devices(devices)
    assert str(err.value) == message


@pytest.mark.skipif(GPUS > 0, reason="checks the message of a machine without CUDA")
def test_cuda_device_without_a_gpu():
    with pytest.raises(KgprobeError) as err:
        VectorIndex(4, devices="cpu,cuda:0")
    assert str(err.value) == "device 'cuda:0' in devices: no CUDA GPU is visible"


def test_cuda_index_beyond_the_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(KgprobeError) as err:
        resolve_devices("cuda:0,cuda:2")
    assert str(err.value) == "device 'cuda:2' in devices: only 2 CUDA GPU(s) visible (cuda:0 to cuda:1)"
    assert resolve_devices(" cuda:1 ,CPU") == [torch.device("cuda", 1), torch.device("cpu")]
    if not faiss_has_gpu():  # faiss's own sharding is asked for but this faiss cannot
        with pytest.raises(KgprobeError, match="faiss shards need faiss with GPU support and only CUDA devices"):
            VectorIndex(4, backend="faiss", devices="cuda:0,cuda:1")


def test_what_cannot_be_sharded():
    with pytest.raises(KgprobeError, match="cannot shard a 'hnsw' index over cpu,cpu: faiss has no GPU HNSW"):
        VectorIndex(4, kind="hnsw", devices="cpu,cpu")
    with pytest.raises(KgprobeError, match="cannot shard a 'ivf' index over cpu: that needs faiss with GPU"):
        VectorIndex(4, kind="ivf", devices="cpu")
    with pytest.raises(KgprobeError, match="faiss shards over CPU devices hold flat indexes only"):
        VectorIndex(4, kind="ivf", backend="faiss", devices="cpu,cpu")


def _run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_cli_neighbors_devices(tmp_path, capsys):
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"e{i}" for i in range(50)]
    EntityEmbeddings(ids=ids, labels=ids, vectors=vectors, meta={"model": "minilm-l6", "normalized": True}).save(
        tmp_path / "e")
    build_index(vectors).save(tmp_path / "e" / "index.faiss")
    code, plain, err = _run(["neighbors", tmp_path / "e", "--entity", "e7", "-k", "6", "--json"], capsys)
    assert code == 0, err
    for extra in (["--devices", "cpu,cpu"], ["--devices", "cpu,cpu,cpu", "--exact"]):
        code, out, err = _run(["neighbors", tmp_path / "e", "--entity", "e7", "-k", "6", "--json", *extra], capsys)
        assert code == 0 and json.loads(out)["results"] == json.loads(plain)["results"], err
    code, out, err = _run(["neighbors", tmp_path / "e", "--entity", "e7", "--devices", "cpu,gpu0"], capsys)
    assert code == 2 and out == ""
    assert err == "kgprobe: error: bad device 'gpu0' in devices: use cpu, cuda or cuda:N\n"


# ----------------------------------------------------------------------------- GPUs
@needs_gpus(1)
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_torch_shards_on_gpus_equal_the_cpu(data, metric):
    base, queries = data
    devices = [f"cuda:{i % GPUS}" for i in range(max(2, GPUS))]
    index = build_index(base, metric=metric, backend="torch", devices=devices)
    assert index.on_gpu and {s.device.type for s in index._shards.shards} == {"cuda"}
    s_gpu, i_gpu = index.search(queries, 50)
    s_cpu, i_cpu = build_index(base, metric=metric, backend="torch", device="cpu").search(queries, 50)
    assert np.array_equal(i_gpu, i_cpu)  # no near-ties in this data
    np.testing.assert_allclose(s_gpu, s_cpu, rtol=0, atol=1e-4)


@needs_gpus(2)
def test_faiss_gpu_shards_equal_flat(data):
    if not faiss_has_gpu():
        pytest.skip("needs CUDA GPUs and faiss with GPU support")
    base, queries = data
    index = build_index(base, devices=["cuda:0", "cuda:1"])
    assert index.backend == "faiss" and index.on_gpu
    f_s, f_i = build_index(base, backend="faiss", device="cpu").search(queries, 20)
    s, i = index.search(queries, 20)
    assert np.array_equal(i, f_i)
    np.testing.assert_allclose(s, f_s, rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------- the benchmark script
def test_scale_index_benchmark_runs_small(tmp_path):
    from conftest import load_bench

    bench = load_bench("scale_index")
    result = bench.measure(n=700, dim=8, nq=30, k=4, devices="cpu", repeats=2, log=lambda msg: None)
    assert [r["shards"] for r in result["runs"]] == [1, 2] and result["all_same_ids"]
    assert result["runs"][1]["devices"] == ["cpu", "cpu"] and len(result["runs"][1]["times_s"]) == 2
    assert result["machine"]["device"] == "cpu" and "no speed-up is expected" in result["note"]
    assert [len(p) for p in bench.shard_plans([torch.device("cuda", 0)] * 3, None)] == [1, 2, 3]
    out = tmp_path / "scale.json"
    bench.main(["--n", "300", "--dim", "4", "--queries", "5", "--repeats", "1", "--out", str(out)])
    assert json.loads(out.read_text())["settings"]["n"] == 300
