"""A disk cache of sentence embeddings, keyed by model name and the exact texts encoded.

The key is ``sha256(model name, every text)``: change one character of one text, or the model,
and it is a different entry. Entries live in
``$KGPROBE_HOME/embeddings/<model>-<key>.npy`` (the raw float32 encoder output, one row per
text) and are written atomically, so a killed run never leaves a truncated entry.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from kgprobe.atomic import atomic_path
from kgprobe.models.registry import kgprobe_home


def cache_dir() -> Path:
    """``$KGPROBE_HOME/embeddings``."""
    return kgprobe_home() / "embeddings"


def texts_digest(texts: Sequence[str]) -> str:
    """sha256 over the texts (length-prefixed, so ``["ab", "c"]`` and ``["a", "bc"]`` differ)."""
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


class EmbeddingCache:
    """``get(model, texts)`` / ``put(model, texts, vectors)`` over ``.npy`` files in ``directory``."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else cache_dir()

    def path_for(self, model: str, texts: Sequence[str]) -> Path:
        h = hashlib.sha256()
        h.update(model.encode("utf-8") + b"\0")
        h.update(texts_digest(texts).encode("ascii"))
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model.strip("/").split("/")[-1])[:40] or "model"
        return self.directory / f"{slug}-{h.hexdigest()[:40]}.npy"

    def get(self, model: str, texts: Sequence[str]) -> np.ndarray | None:
        """The cached ``(len(texts), dim)`` array, or None (missing or unreadable entries are misses)."""
        path = self.path_for(model, texts)
        if not path.is_file():
            return None
        try:
            array = np.load(path)
        except (OSError, ValueError):
            return None
        if array.ndim != 2 or array.shape[0] != len(texts):
            return None
        return array

    def put(self, model: str, texts: Sequence[str], vectors: np.ndarray) -> Path:
        path = self.path_for(model, texts)
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32))
        return path
