r"""Filtered rank-based link-prediction evaluation, chunked so the score matrix never exists whole.

For every evaluation triple ``(h, r, t)`` and side, the true entity is ranked against every
candidate entity: tail prediction scores ``(h, r, c)``, head prediction ``(c, r, t)``. With
filtering (the default) every other candidate ``c`` that forms a *known* triple — one of the
``filter_triples`` or of the evaluation triples themselves — is removed from the ranking. With
``s*`` the true score and the counts taken over the remaining candidates other than the target:

* ``greater = #{c : s_c > s*}``, ``equal = #{c : s_c = s*}``;
* optimistic rank ``= greater + 1``; pessimistic rank ``= greater + equal + 1``;
* realistic rank ``= (optimistic + pessimistic) / 2 = greater + equal / 2 + 1``, the expected
  rank when ties are broken uniformly at random (PyKEEN's definition, exactly);
* ``num_options`` = candidates left after filtering, the target included.

Metrics per side (``head``, ``tail``, ``both`` = the two pooled) and rank type, keys as in
PyKEEN (``both.realistic.inverse_harmonic_mean_rank``) plus short aliases
(``both.realistic.mrr``, ``.mr``, ``.amri``):

* ``inverse_harmonic_mean_rank`` (MRR) ``= mean(1 / rank)``;
* ``arithmetic_mean_rank`` (MR) ``= mean(rank)``;
* ``hits_at_k`` ``= mean(rank <= k)`` for k in 1, 3, 5, 10 (a realistic rank of 10.5 is a miss);
* ``adjusted_arithmetic_mean_rank_index`` (AMRI) ``= 1 - (MR - 1) / (E[MR] - 1)`` with
  ``E[MR] = mean((num_options + 1) / 2)``, the expected MR of random scores (Berrendorf et
  al. 2020; PyKEEN defines it for realistic ranks, kgprobe reports it for all three). It is 1
  for a perfect ranking, 0 for a random one; NaN when every query has a single option.

Computation: queries are scored in blocks of ``B`` queries x ``C`` candidates with
``B * C <= max_block_elements``. The true score is read from the same block as the candidates
(the same arithmetic, so exact ties are seen as ties), the filtered entries and the target are
set to NaN in place, and the two counts are taken right after each block; only ``O(B * C)``
scores exist at any time. When even 16 queries against all candidates exceed the budget, the
candidates are split in chunks and each block is scored twice (once to read the true scores,
once to count). The filter is built with tensor ops only: while (evaluation triples x
candidates) fit in 16 MiB, as a boolean mask over the distinct queries (no sort of the known
triples, only a ``searchsorted`` of them among the queries); beyond, as a :class:`FilterIndex`
(sorted keys, CSR runs), which can also be built once and passed in. Runs on any device: give
``device="cuda"`` and the matrix products, masks and counts run there.

A score that is NaN is never counted as greater or equal (as in PyKEEN, where NaN marks a
filtered entry); ``num_options`` comes from the filter, not from the scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from kgprobe.errors import KgprobeError
from kgprobe.linkpred.data import as_triples
from kgprobe.linkpred.filters import FilterIndex
from kgprobe.linkpred.scorers import Scorer, get_scorer
from kgprobe.models.device import resolve_device
from kgprobe.models.memory import SCORE_BLOCK_BYTES_PER_ELEMENT, OomHalving, plan_batch_size, warn_on_halve

__all__ = [
    "DEFAULT_KS", "RANK_TYPES", "SIDES", "RankBasedEvaluator", "Ranks", "SideRanks", "compute_ranks", "evaluate",
    "evaluate_model", "evaluate_model_sharded", "evaluate_query_model", "rank_metrics",
]

RANK_TYPES: tuple[str, ...] = ("optimistic", "realistic", "pessimistic")
SIDES: tuple[str, ...] = ("head", "tail", "both")
DEFAULT_KS: tuple[int, ...] = (1, 3, 5, 10)
#: short names written next to PyKEEN's metric keys
METRIC_ALIASES: dict[str, str] = {
    "inverse_harmonic_mean_rank": "mrr",
    "arithmetic_mean_rank": "mr",
    "adjusted_arithmetic_mean_rank_index": "amri",
}
# Below this many queries per block the candidates are chunked instead (see the module doc).
_MIN_QUERIES_PER_BLOCK = 16
# Up to this many (evaluation triple x candidate) pairs the filter is a dense boolean mask
# (16 MiB); beyond, a FilterIndex (sorted keys, CSR) serves it.
_DENSE_FILTER_ELEMENTS = 1 << 24

#: ``score_tails(heads, relations, block) -> (B, block length)``: scores of ``(h_b, r_b, c)`` for the
#: candidates at positions ``block`` (a slice) of the candidate list — all entity ids in order,
#: or the *sorted, duplicate-free* ``candidates``; ``score_heads(relations, tails, block)``
#: likewise for ``(c, r_b, t_b)``. The evaluator writes NaN into the returned tensor, so return
#: a fresh one (any matrix product does).
ScoreFn = Callable[[Tensor, Tensor, slice], Tensor]


# --------------------------------------------------------------------------- ranks
@dataclass(frozen=True)
class SideRanks:
    """Per-query counts of one prediction side (all ``(n,)`` long tensors, on the CPU)."""

    greater: Tensor
    equal: Tensor
    num_options: Tensor

    @property
    def optimistic(self) -> Tensor:
        return self.greater.double() + 1.0

    @property
    def pessimistic(self) -> Tensor:
        return (self.greater + self.equal).double() + 1.0

    @property
    def realistic(self) -> Tensor:
        return self.greater.double() + 0.5 * self.equal.double() + 1.0

    def rank(self, rank_type: str) -> Tensor:
        if rank_type not in RANK_TYPES:
            raise KgprobeError(f"unknown rank type {rank_type!r}; known: {', '.join(RANK_TYPES)}")
        return getattr(self, rank_type)

    def __len__(self) -> int:
        return int(self.greater.shape[0])

    @staticmethod
    def cat(parts: Sequence["SideRanks"]) -> "SideRanks":
        return SideRanks(torch.cat([p.greater for p in parts]), torch.cat([p.equal for p in parts]),
                         torch.cat([p.num_options for p in parts]))


@dataclass(frozen=True)
class Ranks:
    """Ranks of every evaluation triple, by side (``None`` for a side not evaluated)."""

    head: SideRanks | None
    tail: SideRanks | None

    def side(self, side: str) -> SideRanks | None:
        if side == "both":
            parts = [p for p in (self.head, self.tail) if p is not None]
            return SideRanks.cat(parts) if parts else None
        if side not in SIDES:
            raise KgprobeError(f"unknown side {side!r}; known: {', '.join(SIDES)}")
        return getattr(self, side)


def rank_metrics(ranks: Ranks, *, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """The metric dict (see the module docstring) from per-query ranks; float64 arithmetic."""
    out: dict[str, float] = {}
    ks_arr = np.array(sorted({int(k) for k in ks}), dtype=np.float64)
    for side in SIDES:
        part = ranks.side(side)
        if part is None or len(part) == 0:
            continue
        greater = part.greater.numpy().astype(np.float64)
        equal = part.equal.numpy().astype(np.float64)
        # rows: optimistic, realistic, pessimistic (the order of RANK_TYPES)
        rank = np.stack([greater + 1.0, greater + 0.5 * equal + 1.0, greater + equal + 1.0])
        mrr = (1.0 / rank).mean(axis=1)
        mr = rank.mean(axis=1)
        hits = (rank[:, None, :] <= ks_arr[None, :, None]).mean(axis=2)
        expected_mr = float(((part.num_options.numpy().astype(np.float64) + 1.0) / 2.0).mean())
        amri = 1.0 - (mr - 1.0) / (expected_mr - 1.0) if expected_mr > 1.0 else np.full(3, np.nan)
        for i, rank_type in enumerate(RANK_TYPES):
            prefix = f"{side}.{rank_type}."
            out[prefix + "inverse_harmonic_mean_rank"] = out[prefix + "mrr"] = float(mrr[i])
            out[prefix + "arithmetic_mean_rank"] = out[prefix + "mr"] = float(mr[i])
            for j, k in enumerate(ks_arr):
                out[f"{prefix}hits_at_{int(k)}"] = float(hits[i, j])
            out[prefix + "adjusted_arithmetic_mean_rank_index"] = out[prefix + "amri"] = float(amri[i])
    return out


# --------------------------------------------------------------------------- core
def _default_budget(device: torch.device) -> int:
    """Score elements per block: the most that fit half the free memory at
    ``SCORE_BLOCK_BYTES_PER_ELEMENT`` bytes each (:mod:`kgprobe.models.memory`), at most 2**24 on
    a CPU and 2**26 on CUDA (the fixed budgets this replaced), at least 2**16."""
    limit = 1 << 26 if device.type == "cuda" else 1 << 24
    return plan_batch_size(bytes_per_item=SCORE_BLOCK_BYTES_PER_ELEMENT, device=device, limit=limit,
                           minimum=1 << 16)


def _count(scores: Tensor, true: Tensor, greater: Tensor, equal: Tensor) -> None:
    """``greater += #(scores > true)``, ``equal += #(scores == true)`` per row.

    On a CPU the rows are taken a few at a time (about 2**18 elements): the comparison masks
    then stay in cache, which is faster than whole-block masks and keeps the temporaries at a
    few MB instead of ~5 bytes per score."""
    n_rows, n_cols = scores.shape
    step = n_rows if scores.device.type == "cuda" else max(1, (1 << 18) // max(1, n_cols))
    for s in range(0, n_rows, step):
        block, ref = scores[s:s + step], true[s:s + step, None]
        greater[s:s + step] += torch.sum(block > ref, dim=1, dtype=torch.int32)
        equal[s:s + step] += torch.sum(block == ref, dim=1, dtype=torch.int32)


def _as_index_tensor(candidates, num_entities: int, device: torch.device) -> Tensor:
    c = torch.as_tensor(candidates, device=device)
    if c.dtype == torch.bool:
        if c.shape != (num_entities,):
            raise KgprobeError(f"candidate mask must have one entry per entity ({num_entities}), got {tuple(c.shape)}")
        c = c.nonzero().reshape(-1)
    c = torch.unique(c.long().reshape(-1))
    if len(c) == 0:
        raise KgprobeError("the candidate set is empty")
    if int(c[0]) < 0 or int(c[-1]) >= num_entities:
        raise KgprobeError(f"candidate entity indices must lie in [0, {num_entities})")
    return c


class _NoFilter:
    """Unfiltered ranking: only the target itself is left out of its competitors."""

    def __init__(self, n: int, device: torch.device):
        self.per_query = torch.zeros(n, dtype=torch.long, device=device)

    def apply(self, scores: Tensor, i0: int, i1: int, s: int, e: int) -> None:
        pass


class _SparseFilter:
    """Known entities per query as CSR from a :class:`FilterIndex` (any size)."""

    def __init__(self, runs: tuple[Tensor, Tensor, Tensor], tpos: Tensor, pos_map: Tensor | None, n: int,
                 n_cand: int):
        self.n_cand = n_cand
        offsets, values, rows = runs
        cols = values if pos_map is None else pos_map[values]
        keep = (cols >= 0) & (cols != tpos[rows])  # candidates that leave the ranking, target excluded
        self.per_query = torch.zeros(n, dtype=torch.long, device=tpos.device).index_add_(0, rows, keep.long())
        if pos_map is not None:  # drop non-candidates (they have no column); targets may stay: masked anyway
            inside = cols >= 0
            rows, cols = rows[inside], cols[inside]
            offsets = torch.zeros(n + 1, dtype=torch.long, device=tpos.device)
            offsets[1:] = torch.cumsum(torch.bincount(rows, minlength=n), dim=0)
        self.rows, self.cols, self.offsets = rows, cols, offsets.tolist()

    def apply(self, scores: Tensor, i0: int, i1: int, s: int, e: int) -> None:
        lo, hi = self.offsets[i0], self.offsets[i1]
        rows, cols = self.rows[lo:hi] - i0, self.cols[lo:hi]
        if s > 0 or e < self.n_cand:  # a chunk of the candidates: its entries only
            sel = (cols >= s) & (cols < e)
            rows, cols = rows[sel], cols[sel]
        scores.index_put_((rows, cols - s), torch.tensor(float("nan"), dtype=scores.dtype, device=scores.device))


class _DenseFilter:
    """A boolean (distinct query, candidate) mask, for evaluations small enough to hold one.

    Building it needs no sort of the known triples: the distinct query keys ``anchor * R +
    relation`` of the evaluation triples are sorted (few), every known triple is looked up
    among them with one ``searchsorted``, and the hits are scattered into the mask."""

    def __init__(self, anchors: Tensor, relations: Tensor, tpos: Tensor, known: Tensor, anchor_col: int,
                 target_col: int, num_relations: int, pos_map: Tensor | None, n_cand: int):
        uniq, group = torch.unique(anchors * num_relations + relations, return_inverse=True)
        kkey = known[:, anchor_col] * num_relations + known[:, 1]
        pos = torch.searchsorted(uniq, kkey).clamp_(max=len(uniq) - 1)
        hit = uniq[pos] == kkey
        g, cols = pos[hit], known[hit, target_col]
        if pos_map is not None:
            cols = pos_map[cols]
            inside = cols >= 0
            g, cols = g[inside], cols[inside]
        mask = torch.zeros((len(uniq), n_cand), dtype=torch.bool, device=anchors.device)
        mask[g, cols] = True
        self.mask, self.group = mask, group
        self.per_query = mask.sum(dim=1)[group] - mask[group, tpos].long()

    def apply(self, scores: Tensor, i0: int, i1: int, s: int, e: int) -> None:
        scores.masked_fill_(self.mask[self.group[i0:i1], s:e], float("nan"))


def _side_counts(
    score_fn: ScoreFn,
    anchors: Tensor,
    relations: Tensor,
    tpos: Tensor,
    filt,
    n_cand: int,
    budget: int,
    batch_size: int | None,
    memory: OomHalving,
) -> SideRanks:
    """Counts for one side; ``tpos``: the target's position in the candidate list; ``filt``:
    one of the filter helpers above (its ``per_query`` excludes the target). A block of queries
    that runs out of memory is counted again in halves (``memory``): a query's counts do not
    depend on the other queries of its block."""
    device = anchors.device
    n = anchors.shape[0]
    num_options = n_cand - filt.per_query

    if n_cand * _MIN_QUERIES_PER_BLOCK <= budget or n_cand <= 1:
        q_batch, chunk = max(1, budget // max(1, n_cand)), n_cand
    else:
        q_batch = _MIN_QUERIES_PER_BLOCK * 4
        chunk = max(1, budget // q_batch)
    if batch_size:
        q_batch = min(q_batch, int(batch_size))
    q_batch = max(1, min(q_batch, n))
    chunks = [(s, min(s + chunk, n_cand)) for s in range(0, n_cand, chunk)]

    greater = torch.zeros(n, dtype=torch.long, device=device)
    equal = torch.zeros(n, dtype=torch.long, device=device)
    nan = float("nan")

    def block(rows: range) -> None:
        i0, i1 = rows.start, rows.stop
        a, r, tp = anchors[i0:i1], relations[i0:i1], tpos[i0:i1]
        # counted apart and stored at the end: a block retried after running out of memory counts once
        more = torch.zeros(i1 - i0, dtype=torch.long, device=device)
        same = torch.zeros(i1 - i0, dtype=torch.long, device=device)
        if len(chunks) == 1:
            scores = score_fn(a, r, slice(0, n_cand))
            local = torch.arange(i1 - i0, device=device)
            true = scores[local, tp]
            filt.apply(scores, i0, i1, 0, n_cand)
            scores[local, tp] = nan
            _count(scores, true, more, same)
            del scores  # free this block before the next one is computed: one block alive at a time
            greater[i0:i1], equal[i0:i1] = more, same
            return
        true = None
        for s, e in chunks:  # pass 1: the true scores, from the same arithmetic as the counts
            scores = score_fn(a, r, slice(s, e))
            if true is None:
                true = torch.empty(i1 - i0, dtype=scores.dtype, device=device)
            inside = ((tp >= s) & (tp < e)).nonzero().reshape(-1)
            true[inside] = scores[inside, tp[inside] - s]
            del scores
        for s, e in chunks:  # pass 2: mask and count
            scores = score_fn(a, r, slice(s, e))
            filt.apply(scores, i0, i1, s, e)
            inside = ((tp >= s) & (tp < e)).nonzero().reshape(-1)
            scores[inside, tp[inside] - s] = nan
            _count(scores, true, more, same)
            del scores
        greater[i0:i1], equal[i0:i1] = more, same

    memory.run(block, range(n), batch_size=q_batch)
    return SideRanks(greater.cpu(), equal.cpu(), num_options.cpu())


def compute_ranks(
    score_tails: ScoreFn | None,
    score_heads: ScoreFn | None,
    triples,
    *,
    num_entities: int,
    num_relations: int | None = None,
    filter_triples=None,
    filter_index: FilterIndex | None = None,
    filtered: bool = True,
    candidates=None,
    batch_size: int | None = None,
    max_block_elements: int | None = None,
    device: str | torch.device | None = None,
    memory: OomHalving | None = None,
) -> Ranks:
    """Per-query ranks of ``triples`` (``(n, 3)`` tensor or :class:`KnowledgeGraph`).

    * ``score_tails`` / ``score_heads``: see :data:`ScoreFn`; ``None`` skips that side.
    * ``filter_triples``: known triples to filter (a tensor, a graph, or a list of them); the
      evaluation triples are always added. ``filter_index``: a prebuilt :class:`FilterIndex`
      of the known triples instead, to reuse across validation runs; when it lacks some of the
      evaluation triples they are added (one rebuild), so both ways give the same ranks. Build
      it from every known triple, the evaluated split included (``FilterIndex.from_triples(
      train, valid, test, ...)``), and it is used as is.
    * ``candidates``: entity ids (or a bool mask) that may be ranked; the others are left out
      of the ranking (e.g. BLP validation: train + valid entities). Both entities of every
      evaluation triple must be candidates.
    * ``batch_size``: at most this many queries per block; ``max_block_elements``: the block
      budget (default: planned from free memory, at most 2**24 on CPU, 2**26 on CUDA).
    * ``memory``: an :class:`~kgprobe.models.memory.OomHalving` that halves a block of queries
      that runs out of memory and keeps the halvings in ``memory.notes`` (default: a fresh one
      that tells of each halving in a warning line).
    """
    dev = resolve_device(device) if device is not None else None
    triples_t = as_triples(triples, keep_device=True)
    dev = dev or triples_t.device
    triples_t = triples_t.to(dev)
    _check_evaluation(triples_t, num_entities, num_relations, sides=(score_tails, score_heads))
    pos_map, n_cand = _candidate_positions(candidates, triples_t, num_entities, dev)
    budget = int(max_block_elements or _default_budget(dev))
    if memory is None:
        memory = OomHalving(device=dev, what="query block", on_halve=warn_on_halve("query block", dev))
    h, r, t = triples_t[:, 0], triples_t[:, 1], triples_t[:, 2]
    tpos_t = t if pos_map is None else pos_map[t]
    tpos_h = h if pos_map is None else pos_map[h]
    n = len(triples_t)
    with torch.no_grad():
        if not filtered:
            filt_t = filt_h = _NoFilter(n, dev)
        elif filter_index is None and n * n_cand <= _DENSE_FILTER_ELEMENTS:
            known = _known_triples(filter_triples, triples_t, num_entities, dev)
            n_rel = max(num_relations or 0, int(known[:, 1].max()) + 1)
            filt_t = _DenseFilter(h, r, tpos_t, known, 0, 2, n_rel, pos_map, n_cand) if score_tails else None
            filt_h = _DenseFilter(t, r, tpos_h, known, 2, 0, n_rel, pos_map, n_cand) if score_heads else None
        else:
            index = _full_filter_index(filter_index, filter_triples, triples_t, num_entities=num_entities,
                                       num_relations=num_relations, dev=dev)
            filt_t = _SparseFilter(index.tail_runs(h, r), tpos_t, pos_map, n, n_cand) if score_tails else None
            filt_h = _SparseFilter(index.head_runs(r, t), tpos_h, pos_map, n, n_cand) if score_heads else None
        tail = head = None
        if score_tails is not None:
            tail = _side_counts(score_tails, h, r, tpos_t, filt_t, n_cand, budget, batch_size, memory)
        if score_heads is not None:
            head = _side_counts(lambda tt, rr, blk: score_heads(rr, tt, blk), t, r, tpos_h, filt_h, n_cand,
                                budget, batch_size, memory)
    return Ranks(head=head, tail=tail)


def _check_evaluation(triples: Tensor, num_entities: int, num_relations: int | None, *, sides: tuple) -> None:
    """The evaluation triples exist and fit the entity and relation counts; a side is scored."""
    if len(triples) == 0:
        raise KgprobeError("no evaluation triples")
    if num_entities < 1:
        raise KgprobeError("num_entities must be positive")
    lo, hi = triples.amin(dim=0).tolist(), triples.amax(dim=0).tolist()
    if min(lo) < 0 or hi[0] >= num_entities or hi[2] >= num_entities:
        raise KgprobeError(f"an evaluation triple refers to an entity outside [0, {num_entities})")
    if num_relations is not None and hi[1] >= num_relations:
        raise KgprobeError(f"an evaluation triple refers to a relation outside [0, {num_relations})")
    if all(score is None for score in sides):
        raise KgprobeError("nothing to evaluate: give score_tails, score_heads or both")


def _candidate_positions(candidates, triples: Tensor, num_entities: int,
                         dev: torch.device) -> tuple[Tensor | None, int]:
    """``(pos_map, n_cand)``: every entity's column among the candidates (-1 for none; ``None``
    when all entities are candidates) and how many there are."""
    if candidates is None:
        return None, num_entities
    cand = _as_index_tensor(candidates, num_entities, dev)
    pos_map = torch.full((num_entities,), -1, dtype=torch.long, device=dev)
    pos_map[cand] = torch.arange(len(cand), device=dev)
    outside = (pos_map[triples[:, 0]] < 0) | (pos_map[triples[:, 2]] < 0)
    if bool(outside.any()):
        raise KgprobeError(f"{int(outside.sum())} evaluation triple(s) have an entity outside the candidate "
                           "set; drop them first (PyKEEN's restrict_triples) or widen the candidates")
    return pos_map, len(cand)


def _filter_sets(filter_triples, dev: torch.device) -> list[Tensor]:
    """``filter_triples`` (one set, a list of them, or None) as triple tensors on ``dev``."""
    sets = filter_triples if isinstance(filter_triples, (list, tuple)) else [filter_triples]
    return [as_triples(x, keep_device=True).to(dev) for x in sets if x is not None]


def _known_triples(filter_triples, triples: Tensor, num_entities: int, dev: torch.device) -> Tensor:
    """Every known triple, the evaluation triples included, in one tensor (for the dense filter)."""
    known = torch.cat(_filter_sets(filter_triples, dev) + [triples])
    k_lo, k_hi = known.amin(dim=0).tolist(), known.amax(dim=0).tolist()
    if min(k_lo) < 0 or k_hi[0] >= num_entities or k_hi[2] >= num_entities:
        raise KgprobeError(f"a filter triple refers to an entity outside [0, {num_entities})")
    return known


def _full_filter_index(filter_index: FilterIndex | None, filter_triples, triples: Tensor, *, num_entities: int,
                       num_relations: int | None, dev: torch.device) -> FilterIndex:
    """The given ``filter_index`` on ``dev``, with the evaluation triples added when it lacks some
    (PyKEEN's rule), or one built from ``filter_triples`` and the evaluation triples."""
    if filter_index is not None:
        index = filter_index.to(dev)
        if not bool(index.contains(triples).all()):
            index = FilterIndex.from_triples(index.known_triples(), triples, num_entities=num_entities,
                                             num_relations=index.num_relations)
        return index
    sets = _filter_sets(filter_triples, dev)
    if num_relations is None:
        num_relations = 1 + max(int(x[:, 1].max()) for x in [triples, *sets] if len(x))
    return FilterIndex.from_triples(*sets, triples, num_entities=num_entities, num_relations=num_relations)


def evaluate(
    score_tails: ScoreFn | None,
    score_heads: ScoreFn | None,
    triples,
    *,
    num_entities: int,
    ks: Iterable[int] = DEFAULT_KS,
    **kwargs,
) -> dict[str, float]:
    """Filtered rank-based metrics (see the module docstring) for any scoring functions.

    Keyword arguments are those of :func:`compute_ranks`. Example, scoring by a table lookup::

        evaluate(lambda h, r, blk: table[h, r, blk], lambda r, t, blk: table_h[t, r, blk],
                 test_triples, num_entities=E, filter_triples=[train, valid])
    """
    return rank_metrics(compute_ranks(score_tails, score_heads, triples, num_entities=num_entities, **kwargs), ks=ks)


def _model_score_fns(entity_emb: Tensor, relation_emb: Tensor, scorer: Scorer, candidates, device):
    n_e = entity_emb.shape[0]
    cand_emb = entity_emb if candidates is None else entity_emb[_as_index_tensor(candidates, n_e, device)]

    def tails(h: Tensor, r: Tensor, blk: slice) -> Tensor:
        return scorer.score_all_tails(entity_emb[h], relation_emb[r], cand_emb[blk])

    def heads(r: Tensor, t: Tensor, blk: slice) -> Tensor:
        return scorer.score_all_heads(relation_emb[r], entity_emb[t], cand_emb[blk])

    return tails, heads


def evaluate_model(
    entity_emb: Tensor,
    relation_emb: Tensor,
    scorer: Scorer | str,
    triples,
    *,
    filter_triples=None,
    filter_index: FilterIndex | None = None,
    filtered: bool = True,
    candidates=None,
    sides: Sequence[str] = ("head", "tail"),
    batch_size: int | None = None,
    max_block_elements: int | None = None,
    device: str | torch.device | None = None,
    ks: Iterable[int] = DEFAULT_KS,
    return_ranks: bool = False,
    memory: OomHalving | None = None,
) -> dict[str, float] | tuple[dict[str, float], Ranks]:
    """Metrics of an embedding model whose entities are already encoded (once).

    ``entity_emb``: ``(E, d)``, one row per entity id (for BLP: the encoder's output for every
    entity); ``relation_emb``: ``(R, scorer.relation_dim(d))``; ``scorer``: a :class:`Scorer`
    or its name. The embeddings are moved to ``device`` (default: where ``entity_emb`` is) and
    only ``B x C`` scores exist at a time. Other arguments as in :func:`compute_ranks`;
    ``sides`` picks head and/or tail prediction. With ``return_ranks`` the per-query
    :class:`Ranks` come too.
    """
    scorer = get_scorer(scorer)
    if entity_emb.dim() != 2 or relation_emb.dim() != 2:
        raise KgprobeError("entity and relation embeddings must be 2-d tables")
    want_r = scorer.relation_dim(entity_emb.shape[1])
    if relation_emb.shape[1] != want_r:
        raise KgprobeError(f"{scorer.name}: relation vectors must have {want_r} dimensions for entity "
                           f"dimension {entity_emb.shape[1]}, got {relation_emb.shape[1]}")
    bad = set(sides) - {"head", "tail"}
    if bad or not sides:
        raise KgprobeError(f"sides must be a non-empty subset of head, tail; got {list(sides)}")
    dev = resolve_device(device) if device is not None else entity_emb.device
    with torch.no_grad():
        common = torch.promote_types(entity_emb.dtype, relation_emb.dtype)  # e.g. bf16 entities, fp32 relations
        ent = entity_emb.detach().to(device=dev, dtype=common)
        rel = relation_emb.detach().to(device=dev, dtype=common)
        if any(True for _ in scorer.parameters()) or any(True for _ in scorer.buffers()):
            scorer = scorer.to(dev)  # the built-in scorers have no state; a custom one may
        tails, heads = _model_score_fns(ent, rel, scorer, candidates, dev)
        ranks = compute_ranks(
            tails if "tail" in sides else None, heads if "head" in sides else None, triples,
            num_entities=ent.shape[0], num_relations=rel.shape[0], filter_triples=filter_triples,
            filter_index=filter_index, filtered=filtered, candidates=candidates, batch_size=batch_size,
            max_block_elements=max_block_elements, device=dev, memory=memory)
    metrics = rank_metrics(ranks, ks=ks)
    return (metrics, ranks) if return_ranks else metrics


def _query_lookup(model: Any, anchors: Tensor, relations: Tensor, num_relations: int, *, head: bool,
                  batch_size: int) -> Callable[[Tensor, Tensor], Tensor]:
    """Each distinct ``(anchor, relation)`` query encoded once (unit vectors), and the lookup from
    a block's anchors and relations to their rows."""
    keys = torch.unique(anchors * num_relations + relations)
    host = keys.cpu()
    vectors = torch.nn.functional.normalize(
        model.query_vectors(host // num_relations, host % num_relations, head=head, batch_size=batch_size), dim=-1)
    vectors = vectors.to(anchors.device)

    def lookup(block_anchors: Tensor, block_relations: Tensor) -> Tensor:
        return vectors[torch.searchsorted(keys, block_anchors * num_relations + block_relations)]

    return lookup


def evaluate_query_model(model: Any, entity_emb: Tensor, triples, *, candidates=None, batch_size: int | None = None,
                         encode_batch_size: int = 256, sides: Sequence[str] = ("head", "tail"),
                         ks: Iterable[int] = DEFAULT_KS, **kwargs: Any) -> dict[str, float]:
    """Metrics of a ``query-encoder`` model (SimKGC's bi-encoder): every distinct tail query
    ``(h, r)`` and head query ``(t, r)`` of ``triples`` is encoded from its text once
    (``model.query_vectors``), and ranks every candidate's vector in ``entity_emb`` by cosine.
    ``encode_batch_size`` queries are encoded at a time; filtering, candidates, ``batch_size`` and
    the other keyword arguments are those of :func:`compute_ranks`."""
    bad = set(sides) - {"head", "tail"}
    if bad or not sides:
        raise KgprobeError(f"sides must be a non-empty subset of head, tail; got {list(sides)}")
    dev = entity_emb.device
    triples_t = as_triples(triples, keep_device=True).to(dev)
    num_relations = int(model.relations.num_embeddings)
    size = int(encode_batch_size)
    with torch.no_grad():
        ent = torch.nn.functional.normalize(entity_emb.detach().float(), dim=-1)
        cand = ent if candidates is None else ent[_as_index_tensor(candidates, ent.shape[0], dev)]
        h, r, t = triples_t[:, 0], triples_t[:, 1], triples_t[:, 2]
        tail_q = _query_lookup(model, h, r, num_relations, head=False, batch_size=size) if "tail" in sides else None
        head_q = _query_lookup(model, t, r, num_relations, head=True, batch_size=size) if "head" in sides else None

        def tails(hh: Tensor, rr: Tensor, blk: slice) -> Tensor:
            return tail_q(hh, rr) @ cand[blk].T

        def heads(rr: Tensor, tt: Tensor, blk: slice) -> Tensor:
            return head_q(tt, rr) @ cand[blk].T

        ranks = compute_ranks(tails if tail_q else None, heads if head_q else None, triples_t,
                              num_entities=ent.shape[0], num_relations=num_relations, candidates=candidates,
                              batch_size=batch_size, device=dev, **kwargs)
    return rank_metrics(ranks, ks=ks)


def _empty_side() -> SideRanks:
    empty = torch.zeros(0, dtype=torch.long)
    return SideRanks(empty, empty, empty)


def shard_ranks(entity_emb: Tensor, relation_emb: Tensor, scorer: Scorer | str, triples, *, shard: tuple[int, int],
                filter_triples=None, filter_index: FilterIndex | None = None, sides: Sequence[str] = ("head", "tail"),
                **kwargs) -> Ranks:
    """The :class:`Ranks` of part ``rank`` of ``parts`` (``shard = (rank, parts)``) of ``triples``: its
    contiguous share of the queries (:func:`~kgprobe.linkpred.distributed.shard_bounds`), ranked
    against every candidate with *every* evaluation triple filtered, so that the parts' ranks, put
    one after the other in part order, are the ranks :func:`evaluate_model` gives for the whole.
    Other keyword arguments as for :func:`evaluate_model`."""
    from kgprobe.linkpred.distributed import shard_bounds

    rank, parts = shard
    every = as_triples(triples, keep_device=True)
    start, stop = shard_bounds(len(every), parts)[rank]
    if stop == start:  # fewer queries than parts
        return Ranks(head=_empty_side() if "head" in sides else None, tail=_empty_side() if "tail" in sides else None)
    if filter_index is not None:
        known = filter_index.to(every.device)
        if not bool(known.contains(every).all()):  # as the whole evaluation would: its triples added
            filter_index = FilterIndex.from_triples(known.known_triples(), every, num_entities=entity_emb.shape[0],
                                                    num_relations=known.num_relations)
    elif kwargs.get("filtered", True):
        filter_triples = [*_filter_sets(filter_triples, every.device), every]
    _, ranks = evaluate_model(entity_emb, relation_emb, scorer, every[start:stop], filter_triples=filter_triples,
                              filter_index=filter_index, sides=sides, return_ranks=True, **kwargs)
    return ranks


def evaluate_model_sharded(entity_emb: Tensor, relation_emb: Tensor, scorer: Scorer | str, triples, *,
                           shard: tuple[int, int], gather: Callable[[Tensor], list[Tensor]],
                           ks: Iterable[int] = DEFAULT_KS, **kwargs) -> dict[str, float]:
    """:func:`evaluate_model` with the queries split over ``parts`` processes (``shard = (rank,
    parts)``): each ranks its share (:func:`shard_ranks`), ``gather`` (a ``(3, n)`` long tensor ->
    every part's, in part order; :meth:`kgprobe.linkpred.distributed.World.gather_varlen` with
    the columns as rows) collects the counts, and every process returns the metrics of the whole,
    the same as :func:`evaluate_model`'s (the counts are exact; the per-query scores may differ in
    the last bit where a block holds other queries)."""
    ranks = shard_ranks(entity_emb, relation_emb, scorer, triples, shard=shard, **kwargs)

    def combined(side: SideRanks | None) -> SideRanks | None:
        if side is None:
            return None
        parts = gather(torch.stack([side.greater, side.equal, side.num_options]).T.contiguous())
        counts = torch.cat(parts).T
        return SideRanks(counts[0].contiguous(), counts[1].contiguous(), counts[2].contiguous())

    return rank_metrics(Ranks(head=combined(ranks.head), tail=combined(ranks.tail)), ks=ks)


class RankBasedEvaluator:
    """The same evaluation with its settings kept, PyKEEN style::

        evaluator = RankBasedEvaluator(batch_size=256, device="cuda")
        metrics = evaluator.evaluate_model(ent, rel, "transe", test, filter_triples=[train, valid])
        metrics["both.realistic.mrr"]
    """

    def __init__(self, *, filtered: bool = True, ks: Iterable[int] = DEFAULT_KS, batch_size: int | None = None,
                 max_block_elements: int | None = None, device: str | torch.device | None = None):
        self.filtered = bool(filtered)
        self.ks = tuple(ks)
        self.batch_size = batch_size
        self.max_block_elements = max_block_elements
        self.device = device

    def _settings(self, kwargs: dict) -> dict:
        out = dict(filtered=self.filtered, batch_size=self.batch_size,
                   max_block_elements=self.max_block_elements, device=self.device)
        out.update(kwargs)
        return out

    def evaluate(self, score_tails: ScoreFn | None, score_heads: ScoreFn | None, triples, *, num_entities: int,
                 **kwargs) -> dict[str, float]:
        """:func:`evaluate` with this evaluator's settings (keywords override them)."""
        return evaluate(score_tails, score_heads, triples, num_entities=num_entities, ks=self.ks,
                        **self._settings(kwargs))

    def evaluate_model(self, entity_emb: Tensor, relation_emb: Tensor, scorer: Scorer | str, triples,
                       **kwargs) -> dict[str, float]:
        """:func:`evaluate_model` with this evaluator's settings (keywords override them)."""
        return evaluate_model(entity_emb, relation_emb, scorer, triples, ks=self.ks, **self._settings(kwargs))
