"""Causal validation of candidate concept vectors: damage the vector, ask the questions again.

For a concept ``c`` with questions ``Q_c`` that the intact model answers (greedy exact match) and
a fixed sample ``U_c`` of other concepts' answered questions, damaging value vector ``v``
(zeroing it, or adding Gaussian noise) gives

    concept drop    = 1 - acc(Q_c | v damaged) / acc(Q_c)          (relative)
    unrelated drop  = acc(U_c) - acc(U_c | v damaged)               (absolute, in accuracy points)

A candidate *validates* the concept when ``concept drop >= min_concept_drop`` and
``unrelated drop <= max_unrelated_drop`` (ConceptVectors' criterion: the damage hurts the
concept's questions and leaves unrelated ones alone). The concept's vector is its best candidate
by concept drop among those within the unrelated budget; with ``vectors_per_concept = m > 1`` the
top ``m`` scan candidates are damaged together as one more candidate.

A small model may spread a fact over many vectors, so that no single one validates. To show how
far from one vector the model is, ``set_sizes`` also damages the ``m`` vectors with the largest
concept-specific first-order effect (see :mod:`kgprobe.probe.attribution`) for each ``m``; the
record's ``smallest_set`` is the least ``m`` that meets the criterion.

Results go to a :class:`~kgprobe.checkpoint.ChunkLog` (one line per concept), so a killed
validation resumes where it stopped.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from kgprobe.checkpoint import ChunkLog
from kgprobe.errors import KgprobeError
from kgprobe.probe.concepts import QA, Concept
from kgprobe.probe.hooks import damage_value_vectors
from kgprobe.probe.qa import score_qa


@dataclass(frozen=True)
class ValidationParams:
    mode: str = "zero"                 # "zero" (ablation) or "noise"
    noise_std: float = 1.0             # absolute std of the added noise (mode "noise")
    min_concept_drop: float = 0.5      # relative drop of concept-QA accuracy to count as validated
    max_unrelated_drop: float = 0.05   # largest allowed drop of unrelated-QA accuracy (5 points)
    min_questions: int = 5             # concepts with fewer known questions are skipped
    unrelated_size: int = 40           # unrelated questions per concept
    vectors_per_concept: int = 1       # also damage the top-m candidates together when m > 1
    set_sizes: tuple[int, ...] = ()    # also damage the m most concept-specific vectors, per m
    seed: int = 0

    def check(self) -> None:
        if self.mode not in ("zero", "noise"):
            raise KgprobeError(f"validation mode {self.mode!r}: expected 'zero' or 'noise'")
        if not 0 < self.min_concept_drop <= 1 or not 0 <= self.max_unrelated_drop <= 1:
            raise KgprobeError("min_concept_drop must be in (0, 1] and max_unrelated_drop in [0, 1]")
        if self.min_questions < 1 or self.unrelated_size < 1 or self.vectors_per_concept < 1:
            raise KgprobeError("min_questions, unrelated_size and vectors_per_concept must be >= 1")
        if any(m < 1 for m in self.set_sizes):
            raise KgprobeError(f"set_sizes must be >= 1, got {list(self.set_sizes)}")


def unrelated_sample(known: dict[str, list[QA]], concept_id: str, size: int, seed: int) -> list[QA]:
    """``size`` answered questions of the other concepts, seeded per concept (independent of the
    concept order)."""
    pool = [qa for cid, items in sorted(known.items()) if cid != concept_id for qa in items]
    rng = random.Random(f"{seed}:{concept_id}")  # per concept, independent of the concept order
    return rng.sample(pool, min(size, len(pool)))


def _accuracy(correct: torch.Tensor) -> float:
    return float(correct.float().mean()) if correct.numel() else 0.0


def validate_concepts(model, tokenizer, concepts: Sequence[Concept],
                      candidates: dict[str, list[tuple[int, int, float]]], known: dict[str, list[QA]], *,
                      params: ValidationParams = ValidationParams(), few_shot: str = "", batch_size: int = 32,
                      effect_sets: dict[str, list[tuple[int, int]]] | None = None,
                      log_path: str | Path | None = None,
                      progress: Callable[[str], None] | None = None) -> list[dict]:
    """One record per concept: every candidate's effect and the verdict (see the module docstring)."""
    params.check()
    log = ChunkLog(Path(log_path)) if log_path is not None else None
    records = []
    for n, concept in enumerate(concepts):
        record = log.done_for(n, key="concept", value=concept.id) if log is not None else None
        if record is None:
            record = _validate_one(model, tokenizer, concept, candidates.get(concept.id, []), known, params,
                                   few_shot, batch_size, (effect_sets or {}).get(concept.id, []))
            if log is not None:
                log.write(n, record)
        records.append(record)
        if progress is not None:
            verdict = "validated" if record["validated"] else record.get("skipped") or "not validated"
            progress(f"[{n + 1}/{len(concepts)}] {concept.name}: {verdict}")
    return records


def _validate_one(model, tokenizer, concept: Concept, candidates: list[tuple[int, int, float]],
                  known: dict[str, list[QA]], params: ValidationParams, few_shot: str, batch_size: int,
                  effect_set: list[tuple[int, int]]) -> dict:
    mine = known.get(concept.id, [])
    record = {"concept": concept.id, "name": concept.name, "known_questions": len(mine),
              "validated": False, "best": None, "candidates": []}
    if len(mine) < params.min_questions:
        record["skipped"] = f"{len(mine)} known questions < {params.min_questions}"
        return record
    if not candidates and not effect_set:
        record["skipped"] = "no candidate vector"
        return record
    unrelated = unrelated_sample(known, concept.id, params.unrelated_size, params.seed)
    items = mine + unrelated
    k = len(mine)

    def run(targets: list[tuple[int, int]] | None):
        if targets is None:
            return score_qa(model, tokenizer, items, few_shot=few_shot, batch_size=batch_size)
        with damage_value_vectors(model, targets, mode=params.mode, noise_std=params.noise_std, seed=params.seed):
            return score_qa(model, tokenizer, items, few_shot=few_shot, batch_size=batch_size)

    base = run(None)
    c0, u0 = _accuracy(base.correct[:k]), _accuracy(base.correct[k:])
    trials = [("token", [(layer, index)]) for layer, index, _ in candidates]
    if params.vectors_per_concept > 1 and len(candidates) > 1:
        trials.append(("token", [(layer, index) for layer, index, _ in candidates[: params.vectors_per_concept]]))
    trials += [("effect", [tuple(v) for v in effect_set[:m]]) for m in sorted(set(params.set_sizes))
               if m <= len(effect_set)]
    scores = {(layer, index): score for layer, index, score in candidates}
    for kind, targets in trials:
        after = run(targets)
        c1, u1 = _accuracy(after.correct[:k]), _accuracy(after.correct[k:])
        row = {
            "kind": kind, "vectors": [list(t) for t in targets],
            "scan_score": round(sum(scores.get(t, 0.0) for t in targets), 6),
            "concept_acc_before": c0, "concept_acc_after": c1,
            "concept_drop": round(1 - c1 / c0, 6) if c0 > 0 else 0.0,
            "unrelated_acc_before": u0, "unrelated_acc_after": u1,
            "unrelated_drop": round(u0 - u1, 6),
            "concept_logprob_delta": round(float((after.logprob[:k] - base.logprob[:k]).mean()), 6),
            "unrelated_logprob_delta": round(float((after.logprob[k:] - base.logprob[k:]).mean()), 6),
        }
        row["validated"] = (row["concept_drop"] >= params.min_concept_drop
                            and row["unrelated_drop"] <= params.max_unrelated_drop)
        record["candidates"].append(row)
    sets = [r for r in record["candidates"] if r["kind"] == "effect" and r["validated"]]
    record["smallest_set"] = min((len(r["vectors"]) for r in sets), default=None)
    allowed = [r for r in record["candidates"] if r["unrelated_drop"] <= params.max_unrelated_drop
               and (r["kind"] == "token" or len(r["vectors"]) == 1)]
    if allowed:
        best = max(allowed, key=lambda r: (r["concept_drop"], -r["unrelated_drop"], -len(r["vectors"])))
        record["best"] = best
        record["validated"] = best["validated"]
    record["params"] = asdict(params)
    return record
