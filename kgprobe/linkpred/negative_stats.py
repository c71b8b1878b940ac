"""How hard a sampler's negatives are for a model: the share of them inside the loss margin.

A margin loss ``max(0, margin - s+ + s-)`` learns only from negatives whose score is within the
margin of their positive's (``s- > s+ - margin``); the others contribute nothing. When a sampler
does not help, this share says whether its negatives were too easy to teach anything (a small
share) or not: the evidence issue #27 asks for. :func:`margin_stats` computes it for a batch of
positives and their negatives under a model, or under given entity and relation vectors and a
scorer (higher score = more plausible, as every :mod:`kgprobe.linkpred.scorers` scorer).
"""
from __future__ import annotations

from typing import Any

import torch

from kgprobe.errors import KgprobeError
from kgprobe.linkpred.data import as_triples


def share_inside_margin(pos: torch.Tensor, neg: torch.Tensor, margin: float,
                        mask: torch.Tensor | None = None) -> float:
    """The share of the usable negatives (``mask``, default all) with ``neg > pos - margin``;
    ``pos`` ``(B,)``, ``neg`` ``(B, K)``. NaN when no negative is usable."""
    inside = neg > (pos.unsqueeze(1) - float(margin))
    usable = torch.ones_like(inside) if mask is None else mask.to(torch.bool)
    count = int(usable.sum())
    return float((inside & usable).sum()) / count if count else float("nan")


def _unpack(negatives: Any, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(B, K, 3)`` triples and a mask from a :class:`~kgprobe.linkpred.samplers.Negatives` or a tensor."""
    if hasattr(negatives, "triples") and hasattr(negatives, "mask"):
        return negatives.triples, negatives.mask if mask is None else mask
    triples = torch.as_tensor(negatives)
    if triples.ndim != 3 or triples.shape[-1] != 3 or triples.is_floating_point():
        raise KgprobeError(f"negatives must be integer triples of shape (B, K, 3), got {tuple(triples.shape)}")
    return triples.long(), mask


def triple_scores(triples: torch.Tensor, entity_vectors: torch.Tensor, relation_vectors: torch.Tensor,
                  scorer: Any) -> torch.Tensor:
    """``scorer.score(h, r, t)`` of every triple of a ``(..., 3)`` tensor (shape ``(...)``)."""
    return scorer.score(entity_vectors[triples[..., 0]], relation_vectors[triples[..., 1]],
                        entity_vectors[triples[..., 2]])


def _model_vectors(model: Any, entities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectors of ``entities`` only (not all of a large graph) from a trained
    :class:`~kgprobe.linkpred.trainer.LinkPredictionModel`, in eval mode without gradients."""
    vectors = model.all_entity_vectors(entities=entities).float().cpu()
    return vectors, model.relations.weight.detach().float().cpu()


def margin_stats(triples: Any, negatives: Any, margin: float, *, model: Any = None,
                 entity_vectors: torch.Tensor | None = None, relation_vectors: torch.Tensor | None = None,
                 scorer: Any = None, mask: torch.Tensor | None = None) -> dict:
    """The share of negatives inside the loss margin, ``s- > s+ - margin``, of the ``(B, 3)``
    positives ``triples`` and their ``negatives`` (a ``Negatives`` record, whose ``mask`` is
    honoured, or a ``(B, K, 3)`` tensor), and the mean gap ``s+ - s-`` over the usable ones.

    Scores come from ``model`` (a trained ``LinkPredictionModel``: only the entities of these
    triples are encoded) or from ``entity_vectors`` ``(E, d)``, ``relation_vectors`` ``(R, d_r)``
    and ``scorer``. Returns ``{"share_inside_margin", "mean_gap", "negatives", "margin"}``.
    """
    pos_t = as_triples(triples, what="positives")
    neg_t, mask = _unpack(negatives, mask)
    if neg_t.shape[0] != len(pos_t):
        raise KgprobeError(f"{len(pos_t)} positives for {neg_t.shape[0]} rows of negatives")
    if model is not None:
        ids = torch.unique(torch.cat([pos_t[:, [0, 2]].reshape(-1), neg_t[..., [0, 2]].reshape(-1)]))
        ent, rel = _model_vectors(model, ids)
        scorer = model.scorer
        # renumber the triples' entities into rows of the encoded subset
        pos_t, neg_t = pos_t.clone(), neg_t.clone()
        for t in (pos_t, neg_t):
            t[..., [0, 2]] = torch.searchsorted(ids, t[..., [0, 2]].contiguous())
    elif entity_vectors is None or relation_vectors is None or scorer is None:
        raise KgprobeError("margin_stats needs a model, or entity_vectors, relation_vectors and a scorer")
    else:
        ent, rel = entity_vectors, relation_vectors
    with torch.no_grad():
        pos = triple_scores(pos_t, ent, rel, scorer).double()
        neg = triple_scores(neg_t, ent, rel, scorer).double()
    usable = torch.ones(neg.shape, dtype=torch.bool) if mask is None else mask.to(torch.bool).cpu()
    gaps = (pos.unsqueeze(1) - neg)[usable]
    return {"share_inside_margin": share_inside_margin(pos, neg, margin, usable),
            "mean_gap": float(gaps.mean()) if len(gaps) else float("nan"),
            "negatives": int(usable.sum()), "margin": float(margin)}


__all__ = ["margin_stats", "share_inside_margin", "triple_scores"]
