"""Neighbour tables and LM-proposed negatives for the ``lemon-replaced`` and ``lm-proposed`` samplers.

The samplers themselves live in :mod:`kgprobe.linkpred.samplers`; this module holds the work they
do once, in their constructors:

* :func:`neighbour_table`: the ``k`` nearest allowed entities of every entity by frozen
  sentence-encoder vectors (one exact cosine search through :class:`kgprobe.index.VectorIndex`:
  FAISS ``IndexFlatIP`` where faiss is installed, otherwise chunked ``Q @ X.T`` + ``topk`` in
  torch; neither holds the ``N x N`` matrix).
* :func:`select_queries` / :func:`candidate_pools`: the queries ``(anchor, relation, direction)``
  of the training triples, the most frequent first, and per query a pool of candidate answers:
  the nearest neighbours of its true answers, minus every answer known to be true.
* :func:`score_pools`: a causal LM reads a verbalised query ("dog is a kind of") and scores every
  candidate name of its pool as the continuation (teacher-forced log-probabilities through
  :class:`kgprobe.models.lm.CausalLMRunner`, which runs the prompt once and reuses its key/value
  cache for the whole pool); :func:`lm_table` ranks them and caches the table in a file.

Queries are keyed ``key = (direction * E + anchor) * R + relation``: direction 0 asks for a tail
(``(h, r, ?)``, anchor ``h``: the tail is the entity replaced), direction 1 for a head
(``(?, r, t)``, anchor ``t``).
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from kgprobe.errors import KgprobeError

#: per WN18RR relation (id without its leading underscore): the prompt of a tail query and of a
#: head query, ``{}`` standing for the anchor's name; the candidate is read as the continuation
WORDNET_TEMPLATES: dict[str, tuple[str, str]] = {
    "hypernym": ("{} is a kind of", "a kind of {} is"),
    "instance_hypernym": ("{} is an instance of", "an instance of {} is"),
    "member_meronym": ("{} has the member", "{} is a member of"),
    "has_part": ("{} has the part", "{} is a part of"),
    "derivationally_related_form": ("{} is a word related in form to", "{} is a word related in form to"),
    "synset_domain_topic_of": ("{} is a term in the domain of", "a term in the domain of {} is"),
    "member_of_domain_usage": ("{} is a word of the usage", "a word of the usage {} is"),
    "member_of_domain_region": ("{} is a word used in", "a word used in {} is"),
    "verb_group": ("{} is similar in meaning to", "{} is similar in meaning to"),
    "also_see": ("{} is related to", "{} is related to"),
    "similar_to": ("{} is similar to", "{} is similar to"),
}
NAME_PARTS = ("first", "label")
SCORE_MODES = ("sum", "mean")


def _relation_key(text: str) -> str:
    return text.strip().lstrip("_").lower().replace(" ", "_").replace("-", "_")


def check_templates(templates: Any) -> dict[str, tuple[str, str]]:
    """``{relation: (tail prompt, head prompt)}`` with one ``{}`` each, or a one-line error."""
    if templates is None:
        return {}
    if not isinstance(templates, Mapping):
        raise KgprobeError(f"templates must map a relation to [tail prompt, head prompt], got {templates!r}")
    out = {}
    for rel, pair in templates.items():
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2 \
                or not all(isinstance(p, str) and p.count("{}") == 1 for p in pair):
            raise KgprobeError(f"template of relation {rel!r} must be two prompts with one '{{}}' each, got {pair!r}")
        out[_relation_key(str(rel))] = (pair[0], pair[1])
    return out


def relation_templates(relation_ids: Sequence[str], relation_labels: Sequence[str],
                       templates: Mapping[str, tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """Per relation its (tail prompt, head prompt): ``templates`` (checked by :func:`check_templates`),
    then :data:`WORDNET_TEMPLATES`, by id or label; otherwise the label itself: ``"{} LABEL"`` and
    ``"{} is the LABEL of"`` (plain, but a KG of its own deserves its own templates)."""
    given = dict(templates or {})
    out = []
    for rid, label in zip(relation_ids, relation_labels):
        found = next((table[key] for table in (given, WORDNET_TEMPLATES)
                      for key in (_relation_key(rid), _relation_key(label)) if key in table), None)
        words = str(label).strip().lstrip("_").replace("_", " ")
        out.append(found or ("{} " + words, "{} is the " + words + " of"))
    return out


def entity_names(labels: Sequence[str], part: str = "first") -> list[str]:
    """The names the LM reads: the whole label, or (``first``) the label up to its first ``", "``
    (WordNet labels list a synset's lemmas: "dog, domestic dog, Canis familiaris")."""
    if part == "label":
        return [str(x) for x in labels]
    return [str(x).split(", ")[0] for x in labels]


# ------------------------------------------------------------------ neighbours
def neighbour_table(vectors: torch.Tensor, entities: torch.Tensor, k: int, *, index_kind: str = "flat") -> torch.Tensor:
    """``(num_entities, k)`` long: every entity's ``k`` nearest entities of ``entities`` by cosine,
    nearest first, itself left out, ``-1`` where fewer exist. ``vectors`` are unit-norm rows."""
    from kgprobe.index import VectorIndex

    index = VectorIndex(vectors.shape[1], kind=index_kind, metric="cosine", device="cpu")
    index.add(vectors[entities].numpy())
    _, found = index.search(vectors.numpy(), min(k + 1, len(entities)))
    found = torch.from_numpy(found).long()
    ids = torch.where(found >= 0, entities[found.clamp_min(0)], torch.full_like(found, -1))
    ids = torch.where(ids == torch.arange(len(vectors)).unsqueeze(1), torch.full_like(ids, -1), ids)
    # move the -1 holes (self, missing) to the end of each row, keeping neighbour order
    order = torch.sort((ids < 0).to(torch.int8), dim=1, stable=True).indices
    ids = torch.gather(ids, 1, order)[:, :k]
    if ids.shape[1] < k:
        ids = torch.cat([ids, torch.full((len(ids), k - ids.shape[1]), -1, dtype=torch.long)], dim=1)
    return ids


# ------------------------------------------------------------------ queries and pools
def query_keys(triples: torch.Tensor, head_side: torch.Tensor, num_entities: int, num_relations: int) -> torch.Tensor:
    """The query key of corrupting each triple's head (``head_side`` True) or tail; ``head_side``
    broadcasts against ``triples[..., 0]``."""
    anchor = torch.where(head_side, triples[..., 2], triples[..., 0])
    return (head_side.long() * num_entities + anchor) * num_relations + triples[..., 1]


def select_queries(triples: torch.Tensor, num_entities: int, num_relations: int, max_queries: int) -> torch.Tensor:
    """Sorted keys of the (at most ``max_queries``) queries of ``triples``, both directions, that the
    most triples share (ties: the smaller key): the queries a training epoch draws most."""
    both = torch.cat([query_keys(triples, torch.zeros(len(triples), dtype=torch.bool), num_entities, num_relations),
                      query_keys(triples, torch.ones(len(triples), dtype=torch.bool), num_entities, num_relations)])
    keys, counts = torch.unique(both, return_counts=True)  # sorted by key
    order = torch.sort(-counts, stable=True).indices[:max_queries]  # most frequent, then smaller key
    return torch.sort(keys[order]).values


def decode_queries(keys: torch.Tensor, num_entities: int, num_relations: int) -> tuple[torch.Tensor, ...]:
    """``(direction, anchor, relation)`` of every key."""
    relation = keys % num_relations
    rest = torch.div(keys, num_relations, rounding_mode="floor")
    return torch.div(rest, num_entities, rounding_mode="floor"), rest % num_entities, relation


def candidate_pools(keys: torch.Tensor, triples: torch.Tensor, neighbours: torch.Tensor, known: Any,
                    pool_size: int, num_entities: int, num_relations: int) -> torch.Tensor:
    """``(len(keys), pool_size)`` long, ``-1`` padded: per query, the neighbours of its true answers
    in the training triples, by neighbour rank (the first neighbour of every answer, then the
    second, ...; ties by entity), each once, leaving out every candidate that makes a ``known``
    triple (a :class:`~kgprobe.linkpred.filters.FilterIndex`, or None). Tensor ops only: one row per
    (triple, side, neighbour), sorted twice."""
    n_e, k = num_entities, neighbours.shape[1]
    rows_q, rows_c, rows_rank = [], [], []
    for head_side in (False, True):
        side = torch.full((len(triples),), head_side)
        qk = query_keys(triples, side, n_e, num_relations)
        pos = torch.searchsorted(keys, qk).clamp_max(max(len(keys) - 1, 0))
        hit = keys[pos] == qk if len(keys) else torch.zeros(len(triples), dtype=torch.bool)
        answer = triples[hit, 0] if head_side else triples[hit, 2]
        rows_q.append(pos[hit].repeat_interleave(k))
        rows_c.append(neighbours[answer].reshape(-1))
        rows_rank.append(torch.arange(k).repeat(len(answer)))
    q, cand, rank = torch.cat(rows_q), torch.cat(rows_c), torch.cat(rows_rank)
    direction, anchor, relation = decode_queries(keys[q], n_e, num_relations)
    keep = cand >= 0
    if known is not None and len(cand):
        made = torch.stack([torch.where(direction == 1, cand, anchor), relation,
                            torch.where(direction == 1, anchor, cand)], dim=1)
        keep &= ~known.contains(made.clamp_min(0))
    q, cand, rank = q[keep], cand[keep], rank[keep]
    # each (query, candidate) once, at its best rank: sort by (query, candidate, rank), keep the firsts
    order = torch.argsort((q * n_e + cand) * k + rank)
    q, cand, rank = q[order], cand[order], rank[order]
    first = torch.ones(len(q), dtype=torch.bool)
    first[1:] = (q[1:] != q[:-1]) | (cand[1:] != cand[:-1])
    q, cand, rank = q[first], cand[first], rank[first]
    order = torch.argsort((q * k + rank) * n_e + cand)
    q, cand = q[order], cand[order]
    start = torch.searchsorted(q, torch.arange(len(keys)))
    slot = torch.arange(len(q)) - start[q]
    pools = torch.full((len(keys), pool_size), -1, dtype=torch.long)
    take = slot < pool_size
    pools[q[take], slot[take]] = cand[take]
    return pools


# ------------------------------------------------------------------ LM scoring
def query_prompts(keys: torch.Tensor, names: Sequence[str], templates: Sequence[tuple[str, str]],
                  num_entities: int, num_relations: int) -> list[str]:
    """The prompt of every query: its relation's tail or head template filled with the anchor's name."""
    direction, anchor, relation = decode_queries(keys, num_entities, num_relations)
    return [templates[r][d].format(names[a]) for d, a, r in zip(direction.tolist(), anchor.tolist(), relation.tolist())]


def score_pools(model: Any, tokenizer: Any, prompts: Sequence[str], pools: torch.Tensor, names: Sequence[str], *,
                score: str = "sum", batch_size: int | str = "auto", chunk: int = 64,
                progress: bool = False) -> torch.Tensor:
    """``(Q, P)`` float64: the LM's log-probability of every pool candidate's name (after a space) as
    the continuation of its query's prompt, summed over its tokens (``score="sum"``: how likely the
    LM completes the prompt so) or averaged (``"mean"``: no bias towards short names); ``-inf`` for
    padding. Teacher-forced through :class:`~kgprobe.models.lm.CausalLMRunner`: a query's prompt runs
    once and its key/value cache serves the whole pool in one batch; a fresh runner per ``chunk`` of
    queries, because a runner keeps the cache of every prompt it has seen."""
    from tqdm.auto import tqdm

    from kgprobe.models.lm import CausalLMRunner

    scores = torch.full(pools.shape, float("-inf"), dtype=torch.float64)
    ids = _name_tokens(tokenizer, pools, names)
    with tqdm(total=len(prompts), desc="LM negatives", unit="query", disable=not progress, leave=False) as bar:
        for start in range(0, len(prompts), chunk):  # a loop over batches of queries: each is LM work
            runner = CausalLMRunner(model, tokenizer, batch_size=batch_size)
            part = range(start, min(start + chunk, len(prompts)))
            runner.warm_prefixes([prompts[i] for i in part])  # the chunk's prompts, many per forward pass
            for i in part:
                cols = (pools[i] >= 0).nonzero().reshape(-1).tolist()
                if cols:
                    logps = runner.token_logprobs(prompts[i], [ids[int(pools[i, c])] for c in cols])
                    got = [lp.double().sum() if score == "sum" else lp.double().mean() for lp in logps]
                    scores[i, cols] = torch.stack(got)
            bar.update(len(part))
    return scores


def _name_tokens(tokenizer: Any, pools: torch.Tensor, names: Sequence[str]) -> dict[int, tuple]:
    """Token ids of " NAME" for every entity in the pools, tokenised in one batch call."""
    wanted = torch.unique(pools[pools >= 0]).tolist()
    if not wanted:
        return {}
    encoded = tokenizer([" " + names[e] for e in wanted], add_special_tokens=False)["input_ids"]
    # an empty name would give an empty continuation, which the runner skips: score a space instead
    space = tuple(tokenizer(" ", add_special_tokens=False)["input_ids"])
    return {e: tuple(ids) or space for e, ids in zip(wanted, encoded)}


@dataclass
class LmTable:
    """The LM's proposals: ``keys`` ``(Q,)`` sorted query keys, ``proposals`` ``(Q, top)`` candidates
    best first (``-1`` padded), ``scores`` their log-probabilities; ``path`` the cache file (if any)
    and ``cached`` whether it was read from there."""

    keys: torch.Tensor
    proposals: torch.Tensor
    scores: torch.Tensor
    path: Path | None = None
    cached: bool = False


def rank_pools(pools: torch.Tensor, scores: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``top`` best-scoring candidates of every pool (ties: the earlier pool column), ``-1`` padded."""
    order = torch.sort(-scores, dim=1, stable=True).indices[:, :top]
    best = torch.gather(scores, 1, order)
    picked = torch.gather(pools, 1, order)
    picked = torch.where(torch.isfinite(best), picked, torch.full_like(picked, -1))
    if picked.shape[1] < top:
        pad = top - picked.shape[1]
        picked = torch.cat([picked, torch.full((len(picked), pad), -1, dtype=torch.long)], dim=1)
        best = torch.cat([best, torch.full((len(best), pad), float("-inf"), dtype=best.dtype)], dim=1)
    return picked, best


def table_digest(lm_id: str, score: str, top: int, keys: torch.Tensor, pools: torch.Tensor,
                 prompts: Sequence[str], names: Sequence[str]) -> str:
    """sha256 over everything the table depends on: the LM, the score, ``top``, the queries, their
    pools, prompts and candidate names (so a change of triples, neighbours, filter, templates or
    names reads as another table, not a stale one)."""
    h = hashlib.sha256()
    for part in (lm_id, score, str(top)):
        h.update(part.encode() + b"\0")
    for tensor in (keys, pools):
        h.update(tensor.contiguous().numpy().tobytes())
    for text in prompts:
        h.update(text.encode() + b"\0")
    for e in torch.unique(pools[pools >= 0]).tolist():
        h.update(names[e].encode() + b"\0")
    return h.hexdigest()


def read_table(path: Path, keys: torch.Tensor, top: int) -> LmTable | None:
    """The cached table at ``path`` if it is whole and for these ``keys``, else None (recompute)."""
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        table = LmTable(data["keys"], data["proposals"], data["scores"], path=path, cached=True)
    except Exception:  # a damaged or foreign file is a miss, never an error: the table is recomputed
        return None
    if not torch.equal(table.keys, keys) or tuple(table.proposals.shape) != (len(keys), top):
        return None
    return table


def write_table(path: Path, table: LmTable) -> None:
    from kgprobe.atomic import atomic_path

    buffer = io.BytesIO()
    torch.save({"keys": table.keys, "proposals": table.proposals, "scores": table.scores}, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def lm_identity(lm: Any) -> str:
    """What names the LM in a cache key: a registry name or path with the files it resolves to, or
    for a loaded ``(model, tokenizer)`` its config name and a digest of its weights."""
    if isinstance(lm, str):
        from kgprobe.models import model_source

        return f"{lm}@{model_source(lm, kind='causal-lm')}"
    model = lm[0]
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return f"{getattr(model.config, '_name_or_path', '')}#{digest.hexdigest()}"


def lm_table(*, triples: torch.Tensor, known: Any, neighbours: torch.Tensor, names: Sequence[str],
             templates: Sequence[tuple[str, str]], num_entities: int, num_relations: int, lm: Any,
             pool_size: int, top: int, max_queries: int, score: str = "sum", batch_size: int | str = "auto",
             device: Any = "auto", cache_dir: str | Path | None = None, progress: bool = False) -> LmTable:
    """The LM-proposed negatives of the most frequent ``max_queries`` queries of ``triples``: pools
    (:func:`candidate_pools`), prompts, LM scores (:func:`score_pools`), the ``top`` best of each
    pool. With ``cache_dir`` the table is read from, or written to, a file named by
    :func:`table_digest`, so a rerun with the same settings loads it instead of running the LM.
    ``lm``: a causal-LM name for :func:`kgprobe.models.load_causal_lm`, or a loaded ``(model, tokenizer)``."""
    keys = select_queries(triples, num_entities, num_relations, max_queries)
    pools = candidate_pools(keys, triples, neighbours, known, pool_size, num_entities, num_relations)
    prompts = query_prompts(keys, names, templates, num_entities, num_relations)
    path = None
    if cache_dir is not None:
        digest = table_digest(lm_identity(lm), score, top, keys, pools, prompts, names)
        path = Path(cache_dir) / f"lm-proposed-{digest[:32]}.pt"
        cached = read_table(path, keys, top)
        if cached is not None:
            return cached
    if isinstance(lm, str):
        from kgprobe.models import load_causal_lm

        model, tokenizer = load_causal_lm(lm, device=device)
    else:
        model, tokenizer = lm
    scores = score_pools(model, tokenizer, prompts, pools, names, score=score, batch_size=batch_size,
                         progress=progress)
    proposals, best = rank_pools(pools, scores, top)
    table = LmTable(keys, proposals, best.float(), path=path)
    if path is not None:
        write_table(path, table)
    return table


__all__ = ["LmTable", "NAME_PARTS", "SCORE_MODES", "WORDNET_TEMPLATES", "candidate_pools", "check_templates",
           "decode_queries", "entity_names", "lm_identity", "lm_table", "neighbour_table", "query_keys",
           "query_prompts", "rank_pools", "read_table", "relation_templates", "score_pools", "select_queries",
           "table_digest", "write_table"]
