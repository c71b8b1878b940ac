"""Index of known triples for filtered evaluation and false-negative checks, built with tensor ops.

For ``N`` known triples over ``E`` entities and ``R`` relations the index keeps two sorted,
duplicate-free ``int64`` key arrays:

* tail side: ``(h * R + r) * E + t``. All known tails of a query ``(h, r)`` form the
  contiguous run of keys in ``[q, q + E)`` with ``q = (h * R + r) * E``, so the two
  ``torch.searchsorted`` bounds of a batch of queries are CSR offsets directly, and a tail is
  ``key - q`` (sorted within its run). The same array answers membership tests of triples.
* head side: ``(t * R + r) * E + h``, the same for ``(r, t)`` queries.

Building is one sort per side; answering a batch is two ``searchsorted`` calls and a gather.
There is no Python loop over triples or queries, and everything lives on one device
(``.to(device)``), so the evaluator can mask scores on a GPU.
"""
from __future__ import annotations

import torch
from torch import Tensor

from kgprobe.errors import KgprobeError
from kgprobe.linkpred.data import as_triples

__all__ = ["FilterIndex"]

_INT64_MAX = (1 << 63) - 1


def _sorted_unique(keys: Tensor) -> Tensor:
    """``keys`` sorted with repeats removed (a sort and a neighbour test: cheaper than torch.unique)."""
    keys = torch.sort(keys).values
    if len(keys) > 1:
        repeat = keys[1:] == keys[:-1]
        if bool(repeat.any()):
            keys = torch.cat([keys[:1], keys[1:][~repeat]])
    return keys


def _runs(keys: Tensor, base: Tensor, width: int, valid: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """For each ``base[i]``, the keys in ``[base[i], base[i] + width)`` minus ``base[i]``.

    Returns CSR ``(offsets (B + 1,), values)`` and ``rows``, the query of every value."""
    n_q = base.shape[0]
    device = base.device
    offsets = torch.zeros(n_q + 1, dtype=torch.long, device=device)
    if len(keys) == 0 or n_q == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return offsets, empty, empty
    lo = torch.searchsorted(keys, base)
    count = torch.searchsorted(keys, base + width) - lo
    if valid is not None:
        count = count * valid
    offsets[1:] = torch.cumsum(count, dim=0)
    total = int(offsets[-1])
    rows = torch.repeat_interleave(count, output_size=total)
    pos = torch.arange(total, device=device) + (lo - offsets[:-1])[rows]
    return offsets, keys[pos] - base[rows], rows


class FilterIndex:
    """Known triples, queryable by ``(head, relation)`` and ``(relation, tail)`` in batches.

    >>> idx = FilterIndex(torch.tensor([[0, 0, 1], [0, 0, 2], [3, 1, 1]]), num_entities=4, num_relations=2)
    >>> idx.tails(torch.tensor([0, 3]), torch.tensor([0, 0]))
    (tensor([0, 2, 2]), tensor([1, 2]))
    """

    def __init__(self, triples, *, num_entities: int, num_relations: int | None = None):
        t = as_triples(triples, keep_device=True)
        lo = t.amin(dim=0).tolist() if len(t) else [0, 0, 0]
        hi = t.amax(dim=0).tolist() if len(t) else [0, 0, 0]
        self.num_entities = int(num_entities)
        self.num_relations = int(num_relations) if num_relations is not None else hi[1] + 1
        n_e, n_r = self.num_entities, self.num_relations
        if n_e < 1 or n_r < 1:
            raise KgprobeError("filter index: num_entities and num_relations must be positive")
        if n_e * n_r * n_e > _INT64_MAX:
            raise KgprobeError(f"filter index: {n_e} entities x {n_r} relations do not fit a 64-bit key")
        if min(lo) < 0 or hi[0] >= n_e or hi[2] >= n_e or hi[1] >= n_r:
            raise KgprobeError(f"filter index: a triple refers to an entity >= {n_e} or a relation >= {n_r} "
                               "(or a negative index)")
        h, r, tl = t[:, 0], t[:, 1], t[:, 2]
        self.tail_keys = _sorted_unique((h * n_r + r) * n_e + tl)
        self.head_keys = _sorted_unique((tl * n_r + r) * n_e + h)

    @classmethod
    def from_triples(cls, *triple_sets, num_entities: int, num_relations: int | None = None) -> "FilterIndex":
        """The union of several triple sets (tensors, graphs, arrays); ``None`` entries are skipped."""
        sets = [as_triples(s, keep_device=True) for s in triple_sets if s is not None]
        if not sets:
            return cls(torch.zeros((0, 3), dtype=torch.long), num_entities=num_entities, num_relations=num_relations)
        device = sets[0].device
        union = sets[0] if len(sets) == 1 else torch.cat([s.to(device) for s in sets])
        return cls(union, num_entities=num_entities, num_relations=num_relations)

    # ----------------------------------------------------------------- queries
    @property
    def device(self) -> torch.device:
        return self.tail_keys.device

    @property
    def num_triples(self) -> int:
        return int(self.tail_keys.shape[0])

    @property
    def triple_keys(self) -> Tensor:
        """Sorted unique ``(h * R + r) * E + t`` of every known triple."""
        return self.tail_keys

    def known_triples(self) -> Tensor:
        """The ``(N, 3)`` known triples (duplicates removed), ordered by head, relation, tail."""
        keys = self.tail_keys
        hr = torch.div(keys, self.num_entities, rounding_mode="floor")
        return torch.stack([torch.div(hr, self.num_relations, rounding_mode="floor"), hr % self.num_relations,
                            keys - hr * self.num_entities], dim=1)

    def __len__(self) -> int:
        return self.num_triples

    def __repr__(self) -> str:
        return (f"FilterIndex(triples={self.num_triples}, entities={self.num_entities}, "
                f"relations={self.num_relations}, device={self.device})")

    def to(self, device: str | torch.device) -> "FilterIndex":
        """A copy on ``device`` (``self`` when already there)."""
        device = torch.device(device)
        if device.type == self.device.type and (device.index is None or device.index == self.device.index):
            return self
        new = object.__new__(FilterIndex)
        new.__dict__.update({k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()})
        return new

    def tails(self, heads: Tensor, relations: Tensor) -> tuple[Tensor, Tensor]:
        """Known tails of each ``(heads[i], relations[i])``: CSR ``(offsets (B + 1,), values)``."""
        offsets, values, _ = self.tail_runs(heads, relations)
        return offsets, values

    def heads(self, relations: Tensor, tails: Tensor) -> tuple[Tensor, Tensor]:
        """Known heads of each ``(relations[i], tails[i])``: CSR ``(offsets (B + 1,), values)``."""
        offsets, values, _ = self.head_runs(relations, tails)
        return offsets, values

    def tail_runs(self, heads: Tensor, relations: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`tails` plus ``rows``: the query index of every value."""
        heads, relations = self._query(heads, relations)
        return _runs(self.tail_keys, (heads * self.num_relations + relations) * self.num_entities,
                     self.num_entities, self._valid(heads, relations))

    def head_runs(self, relations: Tensor, tails: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`heads` plus ``rows``: the query index of every value."""
        tails, relations = self._query(tails, relations)
        return _runs(self.head_keys, (tails * self.num_relations + relations) * self.num_entities,
                     self.num_entities, self._valid(tails, relations))

    def contains(self, triples) -> Tensor:
        """``(n,)`` bool: which of the ``(n, 3)`` triples are known."""
        t = as_triples(triples, keep_device=True).to(self.device)
        keys = self.tail_keys
        if len(keys) == 0 or len(t) == 0:
            return torch.zeros(len(t), dtype=torch.bool, device=self.device)
        valid = ((t[:, [0, 2]] >= 0) & (t[:, [0, 2]] < self.num_entities)).all(dim=1) & (t[:, 1] >= 0) & (
            t[:, 1] < self.num_relations)
        key = (t[:, 0] * self.num_relations + t[:, 1]) * self.num_entities + t[:, 2]
        pos = torch.searchsorted(keys, key).clamp_(max=len(keys) - 1)
        return valid & (keys[pos] == key)

    def _valid(self, entity: Tensor, relation: Tensor) -> Tensor | None:
        """None when every query is in range (the common case), else a 0/1 long mask."""
        if len(entity) == 0:
            return None
        e_lo, e_hi = torch.aminmax(entity)
        r_lo, r_hi = torch.aminmax(relation)
        e_lo, e_hi, r_lo, r_hi = torch.stack([e_lo, e_hi, r_lo, r_hi]).tolist()
        if min(e_lo, r_lo) >= 0 and e_hi < self.num_entities and r_hi < self.num_relations:
            return None
        return ((entity >= 0) & (entity < self.num_entities) & (relation >= 0)
                & (relation < self.num_relations)).long()

    def _query(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        a = torch.as_tensor(a, device=self.device).long().reshape(-1)
        b = torch.as_tensor(b, device=self.device).long().reshape(-1)
        if a.shape != b.shape:
            raise KgprobeError(f"filter index: {a.shape[0]} entities but {b.shape[0]} relations in one query batch")
        return a, b
