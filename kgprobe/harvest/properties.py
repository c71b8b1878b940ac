"""Relation properties inferred from the seeds and the LM: symmetric, functional.

**Symmetric** (borders, antonym, synonym): a relation file that lists (love, hate) gets (hate, love)
back as a second tuple unless the harvest knows that both say the same. It is symmetric when
the seeds list a pair both ways, or when the LM reads the seeds reversed about as well as the
seeds themselves. With ``pos_t`` and ``neg_t`` the prompt weighting's mean scores of the seeds and
of their corruptions under prompt ``t`` (:mod:`kgprobe.harvest.weighting`, prompts.json: the
seeds are not scored twice), ``s_t`` the same scorer (seed ``i`` left out of its few-shot prefix)
and ``w_t`` the prompt weights:

    forward = sum_t w_t (pos_t - neg_t)
    reverse = sum_t w_t (mean_i s_t(reversed seed_i) - neg_t)
    symmetric  <=>  forward > 0  and  reverse >= SYMMETRY_RATIO * forward

"Spain borders France" is as likely as the seed; "France is the capital of Paris" falls below the
corruptions. A symmetric harvest keeps one tuple per unordered pair (the better-scored order).
Before the LM is asked, slots of different types settle it: a relation from countries to national
capitals, or from verbs to nouns, cannot be symmetric however well the LM reads "The noun for the
verb decision is decide ." (``slots_differ``, from the slot types; ``symmetric_from`` "types").

**Functional** (capital_of, city_in_country: each subject has one object): slot 0 is the subject.
The seeds say it is functional when no two of them share a subject; then ``max_per_slot`` gets
``{0: 1}`` by default (at most one tuple per subject; unlike a cap the file writes, an inferred one
does not make candidates compete in the ranking, see :func:`kgprobe.harvest.ranking.final_ranking`).
A symmetric relation is not made functional.

Both are overridden by the relation file (``constraints.symmetric``, ``constraints.functional``,
or an explicit ``max_per_slot``) and recorded in the run's ``properties.json``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch

from kgprobe.harvest.relation import Constraints, Template

#: reversed seeds must keep at least this share of the seeds' margin over their corruptions
SYMMETRY_RATIO = 0.6


@dataclass(frozen=True)
class Properties:
    """The properties a harvest runs with, and where each came from (file / seeds / lm)."""

    symmetric: bool
    symmetric_from: str
    functional: bool
    functional_from: str
    max_per_slot: dict[int, int]
    margins: dict[str, float] | None = None  # forward / reverse margins of the LM test

    def as_dict(self) -> dict:
        return {**asdict(self), "max_per_slot": {str(k): v for k, v in self.max_per_slot.items()}}


def symmetry_margins(score: Callable[[Template, list[tuple[str, ...]], int], torch.Tensor],
                     weighted: list[tuple[Template, float]], seeds: list[tuple[str, ...]],
                     rows: list[dict]) -> dict[str, float]:
    """``forward`` and ``reverse`` of the module docstring (binary relations); ``rows`` are the
    weighting's per-prompt records (``prompt``, ``pos``, ``neg``)."""
    by_prompt = {row["prompt"]: row for row in rows}
    forward = reverse = 0.0
    for template, weight in weighted:
        row = by_prompt[template.prompt]
        reversed_ = torch.cat([score(template, [seed[::-1]], i) for i, seed in enumerate(seeds)]).mean()
        forward += weight * (row["pos"] - row["neg"])
        reverse += weight * (float(reversed_) - row["neg"])
    return {"forward": round(forward, 6), "reverse": round(reverse, 6)}


def infer_properties(constraints: Constraints, seeds: list[tuple[str, ...]], *,
                     margins: Callable[[], dict[str, float]] | None = None, infer: bool = True,
                     slots_differ: bool = False) -> Properties:
    """The relation's properties: the file's where it states them, else inferred (``infer``;
    otherwise neither symmetric nor functional). ``margins`` runs the LM test of symmetry
    (:func:`symmetry_margins`); it is called only when needed. ``slots_differ``: the two slots
    hold different kinds of thing (their types say so), so the relation is not symmetric."""
    symmetric, symmetric_from, found = False, "arity", None
    if len(seeds[0]) == 2:
        pairs = {tuple(e.lower() for e in s) for s in seeds}
        if constraints.symmetric is not None:
            symmetric, symmetric_from = constraints.symmetric, "file"
        elif not infer:
            symmetric_from = "off"
        elif any(p[::-1] in pairs for p in pairs):
            symmetric, symmetric_from = True, "seeds"
        elif slots_differ:
            symmetric_from = "types"
        elif margins is not None:
            found = margins()
            symmetric = found["forward"] > 0 and found["reverse"] >= SYMMETRY_RATIO * found["forward"]
            symmetric_from = "lm"
        else:
            symmetric_from = "untested"
    if constraints.max_per_slot:
        functional, functional_from = 0 in constraints.max_per_slot, "file"
        limits = dict(constraints.max_per_slot)
    else:
        if constraints.functional is not None:
            functional, functional_from = constraints.functional, "file"
        elif not infer:
            functional, functional_from = False, "off"
        else:
            subjects = [s[0].lower() for s in seeds]
            functional = len(set(subjects)) == len(subjects) and not symmetric and len(seeds[0]) > 1
            functional_from = "seeds"
        limits = {0: 1} if functional else {}
    return Properties(symmetric=symmetric, symmetric_from=symmetric_from, functional=functional,
                      functional_from=functional_from, max_per_slot=limits, margins=found)


def one_per_pair(tuples: list[tuple[str, ...]], *, taken: list[tuple[str, ...]] = ()) -> list[int]:
    """Indices of ``tuples`` (best first) without the later order of an unordered pair, nor
    either order of a pair in ``taken`` (the seeds)."""
    seen: set[frozenset[str]] = {frozenset(e.lower() for e in ents) for ents in taken}
    kept = []
    for i, ents in enumerate(tuples):
        key = frozenset(e.lower() for e in ents)
        if key not in seen:
            seen.add(key)
            kept.append(i)
    return kept
