"""``--index auto``: which index to build for ``n`` vectors of dimension ``dim``.

:func:`choose_index` is a pure function of the size (and an optional memory budget) that returns an
:class:`IndexPlan`: the kind, its parameters and a one-line reason. The rule follows the faiss wiki,
"Guidelines to choose an index" (https://github.com/facebookresearch/faiss/wiki/Guidelines-to-choose-an-index):

* ``n <= 200,000`` and the raw vectors fit: ``flat``. Exact search over that many vectors takes
  milliseconds per query on a CPU (the wiki: "if below 1M vectors ... flat"; we stay well below,
  where exact search is cheap) and has recall 1.
* ``200,000 < n <= 5,000,000`` and the vectors fit: ``ivf`` (IVF-Flat) with
  ``nlist = 4 * sqrt(n)`` (the wiki: "between 4*sqrt(N) and 16*sqrt(N)"), capped so every cell
  gets at least 39 training points (faiss warns below ``39 * nlist``), and ``nprobe =
  max(16, nlist // 16)`` cells visited per query, for high recall (``neighbors --nprobe``
  trades it for speed later).
* ``n > 5,000,000``, or the raw vectors (``4 * n * dim`` bytes) exceed ``memory_bytes``: IVF-PQ
  (faiss factory ``IVF{nlist},PQ{m}``, 8-bit codes: ``m`` bytes a vector; the wiki: "if memory
  is a concern ... PQ"), ``nlist`` and ``nprobe`` as above; ``m`` is the largest divisor of
  ``dim`` that is at most ``min(64, dim // 4)`` (a 16x or larger compression, a size faiss-GPU
  IVF-PQ supports) and, with a budget, small enough that the codes, ids (8 bytes a vector),
  coarse centroids and PQ centroids fit in it. HNSW is never chosen: it keeps the raw vectors
  plus its graph, so it does not save memory, and the index layer supports IVF-PQ.

A budget too small even for 1-byte codes, or fewer than 256 vectors to train PQ on when the raw
vectors do not fit, is a :class:`~kgprobe.errors.KgprobeError`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from kgprobe.errors import KgprobeError

#: the largest ``n`` given an exact (flat) index
FLAT_MAX = 200_000
#: the largest ``n`` given IVF-Flat; beyond it IVF-PQ
IVF_MAX = 5_000_000
MIN_POINTS_PER_CELL = 39  # faiss warns when k-means has fewer training points per centroid
_PQ_CENTROIDS = 256  # 8-bit PQ codes
_PQ_MAX_M = 64
_ID_BYTES = 8


@dataclass(frozen=True)
class IndexPlan:
    """What :func:`choose_index` chose: ``kind`` is ``flat``, ``ivf`` or ``ivfpq`` (``pq_m`` bytes a
    vector), with the IVF ``nlist`` / ``nprobe`` (``None`` for flat) and a one-line ``reason``."""

    kind: str
    n: int
    dim: int
    reason: str
    nlist: int | None = None
    nprobe: int | None = None
    pq_m: int | None = None

    @property
    def factory(self) -> str | None:
        """The faiss factory string of an IVF-PQ plan, else ``None``."""
        return f"IVF{self.nlist},PQ{self.pq_m}" if self.kind == "ivfpq" else None

    def index_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~kgprobe.index.knn.VectorIndex` that build this plan."""
        if self.kind == "flat":
            return {"kind": "flat"}
        if self.kind == "ivf":
            return {"kind": "ivf", "nlist": self.nlist, "nprobe": self.nprobe}
        return {"kind": "flat", "factory": self.factory, "nprobe": self.nprobe}

    def as_dict(self) -> dict[str, Any]:
        """The record written to index.json / meta.json (``chosen_by: auto``)."""
        record = {"chosen_by": "auto", **asdict(self)}
        if self.kind == "ivfpq":
            record["factory"] = self.factory
        return record


def auto_nlist(n: int) -> int:
    """``4 * sqrt(n)`` IVF cells, at most ``n // 39`` (at least 1)."""
    return max(1, min(int(round(4 * math.sqrt(n))), n // MIN_POINTS_PER_CELL))


def auto_nprobe(nlist: int) -> int:
    """Cells visited per query for high recall: ``nlist // 16``, at least 16, at most ``nlist``."""
    return min(nlist, max(16, nlist // 16))


def _divisors(dim: int) -> list[int]:
    return [m for m in range(1, dim + 1) if dim % m == 0]


def _pq_m(n: int, dim: int, nlist: int, memory_bytes: int | None) -> int:
    cap = max(1, min(_PQ_MAX_M, dim // 4))
    if memory_bytes is not None:
        fixed = (nlist + _PQ_CENTROIDS) * dim * 4  # coarse and PQ centroids, float32
        cap = min(cap, (memory_bytes - fixed) // n - _ID_BYTES)
    fits = [m for m in _divisors(dim) if m <= cap]
    if not fits:
        raise KgprobeError(f"no index of {n} vectors of dim {dim} fits in {memory_bytes} bytes "
                           "(even IVF-PQ with 1-byte codes needs more)")
    return fits[-1]


def choose_index(n: int, dim: int, *, memory_bytes: int | None = None) -> IndexPlan:
    """The index ``--index auto`` builds for ``n`` vectors of dimension ``dim`` (see the module docstring).

    ``memory_bytes`` is a budget for the index: when the raw float32 vectors (``4 * n * dim``
    bytes) exceed it, the plan is IVF-PQ with codes small enough to fit.
    """
    for name, value in (("n", n), ("dim", dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise KgprobeError(f"choose_index: {name} must be a positive integer, got {value!r}")
    if memory_bytes is not None and (isinstance(memory_bytes, bool) or not isinstance(memory_bytes, int)
                                     or memory_bytes <= 0):
        raise KgprobeError(f"choose_index: memory_bytes must be a positive integer, got {memory_bytes!r}")
    raw = 4 * n * dim
    over_budget = memory_bytes is not None and raw > memory_bytes
    if not over_budget and n <= FLAT_MAX:
        return IndexPlan("flat", n, dim, f"{n} vectors <= {FLAT_MAX}: exact search is fast enough and has recall 1")
    nlist = auto_nlist(n)
    nprobe = auto_nprobe(nlist)
    if not over_budget and n <= IVF_MAX:
        return IndexPlan("ivf", n, dim, f"{FLAT_MAX} < {n} vectors <= {IVF_MAX}: IVF-Flat, nlist ~ 4*sqrt(n), "
                         f"nprobe {nprobe} for high recall", nlist=nlist, nprobe=nprobe)
    if n < _PQ_CENTROIDS:
        raise KgprobeError(f"the {n} vectors ({raw} bytes) exceed the memory budget of {memory_bytes} bytes "
                           f"and are too few to train a compressed (PQ) index on (at least {_PQ_CENTROIDS})")
    m = _pq_m(n, dim, nlist, memory_bytes)
    why = (f"raw vectors ({raw} bytes) exceed the memory budget of {memory_bytes} bytes" if over_budget
           else f"{n} vectors > {IVF_MAX}")
    return IndexPlan("ivfpq", n, dim, f"{why}: IVF-PQ with {m}-byte codes, nlist ~ 4*sqrt(n), nprobe {nprobe}",
                     nlist=nlist, nprobe=nprobe, pq_m=m)


__all__ = ["FLAT_MAX", "IVF_MAX", "IndexPlan", "auto_nlist", "auto_nprobe", "choose_index"]
