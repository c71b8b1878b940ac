"""Benchmark: relations whose values are numbers or codes (``kgprobe.harvest.filters.slot_forms``).

The relation files in ``kg_data/relations/forms/`` give only prompts and five seeds whose object
is no name: ``country_code`` a two-letter ISO 3166 code (FR, JP, ...), ``chemical_symbol`` an
element's symbol (Au, C, ...), ``birth_year`` a year. Each is harvested with the defaults
(``--top-k 50``); the record says the slot type the run inferred (``types.json``: ``code`` or
``number``), the share of output values of the seeds' form (the seeds' length for a code), and
the first 20 tuples. Precision@10/50: chemical_symbol against the reference its file names
(WordNet lists "Au" among gold's names), country_code against countryinfo's alpha-2 codes (a
country's names: its name and countryinfo's alternative spellings); birth_year has no reference
that installs offline, so its tuples are there to be judged by hand.

Writes eval/results/slot_forms.json (or --out); runs live in --runs (not committed), each run anew.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from machine import machine_info  # noqa: E402  (eval/machine.py, beside this script)

ROOT = Path(__file__).resolve().parent.parent
RELATIONS = sorted((ROOT / "kg_data/relations/forms").glob("*.yaml"))


def alpha2_reference():
    """countryinfo's (country names, {alpha-2 code}) pairs as a :class:`ReferenceIndex`."""
    from kgprobe.harvest.evaluate import ReferenceIndex, normalise, surface_forms
    from kgprobe.kg.datasets import countries

    pairs = []
    for path in sorted(countries.data_dir().glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        iso = record.get("ISO") if isinstance(record, dict) else None
        if not (isinstance(iso, dict) and isinstance(iso.get("alpha2"), str) and isinstance(record.get("name"), str)):
            continue
        spellings = [s for s in record.get("altSpellings", []) if isinstance(s, str)]
        pairs.append((surface_forms(record["name"], spellings), {normalise(iso["alpha2"])}))
    return ReferenceIndex(pairs)


def one_relation(path: Path, runs: Path, options, model_pair) -> dict:
    from kgprobe.harvest.evaluate import judge
    from kgprobe.harvest.filters import slot_forms
    from kgprobe.harvest.relation import load_relation
    from kgprobe.harvest.run import evaluate_harvest, harvest

    rel = load_relation(path)
    out = runs / rel.name
    # a fresh run each time (a minute a relation): a resumed one would record its own few seconds
    rows = harvest(path, out, options=options, device="auto", overwrite=True, loaded_model=model_pair,
                   echo=lambda s: None)
    tuples = [tuple(r["entities"]) for r in rows]
    forms = slot_forms(list(rel.seeds))
    record = json.loads((out / "run.json").read_text())
    types = json.loads((out / "types.json").read_text())["inferred"]
    result = {
        "relation": rel.name, "file": str(path.relative_to(ROOT)), "tuples": len(tuples),
        "forms": {str(j): {"kind": f.kind, "lengths": list(f.lengths)} for j, f in forms.items()},
        "inferred_types": types,
        "of_the_seeds_form": {str(j): round(sum(f.matches(t[j]) for t in tuples) / max(len(tuples), 1), 3)
                              for j, f in forms.items()},
        "seconds": round(record["timings"]["total"] - record["timings"]["load_model"], 1),
        "top_20": [list(t) for t in tuples[:20]],
    }
    judged = None
    if rel.name == "country_code":
        judged = judge(tuples, alpha2_reference(), ks=(10, 50))
    elif rel.reference is not None:
        judged = evaluate_harvest(out)
        result["reference"] = f"{rel.reference.kg}:{rel.reference.relation}"
    if judged is not None:
        result |= {k: judged[k] for k in ("precision@10", "precision@50", "wrong_in_top_50")}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--ensemble", nargs="*", default=[], help="other LMs beside --model (harvest --ensemble)")
    ap.add_argument("--runs", default=str(ROOT / "eval/results/slot_forms_runs"))
    ap.add_argument("--out", default=str(ROOT / "eval/results/slot_forms.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from tqdm import tqdm

    from kgprobe.atomic import write_json
    from kgprobe.harvest.run import HarvestOptions, load_harvest_model

    options = HarvestOptions(model=args.model, ensemble=args.ensemble, top_k=50)
    model_pair = load_harvest_model(options)
    rows = [one_relation(path, Path(args.runs), options, model_pair) for path in tqdm(RELATIONS, desc="relations")]
    for row in rows:
        print(f"{row['relation']:14s} of the seeds' form {row['of_the_seeds_form']}  "
              f"p@50 {row.get('precision@50', '-')}  ({row['seconds']:.0f}s)")
    write_json(Path(args.out), {"benchmark": "slot_forms", "model": args.model, "ensemble": args.ensemble,
                                "top_k": 50, "machine": machine_info(), "relations": rows})


if __name__ == "__main__":
    main()
