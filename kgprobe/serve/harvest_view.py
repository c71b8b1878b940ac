"""A harvest run as the harvest page shows it: ranked tuples with their scores, prompt weights and,
when the run was judged (eval.json), each tuple marked correct or wrong against the reference."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from kgprobe.errors import KgprobeError
from kgprobe.serve.cache import LoadCache, stamp
from kgprobe.serve.files import read_json, read_jsonl
from kgprobe.serve.limits import Limits

FILES = ("tuples.jsonl", "prompts.json", "eval.json", "run.json")


@dataclass
class HarvestRun:
    relation: str
    arity: int
    #: prompts.json's rows (prompt, weight, pos, neg), heaviest first
    prompts: list[dict]
    #: the prompts the tuples carry scores for, in column order
    columns: list[str]
    #: rank, entities, score, prompt_scores (aligned with ``columns``), judge ("correct" / "wrong" / None)
    rows: list[dict]
    eval: dict | None
    run: dict


class BadQuery(KgprobeError):
    """A query parameter the page cannot honour (HTTP 400)."""


def load_harvest(run_dir: Path, limits: Limits, cache: LoadCache) -> HarvestRun:
    """The run in ``run_dir`` (cached until its files change)."""
    return cache.get(("harvest", str(run_dir), stamp(run_dir / f for f in FILES)),
                     lambda: _read(run_dir, limits, cache))


def _read(run_dir: Path, limits: Limits, cache: LoadCache) -> HarvestRun:
    raw = read_jsonl(run_dir / "tuples.jsonl", max_lines=limits.max_lines)
    raw = [r for r in raw if isinstance(r.get("entities"), list)]
    run = read_json(run_dir / "run.json") or {}
    prompts = (read_json(run_dir / "prompts.json") or {}).get("prompts") or []
    prompts = sorted((p for p in prompts if isinstance(p, dict)), key=lambda p: -float(p.get("weight") or 0))
    columns = list(dict.fromkeys(k for r in raw for k in (r.get("prompt_scores") or {})))
    judged = read_json(run_dir / "eval.json")
    marks = _marks([r["entities"] for r in raw], judged, cache)
    rows = [{"rank": int(r.get("rank") or i + 1), "entities": [str(e) for e in r["entities"]],
             "score": _number(r.get("score")),
             "prompt_scores": [_number((r.get("prompt_scores") or {}).get(c)) for c in columns],
             "judge": mark} for i, (r, mark) in enumerate(zip(raw, marks))]
    relation = run.get("relation") or (read_json(run_dir / "config.json") or {}).get("relation", {}).get("name")
    arity = max((len(r["entities"]) for r in rows), default=2)
    return HarvestRun(str(relation or run_dir.name), arity, prompts, columns, rows, judged, run)


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _marks(tuples: list[list], judged: dict | None, cache: LoadCache) -> list[str | None]:
    """Per tuple "correct" / "wrong" by the reference eval.json names (judged again with
    :func:`kgprobe.harvest.evaluate.tuple_hits`), else by eval.json's wrong top 50; None: not judged."""
    if not isinstance(judged, dict):
        return [None] * len(tuples)
    try:
        from kgprobe.harvest.evaluate import ReferenceIndex, tuple_hits

        spec = str(judged["reference"])
        ref = cache.get(("reference", spec), lambda: ReferenceIndex.load(spec))
        hits = tuple_hits(tuples, ref, head_slot=int(judged.get("head_slot", 0)),
                          tail_slot=int(judged.get("tail_slot", 1)))
        return ["correct" if h else "wrong" for h in hits]
    except (KgprobeError, OSError, KeyError, TypeError, ValueError):
        wrong = {tuple(map(str, w)) for w in judged.get("wrong_in_top_50") or [] if isinstance(w, list)}
        return [("wrong" if tuple(map(str, t)) in wrong else "correct") if i < 50 else None
                for i, t in enumerate(tuples)]


def sort_keys(h: HarvestRun) -> list[str]:
    """The columns the table sorts by: rank, score, judge, e0.. (entities), p0.. (prompts)."""
    return ["rank", "score", "judge", *(f"e{i}" for i in range(h.arity)), *(f"p{i}" for i in range(len(h.columns)))]


def select(h: HarvestRun, *, q: str = "", sort: str = "rank", order: str = "", page: int = 1, size: int = 100,
           limits: Limits) -> dict:
    """One page of ``h``'s tuples: those with ``q`` in an entity (case-insensitive), sorted by ``sort``
    (``order`` asc / desc; default: best first), ``size`` rows (at most ``limits.page_size``) from ``page``."""
    if sort not in sort_keys(h):
        raise BadQuery(f"cannot sort by {sort!r}; columns: {', '.join(sort_keys(h))}")
    if order not in ("", "asc", "desc"):
        raise BadQuery(f"order must be asc or desc, not {order!r}")
    if len(q) > limits.max_text_chars:
        raise BadQuery(f"the filter is longer than {limits.max_text_chars} characters")
    size = max(1, min(int(size), limits.page_size))
    needle = q.casefold().strip()
    rows = [r for r in h.rows if not needle or any(needle in e.casefold() for e in r["entities"])]
    order = order or ("asc" if sort in ("rank",) or sort.startswith("e") else "desc")
    rows = _sorted(rows, sort, order == "desc")
    pages = max(1, -(-len(rows) // size))
    page = max(1, min(int(page), pages))
    return {"q": q, "sort": sort, "order": order, "page": page, "pages": pages, "size": size, "total": len(h.rows),
            "matched": len(rows), "rows": rows[(page - 1) * size: page * size], "all_rows": rows}


def _sorted(rows: list[dict], sort: str, desc: bool) -> list[dict]:
    """``rows`` by column ``sort``, ties by rank, rows without a value last whichever the order."""
    def value(row: dict):
        if sort == "rank":
            return row["rank"]
        if sort == "judge":
            return {"correct": 1, "wrong": 0}.get(row["judge"])
        if sort == "score":
            return row["score"]
        i = int(sort[1:])
        if sort.startswith("e"):
            return row["entities"][i].casefold() if i < len(row["entities"]) else None
        return row["prompt_scores"][i]

    keyed = [(value(r), r) for r in rows]
    present = sorted(((v, -r["rank"] if desc else r["rank"], r) for v, r in keyed if v is not None),
                     key=lambda t: (t[0], t[1]), reverse=desc)
    return [r for _, _, r in present] + [r for v, r in keyed if v is None]


def tsv(h: HarvestRun, rows: list[dict]) -> str:
    """``rank, entity_0.., score, judge`` with a header; tabs and newlines in values become spaces."""
    clean = lambda v: "" if v is None else " ".join(str(v).split())  # noqa: E731
    head = ["rank", *(f"entity_{i}" for i in range(h.arity)), "score", "judge"]
    lines = ["\t".join(head)]
    for r in rows:
        ents = r["entities"] + [""] * (h.arity - len(r["entities"]))
        lines.append("\t".join(clean(v) for v in [r["rank"], *ents, r["score"], r["judge"]]))
    return "\n".join(lines) + "\n"


def turtle(h: HarvestRun, rows: list[dict]) -> bytes:
    """The rows as RDF Turtle by the KG core's writer (:func:`kgprobe.kg.formats.rdf.rdf_lines`), as kg.ttl is
    written."""
    from kgprobe.kg.formats.rdf import rdf_lines
    from kgprobe.kg.graph import KnowledgeGraph

    if h.arity != 2:
        raise BadQuery(f"Turtle is written for binary relations; this one has {h.arity} slots (download TSV)")
    kg = KnowledgeGraph.from_labeled_triples([(r["entities"][0], h.relation, r["entities"][1]) for r in rows],
                                             scores=[r["score"] or 0.0 for r in rows], name=h.relation)
    return "".join(rdf_lines(kg, format="turtle")).encode("utf-8")
