"""A concept-vector run (``kgprobe probe``) as the concept pages show it: per concept its vectors'
top tokens, the effects of ablating them against the null (null.json / null.jsonl), the
validation and unlearning figures, and the run's plots."""
from __future__ import annotations

from pathlib import Path

from kgprobe.serve.cache import LoadCache, stamp
from kgprobe.serve.files import read_json, read_jsonl
from kgprobe.serve.limits import Limits

FILES = ("concepts.jsonl", "candidates.jsonl", "discovered.jsonl", "null.json", "null.jsonl", "validation.jsonl",
         "validation.json", "unlearning_report.json")
#: the unlearning figures a concept's row shows (before / after are under each method's run)
UNLEARN_FIGURES = ("forget_acc", "retain_acc", "attack_acc", "forget_logprob", "retain_logprob")
#: rows per concept of the per-concept tables
PER_CONCEPT = 50


def load_concepts(run_dir: Path, limits: Limits, cache: LoadCache) -> dict:
    """Everything of the run the pages read, grouped by concept id (cached until its files change)."""
    return cache.get(("concepts", str(run_dir), stamp(run_dir / f for f in FILES)), lambda: _read(run_dir, limits))


def _group(rows: list[dict], key: str = "concept") -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        if isinstance(row.get(key), str):
            out.setdefault(row[key], []).append(row)
    return out


def _read(run_dir: Path, limits: Limits) -> dict:
    big = limits.max_json_bytes
    info = {r["id"]: r for r in read_jsonl(run_dir / "concepts.jsonl", max_lines=limits.max_lines)
            if isinstance(r.get("id"), str)}
    candidates = _group(read_jsonl(run_dir / "candidates.jsonl", max_lines=limits.max_lines))
    discovered = _group(read_jsonl(run_dir / "discovered.jsonl", max_lines=limits.max_lines))
    null_json = read_json(run_dir / "null.json", max_bytes=big) or {}
    null_rows = null_json.get("records") or read_jsonl(run_dir / "null.jsonl", max_lines=limits.max_lines)
    null = {r["concept"]: r for r in null_rows if isinstance(r, dict) and isinstance(r.get("concept"), str)}
    validation = {r["concept"]: r for r in read_jsonl(run_dir / "validation.jsonl", max_lines=limits.max_lines)
                  if isinstance(r.get("concept"), str)}
    report = read_json(run_dir / "unlearning_report.json", max_bytes=big) or {}
    ids = list(dict.fromkeys([*info, *candidates, *discovered, *null, *validation, *(report.get("concepts") or {})]))
    names = {c: (info.get(c) or {}).get("name") or next((r.get("name") for r in discovered.get(c, [])
                                                         + [null.get(c) or {}, validation.get(c) or {}]
                                                         if r.get("name")), None) for c in ids}
    return {"ids": ids, "names": names, "info": info, "candidates": candidates, "discovered": discovered,
            "null": null, "null_summary": null_json.get("summary"), "validation": validation,
            "validation_summary": read_json(run_dir / "validation.json", max_bytes=big),
            "report": report, "plots": plots(run_dir)}


def plots(run_dir: Path) -> list[str]:
    """The PNG files directly in the run directory (served by the /file route)."""
    try:
        return sorted(p.name for p in run_dir.iterdir() if p.suffix.lower() == ".png" and p.is_file()
                      and not p.name.startswith("."))
    except OSError:
        return []


def _best_vector(data: dict, concept: str) -> dict | None:
    rows = data["candidates"].get(concept) or data["discovered"].get(concept) or []
    return rows[0] if rows else None


def concept_rows(data: dict) -> list[dict]:
    """One row per concept: name, its best vector with its top tokens, the null tests' p-values."""
    rows = []
    for c in data["ids"]:
        best = _best_vector(data, c) or {}
        tests = (data["null"].get(c) or {}).get("tests") or {}
        valid = data["validation"].get(c) or {}
        rows.append({"concept": c, "name": data["names"].get(c), "layer": best.get("layer"), "index": best.get("index"),
                     "top_tokens": list(best.get("top_tokens") or [])[:10],
                     "null_p": {t: v.get("p") for t, v in tests.items() if isinstance(v, dict)},
                     "validated": valid.get("validated")})
    return rows


def concept_detail(data: dict, concept: str) -> dict:
    """Everything the page of one concept shows (tables bounded to :data:`PER_CONCEPT` rows)."""
    from kgprobe.serve.svg import histogram

    null = data["null"].get(concept) or {}
    tests = []
    for name, test in ((null.get("tests") or {}).items()):
        if not isinstance(test, dict):
            continue
        figures = {k: test.get(k) for k in ("vectors", "effect", "p", "p_monte_carlo", "p_tail", "z", "draws",
                                            "exceed", "null_mean", "null_std")}
        tests.append({"test": name, **figures,
                      "histogram": histogram(test.get("null") or [], bins=24, marker=test.get("effect"))})
    methods = ((data["report"].get("concepts") or {}).get(concept)) or {}
    unlearning = [{"method": m, **{f"{f}_{when}": (run.get(when) or {}).get(f) for f in UNLEARN_FIGURES
                                   for when in ("before", "after")}}
                  for m, run in methods.items() if isinstance(run, dict)]
    info = data["info"].get(concept) or {}
    return {"concept": concept, "name": data["names"].get(concept), "kind": info.get("kind"),
            "qa": (info.get("qa") or [])[:PER_CONCEPT],
            "candidates": (data["candidates"].get(concept) or [])[:PER_CONCEPT],
            "discovered": (data["discovered"].get(concept) or [])[:PER_CONCEPT],
            "null_tests": tests, "validation": data["validation"].get(concept), "unlearning": unlearning,
            "figures": UNLEARN_FIGURES}
