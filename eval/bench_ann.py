"""Approximate nearest-neighbour search at size: memory, build time, queries/s and recall@10
(issue #22, part 4).

Data: ``--n`` base vectors and ``--queries`` queries of dimension ``--dim`` drawn from one seeded
Gaussian mixture (``--clusters`` centres ~ N(0, I/d), each point = its centre + N(0, s^2 I/d)
with s = ``--spread``, then L2-normalised), so nearest neighbours have structure and recall is
meaningful (uniform random vectors are the worst case; eval/bench_knn.py measures that). Exact
top-10 by inner product (faiss ``IndexFlatIP``) is the reference.

Configurations, all inner product, ``nlist`` = the one ``kgprobe.index.plan.choose_index`` uses
for ``n`` (``auto_nlist``: 4 sqrt(n)):

* ``Flat``: ``IndexFlatIP`` (recall 1 by construction: the check of the recall computation);
* ``IVF-Flat``: ``IVF{nlist},Flat``;
* ``IVF-PQ m``: ``IVF{nlist},PQ{m}`` with 8-bit codes, m = 16, 32, 48, 64 (64 is what
  ``choose_index`` picks above 5M vectors of dim 384);
* ``OPQ32+IVF-PQ32``: ``index_factory("OPQ32,IVF{nlist},PQ32")``;
* ``HNSW M``: ``IndexHNSWFlat`` with M = 16, 32 (efConstruction 40, faiss's default).

IVF coarse quantizers are trained on a seeded subsample of ``64 * nlist`` points (10 k-means
iterations, faiss's default); IVF-Flat and the IVF-PQ configurations share one trained coarse
quantizer and one assignment of the base vectors (``add_core`` with the precomputed lists), so
their ``build_seconds`` = the shared coarse training + assignment (``shared_seconds``) + their own
training and adding (``own_seconds``); OPQ rotates the space and trains its own. HNSW is built by
adding chunks of 100k and stops early (measured on the first rows only, its exact reference
recomputed on them) when the build of both M values would exceed ``--hnsw-budget`` seconds.

Per configuration: ``index_bytes`` (the serialized index: ``faiss.write_index`` to a file, the
bytes ``faiss.serialize_index`` returns), bytes per vector, build seconds, and for each
``nprobe`` / ``efSearch``: queries/s (``--queries`` queries, ``--threads`` faiss threads, best of
``--repeats`` searches) and recall@10 = |top-10 found ∩ exact top-10| / 10, averaged over queries.
The record also keeps ``choose_index``'s plan for this ``n`` and its score, the plans for 2M and
10M, and the projected memory of every configuration at 2M, 4.6M (Wikidata5M) and 10M vectors.

    python eval/bench_ann.py                          # 1M x 384, eval/results/ann.json (~10-15 min, 2 cores)
    python eval/bench_ann.py --quick --out /tmp/a.json   # 2,000 x 64, seconds (the test)
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "eval"))

from bench_knn import recall  # noqa: E402  (eval/bench_knn.py: the same recall@k)
from kgprobe.atomic import write_json  # noqa: E402
from kgprobe.index.plan import auto_nlist, choose_index  # noqa: E402
from machine import machine_info  # noqa: E402  (eval/machine.py, beside this script)

PQ_MS = (16, 32, 48, 64)
HNSW_MS = (16, 32)
TRAIN_PER_CELL = 64
CHUNK = 100_000
PROJECT_TO = {"2M": 2_000_000, "Wikidata5M (4.6M)": 4_600_000, "10M": 10_000_000}


def mixture(n: int, nq: int, dim: int, clusters: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` base and ``nq`` query vectors from one Gaussian mixture, L2-normalised, float32."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
    weights = rng.dirichlet(np.full(clusters, 2.0))  # uneven cluster sizes

    def draw(count: int) -> np.ndarray:
        out = np.empty((count, dim), dtype=np.float32)
        for start in range(0, count, CHUNK):
            stop = min(start + CHUNK, count)
            which = rng.choice(clusters, size=stop - start, p=weights)
            x = rng.standard_normal((stop - start, dim), dtype=np.float32)
            x *= np.float32(spread / np.sqrt(dim))
            x += centres[which]
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[start:stop] = x
        return out

    return draw(n), draw(nq)


def index_bytes(faiss, index) -> int:
    """The size of ``faiss.serialize_index(index)``, via a temporary file (no second copy in memory)."""
    with tempfile.TemporaryDirectory(prefix="bench_ann_") as tmp:
        path = os.path.join(tmp, "index.faiss")
        faiss.write_index(index, path)
        return os.path.getsize(path)


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def searches(faiss, index, queries: np.ndarray, exact: np.ndarray, *, param: str | None, values, repeats: int,
             k: int = 10) -> list[dict]:
    rows = []
    for value in values or [None]:
        if param == "nprobe":
            faiss.extract_index_ivf(index).nprobe = int(value)
        elif param == "efSearch":
            index.hnsw.efSearch = int(value)
        times, ids = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            _, ids = index.search(queries, k)
            times.append(time.perf_counter() - t0)
        row = {"recall_at_10": recall(ids, exact[:, :k]), "queries_per_s": round(len(queries) / min(times), 1),
               "search_seconds_best": round(min(times), 4), "search_seconds": [round(t, 4) for t in times]}
        if param:
            row[param] = int(value)
        rows.append(row)
    return rows


def measure(n: int = 1_000_000, dim: int = 384, nq: int = 1000, *, clusters: int = 1000, spread: float = 1.0,
            threads: int = 2, repeats: int = 2, hnsw_budget: float = 360.0, pq_ms=PQ_MS, opq_m: int = 32,
            train_per_cell: int = TRAIN_PER_CELL, pq_niter: int | None = None, seed: int = 0, log=print) -> dict:
    import faiss

    faiss.omp_set_num_threads(threads)
    machine = machine_info()  # at the start: its load average is the one before the run
    ip = faiss.METRIC_INNER_PRODUCT
    t0 = time.perf_counter()
    base, queries = mixture(n, nq, dim, clusters, spread, seed)
    log(f"data {n:,} x {dim} in {time.perf_counter() - t0:.1f} s")
    nlist = auto_nlist(n)
    plan = choose_index(n, dim)
    ivf_probes = sorted({16, 64, plan.nprobe or 16, min(nlist, 256)} & set(range(1, nlist + 1)))
    configs: list[dict] = []

    def record(name: str, index, build: float, *, param=None, values=None, exact_ids=None, rows=None,
               extra=None) -> dict:
        size = index_bytes(faiss, index)
        count = index.ntotal
        ref = exact if exact_ids is None else exact_ids
        row = {"name": name, "vectors": count, "index_bytes": size, "bytes_per_vector": round(size / count, 2),
               "build_seconds": round(build, 2), **(extra or {}),
               "searches": searches(faiss, index, queries, ref, param=param, values=values, repeats=repeats),
               "peak_rss_bytes_so_far": _rss()}
        configs.append(row)
        best = max(row["searches"], key=lambda s: s["recall_at_10"])
        log(f"{name}: {size / 2**20:,.1f} MiB, build {build:.1f} s, best recall@10 {best['recall_at_10']} at "
            f"{best['queries_per_s']:.0f} q/s")
        return row

    # exact reference
    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(dim)
    flat.add(base)
    built = time.perf_counter() - t0
    _, exact = flat.search(queries, 10)
    record("Flat", flat, built)
    del flat

    # shared coarse quantizer for IVF-Flat and IVF-PQ
    rng = np.random.default_rng(seed + 7)
    n_train = min(n, train_per_cell * nlist)
    sample = base[np.sort(rng.choice(n, n_train, replace=False))] if n_train < n else base
    t0 = time.perf_counter()
    quantizer = faiss.IndexFlatIP(dim)
    clus = faiss.Clustering(dim, nlist)
    clus.seed = seed
    clus.train(sample, quantizer)  # k-means, 10 iterations; the centroids end up in `quantizer`
    coarse_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, assign = quantizer.search(base, 1)
    assign = np.ascontiguousarray(assign.reshape(-1), dtype=np.int64)
    assign_s = time.perf_counter() - t0
    shared = coarse_s + assign_s
    log(f"coarse quantizer: {nlist} cells trained on {n_train:,} points in {coarse_s:.1f} s, "
        f"{n:,} vectors assigned in {assign_s:.1f} s")

    def add_assigned(index) -> None:
        for start in range(0, n, CHUNK):
            stop = min(start + CHUNK, n)
            index.add_core(stop - start, faiss.swig_ptr(base[start:stop]), None, faiss.swig_ptr(assign[start:stop]))

    t0 = time.perf_counter()
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
    add_assigned(ivf)
    own = time.perf_counter() - t0
    row = record(f"IVF{nlist},Flat", ivf, shared + own, param="nprobe", values=ivf_probes,
                 extra={"own_seconds": round(own, 2), "shared_seconds": round(shared, 2), "kind": "ivf"})
    del ivf
    plan_row = row

    skipped = [m for m in pq_ms if dim % m]
    for m in pq_ms:
        if dim % m:
            continue
        t0 = time.perf_counter()
        pq = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, ip)
        if pq_niter:
            pq.pq.cp.niter = pq_niter
        pq.train(sample)  # the coarse quantizer is trained: only the PQ codebooks are
        add_assigned(pq)
        own = time.perf_counter() - t0
        record(f"IVF{nlist},PQ{m}", pq, shared + own, param="nprobe", values=ivf_probes,
               extra={"own_seconds": round(own, 2), "shared_seconds": round(shared, 2), "kind": "ivfpq", "pq_m": m})
        del pq

    if dim % opq_m == 0:
        t0 = time.perf_counter()
        opq = faiss.index_factory(dim, f"OPQ{opq_m},IVF{nlist},PQ{opq_m}", ip)
        faiss.extract_index_ivf(opq).cp.seed = seed
        if pq_niter:
            faiss.downcast_VectorTransform(opq.chain.at(0)).niter = pq_niter
            faiss.downcast_index(faiss.extract_index_ivf(opq)).pq.cp.niter = pq_niter
        opq.train(sample)
        opq.add(base)
        record(f"OPQ{opq_m},IVF{nlist},PQ{opq_m}", opq, time.perf_counter() - t0, param="nprobe", values=ivf_probes,
               extra={"kind": "opq+ivfpq", "pq_m": opq_m})
        del opq
    quantizer = sample = assign = None  # free them before HNSW

    # HNSW, in chunks, stopping early when the build would run over the budget
    spent = 0.0
    for i, m in enumerate(HNSW_MS):
        hnsw = faiss.IndexHNSWFlat(dim, m, ip)
        t0 = time.perf_counter()
        stopped = False
        for start in range(0, n, CHUNK):
            hnsw.add(base[start:start + CHUNK])
            elapsed = time.perf_counter() - t0
            # this M's rate so far; M=32 costs about 1.6x M=16 (faiss's graph work grows with M)
            left = elapsed / hnsw.ntotal * (n - hnsw.ntotal) + sum(
                elapsed / hnsw.ntotal * n * (HNSW_MS[j] / m) ** 0.7 for j in range(i + 1, len(HNSW_MS)))
            if hnsw.ntotal < n and spent + elapsed + left > hnsw_budget and hnsw.ntotal >= min(n, 300_000):
                stopped = True
                break
        built = time.perf_counter() - t0
        spent += built
        rows = hnsw.ntotal
        exact_ids = exact
        if rows < n:
            ref = faiss.IndexFlatIP(dim)
            ref.add(base[:rows])
            _, exact_ids = ref.search(queries, 10)
            del ref
        record(f"HNSW{m},Flat", hnsw, built, param="efSearch", values=[16, 64, 128], exact_ids=exact_ids,
               extra={"kind": "hnsw", "M": m, "efConstruction": hnsw.hnsw.efConstruction,
                      "stopped_early": stopped,
                      **({"note": f"built on the first {rows:,} vectors only (the build of both M values at "
                                  f"{n:,} would exceed {hnsw_budget:.0f} s); recall against the exact top-10 of "
                                  "those rows"} if stopped else {})})
        del hnsw

    # the plan's choice and its score
    chosen = next(s for s in plan_row["searches"] if s["nprobe"] == plan.nprobe) if plan.kind == "ivf" else None
    plans = {}
    for label, count in {"measured": n, **PROJECT_TO}.items():
        p = choose_index(count, dim)
        plans[label] = {"n": count, "kind": p.kind, "nlist": p.nlist, "nprobe": p.nprobe, "pq_m": p.pq_m,
                        "factory": p.factory, "reason": p.reason}
    projected = {}
    for c in configs:
        per = c["index_bytes"] / c["vectors"]
        projected[c["name"]] = {label: int(per * count) for label, count in PROJECT_TO.items()}
    return {
        "settings": {"n": n, "dim": dim, "queries": nq, "k": 10, "metric": "ip", "clusters": clusters,
                     "spread": spread, "seed": seed, "threads": threads, "repeats": repeats, "nlist": nlist,
                     "ivf_training_points": n_train, "hnsw_budget_s": hnsw_budget, "pq_ms": list(pq_ms),
                     "pq_ms_skipped_not_dividing_dim": skipped, "opq_m": opq_m, "pq_kmeans_niter": pq_niter or 25,
                     "data": "Gaussian mixture (uneven cluster weights), L2-normalised, float32"},
        "machine": machine,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "shared_ivf": {"coarse_training_seconds": round(coarse_s, 2), "assignment_seconds": round(assign_s, 2)},
        "configs": configs,
        "plan": {**plans["measured"], "measured_as": plan_row["name"] if plan.kind == "ivf" else None,
                 "score": chosen},
        "plans_at": plans,
        "projected_index_bytes": projected,
        "projection_note": "bytes per vector measured at n, times the count (coarse centroids and codebooks are "
                           "a fixed few MB, included pro rata); nlist would grow as 4 sqrt(n)",
        "not_measured": {
            "10M": f"10M x {dim} float32 is {10_000_000 * dim * 4 / 2**30:.1f} GiB of raw vectors alone (plus the "
                   "exact reference and an index copy): more than this 24 GiB machine shared with other jobs "
                   "allows; see projected_index_bytes",
        },
        "peak_rss_bytes": _rss(),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--spread", type=float, default=1.0, help="noise norm relative to a centre's (default 1.0)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--hnsw-budget", type=float, default=360.0, help="seconds for the HNSW builds (default 360)")
    ap.add_argument("--pq-m", type=int, action="append", default=None,
                    help=f"PQ code bytes to try (repeatable; default {', '.join(map(str, PQ_MS))}; those not dividing "
                         "--dim are skipped and recorded)")
    ap.add_argument("--opq-m", type=int, default=32)
    ap.add_argument("--train-per-cell", type=int, default=TRAIN_PER_CELL,
                    help=f"IVF training points per cell (default {TRAIN_PER_CELL})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="2,000 x 64, 50 queries, 20 clusters: seconds (the test)")
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "ann.json")
    args = ap.parse_args(argv)
    pq_niter = None
    if args.quick:
        args.n, args.dim, args.queries, args.clusters, args.repeats = 2000, 64, 50, 20, 1
        args.pq_m, args.opq_m, pq_niter = args.pq_m or [8, 16], 8, 4
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    result = measure(args.n, args.dim, args.queries, clusters=args.clusters, spread=args.spread, threads=args.threads,
                     repeats=args.repeats, hnsw_budget=args.hnsw_budget, pq_ms=tuple(args.pq_m or PQ_MS),
                     opq_m=args.opq_m, train_per_cell=args.train_per_cell, pq_niter=pq_niter, seed=args.seed, log=log)
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    result["quick"] = args.quick
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    log(f"wrote {args.out} ({result['total_seconds']} s)")
    return result


if __name__ == "__main__":
    main()
