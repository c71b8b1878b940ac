"""Concept vectors under three protocols, per model (issue #25) -> eval/results/probe.json ``protocols``.

For each ``--models`` LM, in resumable run directories under ``--runs/<model>/``:

1. ``discovered``: :func:`kgprobe.probe.run.discover` (vectors -> concepts: raw-lens top-200 tokens
   of the upper half's columns named by WordNet synsets and countries, questions from the KG);
2. ``null`` on the discovered concepts (the first ``--max-concepts``): each concept's best column
   and its best four together against norm-matched random columns (``--intervention``,
   ``--null-size`` draws at most), Benjamini-Hochberg over all tests, alpha 0.01;
3. ``original`` on the first ``--original-concepts`` of them: ConceptVectors' noise and BLEU /
   ROUGE-L of greedy ``--max-new-tokens`` answers (the original-form table);
4. ``unlearn``: gradient ascent, gradient difference, NPO, ablation and Needle on the
   ``--unlearn-concepts`` concepts that beat their null first (trained on concept text).

Every stage resumes from its run directory, so a killed run continues where it stopped. A run
continued on another machine (whose run directory is gone) can start from a published partial
null run: ``--seed-null eval/results/probe_null_gemma3.json`` writes its records back as the
checkpoint (the records are the checkpoint's lines plus the multiple-testing fields, which are
recomputed over all tests at the end). The result records each part's summary and the machine;
``--parts`` picks the parts to run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "eval"))

from machine import machine_info  # noqa: E402

PARTS = ("null", "original", "unlearn")


def seed_null_checkpoint(published: Path, log_path: Path) -> int:
    """Write ``published``'s records (a null.json) as the checkpoint ``log_path`` when it is absent
    or shorter; returns the records written. The concept ids are checked again on resume."""
    from kgprobe.checkpoint import ChunkLog
    from kgprobe.probe.validate_null import as_checkpoint

    records = json.loads(published.read_text())["records"]
    log = ChunkLog(log_path)
    start = len(log.chunks)
    for n, record in enumerate(records[start:], start=start):
        log.write(n, as_checkpoint(record))
    return max(len(records) - start, 0)


def run_model(name: str, args, echo) -> dict:
    from kgprobe.models import load_causal_lm
    from kgprobe.probe.concepts import FEW_SHOT, load_concepts
    from kgprobe.probe.run import DiscoverOptions, UnlearnOptions, ValidateOptions, discover, unlearn_all, validate

    run = Path(args.runs) / name
    model, tokenizer = load_causal_lm(name, device="cpu")
    model.eval()
    out: dict = {"model": name, "run": str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else run.name}
    seconds = {}
    t = time.perf_counter()
    if not (run / "concepts.jsonl").is_file():  # else done by an earlier run: its time is not known here
        discover(model, tokenizer, run, options=DiscoverOptions(), few_shot=FEW_SHOT, echo=echo)
        seconds["discover"] = round(time.perf_counter() - t, 1)
    concepts = load_concepts(run / "concepts.jsonl")[: args.max_concepts]
    found = [json.loads(line) for line in (run / "discovered.jsonl").read_text().splitlines()]
    out["discovery"] = {"columns": len(found), "concepts": len({r["concept"] for r in found}),
                        **({"tested_concepts": len(concepts)} if args.parts else {}),
                        "top": [{k: r[k] for k in ("layer", "index", "name", "matches", "matched_tokens")}
                                for r in found[:15]]}
    if "null" in args.parts:
        if args.seed_null:
            written = seed_null_checkpoint(Path(args.seed_null), run / "null.jsonl")
            echo(f"null checkpoint: {written} records from {args.seed_null}" if written else
                 f"null checkpoint already holds {args.seed_null}'s records")
        t = time.perf_counter()
        options = ValidateOptions(protocol="null-controlled", intervention=args.intervention, null_size=args.null_size,
                                  unrelated_size=args.unrelated_size)
        out["null"] = validate(model, tokenizer, concepts, run, options=options, few_shot=FEW_SHOT, echo=echo)
        seconds["null"] = round(time.perf_counter() - t, 1)
    if "original" in args.parts:
        t = time.perf_counter()
        options = ValidateOptions(protocol="original", max_new_tokens=args.max_new_tokens,
                                  original_unrelated_size=args.original_unrelated)
        out["original"] = validate(model, tokenizer, concepts[: args.original_concepts], run, options=options,
                                   few_shot=FEW_SHOT, echo=echo)
        seconds["original"] = round(time.perf_counter() - t, 1)
    if "unlearn" in args.parts:
        t = time.perf_counter()
        options = UnlearnOptions(concepts=args.unlearn_concepts, forget_on="text", fact_set=None,
                                 methods=["gradient-ascent", "gradient-difference", "npo", "ablation", "needle"])
        out["unlearning"] = unlearn_all(model, tokenizer, concepts, run, options=options, few_shot=FEW_SHOT,
                                        echo=echo)
        seconds["unlearn"] = round(time.perf_counter() - t, 1)
    out["seconds"] = seconds  # this invocation's wall time: a resumed part only reads its checkpoints back
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--parts", nargs="*", choices=PARTS, default=list(PARTS), help="none: the discovery alone")
    ap.add_argument("--max-concepts", type=int, default=200, help="discovered concepts tested (best columns first)")
    ap.add_argument("--seed-null", metavar="NULL_JSON",
                    help="a published null.json whose records start the null checkpoint (one model only)")
    ap.add_argument("--intervention", choices=("zero", "mean", "noise"), default="zero")
    ap.add_argument("--null-size", type=int, default=200)
    ap.add_argument("--unrelated-size", type=int, default=16,
                    help="null protocol: answered questions of other concepts per test (each draw runs them all)")
    ap.add_argument("--original-concepts", type=int, default=50)
    ap.add_argument("--max-new-tokens", type=int, default=100)
    ap.add_argument("--original-unrelated", type=int, default=16,
                    help="original protocol: unrelated questions per concept (the original samples 50 and, "
                         "through a bug, scores 10; each costs two 100-token generations per concept)")
    ap.add_argument("--unlearn-concepts", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", default=str(ROOT / "eval/results/concepts_runs"))
    ap.add_argument("--out", default=str(ROOT / "eval/results/probe.json"))
    args = ap.parse_args()
    if args.seed_null:
        if len(args.models) != 1 or "null" not in args.parts:
            ap.error("--seed-null takes one --models and the null part: its records are one model's")
        try:
            records = json.loads(Path(args.seed_null).read_text())["records"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            ap.error(f"--seed-null {args.seed_null}: not a null.json with records ({type(err).__name__}: {err})")
        if not isinstance(records, list):
            ap.error(f"--seed-null {args.seed_null}: its records are not a list")

    import os

    import torch

    from kgprobe.atomic import write_json

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    path = Path(args.out)
    result = json.loads(path.read_text()) if path.is_file() else {}
    protocols = result.get("protocols", {})
    for name in args.models:
        # the parts run now replace theirs; the model's other parts (an earlier invocation's) stay
        new, old = run_model(name, args, print), protocols.get(name, {})
        protocols[name] = {**old, **new, "seconds": {**old.get("seconds", {}), **new["seconds"]}}
        result["protocols"] = {**protocols, "machine": {**machine_info(torch.device("cpu")), "threads": args.threads}}
        write_json(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
