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
"""
from __future__ import annotations

import torch

FLT_MAX = float(torch.finfo(torch.float32).max)
DEFAULT_QUERY_CHUNK = 1024
MAX_BUFFER_BYTES = 1 << 30  # the score buffer of one chunk: at most 1 GiB (fewer queries for huge bases)


_BLOCK = 64


def topk_rows(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(scores, k, dim=1)`` (largest, sorted), faster on CPU for long rows.

    A CPU ``topk`` over 100k-long rows costs about half as much as the matmul that made them.
    Cheaper and still exact: take the maximum of every block of 64 columns (a vectorised
    reduction), keep the ``k`` blocks with the largest maxima, and run ``topk`` over those
    ``64 k`` candidates only. Every element of the true top ``k`` lies in a block whose maximum is
    at least the ``k``-th largest value, and at most ``k`` blocks can have such a maximum, so
    the kept blocks hold the whole top ``k`` (with ties the tied members may differ, as with any
    top-k). On a GPU ``torch.topk`` is used as it is.
    """
    m, n = scores.shape
    n_blocks = n // _BLOCK
    if scores.device.type != "cpu" or n_blocks < 4 * k or not scores.is_contiguous():
        return torch.topk(scores, k, dim=1)
    blocks = scores.as_strided((m, n_blocks, _BLOCK), (n, _BLOCK, 1))
    best_blocks = torch.topk(blocks.amax(dim=2), k, dim=1).indices
    offsets = torch.arange(_BLOCK, device=scores.device)
    cols = (best_blocks.unsqueeze(2) * _BLOCK + offsets).reshape(m, k * _BLOCK)
    if n_blocks * _BLOCK < n:  # the columns after the last whole block are always candidates
        tail = torch.arange(n_blocks * _BLOCK, n, device=scores.device).expand(m, -1)
        cols = torch.cat([cols, tail], dim=1)
    values, pos = torch.topk(torch.gather(scores, 1, cols), k, dim=1)
    return values, torch.gather(cols, 1, pos)


def squared_norms(base: torch.Tensor) -> torch.Tensor:
    """``||x||^2`` of every row, the per-base term the ``l2`` search needs (compute it once)."""
    return (base * base).sum(dim=1)


def exact_search(
    queries: torch.Tensor,
    base: torch.Tensor,
    k: int,
    *,
    metric: str = "ip",
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    base_sq_norms: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` rows of ``base`` for every query: ``(scores, indices)``, both ``(nq, k)``.

    ``queries`` and ``base`` must be 2-D float tensors on the same device; they are made
    contiguous float32 (a no-op when they already are). ``base_sq_norms`` may be passed for
    ``l2`` to avoid recomputing it on every call.
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
    chunk = max(1, min(query_chunk, nq, MAX_BUFFER_BYTES // (4 * n)))
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
            torch.addmm(neg_norms, q, base_t, alpha=2.0, out=out)
        top, idx = topk_rows(out, kk)
        if neg_norms is not None:
            # ||q - x||^2 = ||q||^2 - (2<q,x> - ||x||^2); clamp the rounding below zero
            top = ((q * q).sum(dim=1, keepdim=True) - top).clamp_min_(0.0)
        scores[start:start + q.shape[0], :kk] = top
        indices[start:start + q.shape[0], :kk] = idx
    return scores, indices
