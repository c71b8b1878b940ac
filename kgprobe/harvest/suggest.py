"""Seeds proposed by the LM for a relation given only by its prompts (``--suggest-seeds N``).

A new user has a prompt but may not know which five tuples make good seeds. The harvest's own
search runs with no seed (or with the few the user gave) in the few-shot prefix, every prompt
weighted alike; each candidate is rescored under every prompt and the mean

    s(x) = (1/P) sum_t s_t(x)

ranks them. At most one suggestion per value of slot 0 and none sharing a value with a given seed,
so the list is varied. The user confirms them by passing them back as ``--seed``; nothing is
harvested here.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import torch

from kgprobe.harvest.relation import Relation, relation_from_options
from kgprobe.models.loaders import lm_kind


def suggest_seeds(rel: Relation, backend, *, n: int = 10, echo: Callable[[str], None] = print) -> list[dict]:
    """Up to ``n`` proposed tuples, best first: ``{entities, score}``."""
    weighted = [(t, 1 / len(rel.templates)) for t in rel.templates]
    with tempfile.TemporaryDirectory() as tmp:  # the search's checkpoints are not kept
        candidates = list(dict.fromkeys(backend.search(weighted, Path(tmp), echo)))
    given = {e.lower() for s in rel.seeds for e in s}
    candidates = [c for c in candidates if not given & {e.lower() for e in c}]
    if not candidates:
        return []
    scores = torch.stack([backend.score(t, candidates) for t, _ in weighted]).mean(0)
    out, subjects = [], set()
    for i in scores.argsort(descending=True).tolist():
        if candidates[i][0].lower() in subjects:
            continue
        subjects.add(candidates[i][0].lower())
        out.append({"entities": list(candidates[i]), "score": round(float(scores[i]), 4)})
        if len(out) == n:
            break
    return out


def suggest_with_model(prompts: list[str] | tuple[str, ...], seeds: list[str] | tuple[str, ...], *, n: int,
                       options, device: str = "auto", batch_size: int | str = "auto") -> list[dict]:
    """:func:`suggest_seeds` for ``--prompt`` / ``--seed`` options, loading ``options.model``
    (a :class:`~kgprobe.harvest.run.HarvestOptions`) after the prompts are checked."""
    from kgprobe.harvest import run

    rel = relation_from_options(prompts, seeds, name="suggest", min_seeds=0)
    # a short list needs a narrow search: 5 first entities per suggestion, one completion each
    # (unless the options say otherwise)
    search = {"first_candidates": max(5 * n, 40), "later_candidates": 1,
              **options.search.model_dump(exclude_unset=True)}
    options = options.model_copy(update={"search": run.SearchOptions(**search)})
    run.check_harvest_model(options)
    model, tokenizer = run.load_harvest_model(options, device)
    backend = run._backend(lm_kind(options.model, options.model_kind), model, tokenizer, rel, options,
                           batch_size)
    return suggest_seeds(rel, backend, n=n, echo=lambda s: None)
