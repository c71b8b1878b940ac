"""An embeddings directory: ``embeddings.npy``, ``ids.txt``, ``labels.txt`` and ``meta.json``.

``embeddings.npy`` holds one row per entity (float32, or float16 when saved with ``fp16``),
``ids.txt`` / ``labels.txt`` one entity id / label per line in the same order, and
``meta.json`` the model, the text field, ``dim``, ``count``, ``normalized`` and ``dtype``
(plus whatever else the producer recorded: cache hit, timings, the index and clustering).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kgprobe.atomic import atomic_path
from kgprobe.errors import KgprobeError

EMBEDDINGS_FILE = "embeddings.npy"
IDS_FILE = "ids.txt"
LABELS_FILE = "labels.txt"
META_FILE = "meta.json"
#: the vector index ``kgprobe embed`` saves beside them (with its settings in ``index.json``)
INDEX_FILE = "index.faiss"


def _one_line(value: str) -> str:
    return " ".join(str(value).split())


@dataclass
class EntityEmbeddings:
    """Entity ids and labels with their vectors (``(count, dim)``, float32 in memory)."""

    ids: list[str]
    labels: list[str]
    vectors: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    _positions: dict[str, int] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2:
            raise KgprobeError(f"embeddings must be 2-D, got shape {tuple(self.vectors.shape)}")
        if not (len(self.ids) == len(self.labels) == len(self.vectors)):
            raise KgprobeError(f"{len(self.ids)} ids, {len(self.labels)} labels and {len(self.vectors)} vectors "
                               "do not match")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def position(self, entity_id: str) -> int:
        """Row of ``entity_id`` (KgprobeError when unknown)."""
        if self._positions is None:
            self._positions = {e: i for i, e in enumerate(self.ids)}
        try:
            return self._positions[entity_id]
        except KeyError:
            raise KgprobeError(f"unknown entity id {entity_id!r} (not in {IDS_FILE})") from None

    def save(self, directory: str | Path, *, fp16: bool = False) -> Path:
        """Write the four files into ``directory`` (created if needed; each file atomically)."""
        directory = Path(directory)
        bad = next((e for e in self.ids if "\n" in e or "\r" in e), None)
        if bad is not None:
            raise KgprobeError(f"entity id {bad!r} contains a line break and cannot go into {IDS_FILE}")
        directory.mkdir(parents=True, exist_ok=True)
        dtype = np.float16 if fp16 else np.float32
        with atomic_path(directory / EMBEDDINGS_FILE) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, self.vectors.astype(dtype, copy=False))
        for name, lines in ((IDS_FILE, self.ids), (LABELS_FILE, [_one_line(x) for x in self.labels])):
            with atomic_path(directory / name) as tmp:
                tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        meta = {**self.meta, "dim": self.dim, "count": len(self), "dtype": np.dtype(dtype).name}
        with atomic_path(directory / META_FILE) as tmp:
            tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        self.meta = meta
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "EntityEmbeddings":
        """Read a directory written by :meth:`save`; vectors come back as float32."""
        directory = Path(directory)
        if not directory.is_dir():
            raise KgprobeError("no such embeddings directory (make one with `kgprobe embed`)", path=directory)
        if not (directory / META_FILE).is_file():
            raise KgprobeError(f"not an embeddings directory ({META_FILE} missing; make one with `kgprobe embed`)",
                               path=directory)
        try:
            meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise KgprobeError(f"invalid JSON: {err}", path=directory / META_FILE) from None
        for name in (EMBEDDINGS_FILE, IDS_FILE):
            if not (directory / name).is_file():
                raise KgprobeError(f"{name} missing from the embeddings directory", path=directory)
        try:
            vectors = np.load(directory / EMBEDDINGS_FILE)
        except (OSError, ValueError) as err:
            raise KgprobeError(f"unreadable array: {err}", path=directory / EMBEDDINGS_FILE) from None
        ids = (directory / IDS_FILE).read_text(encoding="utf-8").splitlines()
        labels_path = directory / LABELS_FILE
        labels = labels_path.read_text(encoding="utf-8").splitlines() if labels_path.is_file() else list(ids)
        if vectors.ndim != 2 or len(vectors) != len(ids) or len(labels) != len(ids):
            raise KgprobeError(f"{EMBEDDINGS_FILE} has shape {tuple(vectors.shape)} but there are {len(ids)} ids "
                               f"and {len(labels)} labels", path=directory)
        return cls(ids=ids, labels=labels, vectors=np.ascontiguousarray(vectors, dtype=np.float32), meta=meta)
