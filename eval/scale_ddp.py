"""Data-parallel link-prediction training on CPUs (torchrun, gloo): speed and MRR with 1 and 2 ranks.

Every run is ``kgprobe linkpred train`` on the UMLS inductive split (bag-of-words encoder,
TransE-L2, in-batch negatives with InfoNCE, ``replacement=false`` and ``--num-negatives`` = 2 x
global batch - 2, so each positive meets every other entity of the global batch once), the same
number of epochs, for each seed:

* ``1rank_b{B}``: one process, batch ``B``, one thread (a rank of the 2-rank run has one; a
  one-process run's numbers do not depend on its thread count);
* ``2ranks_b{B/2}``: ``--nproc 2`` with ``--batch-size B/2``: the global batch is ``B`` and the
  in-batch negatives are gathered from both ranks (the same run as ``1rank_b{B}`` up to float
  rounding; TransE-L2 because L1's sign gradient lets AdamW magnify that rounding, see
  docs/linkpred.md);
* ``1rank_b{B/2}``: one process with batch ``B/2`` and ``B - 2`` negatives: the negatives one rank
  would have without the gathering (and twice the optimiser steps);

and, for the first seed only, ``1rank_b{B}_allcores``: ``1rank_b{B}`` with a thread per core.

Training speed is training triples per second of the epochs' ``train_seconds`` (validation and
process start excluded; ``wall_seconds`` has everything). The MRR is the test MRR of the best
validation epoch.

    python eval/scale_ddp.py --out eval/results/scale_ddp_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from kgprobe.atomic import write_json  # noqa: E402
from kgprobe.linkpred.distributed import available_slots  # noqa: E402
from kgprobe.linkpred.run import load_split_data  # noqa: E402
from machine import machine_info  # noqa: E402

SETTING = ["--encoder", "bow", "--scorer", "transe", "--scorer-option", "p=2", "--loss", "infonce",
           "--loss-option", "tau=0.5", "--sampler", "in-batch", "--sampler-option", "replacement=false", "--lr", "1e-2",
           "--device", "cpu", "--quiet"]


def _train(split: Path, out: Path, *, nproc: int, batch: int, global_batch: int, threads: int, epochs: int,
           seed: int) -> dict:
    """One ``kgprobe linkpred train`` in a process of its own; its speed and metrics."""
    args = [sys.executable, "-m", "kgprobe", "linkpred", "train", "--data", str(split), "--out", str(out),
            "--batch-size", str(batch), "--num-negatives", str(2 * global_batch - 2), "--epochs", str(epochs),
            "--seed", str(seed), *SETTING, *(["--nproc", str(nproc)] if nproc > 1 else [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"training failed ({done.returncode}): {done.stderr[-2000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    test = json.loads((out / "test_metrics.json").read_text())
    n_train = len(load_split_data(split).triples["train"])
    train_seconds = sum(r["train_seconds"] for r in records)
    return {"processes": nproc, "batch_per_process": batch, "global_batch": global_batch,
            "threads_per_process": threads, "num_negatives": 2 * global_batch - 2, "epochs": epochs, "seed": seed,
            "train_triples": n_train, "train_seconds": round(train_seconds, 2), "wall_seconds": round(wall, 1),
            "triples_per_second": round(n_train * epochs / train_seconds, 1),
            "loss_per_epoch": [round(r["loss"], 5) for r in records],
            "valid_mrr_per_epoch": [round(r["valid"]["both.realistic.mrr"], 4) for r in records],
            "test_mrr": round(test["both.realistic.mrr"], 4),
            "test_hits_at_10": round(test["both.realistic.hits_at_10"], 4), "best_epoch": test["best_epoch"]}


def measure(*, data: str | Path | None = None, epochs: int = 5, batch: int = 64, seeds: tuple[int, ...] = (0, 1),
            workdir: str | Path | None = None) -> dict:
    """The runs of the module docstring on ``data`` (default: UMLS, built into ``workdir``), for each
    seed; returns the machine, the setting, every run and the summary figures."""
    if batch % 2:
        raise SystemExit("--batch must be even (two ranks take half each)")
    machine = machine_info(torch.device("cpu"))  # the load average before the runs
    cores = available_slots(torch.device("cpu"))[0]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        split = Path(data) if data else Path(tmp) / "umls"
        if not data:
            subprocess.run([sys.executable, "-m", "kgprobe", "data", "build", "umls", "--inductive", "--out",
                            str(split)], cwd=ROOT, check=True, capture_output=True)
        one, two, half = f"1rank_b{batch}", f"2ranks_b{batch // 2}", f"1rank_b{batch // 2}"
        plans = {one: (1, batch, batch, 1), two: (2, batch // 2, batch, max(1, cores // 2)),
                 half: (1, batch // 2, batch // 2, 1), f"{one}_allcores": (1, batch, batch, cores)}
        runs = {f"{name}_seed{seed}": _train(split, Path(tmp) / f"{name}_seed{seed}", nproc=n, batch=b,
                                             global_batch=g, threads=t, epochs=epochs, seed=seed)
                for seed in seeds for name, (n, b, g, t) in plans.items()
                if seed == seeds[0] or not name.endswith("_allcores")}

    def mean(name: str, key: str, over: tuple[int, ...] = seeds) -> float:
        return round(sum(runs[f"{name}_seed{s}"][key] for s in over) / len(over), 4)

    speed = {name: mean(name, "triples_per_second", seeds[:1]) for name in plans}
    summary = {"triples_per_second_first_seed": speed,
               "speedup_2ranks_vs_1rank_1thread": round(speed[two] / speed[one], 3),
               "speedup_2ranks_vs_1rank_allcores": round(speed[two] / speed[f"{one}_allcores"], 3),
               "test_mrr_mean": {name: mean(name, "test_mrr") for name in (one, two, half)},
               "test_mrr_per_seed": {name: [runs[f"{name}_seed{s}"]["test_mrr"] for s in seeds]
                                     for name in (one, two, half)},
               "max_test_mrr_diff_1rank_vs_2ranks": max(abs(runs[f"{one}_seed{s}"]["test_mrr"]
                                                            - runs[f"{two}_seed{s}"]["test_mrr"]) for s in seeds)}
    return {"machine": machine, "cpu_cores_usable": cores,
            "setting": {"data": str(data or "umls (kgprobe data build umls --inductive)"), "epochs": epochs,
                        "global_batch": batch, "seeds": list(seeds), "options": SETTING},
            "runs": runs, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="An inductive split directory (default: UMLS, built here).")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64, help="The global batch B (even).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "scale_ddp_cpu.json")
    args = parser.parse_args()
    result = measure(data=args.data, epochs=args.epochs, batch=args.batch, seeds=tuple(args.seeds))
    write_json(args.out, result, indent=2)
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
