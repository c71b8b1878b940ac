"""Benchmark: R relations in one harvest job, one after the other in this process (``--executor
local``) against each as a Ray task, the tasks sharing the machine's device (``--executor ray``):
the same code (:func:`kgprobe.harvest.many.harvest_many`), the same relations and options, in the
same run on the same machine.

For each executor: the job's wall time (model loads and Ray's worker processes included; starting
the local Ray instance is measured apart), output tuples per second and LM tokens per second
(tokens the LM ran, prefixes included, over the job's wall time), and a digest of the merged
``kg.ttl``: the two executors must give the same KG.

Default: the first R=4 relation files of kg_data/relations/ with smollm2-135m and a small search
(top-k 10), so that both jobs finish in minutes on a CPU. ``--local-threads`` sets the in-process
job's torch threads (each Ray task has ``--cpus-per-relation``). On a GPU machine each Ray task
gets 1/R of the GPU (``--gpus-per-relation``).

Writes the JSON to --out (default: print only).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from machine import machine_info  # noqa: E402  (eval/machine.py, beside this script)

ROOT = Path(__file__).resolve().parent.parent
#: a small search: this benchmark compares executors, not harvest quality (see bench_harvest.py)
SMALL_SEARCH = {"first_beam": 32, "first_candidates": 16, "branch": 4, "max_entity_tokens": 2}


def measure(relations: list[str | Path], *, model: str, device: str, executor: str, out: str | Path,
            top_k: int = 20, search: dict | None = None, batch_size: int = 64, cpus_per_relation: float = 1.0,
            gpus_per_relation: float = 0.0, ray_address: str | None = None) -> dict:
    """One harvest job of ``relations`` into ``out`` (a new folder) and what it did per second.
    For ``executor="ray"`` a Ray instance this process already has is used (else one is started,
    and its start counts)."""
    from kgprobe.harvest.many import harvest_many
    from kgprobe.harvest.run import HarvestOptions

    options = HarvestOptions(model=model, top_k=top_k, search=SMALL_SEARCH if search is None else search)
    start = time.perf_counter()
    done = harvest_many(relations, out, options=options, device=device, batch_size=batch_size, executor=executor,
                        ray_address=ray_address, cpus_per_relation=cpus_per_relation,
                        gpus_per_relation=gpus_per_relation, progress=False, echo=lambda s: None)
    wall = time.perf_counter() - start
    tuples = sum(r.tuples for r in done.relations)
    tokens = sum(r.lm_tokens for r in done.relations)
    return {
        "executor": executor, "relations": len(done.relations), "wall_s": round(wall, 2), "tuples": tuples,
        "kg_triples": done.triples, "lm_tokens": tokens,
        "lm_forward_passes": sum(r.lm_forward_passes for r in done.relations),
        "tuples_per_s": round(tuples / wall, 3), "lm_tokens_per_s": round(tokens / wall, 1),
        "sum_of_relation_seconds": round(sum(r.seconds for r in done.relations), 2),
        "per_relation": [{"relation": r.relation, "tuples": r.tuples, "seconds": r.seconds,
                          "lm_tokens": r.lm_tokens, **r.precision} for r in done.relations],
        "kg_ttl_sha256": hashlib.sha256(done.kg_ttl.read_bytes()).hexdigest(),
        "cpus_per_relation": cpus_per_relation if executor == "ray" else None,
        "gpus_per_relation": gpus_per_relation if executor == "ray" else None,
        "torch_threads_in_process": torch.get_num_threads(),
    }


def _ray_start(cpus: int | None, address: str | None) -> float:
    """Seconds to start (or join) the Ray instance both measurements of the Ray executor use."""
    import logging

    import ray

    start = time.perf_counter()
    ray.init(address=address, num_cpus=None if address else cpus, include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    files = sorted((ROOT / "kg_data" / "relations").glob("*.yaml"))
    ap.add_argument("--relations", nargs="+", default=None, help="relation files (default: the first --count)")
    ap.add_argument("--count", type=int, default=4, help="R: how many of kg_data/relations/ (default 4)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--local-threads", type=int, default=None,
                    help="torch threads of the in-process job (default: torch's, all cores)")
    ap.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    ap.add_argument("--ray-address", default=None, help="an existing Ray cluster instead of a local instance")
    ap.add_argument("--cpus-per-relation", type=float, default=1.0)
    ap.add_argument("--gpus-per-relation", type=float, default=None, help="default: 1/R on a GPU machine, else 0")
    ap.add_argument("--out", default=None, help="write the JSON here too")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    relations = args.relations or [str(p) for p in files[: args.count]]
    cuda = torch.cuda.is_available() and args.device != "cpu"
    gpus = args.gpus_per_relation if args.gpus_per_relation is not None else (1 / len(relations) if cuda else 0.0)
    machine = machine_info(torch.device("cuda" if cuda else "cpu"))
    common = dict(model=args.model, top_k=args.top_k)
    if args.local_threads:
        torch.set_num_threads(args.local_threads)
    with tempfile.TemporaryDirectory() as tmp:
        local = measure(relations, device=args.device, executor="local", out=Path(tmp) / "local", **common)
        ray_start = _ray_start(args.ray_cpus, args.ray_address)
        on_ray = measure(relations, device="auto" if gpus else "cpu", executor="ray", out=Path(tmp) / "ray",
                         cpus_per_relation=args.cpus_per_relation, gpus_per_relation=gpus, **common)
    import ray

    ray_cpus = ray.cluster_resources().get("CPU")
    ray.shutdown()
    result = {
        "benchmark": "scale_harvest", "machine": machine, "relations": [Path(r).stem for r in relations],
        "model": args.model, "top_k": args.top_k, "search": SMALL_SEARCH,
        "ray_start_s": round(ray_start, 2), "ray_cpus": ray_cpus, "local": local, "ray": on_ray,
        "same_kg": local["kg_ttl_sha256"] == on_ray["kg_ttl_sha256"],
        "ray_over_local_tuples_per_s": round(on_ray["tuples_per_s"] / local["tuples_per_s"], 3),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
