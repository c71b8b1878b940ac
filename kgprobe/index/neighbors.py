"""The entities of an embeddings directory nearest to a text or to one of them (``kgprobe neighbors``).

The search is plain (the index's own scores), or taxonomy-aware when the query is a text and the
directory holds a taxonomy (:mod:`kgprobe.index.taxonomy`); with a causal LM the nearest
entities are then re-ordered by :mod:`kgprobe.index.rerank`. :func:`nearest_neighbors` does all
of it and returns a :class:`Neighbors`, its rows :class:`Neighbor` objects (``as_json()`` gives what
``kgprobe neighbors --json`` prints).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from kgprobe.errors import KgprobeError
from kgprobe.index.embed import encode_texts
from kgprobe.index.knn import VectorIndex
from kgprobe.index.rerank import COSINE_WEIGHT, PRIOR_WEIGHT, combine, score_names
from kgprobe.index.shards import resolve_devices
from kgprobe.index.store import INDEX_FILE, EntityEmbeddings
from kgprobe.index.taxonomy import FLOOR, OWN_WEIGHT, TAXONOMY_FILE, TOP, Taxonomy, named_classes, taxonomy_search
from kgprobe.models import check_model, resolve_dtype
from kgprobe.models.device import check_device_map
from kgprobe.models.lm import CausalLMRunner
from kgprobe.models.loaders import hide_loading_bars


@dataclass
class Neighbor:
    """One result of :func:`nearest_neighbors`.

    ``score`` is the retrieval score: the index's (cosine / inner product, or squared L2 distance
    for an l2 index), or the taxonomy-aware score, which adds the entity's own ``cosine`` and the
    named classes it is ``under``; LM re-ranking adds ``retrieval_rank``, ``rerank_score`` and the
    ``name`` that earned it (``rank`` is then the re-ranked place). Fields a search does not set stay None.
    """

    rank: int
    id: str
    score: float
    label: str
    cosine: float | None = None
    under: list[str] | None = None
    retrieval_rank: int | None = None
    rerank_score: float | None = None
    name: str | None = None

    def as_json(self) -> dict:
        """The row of ``kgprobe neighbors --json``: the fields that are set, in this order: rank, id,
        score, [cosine], label, [under], [retrieval_rank, rerank_score, name]."""
        row: dict = {"rank": self.rank, "id": self.id, "score": self.score}
        if self.cosine is not None:
            row["cosine"] = self.cosine
        row["label"] = self.label
        if self.under is not None:
            row["under"] = self.under
        if self.rerank_score is not None:
            row.update(retrieval_rank=self.retrieval_rank, rerank_score=self.rerank_score, name=self.name)
        return row


@dataclass
class Neighbors:
    """What :func:`nearest_neighbors` found, best first, and how it searched.

    Each result is a :class:`Neighbor`: a taxonomy-aware search sets its ``cosine`` and ``under``,
    re-ranking its ``retrieval_rank``, ``rerank_score`` and ``name``.
    """

    query: str | None
    entity: str | None
    model: str | None  # the sentence encoder of the directory
    k: int
    metric: str
    results: list[Neighbor]
    #: ``relations``, ``classes``, ``class_floor``, ``own_weight`` of a taxonomy-aware search, else None
    taxonomy: dict | None = None
    #: ``model``, ``depth``, ``prior_weight``, ``cosine_weight`` of the LM re-ranking, else None
    rerank: dict | None = None

    @property
    def search(self) -> str:
        return "plain" if self.taxonomy is None else "taxonomy"

    def as_json(self) -> dict:
        """The object ``kgprobe neighbors --json`` prints."""
        payload = {"query": self.query, "entity": self.entity, "model": self.model, "k": self.k,
                   "metric": self.metric, "search": self.search, "results": [r.as_json() for r in self.results]}
        if self.taxonomy is not None:
            payload["taxonomy"] = self.taxonomy
        if self.rerank is not None:
            payload["rerank"] = self.rerank
        return payload


def nearest_neighbors(directory: str | Path, query: str | None = None, *, entity_id: str | None = None,
                      k: int = 10, device: str = "auto", exact: bool = False, nprobe: int | None = None,
                      ef_search: int | None = None, plain: bool = False, classes: int | None = None,
                      class_floor: float | None = None, own_weight: float | None = None,
                      rerank_model: str | None = None, rerank_depth: int = 200, prior_weight: float | None = None,
                      cosine_weight: float | None = None, loading_bars: bool = True,
                      devices: str | Sequence[str] | None = None, rerank_dtype: str = "auto",
                      rerank_device_map: str | None = None) -> Neighbors:
    """The ``k`` entities of ``directory`` (made by ``kgprobe embed``) nearest to ``query``.

    ``query`` is free text, embedded with the directory's model; or give ``entity_id`` to use that
    entity's stored vector (the entity itself is left out). ``directory/index.faiss`` is searched
    unless ``exact`` or there is none (then every vector, exactly); ``nprobe`` / ``ef_search``
    override the index's. A text query over a directory with a taxonomy is taxonomy-aware unless
    ``plain``: ``classes``, ``class_floor`` and ``own_weight`` default to :mod:`kgprobe.index.taxonomy`'s.
    ``rerank_model`` re-scores the nearest ``rerank_depth`` entities with that causal LM
    (``prior_weight`` and ``cosine_weight`` default to :mod:`kgprobe.index.rerank`'s).
    ``loading_bars=False`` hides transformers' model-loading bars. ``devices`` (``"cuda:0,cuda:1"`` or
    a list) shards the search over those devices (:class:`~kgprobe.index.knn.VectorIndex`'s
    ``devices``; the same results); ``device`` still runs the query encoder and the LM.
    ``rerank_dtype`` and ``rerank_device_map``: the re-ranking LM's ``dtype`` and ``device_map``
    (:func:`~kgprobe.models.load_causal_lm`). Every problem is a ``KgprobeError``.
    """
    directory = Path(directory)
    _check_request(query, entity_id, k, rerank_model)
    resolve_dtype(rerank_dtype, "cpu")  # a bad name is found before anything is loaded
    rerank_device_map = check_device_map(rerank_device_map)
    if devices is not None:
        devices = resolve_devices(devices)  # a wrong device is found before anything is loaded
    emb = EntityEmbeddings.load(directory)
    if not loading_bars:
        hide_loading_bars()
    index = _open_index(directory, emb, device=device, exact=exact, nprobe=nprobe, ef_search=ef_search,
                        devices=devices)
    vector, self_row = _query_vector(directory, emb, query, entity_id, device)
    depth = max(k, rerank_depth) if rerank_model else k
    taxonomy = None if query is None or plain else _stored_taxonomy(directory, emb, index)
    if taxonomy is not None:
        classes = TOP if classes is None else classes
        class_floor = FLOOR if class_floor is None else class_floor
        own_weight = OWN_WEIGHT if own_weight is None else own_weight
    # a taxonomy search reads its classes among the hits; a plain one drops the query entity from them
    want = min(max(depth, classes or 0) if taxonomy else depth + (self_row is not None), len(emb))
    scores, rows = index.search(vector.astype(np.float32), want)
    hits = [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0 and r != self_row]
    found = Neighbors(query=query, entity=entity_id, model=emb.meta.get("model"), k=k, metric=index.metric,
                      results=[])
    if taxonomy is not None:
        results = _by_taxonomy(vector[0], hits, emb, taxonomy, depth, classes=classes, floor=class_floor,
                               own_weight=own_weight)
        found.taxonomy = {"relations": taxonomy.relations, "classes": classes, "class_floor": class_floor,
                          "own_weight": own_weight}
    else:
        results = [Neighbor(rank=i + 1, id=emb.ids[r], score=round(s, 6), label=emb.labels[r])
                   for i, (r, s) in enumerate(hits[:depth])]
    if rerank_model:
        prior_weight = PRIOR_WEIGHT if prior_weight is None else prior_weight
        cosine_weight = COSINE_WEIGHT if cosine_weight is None else cosine_weight
        sign = -1.0 if index.metric == "l2" else 1.0  # l2 scores are distances
        results = _reranked(query, results, rerank_model, device, prior_weight=prior_weight,
                            cosine_weight=sign * cosine_weight, dtype=rerank_dtype, device_map=rerank_device_map)
        found.rerank = {"model": rerank_model, "depth": rerank_depth, "prior_weight": prior_weight,
                        "cosine_weight": cosine_weight}
    found.results = results[:k]
    return found


def _check_request(query: str | None, entity_id: str | None, k: int, rerank_model: str | None) -> None:
    """The mistakes that need no file: found before anything is loaded."""
    if (query is None) == (entity_id is None):
        raise KgprobeError("give either a QUERY text or --entity ID (exactly one)")
    if query is not None and not query.strip():
        raise KgprobeError("the query text is empty")
    if k <= 0:
        raise KgprobeError(f"-k must be a positive integer, got {k}")
    if rerank_model is not None and query is None:
        raise KgprobeError("--rerank needs a QUERY text (it reads the description, not a vector)")
    if rerank_model is not None:  # found now, not after the search
        check_model(rerank_model, kind="causal-lm")


def _open_index(directory: Path, emb: EntityEmbeddings, *, device: str, exact: bool, nprobe: int | None,
                ef_search: int | None, devices: list | None = None) -> VectorIndex:
    """The directory's saved index (with any overridden search parameters), or an exact one over
    every vector when there is none or ``exact`` asks for it; sharded over ``devices`` if given."""
    index_path = directory / INDEX_FILE
    if index_path.is_file() and not exact:
        params = {name: v for name, v in (("nprobe", nprobe), ("ef_search", ef_search)) if v is not None}
        index = VectorIndex.load(index_path, device=device, devices=devices, **params)
        if index.ntotal != len(emb):
            raise KgprobeError(f"{INDEX_FILE} holds {index.ntotal} vectors but there are {len(emb)} entities",
                               path=directory)
        return index
    metric = "ip" if emb.meta.get("normalized", True) else "cosine"
    return VectorIndex(emb.dim, kind="flat", metric=metric, device=device, devices=devices).add(emb.vectors)


def _query_vector(directory: Path, emb: EntityEmbeddings, query: str | None, entity_id: str | None,
                  device: str) -> tuple[np.ndarray, int | None]:
    """The ``(1, dim)`` query vector, and the row of the query entity (None for a text query)."""
    self_row = None
    if entity_id is not None:
        self_row = emb.position(entity_id)
        vector = emb.vectors[self_row:self_row + 1]
    else:
        model = emb.meta.get("model")
        if not model:
            raise KgprobeError("meta.json names no model to embed the query with", path=directory)
        vector = encode_texts([query], model, device=device, normalize=bool(emb.meta.get("normalized", True)),
                              cache=False, progress=False)
    if vector.shape[1] != emb.dim:
        raise KgprobeError(f"the query has dim {vector.shape[1]} but the entities have dim {emb.dim}")
    return vector, self_row


def _stored_taxonomy(directory: Path, emb: EntityEmbeddings, index: VectorIndex) -> Taxonomy | None:
    """The directory's taxonomy (None when it has none); its search needs cosine scores."""
    if not (directory / TAXONOMY_FILE).is_file():
        return None
    if index.metric == "l2" or (index.metric == "ip" and not emb.meta.get("normalized", True)):
        raise KgprobeError(f"taxonomy search needs cosine scores but the index is {index.metric} over "
                           f"{'' if emb.meta.get('normalized', True) else 'un'}normalised vectors; pass --plain",
                           path=directory)
    return Taxonomy.load(directory / TAXONOMY_FILE)


def _by_taxonomy(query, hits: list[tuple[int, float]], emb, taxonomy, depth: int, *, classes: int, floor: float,
                 own_weight: float) -> list[Neighbor]:
    """The best ``depth`` entities by :func:`kgprobe.index.taxonomy.taxonomy_search`, with each one's
    own ``cosine`` and the named classes it is ``under``."""
    hit_rows = np.array([r for r, _ in hits], dtype=np.int64)
    hit_scores = np.array([s for _, s in hits], dtype=np.float32)
    found = taxonomy_search(query, hit_rows=hit_rows, hit_scores=hit_scores, vectors=emb.vectors,
                            taxonomy=taxonomy, top=classes, floor=floor, own_weight=own_weight, k=depth)
    named, _ = named_classes(hit_rows, hit_scores, top=classes, floor=floor)
    under = taxonomy.descendants[named][:, found.rows].toarray() > 0  # (named classes, results)
    return [Neighbor(rank=i + 1, id=emb.ids[r], score=round(float(s), 6), cosine=round(float(c), 6),
                     label=emb.labels[r], under=[emb.ids[c] for c in named[under[:, i]]])
            for i, (r, s, c) in enumerate(zip(found.rows, found.scores, found.cosine))]


def _reranked(query: str, results: list[Neighbor], model: str, device: str, *, prior_weight: float,
              cosine_weight: float, dtype: str = "auto", device_map: str | None = None) -> list[Neighbor]:
    """``results`` re-ordered by :mod:`kgprobe.index.rerank`, with ``rerank_score`` and ``name``."""
    from kgprobe.models.loaders import load_causal_lm  # looked up when called: tests replace the loaders

    lm, tokenizer = load_causal_lm(model, device=device, dtype=dtype, device_map=device_map)
    names = score_names(query, [r.label for r in results], runner=CausalLMRunner(lm, tokenizer),
                        prior=bool(prior_weight))
    ranked = combine(names, prior_weight, retrieval=[r.score for r in results], retrieval_weight=cosine_weight)
    return [replace(results[i], rank=new_rank, retrieval_rank=results[i].rank,
                    rerank_score=round(float(ranked.scores[i]), 4), name=ranked.names[i])
            for new_rank, i in enumerate(ranked.order(), 1)]
