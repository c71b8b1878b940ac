"""``kgprobe embed`` and ``kgprobe neighbors``: entity embeddings and nearest-neighbour search.

Each parses its options, calls one library function and prints: ``embed`` ->
:func:`kgprobe.index.build.build_embeddings`, ``neighbors`` -> :func:`kgprobe.index.neighbors.nearest_neighbors`.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from kgprobe.cli.options import COUNT, SEED, OutputPath
from kgprobe.precision import DEVICE_MAP_CHOICES, DTYPE_CHOICES


@click.command()
@click.argument("kg", metavar="KG")
@click.option("--out", type=OutputPath(), required=True,
              help="Output directory (replaced atomically): embeddings.npy, ids.txt, labels.txt, meta.json, "
                   "index.faiss + index.json, and with --clusters centroids.npy, assignments.npy, clusters.json.")
@click.option("--model", default="minilm-l6", show_default=True,
              help="Sentence encoder: registry name, local model directory or hub id.")
@click.option("--text", "text_field", type=click.Choice(["label", "description", "both"]), default="label",
              show_default=True,
              help="What to embed per entity; 'both' is \"label: description\". Entities without a "
                   "description use their label.")
@click.option("--batch-size", type=COUNT, default=256, show_default=True,
              help="Texts per encoder batch.")
@click.option("--fp16", is_flag=True, help="Store embeddings.npy as float16 (half the size; search stays float32).")
@click.option("--no-normalize", is_flag=True,
              help="Keep the encoder's raw vectors (default: L2-normalised, so inner product = cosine).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--index", "index_kind", type=click.Choice(["auto", "flat", "ivf", "hnsw", "none"]), default="auto",
              show_default=True,
              help="Index to build: auto (by size: exact up to 200k entities, IVF up to 5M, IVF-PQ beyond; "
                   "it sets nlist/nprobe itself), exact (flat), IVF, HNSW, or none.")
@click.option("--metric", type=click.Choice(["ip", "l2", "cosine"]), default="ip", show_default=True,
              help="Index metric (ip on normalised vectors is cosine).")
@click.option("--nlist", type=COUNT, default=None,
              help="IVF cells (default: about 4*sqrt(entities), at least 39 entities per cell).")
@click.option("--nprobe", type=COUNT, default=16, show_default=True,
              help="IVF cells visited per query.")
@click.option("--hnsw-m", type=COUNT, default=32, show_default=True, help="HNSW links per node.")
@click.option("--ef-search", type=COUNT, default=64, show_default=True,
              help="HNSW candidates kept while searching.")
@click.option("--clusters", type=COUNT, default=None,
              help="Also run k-means with this many clusters (faiss, seeded).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="k-means seed.")
@click.option("--taxonomy", "taxonomy_relations", default="auto", show_default=True, metavar="RELATIONS",
              help="Is-a relations (comma-separated ids, child -> parent) whose closure goes to "
                   "taxonomy.npz for `neighbors`' taxonomy-aware search; 'auto' takes those named like "
                   "hypernym / subClassOf / type / P31 / P279 / IsA, 'none' skips it.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the embedding cache ($KGPROBE_HOME/embeddings).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--overwrite", is_flag=True,
              help="Replace whatever --out holds (without it, --out must be new, empty or an earlier `embed` output).")
def embed(kg: str, out: Path, model: str, text_field: str, batch_size: int, fp16: bool, no_normalize: bool,
          device: str, index_kind: str, metric: str, nlist: int | None, nprobe: int, hnsw_m: int, ef_search: int,
          clusters: int | None, seed: int, taxonomy_relations: str, no_cache: bool, quiet: bool,
          overwrite: bool) -> None:
    """Embed every entity of KG with a sentence encoder and index the vectors.

    KG is anything `kgprobe kg stats` reads (a KG directory, .tsv, .jsonl, .ttl, .nt, .graphml)
    or `dataset:NAME` to build a bundled dataset on the fly (e.g. dataset:wordnet,
    dataset:nations; see `kgprobe data list`).

    Encoder outputs are cached by model and text (a re-run is instant), identical texts are
    encoded once, and OUT is written atomically: a failed run leaves nothing behind. When the KG
    has is-a relations (WordNet's hypernyms, rdfs:subClassOf, ...) their closure is saved too,
    and `kgprobe neighbors` then ranks by the classes a query names (see its --help).

    \b
    Example:
      kgprobe embed dataset:wordnet --text description --out runs/wn_emb --clusters 64
      kgprobe neighbors runs/wn_emb "a domesticated carnivorous mammal" -k 5
    """
    from kgprobe.index.build import build_embeddings

    result = build_embeddings(kg, out=out, model=model, text=text_field, batch_size=batch_size, fp16=fp16,
                              normalize=not no_normalize, device=device, index=index_kind, metric=metric, nlist=nlist,
                              nprobe=nprobe, hnsw_m=hnsw_m, ef_search=ef_search, clusters=clusters, seed=seed,
                              taxonomy=taxonomy_relations, cache=not no_cache, progress=not quiet, overwrite=overwrite)
    cached = " (cache hit)" if result.cache_hit else ""
    click.echo(f"embedded {result.entities} entities ({result.unique_texts} distinct texts, dim {result.dim}) with "
               f"{model}{cached} in {result.seconds:.1f} s -> {out}")


@click.command()
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.argument("query", required=False)
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of neighbours.")
@click.option("--entity", "entity_id", default=None,
              help="Use this entity's own vector as the query (the entity itself is left out).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--exact", is_flag=True, help="Ignore DIR/index.faiss and search all vectors exactly.")
@click.option("--devices", default=None, metavar="LIST",
              help="Shard the search over these devices, comma-separated (e.g. cuda:0,cuda:1): faiss's "
                   "sharding with faiss-GPU, else row shards of an exact search, merged (the same results).")
@click.option("--nprobe", type=COUNT, default=None, help="Override the IVF nprobe of the index.")
@click.option("--ef-search", type=COUNT, default=None, help="Override the HNSW efSearch of the index.")
@click.option("--plain", is_flag=True,
              help="Rank by cosine alone even when DIR has a taxonomy (taxonomy.npz from `kgprobe embed`).")
# defaults None: kgprobe.index.taxonomy holds them, imported only when used (it pulls in scipy)
@click.option("--classes", type=COUNT, default=None, show_default="10",
              help="Taxonomy search: how many nearest entities count as classes the query names.")
@click.option("--class-floor", type=float, default=None, show_default="0.4",
              help="Taxonomy search: a class weighs its cosine minus this (classes below it count nothing).")
@click.option("--own-weight", type=float, default=None, show_default="0.05",
              help="Taxonomy search: weight of an entity's own cosine next to its classes' evidence.")
@click.option("--rerank", "rerank_model", default=None, metavar="LM",
              help="Re-rank the nearest --rerank-depth entities with this causal LM (e.g. smollm2-135m) "
                   "read as a reverse dictionary: for descriptive queries (kgprobe.index.rerank).")
@click.option("--rerank-dtype", type=click.Choice(DTYPE_CHOICES), default="auto",
              show_default=True, help="--rerank: the LM's weights (auto: bf16 on a GPU, fp32 on CPU).")
@click.option("--rerank-device-map", type=click.Choice(DEVICE_MAP_CHOICES), default="none", show_default=True,
              help="--rerank: auto spreads the LM's layers over the visible GPUs (accelerate).")
@click.option("--rerank-depth", type=COUNT, default=200, show_default=True,
              help="How many nearest entities the LM re-scores.")
# defaults None: kgprobe.index.rerank holds them, imported only when re-ranking (it pulls in torch)
@click.option("--prior-weight", type=float, default=None, show_default="0: the plain LM score",
              help="Re-ranking: subtract this times a name's log-prob after an empty description.")
@click.option("--cosine-weight", type=float, default=None, show_default="0",
              help="Re-ranking: add this times the retrieval score (cosine) to the LM score.")
def neighbors(directory: Path, query: str | None, k: int, entity_id: str | None, as_json: bool, device: str,
              exact: bool, devices: str | None, nprobe: int | None, ef_search: int | None, plain: bool,
              classes: int | None, class_floor: float | None, own_weight: float | None, rerank_model: str | None,
              rerank_depth: int, prior_weight: float | None, cosine_weight: float | None, rerank_dtype: str,
              rerank_device_map: str) -> None:
    """Print the entities of DIR (made by `kgprobe embed`) nearest to QUERY.

    QUERY is free text, embedded with the same model as the entities (from DIR/meta.json).
    With --entity ID the entity's stored vector is the query instead. Output: rank, entity
    id, score (cosine / inner product, or squared L2 distance for an l2 index) and label.

    A sentence encoder matches a description by its words: for "a domesticated carnivorous
    mammal" the nearest WordNet labels are "carnivorous", "domestic animal", "carnivore". When
    DIR has a taxonomy (KGs with is-a relations, e.g. WordNet), a text query is read as naming
    classes: the --classes nearest entities, each weighing its cosine minus --class-floor, and
    every entity scores --own-weight x its own cosine plus the weights of the classes it is
    under (dog: domestic animal and carnivore), so things that are all the query says come
    first (kgprobe.index.taxonomy; --plain turns it off; --entity queries are always plain).
    The JSON output then gives each result's `cosine` and the classes it is `under`.

    With --rerank LM the nearest --rerank-depth entities are re-ordered by the log-probability
    that the LM names each of them after the description (the output then shows that score,
    and the name that earned it).

    \b
    Example:
      kgprobe neighbors runs/wn_emb "a domesticated carnivorous mammal" -k 5
      kgprobe neighbors runs/wn_emb "a domesticated carnivorous mammal" -k 5 --plain
      kgprobe neighbors runs/wn_emb "a domesticated carnivorous mammal" -k 5 --rerank smollm2-135m
      kgprobe neighbors runs/wn_emb --entity 02084071 --json
      kgprobe neighbors runs/wn_emb --entity 02084071 --exact --devices cuda:0,cuda:1
    """
    from kgprobe.index.neighbors import nearest_neighbors

    found = nearest_neighbors(directory, query, entity_id=entity_id, k=k, device=device, exact=exact, nprobe=nprobe,
                              ef_search=ef_search, plain=plain, classes=classes, class_floor=class_floor,
                              own_weight=own_weight, rerank_model=rerank_model, rerank_depth=rerank_depth,
                              prior_weight=prior_weight, cosine_weight=cosine_weight, loading_bars=False,
                              devices=devices, rerank_dtype=rerank_dtype, rerank_device_map=rerank_device_map)
    if as_json:
        click.echo(json.dumps(found.as_json(), ensure_ascii=False))
        return
    width = max((len(r.id) for r in found.results), default=2)
    for r in found.results:
        lm = f"  rerank {r.rerank_score:8.3f} ({r.name})" if found.rerank else ""
        click.echo(f"{r.rank:>3}  {r.id:<{width}}  {r.score:.4f}{lm}  {r.label}")
