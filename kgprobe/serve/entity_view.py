"""What the entity page shows of one entity: its facts in a run's KG, the nearest entities of the
embedding runs, and the answers of the trained link-prediction runs (models loaded lazily, cached)."""
from __future__ import annotations

from pathlib import Path

from kgprobe.errors import KgprobeError
from kgprobe.serve.cache import LoadCache, stamp
from kgprobe.serve.files import read_jsonl
from kgprobe.serve.limits import Limits
from kgprobe.serve.runs import Run

#: the run kinds whose directory holds a KG the entity page reads
GRAPH_KINDS = ("harvest", "harvest-many", "kg")
#: at most this many embedding / link-prediction runs are asked per page
MAX_MODEL_RUNS = 3


def run_graph(run_dir: Path, kind: str, limits: Limits, cache: LoadCache):
    """The KG of a run (harvest: its tuples; a harvest of several: kg/; data build: the directory),
    cached until its files change; None for a run without one."""
    from kgprobe.kg.formats import load_kg
    from kgprobe.kg.graph import KnowledgeGraph

    if kind == "harvest":
        files = [run_dir / "tuples.jsonl", run_dir / "run.json"]

        def load():
            from kgprobe.serve.files import read_json

            relation = (read_json(run_dir / "run.json") or {}).get("relation") or run_dir.name
            rows = [r for r in read_jsonl(run_dir / "tuples.jsonl", max_lines=limits.max_lines)
                    if isinstance(r.get("entities"), list) and len(r["entities"]) == 2]
            return KnowledgeGraph.from_labeled_triples([(str(r["entities"][0]), str(relation), str(r["entities"][1]))
                                                        for r in rows], name=str(relation))
    else:
        source = run_dir / "kg" if kind == "harvest-many" else run_dir
        if kind not in GRAPH_KINDS or not (source / "triples.tsv").is_file():
            return None
        files = [source / "triples.tsv", source / "entities.tsv"]

        def load():
            return load_kg(source, progress=False, warn_empty=False)
    return cache.get(("graph", str(run_dir), stamp(files)), load)


def find_entity(kg, name: str) -> int | None:
    """The row of entity ``name`` in ``kg``: by id, else by label (exact, then case-insensitive)."""
    try:
        return kg.entity_index(name)
    except (KgprobeError, KeyError):
        pass
    labels = list(kg.entity_labels)
    if name in labels:
        return labels.index(name)
    folded = name.casefold()
    return next((i for i, label in enumerate(labels) if label.casefold() == folded), None)


def facts(kg, row: int, limits: Limits) -> dict:
    """The triples out of and into entity ``row`` (at most ``limits.max_facts`` each), and the
    edges of its neighbourhood graph."""
    def fact(t, direction: str) -> dict:
        h, r, o = (int(x) for x in t)
        other = o if direction == "out" else h
        return {"head": kg.entity_ids[h], "head_label": kg.entity_labels[h], "relation": kg.relation_labels[r],
                "tail": kg.entity_ids[o], "tail_label": kg.entity_labels[o], "other": kg.entity_ids[other],
                "other_label": kg.entity_labels[other], "direction": direction}

    outgoing = kg.triples[kg.triples[:, 0] == row]
    incoming = kg.triples[kg.triples[:, 2] == row]
    out = [fact(t, "out") for t in outgoing[: limits.max_facts].tolist()]
    into = [fact(t, "in") for t in incoming[: limits.max_facts].tolist()]
    return {"out": out, "in": into, "out_total": len(outgoing), "in_total": len(incoming)}


def nearest(runs: list[Run], runs_dir: Path, entity_id: str, label: str, limits: Limits, k: int) -> list[dict]:
    """Per embedding run (at most three): the ``k`` entities nearest to this one, found by its id or
    label among the run's entities (:func:`kgprobe.index.neighbors.nearest_neighbors`)."""
    from kgprobe.index.neighbors import nearest_neighbors
    from kgprobe.index.store import EntityEmbeddings

    found = []
    for run in [r for r in runs if r.kind == "embeddings"][:MAX_MODEL_RUNS]:
        try:
            emb = EntityEmbeddings.load(runs_dir / run.path)
            match = entity_id if entity_id in emb.ids else (label if label in emb.ids else None)
            if match is None and label in emb.labels:
                match = emb.ids[emb.labels.index(label)]
            if match is None:
                found.append({"run": run.path, "entity": None, "results": [], "note": "not among its entities"})
                continue
            hits = nearest_neighbors(runs_dir / run.path, entity_id=match, k=min(k, limits.max_neighbors),
                                     device="cpu", exact=True, loading_bars=False)
            found.append({"run": run.path, "entity": match, "results": [r.as_json() for r in hits.results]})
        except KgprobeError as err:
            found.append({"run": run.path, "entity": None, "results": [], "note": str(err)})
    return found


def predictor(run_dir: Path, cache: LoadCache):
    """The :class:`~kgprobe.linkpred.predict.Predictor` of a trained run, loaded once (cached)."""
    from kgprobe.linkpred.predict import Predictor

    files = [run_dir / "best.pt", run_dir / "checkpoint.pt", run_dir / "linkpred.json"]
    return cache.get(("predictor", str(run_dir), stamp(files)), lambda: Predictor.load(run_dir, device="cpu"))


def predictions(runs: list[Run], runs_dir: Path, entity_id: str, label: str, limits: Limits, cache: LoadCache,
                k: int) -> list[dict]:
    """Per trained link-prediction run (at most three): the best tails of (entity, relation, ?) for
    its first ``limits.max_relations`` relations; an entity the run does not know is encoded from
    its label (a text encoder reads unseen entities)."""
    found = []
    for run in [r for r in runs if r.kind == "linkpred"][:MAX_MODEL_RUNS]:
        try:
            found.append({"run": run.path, **answers(predictor(runs_dir / run.path, cache), entity_id, label,
                                                     limits, k)})
        except KgprobeError as err:
            found.append({"run": run.path, "how": None, "relations": [], "note": str(err)})
    return found


def answers(pred, entity_id: str | None, text: str, limits: Limits, k: int) -> dict:
    """``{"how", "relations": [{"relation", "answers"}]}`` for a known entity, or for ``text`` encoded
    as a new one."""
    row = pred.position(entity_id) if entity_id is not None else None
    if row is None and text in pred.entity_ids:
        row = pred.position(text)
    if row is not None:
        vector, how, text = pred.entities[row], f"known entity {pred.entity_ids[row]}", pred.text(row)
    else:
        text = text[: limits.max_text_chars]
        vector, how = pred.encode([text])[0], "encoded from its text"
    k = max(1, min(k, limits.max_predictions))
    rels = [{"relation": r, "answers": [a.as_json() for a in pred.answers(vector, r, k=k, exclude=row, text=text)]}
            for r in pred.relation_ids[: limits.max_relations]]
    return {"how": how, "relations": rels, "relations_total": len(pred.relation_ids)}
