"""Weight prompts by how well they separate the seeds from corrupted seeds (BertNet step 3).

For prompt ``t``: ``pos`` = mean score of the seeds, each scored with a few-shot prefix made of
the *other* seeds (so a seed never sees itself); ``neg`` = mean score of corrupted seeds, where one
slot at a time takes the entity of the next seed. Then

    raw_t = (pos_t - neg_weight * neg_t) / temperature
    w = softmax(raw over the top ``keep_top`` prompts);  w_t = 0 where w_t < min_weight;  w /= sum(w)

Defaults are BertNet's: neg_weight 0.5, temperature 2, keep_top 20, min_weight 0.05.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from kgprobe.harvest.relation import Template


@dataclass(frozen=True)
class WeightingParams:
    neg_weight: float = 0.5
    temperature: float = 2.0
    keep_top: int = 20
    min_weight: float = 0.05


def corrupt(seeds: list[tuple[str, ...]], i: int) -> list[tuple[str, ...]]:
    """Seed ``i`` with one slot at a time swapped to the next seed's entity (skipping equal ones)."""
    seed, other = seeds[i], seeds[(i + 1) % len(seeds)]
    out = []
    for j in range(len(seed)):
        if other[j] != seed[j]:
            out.append(seed[:j] + (other[j],) + seed[j + 1:])
    return out


def normalise(raw: torch.Tensor, params: WeightingParams) -> torch.Tensor:
    weights = torch.zeros_like(raw)
    top = raw.topk(min(params.keep_top, len(raw))).indices
    weights[top] = raw[top].softmax(0)
    weights[weights < params.min_weight] = 0
    if weights.sum() == 0:  # every prompt under the floor: keep the best one
        weights[raw.argmax()] = 1
    return weights / weights.sum()


def prompt_weights(
    score: Callable[[Template, list[tuple[str, ...]], int], torch.Tensor],
    templates: list[Template],
    seeds: list[tuple[str, ...]],
    *,
    params: WeightingParams = WeightingParams(),
) -> tuple[torch.Tensor, list[dict]]:
    """Weights (summing to 1) and per-prompt details ``{prompt, pos, neg, raw, weight}``.

    ``score(template, tuples, i)`` scores tuples derived from seed ``i``; a backend that shows
    the LM the seeds (the causal few-shot prefix) must leave seed ``i`` out there.
    """
    if len(seeds) < 2:
        raise ValueError("prompt weighting needs at least two seeds")
    rows, raws = [], []
    for t in templates:
        pos, neg = [], []
        for i in range(len(seeds)):
            scores = score(t, [seeds[i], *corrupt(seeds, i)], i)
            pos.append(scores[0])
            neg.extend(scores[1:])
        p, n = torch.stack(pos).mean(), torch.stack(neg).mean()
        raw = (p - params.neg_weight * n) / params.temperature
        raws.append(raw)
        rows.append({"prompt": t.prompt, "pos": float(p), "neg": float(n), "raw": float(raw)})
    weights = normalise(torch.stack(raws), params)
    for row, w in zip(rows, weights.tolist()):
        row["weight"] = w
    return weights, rows
