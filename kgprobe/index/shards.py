"""Exact search over row shards: one vector matrix split across devices or processes.

The base of ``n`` vectors is cut into contiguous row shards ``[offset, offset + rows)``
(:func:`shard_bounds`). Each shard is searched where it lives by :func:`search_shard` (chunked
``q @ X.T`` + top-k, :func:`kgprobe.index.exact.exact_search`: the full score matrix is never
held, only one chunk of ``queries x rows`` scores, sized from the shard's rows and dim and the
device's memory), which returns its top ``k`` with *global* row ids; :func:`merge_topk` merges
the shards' lists into the global top ``k``.

Ties (the rule of :mod:`kgprobe.index.exact`): results are ordered by score, best first, then by
global row id, lowest first, and when more rows tie for the last places than fit, the lowest ids
are kept. Every shard's top ``k`` under that order holds every row of the global top ``k`` that
lies in the shard, so the merge returns exactly the unsharded result: the same ids, and the same
scores to the bit whenever each score is computed to the same bits (floating-point sums may
round differently on another device or another matrix shape: then to about 1e-7, and a near-tie
may swap).

In one process, :class:`TorchShards` holds one shard per device (``VectorIndex(...,
devices=["cuda:0", "cuda:1"])``; ``["cpu", "cpu"]`` tests the same code on a CPU). Across
processes (``torch.distributed``, one shard of the candidates per rank), the contract is::

    # rank r holds rows [offset_r, offset_r + n_r) of the candidates, on its own device
    scores, ids = search_shard(my_rows, queries, k, offset=offset_r, device=my_device, metric="ip")
    all_scores = [torch.empty_like(scores) for _ in range(world_size)]
    all_ids = [torch.empty_like(ids) for _ in range(world_size)]
    dist.all_gather(all_scores, scores)
    dist.all_gather(all_ids, ids)
    scores, ids = merge_topk(list(zip(all_scores, all_ids)), k, metric="ip")   # same on every rank

Every rank passes the same queries, ``k`` and metric; :func:`search_shard` always returns
``(nq, k)`` (padded with id ``-1`` when its shard has fewer than ``k`` rows, even none), so the
gathered tensors have equal shapes, and the shards may have any sizes as long as their offsets
tile ``[0, n)`` without overlap. The result does not depend on the number of ranks.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from kgprobe.errors import KgprobeError
from kgprobe.index.exact import DEFAULT_QUERY_CHUNK, FLT_MAX, MAX_BUFFER_BYTES, exact_search, squared_norms

#: the share of a GPU's free memory one shard's search buffers may take
GPU_MEMORY_SHARE = 0.5


def resolve_devices(devices: str | Sequence[str | torch.device]) -> list[torch.device]:
    """The devices of ``devices`` (a list, or one comma-separated string such as ``"cuda:0,cuda:1"``).

    Each is ``cpu``, ``cuda`` (the current GPU) or ``cuda:N``; a name may repeat (two shards on
    one device). A wrong entry is a ``KgprobeError`` naming it: an unknown device, CUDA without a
    GPU, or a GPU index beyond ``torch.cuda.device_count()``.
    """
    if isinstance(devices, (str, torch.device)):
        devices = [devices] if isinstance(devices, torch.device) else devices.split(",")
    resolved = [_one_device(d) for d in devices]
    if not resolved:
        raise KgprobeError("devices must name at least one device (e.g. cuda:0,cuda:1)")
    return resolved


def _one_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str):
        name = device.strip().lower()
    else:
        raise KgprobeError(f"bad device {device!r} in devices: use cpu, cuda or cuda:N")
    if name == "cpu":
        return torch.device("cpu")
    if not re.fullmatch(r"cuda(:\d+)?", name):
        raise KgprobeError(f"bad device {device!r} in devices: use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise KgprobeError(f"device {name!r} in devices: no CUDA GPU is visible")
    count = torch.cuda.device_count()
    dev = torch.device(name)
    if dev.index is not None and dev.index >= count:
        raise KgprobeError(f"device {name!r} in devices: only {count} CUDA GPU(s) visible (cuda:0 to cuda:{count - 1})")
    return dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())


def shard_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(start, stop)`` row ranges tiling ``[0, n)``, sizes differing by at
    most one (``start = n * i // parts``, as faiss shards a flat index); some are empty when
    ``n < parts``."""
    if parts <= 0:
        raise KgprobeError(f"the number of shards must be positive, got {parts}")
    return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


def device_budget(device: torch.device) -> int:
    """Bytes one search step may hold on ``device``: 1 GiB (``MAX_BUFFER_BYTES``), and on a GPU at
    most ``GPU_MEMORY_SHARE`` of its free memory."""
    if device.type != "cuda":
        return MAX_BUFFER_BYTES
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(MAX_BUFFER_BYTES, int(free * GPU_MEMORY_SHARE)))


def search_shard(vectors: Any, queries: Any, k: int, *, offset: int = 0, device: str | torch.device | None = None,
                 chunk: int = DEFAULT_QUERY_CHUNK, metric: str = "ip", sq_norms: torch.Tensor | None = None,
                 budget_bytes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` of one shard for every query: ``(scores, ids)``, both ``(nq, k)`` on ``device``.

    ``vectors`` are rows ``[offset, offset + len(vectors))`` of the whole base (a tensor or an
    array); ``ids`` are global (``offset`` added), ``-1`` where the shard has fewer than ``k`` rows
    (score ``-FLT_MAX`` for ``ip``, ``+FLT_MAX`` for ``l2``, as faiss pads). ``device`` defaults
    to where ``vectors`` are (a tensor) or the CPU; both inputs are moved there. ``metric`` is
    ``ip`` (largest first) or ``l2`` (squared distance, smallest first); for cosine, L2-normalise
    both and use ``ip``. Queries go at most ``chunk`` at a time, fewer when one step's buffers
    would exceed ``budget_bytes`` (default :func:`device_budget`). ``sq_norms`` (``l2``) are the
    shard's squared row norms if already known. Merge shards with :func:`merge_topk` (module
    docstring: the contract across processes).
    """
    if metric not in ("ip", "l2"):
        raise KgprobeError(f"metric must be 'ip' or 'l2' (cosine: normalise and use ip), not {metric!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise KgprobeError(f"k must be a positive integer, got {k!r}")
    if device is None:
        device = vectors.device if isinstance(vectors, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    base, q = _as_tensor(vectors, device), _as_tensor(queries, device)
    if base.ndim != 2 or q.ndim != 2 or (base.shape[1] != q.shape[1] and base.shape[0] > 0):
        raise KgprobeError(f"shapes do not match: vectors {tuple(base.shape)}, queries {tuple(q.shape)}")
    budget = device_budget(device) if budget_bytes is None else int(budget_bytes)
    with torch.no_grad():
        scores, ids = exact_search(q, base, int(k), metric=metric, query_chunk=chunk, base_sq_norms=sq_norms,
                                   budget_bytes=budget)
        if offset:
            ids = torch.where(ids >= 0, ids + int(offset), ids)
    return scores, ids


def _as_tensor(values: Any, device: torch.device) -> torch.Tensor:
    if not isinstance(values, torch.Tensor):
        values = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    return values.to(device=device, dtype=torch.float32)


def merge_topk(parts: Sequence[tuple[Any, Any]], k: int, *, metric: str = "ip") -> tuple[Any, Any]:
    """The global top ``k`` from the shards' top lists: ``parts`` is ``[(scores, ids), ...]``.

    Each part is ``(nq, k_i)`` (any ``k_i``; torch tensors or numpy arrays) with global ids, ``-1``
    for none. The result is ``(nq, k)``: the best by score (``ip``: largest first; ``l2``: smallest
    first), equal scores by lowest id, padded with id ``-1`` and the faiss padding score. Pure:
    the inputs are not changed; numpy parts give numpy results, tensors give tensors on the
    first part's device. For the result to be the unsharded search's, each part must be its
    shard's own top ``k`` (or more) by the same rule, as :func:`search_shard` returns.
    """
    if metric not in ("ip", "l2"):
        raise KgprobeError(f"metric must be 'ip' or 'l2', not {metric!r}")
    if not parts:
        raise KgprobeError("merge_topk needs at least one (scores, ids) part")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise KgprobeError(f"k must be a positive integer, got {k!r}")
    as_numpy = not isinstance(parts[0][0], torch.Tensor)
    device = torch.device("cpu") if as_numpy else parts[0][0].device
    scores = torch.cat([torch.as_tensor(s, dtype=torch.float32).to(device) for s, _ in parts], dim=1)
    ids = torch.cat([torch.as_tensor(i, dtype=torch.long).to(device) for _, i in parts], dim=1)
    if scores.shape != ids.shape or scores.ndim != 2:
        raise KgprobeError(f"scores and ids must be (nq, k) pairs of one shape, got {tuple(scores.shape)} "
                           f"and {tuple(ids.shape)}")
    valid = ids >= 0
    key = torch.where(valid, scores if metric == "ip" else -scores, -torch.inf)   # larger is better
    order = torch.argsort(torch.where(valid, ids, torch.iinfo(torch.long).max), dim=1)   # ids ascending
    key, scores, ids = (torch.gather(t, 1, order) for t in (key, scores, ids))
    _, pos = torch.sort(key, dim=1, descending=True, stable=True)   # stable: equal keys keep id order
    pos = pos[:, :k]
    out_scores, out_ids = torch.gather(scores, 1, pos), torch.gather(ids, 1, pos)
    if out_ids.shape[1] < k:   # fewer candidates than k in all parts together
        pad = k - out_ids.shape[1]
        out_scores = torch.cat([out_scores, out_scores.new_full((len(out_scores), pad), 0.0)], dim=1)
        out_ids = torch.cat([out_ids, out_ids.new_full((len(out_ids), pad), -1)], dim=1)
    out_scores = torch.where(out_ids >= 0, out_scores, FLT_MAX if metric == "l2" else -FLT_MAX)
    if as_numpy:
        return out_scores.numpy(), out_ids.numpy()
    return out_scores, out_ids


class TorchShards:
    """A vector matrix split into contiguous row shards, one per device, searched exactly.

    ``TorchShards(vectors, devices, metric="ip")``: ``vectors`` (an ``(n, d)`` float32 array or
    tensor) are split by :func:`shard_bounds` and shard ``i`` is copied to ``devices[i]``.
    :meth:`search` runs :func:`search_shard` on every shard and :func:`merge_topk` on the CPU.
    ``threaded`` (default: when the shards are on more than one GPU) gives every shard a thread of
    its own, so that the GPUs work at once (a search waits for its GPU at every step, which would
    leave the others idle); CPU shards share the same cores, so one after the other is as fast.
    """

    def __init__(self, vectors: Any, devices: Sequence[torch.device], *, metric: str = "ip",
                 threaded: bool | None = None) -> None:
        if metric not in ("ip", "l2"):
            raise KgprobeError(f"metric must be 'ip' or 'l2', not {metric!r}")
        matrix = vectors if isinstance(vectors, torch.Tensor) else torch.from_numpy(np.asarray(vectors))
        matrix = matrix.detach().to(dtype=torch.float32)
        self.metric = metric
        self.dim = int(matrix.shape[1])
        self.devices = list(devices)
        self.bounds = shard_bounds(int(matrix.shape[0]), len(self.devices))
        self.shards = [matrix[start:stop].to(dev).contiguous() for (start, stop), dev in zip(self.bounds, self.devices)]
        self.sq_norms = [squared_norms(s) if metric == "l2" else None for s in self.shards]
        self.threaded = len({d for d in self.devices if d.type == "cuda"}) > 1 if threaded is None else threaded

    @property
    def ntotal(self) -> int:
        return self.bounds[-1][1] if self.bounds else 0

    def vectors(self) -> torch.Tensor:
        """All rows, in order, on the CPU."""
        return torch.cat([s.cpu() for s in self.shards]) if self.shards else torch.zeros((0, self.dim))

    def search(self, queries: Any, k: int, *, query_chunk: int = DEFAULT_QUERY_CHUNK) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` as numpy ``(nq, k)`` arrays: the merge of every shard's top ``k``."""
        q = _as_tensor(queries, torch.device("cpu"))

        def one(i: int) -> tuple[torch.Tensor, torch.Tensor]:
            scores, ids = search_shard(self.shards[i], q, k, offset=self.bounds[i][0], device=self.devices[i],
                                       chunk=query_chunk, metric=self.metric, sq_norms=self.sq_norms[i])
            return scores.cpu(), ids.cpu()

        if self.threaded and len(self.shards) > 1:
            with ThreadPoolExecutor(max_workers=len(self.shards)) as pool:
                parts = list(pool.map(one, range(len(self.shards))))
        else:
            parts = [one(i) for i in range(len(self.shards))]
        return merge_topk([(s.numpy(), i.numpy()) for s, i in parts], k, metric=self.metric)
