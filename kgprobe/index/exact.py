"""Exact top-k search in plain torch: chunked ``Q @ X.T`` followed by ``topk``.

This is the fallback used where faiss cannot help (a CUDA machine whose faiss has no GPU
support) and a reference the faiss indexes are tested against. The full ``(queries, base)``
score matrix is never held: queries are processed ``query_chunk`` rows at a time, and the score
buffer of one chunk is allocated once and reused, so the memory in use is
``query_chunk * len(base)`` floats whatever the number of queries (and at most 1 GiB: for a huge
base the chunk shrinks).

Scores follow faiss' conventions so both backends are interchangeable:

* ``ip``: the inner product ``<q, x>``, largest first;
* ``l2``: the *squared* Euclidean distance ``||q - x||^2``, smallest first, computed as
  ``||q||^2 - (2 <q, x> - ||x||^2)`` with one fused ``addmm`` per chunk.

Missing results (``k`` larger than the base) get index ``-1`` and the score faiss uses
(``-FLT_MAX`` for ``ip``, ``+FLT_MAX`` for ``l2``).

Ties: the results are the first ``k`` rows in the order (score, best first; then row number,
lowest first). Equal scores come out in ascending row order, and when more rows tie for the
last places than fit, the lowest rows are kept. The rule is on the score as returned (for
``l2`` the distance after the clamp at zero), so a search split into row shards and merged by
:func:`kgprobe.index.shards.merge_topk` (same rule) returns exactly what one search over all rows
returns, whenever each row's score is computed to the same bits in both.
"""
from __future__ import annotations

import torch

FLT_MAX = float(torch.finfo(torch.float32).max)
DEFAULT_QUERY_CHUNK = 1024
MAX_BUFFER_BYTES = 1 << 30  # the score buffer of one chunk: at most 1 GiB (fewer queries for huge bases)


_BLOCK = 64


def topk_rows(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest values of every row and their columns, by the module's tie rule.

    Like ``torch.topk(scores, k, dim=1)`` (largest, sorted), but equal values come in ascending
    column order and, when more values tie for the last places than fit, the lowest columns are
    kept (``torch.topk`` leaves both unspecified).

    A CPU ``topk`` over 100k-long rows costs about half as much as the matmul that made them.
    Cheaper and still exact: take the maximum of every block of 64 columns (a vectorised
    reduction), keep the ``k`` blocks with the largest maxima, and run ``topk`` over those
    ``64 k`` candidates only. Every element of the true top ``k`` lies in a block whose maximum is
    at least the ``k``-th largest value, and at most ``k`` blocks can have such a maximum unless
    ties spill over; rows where they do are settled on the whole row. On a GPU ``torch.topk`` is
    used on the whole row.
    """
    m, n = scores.shape
    n_blocks = n // _BLOCK
    if scores.device.type != "cpu" or n_blocks < 4 * k or not scores.is_contiguous():
        values, cols = _topk_and_next(scores, k)
        settled = _nothing_ties_last(values, k)  # nothing outside the k ties the k-th value
        return _settle_ties(values[:, :k], cols[:, :k], settled, scores, None, scores)
    blocks = scores.as_strided((m, n_blocks, _BLOCK), (n, _BLOCK, 1))
    block_max, best_blocks = torch.topk(blocks.amax(dim=2), k + 1, dim=1)
    best_blocks = best_blocks[:, :k]
    offsets = torch.arange(_BLOCK, device=scores.device)
    cols = (best_blocks.unsqueeze(2) * _BLOCK + offsets).reshape(m, k * _BLOCK)
    if n_blocks * _BLOCK < n:  # the columns after the last whole block are always candidates
        tail = torch.arange(n_blocks * _BLOCK, n, device=scores.device).expand(m, -1)
        cols = torch.cat([cols, tail], dim=1)
    candidates = torch.gather(scores, 1, cols)
    values, pos = torch.topk(candidates, k + 1, dim=1)
    # every value >= the k-th is among the candidates unless a block left out has a maximum that high
    covered = block_max[:, k] < values[:, k - 1]
    settled = covered & _nothing_ties_last(values, k)
    return _settle_ties(values[:, :k], pos[:, :k], settled, candidates, cols, scores, covered=covered)


def _topk_and_next(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk`` of ``k + 1`` (of ``k`` when the rows are that short)."""
    return torch.topk(scores, min(k + 1, scores.shape[1]), dim=1)


def _nothing_ties_last(values: torch.Tensor, k: int) -> torch.Tensor:
    """Per row of a top-``k + 1`` (or top-``k`` of rows of ``k``): no value after the ``k``-th equals it."""
    if values.shape[1] <= k:
        return torch.ones(values.shape[0], dtype=torch.bool, device=values.device)
    return values[:, k] < values[:, k - 1]


def _settle_ties(values: torch.Tensor, pos: torch.Tensor, settled: torch.Tensor, candidates: torch.Tensor,
                 cols: torch.Tensor | None, scores: torch.Tensor, *,
                 covered: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the tie rule to a ``topk`` result: ``values`` / ``pos`` (positions in ``candidates``,
    whose columns in ``scores`` are ``cols``, or the columns themselves when ``cols`` is None).

    Rows not ``settled`` (more values tie for the last places than fit) are chosen again: from
    the candidates where they hold every tied value (``covered``), else from the whole row.
    Then every row's ``k`` results are put in (value descending, column ascending) order.
    """
    k = values.shape[1]
    found = pos if cols is None else torch.gather(cols, 1, pos)
    if not bool(settled.all()):
        values, found = values.clone(), found.clone()
        redo = ~settled
        if covered is not None and bool((redo & covered).any()):
            rows = torch.nonzero(redo & covered).squeeze(1)
            values[rows], found[rows] = _lowest_columns_first(candidates[rows], cols[rows], k)
            redo = redo & ~covered
        if bool(redo.any()):
            rows = torch.nonzero(redo).squeeze(1)
            values[rows], found[rows] = _lowest_columns_first(scores[rows], None, k)
    return _lowest_columns_first(values, found, k)


def _lowest_columns_first(values: torch.Tensor, cols: torch.Tensor | None, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``k`` of every row in (value descending, column ascending) order; ``cols`` are
    the columns of ``values`` (None: ``values`` is whole rows, column ``j`` at position ``j``)."""
    if cols is not None:
        order = torch.argsort(cols, dim=1)
        values, cols = torch.gather(values, 1, order), torch.gather(cols, 1, order)
    top, pos = torch.sort(values, dim=1, descending=True, stable=True)
    top, pos = top[:, :k], pos[:, :k]
    return top, (pos if cols is None else torch.gather(cols, 1, pos))


def squared_norms(base: torch.Tensor) -> torch.Tensor:
    """``||x||^2`` of every row, the per-base term the ``l2`` search needs (compute it once)."""
    return (base * base).sum(dim=1)


def chunk_size(rows: int, dim: int, k: int, *, query_chunk: int = DEFAULT_QUERY_CHUNK,
               budget_bytes: int = MAX_BUFFER_BYTES, queries: int | None = None) -> int:
    """Queries per step of an exact search over ``rows`` vectors of ``dim``: at most ``query_chunk``
    (and ``queries``), and few enough that one step's buffers fit in ``budget_bytes``.

    One query of a step holds its row of scores (``4 rows`` bytes), its vector (``4 dim``) and its
    top-k workspace (the ``64 k`` candidates of :func:`topk_rows` and the results, values and
    columns: ``12 (64 + 2) k``); the step is never smaller than one query.
    """
    per_query = 4 * rows + 4 * dim + 12 * (_BLOCK + 2) * k
    chunk = min(int(query_chunk), int(budget_bytes) // per_query)
    if queries is not None:
        chunk = min(chunk, int(queries))
    return max(1, chunk)


def exact_search(
    queries: torch.Tensor,
    base: torch.Tensor,
    k: int,
    *,
    metric: str = "ip",
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    base_sq_norms: torch.Tensor | None = None,
    budget_bytes: int = MAX_BUFFER_BYTES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` rows of ``base`` for every query: ``(scores, indices)``, both ``(nq, k)``.

    ``queries`` and ``base`` must be 2-D float tensors on the same device; they are made
    contiguous float32 (a no-op when they already are). ``base_sq_norms`` may be passed for
    ``l2`` to avoid recomputing it on every call. Queries go ``chunk_size(...)`` at a time (at most
    ``query_chunk``, with one step's buffers within ``budget_bytes``). Ties: see the module.
    """
    if metric not in ("ip", "l2"):
        raise ValueError(f"metric must be 'ip' or 'l2', not {metric!r}")
    queries = queries.to(dtype=torch.float32).contiguous()
    base = base.to(dtype=torch.float32).contiguous()
    nq, n = queries.shape[0], base.shape[0]
    kk = min(k, n)
    scores = torch.empty((nq, k), dtype=torch.float32, device=queries.device)
    indices = torch.empty((nq, k), dtype=torch.long, device=queries.device)
    if kk < k:
        scores[:, kk:] = FLT_MAX if metric == "l2" else -FLT_MAX
        indices[:, kk:] = -1
    if nq == 0 or kk == 0:
        return scores, indices
    chunk = chunk_size(n, queries.shape[1], kk, query_chunk=query_chunk, budget_bytes=budget_bytes, queries=nq)
    buffer = torch.empty((chunk, n), dtype=torch.float32, device=queries.device)
    base_t = base.t()  # a transposed view: BLAS reads it without a copy
    neg_norms = None
    if metric == "l2":
        norms = squared_norms(base) if base_sq_norms is None else base_sq_norms.to(base.device, torch.float32)
        neg_norms = (-norms).unsqueeze(0)
    for start in range(0, nq, chunk):
        q = queries[start:start + chunk]
        out = buffer[: q.shape[0]]
        if neg_norms is None:
            torch.mm(q, base_t, out=out)
        else:
            # -||q - x||^2 = (2<q,x> - ||x||^2) - ||q||^2, with the rounding below zero clamped: the
            # negated distance as returned is what gets ranked, so ties are ties of the returned scores
            torch.addmm(neg_norms, q, base_t, alpha=2.0, out=out)
            out.sub_((q * q).sum(dim=1, keepdim=True)).clamp_max_(0.0)
        top, idx = topk_rows(out, kk)
        if neg_norms is not None:
            top = top.neg().add_(0.0)  # the distance (+ 0.0 turns -0.0 into 0.0)
        scores[start:start + q.shape[0], :kk] = top
        indices[start:start + q.shape[0], :kk] = idx
    return scores, indices
