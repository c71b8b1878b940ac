"""Benchmark: what ``--ensemble`` costs, with and without its pool, against the main LM alone.

Per relation, three harvests one after the other on the same machine, defaults otherwise:

* ``alone``: ``--model`` by itself;
* ``pool``: with ``--ensemble`` (the other LMs rescore the pool, 3 x ``--top-k`` by default);
* ``all``: with ``--ensemble --ensemble-pool all`` (every candidate rescored by every LM).

Each records its time (model loading left out), LM forward passes and seconds per LM,
candidates (and, with the ensemble, those searched before the pool), precision@10/50/100 against
the relation's reference, and the time ratio to ``alone``; ``same_tuples`` says whether the pool
output the same tuples as ``all``. Writes eval/results/ensemble_cost.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from machine import machine_info  # noqa: E402  (eval/machine.py, beside this script)

ROOT = Path(__file__).resolve().parent.parent
RELATIONS = ["kg_data/relations/capital_of.yaml", "kg_data/relations/suite/quality_noun.yaml"]


def one_harvest(rel: Path, out: Path, options, model_pair) -> dict:
    from kgprobe.harvest.run import evaluate_harvest, harvest

    rows = harvest(rel, out, options=options, device="auto", overwrite=True, loaded_model=model_pair,
                   echo=lambda s: None)
    record = json.loads((out / "run.json").read_text())
    # the harvest's time without loading models (the first ensemble run loads the other LMs)
    seconds = record["timings"]["total"] - record["timings"]["load_model"]
    judged = evaluate_harvest(out)
    per_model = record["lm"].get("per_model", {options.model: record["lm"]})
    return {"seconds": round(seconds, 1), "timings": record["timings"],
            "lm_forward_passes": record["lm"]["forward_calls"],
            "lm_seconds": {m: v["seconds"] for m, v in per_model.items()},
            "candidates": record["candidates"], "searched": record.get("searched", record["candidates"]),
            **{k: judged[k] for k in ("precision@10", "precision@50", "precision@100")},
            "tuples": [r["entities"] for r in rows]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("relations", nargs="*", default=RELATIONS, help="relation files (default: %(default)s)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--ensemble", nargs="+", default=["gemma3-270m"])
    ap.add_argument("--runs", default=str(ROOT / "eval/results/ensemble_cost_runs"))
    ap.add_argument("--out", default=str(ROOT / "eval/results/ensemble_cost.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from tqdm import tqdm

    from kgprobe.atomic import write_json
    from kgprobe.harvest.relation import load_relation
    from kgprobe.harvest.run import HarvestOptions, load_harvest_model

    variants = {"alone": HarvestOptions(model=args.model),
                "pool": HarvestOptions(model=args.model, ensemble=args.ensemble),
                "all": HarvestOptions(model=args.model, ensemble=args.ensemble, ensemble_pool="all")}
    model_pair = load_harvest_model(variants["alone"])
    rows = []
    for path in args.relations:
        rel = load_relation(path)
        row = {"relation": rel.name, "file": str(path)}
        for name in tqdm(variants, desc=rel.name):
            row[name] = one_harvest(Path(path), Path(args.runs) / f"{rel.name}_{name}", variants[name], model_pair)
        for name in ("pool", "all"):
            row[name]["time_ratio_to_alone"] = round(row[name]["seconds"] / row["alone"]["seconds"], 2)
        row["same_tuples"] = row["pool"]["tuples"] == row["all"]["tuples"]
        for name in variants:
            row[name]["tuples"] = len(row[name]["tuples"])
        rows.append(row)
        print(f"{rel.name:16s} alone {row['alone']['seconds']:.0f}s  pool {row['pool']['seconds']:.0f}s "
              f"(x{row['pool']['time_ratio_to_alone']})  all {row['all']['seconds']:.0f}s "
              f"(x{row['all']['time_ratio_to_alone']})  same tuples: {row['same_tuples']}")
    write_json(Path(args.out), {"benchmark": "ensemble_cost", "model": args.model, "ensemble": args.ensemble,
                                "machine": machine_info(), "relations": rows})


if __name__ == "__main__":
    main()
