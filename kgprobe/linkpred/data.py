"""Triples as tensors for training: the one triple converter (:func:`as_triples`), an inductive
split on one entity table (:class:`SplitData`), relation statistics, batching, user-supplied
negatives.

Everything here is vectorised: relation statistics are two ``unique`` calls, a batch is a slice
of one seeded permutation, and the lookup of given negatives is a ``searchsorted`` over sorted
int64 triple keys. Known-triple sets (false-negative filtering) are
:class:`kgprobe.linkpred.filters.FilterIndex`.

Key of a triple ``(h, r, t)`` over ``E`` entities and ``R`` relations::

    key = (h * R + r) * E + t          (unique per triple, fits int64 for E*R*E < 9.2e18)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from kgprobe.errors import KgprobeError

#: the parts of an inductive split, in order
PARTS = ("train", "valid", "test")


@dataclass
class SplitData:
    """An inductive split on one entity table (``graph``: the whole KG); ``triples[part]`` are
    indices into its tables and ``entities[part]`` the part's entities (see
    :func:`kgprobe.linkpred.run.load_split_data`)."""

    graph: Any
    triples: dict[str, torch.Tensor]
    entities: dict[str, torch.Tensor]

    @property
    def all_triples(self) -> torch.Tensor:
        return torch.cat([self.triples[p] for p in PARTS])


def as_triples(triples: Any, *, what: str = "triples", keep_device: bool = False) -> torch.Tensor:
    """An ``(n, 3)`` long tensor from a tensor, an array, nested lists or a ``KnowledgeGraph``.

    On the CPU, or with ``keep_device`` where a given tensor already is (the evaluator and the
    filter index, which work on a GPU too). Floating, complex and boolean values are refused, and
    so is any other shape; ``what`` names the triples in the error. Nothing at all gives ``(0, 3)``.
    """
    if hasattr(triples, "triples") and not isinstance(triples, torch.Tensor):
        triples = triples.triples
    if isinstance(triples, np.ndarray):
        triples = torch.from_numpy(triples)
    tensor = torch.as_tensor(triples)
    if not keep_device:
        tensor = tensor.cpu()
    if tensor.numel() == 0:
        return torch.zeros((0, 3), dtype=torch.long, device=tensor.device)
    if tensor.ndim != 2 or tensor.shape[1] != 3:
        raise KgprobeError(f"{what} must have shape (n, 3), got {tuple(tensor.shape)}")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise KgprobeError(f"{what} must be integer indices, got {tensor.dtype}")
    return tensor.long()


def triple_keys(triples: torch.Tensor, num_entities: int, num_relations: int) -> torch.Tensor:
    """``(h * R + r) * E + t`` for every triple of a ``(..., 3)`` tensor (shape ``(...)``)."""
    h, r, t = triples[..., 0], triples[..., 1], triples[..., 2]
    return (h * num_relations + r) * num_entities + t


def head_corruption_probability(triples: Any, num_relations: int) -> torch.Tensor:
    """Per relation, the probability of corrupting the *head* (Wang et al. 2014, "bern").

    With ``tph`` = triples per distinct ``(h, r)`` (mean tails per head) and ``hpt`` = triples per
    distinct ``(r, t)`` (mean heads per tail), ``p(head) = tph / (tph + hpt)``: a one-to-many
    relation (many tails per head) gets its head replaced more often, because replacing its tail
    would too often give another true triple. Relations without triples get 0.5.
    """
    t = as_triples(triples)
    count = torch.bincount(t[:, 1], minlength=num_relations).double()
    heads = torch.unique(t[:, :2], dim=0)
    tails = torch.unique(t[:, 1:], dim=0)
    distinct_h = torch.bincount(heads[:, 1], minlength=num_relations).double()
    distinct_t = torch.bincount(tails[:, 0], minlength=num_relations).double()
    tph = count / distinct_h.clamp_min(1)
    hpt = count / distinct_t.clamp_min(1)
    prob = torch.where(count > 0, tph / (tph + hpt).clamp_min(1e-12), torch.full_like(count, 0.5))
    return prob.float()


def batch_slices(n: int, batch_size: int, *, generator: torch.Generator | None = None,
                 shuffle: bool = True, drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Index tensors of consecutive batches over ``range(n)``, in a seeded random order."""
    if batch_size <= 0:
        raise KgprobeError(f"batch size must be positive, got {batch_size}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]


def num_batches(n: int, batch_size: int, *, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def load_negatives(source: Any) -> tuple[torch.Tensor | None, torch.Tensor]:
    """User-supplied negatives: ``(positives or None, negatives (N, K, 3))``.

    ``source`` is a tensor/array ``(N, K, 3)`` (row ``i`` holds the negatives of training triple
    ``i``), a dict ``{"positives": (N, 3), "negatives": (N, K, 3)}``, or a path to one of these
    saved with ``torch.save`` (``.pt``/``.pth``), to a ``.npy`` array, or to a text file with one
    line per positive: ``h r t`` followed by ``3 K`` integers (the negatives' ``h r t``).
    """
    positives = None
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise KgprobeError("no such negatives file", path=path)
        suffix = path.suffix.lower()
        try:
            if suffix in (".pt", ".pth"):
                source = torch.load(path, map_location="cpu", weights_only=True)
            elif suffix == ".npy":
                source = np.load(path, allow_pickle=False)
            else:
                rows = np.loadtxt(path, dtype=np.int64, ndmin=2)
                if rows.shape[1] < 6 or rows.shape[1] % 3:
                    raise KgprobeError("each line needs h r t and then 3 integers per negative", path=path)
                positives = torch.from_numpy(rows[:, :3])
                source = rows[:, 3:].reshape(len(rows), -1, 3)
        except KgprobeError:
            raise
        except Exception as err:  # unreadable content of any kind is a user error
            raise KgprobeError(f"cannot read negatives: {str(err).splitlines()[0] if str(err) else err}",
                               path=path) from None
    if isinstance(source, dict):
        if "negatives" not in source:
            raise KgprobeError("a negatives dict needs a 'negatives' entry")
        positives = source.get("positives")
        source = source["negatives"]
    if isinstance(source, np.ndarray):
        source = torch.from_numpy(source)
    negatives = torch.as_tensor(source)
    if negatives.is_floating_point() or negatives.ndim != 3 or negatives.shape[2] != 3:
        raise KgprobeError(f"negatives must be integer triples of shape (N, K, 3), got "
                           f"{tuple(negatives.shape)} {negatives.dtype}")
    negatives = negatives.long()
    if positives is not None:
        positives = as_triples(positives, what="positives of the negatives")
        if len(positives) != len(negatives):
            raise KgprobeError(f"{len(positives)} positives for {len(negatives)} rows of negatives")
    return positives, negatives
