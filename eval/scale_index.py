"""Search throughput of an exact index split into 1 vs N shards (issue #21, part 3).

Random unit vectors (normal, L2-normalised, seeded): ``--n`` base rows of ``--dim``, ``--queries``
queries, exact top-``k`` by inner product, through ``VectorIndex(..., devices=[...])``:

* on a machine with CUDA GPUs, 1, 2, 4, ... shards over the GPUs (``cuda:0``, ``cuda:1``, ...; with
  one GPU, 1 and 2 shards on it): the torch backend's row shards, and faiss's own sharding when
  faiss has GPU support;
* on a CPU, 1 and 2 shards over ``"cpu"`` (torch backend). CPU shards share the same cores, so no
  speed-up is expected: this measures what the split and the merge cost.

Every setting is built, searched once to warm up, then timed ``--repeats`` times, the settings
taking turns within each repeat (on a shared machine a passing load then falls on all of them);
the JSON keeps every time (wall clock), the best, the median and queries/s of both, and whether
the ids equal those of the first setting, 1 shard (``same_ids``: the sharded search must return
exactly the unsharded result).

    python eval/scale_index.py --out /work/notes/scale_index_cpu.json      # 200k x 384, 1000 queries
    python eval/scale_index.py --n 20000 --queries 200                     # a quick run, printed only
    python eval/scale_index.py --devices cuda:0,cuda:1 --out eval/results/scale_index_gpu.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kgprobe.atomic import write_json  # noqa: E402
from kgprobe.index.knn import VectorIndex, faiss_has_gpu  # noqa: E402
from kgprobe.index.shards import resolve_devices  # noqa: E402
from machine import machine_info  # noqa: E402  (eval/machine.py, beside this script)

CPU_NOTE = ("CPU shards share the same cores (the matmul of each shard already uses all torch threads), "
            "so no speed-up is expected; the ratio shows what the split and the merge cost.")
GPU_NOTE = ("Each GPU searches n/N rows, so the matmul work per GPU falls as 1/N and queries/s should grow "
            "close to N times once the per-shard work dominates (large n); at small n the query copies, "
            "the per-step synchronisation and the CPU merge of N x k candidates per query limit it.")


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _sync(devices: list[torch.device]) -> None:
    for d in {d for d in devices if d.type == "cuda"}:
        torch.cuda.synchronize(d)


def timed_search(index: VectorIndex, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Seconds of one search of all ``queries`` (GPUs synchronised before and after), and its ids."""
    devices = index.devices or [index.device]
    _sync(devices)
    t0 = time.perf_counter()
    _, ids = index.search(queries, k)
    _sync(devices)
    return time.perf_counter() - t0, ids


def summary(times: list[float], nq: int) -> dict:
    best = min(times)
    return {"times_s": [round(t, 4) for t in times], "best_s": round(best, 4),
            "median_s": round(statistics.median(times), 4), "queries_per_s": round(nq / best, 1),
            "queries_per_s_median": round(nq / statistics.median(times), 1)}


def shard_plans(devices: list[torch.device], max_shards: int | None) -> list[list[torch.device]]:
    """The device lists to compare: 1, 2, 4, ... shards up to ``max_shards`` (default: as many as
    devices, at least 2), shard ``i`` on ``devices[i % len(devices)]`` (on one GPU or the CPU,
    several shards share it)."""
    top = max_shards or max(2, len(devices))
    counts = sorted({min(2 ** i, top) for i in range(top.bit_length() + 1)})
    return [[devices[i % len(devices)] for i in range(c)] for c in counts]


def measure(n: int = 200_000, dim: int = 384, nq: int = 1000, k: int = 10, *, devices: str | None = None,
            max_shards: int | None = None, repeats: int = 3, seed: int = 0, log=print) -> dict:
    """Queries/s of 1 vs N shards on ``devices`` (default: every GPU, else the CPU); see the module."""
    if devices is None:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        devices = ",".join(f"cuda:{i}" for i in range(gpus)) if gpus else "cpu"
    devs = resolve_devices(devices)
    base, queries = unit_vectors(n, dim, seed), unit_vectors(nq, dim, seed + 1)
    backends = ["torch"] + (["faiss"] if faiss_has_gpu() and all(d.type == "cuda" for d in devs) else [])
    settings = []
    for backend in backends:
        for plan in shard_plans(devs, max_shards):
            t0 = time.perf_counter()
            index = VectorIndex(dim, kind="flat", metric="ip", backend=backend, devices=plan).add(base)
            built = time.perf_counter() - t0
            warm_up, _ = timed_search(index, queries[:64], k)  # includes faiss's clone to the GPUs
            settings.append((index, {"build_s": round(built, 3), "warm_up_64_queries_s": round(warm_up, 3)}))
    # the settings take turns within every repeat, so a load that comes and goes on a shared machine
    # falls on all of them alike
    times: list[list[float]] = [[] for _ in settings]
    found: list[np.ndarray | None] = [None for _ in settings]
    for _ in range(repeats):
        for i, (index, _) in enumerate(settings):
            seconds, found[i] = timed_search(index, queries, k)
            times[i].append(seconds)
    runs = []
    for (index, built), spent, ids in zip(settings, times, found):
        row = {"backend": index.backend, "shards": len(index.devices), "devices": [str(d) for d in index.devices],
               **built, **summary(spent, nq), "same_ids": bool(np.array_equal(ids, found[0]))}
        runs.append(row)
        log(f"{row['backend']:>5} {row['shards']} shard(s) on {','.join(row['devices'])}: "
            f"{row['queries_per_s']:.0f} queries/s (best {row['best_s']} s, median {row['median_s']} s), "
            f"same ids: {row['same_ids']}")
    for row in runs:
        one = next(r for r in runs if r["backend"] == row["backend"] and r["shards"] == 1)
        row["speedup_vs_1_shard"] = round(one["best_s"] / row["best_s"], 3)
    on_cpu = all(d.type == "cpu" for d in devs)
    return {"settings": {"n": n, "dim": dim, "queries": nq, "k": k, "metric": "ip", "repeats": repeats,
                         "seed": seed, "data": "random normal vectors, L2-normalised", "devices": devices},
            "machine": machine_info(devs[0]), "runs": runs, "note": CPU_NOTE if on_cpu else GPU_NOTE,
            "all_same_ids": all(r["same_ids"] for r in runs)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="base vectors (default 200000)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--devices", default=None, help="comma-separated (default: every GPU, else cpu)")
    parser.add_argument("--max-shards", type=int, default=None,
                        help="the most shards (default: the number of devices, at least 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here (else print it)")
    args = parser.parse_args(argv)
    result = measure(args.n, args.dim, args.queries, args.k, devices=args.devices, max_shards=args.max_shards,
                     repeats=args.repeats, seed=args.seed, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, result)
    else:
        print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
