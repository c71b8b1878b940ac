"""Entity embeddings and vector search over them.

* :mod:`~kgprobe.index.embed` — encode a KG's labels/descriptions with a sentence encoder
  (batched, deduplicated, cached on disk): :func:`embed_kg`, :func:`encode_texts`.
* :mod:`~kgprobe.index.store` — the embeddings directory format: :class:`EntityEmbeddings`.
* :mod:`~kgprobe.index.knn` — :class:`VectorIndex` over faiss (flat, IVF, HNSW; GPU when
  available) or plain torch.
* :mod:`~kgprobe.index.plan` — ``--index auto``: :func:`choose_index` picks the kind and its
  parameters from the number of vectors (:class:`IndexPlan`).
* :mod:`~kgprobe.index.exact` — chunked exact top-k in torch (:func:`exact_search`).
* :mod:`~kgprobe.index.shards` — exact search over row shards on several devices or processes:
  :func:`search_shard` per shard, :func:`merge_topk` to combine (``VectorIndex(..., devices=[...])``).
* :mod:`~kgprobe.index.cluster` — k-means (:func:`kmeans`) and :func:`nearest_clusters`.
* :mod:`~kgprobe.index.taxonomy` — taxonomy-aware search: rank by the is-a classes a query
  names (:class:`~kgprobe.index.taxonomy.Taxonomy`, :func:`~kgprobe.index.taxonomy.taxonomy_search`).
* :mod:`~kgprobe.index.rerank` — re-rank retrieved entities with a causal LM read as a
  reverse dictionary (:func:`~kgprobe.index.rerank.lm_rerank`; ``kgprobe neighbors --rerank``).
* :mod:`~kgprobe.index.build` — the directory behind ``kgprobe embed``, all of the above in one
  call: :func:`build_embeddings` returns :class:`EmbedResult`.
* :mod:`~kgprobe.index.neighbors` — the search behind ``kgprobe neighbors``, all of the above in one
  call: :func:`nearest_neighbors` returns :class:`Neighbors` (rows: :class:`Neighbor`).
"""
from kgprobe.index.build import EmbedResult, build_embeddings, kg_taxonomy
from kgprobe.index.cache import EmbeddingCache
from kgprobe.index.cluster import Clustering, kmeans, nearest_clusters
from kgprobe.index.embed import embed_kg, encode_texts
from kgprobe.index.exact import exact_search
from kgprobe.index.knn import VectorIndex, build_index, faiss_has_gpu
from kgprobe.index.neighbors import Neighbor, Neighbors, nearest_neighbors
from kgprobe.index.plan import IndexPlan, choose_index
from kgprobe.index.shards import merge_topk, search_shard
from kgprobe.index.store import EntityEmbeddings
from kgprobe.index.taxonomy import Taxonomy, taxonomy_search
from kgprobe.kg.texts import TEXT_FIELDS, entity_texts

__all__ = [
    "Clustering", "EmbedResult", "EmbeddingCache", "EntityEmbeddings", "IndexPlan", "Neighbor", "Neighbors",
    "TEXT_FIELDS", "VectorIndex", "build_embeddings", "build_index", "Taxonomy", "choose_index", "embed_kg",
    "encode_texts", "entity_texts",
    "exact_search", "faiss_has_gpu", "kg_taxonomy", "kmeans", "merge_topk", "nearest_clusters", "nearest_neighbors",
    "search_shard", "taxonomy_search",
]
