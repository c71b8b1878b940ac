"""Run directories under RUNS_DIR: which command wrote each (its kind) and its key figures."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from kgprobe.atomic import is_temporary
from kgprobe.outdir import recorded_command
from kgprobe.serve.files import count_lines, read_json
from kgprobe.serve.limits import Limits
from kgprobe.serve.paths import relative

#: the marker command of a run directory -> the kind the pages call it
KINDS = {"harvest": "harvest", "harvest-many": "harvest-many", "linkpred train": "linkpred",
         "linkpred encode": "linkpred-encode", "embed": "embeddings", "probe": "concepts", "probe facts": "facts",
         "data build": "kg", "run": "pipeline"}


@dataclass
class Run:
    """One run directory: ``path`` relative to RUNS_DIR (``/``-separated), its ``kind``, the
    ``command`` that wrote it and a few ``figures`` (name -> number or short text)."""

    path: str
    kind: str
    command: str
    figures: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"path": self.path, "kind": self.kind, "command": self.command, "figures": self.figures}


def find_runs(runs_dir: Path, limits: Limits) -> list[Run]:
    """Every run directory under ``runs_dir`` (itself included) at most ``limits.max_depth`` below
    it, sorted by path; symlinked and hidden directories and temporaries are not entered."""
    found: list[Run] = []
    _walk(runs_dir, runs_dir, 0, limits, found)
    return sorted(found, key=lambda r: r.path)


def _walk(runs_dir: Path, path: Path, depth: int, limits: Limits, found: list[Run]) -> None:
    if len(found) >= limits.max_runs:
        return
    run = read_run(runs_dir, path, limits)
    if run is not None:
        found.append(run)
    if depth >= limits.max_depth:
        return
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(".") or is_temporary(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        _walk(runs_dir, Path(entry.path), depth + 1, limits, found)


def read_run(runs_dir: Path, path: Path, limits: Limits) -> Run | None:
    """The :class:`Run` in ``path``, or None when no kgprobe command wrote it."""
    try:
        command = recorded_command(path)
    except OSError:
        return None
    if command is None:
        return None
    kind = KINDS.get(command, command)
    reader = _FIGURES.get(kind)
    figures = reader(path, limits) if reader else {}
    return Run(relative(runs_dir, path), kind, command, {k: v for k, v in figures.items() if v is not None})


def run_kind(path: Path) -> str | None:
    """The kind of run directory ``path``, None when it is none."""
    command = recorded_command(path)
    return None if command is None else KINDS.get(command, command)


def _harvest(path: Path, limits: Limits) -> dict:
    run = read_json(path / "run.json") or {}
    judged = read_json(path / "eval.json") or {}
    return {"relation": run.get("relation"), "model": run.get("model"),
            "tuples": run.get("tuples", count_lines(path / "tuples.jsonl", max_lines=limits.max_lines)),
            "candidates": run.get("candidates"), "precision@10": judged.get("precision@10"),
            "precision@50": judged.get("precision@50"), "coverage": judged.get("coverage"),
            "seconds": (run.get("timings") or {}).get("total")}


def _harvest_many(path: Path, limits: Limits) -> dict:
    summary = read_json(path / "summary.json") or {}
    rels = summary.get("relations") or []
    return {"relations": len(rels), "tuples": sum(r.get("tuples") or 0 for r in rels if isinstance(r, dict)),
            "executor": summary.get("executor")}


def _linkpred(path: Path, limits: Limits) -> dict:
    record = read_json(path / "linkpred.json", max_bytes=limits.max_json_bytes) or {}
    cfg = record.get("config") or {}
    test = read_json(path / "test_metrics.json") or {}
    return {"encoder": cfg.get("encoder"), "scorer": cfg.get("scorer"), "entities": len(record.get("entity_ids", [])),
            "relations": len(record.get("relation_ids", [])), "epochs": test.get("epochs_run", cfg.get("epochs")),
            "test mrr": test.get("both.realistic.mrr"), "test hits@10": test.get("both.realistic.hits_at_10")}


def _embeddings(path: Path, limits: Limits) -> dict:
    meta = read_json(path / "meta.json") or {}
    index = read_json(path / "index.json") or {}
    return {"model": meta.get("model"), "entities": meta.get("count"), "dim": meta.get("dim"),
            "index": index.get("kind"), "text": meta.get("text")}


def _concepts(path: Path, limits: Limits) -> dict:
    model = read_json(path / "model.json") or {}
    stage = next((v for v in model.values() if isinstance(v, dict)), {})
    null = (read_json(path / "null.json", max_bytes=limits.max_json_bytes) or {}).get("summary") or {}
    return {"model": stage.get("model"), "stages": ", ".join(model) or None,
            "concepts": count_lines(path / "concepts.jsonl", max_lines=limits.max_lines),
            "candidates": count_lines(path / "candidates.jsonl", max_lines=limits.max_lines),
            "null tested": null.get("tested"), "beat null": null.get("beat_null"),
            "unlearning": (path / "unlearning_report.json").is_file() or None}


def _facts(path: Path, limits: Limits) -> dict:
    cfg = read_json(path / "config.json") or {}
    results = read_json(path / "results.json") or {}
    return {"fact set": cfg.get("fact_set"), "model": cfg.get("model"), "finished": bool(results) or None,
            "facts": count_lines(path / "facts.jsonl", max_lines=limits.max_lines)}


def _kg(path: Path, limits: Limits) -> dict:
    build = read_json(path / "build.json") or {}
    stats = (read_json(path / "meta.json") or {}).get("statistics") or {}
    return {"dataset": build.get("dataset"), "inductive": build.get("inductive"), "entities": stats.get("entities"),
            "relations": stats.get("relations"), "triples": stats.get("triples")}


def _pipeline(path: Path, limits: Limits) -> dict:
    run = read_json(path / "run.json") or {}
    cfg = run.get("config") or {}
    return {"name": cfg.get("name"), "steps": len(cfg.get("steps") or []) or None, "seconds": run.get("total_seconds")}


_FIGURES = {"harvest": _harvest, "harvest-many": _harvest_many, "linkpred": _linkpred, "embeddings": _embeddings,
            "concepts": _concepts, "facts": _facts, "kg": _kg, "pipeline": _pipeline}
