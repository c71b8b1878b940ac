"""k-means over embeddings (faiss) and a batched "which clusters are nearest" lookup.

LEMON-style negative sampling (ANCHORS §3) clusters the entity vectors once and then, for every
kept entity, draws corruptions from the few clusters nearest to it. The original computed the
distance to every centroid per sample inside the data loader; :func:`nearest_clusters` does it
for a whole batch (or all entities at once) with one matmul and one ``topk`` per chunk, and the
original's 2-D PCA step is not done here: clustering runs on the full vectors.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kgprobe.atomic import atomic_path, write_json
from kgprobe.errors import KgprobeError
from kgprobe.index.knn import as_float32_matrix, faiss_has_gpu

CENTROIDS_FILE = "centroids.npy"
ASSIGNMENTS_FILE = "assignments.npy"
CLUSTERS_META = "clusters.json"


@dataclass(frozen=True)
class Clustering:
    """Result of :func:`kmeans`: ``centroids`` ``(k, d)`` float32, ``assignments`` ``(n,)`` int64
    (the nearest centroid of every input vector), faiss' final ``objective`` (the sum of squared
    distances of the training points to their centroid) and the settings used."""

    centroids: np.ndarray
    assignments: np.ndarray
    objective: float
    seed: int
    niter: int
    spherical: bool

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])

    def sizes(self) -> np.ndarray:
        """Number of vectors assigned to each cluster."""
        return np.bincount(self.assignments, minlength=self.n_clusters)

    def save(self, directory: str | Path) -> Path:
        """Write ``centroids.npy``, ``assignments.npy`` and ``clusters.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / CENTROIDS_FILE) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, self.centroids)
        with atomic_path(directory / ASSIGNMENTS_FILE) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, self.assignments)
        meta = {"n_clusters": self.n_clusters, "count": int(len(self.assignments)), "seed": self.seed,
                "niter": self.niter, "spherical": self.spherical, "objective": self.objective,
                "sizes": self.sizes().tolist()}
        write_json(directory / CLUSTERS_META, meta)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Clustering":
        directory = Path(directory)
        for name in (CENTROIDS_FILE, ASSIGNMENTS_FILE, CLUSTERS_META):
            if not (directory / name).is_file():
                raise KgprobeError(f"no clustering here ({name} missing)", path=directory)
        meta = json.loads((directory / CLUSTERS_META).read_text())
        centroids = np.load(directory / CENTROIDS_FILE)
        assignments = np.load(directory / ASSIGNMENTS_FILE)
        if centroids.ndim != 2 or assignments.ndim != 1 or (len(assignments) and assignments.max() >= len(centroids)):
            raise KgprobeError("centroids and assignments do not fit together", path=directory)
        return cls(centroids=centroids, assignments=assignments, objective=float(meta.get("objective", 0.0)),
                   seed=int(meta.get("seed", 0)), niter=int(meta.get("niter", 0)),
                   spherical=bool(meta.get("spherical", False)))


def kmeans(
    vectors: Any,
    n_clusters: int,
    *,
    niter: int = 20,
    seed: int = 0,
    spherical: bool = False,
    max_points_per_centroid: int = 256,
    gpu: bool | None = None,
) -> Clustering:
    """Lloyd's k-means with ``faiss.Kmeans``; the same ``seed`` gives the same result.

    ``spherical`` renormalises the centroids after each step (for unit-norm embeddings: the
    centroids stay on the sphere, so nearest-by-L2 and nearest-by-cosine agree). faiss samples
    ``max_points_per_centroid * n_clusters`` training points (seeded) when there are more.
    ``gpu=None`` uses the GPU when faiss has GPU support and sees one.
    """
    import faiss

    array = as_float32_matrix(vectors)
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters <= 0:
        raise KgprobeError(f"number of clusters must be a positive integer, got {n_clusters!r}")
    if len(array) < n_clusters:
        raise KgprobeError(f"cannot make {n_clusters} clusters from {len(array)} vectors")
    if niter <= 0:
        raise KgprobeError(f"niter must be positive, got {niter}")
    if not np.isfinite(array).all():
        raise KgprobeError("vectors contain NaN or infinite values")
    use_gpu = faiss_has_gpu() if gpu is None else bool(gpu)
    km = faiss.Kmeans(array.shape[1], int(n_clusters), niter=int(niter), seed=int(seed), spherical=spherical,
                      max_points_per_centroid=int(max_points_per_centroid), gpu=use_gpu, verbose=False)
    km.train(array)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    assignments = nearest_clusters(array, centroids, 1, metric="l2").reshape(-1).numpy()
    objective = float(km.obj[-1]) if len(km.obj) else 0.0
    return Clustering(centroids=centroids, assignments=assignments.astype(np.int64), objective=objective,
                      seed=int(seed), niter=int(niter), spherical=spherical)


def nearest_clusters(
    vectors: Any,
    centroids: Any,
    n: int = 1,
    *,
    metric: str = "ip",
    chunk: int = 65536,
    return_scores: bool = False,
    device: str | torch.device | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(N, n)`` of the ``n`` nearest centroids of every vector, nearest first.

    One matmul + ``topk`` per chunk of ``chunk`` vectors (no per-vector Python loop).
    ``metric``: ``"ip"`` (largest inner product; cosine for unit vectors), ``"cosine"``
    (both sides normalised first) or ``"l2"`` (smallest Euclidean distance). With
    ``return_scores`` also returns the ``(N, n)`` scores (inner product, cosine, or squared
    distance). Tensors in, tensors out on ``device`` (default: the device of ``vectors`` if it
    is a tensor, else CPU).
    """
    if metric not in ("ip", "cosine", "l2"):
        raise KgprobeError(f"unknown metric {metric!r}; known metrics: ip, cosine, l2")
    if device is None:
        device = vectors.device if isinstance(vectors, torch.Tensor) else torch.device("cpu")
    x = _as_tensor(vectors, device)
    c = _as_tensor(centroids, device)
    if x.ndim != 2 or c.ndim != 2:
        raise KgprobeError("vectors and centroids must be 2-D (n, dim)")
    if x.shape[1] != c.shape[1]:
        raise KgprobeError(f"dimension mismatch: vectors have dim {x.shape[1]}, centroids dim {c.shape[1]}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 < n <= c.shape[0]:
        raise KgprobeError(f"n must be between 1 and the number of clusters ({c.shape[0]}), got {n!r}")
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
        c = torch.nn.functional.normalize(c, dim=1)
    c_t = c.t()
    half_sq = (c * c).sum(dim=1).mul_(0.5) if metric == "l2" else None
    scores = torch.empty((x.shape[0], n), dtype=torch.float32, device=device)
    indices = torch.empty((x.shape[0], n), dtype=torch.long, device=device)
    for start in range(0, x.shape[0], chunk):
        block = x[start:start + chunk]
        sims = block @ c_t
        if half_sq is not None:
            # argmin ||x - c||^2 = argmax <x, c> - ||c||^2 / 2
            sims -= half_sq
        top, idx = torch.topk(sims, n, dim=1)
        if half_sq is not None:
            top = ((block * block).sum(dim=1, keepdim=True) - 2 * top).clamp_min_(0.0)
        scores[start:start + len(block)] = top
        indices[start:start + len(block)] = idx
    return (scores, indices) if return_scores else indices


def _as_tensor(values: Any, device: str | torch.device) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().to(device=device, dtype=torch.float32)
    return torch.from_numpy(as_float32_matrix(values)).to(device)
