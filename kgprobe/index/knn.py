"""``VectorIndex``: one nearest-neighbour API over faiss (exact, IVF, HNSW) and plain torch.

>>> index = VectorIndex(384, kind="hnsw", metric="cosine")
>>> index.add(vectors)                       # numpy or torch, any float dtype
>>> scores, ids = index.search(queries, k=10)
>>> index.save("index.faiss")                # index.faiss + index.json (the settings)
>>> index = VectorIndex.load("index.faiss")

Kinds and metrics
    ``kind="flat"`` is exact; ``"ivf"`` (inverted lists over ``nlist`` k-means cells, ``nprobe``
    of them visited per query) and ``"hnsw"`` (a graph with ``M`` links per node, ``efSearch``
    candidates kept while searching) are approximate. Any faiss factory string
    (``factory="IVF256,PQ32"``) is accepted too. ``metric`` is ``"ip"`` (inner product, largest
    first), ``"l2"`` (squared distance, smallest first, as faiss reports it) or ``"cosine"``
    (inner product of L2-normalised vectors: both added vectors and queries are normalised).

Backends
    ``backend="auto"`` uses faiss, on the GPU when this faiss build has GPU support
    (``faiss.StandardGpuResources``) and CUDA is visible; HNSW always stays on the CPU (faiss has
    no GPU HNSW). When CUDA is visible but faiss is CPU-only, an exact index runs on the torch
    backend on the GPU instead. ``backend="torch"`` is exact search by chunked ``q @ X.T`` +
    ``topk`` (see :mod:`kgprobe.index.exact`), which returns the same results as faiss flat.

Shards
    ``devices=["cuda:0", "cuda:1"]`` splits the index over several devices. With faiss GPU
    support and only CUDA devices, faiss shards it itself (``GpuMultipleClonerOptions(shard=True)``
    through ``index_cpu_to_gpu_multiple``: flat and IVF; the vectors are added to a CPU index,
    cloned to the GPUs at the first search after an ``add``). Otherwise an exact index runs on the
    torch backend with one contiguous row shard per device (:class:`kgprobe.index.shards.TorchShards`:
    each shard searched for its top ``k``, the lists merged; the same ids as one search over all
    rows, ties to the lowest row). ``backend="faiss"`` over CPU devices gives a faiss
    ``IndexShards`` of flat sub-indexes (no speed-up: a check of the merge). ``["cpu", "cpu"]``
    runs the sharded code on a CPU. The shards are a search-time choice: ``save`` writes one
    unsharded index, and ``load(path, devices=...)`` shards it again.

IVF indexes are trained on the first vectors added (or on ``train(vectors)``); when ``nlist``
is not given it is chosen at training time as ``4 * sqrt(n)``, capped so that every cell gets
at least 39 training points (faiss' own rule of thumb), so small KGs work too.

``build_index(vectors, kind="auto")`` picks the kind and its parameters from the number of
vectors (:func:`kgprobe.index.plan.choose_index`: flat up to 200k, IVF-Flat up to 5M, IVF-PQ
beyond or over a memory budget) and records the choice and its reason in ``index.json``
(``plan``). ``VectorIndex(dim, kind="auto")`` is refused: the choice needs the vectors' count.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kgprobe.atomic import atomic_path, write_json
from kgprobe.errors import KgprobeError
from kgprobe.index.exact import DEFAULT_QUERY_CHUNK, exact_search, squared_norms
from kgprobe.index.plan import IndexPlan, auto_nlist, choose_index
from kgprobe.index.shards import TorchShards, resolve_devices, shard_bounds

KINDS = ("flat", "ivf", "hnsw")
AUTO = "auto"  # build_index / build_embeddings only: the kind is chosen from the vectors' count
METRICS = ("ip", "l2", "cosine")
BACKENDS = ("auto", "faiss", "torch")
FORMAT = "kgprobe-vector-index"
#: IVF k-means trains on at most this many vectors per cell (see VectorIndex._training_sample)
TRAIN_POINTS_PER_CELL = 64


def _faiss():
    import faiss

    return faiss


def faiss_has_gpu() -> bool:
    """True when the installed faiss was built with GPU support and sees a GPU."""
    faiss = _faiss()
    if not hasattr(faiss, "StandardGpuResources"):
        return False
    try:
        return faiss.get_num_gpus() > 0
    except Exception:  # a GPU build on a machine without a driver
        return False


def sidecar_path(path: str | Path) -> Path:
    """The JSON file next to a saved index: ``index.faiss`` -> ``index.json``."""
    path = Path(path)
    return path.with_suffix(".json") if path.suffix != ".json" else path.with_name(path.name + ".json")


def _faiss_message(err: Exception) -> str:
    """faiss errors read ``Error in <signature> at <file>:<line>: Error: '<check>' failed: why``."""
    text = " ".join(str(err).split())
    match = re.search(r"failed: (.*)$", text) or re.search(r"Error: (.*)$", text)
    return match.group(1) if match else text


def as_float32_matrix(vectors: Any, what: str = "vectors") -> np.ndarray:
    """A C-contiguous ``(n, d)`` float32 array from numpy, torch or nested lists (1-D = one row)."""
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().to("cpu", torch.float32).numpy()
    array = np.asarray(vectors)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise KgprobeError(f"{what} must be numbers, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2:
        raise KgprobeError(f"{what} must be a 2-D (n, dim) array, got shape {tuple(array.shape)}")
    return np.ascontiguousarray(array, dtype=np.float32)


def normalize_rows(array: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.maximum(norms, 1e-12)


class VectorIndex:
    """A nearest-neighbour index over ``dim``-dimensional float vectors.

    Parameters are keyword-only after ``dim``: ``kind`` (flat, ivf, hnsw), ``metric`` (ip, l2,
    cosine), ``backend`` (auto, faiss, torch), ``factory`` (a faiss factory string; overrides
    ``kind``), ``nlist`` / ``nprobe`` (IVF), ``m`` / ``ef_search`` / ``ef_construction``
    (HNSW), ``device`` (auto, cpu, cuda: where faiss-GPU or the torch backend runs) and
    ``query_chunk`` (queries per matmul in the torch backend); ``devices`` (a list, or a string
    ``"cuda:0,cuda:1"``) shards the index over those devices instead of putting it on ``device``.
    """

    def __init__(
        self,
        dim: int,
        *,
        kind: str = "flat",
        metric: str = "ip",
        backend: str = "auto",
        factory: str | None = None,
        nlist: int | None = None,
        nprobe: int = 16,
        m: int = 32,
        ef_search: int = 64,
        ef_construction: int = 40,
        device: str | torch.device = "auto",
        query_chunk: int = DEFAULT_QUERY_CHUNK,
        devices: str | Sequence[str | torch.device] | None = None,
    ) -> None:
        if not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise KgprobeError(f"index dimension must be a positive integer, got {dim!r}")
        if factory is None and kind == AUTO:
            raise KgprobeError("index kind 'auto' needs the number of vectors: use build_index(vectors, "
                               "kind='auto') or choose_index(n, dim)")
        if factory is None and kind not in KINDS:
            raise KgprobeError(f"unknown index kind {kind!r}; known kinds: {', '.join((*KINDS, AUTO))} "
                               "(or a faiss factory string)")
        if metric not in METRICS:
            raise KgprobeError(f"unknown metric {metric!r}; known metrics: {', '.join(METRICS)}")
        if backend not in BACKENDS:
            raise KgprobeError(f"unknown backend {backend!r}; known backends: {', '.join(BACKENDS)}")
        for name, value in (("nprobe", nprobe), ("m", m), ("ef_search", ef_search),
                            ("ef_construction", ef_construction), ("query_chunk", query_chunk)):
            if int(value) <= 0:
                raise KgprobeError(f"{name} must be positive, got {value}")
        if nlist is not None and int(nlist) <= 0:
            raise KgprobeError(f"nlist must be positive, got {nlist}")
        self.dim = int(dim)
        self.kind = "factory" if factory is not None else kind
        self.metric = metric
        self.factory = factory
        self.nlist = None if nlist is None else int(nlist)
        self.nprobe = int(nprobe)
        self.m = int(m)
        self.ef_search = int(ef_search)
        self.ef_construction = int(ef_construction)
        self.query_chunk = int(query_chunk)
        self.devices = None if devices is None else resolve_devices(devices)
        self.device = self.devices[0] if self.devices else self._resolve_device(device)
        self.requested_backend = backend
        self.backend = self._pick_backend(backend)
        self._index = None       # the faiss index (faiss backend), built lazily; on the CPU when sharded
        self._gpu_res = None     # faiss StandardGpuResources when on the GPU
        self._base: torch.Tensor | None = None   # the vectors (torch backend)
        self._base_sq: torch.Tensor | None = None
        self._shards: TorchShards | None = None  # the vectors (torch backend with devices)
        self._sharded = None     # faiss sharded copy of _index (faiss backend with devices), built lazily
        self._shard_res: list = []   # faiss GPU resources the sharded copy uses
        self.plan: dict | None = None  # the choice of kind="auto" (IndexPlan.as_dict), saved in index.json

    # ----------------------------------------------------------------- set-up
    @staticmethod
    def _resolve_device(device: str | torch.device) -> torch.device:
        from kgprobe.models.device import resolve_device

        return resolve_device(device)

    def _pick_backend(self, backend: str) -> str:
        if self.devices is not None:
            return self._pick_sharded_backend(backend)
        if backend == "torch":
            if self.kind != "flat":
                raise KgprobeError(f"the torch backend is exact search only (kind='flat'), not {self.kind!r}")
            return "torch"
        if backend == "auto" and self.kind == "flat" and self.device.type == "cuda" and not faiss_has_gpu():
            return "torch"  # a GPU but CPU-only faiss: torch matmul on the GPU beats faiss on the CPU
        return "faiss"

    def _pick_sharded_backend(self, backend: str) -> str:
        """faiss's own sharding on GPUs when it can; torch row shards for exact search otherwise;
        faiss ``IndexShards`` on the CPU only when asked for (``backend="faiss"``)."""
        names = ",".join(str(d) for d in self.devices)
        all_cuda = all(d.type == "cuda" for d in self.devices)
        all_cpu = all(d.type == "cpu" for d in self.devices)
        hnsw = self.kind == "hnsw" or "HNSW" in (self.factory or "")
        if backend != "torch" and all_cuda and faiss_has_gpu() and not hnsw:
            return "faiss"
        if backend == "faiss" and all_cpu:
            if self.kind != "flat":
                raise KgprobeError(f"faiss shards over CPU devices hold flat indexes only, not {self.kind!r}")
            return "faiss"
        if backend == "faiss":
            raise KgprobeError(f"faiss shards need faiss with GPU support and only CUDA devices, got devices {names} "
                               "(backend='torch' shards an exact index over any devices)")
        if self.kind != "flat":
            why = "faiss has no GPU HNSW" if hnsw else "that needs faiss with GPU support and only CUDA devices"
            raise KgprobeError(f"cannot shard a {self.kind!r} index over {names}: {why}; "
                               "only an exact (flat) index shards on any devices")
        return "torch"

    @property
    def faiss_metric(self) -> int:
        faiss = _faiss()
        return faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT

    @property
    def on_gpu(self) -> bool:
        """Whether searches run on a GPU (faiss-GPU or the torch backend on CUDA)."""
        if self.backend == "torch" or self.devices is not None:
            return self.device.type == "cuda" if self.devices is None else any(d.type == "cuda" for d in self.devices)
        return self._gpu_res is not None

    @property
    def ntotal(self) -> int:
        """Number of vectors in the index."""
        if self.backend == "torch":
            if self.devices is not None:
                return 0 if self._shards is None else self._shards.ntotal
            return 0 if self._base is None else int(self._base.shape[0])
        return 0 if self._index is None else int(self._index.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    @property
    def is_trained(self) -> bool:
        return self.backend == "torch" or (self._index is not None and bool(self._index.is_trained))

    def __repr__(self) -> str:
        where = "gpu" if self.on_gpu else "cpu"
        if self.devices is not None:
            where = f"{where}, {len(self.devices)} shards"
        return (f"VectorIndex(dim={self.dim}, kind={self.kind!r}, metric={self.metric!r}, "
                f"backend={self.backend!r}/{where}, ntotal={self.ntotal})")

    def _auto_nlist(self, n: int) -> int:
        return auto_nlist(n)

    def _build_faiss(self, n_train: int) -> None:
        faiss = _faiss()
        metric = self.faiss_metric
        try:
            if self.factory is not None:
                index = faiss.index_factory(self.dim, self.factory, metric)
            elif self.kind == "flat":
                index = faiss.IndexFlat(self.dim, metric)
            elif self.kind == "ivf":
                if self.nlist is None:
                    self.nlist = self._auto_nlist(n_train)
                quantizer = faiss.IndexFlat(self.dim, metric)
                # faiss' Python layer keeps `quantizer` alive as long as the IVF index
                index = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, metric)
            else:
                index = faiss.IndexHNSWFlat(self.dim, self.m, metric)
                index.hnsw.efConstruction = self.ef_construction
        except RuntimeError as err:
            raise KgprobeError(f"cannot build faiss index {self.factory or self.kind!r}: "
                               f"{_faiss_message(err)}") from None
        use_gpu = (self.devices is None and self.device.type == "cuda" and faiss_has_gpu()
                   and not self._is_hnsw(index))
        if use_gpu:
            self._gpu_res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_res, self.device.index or 0, index)
        self._index = index
        self._apply_search_params()

    @staticmethod
    def _is_hnsw(index) -> bool:
        faiss = _faiss()
        return isinstance(index, faiss.IndexHNSW) or "HNSW" in type(index).__name__

    def _apply_search_params(self) -> None:
        """Push ``nprobe`` / ``efSearch`` into the faiss index (whatever built it)."""
        faiss = _faiss()
        index = self._index
        self._drop_sharded()  # cloned again, with these settings, at the next search
        if index is None:
            return
        if self._gpu_res is not None:
            try:
                faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", self.nprobe)
            except RuntimeError:
                pass
            return
        try:
            ivf = faiss.extract_index_ivf(index)
        except RuntimeError:
            ivf = None
        if ivf is not None:
            ivf.nprobe = self.nprobe
        inner = faiss.downcast_index(index)
        if hasattr(inner, "hnsw"):
            inner.hnsw.efSearch = self.ef_search

    def set_search_params(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change ``nprobe`` (IVF) or ``efSearch`` (HNSW) of a built index; no rebuild needed."""
        for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
            if value is not None and int(value) <= 0:
                raise KgprobeError(f"{name} must be positive, got {value}")
        if nprobe is not None:
            self.nprobe = int(nprobe)
        if ef_search is not None:
            self.ef_search = int(ef_search)
        self._apply_search_params()

    # ----------------------------------------------------------------- data
    def _prepare(self, vectors: Any, what: str) -> np.ndarray:
        array = as_float32_matrix(vectors, what)
        if array.shape[1] != self.dim:
            raise KgprobeError(f"dimension mismatch: the index has dim {self.dim}, {what} have dim {array.shape[1]}")
        if not np.isfinite(array).all():
            raise KgprobeError(f"{what} contain NaN or infinite values")
        return normalize_rows(array) if self.metric == "cosine" else array

    def train(self, vectors: Any) -> "VectorIndex":
        """Train an IVF / PQ index (a no-op for flat and HNSW). Called by ``add`` when needed."""
        array = self._prepare(vectors, "training vectors")
        self._train(array)
        return self

    def _train(self, array: np.ndarray) -> None:
        if self.backend == "torch":
            return
        if self._index is None:
            self._build_faiss(len(array))
        if self._index.is_trained:
            return
        if self.kind == "ivf" and len(array) < self.nlist:
            raise KgprobeError(f"an IVF index with nlist={self.nlist} needs at least {self.nlist} training "
                               f"vectors, got {len(array)} (use a smaller nlist, leave it unset, or kind='flat')")
        try:
            self._index.train(self._training_sample(array))
        except RuntimeError as err:
            raise KgprobeError(f"cannot train the {self.factory or self.kind} index on {len(array)} vectors: "
                               f"{_faiss_message(err)}") from None
        self._apply_search_params()

    def _training_sample(self, array: np.ndarray) -> np.ndarray:
        """At most ``TRAIN_POINTS_PER_CELL * nlist`` rows of ``array`` (and at least 2**16, what 8-bit
        PQ codebooks train on), a seeded sample: k-means costs ``points x nlist`` per iteration, and
        faiss' own cap (256 per cell) is every vector up to about a million with ``nlist = 4 sqrt(n)``,
        which made building an IVF index grow as n^1.5 (eval/results/scaling.json); with 64 per cell
        it grows linearly, and recall@10 at 1M vectors stayed 1.0 (eval/results/ann.json)."""
        faiss = _faiss()
        try:
            nlist = faiss.extract_index_ivf(self._index).nlist
        except (RuntimeError, AttributeError, TypeError):
            return array  # not an IVF index: nothing to sample for
        cap = max(TRAIN_POINTS_PER_CELL * nlist, 1 << 16)
        if len(array) <= cap:
            return array
        rows = np.sort(np.random.default_rng(0).choice(len(array), cap, replace=False))
        return np.ascontiguousarray(array[rows])

    def add(self, vectors: Any) -> "VectorIndex":
        """Append vectors (their positions continue from ``ntotal``); trains the index first if needed."""
        array = self._prepare(vectors, "vectors")
        if len(array) == 0:
            return self
        if self.backend == "torch" and self.devices is not None:
            # the shards stay contiguous and balanced: split all rows again (add in one call where you can)
            rows = array if self._shards is None else np.concatenate([self._shards.vectors().numpy(), array])
            self._shards = None
            self._shards = TorchShards(rows, self.devices, metric="l2" if self.metric == "l2" else "ip")
            return self
        if self.backend == "torch":
            tensor = torch.from_numpy(array).to(self.device)
            self._base = tensor if self._base is None else torch.cat([self._base, tensor])
            self._base_sq = squared_norms(self._base) if self.metric == "l2" else None
            return self
        self._train(array)
        self._drop_sharded()
        try:
            self._index.add(array)
        except RuntimeError as err:
            raise KgprobeError(f"cannot add vectors to the index: {_faiss_message(err)}") from None
        return self

    def _drop_sharded(self) -> None:
        self._sharded, self._shard_res = None, []

    def _searched_faiss(self):
        """The faiss index searches go to: the sharded copy when there are devices, built on demand."""
        if self.devices is None:
            return self._index
        if self._sharded is None:
            try:
                self._sharded, self._shard_res = shard_faiss_index(self._index, self.devices)
            except RuntimeError as err:
                raise KgprobeError(f"cannot shard the index over {len(self.devices)} devices: "
                                   f"{_faiss_message(err)}") from None
        return self._sharded

    def search(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, indices)`` of the ``k`` nearest vectors per query, both ``(nq, k)`` numpy arrays.

        Scores: inner product (``ip``, ``cosine``; best first) or squared L2 distance (``l2``;
        smallest first). A query with fewer than ``k`` results is padded with index ``-1``.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise KgprobeError(f"k must be a positive integer, got {k!r}")
        array = self._prepare(queries, "queries")
        if self.ntotal == 0:
            raise KgprobeError("cannot search an empty index: add vectors first")
        k = int(k)
        if self.backend == "torch" and self.devices is not None:
            return self._shards.search(array, k, query_chunk=self.query_chunk)
        if self.backend == "torch":
            q = torch.from_numpy(array).to(self.device)
            metric = "l2" if self.metric == "l2" else "ip"
            with torch.inference_mode():
                scores, idx = exact_search(q, self._base, k, metric=metric, query_chunk=self.query_chunk,
                                           base_sq_norms=self._base_sq)
            return scores.cpu().numpy(), idx.cpu().numpy()
        index = self._searched_faiss()
        try:
            scores, idx = index.search(array, k)
        except RuntimeError as err:
            raise KgprobeError(f"search failed: {_faiss_message(err)}") from None
        return scores, idx

    def vectors(self) -> np.ndarray:
        """The stored vectors (normalised for ``cosine``) as a float32 array (exact kinds only)."""
        if self.ntotal == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.backend == "torch":
            return self._shards.vectors().numpy() if self.devices is not None else self._base.cpu().numpy()
        try:
            return self._cpu_index().reconstruct_n(0, self.ntotal)
        except RuntimeError as err:
            raise KgprobeError(f"this index cannot give its vectors back: {_faiss_message(err)}") from None

    # ----------------------------------------------------------------- persistence
    def settings(self) -> dict:
        """What ``load`` needs besides the faiss file: the JSON sidecar's content."""
        return {
            "format": FORMAT, "version": 1, "dim": self.dim, "kind": self.kind, "metric": self.metric,
            "backend": self.requested_backend, "factory": self.factory, "nlist": self.nlist, "nprobe": self.nprobe,
            "m": self.m, "ef_search": self.ef_search, "ef_construction": self.ef_construction,
            "ntotal": self.ntotal, "query_chunk": self.query_chunk,
            **({"plan": self.plan} if self.plan is not None else {}),
        }

    def _cpu_index(self):
        faiss = _faiss()
        if self.backend == "torch":
            index = faiss.IndexFlat(self.dim, self.faiss_metric)
            if self.ntotal:
                index.add(self.vectors())
            return index
        if self._index is None:
            self._build_faiss(0)
        return faiss.index_gpu_to_cpu(self._index) if self._gpu_res is not None else self._index

    def save(self, path: str | Path) -> Path:
        """Write the faiss index to ``path`` and its settings to ``path`` with suffix ``.json``.

        A torch-backend index is stored as a faiss flat index, so either backend can load it.
        """
        path = Path(path)
        index = self._cpu_index()
        with atomic_path(path) as tmp:
            _faiss().write_index(index, str(tmp))
        write_json(sidecar_path(path), self.settings())
        return path

    @classmethod
    def load(cls, path: str | Path, *, backend: str | None = None, device: str | torch.device = "auto",
             devices: str | Sequence[str | torch.device] | None = None, **search_params: int) -> "VectorIndex":
        """Read an index written by :meth:`save`; ``backend`` / ``nprobe`` / ``ef_search`` may be overridden,
        and ``devices`` shards it (see the module docstring)."""
        path = Path(path)
        side = sidecar_path(path)
        if not path.is_file():
            raise KgprobeError("no such index file", path=path)
        if not side.is_file():
            raise KgprobeError(f"index settings {side.name} missing next to the index file", path=path)
        try:
            settings = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise KgprobeError(f"unreadable index settings: {err}", path=side) from None
        if not isinstance(settings, dict) or settings.get("format") != FORMAT:
            raise KgprobeError(f"not a kgprobe index settings file (format is not {FORMAT!r})", path=side)
        unknown = set(search_params) - {"nprobe", "ef_search", "query_chunk"}
        if unknown:
            raise TypeError(f"unexpected arguments: {', '.join(sorted(unknown))}")
        faiss = _faiss()
        try:
            raw = faiss.read_index(str(path))
        except RuntimeError as err:
            raise KgprobeError(f"not a readable faiss index: {_faiss_message(err)}", path=path) from None
        if raw.d != settings.get("dim"):
            raise KgprobeError(f"index dimension {raw.d} does not match its settings ({settings.get('dim')})",
                               path=path)
        kind = settings.get("kind", "flat")
        wanted = backend or settings.get("backend", "auto")
        index = cls(
            raw.d,
            kind="flat" if kind == "factory" else kind,
            metric=settings.get("metric", "ip"),
            backend=wanted,
            factory=settings.get("factory"),
            nlist=settings.get("nlist"),
            nprobe=search_params.get("nprobe", settings.get("nprobe", 16)),
            m=settings.get("m", 32),
            ef_search=search_params.get("ef_search", settings.get("ef_search", 64)),
            ef_construction=settings.get("ef_construction", 40),
            device=device,
            query_chunk=search_params.get("query_chunk", settings.get("query_chunk", DEFAULT_QUERY_CHUNK)),
            devices=devices,
        )
        if isinstance(settings.get("plan"), dict):
            index.plan = settings["plan"]
        index._attach(raw)
        return index

    def _attach(self, raw) -> None:
        """Take the vectors of ``raw`` (a CPU faiss index read from disk) as this index's."""
        faiss = _faiss()
        if self.backend == "torch":
            rows = raw.reconstruct_n(0, raw.ntotal) if raw.ntotal else np.zeros((0, self.dim), dtype=np.float32)
            if self.devices is not None:
                self._shards = TorchShards(rows, self.devices, metric="l2" if self.metric == "l2" else "ip")
            elif raw.ntotal:
                self._base = torch.from_numpy(rows).to(self.device)
                self._base_sq = squared_norms(self._base) if self.metric == "l2" else None
            return
        if self.devices is None and self.device.type == "cuda" and faiss_has_gpu() and not self._is_hnsw(raw):
            self._gpu_res = faiss.StandardGpuResources()
            raw = faiss.index_cpu_to_gpu(self._gpu_res, self.device.index or 0, raw)
        self._index = raw
        self._apply_search_params()


def shard_faiss_index(index, devices: Sequence[torch.device]) -> tuple[Any, list]:
    """A sharded copy of the CPU faiss ``index``, one shard per device, and the GPU resources it uses.

    All CUDA (faiss with GPU support): faiss's own sharding, ``index_cpu_to_gpu_multiple`` with
    ``GpuMultipleClonerOptions(shard=True)`` (a flat index split into contiguous rows, an IVF
    index by id; ids stay global). All CPU: a ``faiss.IndexShards`` of flat sub-indexes over
    contiguous rows (``successive_ids``), which merges the sub-indexes' results as the GPU one
    does. Keep the resources as long as the copy.
    """
    faiss = _faiss()
    if all(d.type == "cuda" for d in devices):
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True
        resources = [faiss.StandardGpuResources() for _ in devices]
        sharded = faiss.index_cpu_to_gpu_multiple_py(resources, index, options, [d.index for d in devices])
        return sharded, resources
    vectors = index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, index.d), dtype=np.float32)
    sharded = faiss.IndexShards(index.d, False, True)  # threaded=False, successive_ids=True
    for start, stop in shard_bounds(int(index.ntotal), len(devices)):
        sub = faiss.IndexFlat(index.d, index.metric_type)
        sub.add(vectors[start:stop])
        sharded.add_shard(sub)  # faiss' Python layer keeps `sub` alive with `sharded`
    return sharded, []


def plan_index(n: int, dim: int, *, memory_bytes: int | None = None, **kwargs: Any) -> tuple[dict, IndexPlan]:
    """``VectorIndex`` keyword arguments for ``kind="auto"`` over ``n`` vectors: the plan's
    (:func:`~kgprobe.index.plan.choose_index`), then ``kwargs`` (other than ``kind``) over them."""
    plan = choose_index(n, dim, memory_bytes=memory_bytes)
    options = {**plan.index_kwargs(), **{k: v for k, v in kwargs.items() if k != "kind"}}
    return options, plan


def build_index(vectors: Any, *, memory_bytes: int | None = None, **kwargs: Any) -> VectorIndex:
    """A :class:`VectorIndex` with ``vectors`` added (dimension taken from them).

    ``kind="auto"`` chooses the kind and its parameters from the number of vectors (and
    ``memory_bytes``, a budget): :func:`~kgprobe.index.plan.choose_index`; other keyword arguments
    given (``nprobe=...``) override the plan's. The choice is kept as ``index.plan``.
    """
    array = as_float32_matrix(vectors)
    if kwargs.get("kind") != AUTO or kwargs.get("factory") is not None:
        return VectorIndex(array.shape[1], **kwargs).add(array)
    options, plan = plan_index(len(array), array.shape[1], memory_bytes=memory_bytes, **kwargs)
    index = VectorIndex(array.shape[1], **options)
    index.plan = plan.as_dict()
    return index.add(array)
