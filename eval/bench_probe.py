"""Benchmark the value-vector scan and collect the concept-vector results into one JSON file.

1. **Scan speed**: ``scan_value_vectors`` (logit lens of every value vector, top-k tokens kept,
   chunk by chunk) against ``bare_matmul_seconds`` (the same chunked matmuls with nothing else),
   both on the same model in the same run, best of ``--repeats``. The ratio scan / matmul is the
   overhead of the norm, the top-k and the bookkeeping (target <= 1.5).
2. **Results of a concept-vector run** (``--run DIR``, a ``kgprobe probe`` / pipeline run
   directory): how many concepts were validated, under which criterion, and the per-method
   unlearning table (means over concepts, from unlearning_report.json).

On a machine with CUDA the scan is also timed on the GPU (a model with SmolLM2's shapes built
from its config: random weights cost the same per FLOP).

    python eval/bench_probe.py --run runs/concept_vectors/smollm2     # writes eval/results/probe.json
    python eval/bench_probe.py --quick                                # 4 layers of SmolLM2's shape
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "eval"))

from kgprobe.atomic import write_json  # noqa: E402
from kgprobe.probe.scan import bare_matmul_seconds, scan_value_vectors  # noqa: E402
from machine import machine_info  # noqa: E402


def time_scan(model, *, k: int, chunk: int, repeats: int, device) -> dict:
    bare, scan = [], []
    for _ in range(repeats):
        bare.append(bare_matmul_seconds(model, chunk=chunk, device=device))
        start = time.perf_counter()
        scan_value_vectors(model, k=k, chunk=chunk, device=device, progress=False)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        scan.append(time.perf_counter() - start)
    cfg = model.config
    vectors = cfg.num_hidden_layers * cfg.intermediate_size
    return {"vectors": vectors, "d_model": cfg.hidden_size, "vocab": cfg.vocab_size, "k": k, "chunk": chunk,
            "flop": 2 * vectors * cfg.hidden_size * cfg.vocab_size,
            "bare_matmul_seconds": [round(x, 3) for x in bare], "scan_seconds": [round(x, 3) for x in scan],
            "ratio_scan_over_matmul": round(min(scan) / min(bare), 3)}


def run_results(run: Path) -> dict:
    out: dict = {"run": str(run)}
    validation = run / "validation.json"
    if validation.is_file():
        v = json.loads(validation.read_text())
        out["validation"] = {key: v.get(key) for key in ("concepts", "tested", "validated", "criterion",
                                                         "mean_best_concept_drop", "best_concept_drops",
                                                         "mean_unrelated_drop_of_best", "validated_concepts",
                                                         "validated_by_set_of", "effect_sets", "diagnosis")}
    report = run / "unlearning_report.json"
    if report.is_file():
        r = json.loads(report.read_text())
        out["unlearning"] = {"n_concepts": r["n_concepts"], "methods": r["summary"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--run", type=Path, default=None, help="concept-vector run directory to summarise")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="4 layers only (a smoke run)")
    parser.add_argument("--no-scan", action="store_true",
                        help="keep the scan timings already in --out (timed on a quiet machine); only update --run's")
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "probe.json")
    args = parser.parse_args()

    from kgprobe.models import load_causal_lm

    if args.no_scan:
        if args.run is None or not args.out.is_file():
            raise SystemExit("--no-scan needs --run and an existing --out to update")
        result = json.loads(args.out.read_text())
        result["concept_vectors"] = run_results(args.run)
        write_json(args.out, result)
        print(f"updated the concept_vectors section of {args.out}")
        return
    result: dict = {"benchmark": "probe", "machine": machine_info(torch.device("cpu"))}
    model, _ = load_causal_lm(args.model, device="cpu")
    if args.quick:
        model.model.layers = model.model.layers[:4]
        model.config.num_hidden_layers = 4
    result["scan_cpu"] = {"model": args.model, **time_scan(model, k=args.k, chunk=args.chunk,
                                                          repeats=args.repeats, device="cpu")}
    print(json.dumps(result["scan_cpu"], indent=2))
    if torch.cuda.is_available():
        from transformers import AutoModelForCausalLM

        gpu_model = AutoModelForCausalLM.from_config(model.config).to("cuda", torch.bfloat16).eval()
        result["machine_gpu"] = machine_info(torch.device("cuda"))
        result["scan_gpu"] = {"model": f"{args.model} shapes, random weights, bf16",
                              **time_scan(gpu_model, k=args.k, chunk=args.chunk, repeats=args.repeats, device="cuda")}
        print(json.dumps(result["scan_gpu"], indent=2))
    if args.run is not None:
        result["concept_vectors"] = run_results(args.run)
    if not args.quick:
        write_json(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
