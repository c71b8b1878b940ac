"""The data behind every page, as plain dicts: the HTML pages render them, ``/api/...`` returns them."""
from __future__ import annotations

from pathlib import Path

from kgprobe.serve import concepts_view, entity_view, harvest_view
from kgprobe.serve.files import read_json
from kgprobe.serve.paths import BadPath, NotFound, resolve_run
from kgprobe.serve.runs import find_runs, read_run
from kgprobe.serve.svg import histogram, neighbourhood

#: record files the generic run page shows, as far as they exist (each at most RECORD_BYTES)
RECORDS = ("run.json", "config.json", "test_metrics.json", "meta.json", "index.json", "build.json", "summary.json",
           "results.json", "validation.json", "eval.json", "model.json", "job.json")
RECORD_BYTES = 256 * 1024


def open_run(state, run: str, *kinds: str):
    """``(directory, Run)`` of ``run``; :class:`NotFound` when it is no run (of one of ``kinds``)."""
    path = resolve_run(state.runs_dir, run)
    found = read_run(state.runs_dir, path, state.limits)
    if found is None or (kinds and found.kind not in kinds):
        raise NotFound(f"no {' or '.join(kinds) or 'kgprobe'} run {run!r}")
    return path, found


def runs_data(state) -> dict:
    runs = find_runs(state.runs_dir, state.limits)
    kinds: dict[str, int] = {}
    for r in runs:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    return {"runs_dir": str(state.runs_dir), "runs": [r.as_json() for r in runs], "kinds": kinds,
            "truncated": len(runs) >= state.limits.max_runs, "sparql": state.store is not None}


def harvest_data(state, run: str, *, q: str = "", sort: str = "rank", order: str = "", page: int = 1,
                 size: int | None = None) -> tuple[dict, harvest_view.HarvestRun, list[dict]]:
    path, found = open_run(state, run, "harvest")
    h = harvest_view.load_harvest(path, state.limits, state.cache)
    sel = harvest_view.select(h, q=q, sort=sort, order=order, page=page,
                              size=size or state.limits.default_page_size, limits=state.limits)
    data = {"run": found.path, "figures": found.figures, "relation": h.relation, "arity": h.arity,
            "prompts": h.prompts, "columns": h.columns, "eval": h.eval, "sort_keys": harvest_view.sort_keys(h),
            "histogram": histogram([r["score"] for r in h.rows], bins=24),
            "judged": any(r["judge"] for r in h.rows),
            **{k: v for k, v in sel.items() if k != "all_rows"}}
    return data, h, sel["all_rows"]


def entity_data(state, run: str, entity: str, *, k: int = 10) -> dict:
    path, found = open_run(state, run)
    if len(entity) > state.limits.max_text_chars:
        raise BadPath("entity name too long")
    kg = entity_view.run_graph(path, found.kind, state.limits, state.cache)
    row = entity_view.find_entity(kg, entity) if kg is not None else None
    if kg is not None and row is None:
        raise NotFound(f"no entity {entity!r} in run {run!r}")
    entity_id = kg.entity_ids[row] if row is not None else entity
    label = kg.entity_labels[row] if row is not None else entity
    facts = entity_view.facts(kg, row, state.limits) if row is not None else {"out": [], "in": [], "out_total": 0,
                                                                               "in_total": 0}
    edges = [{"other": f["other"], "label": f["other_label"], "relation": f["relation"], "direction": f["direction"]}
             for f in facts["out"] + facts["in"]]
    runs = find_runs(state.runs_dir, state.limits)
    return {"run": found.path, "kind": found.kind, "entity": entity_id, "label": label, "facts": facts,
            "graph": neighbourhood(label, edges, max_nodes=state.limits.max_graph_nodes),
            "nearest": entity_view.nearest(runs, state.runs_dir, entity_id, label, state.limits, k),
            "predictions": entity_view.predictions(runs, state.runs_dir, entity_id, label, state.limits,
                                                   state.models, min(k, state.limits.max_predictions)),
            "linkpred_runs": [r.path for r in runs if r.kind == "linkpred"][: entity_view.MAX_MODEL_RUNS]}


def predict_data(state, run: str, text: str, *, k: int = 5) -> dict:
    path, found = open_run(state, run, "linkpred")
    text = text.strip()
    if not text:
        return {"run": found.path, "figures": found.figures, "text": "", "how": None, "relations": []}
    if len(text) > state.limits.max_text_chars:
        raise BadPath(f"the text is longer than {state.limits.max_text_chars} characters")
    pred = entity_view.predictor(path, state.models)
    return {"run": found.path, "figures": found.figures, "text": text,
            **entity_view.answers(pred, None, text, state.limits, k)}


def concepts_data(state, run: str) -> dict:
    path, found = open_run(state, run, "concepts")
    data = concepts_view.load_concepts(path, state.limits, state.cache)
    report = data["report"]
    return {"run": found.path, "figures": found.figures, "concepts": concepts_view.concept_rows(data),
            "null_summary": data["null_summary"], "validation_summary": data["validation_summary"],
            "unlearning_summary": report.get("summary"), "plots": data["plots"]}


def concept_data(state, run: str, concept: str) -> dict:
    path, found = open_run(state, run, "concepts")
    data = concepts_view.load_concepts(path, state.limits, state.cache)
    if concept not in data["names"]:
        raise NotFound(f"no concept {concept!r} in run {run!r}")
    return {"run": found.path, **concepts_view.concept_detail(data, concept)}


def run_data(state, run: str, *, q: str = "") -> dict:
    """A run of any kind: its figures, record files, plots and (for a KG) its entities."""
    path, found = open_run(state, run)
    records = {name: read_json(path / name, max_bytes=RECORD_BYTES) for name in RECORDS}
    entities = []
    kg = entity_view.run_graph(path, found.kind, state.limits, state.cache)
    if kg is not None:
        needle = q.casefold()[: state.limits.max_text_chars]
        entities = [{"id": e, "label": lab} for e, lab in zip(kg.entity_ids, kg.entity_labels)
                    if needle in lab.casefold() or needle in e.casefold()][: state.limits.page_size]
    return {"run": found.path, "kind": found.kind, "command": found.command, "figures": found.figures,
            "records": {k: v for k, v in records.items() if v is not None},
            "plots": concepts_view.plots(path), "entities": entities, "has_graph": kg is not None, "q": q}


def png_file(state, run: str, name: str) -> Path:
    from kgprobe.serve.paths import run_file

    path = resolve_run(state.runs_dir, run)
    return run_file(path, name, suffixes=(".png",))
