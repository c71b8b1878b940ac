"""Benchmark: how well a harvest keeps the LM busy, and how good its "capital of" KG is.

Measured in one run, on one device:

* raw: tokens/s of plain batched forward passes of the same model (batch 64 x 16 tokens, the
  shape of a rescoring batch), median of several;
* harvest: ``kgprobe harvest kg_data/relations/capital_of.yaml --top-k 100``; tokens the LM
  processed divided by the wall time of weighting + search + rescoring (model load excluded);
* efficiency = harvest tokens/s / raw tokens/s (1.0 = no overhead besides the LM);
* LM forward passes per output tuple, and precision@10/50/100 against countryinfo.

Writes eval/results/harvest.json (or --out). ``--quick`` runs a smaller search for a smoke test.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from machine import machine_info  # noqa: E402  (eval/machine.py, beside this script)

ROOT = Path(__file__).resolve().parent.parent


def raw_tokens_per_second(model, vocab: int, *, batch: int = 64, length: int = 16, reps: int = 5) -> float:
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    x = torch.randint(100, vocab, (batch, length), generator=g).to(device)
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(reps):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    return batch * length / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--relation", default=str(ROOT / "kg_data/relations/capital_of.yaml"))
    ap.add_argument("--top-k", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="small search (smoke test, not a result)")
    ap.add_argument("--out", default=str(ROOT / "eval/results/harvest.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from kgprobe.atomic import write_json
    from kgprobe.harvest.evaluate import evaluate_run
    from kgprobe.harvest.run import HarvestOptions, harvest
    from kgprobe.models import load_causal_lm, resolve_device

    device = resolve_device(args.device)
    model, tok = load_causal_lm(args.model, device=device)
    raw = raw_tokens_per_second(model, len(tok))
    search = {"first_candidates": 40, "first_beam": 64} if args.quick else {}
    options = HarvestOptions(model=args.model, top_k=args.top_k, search=search)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        start = time.perf_counter()
        rows = harvest(args.relation, run_dir, options=options, device=str(device), loaded_model=(model, tok),
                       echo=lambda s: None)
        wall = time.perf_counter() - start
        run = json.loads((run_dir / "run.json").read_text())
        quality = evaluate_run(run_dir, "countries:capital", head_slot=1, tail_slot=0)
    t = run["timings"]
    lm_wall = t["weighting"] + t["search"] + t["rescore"]
    harvest_tps = run["lm"]["tokens"] / lm_wall
    result = {
        "benchmark": "harvest",
        "relation": Path(args.relation).stem,
        "model": args.model,
        "machine": machine_info(device),
        "quick": args.quick,
        "raw_forward_tokens_per_s": round(raw, 1),
        "harvest_tokens_per_s": round(harvest_tps, 1),
        "efficiency_ratio": round(harvest_tps / raw, 3),
        "lm_share_of_wall": round(run["lm"]["seconds"] / lm_wall, 3),
        "lm_forward_passes": run["lm"]["forward_calls"],
        "lm_tokens": run["lm"]["tokens"],
        "forward_passes_per_tuple": run["forward_passes_per_tuple"],
        "tuples": len(rows),
        "candidates": run["candidates"],
        "timings_s": t,
        "harvest_wall_s": round(wall, 1),
        "precision@10": quality["precision@10"],
        "precision@50": quality["precision@50"],
        "precision@100": quality["precision@100"],
        "coverage": quality["coverage"],
        "wrong_in_top_50": quality["wrong_in_top_50"],
    }
    out = Path(args.out)
    write_json(out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "wrong_in_top_50"}, indent=2))


if __name__ == "__main__":
    main()
