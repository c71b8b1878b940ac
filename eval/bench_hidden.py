"""Benchmark: hidden factual knowledge in SmolLM2-135M (after Inside-Out, Gekhman et al. 2025).

The countries fact set (capital, currency, demonym, subregion, language; ``--max-facts`` per
relation, k = 10, seed 0) scored once with every hidden state kept; per layer a linear probe
(:mod:`kgprobe.probe.hidden`) is trained on half the subjects, the best layer chosen on a
validation part of them, and the test subjects' facts ranked by the probe and by the LM's own
log-likelihood. Writes ``--out`` (default eval/results/facts_hidden.json: the LM's and the probe's
accuracy per layer and relation, the best layer, Inside-Out's gap ``hidden_only`` / ``lm_only``,
held-out relations) and the plot next to it (``.png``). The same as
``kgprobe probe facts countries --relation capital ... --max-facts 100 --hidden``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

RELATIONS = ["capital", "currency", "demonym", "subregion", "language"]


def add_to_facts(result: dict, source: Path, facts: Path) -> None:
    """The Inside-Out gap per relation at the best layer, next to the fact-probe accuracies."""
    import json

    from kgprobe.atomic import write_json

    best = result["best_layer"]
    summary = {"model": result["model"], "source": source.name, "best_layer": best["layer"],
               "chosen_on": best["chosen_on"], "test_accuracy_at_best_layer": best["test_accuracy"],
               "lm_accuracy": result["lm_accuracy"],
               "probe_accuracy_at_best_layer": {rel: accs[best["index"]]
                                                for rel, accs in result["probe_accuracy"]["relations"].items()},
               "gap": result["gap"]}
    data = json.loads(facts.read_text()) if facts.is_file() else {}
    write_json(facts, {**data, "hidden": summary})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--max-facts", type=int, default=100, help="facts per relation (seeded sample)")
    ap.add_argument("--feature", choices=("last", "answer"), default="last")
    ap.add_argument("--out", default=str(ROOT / "eval/results/facts_hidden.json"))
    ap.add_argument("--facts", default=str(ROOT / "eval/results/facts.json"),
                    help="also write the gap per relation and the best layer under this file's 'hidden' key")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from kgprobe.atomic import write_json
    from kgprobe.models import load_causal_lm
    from kgprobe.probe.fact_sets import load_fact_set
    from kgprobe.probe.hidden import HiddenOptions, plot_hidden, probe_hidden
    from machine import machine_info

    t0 = time.perf_counter()
    fact_set = load_fact_set("countries", k=10, relations=RELATIONS, max_facts_per_relation=args.max_facts)
    model, tokenizer = load_causal_lm(args.model, device="cpu")
    model.eval()
    t1 = time.perf_counter()
    result = probe_hidden(model, tokenizer, fact_set, options=HiddenOptions(feature=args.feature), progress=False)
    result.update({"model": args.model, "machine": machine_info(),
                   "wall_seconds": {"load": round(t1 - t0, 1), "probe_hidden": round(time.perf_counter() - t1, 1)}})
    write_json(Path(args.out), result)
    plot_hidden(result, Path(args.out).with_suffix(".png"))
    add_to_facts(result, Path(args.out), Path(args.facts))
    best = result["best_layer"]
    print(f"LM accuracy {result['lm_accuracy']['overall']:.3f}; best layer {best['layer']}: probe "
          f"{best['test_accuracy']:.3f}; hidden_only {result['gap']['overall']['hidden_only']:.3f}, "
          f"lm_only {result['gap']['overall']['lm_only']:.3f}")


if __name__ == "__main__":
    main()
