"""A KG's embeddings directory in one call: the library behind ``kgprobe embed``.

:func:`build_embeddings` encodes every entity (:func:`kgprobe.index.embed.embed_kg`), indexes the
vectors (:class:`~kgprobe.index.knn.VectorIndex`), clusters them on request
(:func:`~kgprobe.index.cluster.kmeans`), keeps the closure of the KG's is-a relations
(:class:`~kgprobe.index.taxonomy.Taxonomy`) and writes it all to one output directory, atomically;
:func:`kgprobe.index.neighbors.nearest_neighbors` searches that directory.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from kgprobe.atomic import atomic_path
from kgprobe.errors import KgprobeError
from kgprobe.index.cache import EmbeddingCache
from kgprobe.index.cluster import kmeans
from kgprobe.index.embed import embed_kg
from kgprobe.index.knn import AUTO, VectorIndex, plan_index
from kgprobe.index.store import INDEX_FILE, EntityEmbeddings
from kgprobe.index.taxonomy import TAXONOMY_FILE, Taxonomy
from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.kg.sources import load_kg_source
from kgprobe.models import check_model, resolve_device
from kgprobe.models.loaders import hide_loading_bars
from kgprobe.models.registry import DEFAULT_SENTENCE_ENCODER
from kgprobe.outdir import check_output_dir, write_marker

#: the command whose output the directory is (its ``.kgprobe`` marker; see :mod:`kgprobe.outdir`)
COMMAND = "embed"


@dataclass(frozen=True)
class EmbedResult:
    """What :func:`build_embeddings` wrote; ``meta`` is ``out/meta.json`` as written."""

    out: Path
    model: str
    text: str
    entities: int
    unique_texts: int  # distinct texts encoded
    dim: int
    cache_hit: bool  # the encoder's output came from the embedding cache (the model was not loaded)
    index: str  # "flat", "ivf", "hnsw", "ivfpq" (the kind built; "auto" records the kind it chose) or "none"
    clusters: int | None  # k-means clusters written, else None
    taxonomy: list[str] | None  # the is-a relations whose closure went to taxonomy.npz, else None
    seconds: float  # from loading the KG to the last file written (meta.json's total_seconds)
    meta: dict


def build_embeddings(
    kg: KnowledgeGraph | str | Path,
    *,
    out: str | Path,
    model: str = DEFAULT_SENTENCE_ENCODER,
    text: str = "label",
    batch_size: int = 256,
    fp16: bool = False,
    normalize: bool = True,
    device: str | torch.device = "auto",
    index: str = "auto",
    metric: str = "ip",
    nlist: int | None = None,
    nprobe: int = 16,
    hnsw_m: int = 32,
    ef_search: int = 64,
    clusters: int | None = None,
    seed: int = 0,
    taxonomy: str | Sequence[str] | None = "auto",
    cache: EmbeddingCache | bool = True,
    progress: bool = True,
    overwrite: bool = False,
) -> EmbedResult:
    """Embed every entity of ``kg`` with the sentence encoder ``model`` and write the directory ``out``.

    ``kg`` is a :class:`KnowledgeGraph` or a KG source (a path, or ``"dataset:NAME"``; see
    :func:`kgprobe.kg.sources.load_kg_source`, recorded as ``source`` in meta.json). ``out`` is
    written atomically (a failed call leaves nothing) and holds:

    * ``embeddings.npy`` (float32, float16 with ``fp16``), ``ids.txt``, ``labels.txt`` and
      ``meta.json`` (model, text, dim, count, normalized, timings, ...): :class:`EntityEmbeddings`;
    * unless ``index="none"``: ``index.faiss`` + ``index.json``, a ``flat`` / ``ivf`` / ``hnsw`` index
      (``metric`` ip / l2 / cosine, ``nlist`` / ``nprobe`` for IVF, ``hnsw_m`` / ``ef_search`` for HNSW);
      ``index="auto"`` (the default) chooses it from the number of entities
      (:func:`kgprobe.index.plan.choose_index`: flat up to 200k, so every small KG gets the exact
      index) with its own ``nlist`` / ``nprobe`` (the other index options are then ignored), and
      meta.json's ``index`` and index.json record the chosen kind, parameters and reason
      (``chosen_by: "auto"``);
    * with ``clusters``: ``centroids.npy``, ``assignments.npy``, ``clusters.json`` (faiss k-means, ``seed``);
    * ``taxonomy.npz`` when the KG has is-a relations (see :func:`kg_taxonomy`), for taxonomy-aware search;
    * the ``.kgprobe`` marker (see :mod:`kgprobe.outdir`).

    ``text`` is ``label``, ``description`` or ``both`` (``"label: description"``); ``normalize``
    L2-normalises the vectors (the inner product is then the cosine); ``cache`` reads and writes
    the encoder cache in ``$KGPROBE_HOME/embeddings`` (``False``: neither). ``progress=False``
    hides the progress bar and the model-loading bars. ``out`` must be new, empty or an earlier
    ``embed`` output unless ``overwrite``. Device, model and ``out`` are checked before the KG is
    loaded; every problem is a ``KgprobeError``.
    """
    out = Path(out)
    resolve_device(device)  # a bad device, model or out fails before any work
    check_model(model, kind="sentence-encoder")
    check_output_dir(out, command=COMMAND, overwrite=overwrite)
    if not progress:
        hide_loading_bars()
    start = time.perf_counter()
    graph, source = (kg, None) if isinstance(kg, KnowledgeGraph) else (load_kg_source(kg), str(kg))
    _check_sizes(graph, source, clusters=clusters, index=index, nlist=nlist)
    closure = kg_taxonomy(graph, taxonomy)  # a bad relation name fails before encoding
    emb = embed_kg(graph, model=model, text=text, device=device, batch_size=batch_size, normalize=normalize,
                   cache=cache, progress=progress)
    if source is not None:
        emb.meta["source"] = source
    with atomic_path(out, directory=True) as tmp:
        write_marker(tmp, COMMAND)
        if index != "none":
            index = _save_index(tmp, emb, kind=index, metric=metric, nlist=nlist, nprobe=nprobe, m=hnsw_m,
                                ef_search=ef_search, device=device)
        if clusters is not None:
            clustering = kmeans(emb.vectors, clusters, seed=seed, spherical=normalize)
            clustering.save(tmp)
            emb.meta["clusters"] = {"n_clusters": clusters, "seed": seed, "objective": clustering.objective}
        if closure is not None:
            closure.save(tmp / TAXONOMY_FILE)
            emb.meta["taxonomy"] = {"file": TAXONOMY_FILE, "relations": closure.relations,
                                    "pairs": int(closure.descendants.nnz)}
        emb.meta["total_seconds"] = round(time.perf_counter() - start, 3)
        emb.save(tmp, fp16=fp16)
    return EmbedResult(out=out, model=model, text=text, entities=len(emb), unique_texts=emb.meta["unique_texts"],
                       dim=emb.dim, cache_hit=bool(emb.meta["cache_hit"]), index=index, clusters=clusters,
                       taxonomy=None if closure is None else list(closure.relations),
                       seconds=emb.meta["total_seconds"], meta=dict(emb.meta))


def _check_sizes(graph: KnowledgeGraph, source: str | None, *, clusters: int | None, index: str,
                 nlist: int | None) -> None:
    """An empty KG, or more clusters or IVF cells than entities: found before anything is encoded."""
    if graph.num_entities == 0:
        raise KgprobeError("the KG has no entities to embed", path=source)
    if clusters is not None and clusters > graph.num_entities:
        raise KgprobeError(f"--clusters {clusters} is more than the {graph.num_entities} entities")
    if index == "ivf" and nlist is not None and nlist > graph.num_entities:
        raise KgprobeError(f"--nlist {nlist} is more than the {graph.num_entities} entities to train on")


def _save_index(directory: Path, emb: EntityEmbeddings, *, kind: str, metric: str, device, **params) -> str:
    """Build the index over ``emb``, save it to ``directory``, record it in ``emb.meta``; the kind built."""
    t0 = time.perf_counter()
    plan = None
    if kind == AUTO:
        options, plan = plan_index(len(emb), emb.dim)
        vector_index = VectorIndex(emb.dim, metric=metric, device=device, **options)
        vector_index.plan = plan.as_dict()
    else:
        vector_index = VectorIndex(emb.dim, kind=kind, metric=metric, device=device, **params)
    vector_index.add(emb.vectors)
    vector_index.save(directory / INDEX_FILE)
    built = plan.kind if plan is not None else kind
    emb.meta["index"] = {"file": INDEX_FILE, "kind": built, "metric": metric,
                         "build_seconds": round(time.perf_counter() - t0, 3)}
    if plan is not None:
        emb.meta["index"].update(chosen_by=AUTO, reason=plan.reason,
                                 params={"nlist": plan.nlist, "nprobe": plan.nprobe, "pq_m": plan.pq_m,
                                         "factory": plan.factory})
    return built


def kg_taxonomy(kg: KnowledgeGraph, relations: str | Sequence[str] | None = "auto") -> Taxonomy | None:
    """The is-a closure :func:`build_embeddings` saves: ``relations`` is ``"auto"`` (the relations
    named like hypernym / subClassOf / type / P31 / P279 / IsA, see
    :func:`~kgprobe.index.taxonomy.find_isa_relations`), ``"none"`` or ``None`` (no taxonomy), or
    relation ids (a comma-separated string or a sequence; child -> parent). ``None`` also when
    ``"auto"`` finds no relation; an unknown relation is a ``KgprobeError``."""
    if relations is None:
        return None
    if isinstance(relations, str):
        if relations.strip().lower() == "none":
            return None
        if relations.strip().lower() == "auto":
            return Taxonomy.from_kg(kg)
        names = [r.strip() for r in relations.split(",") if r.strip()]
    else:
        names = [str(r) for r in relations]
    if not names:
        raise KgprobeError("--taxonomy names no relation (give ids, 'auto' or 'none')")
    return Taxonomy.from_kg(kg, names)


__all__ = ["COMMAND", "EmbedResult", "build_embeddings", "kg_taxonomy"]
