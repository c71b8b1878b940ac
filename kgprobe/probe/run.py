"""The concept-vector experiment as three resumable stages sharing one run directory.

``locate``    scan.pt (top-k logit-lens tokens of every value vector), known.json (which QA items
              the intact model answers), candidates.jsonl (per concept: vectors whose tokens
              match the concept, ordered by how much the concept's answers use them)
``validate``  validation.jsonl (checkpoint, one line per concept), validation.tsv (one row per
              concept: its best vector and the effects of damaging it), validation.json (summary)
``unlearn``   unlearning.jsonl (checkpoint, one line per concept x method) and the report of
              :mod:`kgprobe.probe.report` (JSON, TSV, PNG)
model.json    per stage the commands ran: the model and the dtype, device and device map it ran in

Each stage reads what the previous one wrote, so each can run (and be resumed) on its own.
:func:`locate`, :func:`validate` and :func:`unlearn_all` take a loaded model and write into ``out``
(a pipeline step shares one model between them); :func:`run_locate`, :func:`run_validate` and
:func:`run_unlearn` are the ``kgprobe probe`` commands: they check the options and the run directory,
load the model and the concepts, then run the stage. :func:`lens` is ``kgprobe probe lens``.
"""
from __future__ import annotations

import functools
import json
import random
import time
from pathlib import Path
from typing import Annotated, Callable, Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

from kgprobe.atomic import atomic_path, write_json
from kgprobe.checkpoint import ChunkLog
from kgprobe.errors import KgprobeError
from kgprobe.models.memory import recording_halvings
from kgprobe.probe.concepts import QA, Concept, concept_token_ids, load_concepts

SCAN_FILE, KNOWN_FILE, CANDIDATES_FILE, EFFECTS_FILE = "scan.pt", "known.json", "candidates.jsonl", "effects.jsonl"
VALIDATION_LOG, VALIDATION_TSV, VALIDATION_JSON = "validation.jsonl", "validation.tsv", "validation.json"
UNLEARN_LOG = "unlearning.jsonl"
NULL_LOG, NULL_JSON, NULL_PNG = "null.jsonl", "null.json", "null.png"
DISCOVERED_FILE, DISCOVERED_CONCEPTS = "discovered.jsonl", "concepts.jsonl"
ORIGINAL_LOG, ORIGINAL_JSON, ORIGINAL_PNG = "original.jsonl", "original.json", "original.png"
MODEL_FILE = "model.json"


class LocateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_tokens: int = Field(default=50, ge=1, description="logit-lens tokens kept per value vector")
    pool: int = Field(default=200, ge=1, description="vectors per concept taken from the token match")
    per_concept: int = Field(default=5, ge=1, description="candidates kept per concept")
    rank_by: str = Field(default="effect", pattern="^(effect|tokens)$",
                         description="order the pool by the answers' use of a vector, or by token match")
    effect_set: int = Field(default=64, ge=0, description="most concept-specific vectors kept per concept")
    general_questions: int = Field(default=64, ge=1, description="questions that estimate the average effect")
    chunk: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto", description="value vectors per scan chunk; auto: planned from free memory (at most 4096)")


class DiscoverOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layers: list[int] | None = Field(default=None, description="layers to search (default: the upper half)")
    top_tokens: int = Field(default=200, ge=1, description="raw logit-lens tokens per column (the original's 200)")
    min_matches: int = Field(default=5, ge=1, description="distinct concept words among them (fewer for a small "
                             "concept: half its words, at least 3)")
    min_lift: float = Field(default=0.0, ge=0, description="also matches >= min_lift x the chance count")
    per_concept: int = Field(default=4, ge=1, le=4, description="columns kept per concept (its candidates)")
    max_concepts: int | None = Field(default=None, ge=1, description="keep the concepts with the best columns")


class ValidateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    protocol: Literal["strict", "null-controlled", "original"] = Field(
        default="null-controlled", description="strict: accuracy-drop thresholds per concept (validation.*); "
        "null-controlled: each candidate against norm-matched random vectors of its layer, p-values corrected over "
        "concepts (null.*); "
        "original: ConceptVectors' noise and BLEU / ROUGE-L of 100-token answers (original.*)")
    intervention: Literal["zero", "mean", "noise"] = Field(default="zero", description="null protocol: the damage")
    noise_ratio: float | None = Field(default=None, gt=0, description="noise norm / vector norm (None: 1 for the "
                                      "null protocol's noise, the original's estimated 4 for the original)")
    max_new_tokens: int = Field(default=100, ge=1, description="original protocol: greedy answer length")
    original_unrelated_size: int = Field(default=50, ge=0, description="original protocol: unrelated questions "
                                         "per concept (the original samples 50; its code scores 10 of them)")
    null_size: int = Field(default=200, ge=1, description="null protocol: most random draws per candidate")
    alpha: float = Field(default=0.01, gt=0, lt=1, description="null protocol: adjusted p-value threshold")
    mode: str = Field(default="zero", pattern="^(zero|noise)$")
    noise_std: float = Field(default=1.0, gt=0)
    min_concept_drop: float = Field(default=0.5, gt=0, le=1)
    max_unrelated_drop: float = Field(default=0.05, ge=0, le=1)
    min_questions: int = Field(default=5, ge=1)
    unrelated_size: int = Field(default=40, ge=1)
    vectors_per_concept: int = Field(default=1, ge=1)
    set_sizes: list[int] = Field(default_factory=lambda: [4, 16, 64])


class UnlearnOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    methods: list[str] = Field(default_factory=lambda: ["gradient-ascent", "gradient-difference", "npo", "ablation"])
    concepts: int = Field(default=10, ge=1, description="how many concepts (validated ones first)")
    steps: int = Field(default=10, ge=1)
    lr: float | None = Field(default=None, gt=0, description="None: each method's own (1e-5; needle 1e-1, as it "
                             "moves one column per concept vector)")
    forget_on: Literal["questions", "text"] = Field(
        default="questions", description="train on the concept's answered questions, or on sentences stating its "
        "facts (kgprobe.probe.concept_text; the questions are then held out, as in ConceptVectors)")
    beta: float = Field(default=0.1, gt=0)
    retain_size: int = Field(default=20, ge=1)
    top_tokens: int = Field(default=50, ge=1)
    fact_set: str | None = Field(default="countries", description="fact probes before and after (kgprobe probe "
                                 "facts): the concept's facts forgotten, other facts kept; None: QA items only")
    fact_retain_size: int = Field(default=40, ge=1, description="other facts sampled per concept")
    attack_styles: list[Literal["role", "grandmother", "in_context", "german"]] = Field(
        default_factory=lambda: ["role", "grandmother", "in_context", "german"],
        description="ConceptVectors' attacks on the concept's questions, accuracy per style before and after")


def _read_json(path: Path, what: str):
    if not path.is_file():
        raise KgprobeError(f"{path} is missing: run the {what} stage first")
    return json.loads(path.read_text(encoding="utf-8"))


def _known_items(concepts: Sequence[Concept], known: dict[str, list[int]]) -> dict[str, list[QA]]:
    return {c.id: [c.qa[i] for i in known.get(c.id, [])] for c in concepts}


def locate(model, tokenizer, concepts: Sequence[Concept], out: Path, *, options: LocateOptions = LocateOptions(),
           few_shot: str = "", batch_size: int = 32, echo: Callable[[str], None] = print) -> list[dict]:
    """Write scan.pt, known.json and candidates.jsonl into ``out``; return the candidate rows."""
    from tqdm.auto import tqdm

    from kgprobe.probe.attribution import neuron_effects
    from kgprobe.probe.concepts import known_questions
    from kgprobe.probe.scan import ScanResult, concept_scores, scan_value_vectors

    out.mkdir(parents=True, exist_ok=True)
    if (out / SCAN_FILE).is_file():
        scan = ScanResult.load(out / SCAN_FILE)
    else:
        start = time.perf_counter()
        scan = scan_value_vectors(model, k=options.top_tokens, chunk=options.chunk)
        scan.save(out / SCAN_FILE)
        echo(f"scanned {scan.top_ids.shape[0]} value vectors in {time.perf_counter() - start:.1f}s")
    if (out / KNOWN_FILE).is_file():
        known_idx = json.loads((out / KNOWN_FILE).read_text())
    else:
        answered = known_questions(model, tokenizer, concepts, few_shot=few_shot, batch_size=batch_size)
        known_idx = {c.id: [i for i, ok in enumerate(answered[c.id]) if ok] for c in concepts}
        write_json(out / KNOWN_FILE, known_idx)
    known = _known_items(concepts, known_idx)
    n_ok = sum(len(v) > 0 for v in known.values())
    echo(f"the model answers {sum(map(len, known.values()))} of {sum(len(c.qa) for c in concepts)} questions "
         f"({n_ok} of {len(concepts)} concepts have at least one)")

    scores = concept_scores(scan, [concept_token_ids(c, tokenizer) for c in concepts], weighting="rank")
    pool = torch.topk(scores, min(options.pool, scores.shape[1]), dim=1)
    general = None
    if options.rank_by == "effect" or options.effect_set:
        everything = [qa for c in concepts for qa in known[c.id]]
        sample = random.Random(0).sample(everything, min(options.general_questions, len(everything)))
        if sample:
            general = neuron_effects(model, tokenizer, sample, few_shot=few_shot).reshape(-1) / len(sample)
    rows, effect_rows = [], []
    for ci, concept in enumerate(tqdm(concepts, desc="locate", unit="concept", disable=general is None)):
        effects = None
        if general is not None and known[concept.id]:
            # per question, minus what an average question needs: vectors this concept relies on
            effects = (neuron_effects(model, tokenizer, known[concept.id], few_shot=few_shot).reshape(-1)
                       / len(known[concept.id]) - general)
            if options.effect_set:
                top = torch.topk(effects, min(options.effect_set, effects.numel()))
                effect_rows.append({"concept": concept.id, "vectors": [
                    [*scan.layer_index(int(r)), round(float(v), 6)] for r, v in zip(top.indices, top.values)]})
        keep = pool.values[ci] > 0
        rows_ci, token_score = pool.indices[ci][keep], pool.values[ci][keep]
        if rows_ci.numel() == 0:
            continue
        effect = effects[rows_ci] if effects is not None else torch.zeros_like(token_score)
        if options.rank_by == "effect" and effects is not None:
            order = torch.argsort(effect, descending=True, stable=True)
        else:
            order = torch.arange(len(rows_ci))
        for rank, j in enumerate(order[: options.per_concept].tolist()):
            layer, index = scan.layer_index(int(rows_ci[j]))
            tokens = tokenizer.convert_ids_to_tokens(scan.top_ids[int(rows_ci[j]), :10].tolist())
            rows.append({"concept": concept.id, "rank": rank + 1, "layer": layer, "index": index,
                         "token_score": round(float(token_score[j]), 6), "effect": round(float(effect[j]), 6),
                         "top_tokens": [tokenizer.convert_tokens_to_string([t]) for t in tokens]})
    for name, data in ((CANDIDATES_FILE, rows), (EFFECTS_FILE, effect_rows)):
        with atomic_path(out / name) as tmp:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data), encoding="utf-8")
    echo(f"{len(rows)} candidate vectors for {len({r['concept'] for r in rows})} concepts -> {out / CANDIDATES_FILE}")
    return rows


def discover(model, tokenizer, out: Path, *, options: DiscoverOptions = DiscoverOptions(), few_shot: str = "",
             batch_size: int = 32, echo: Callable[[str], None] = print) -> list[Concept]:
    """Vectors -> concepts (:mod:`kgprobe.probe.discover`): discovered.jsonl (every column that
    names a concept), concepts.jsonl (the concepts with questions from the KG), candidates.jsonl
    (up to ``per_concept`` columns per concept, most matches first) and known.json, so validate and
    unlearn run on them with ``--concepts OUT/concepts.jsonl``. Returns the concepts."""
    from kgprobe.probe.concepts import known_questions, save_concepts
    from kgprobe.probe.discover import concept_questions, discover_concepts

    out.mkdir(parents=True, exist_ok=True)
    records = discover_concepts(model, tokenizer, layers=options.layers, k=options.top_tokens,
                                min_matches=options.min_matches, min_lift=options.min_lift)
    by_concept: dict[str, list[dict]] = {}
    for r in records:  # records come best first
        by_concept.setdefault(r["concept"], []).append(r)
    chosen = list(by_concept.items())[: options.max_concepts]
    concepts, rows = [], []
    for cid, found in chosen:
        questions = concept_questions(cid)
        if not questions:
            continue
        concepts.append(Concept(id=cid, name=found[0]["name"], kind=found[0]["kind"], qa=questions))
        rows += [{"concept": cid, "rank": rank + 1, "layer": r["layer"], "index": r["index"],
                  "token_score": r["coherence"], "effect": 0.0, "matches": r["matches"],
                  "top_tokens": r["top_tokens"][:10]} for rank, r in enumerate(found[: options.per_concept])]
    save_concepts(concepts, out / DISCOVERED_CONCEPTS)
    for name, data in ((DISCOVERED_FILE, records), (CANDIDATES_FILE, rows)):
        with atomic_path(out / name) as tmp:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data), encoding="utf-8")
    answered = known_questions(model, tokenizer, concepts, few_shot=few_shot, batch_size=batch_size)
    write_json(out / KNOWN_FILE, {c.id: [i for i, ok in enumerate(answered[c.id]) if ok] for c in concepts})
    echo(f"{len(records)} columns name {len(by_concept)} concepts; {len(concepts)} with questions -> "
         f"{out / DISCOVERED_CONCEPTS} (use it as --concepts for validate and unlearn)")
    return concepts


def _effect_sets(out: Path) -> dict[str, list[tuple[int, int]]]:
    path = out / EFFECTS_FILE
    if not path.is_file():
        return {}
    sets = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            sets[row["concept"]] = [(int(v[0]), int(v[1])) for v in row["vectors"]]
        except (ValueError, KeyError, TypeError, IndexError):
            raise KgprobeError("not an effects line", path=path, line=n) from None
    return sets


def _candidates(out: Path) -> dict[str, list[tuple[int, int, float]]]:
    path = out / CANDIDATES_FILE
    if not path.is_file():
        raise KgprobeError(f"{path} is missing: run the locate stage first")
    found: dict[str, list[tuple[int, int, float]]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            found.setdefault(row["concept"], []).append((int(row["layer"]), int(row["index"]),
                                                         float(row["token_score"])))
        except (ValueError, KeyError, TypeError):
            raise KgprobeError("not a candidate line", path=path, line=n) from None
    return found


def validate(model, tokenizer, concepts: Sequence[Concept], out: Path, *,
             options: ValidateOptions = ValidateOptions(), few_shot: str = "", batch_size: int = 32,
             seed: int = 0, echo: Callable[[str], None] = print) -> dict:
    """Damage each concept's candidates, write the validation table and summary; return the summary."""
    from kgprobe.probe.validate import ValidationParams, validate_concepts

    known = _known_items(concepts, _read_json(out / KNOWN_FILE, "locate"))
    if options.protocol == "null-controlled":
        return validate_against_nulls(model, tokenizer, concepts, out, known=known, options=options,
                                      few_shot=few_shot, seed=seed, echo=echo)
    if options.protocol == "original":
        return validate_as_original(model, tokenizer, concepts, out, options=options, seed=seed, echo=echo)
    fields = ValidationParams.__dataclass_fields__
    strict = {name: value for name, value in options.model_dump().items() if name in fields}
    params = ValidationParams(**{**strict, "set_sizes": tuple(options.set_sizes)}, seed=seed)
    records = validate_concepts(model, tokenizer, concepts, _candidates(out), known, params=params,
                                few_shot=few_shot, batch_size=batch_size, effect_sets=_effect_sets(out),
                                log_path=out / VALIDATION_LOG, progress=echo)
    cols = ["concept", "known_questions", "validated", "layer", "index", "vectors", "concept_acc_before",
            "concept_acc_after", "concept_drop", "unrelated_acc_before", "unrelated_acc_after", "unrelated_drop",
            "concept_logprob_delta", "unrelated_logprob_delta", "smallest_set", "skipped"]
    lines = ["\t".join(cols)]
    for r in records:
        best = r.get("best") or {}
        vecs = best.get("vectors") or [[None, None]]
        values = {**best, "concept": r["concept"], "known_questions": r["known_questions"],
                  "validated": r["validated"], "layer": vecs[0][0], "index": vecs[0][1],
                  "vectors": len(best.get("vectors") or []), "skipped": r.get("skipped", ""),
                  "smallest_set": r.get("smallest_set")}
        lines.append("\t".join("" if values.get(c) is None else str(values.get(c)) for c in cols))
    with atomic_path(out / VALIDATION_TSV) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tested = [r for r in records if r.get("best")]
    drops = sorted((r["best"]["concept_drop"] for r in tested), reverse=True)
    summary = {
        "concepts": len(records), "tested": len(tested),
        "skipped": {r["concept"]: r["skipped"] for r in records if r.get("skipped")},
        "validated": sum(r["validated"] for r in records),
        "validated_concepts": [r["concept"] for r in records if r["validated"]],
        "criterion": {"min_concept_drop": options.min_concept_drop, "max_unrelated_drop": options.max_unrelated_drop,
                      "mode": options.mode},
        "mean_best_concept_drop": round(sum(drops) / len(drops), 6) if drops else None,
        "best_concept_drops": [round(d, 4) for d in drops[:20]],
        "mean_unrelated_drop_of_best": (round(sum(r["best"]["unrelated_drop"] for r in tested) / len(tested), 6)
                                        if tested else None),
        # how many concepts a set of m vectors (the m most concept-specific) validates, per m
        "validated_by_set_of": {str(m): sum(1 for r in records if r.get("smallest_set") and r["smallest_set"] <= m)
                                for m in sorted(options.set_sizes)},
        "effect_sets": _set_table(records),
    }
    summary["diagnosis"] = _diagnosis(summary)
    write_json(out / VALIDATION_JSON, summary)
    echo(f"validated {summary['validated']} of {len(records)} concepts ({len(tested)} tested) "
         f"-> {out / VALIDATION_TSV}")
    return summary


def validate_against_nulls(model, tokenizer, concepts: Sequence[Concept], out: Path, *, known: dict[str, list[QA]],
                           options: ValidateOptions, few_shot: str, seed: int, echo: Callable[[str], None]) -> dict:
    """The null protocol (:mod:`kgprobe.probe.validate_null`): null.jsonl (checkpoint, one line per
    concept), null.json (summary and every test), null.png (null distributions); returns the summary."""
    from kgprobe.probe.nulls import NullParams
    from kgprobe.probe.validate_null import NullValidation, plot_nulls, summarise_null, validate_null

    settings = NullValidation(null=NullParams(intervention=options.intervention, noise_ratio=options.noise_ratio or 1.0,
                                              null_size=options.null_size, seed=seed),
                              unrelated_size=options.unrelated_size, alpha=options.alpha)
    records = validate_null(model, tokenizer, concepts, _candidates(out), known, options=settings, few_shot=few_shot,
                            log_path=out / NULL_LOG, progress=echo)
    summary = summarise_null(records, settings)
    write_json(out / NULL_JSON, {"summary": summary, "records": records})
    plot_nulls(records, out / NULL_PNG)
    echo(f"{summary['beat_null']} of {summary['tested']} tested concepts beat their null at adjusted p < "
         f"{options.alpha} -> {out / NULL_JSON}")
    return summary


def validate_as_original(model, tokenizer, concepts: Sequence[Concept], out: Path, *, options: ValidateOptions,
                         seed: int, echo: Callable[[str], None]) -> dict:
    """ConceptVectors' protocol (:mod:`kgprobe.probe.original`) on each concept's first candidate:
    original.jsonl (checkpoint), original.json (the original-form table and every record),
    original.png (per-concept histograms); returns the table."""
    from kgprobe.probe.original import (
        ORIGINAL_NOISE_RATIO,
        OriginalParams,
        original_concept,
        original_table,
        plot_original,
        validate_original,
    )

    found = _candidates(out)
    chosen = [original_concept(c, *found[c.id][0][:2]) for c in concepts if found.get(c.id)]
    params = OriginalParams(noise_ratio=options.noise_ratio or ORIGINAL_NOISE_RATIO,
                            max_new_tokens=options.max_new_tokens, unrelated_size=options.original_unrelated_size,
                            seed=seed)
    records = validate_original(model, tokenizer, chosen, params=params, log_path=out / ORIGINAL_LOG, progress=echo)
    table = original_table(records)
    write_json(out / ORIGINAL_JSON, {"table": table, "records": records})
    plot_original(records, out / ORIGINAL_PNG)
    echo(f"original protocol on {len(records)} concepts: target BLEU {table.get('target_bleu')}, unrelated BLEU "
         f"{table.get('unrelated_bleu')} -> {out / ORIGINAL_JSON}")
    return table


def _diagnosis(summary: dict) -> str:
    """One paragraph saying what the validation found, from its own numbers."""
    if not summary["tested"]:
        return "no concept had enough answered questions and a candidate vector to test"
    crit = summary["criterion"]
    damage = "ablation" if crit["mode"] == "zero" else "noise"
    text = (f"{summary['validated']} of {summary['tested']} tested concepts have one vector whose "
            f"{damage} lowers concept-QA accuracy by >= {crit['min_concept_drop']:.0%} (relative) "
            f"with <= {crit['max_unrelated_drop'] * 100:.0f} points unrelated; the largest single-vector concept "
            f"drops are {', '.join(f'{d:.2f}' for d in summary['best_concept_drops'][:5])}.")
    sets = summary["effect_sets"]
    if sets:
        parts = [f"{m} vectors: -{t['concept_drop']:.0%} concept / -{t['unrelated_drop'] * 100:.0f} points unrelated"
                 for m, t in sorted(sets.items(), key=lambda kv: int(kv[0]))]
        text += (" Damaging the m vectors the concept's answers use most (attribution) gives, on average, "
                 + "; ".join(parts) + ": the knowledge is spread over many vectors that other concepts share.")
    return text


def _set_table(records: list[dict]) -> dict[str, dict]:
    """Per set size: mean concept drop and mean unrelated drop over the concepts that tried it."""
    table: dict[str, dict] = {}
    for r in records:
        for row in r.get("candidates", []):
            if row.get("kind") == "effect":
                t = table.setdefault(str(len(row["vectors"])),
                                     {"concepts": 0, "concept_drop": 0.0, "unrelated_drop": 0.0})
                t["concepts"] += 1
                t["concept_drop"] += row["concept_drop"]
                t["unrelated_drop"] += row["unrelated_drop"]
    for t in table.values():
        t["concept_drop"] = round(t["concept_drop"] / t["concepts"], 4)
        t["unrelated_drop"] = round(t["unrelated_drop"] / t["concepts"], 4)
    return table


def unlearn_all(model, tokenizer, concepts: Sequence[Concept], out: Path, *,
                options: UnlearnOptions = UnlearnOptions(), few_shot: str = "", batch_size: int = 32, seed: int = 0,
                echo: Callable[[str], None] = print) -> dict:
    """Every method on the chosen concepts from the same start weights; the report; its summary."""
    from kgprobe.probe.concept_text import concept_sentences
    from kgprobe.probe.measure import intrinsic
    from kgprobe.probe.report import write_report
    from kgprobe.probe.unlearn import restore, snapshot, unlearn, unlearner_names

    unknown = [m for m in options.methods if m not in unlearner_names()]
    if unknown:
        raise KgprobeError(f"unknown unlearning method(s) {', '.join(unknown)}; known: {', '.join(unlearner_names())}")
    known = _known_items(concepts, _read_json(out / KNOWN_FILE, "locate"))
    log_path = out / VALIDATION_LOG
    if log_path.is_file():
        records = [r for r in ChunkLog(log_path).chunks.values() if r.get("best")]
    elif (out / NULL_JSON).is_file():
        log_path, records = out / NULL_JSON, _null_as_validation(out / NULL_JSON)
    else:
        raise KgprobeError(f"{log_path} is missing: run the validate stage first")
    # a concept whose questions the model answers none of has nothing to forget (the null protocol
    # may test a concept on all its questions): the next concept takes its place
    answered = [r for r in records if known.get(r["concept"])]
    if len(answered) < len(records):
        echo(f"{len(records) - len(answered)} tested concepts have no answered question to forget: passed over")
    records = answered
    # validated concepts first, then the largest concept drops
    records.sort(key=lambda r: (not r["validated"], r.get("smallest_set") is None, r.get("smallest_set") or 0,
                                -r["best"]["concept_drop"], r["concept"]))
    chosen = records[: options.concepts]
    if not chosen:
        raise KgprobeError(f"{log_path}: no concept got as far as a tested vector (see validation.json): "
                           "nothing to unlearn")
    by_id = {c.id: c for c in concepts}
    fact_set = None if options.fact_set is None else _unlearn_fact_set(options.fact_set, seed)
    snap = snapshot(model)
    log = ChunkLog(out / UNLEARN_LOG)
    # finished runs are found by what they are, not by their place: validating more concepts later
    # reorders `chosen`, and a record of another concept must never stand in for this one
    finished = {_unlearn_key(r["concept"], r["method"], r["vectors"]): r for r in log.chunks.values()}
    results = []
    n = len(log.chunks)
    for rec in chosen:
        concept = by_id[rec["concept"]]
        vectors = [tuple(v) for v in rec["best"]["vectors"]]
        if not rec["validated"] and rec.get("smallest_set"):
            smallest = min((row for row in rec["candidates"] if row.get("kind") == "effect" and row["validated"]),
                           key=lambda row: len(row["vectors"]))
            vectors = [tuple(v) for v in smallest["vectors"]]
        forget = known[concept.id]
        pool = [qa for cid, items in sorted(known.items()) if cid != concept.id for qa in items]
        retain = random.Random(f"{seed}:{concept.id}:retain").sample(pool, min(options.retain_size, len(pool)))
        facts = _concept_facts(fact_set, concept, size=options.fact_retain_size, seed=seed)
        styles = _attack_styles(concept, forget, options.attack_styles)
        measure = functools.partial(_measure, model, tokenizer, forget=forget, retain=retain, attack=concept.attack,
                                    facts=facts, fact_set=fact_set, few_shot=few_shot, batch_size=batch_size,
                                    styles=styles)
        before = None
        for method in options.methods:
            done = finished.get(_unlearn_key(concept.id, method, vectors))
            if done is None:
                restore(model, snap)
                if before is None:
                    before = measure()
                train_on = forget if options.forget_on == "questions" else concept_sentences(concept)
                run_log = unlearn(model, tokenizer, method=method, forget=train_on, retain=retain,
                                  concept_vectors=vectors, steps=options.steps, lr=options.lr, beta=options.beta,
                                  seed=seed, few_shot=few_shot)
                after = measure()
                done = {"concept": concept.id, "method": method, "vectors": [list(v) for v in vectors],
                        "validated": rec["validated"], "before": before, "after": after,
                        "intrinsic": intrinsic(snap, model, concept_vectors=vectors, k=options.top_tokens,
                                               concept_ids=concept_token_ids(concept, tokenizer)),
                        "log": run_log}
                log.write(n, json.loads(json.dumps(done)))
                n += 1
                shown = [("-" if d.get(k) is None else f"{d[k]:.2f}") for k in ("forget_acc", "retain_acc")
                         for d in (before, after)]  # None: no question of that kind
                echo(f"{concept.name} / {method}: forget acc {shown[0]} -> {shown[1]}, retain {shown[2]} -> "
                     f"{shown[3]}, vector cosine {done['intrinsic']['cosine']:.4f}")
            results.append({**{k: v for k, v in done.items() if k != "chunk"}, "validated": rec["validated"]})
    restore(model, snap)
    paths = write_report(results, out)
    report = json.loads(paths["json"].read_text())
    echo(f"unlearning report for {len(chosen)} concepts x {len(options.methods)} methods -> {out}")
    return report.get("summary", {})


def _unlearn_key(concept_id: str, method: str, vectors) -> tuple[str, str, tuple]:
    return concept_id, method, tuple(tuple(int(x) for x in v) for v in vectors)


def _null_as_validation(path: Path) -> list[dict]:
    """The null protocol's records in the strict validation's shape, for :func:`unlearn_all`: a
    concept that beats its null counts as validated, its vectors are those of its test with the
    lowest adjusted p, and ``1 - p`` orders the rest."""
    records = []
    for r in json.loads(path.read_text(encoding="utf-8"))["records"]:
        tests = r.get("tests") or {}
        if not tests:
            continue
        best = min(tests.values(), key=lambda t: (t["p_adjusted"], len(t["vectors"])))
        records.append({"concept": r["concept"], "validated": bool(r["beats_null"]), "smallest_set": None,
                        "best": {"vectors": best["vectors"], "concept_drop": 1 - best["p_adjusted"]}})
    return records


def _unlearn_fact_set(source: str, seed: int):
    from kgprobe.probe.fact_sets import load_fact_set

    return load_fact_set(source, seed=seed)


def _concept_facts(fact_set, concept: Concept, *, size: int, seed: int) -> tuple[list, list] | None:
    """(facts that name the concept as subject or object, a seeded sample of ``size`` others)."""
    if fact_set is None:
        return None
    names = {n.casefold() for n in (concept.name, *concept.aliases)}
    about = [f for f in fact_set.facts if f.subject.casefold() in names or f.answer.casefold() in names]
    others = [f for f in fact_set.facts if f.subject.casefold() not in names and f.answer.casefold() not in names]
    return about, random.Random(f"{seed}:{concept.id}:retain facts").sample(others, min(size, len(others)))


def _attack_styles(concept: Concept, questions: Sequence[QA], styles: Sequence[str]) -> dict[str, list[QA]]:
    """The concept's answered questions in each of ConceptVectors' attack styles
    (:mod:`kgprobe.probe.attacks`; the in-context text: its fact sentences)."""
    from kgprobe.probe.attacks import attack_items
    from kgprobe.probe.concept_text import concept_sentences

    text = concept_sentences(concept) if "in_context" in styles else None
    return {style: attack_items(concept, questions, style=style, text=text) for style in styles}


def _measure(model, tokenizer, *, forget, retain, attack, facts: tuple[list, list] | None, fact_set, few_shot: str,
             batch_size: int, styles: dict[str, list[QA]] | None = None) -> dict:
    """The QA measures (:func:`kgprobe.probe.measure.behavioural`), accuracy per attack style
    (``attack_style_acc``) and, with ``facts``, fact-probe accuracy on the concept's facts (to
    forget) and on other facts (to keep)."""
    from kgprobe.probe.measure import behavioural, fact_accuracy
    from kgprobe.probe.qa import accuracy, score_qa

    got = behavioural(model, tokenizer, forget=forget, retain=retain, attack=attack, few_shot=few_shot,
                      batch_size=batch_size)
    got["attack_style_acc"] = {style: accuracy(score_qa(model, tokenizer, items, few_shot=few_shot,
                                                        batch_size=batch_size)) if items else None
                               for style, items in (styles or {}).items()}
    if facts is None:
        return got
    about, others = facts
    return {**got, "n_forget_facts": len(about), "n_retain_facts": len(others),
            "forget_fact_acc": fact_accuracy(model, tokenizer, fact_set, about),
            "retain_fact_acc": fact_accuracy(model, tokenizer, fact_set, others)}


def load_concept_files(paths: Sequence[str | Path]) -> list[Concept]:
    concepts: list[Concept] = []
    for p in paths:
        concepts += load_concepts(p)
    ids = [c.id for c in concepts]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise KgprobeError(f"concept ids appear twice: {', '.join(dup[:5])}")
    return concepts


# ------------------------------------------------------------------ the stages as commands
#: the concept file the commands use when given none
DEFAULT_CONCEPT_FILES = ("kg_data/concepts/countries.jsonl",)
#: the command whose output a run directory is (its ``.kgprobe`` marker; see :mod:`kgprobe.outdir`)
COMMAND = "probe"


def _open_stage(stage: str, out: Path, *, concept_files: Sequence[str | Path], model: str, device: str,
                few_shot: str | None, max_concepts: int | None, loading_bars: bool, dtype: str = "auto",
                device_map: str | None = None):
    """Check the options and ``out`` (a stage after locate needs locate's output there), load the
    concepts and the model, then create ``out``: ``(model, tokenizer, concepts, few-shot prefix)``."""
    # imported when called: the tests replace the loaders
    from kgprobe.models import check_model, dtype_name, input_device, load_causal_lm, resolve_device, resolve_dtype
    from kgprobe.models.device import check_device_map
    from kgprobe.models.loaders import hide_loading_bars
    from kgprobe.outdir import check_output_dir, open_output_dir
    from kgprobe.probe.concepts import FEW_SHOT

    resolve_device(device)  # every option is checked before the model loads
    resolve_dtype(dtype, "cpu")
    check_device_map(device_map)
    check_model(model, kind="causal-lm")
    target = check_output_dir(out, command=COMMAND)
    if stage != "locate" and target.state != "own":
        raise KgprobeError(f"{out} holds no `kgprobe probe locate` output: run the locate stage first, with this --out")
    if not loading_bars:
        hide_loading_bars()
    concepts = load_concept_files(concept_files)[:max_concepts]
    if stage == "unlearn" and dtype == "auto":
        dtype = "fp32"  # steps of about lr (1e-5) vanish when rounded into bf16 / fp16 weights
    lm, tokenizer = load_causal_lm(model, device=device, dtype=dtype, device_map=device_map)
    open_output_dir(target)
    try:  # the other stages' records are kept; a missing or unreadable file starts afresh
        records = dict(json.loads((out / MODEL_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        records = {}
    records[stage] = {"model": model, "dtype": dtype_name(next(lm.parameters()).dtype),
                      "device": str(input_device(lm)), "device_map": getattr(lm, "hf_device_map", None)}
    write_json(out / MODEL_FILE, records)
    return lm, tokenizer, concepts, FEW_SHOT if few_shot is None else few_shot


def _record_halvings(out: Path, stage: str, halvings: list[dict]) -> None:
    """Batches the stage halved after running out of memory, under the stage in model.json."""
    if not halvings:
        return
    records = dict(json.loads((out / MODEL_FILE).read_text(encoding="utf-8")))
    records[stage] = {**records.get(stage, {}), "memory_halvings": halvings}
    write_json(out / MODEL_FILE, records)


def run_locate(out: str | Path, *, concept_files: Sequence[str | Path] = DEFAULT_CONCEPT_FILES,
               model: str = "smollm2-135m", device: str = "auto", few_shot: str | None = None,
               dtype: str = "auto", device_map: str | None = None,
               max_concepts: int | None = None, options: LocateOptions = LocateOptions(), batch_size: int = 32,
               echo: Callable[[str], None] = print, loading_bars: bool = True) -> list[dict]:
    """``kgprobe probe locate``: :func:`locate` with the causal LM ``model`` (loaded here) on the
    concepts of ``concept_files`` (the first ``max_concepts``), into the run directory ``out``.

    ``out`` must be new, empty or a probe run (see :mod:`kgprobe.outdir`); it is checked, like the
    device and the model, before anything loads, and created only once the model has loaded.
    ``few_shot`` prefixes every question (None: the concepts' default). ``dtype`` (auto: bf16 on a
    GPU, fp32 on CPU) and ``device_map`` (None or ``"auto"``) as for
    :func:`~kgprobe.models.load_causal_lm`; model.json records what the stage ran in. Returns the
    candidate rows.
    """
    out = Path(out)
    lm, tokenizer, concepts, prefix = _open_stage("locate", out, concept_files=concept_files, model=model,
                                                  device=device, few_shot=few_shot, max_concepts=max_concepts,
                                                  loading_bars=loading_bars, dtype=dtype, device_map=device_map)
    with recording_halvings() as halvings:
        rows = locate(lm, tokenizer, concepts, out, options=options, few_shot=prefix, batch_size=batch_size,
                      echo=echo)
    _record_halvings(out, "locate", halvings)
    return rows


def run_discover(out: str | Path, *, model: str = "smollm2-135m", device: str = "auto", few_shot: str | None = None,
                 dtype: str = "auto", device_map: str | None = None, options: DiscoverOptions = DiscoverOptions(),
                 batch_size: int = 32, echo: Callable[[str], None] = print, loading_bars: bool = True) -> list[Concept]:
    """``kgprobe probe discover``: :func:`discover` with the causal LM ``model`` into the run
    directory ``out`` (new, empty or a probe run; checked before anything loads)."""
    out = Path(out)
    lm, tokenizer, _, prefix = _open_stage("locate", out, concept_files=(), model=model, device=device,
                                           few_shot=few_shot, max_concepts=None, loading_bars=loading_bars,
                                           dtype=dtype, device_map=device_map)
    with recording_halvings() as halvings:
        concepts = discover(lm, tokenizer, out, options=options, few_shot=prefix, batch_size=batch_size, echo=echo)
    _record_halvings(out, "locate", halvings)
    return concepts


def run_validate(out: str | Path, *, concept_files: Sequence[str | Path] = DEFAULT_CONCEPT_FILES,
                 model: str = "smollm2-135m", device: str = "auto", few_shot: str | None = None,
                 dtype: str = "auto", device_map: str | None = None,
                 max_concepts: int | None = None, options: ValidateOptions = ValidateOptions(), seed: int = 0,
                 batch_size: int = 32, echo: Callable[[str], None] = print, loading_bars: bool = True) -> dict:
    """``kgprobe probe validate``: :func:`validate` in the run directory ``out``, which must hold
    :func:`run_locate`'s output (checked before anything loads). Arguments as for :func:`run_locate`
    (keep ``concept_files`` and ``max_concepts`` the same for every stage). Returns the summary."""
    out = Path(out)
    lm, tokenizer, concepts, prefix = _open_stage("validate", out, concept_files=concept_files, model=model,
                                                  device=device, few_shot=few_shot, max_concepts=max_concepts,
                                                  loading_bars=loading_bars, dtype=dtype, device_map=device_map)
    with recording_halvings() as halvings:
        summary = validate(lm, tokenizer, concepts, out, options=options, few_shot=prefix, batch_size=batch_size,
                           seed=seed, echo=echo)
    _record_halvings(out, "validate", halvings)
    return summary


def run_unlearn(out: str | Path, *, concept_files: Sequence[str | Path] = DEFAULT_CONCEPT_FILES,
                model: str = "smollm2-135m", device: str = "auto", few_shot: str | None = None,
                dtype: str = "auto", device_map: str | None = None,
                max_concepts: int | None = None, options: UnlearnOptions = UnlearnOptions(), seed: int = 0,
                batch_size: int = 32, echo: Callable[[str], None] = print, loading_bars: bool = True) -> dict:
    """``kgprobe probe unlearn``: :func:`unlearn_all` in the run directory ``out`` (which must hold
    a probe run; its validate stage must have run). Arguments as for :func:`run_locate`. Returns the
    report's summary."""
    out = Path(out)
    lm, tokenizer, concepts, prefix = _open_stage("unlearn", out, concept_files=concept_files, model=model,
                                                  device=device, few_shot=few_shot, max_concepts=max_concepts,
                                                  loading_bars=loading_bars, dtype=dtype, device_map=device_map)
    with recording_halvings() as halvings:
        summary = unlearn_all(lm, tokenizer, concepts, out, options=options, few_shot=prefix,
                              batch_size=batch_size, seed=seed, echo=echo)
    _record_halvings(out, "unlearn", halvings)
    return summary


def lens(model: str = "smollm2-135m", *, layer: int, index: int, k: int = 20, device: str = "auto",
         loading_bars: bool = True, dtype: str = "auto", device_map: str | None = None) -> dict:
    """``kgprobe probe lens``: the ``k`` tokens value vector ``index`` of MLP ``layer`` promotes most
    (logit lens), as ``{"layer", "index", "tokens", "logits"}`` (logits rounded to 4 places)."""
    # imported when called: the tests replace the loaders
    from kgprobe.models import check_model, load_causal_lm, resolve_device, resolve_dtype
    from kgprobe.models.loaders import hide_loading_bars
    from kgprobe.probe.hooks import arch_of, logit_lens, value_vectors

    resolve_device(device)  # a bad device or model fails before the model loads
    resolve_dtype(dtype, "cpu")
    check_model(model, kind="causal-lm")
    if not loading_bars:
        hide_loading_bars()
    lm, tokenizer = load_causal_lm(model, device=device, dtype=dtype, device_map=device_map)
    vectors = value_vectors(lm, layer)
    arch_of(lm).check_index(index)
    values, ids = logit_lens(lm, vectors[index:index + 1], k=k)
    return {"layer": layer, "index": index, "tokens": [tokenizer.decode([i]) for i in ids[0].tolist()],
            "logits": [round(v, 4) for v in values[0].tolist()]}
