"""Precision@50 judged by hand beside the automatic reference's, for the held-out relations.

The automatic references (WordNet's lexical pointers, countryinfo's UN subregions and currency
names) judge a tuple right only where they hold it, so a right tuple they lack counts as wrong:
*bass -> bassist*, *Peru -> South America* (countryinfo says *South America* only as part of
*Latin America and the Caribbean*). This script reads the default's top 50 per relation from
``eval/bench_relations.py`` results (their ``top_50``: tuple and the reference's verdict) and hand
labels from a TSV (``relation, head, tail, judge_a, judge_b, note``; 1 right, 0 wrong; the note
gives judge a's reason where a departs from the reference), and reports per relation and on
average:

* ``reference``: precision@50 as the benchmark counts it;
* ``judge_a``, ``judge_b``: precision@50 by each judge's labels; ``both``: right for both judges;
* ``reference_misses``: tuples both judges call right and the reference does not hold;
  ``reference_accepts_wrong``: tuples the reference holds and both judges call wrong;
* Cohen's kappa between the two judges, and between the reference and each judge, over every
  labelled tuple of the results read (``kappa = (p_o - p_e) / (1 - p_e)``, ``p_o`` the share of
  equal labels, ``p_e`` the share expected from the two label rates alone).

Writes ``--out`` (default eval/results/relations_heldout_hand.json); ``--table`` prints its
markdown table. A tuple of a result that the labels lack is an error (one line, exit 2).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ("eval/results/relations_heldout.json", "eval/results/relations_heldout_ensemble.json")


class LabelError(Exception):
    pass


def read_labels(path: Path) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(relation, head, tail) -> (judge_a, judge_b)."""
    labels = {}
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t")
        header = next(rows, None)
        if header is None or header[:5] != ["relation", "head", "tail", "judge_a", "judge_b"]:
            raise LabelError(f"{path}:1: expected the header relation, head, tail, judge_a, judge_b[, note]")
        for n, row in enumerate(rows, 2):
            if len(row) < 5 or any(v not in ("0", "1") for v in row[3:5]):
                raise LabelError(f"{path}:{n}: expected relation, head, tail and two labels 0 or 1")
            key = (row[0], row[1], row[2])
            if key in labels:
                raise LabelError(f"{path}:{n}: {'|'.join(key)} is labelled twice")
            labels[key] = (int(row[3]), int(row[4]))
    return labels


def kappa(x: list[int], y: list[int]) -> float:
    n = len(x)
    p_o = sum(a == b for a, b in zip(x, y)) / n
    px, py = sum(x) / n, sum(y) / n
    p_e = px * py + (1 - px) * (1 - py)
    return round((p_o - p_e) / (1 - p_e), 4) if p_e < 1 else 1.0


def judge_result(path: Path, labels: dict) -> dict:
    result = json.loads(path.read_text(encoding="utf-8"))
    variant = result["default_variant"]
    rows, columns = [], {"reference": [], "judge_a": [], "judge_b": []}
    for rel in result["relations"]:
        top = rel["variants"][variant].get("top_50")
        if top is None:
            raise LabelError(f"{path}: relation {rel['relation']} has no top_50 (rerun eval/bench_relations.py)")
        ref, a, b = [], [], []
        for *entities, hit in top:
            key = (rel["relation"], *entities)
            if key not in labels:
                raise LabelError(f"{path}: {rel['relation']} tuple {'|'.join(entities)} has no hand label")
            ref.append(int(hit))
            a.append(labels[key][0])
            b.append(labels[key][1])
        both = [x & y for x, y in zip(a, b)]
        rows.append({
            "relation": rel["relation"],
            "reference": sum(ref) / 50, "judge_a": sum(a) / 50, "judge_b": sum(b) / 50, "both": sum(both) / 50,
            "reference_misses": [e for (*e, _), r, x in zip(top, ref, both) if x and not r],
            "reference_accepts_wrong": [e for (*e, _), r, x, y in zip(top, ref, a, b) if r and not x and not y],
        })
        for name, col in (("reference", ref), ("judge_a", a), ("judge_b", b)):
            columns[name] += col
    mean = {k: round(sum(r[k] for r in rows) / len(rows), 4) for k in ("reference", "judge_a", "judge_b", "both")}
    return {"result": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
            "model": result["model"], "ensemble": result.get("ensemble", []), "variant": variant,
            "relations": rows, "mean": mean,
            "kappa": {"judge_a~judge_b": kappa(columns["judge_a"], columns["judge_b"]),
                      "reference~judge_a": kappa(columns["reference"], columns["judge_a"]),
                      "reference~judge_b": kappa(columns["reference"], columns["judge_b"])}}


def markdown(report: dict) -> str:
    names = [" + ".join([r["model"], *r["ensemble"]]) for r in report["results"]]
    columns = ("reference", "judge_a", "judge_b", "both")
    head = "| relation | " + " | ".join(f"{n}: {c}" for n in names for c in ("reference", "a", "b", "both")) + " |"
    lines = [head, "|---|" + "---|" * (4 * len(names))]
    rels = [r["relation"] for r in report["results"][0]["relations"]]
    for i, rel in enumerate(rels):
        cells = [f"{r['relations'][i][c]:.2f}" for r in report["results"] for c in columns]
        lines.append(f"| {rel} | " + " | ".join(cells) + " |")
    cells = [f"**{r['mean'][c]:.3f}**" for r in report["results"] for c in columns]
    lines.append(f"| **mean** ({len(rels)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", default=str(ROOT / "eval/hand_labels/relations_heldout.tsv"))
    ap.add_argument("--results", nargs="+", default=[str(ROOT / p) for p in DEFAULT_RESULTS],
                    help="eval/bench_relations.py results whose default top 50 to judge")
    ap.add_argument("--out", default=str(ROOT / "eval/results/relations_heldout_hand.json"))
    ap.add_argument("--table", action="store_true", help="print --out's table and stop")
    args = ap.parse_args()
    if args.table:
        print(markdown(json.loads(Path(args.out).read_text(encoding="utf-8"))))
        return
    try:
        labels = read_labels(Path(args.labels))
        results = [judge_result(Path(p).resolve(), labels) for p in args.results]
    except LabelError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except (OSError, ValueError, KeyError) as e:
        print(f"error: cannot read the results: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    from kgprobe.atomic import write_json

    report = {"benchmark": "relations_hand", "labels": str(Path(args.labels).resolve().relative_to(ROOT))
              if Path(args.labels).resolve().is_relative_to(ROOT) else args.labels,
              "results": results}
    write_json(Path(args.out), report)
    for r in results:
        print(f"{' + '.join([r['model'], *r['ensemble']]):30s} p@50 reference {r['mean']['reference']:.3f}  "
              f"judge a {r['mean']['judge_a']:.3f}  judge b {r['mean']['judge_b']:.3f}  both {r['mean']['both']:.3f}  "
              f"kappa a~b {r['kappa']['judge_a~judge_b']:.2f}")


if __name__ == "__main__":
    main()
