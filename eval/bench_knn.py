"""Benchmark exact and approximate top-k search: faiss (via kgprobe's VectorIndex), torch, numpy.

Default size (ANCHORS §5): 10k queries over 100k x 384 float32 vectors (random normal,
L2-normalised, seeded), exact top-10 by inner product, measured in one run:

* ``faiss``: ``VectorIndex(kind="flat", backend="faiss")`` (IndexFlatIP, BLAS + heap);
* ``torch``: ``VectorIndex(kind="flat", backend="torch")`` (chunks of 1024 queries: mm + topk);
* ``numpy``: chunks of 1024 queries: ``q @ X.T``, ``argpartition``, sort of the top k.

Each is timed ``--repeats`` times (wall clock); the JSON keeps every time, the best and the median,
and the ratios torch/faiss and numpy/faiss (of the best times). Then recall@10 against the exact
result for IVF (``nlist`` 1024, several ``nprobe``) and HNSW (M=32, several ``efSearch``) with
build and search times. On a machine where ``torch.cuda.is_available()`` the torch backend also
runs on the GPU (absolute times; faiss-GPU too when installed).

Random normal vectors in 384 dimensions have no cluster structure, which is the hardest case for
IVF and HNSW: their recalls here are a lower bound of what real embeddings give. With
``--embeddings DIR`` (a ``kgprobe embed`` output) the IVF / HNSW part is repeated on those real
vectors (10k rows as queries, the rest as the base).

    python eval/bench_knn.py            # full size, writes eval/results/knn.json
    python eval/bench_knn.py --quick    # 1k x 20k x 384, a few seconds
    python eval/bench_knn.py --embeddings runs/wn_emb   # + recall on WordNet label embeddings
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kgprobe.atomic import write_json  # noqa: E402
from kgprobe.index.knn import VectorIndex, faiss_has_gpu  # noqa: E402
from machine import machine_info  # noqa: E402  (eval/machine.py, beside this script)


def data(n: int, nq: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, dim), dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = rng.standard_normal((nq, dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return base, queries


def numpy_search(queries: np.ndarray, base: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product with numpy alone (argpartition, then sort the k)."""
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    base_t = base.T
    for start in range(0, len(queries), chunk):
        sims = queries[start:start + chunk] @ base_t
        part = np.argpartition(sims, sims.shape[1] - k, axis=1)[:, -k:]
        part_scores = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_scores, axis=1)
        ids[start:start + chunk] = np.take_along_axis(part, order, axis=1)
        scores[start:start + chunk] = np.take_along_axis(part_scores, order, axis=1)
    return scores, ids


def timed(fn, repeats: int, sync=None):
    times, result = [], None
    for _ in range(repeats):
        if sync:
            sync()
        t0 = time.perf_counter()
        result = fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return result, {"times_s": [round(t, 4) for t in times], "best_s": round(min(times), 4),
                    "median_s": round(statistics.median(times), 4)}


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k."""
    k = exact.shape[1]
    hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact))
    return round(hits / (k * len(exact)), 4)


def agreement(ids: np.ndarray, ref: np.ndarray) -> float:
    """Fraction of queries whose top-k id set equals the reference's."""
    return round(float(np.mean([set(a.tolist()) == set(b.tolist()) for a, b in zip(ids, ref)])), 4)


def approximate(base: np.ndarray, queries: np.ndarray, exact_ids: np.ndarray, k: int, nlist: int, log) -> dict:
    """Recall@k against the exact ids, build and search times of IVF and HNSW."""
    dim = base.shape[1]
    t0 = time.perf_counter()
    ivf = VectorIndex(dim, kind="ivf", metric="ip", nlist=nlist, device="cpu").add(base)
    ivf_build = time.perf_counter() - t0
    ivf_rows = []
    for nprobe in (1, 8, 32, 128):
        ivf.set_search_params(nprobe=nprobe)
        (_, ids), t = timed(partial(ivf.search, queries, k), 1)  # partial: `del ivf` below frees the index
        ivf_rows.append({"nprobe": nprobe, "recall_at_k": recall(ids, exact_ids), "search_s": t["best_s"]})
        log(f"ivf nprobe={nprobe:<4} {ivf_rows[-1]}")
    del ivf
    t0 = time.perf_counter()
    hnsw = VectorIndex(dim, kind="hnsw", metric="ip", m=32, ef_construction=40, device="cpu").add(base)
    hnsw_build = time.perf_counter() - t0
    log(f"hnsw build {hnsw_build:.1f} s")
    hnsw_rows = []
    for ef in (16, 64, 256):
        hnsw.set_search_params(ef_search=ef)
        (_, ids), t = timed(lambda: hnsw.search(queries, k), 1)
        hnsw_rows.append({"ef_search": ef, "recall_at_k": recall(ids, exact_ids), "search_s": t["best_s"]})
        log(f"hnsw ef={ef:<4} {hnsw_rows[-1]}")
    return {"ivf": {"nlist": nlist, "build_s": round(ivf_build, 3), "runs": ivf_rows},
            "hnsw": {"m": 32, "ef_construction": 40, "build_s": round(hnsw_build, 3), "runs": hnsw_rows}}


def real_embeddings(directory: Path, nq: int, k: int, nlist: int, seed: int, log) -> dict:
    """The same IVF / HNSW settings on real sentence embeddings (an `kgprobe embed` output dir):
    ``nq`` random rows (seeded) are the queries, the other rows the base."""
    from kgprobe.index.store import EntityEmbeddings

    emb = EntityEmbeddings.load(directory)
    rng = np.random.default_rng(seed)
    is_query = np.zeros(len(emb), dtype=bool)
    is_query[rng.choice(len(emb), nq, replace=False)] = True
    base, queries = emb.vectors[~is_query], emb.vectors[is_query]
    flat = VectorIndex(emb.dim, kind="flat", metric="ip", device="cpu").add(base)
    (_, exact_ids), t = timed(lambda: flat.search(queries, k), 1)
    log(f"real embeddings: {len(base)} x {emb.dim}, {nq} queries, faiss flat {t['best_s']} s")
    out = {"source": str(directory), "model": emb.meta.get("model"), "text": emb.meta.get("text"),
           "n": int(len(base)), "nq": int(nq), "faiss_flat_s": t["best_s"]}
    out.update(approximate(base, queries, exact_ids, k, nlist, log))
    return out


def machine() -> dict:
    import faiss

    return machine_info() | {"faiss": faiss.__version__, "faiss_omp_threads": faiss.omp_get_max_threads(),
                             "faiss_gpu": faiss_has_gpu()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1k queries x 20k x 384 (smoke run)")
    parser.add_argument("--n", type=int, default=None, help="base vectors (default 100000; quick 20000)")
    parser.add_argument("--nq", type=int, default=None, help="queries (default 10000; quick 1000)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=1024, help="queries per chunk (torch, numpy)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embeddings", type=Path, default=None,
                        help="also measure IVF/HNSW recall on real vectors: a `kgprobe embed` output directory")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON output (default eval/results/knn.json; quick: knn_quick.json)")
    args = parser.parse_args(argv)
    n = args.n or (20_000 if args.quick else 100_000)
    nq = args.nq or (1_000 if args.quick else 10_000)
    nlist = 256 if args.quick else 1024
    out = args.out or ROOT / "eval" / "results" / ("knn_quick.json" if args.quick else "knn.json")
    k = args.k

    result: dict = {"config": {"n": n, "nq": nq, "dim": args.dim, "k": k, "chunk": args.chunk,
                               "repeats": args.repeats, "seed": args.seed, "data": "random normal, L2-normalised",
                               "metric": "inner product"},
                    "machine": machine()}
    base, queries = data(n, nq, args.dim, args.seed)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    # ---------------------------------------------------------------- exact
    flat = VectorIndex(args.dim, kind="flat", metric="ip", backend="faiss", device="cpu").add(base)
    (f_scores, f_ids), faiss_t = timed(lambda: flat.search(queries, k), args.repeats)
    log(f"faiss flat   {faiss_t}")
    tidx = VectorIndex(args.dim, kind="flat", metric="ip", backend="torch", device="cpu",
                       query_chunk=args.chunk).add(base)
    (t_scores, t_ids), torch_t = timed(partial(tidx.search, queries, k), args.repeats)  # `del tidx` below
    log(f"torch        {torch_t}")
    (n_scores, n_ids), numpy_t = timed(lambda: numpy_search(queries, base, k, args.chunk), args.repeats)
    log(f"numpy        {numpy_t}")
    result["exact"] = {
        "faiss_flat": faiss_t,
        "torch": {**torch_t, "query_chunk": args.chunk, "same_topk_as_faiss": agreement(t_ids, f_ids),
                  "max_abs_score_diff": float(np.abs(t_scores - f_scores).max())},
        "numpy": {**numpy_t, "query_chunk": args.chunk, "same_topk_as_faiss": agreement(n_ids, f_ids)},
        "ratio_torch_over_faiss": round(torch_t["best_s"] / faiss_t["best_s"], 3),
        "ratio_numpy_over_faiss": round(numpy_t["best_s"] / faiss_t["best_s"], 3),
        "ratio_torch_over_faiss_median": round(torch_t["median_s"] / faiss_t["median_s"], 3),
        "ratio_numpy_over_faiss_median": round(numpy_t["median_s"] / faiss_t["median_s"], 3),
    }
    del tidx

    result.update(approximate(base, queries, f_ids, k, nlist, log))
    if args.embeddings is not None:
        result["real_embeddings"] = real_embeddings(args.embeddings, nq, k, nlist, args.seed, log)

    # ---------------------------------------------------------------- GPU
    if torch.cuda.is_available():
        sync = torch.cuda.synchronize
        gidx = VectorIndex(args.dim, kind="flat", metric="ip", backend="torch", device="cuda",
                           query_chunk=args.chunk).add(base)
        gidx.search(queries[:16], k)  # warm-up: CUDA context, kernels
        (_, g_ids), gpu_t = timed(lambda: gidx.search(queries, k), args.repeats, sync)
        gpu = {"torch_cuda": {**gpu_t, "same_topk_as_faiss": agreement(g_ids, f_ids),
                              "note": "includes the host-to-device copy of the queries and the copy back"}}
        if faiss_has_gpu():
            fg = VectorIndex(args.dim, kind="flat", metric="ip", backend="faiss", device="cuda").add(base)
            fg.search(queries[:16], k)
            (_, fg_ids), fg_t = timed(lambda: fg.search(queries, k), args.repeats, sync)
            gpu["faiss_gpu_flat"] = {**fg_t, "same_topk_as_faiss": agreement(fg_ids, f_ids)}
        result["gpu"] = gpu
        log(f"gpu {gpu}")

    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    write_json(out, result)
    log(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
