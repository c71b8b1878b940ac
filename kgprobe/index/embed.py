"""Entity embeddings: encode a KG's labels and/or descriptions with a sentence encoder.

``embed_kg(kg, model="minilm-l6", text="description")`` returns :class:`EntityEmbeddings`
(one row per entity, L2-normalised by default, so cosine similarity is an inner product).

Work is skipped wherever possible:

* identical texts are encoded once (WordNet has synsets sharing a gloss; many KGs repeat labels);
* texts are sorted by length before batching, so a batch pads to similar lengths;
* the encoder output is cached on disk under ``$KGPROBE_HOME/embeddings`` keyed by the model
  name and a sha256 of the texts (:mod:`kgprobe.index.cache`): a re-run loads the array and
  does not even load the model.
"""
from __future__ import annotations

import time
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from kgprobe.errors import KgprobeError
from kgprobe.index.cache import EmbeddingCache
from kgprobe.index.knn import normalize_rows
from kgprobe.index.store import EntityEmbeddings
from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.kg.texts import entity_texts
from kgprobe.models.registry import DEFAULT_SENTENCE_ENCODER


class Encoder(Protocol):
    """What is needed of a sentence encoder: sentence-transformers' ``encode``."""

    def encode(self, sentences: list[str], **kwargs: Any) -> Any: ...


def unique_texts(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """``(unique, inverse)``: the distinct texts in order of first appearance and, for every
    input text, its position in ``unique`` (so ``unique[inverse[i]] == texts[i]``)."""
    position: dict[str, int] = {}
    inverse = np.fromiter((position.setdefault(t, len(position)) for t in texts), dtype=np.int64, count=len(texts))
    return list(position), inverse


def _run_encoder(encoder: Encoder, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
    from tqdm.auto import tqdm

    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out: np.ndarray | None = None
    with tqdm(total=len(texts), desc="encoding", unit="text", disable=not progress, leave=False) as bar:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            with torch.inference_mode():
                emb = encoder.encode([texts[i] for i in rows], batch_size=batch_size, convert_to_numpy=True,
                                     show_progress_bar=False, normalize_embeddings=False)
            emb = np.asarray(emb, dtype=np.float32)
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
            out[rows] = emb
            bar.update(len(rows))
    assert out is not None
    return out


def encode_texts(
    texts: Sequence[str],
    model: str = DEFAULT_SENTENCE_ENCODER,
    *,
    encoder: Encoder | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 256,
    normalize: bool = True,
    cache: EmbeddingCache | bool = True,
    progress: bool = True,
) -> np.ndarray:
    """``(len(texts), dim)`` float32 embeddings of ``texts``.

    ``model`` names the encoder (registry name, local directory or hub id) and keys the cache;
    pass ``encoder`` to use an already loaded one (it is then called only on a cache miss).
    ``cache=False`` neither reads nor writes the cache.
    """
    return _encode(texts, model, encoder=encoder, device=device, batch_size=batch_size, normalize=normalize,
                   cache=cache, progress=progress)[0]


def _encode(texts, model, *, encoder, device, batch_size, normalize, cache, progress) -> tuple[np.ndarray, bool]:
    if isinstance(batch_size, bool) or int(batch_size) <= 0:
        raise KgprobeError(f"batch size must be positive, got {batch_size}")
    texts = [str(t) for t in texts]
    if not texts:
        raise KgprobeError("nothing to encode: no texts (is the KG empty?)")
    unique, inverse = unique_texts(texts)
    store = (EmbeddingCache() if cache is True else cache) or None
    vectors = store.get(model, unique) if store is not None else None
    hit = vectors is not None
    if vectors is None:
        if encoder is None:
            from kgprobe.models.loaders import load_sentence_encoder

            encoder = load_sentence_encoder(model, device=device)
        vectors = _run_encoder(encoder, unique, int(batch_size), progress)
        if store is not None:
            store.put(model, unique, vectors)
    vectors = vectors[inverse]
    if normalize:
        vectors = normalize_rows(vectors).astype(np.float32, copy=False)
    return np.ascontiguousarray(vectors, dtype=np.float32), hit


def embed_kg(
    kg: KnowledgeGraph,
    *,
    model: str = DEFAULT_SENTENCE_ENCODER,
    text: str = "label",
    encoder: Encoder | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 256,
    normalize: bool = True,
    cache: EmbeddingCache | bool = True,
    progress: bool = True,
) -> EntityEmbeddings:
    """Embed every entity of ``kg`` from its ``text`` field (``label``, ``description``, ``both``).

    ``meta`` of the result records the model, text field, dimension, count, normalisation,
    the number of distinct texts, whether the cache answered, and the seconds spent.
    """
    texts = entity_texts(kg, text)
    start = time.perf_counter()
    vectors, hit = _encode(texts, model, encoder=encoder, device=device, batch_size=batch_size,
                           normalize=normalize, cache=cache, progress=progress)
    meta = {
        "model": model, "text": text, "dim": int(vectors.shape[1]), "count": int(vectors.shape[0]),
        "normalized": bool(normalize), "unique_texts": len(set(texts)), "cache_hit": hit,
        "seconds": round(time.perf_counter() - start, 3), "kg": kg.name,
    }
    return EntityEmbeddings(ids=list(kg.entity_ids), labels=list(kg.entity_labels), vectors=vectors, meta=meta)
