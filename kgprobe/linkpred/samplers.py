"""Negative samplers: corrupt the head or the tail of every positive triple ``K`` times.

``sampler.sample(batch, K)`` returns ``(B, K, 3)`` negative triples; ``sample_negatives``
returns a :class:`Negatives` record with the same triples plus a ``mask`` of usable entries
and, for ``in-batch``, the positions of the replacement entities in the batch's entity list
(``cat([heads, tails])``), which is the index form a trainer uses to reuse already encoded
entities. Sampling is pure tensor work: no Python loop runs over the triples of a batch, and
everything a sampler needs (cluster pools, neighbour lists, relation statistics, known triples)
is computed once in its constructor.

Registered names (``get_sampler(name, **kwargs)``; ``build_sampler(name, split, options)`` lets
the class take what it needs from an inductive split, see :meth:`NegativeSampler.from_split`):

``in-batch``  BLP: the replacement comes from the *other* triples of the batch (never the
              triple's own head or tail), so training needs no extra encoder passes;
              ``self_negatives=n`` adds the kept entity itself as ``n`` of them
              (``self_relations="asymmetric"``: only for the mostly one-way relations);
              ``replacement=False`` draws the batch's positions without replacement.
``uniform``   A uniformly random entity of the allowed set (``entities=``, e.g. the training
              entities of an inductive split; default all).
``bernoulli`` Uniform entities, but the head is replaced with probability
              ``tph / (tph + hpt)`` of the triple's relation (Wang et al. 2014; PyKEEN's
              ``bernoulli``), see :func:`~kgprobe.linkpred.data.head_corruption_probability`.
``lemon``     LEMON: entity texts embedded once by a frozen sentence encoder
              (:func:`kgprobe.index.embed_kg`), k-means over the allowed entities (15 clusters,
              full vectors: the original's 2-D PCA is not done, it throws most of the signal
              away), and the replacement is drawn from the clusters nearest to the *kept*
              entity (3 by default, optionally only those with cosine >= ``threshold``).
``knn-hard``  The replacement is one of the ``k`` nearest allowed entities of the kept entity
              by the same frozen embeddings (:class:`kgprobe.index.VectorIndex`).
``lemon-replaced``  A LEMON variant: the replacement is one of the ``k`` nearest allowed entities
              of the entity it *replaces* (not of the kept one), known triples filtered, uniform
              draws when too few survive (``uniform_share``: a fixed share uniform anyway).
``lm-proposed``  The wrong completions a causal LM prefers: per query ``(h, r, ?)`` / ``(?, r, t)``
              the LM scores a pool of candidates (the ``lemon-replaced`` neighbours of the true
              answers) in a verbalised prompt; its best-scoring non-answers are the negatives
              (a table built once, cached in a file; other queries fall back to ``lemon-replaced``).
              Both: :mod:`kgprobe.linkpred.lm_negatives`.
``given``     User-supplied negatives: a tensor ``(N, K, 3)`` aligned with the training triples,
              a dict with ``positives``/``negatives``, or a file
              (:func:`~kgprobe.linkpred.data.load_negatives`).

Every sampler discards the positive itself (a replacement equal to the replaced entity) and,
with ``filtered=True`` (the default for ``lemon``, ``lemon-replaced`` and ``lm-proposed`` only),
every known true triple (the training triples plus ``filter_triples``): such entries are redrawn
up to ``filter_rounds`` times, then drawn uniformly (LEMON's fallback; not for ``in-batch``, whose
point is to stay inside the batch), and whatever is still not a true negative is flagged
``mask == False``. BLP's original had no false-negative filter; here a round costs one
``searchsorted`` over the known triples (:class:`~kgprobe.linkpred.filters.FilterIndex`).

Side choice (``side=``): ``both`` (head or tail with probability 1/2 per negative, BLP and
LEMON), ``head``, ``tail`` or ``bernoulli``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from kgprobe.errors import KgprobeError
from kgprobe.linkpred.data import SplitData, as_triples, head_corruption_probability, load_negatives, triple_keys
from kgprobe.linkpred.filters import FilterIndex
from kgprobe.linkpred.lm_negatives import (
    NAME_PARTS,
    SCORE_MODES,
    check_templates,
    entity_names,
    lm_table,
    neighbour_table,
    query_keys,
    relation_templates,
)
from kgprobe.models.memory import resolve_batch_size
from kgprobe.models.registry import DEFAULT_CAUSAL_LM, DEFAULT_SENTENCE_ENCODER, kgprobe_home
from kgprobe.registry import Registry

SIDES = ("both", "head", "tail", "bernoulli")
SELF_RELATIONS = ("all", "asymmetric")
#: a relation with at least this share of mutual training triples counts as symmetric
SYMMETRIC_SHARE = 0.5


@dataclass
class Negatives:
    """Sampled negatives of a batch of ``B`` positives.

    ``triples`` ``(B, K, 3)``; ``mask`` ``(B, K)`` bool, False where no true negative could be
    found (such entries hold a placeholder and must not be trained on); ``corrupt_head``
    ``(B, K)`` bool; ``batch_positions`` ``(B, K)`` long, only for ``in-batch``: the index of the
    replacement in ``cat([batch[:, 0], batch[:, 2]])``.
    """

    triples: torch.Tensor
    mask: torch.Tensor
    corrupt_head: torch.Tensor
    batch_positions: torch.Tensor | None = None

    @property
    def entities(self) -> torch.Tensor:
        """``(B, K)`` replacement entities."""
        return torch.where(self.corrupt_head, self.triples[..., 0], self.triples[..., 2])


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise KgprobeError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


class NegativeSampler:
    """Base class. Subclasses implement ``_draw`` (replacement entities, ``-1`` for none)."""

    name = "base"
    #: whether entries without a candidate or a true negative get a uniform draw
    uniform_fallback = True
    #: whether :func:`check_sampler_options` may build one over a 2-entity graph to check option
    #: values (not when building needs a frozen encoder or data of its own)
    cheap_to_check: ClassVar[bool] = True

    @classmethod
    def loads_model(cls, options: Mapping[str, Any]) -> str | None:
        """The pretrained model (registry name, directory or hub id) building the sampler loads, if any."""
        return None

    @classmethod
    def check_values(cls, options: Mapping[str, Any]) -> None:
        """Option values checked without building the sampler (for those not ``cheap_to_check``);
        one-line :class:`KgprobeError` on a bad one. Nothing to check here."""

    def __init__(
        self,
        *,
        num_entities: int | None = None,
        num_relations: int | None = None,
        triples: Any = None,
        kg: Any = None,
        entities: Any = None,
        side: str = "both",
        filtered: bool = False,
        filter_triples: Any = None,
        filter_rounds: int = 3,
    ):
        if kg is not None:
            num_entities = kg.num_entities if num_entities is None else num_entities
            num_relations = kg.num_relations if num_relations is None else num_relations
            triples = kg.triples if triples is None else triples
        self.kg = kg
        if num_entities is None:
            raise KgprobeError(f"the {self.name} sampler needs num_entities (or kg=...)")
        self.num_entities = _positive_int(num_entities, "num_entities")
        self.triples = None if triples is None else as_triples(triples, what="training triples")
        extra = None if filter_triples is None else as_triples(filter_triples, what="filter triples")
        if num_relations is None:
            known_r = [int(t[:, 1].max()) + 1 for t in (self.triples, extra) if t is not None and len(t)]
            num_relations = max(known_r, default=1)
        self.num_relations = _positive_int(num_relations, "num_relations")
        if side not in SIDES:
            raise KgprobeError(f"unknown side {side!r}; choose one of: {', '.join(SIDES)}")
        self.side = side
        if entities is None:
            self.entities = torch.arange(self.num_entities)
        else:
            self.entities = torch.unique(torch.as_tensor(entities, dtype=torch.long).reshape(-1))
            if not len(self.entities):
                raise KgprobeError("the allowed entity set is empty")
            if self.entities.min() < 0 or self.entities.max() >= self.num_entities:
                raise KgprobeError("an allowed entity index is out of range")
        self.head_probability: torch.Tensor | None = None
        if side == "bernoulli":
            if self.triples is None:
                raise KgprobeError("bernoulli corruption needs the training triples (triples=... or kg=...)")
            self.head_probability = head_corruption_probability(self.triples, self.num_relations)
        self.filter_rounds = max(0, int(filter_rounds))
        self.known: FilterIndex | None = None
        if filtered:
            parts = [t for t in (self.triples, extra) if t is not None]
            if not parts:
                raise KgprobeError("filtered sampling needs known triples (triples=..., kg=... or filter_triples=...)")
            self.known = FilterIndex.from_triples(*parts, num_entities=self.num_entities,
                                                  num_relations=self.num_relations)

    @classmethod
    def split_inputs(cls, split: SplitData, *, progress: bool = False) -> dict[str, Any]:
        """What this sampler takes from an inductive split: the entity and relation counts and the
        whole training part (known positives and relation statistics are facts of the split, also
        when a run trains on a subset), and the training entities as the allowed replacements."""
        graph = split.graph
        return {"num_entities": graph.num_entities, "num_relations": graph.num_relations,
                "triples": split.triples["train"], "entities": split.entities["train"]}

    @classmethod
    def from_split(cls, split: SplitData, options: Mapping[str, Any] | None = None, *,
                   progress: bool = False) -> "NegativeSampler":
        """The sampler of a run on ``split``: :meth:`split_inputs`, then the run's ``options`` on top."""
        return cls(**{**cls.split_inputs(split, progress=progress), **dict(options or {})})

    # ----------------------------------------------------------------- public API
    def sample(self, batch: Any, num_negatives: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(B, K, 3)`` negatives of the ``(B, 3)`` positives ``batch``."""
        return self.sample_negatives(batch, num_negatives, generator=generator).triples

    def sample_negatives(self, batch: Any, num_negatives: int, *,
                         generator: torch.Generator | None = None) -> Negatives:
        """Negatives with their usability mask (and batch positions for ``in-batch``)."""
        batch = self._check_batch(batch)
        k = _positive_int(num_negatives, "number of negatives")
        corrupt_head = self._sides(batch, k, generator)
        entities, positions = self._draw(batch, corrupt_head, generator)
        replaced = torch.where(corrupt_head, batch[:, 0:1], batch[:, 2:3])
        bad = self._bad(batch, corrupt_head, entities, replaced)
        for _ in range(self.filter_rounds):
            if not bad.any():
                break
            again, again_pos = self._draw(batch, corrupt_head, generator)
            take = bad & (again >= 0)
            entities = torch.where(take, again, entities)
            if positions is not None and again_pos is not None:
                positions = torch.where(take, again_pos, positions)
            bad = self._bad(batch, corrupt_head, entities, replaced)
        if self.uniform_fallback:
            for _ in range(max(1, self.filter_rounds)):
                if not bad.any():
                    break
                entities = torch.where(bad, self._uniform(bad.shape, generator), entities)
                bad = self._bad(batch, corrupt_head, entities, replaced)
        # placeholders for entries that stay unusable: the replaced entity itself (masked out)
        entities = torch.where(entities >= 0, entities, replaced)
        return Negatives(triples=self._corrupt(batch, corrupt_head, entities), mask=~bad,
                         corrupt_head=corrupt_head, batch_positions=positions)

    def describe(self) -> dict:
        return {"sampler": self.name, "side": self.side, "filtered": self.known is not None,
                "allowed_entities": int(len(self.entities))}

    # ----------------------------------------------------------------- helpers
    def _check_batch(self, batch: Any) -> torch.Tensor:
        batch = as_triples(batch, what="batch")
        if len(batch) and (batch[:, [0, 2]].max() >= self.num_entities or batch[:, 1].max() >= self.num_relations
                           or batch.min() < 0):
            raise KgprobeError("a batch triple refers to an entity or relation index out of range")
        return batch

    def _sides(self, batch: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
        shape = (len(batch), k)
        if self.side == "head":
            return torch.ones(shape, dtype=torch.bool)
        if self.side == "tail":
            return torch.zeros(shape, dtype=torch.bool)
        draw = torch.rand(shape, generator=generator)
        if self.side == "bernoulli":
            return draw < self.head_probability[batch[:, 1]].unsqueeze(1)
        return draw < 0.5

    def _uniform(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        return self.entities[torch.randint(len(self.entities), shape, generator=generator)]

    @staticmethod
    def _corrupt(batch: torch.Tensor, corrupt_head: torch.Tensor, entities: torch.Tensor) -> torch.Tensor:
        b = batch.unsqueeze(1).expand(-1, corrupt_head.shape[1], -1)
        heads = torch.where(corrupt_head, entities, b[..., 0])
        tails = torch.where(corrupt_head, b[..., 2], entities)
        return torch.stack([heads, b[..., 1], tails], dim=-1)

    def _bad(self, batch: torch.Tensor, corrupt_head: torch.Tensor, entities: torch.Tensor,
             replaced: torch.Tensor) -> torch.Tensor:
        """Entries that are not (yet) a usable negative: none drawn, the positive, or known true."""
        bad = (entities < 0) | (entities == replaced)
        if self.known is not None:
            bad |= self._known(self._corrupt(batch, corrupt_head, entities.clamp_min(0)))
        return bad

    def _known(self, triples: torch.Tensor) -> torch.Tensor:
        """Which of a ``(..., 3)`` tensor of triples are known true triples."""
        return self.known.contains(triples.reshape(-1, 3)).reshape(triples.shape[:-1])

    def _draw(self, batch: torch.Tensor, corrupt_head: torch.Tensor,
              generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, K)`` replacement entities (``-1`` where there is no candidate) and optional positions."""
        raise NotImplementedError


class UniformSampler(NegativeSampler):
    """A uniformly random allowed entity replaces the head or the tail (PyKEEN's ``basic``)."""

    name = "uniform"

    def _draw(self, batch, corrupt_head, generator):
        return self._uniform(corrupt_head.shape, generator), None


class BernoulliSampler(UniformSampler):
    """Uniform entities; head vs tail chosen by the relation's ``tph / (tph + hpt)``."""

    name = "bernoulli"

    def __init__(self, *, side: str = "bernoulli", **kwargs: Any):
        super().__init__(side=side, **kwargs)


def mutual_share(triples: torch.Tensor, num_relations: int) -> torch.Tensor:
    """``(num_relations,)`` float: per relation, the share of its triples ``(h, r, t)`` whose reverse
    ``(t, r, h)`` is also among ``triples`` (1 for a symmetric relation, 0 for an antisymmetric
    one; 0 for a relation without triples). Tensor ops over the keys, no loop."""
    num_entities = int(triples[:, [0, 2]].max()) + 1 if len(triples) else 1
    keys = triple_keys(triples, num_entities, num_relations)
    found = torch.isin(triple_keys(triples[:, [2, 1, 0]], num_entities, num_relations), keys).float()
    count = torch.bincount(triples[:, 1], minlength=num_relations).float()
    return torch.bincount(triples[:, 1], weights=found, minlength=num_relations) / count.clamp_min(1.0)


class InBatchSampler(NegativeSampler):
    """BLP's negatives: replacements are the heads and tails of the *other* triples of the batch.

    For triple ``i`` of a batch of ``B`` the batch entity list is ``cat([heads, tails])``
    (length ``2B``); a position is drawn uniformly from the ``2B - 2`` positions other than
    ``i`` and ``B + i`` (the triple's own head and tail). A batch of one triple has no
    candidates: its entries come back masked. ``entities=`` does not apply (the batch decides).

    ``self_negatives=n`` (not in BLP) makes the first ``n`` of the ``K`` negatives the *kept*
    entity itself: ``(h, r, h)`` when the tail is replaced, ``(t, r, t)`` when the head is. BLP's
    draw never offers them, so nothing teaches the model that an entity is not related to itself,
    and TransE on unit vectors then ranks the query entity first (``h + r`` lies nearest to ``h``
    when ``r`` is short): a bag-of-words BLP on the WordNet split put the head first for 98.7 % of
    test tail queries, which caps Hits@1 near zero. They cost nothing extra (the kept entity is in
    the batch) and are dropped like any negative that is a known triple (a KG with self-loops).

    ``replacement=False`` draws the positions without replacement: a random order of the
    ``2B - 2`` others, cycled when ``K`` is larger, so ``K = 2B - 2`` offers every other entity of
    the batch exactly once (a softmax loss such as ``infonce`` then sees the whole batch, as in
    SimKGC); with replacement that many draws cover about 63 % of them.

    ``self_relations="asymmetric"`` gives self-negatives only to triples of relations whose
    training triples are mostly one-way: the share of ``(h, r, t)`` whose reverse ``(t, r, h)``
    is also a training triple is below ``SYMMETRIC_SHARE`` (1/2); the others keep ordinary
    in-batch draws. TransE scores a symmetric relation best with ``r = 0`` (``h + r = t`` and
    ``t + r = h``), where the entity itself is as close as its answer, so a self-negative there
    asks the impossible: on the WordNet split (derivationally_related_form, similar_to,
    verb_group, also_see: shares 0.79-1.0; the other seven 0) a MiniLM BLP with self-negatives for
    every relation (and 24 epochs instead of 16) gained test Hits@1 (0.106 -> 0.160) but lost
    Hits@10 (0.550 -> 0.485); only for the asymmetric ones, a CPU pilot gained both ways.
    """

    name = "in-batch"
    uniform_fallback = False

    @classmethod
    def split_inputs(cls, split, *, progress=False):
        """As every sampler, without the allowed entities: the batch decides."""
        inputs = super().split_inputs(split, progress=progress)
        del inputs["entities"]
        return inputs

    def __init__(self, *, self_negatives: int = 0, self_relations: str = "all", replacement: bool = True,
                 **kwargs: Any):
        super().__init__(**kwargs)
        if not isinstance(replacement, bool):
            raise KgprobeError(f"replacement must be true or false, got {replacement!r}")
        self.replacement = replacement
        if isinstance(self_negatives, bool) or not isinstance(self_negatives, (int, np.integer)) \
                or self_negatives < 0:
            raise KgprobeError(f"self_negatives must be a non-negative integer, got {self_negatives!r}")
        if self_relations not in SELF_RELATIONS:
            raise KgprobeError(f"self_relations must be one of: {', '.join(SELF_RELATIONS)}; got {self_relations!r}")
        self.self_negatives = int(self_negatives)
        self.self_relations = self_relations
        #: ``(num_relations,)`` bool: which relations' triples get self-negatives
        self.self_allowed = torch.ones(self.num_relations, dtype=torch.bool)
        if self_relations == "asymmetric":
            if self.triples is None:
                raise KgprobeError("self_relations='asymmetric' needs the training triples (triples=... or kg=...)")
            self.self_allowed = mutual_share(self.triples, self.num_relations) < SYMMETRIC_SHARE

    def describe(self) -> dict:
        out = {**super().describe(), "self_negatives": self.self_negatives}
        if not self.replacement:
            out["replacement"] = False
        if self.self_relations != "all":
            out["self_relations"] = self.self_relations
            out["relations_without_self_negatives"] = torch.nonzero(~self.self_allowed).flatten().tolist()
        return out

    def _draw(self, batch, corrupt_head, generator):
        b, k = corrupt_head.shape
        if b < 2:
            return torch.full((b, k), -1, dtype=torch.long), torch.zeros((b, k), dtype=torch.long)
        own = torch.arange(b).unsqueeze(1)
        if self.replacement:
            pos = torch.randint(2 * b - 2, (b, k), generator=generator)
        else:  # each row a random order of the 2B - 2 others, cycled up to K
            pos = torch.rand((b, 2 * b - 2), generator=generator).argsort(dim=1)
            pos = pos.repeat(1, -(-k // (2 * b - 2)))[:, :k]
        pos = pos + (pos >= own).long()
        pos = pos + (pos >= own + b).long()
        n = min(self.self_negatives, k)
        if n:  # the kept entity: the tail (position B + i) when the head is replaced, else the head
            kept = torch.where(corrupt_head[:, :n], own + b, own)
            allowed = self.self_allowed[batch[:, 1]].unsqueeze(1)
            pos[:, :n] = torch.where(allowed, kept, pos[:, :n])
        pool = torch.cat([batch[:, 0], batch[:, 2]])
        return pool[pos], pos


class _FrozenVectorSampler(NegativeSampler):
    """A sampler whose replacements come from frozen text embeddings of the entities."""

    cheap_to_check = False

    @classmethod
    def loads_model(cls, options: Mapping[str, Any]) -> str | None:
        """The sentence encoder that embeds the entities: the ``model`` option or the default."""
        return options.get("model", DEFAULT_SENTENCE_ENCODER)

    @classmethod
    def split_inputs(cls, split, *, progress=False):
        """As every sampler, plus the whole graph to embed (with a progress bar when ``progress``)."""
        return {**super().split_inputs(split, progress=progress), "kg": split.graph, "progress": progress}


def _frozen_vectors(*, vectors: Any, kg: Any, num_entities: int, model: str, text: str, encoder: Any,
                    device: Any, cache: Any, progress: bool) -> torch.Tensor:
    """Unit-norm ``(num_entities, d)`` float32 vectors: given, or embedded from ``kg`` once."""
    if vectors is None:
        if kg is None:
            raise KgprobeError("this sampler needs entity vectors (vectors=...) or a graph to embed (kg=...)")
        from kgprobe.index import embed_kg

        vectors = embed_kg(kg, model=model, text=text, encoder=encoder, device=device, cache=cache,
                           progress=progress).vectors
    if hasattr(vectors, "vectors") and not isinstance(vectors, (torch.Tensor, np.ndarray)):
        vectors = vectors.vectors  # EntityEmbeddings
    tensor = torch.as_tensor(np.asarray(vectors.detach().cpu() if isinstance(vectors, torch.Tensor) else vectors),
                             dtype=torch.float32)
    if tensor.ndim != 2 or len(tensor) != num_entities:
        raise KgprobeError(f"entity vectors must have shape ({num_entities}, dim), got {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise KgprobeError("entity vectors contain NaN or infinite values")
    return torch.nn.functional.normalize(tensor, dim=1)


class LemonSampler(_FrozenVectorSampler):
    """LEMON negatives: replacements from the k-means clusters nearest to the kept entity.

    Built once: the allowed entities' vectors are clustered (spherical k-means, ``n_clusters``,
    seeded); every entity gets its ``n_nearest`` nearest centroids by cosine (those below
    ``threshold`` dropped when one is set); entities with the same set of clusters share one
    candidate pool, the union of those clusters' members. Pools are stored in CSR form
    (``pool_ptr``, ``pool_members``) with ``entity_pool`` mapping every entity to its pool, so a
    draw is ``members[ptr[pool] + floor(u * size)]``: a few gathers for the whole batch. Sharing
    pools keeps memory at (distinct pools x pool size) instead of (entities x pool size). An
    entity whose clusters all fall below the threshold has an empty pool and gets uniform draws.
    Unlike the other samplers, ``filtered`` defaults to True here whenever triples are known
    (LEMON removes known true triples from its negatives).
    """

    name = "lemon"

    def __init__(self, *, vectors: Any = None, n_clusters: int = 15, n_nearest: int = 3,
                 threshold: float | None = None, model: str = DEFAULT_SENTENCE_ENCODER, text: str = "both",
                 encoder: Any = None, device: Any = "auto", cache: Any = True, seed: int = 0,
                 niter: int = 20, progress: bool = False, **kwargs: Any):
        # LEMON removes known true triples from its negatives: on by default when triples are known
        if kwargs.get("filtered") is None:
            kwargs["filtered"] = any(kwargs.get(k) is not None for k in ("triples", "kg", "filter_triples"))
        super().__init__(**kwargs)
        n_clusters = _positive_int(n_clusters, "n_clusters")
        n_nearest = _positive_int(n_nearest, "n_nearest")
        if n_nearest > n_clusters:
            raise KgprobeError(f"n_nearest ({n_nearest}) cannot exceed n_clusters ({n_clusters})")
        if n_clusters > len(self.entities):
            raise KgprobeError(f"cannot make {n_clusters} clusters from {len(self.entities)} allowed entities")
        self.vectors = _frozen_vectors(vectors=vectors, kg=self.kg, num_entities=self.num_entities, model=model,
                                       text=text, encoder=encoder, device=device, cache=cache, progress=progress)
        from kgprobe.index import kmeans, nearest_clusters

        clustering = kmeans(self.vectors[self.entities].numpy(), n_clusters, seed=seed, niter=niter, spherical=True)
        self.n_clusters, self.n_nearest, self.threshold = n_clusters, n_nearest, threshold
        self.centroids = torch.nn.functional.normalize(torch.from_numpy(clustering.centroids), dim=1)
        #: cluster of every entity (-1 for entities outside the allowed set)
        self.assignments = torch.full((self.num_entities,), -1, dtype=torch.long)
        self.assignments[self.entities] = torch.from_numpy(clustering.assignments).long()
        sims, near = nearest_clusters(self.vectors, self.centroids, n_nearest, metric="cosine", return_scores=True)
        if threshold is not None:
            near = torch.where(sims >= float(threshold), near, torch.full_like(near, -1))
        #: the nearest clusters of every entity, nearest first, -1 where below the threshold
        self.nearest = near
        pools, self.entity_pool = torch.unique(torch.sort(near, dim=1).values, dim=0, return_inverse=True)
        # members of every cluster, grouped: cluster c owns by_cluster[c_ptr[c]:c_ptr[c+1]]
        order = torch.sort(self.assignments[self.entities], stable=True).indices
        by_cluster = self.entities[order]
        sizes = torch.bincount(self.assignments[self.entities], minlength=n_clusters)
        c_ptr = torch.zeros(n_clusters + 1, dtype=torch.long)
        c_ptr[1:] = torch.cumsum(sizes, 0)
        chunks, pool_sizes = [], []
        for row in pools.tolist():  # once per distinct pool (at most sum_j C(n_clusters, j)), not per triple
            parts = [by_cluster[c_ptr[c]:c_ptr[c + 1]] for c in row if c >= 0]
            members = torch.sort(torch.cat(parts)).values if parts else torch.zeros(0, dtype=torch.long)
            chunks.append(members)
            pool_sizes.append(len(members))
        self.pool_ptr = torch.zeros(len(pools) + 1, dtype=torch.long)
        self.pool_ptr[1:] = torch.cumsum(torch.tensor(pool_sizes, dtype=torch.long), 0)
        index_dtype = torch.int32 if self.num_entities < 2 ** 31 else torch.long
        self.pool_members = torch.cat(chunks).to(index_dtype) if chunks else torch.zeros(0, dtype=index_dtype)

    def candidate_pool(self, entity: int) -> torch.Tensor:
        """The sorted candidate replacements for a kept ``entity``."""
        pool = int(self.entity_pool[entity])
        return self.pool_members[self.pool_ptr[pool]:self.pool_ptr[pool + 1]].long()

    def _draw(self, batch, corrupt_head, generator):
        kept = torch.where(corrupt_head, batch[:, 2:3], batch[:, 0:1])
        pool = self.entity_pool[kept]
        start = self.pool_ptr[pool]
        size = self.pool_ptr[pool + 1] - start
        offset = (torch.rand(kept.shape, generator=generator, dtype=torch.float64) * size).long()
        offset = torch.minimum(offset, (size - 1).clamp_min(0))
        picked = self.pool_members[(start + offset).clamp_max(max(len(self.pool_members) - 1, 0))].long() \
            if len(self.pool_members) else torch.full_like(kept, -1)
        return torch.where(size > 0, picked, torch.full_like(picked, -1)), None

    def describe(self) -> dict:
        sizes = (self.pool_ptr[1:] - self.pool_ptr[:-1]).float()
        return {**super().describe(), "n_clusters": self.n_clusters, "n_nearest": self.n_nearest,
                "threshold": self.threshold, "pools": int(len(sizes)),
                "mean_pool_size": round(float(sizes.mean()), 2) if len(sizes) else 0.0}


class KnnHardSampler(_FrozenVectorSampler):
    """Hard negatives: one of the ``k`` nearest allowed entities of the kept entity.

    Neighbours come from one exact cosine search of every entity against the allowed entities
    (:func:`~kgprobe.linkpred.lm_negatives.neighbour_table`), done once; the entity itself is
    removed from its own list. Rows with fewer than ``k`` neighbours are padded with ``-1`` (uniform draws there).
    """

    name = "knn-hard"

    def __init__(self, *, vectors: Any = None, k: int = 32, model: str = DEFAULT_SENTENCE_ENCODER, text: str = "both",
                 encoder: Any = None, device: Any = "auto", cache: Any = True, index_kind: str = "flat",
                 progress: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.k = _positive_int(k, "k")
        self.vectors = _frozen_vectors(vectors=vectors, kg=self.kg, num_entities=self.num_entities, model=model,
                                       text=text, encoder=encoder, device=device, cache=cache, progress=progress)
        #: ``(num_entities, k)`` nearest allowed entities of every entity, nearest first
        self.neighbors = neighbour_table(self.vectors, self.entities, self.k, index_kind=index_kind)

    def _draw(self, batch, corrupt_head, generator):
        kept = torch.where(corrupt_head, batch[:, 2:3], batch[:, 0:1])
        column = torch.randint(self.k, kept.shape, generator=generator)
        return self.neighbors[kept, column], None

    def describe(self) -> dict:
        return {**super().describe(), "k": self.k}


def _share(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0 <= float(value) <= 1:
        raise KgprobeError(f"{what} must be a number from 0 to 1, got {value!r}")
    return float(value)


def _choice(value: Any, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise KgprobeError(f"{what} must be one of: {', '.join(choices)}; got {value!r}")
    return value


class LemonReplacedSampler(_FrozenVectorSampler):
    """LEMON variant ``lemon-replaced``: replacements resemble the entity they *replace*.

    LEMON as published (``lemon``) draws from the clusters nearest to the entity the triple
    keeps, so ``(dog, hypernym, ?)`` gets dog-like tails (puppy, cat) where a hard negative is a
    canine-like one (feline, wolf). Here the candidates of a head corruption are the ``k`` nearest
    allowed entities of the true head, of a tail corruption those of the true tail, by the same
    frozen sentence-encoder vectors (one top-k table, :func:`~kgprobe.linkpred.lm_negatives.neighbour_table`).

    Per batch row and side the candidates that would give a known triple (``filtered``, on by
    default as in LEMON) or the positive are dropped and the rest shuffled; the row's negatives on
    that side take them in turn, each once, and when fewer survive than the side needs the rest are
    uniform draws. ``uniform_share`` (0 to 1, default 0) makes that share of every row's ``K``
    negatives (its last ``round(share x K)``) uniform anyway: a mix of hard and easy negatives.
    Deterministic given the generator.
    """

    name = "lemon-replaced"

    @classmethod
    def check_values(cls, options: Mapping[str, Any]) -> None:
        """One-line errors for bad option values, without building anything (no encoder runs)."""
        if "k" in options:
            _positive_int(options["k"], "k")
        if "uniform_share" in options:
            _share(options["uniform_share"], "uniform_share")

    def __init__(self, *, vectors: Any = None, k: int = 32, uniform_share: float = 0.0,
                 model: str = DEFAULT_SENTENCE_ENCODER, text: str = "both", encoder: Any = None, device: Any = "auto",
                 cache: Any = True, index_kind: str = "flat", progress: bool = False, **kwargs: Any):
        # as LEMON: known true triples are not negatives, on by default when triples are known
        if kwargs.get("filtered") is None:
            kwargs["filtered"] = any(kwargs.get(x) is not None for x in ("triples", "kg", "filter_triples"))
        super().__init__(**kwargs)
        self.k = _positive_int(k, "k")
        self.uniform_share = _share(uniform_share, "uniform_share")
        self.vectors = _frozen_vectors(vectors=vectors, kg=self.kg, num_entities=self.num_entities, model=model,
                                       text=text, encoder=encoder, device=device, cache=cache, progress=progress)
        #: ``(num_entities, k)`` nearest allowed entities of every entity, nearest first, -1 padded
        self.neighbors = neighbour_table(self.vectors, self.entities, self.k, index_kind=index_kind)

    def describe(self) -> dict:
        return {**super().describe(), "k": self.k, "uniform_share": self.uniform_share}

    def _usable(self, batch: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """``(B, 2, C)`` bool for candidates ``(B, 2, C)`` (side 0 replaces the tail, side 1 the
        head): drawn, not the replaced entity, and (``filtered``) not making a known triple."""
        h, r, t = (batch[:, i].view(-1, 1, 1).expand_as(cand) for i in range(3))
        head_side = torch.tensor([False, True]).view(1, 2, 1)
        ok = (cand >= 0) & (cand != torch.where(head_side, h, t))
        if self.known is not None and cand.numel():
            c = cand.clamp_min(0)
            ok &= ~self._known(torch.stack([torch.where(head_side, c, h), r, torch.where(head_side, t, c)], dim=-1))
        return ok

    def _neighbour_lists(self, batch: torch.Tensor, generator: torch.Generator | None):
        """Per row and side the usable neighbours of the replaced entity in random order, ``-1``
        holes last ``(B, 2, k)``, and how many there are ``(B, 2)``."""
        cand = torch.stack([self.neighbors[batch[:, 2]], self.neighbors[batch[:, 0]]], dim=1)
        ok = self._usable(batch, cand)
        keys = torch.rand(cand.shape, generator=generator) + (~ok).float() * 2  # unusable ones sort last
        order = torch.argsort(keys, dim=-1, stable=True)
        return torch.gather(torch.where(ok, cand, -1), -1, order), ok.sum(-1)

    def _take(self, lists: torch.Tensor, counts: torch.Tensor, corrupt_head: torch.Tensor,
              generator: torch.Generator | None) -> torch.Tensor:
        """``(B, K)`` replacements: a row's n-th negative on a side takes that side's n-th listed
        candidate while there are any (and it is not in the uniform share), else a uniform draw."""
        b, k = corrupt_head.shape
        side = corrupt_head.long()
        picking = torch.arange(k) < k - round(self.uniform_share * k)
        per_side = torch.nn.functional.one_hot(side, 2) * picking.view(1, k, 1)
        rank = torch.gather(per_side.cumsum(1) - 1, 2, side.unsqueeze(-1)).squeeze(-1)
        use = picking.unsqueeze(0) & (rank < torch.gather(counts, 1, side))
        picked = lists[torch.arange(b).unsqueeze(1), side, rank.clamp(0, max(lists.shape[-1] - 1, 0))] \
            if lists.shape[-1] else torch.full((b, k), -1, dtype=torch.long)
        return torch.where(use, picked, self._uniform((b, k), generator))

    def _draw(self, batch, corrupt_head, generator):
        lists, counts = self._neighbour_lists(batch, generator)
        return self._take(lists, counts, corrupt_head, generator), None


class LmProposedSampler(LemonReplacedSampler):
    """``lm-proposed``: the wrong answers a causal LM itself would give.

    For a query ``(h, r, ?)`` (or ``(?, r, t)``) the LM reads a verbalised prompt ("dog is a kind
    of"; per relation a tail and a head template, :data:`~kgprobe.linkpred.lm_negatives.WORDNET_TEMPLATES`
    for WordNet's relations, ``templates`` for others) and scores every candidate of a pool as its
    continuation: the ``pool_size`` nearest neighbours of the query's true answers (those of
    ``lemon-replaced``) minus every known answer. Its ``top`` best-scoring candidates become the
    query's negatives, best first: a row's n-th negative on that side takes the n-th proposal, and
    uniform draws follow once they run out (``uniform_share`` as in ``lemon-replaced``).

    The table is built once, for the ``max_queries`` queries the most training triples share
    (:func:`~kgprobe.linkpred.lm_negatives.lm_table`: one forward pass per query over its pool with
    the prompt's key/value cache reused, a progress bar), and kept in ``cache_dir`` (default
    ``$KGPROBE_HOME/lm_negatives``; ``table_cache=False``: not kept) under a name that digests every
    input of it, so a rerun loads it. Rows of other queries get ``lemon-replaced`` negatives.
    ``lm``: a causal-LM name (default ``smollm2-135m``) or a loaded ``(model, tokenizer)``;
    ``score``: ``sum`` (the log-probability of the name) or ``mean`` (per token); ``names``:
    ``first`` (a label up to its first ", ") or ``label``. Deterministic given the generator.
    """

    name = "lm-proposed"

    @classmethod
    def loads_model(cls, options: Mapping[str, Any]) -> str | None:
        """The causal LM (the sentence encoder of the pools is loaded too: the ``model`` option)."""
        lm = options.get("lm", DEFAULT_CAUSAL_LM)
        return lm if isinstance(lm, str) else None

    @classmethod
    def check_values(cls, options: Mapping[str, Any]) -> None:
        super().check_values(options)
        for key in ("pool_size", "top", "max_queries"):
            if key in options:
                _positive_int(options[key], key)
        _choice(options.get("score", "sum"), SCORE_MODES, "score")
        _choice(options.get("names", "first"), NAME_PARTS, "names")
        check_templates(options.get("templates"))
        lm = options.get("lm", DEFAULT_CAUSAL_LM)
        if not isinstance(lm, str) and not (isinstance(lm, (tuple, list)) and len(lm) == 2):
            raise KgprobeError(f"lm must be a causal-LM name or a (model, tokenizer) pair, got {type(lm).__name__}")
        resolve_batch_size(options.get("lm_batch_size", "auto"), what="lm_batch_size")
        if not isinstance(options.get("table_cache", True), bool):
            raise KgprobeError(f"table_cache must be true or false, got {options['table_cache']!r}")

    def __init__(self, *, lm: Any = DEFAULT_CAUSAL_LM, pool_size: int = 32, top: int = 16, max_queries: int = 5000,
                 score: str = "sum", names: str = "first", templates: Mapping[str, Any] | None = None,
                 lm_device: Any = "auto", lm_batch_size: int | str = "auto", table_cache: bool = True,
                 cache_dir: str | Path | None = None, progress: bool = False, **kwargs: Any):
        type(self).check_values({"lm": lm, "pool_size": pool_size, "top": top, "max_queries": max_queries,
                                 "score": score, "names": names, "templates": templates,
                                 "lm_batch_size": lm_batch_size, "table_cache": table_cache})
        super().__init__(progress=progress, **kwargs)
        if self.kg is None or self.triples is None:
            raise KgprobeError("the lm-proposed sampler needs the graph (kg=...): its names, relation labels and "
                               "triples make the prompts")
        self.lm_name = lm if isinstance(lm, str) else type(lm[0]).__name__
        self.pool_size, self.top, self.max_queries, self.score = pool_size, top, max_queries, score
        # the pools leave out known answers even when sampling is unfiltered: a true answer is no proposal
        known = self.known if self.known is not None else FilterIndex.from_triples(
            self.triples, num_entities=self.num_entities, num_relations=self.num_relations)
        directory = None if not table_cache else Path(cache_dir) if cache_dir is not None \
            else kgprobe_home() / "lm_negatives"
        start = time.perf_counter()
        #: the LM's proposals per query (:class:`~kgprobe.linkpred.lm_negatives.LmTable`)
        self.table = lm_table(
            triples=self.triples, known=known, neighbours=self.neighbors,
            names=entity_names(self.kg.entity_labels, names),
            templates=relation_templates(self.kg.relation_ids, self.kg.relation_labels, check_templates(templates)),
            num_entities=self.num_entities, num_relations=self.num_relations, lm=lm, pool_size=pool_size, top=top,
            max_queries=max_queries, score=score, batch_size=lm_batch_size, device=lm_device, cache_dir=directory,
            progress=progress)
        self.table_seconds = time.perf_counter() - start

    def describe(self) -> dict:
        return {**super().describe(), "lm": self.lm_name, "pool_size": self.pool_size, "top": self.top,
                "score": self.score, "queries": int(len(self.table.keys)), "table_cached": self.table.cached,
                "table_seconds": round(self.table_seconds, 2),
                "table_file": None if self.table.path is None else str(self.table.path)}

    def _proposal_lists(self, batch: torch.Tensor):
        """Per row and side the usable LM proposals, best first, ``-1`` holes last ``(B, 2, top)``,
        their counts ``(B, 2)``, and whether the query has any (else ``lemon-replaced`` serves it)."""
        sides = [torch.full((len(batch),), head) for head in (False, True)]
        keys = torch.stack([query_keys(batch, s, self.num_entities, self.num_relations) for s in sides], dim=1)
        table = self.table
        if not len(table.keys):
            return torch.full((len(batch), 2, self.top), -1), torch.zeros((len(batch), 2), dtype=torch.long), \
                torch.zeros((len(batch), 2), dtype=torch.bool)
        pos = torch.searchsorted(table.keys, keys).clamp_max(len(table.keys) - 1)
        cand = table.proposals[pos]
        ok = self._usable(batch, cand) & (table.keys[pos] == keys).unsqueeze(-1)
        order = torch.sort((~ok).to(torch.int8), dim=-1, stable=True).indices  # keeps the LM's order
        counts = ok.sum(-1)
        return torch.gather(torch.where(ok, cand, -1), -1, order), counts, counts > 0

    def _draw(self, batch, corrupt_head, generator):
        lists, counts = self._neighbour_lists(batch, generator)
        proposed, proposed_counts, covered = self._proposal_lists(batch)
        width = max(lists.shape[-1], proposed.shape[-1])
        lists, proposed = (torch.nn.functional.pad(x, (0, width - x.shape[-1]), value=-1) for x in (lists, proposed))
        lists = torch.where(covered.unsqueeze(-1), proposed, lists)
        counts = torch.where(covered, proposed_counts, counts)
        return self._take(lists, counts, corrupt_head, generator), None


class GivenSampler(NegativeSampler):
    """User-supplied negatives, looked up by positive triple.

    ``negatives`` is a tensor ``(N, K0, 3)``, a dict ``{"positives", "negatives"}`` or a file
    path (see :func:`~kgprobe.linkpred.data.load_negatives`). Without ``positives`` row ``i``
    belongs to training triple ``i`` (``triples=`` / ``kg=``). For a batch, ``K`` of a
    positive's ``K0`` negatives are used: all in order when ``K == K0``, a random subset when
    ``K < K0``, random draws with repetition when ``K > K0``. Positives without given negatives
    get uniform ones. With ``filtered=True`` given negatives that are known triples are masked.
    """

    name = "given"
    cheap_to_check = False

    def __init__(self, *, negatives: Any, **kwargs: Any):
        super().__init__(**kwargs)
        positives, table = load_negatives(negatives)
        if positives is None:
            if self.triples is None or len(self.triples) != len(table):
                have = "no training triples" if self.triples is None else f"{len(self.triples)} training triples"
                raise KgprobeError(f"{len(table)} rows of negatives without their positives, and {have} to align "
                                   "them with (give positives, or one row per training triple)")
            positives = self.triples
        for what, t in (("positives", positives), ("negatives", table.reshape(-1, 3))):
            if len(t) and (t[:, [0, 2]].max() >= self.num_entities or t[:, 1].max() >= self.num_relations
                           or t.min() < 0):
                raise KgprobeError(f"given {what} refer to an entity or relation index out of range")
        keys = triple_keys(positives, self.num_entities, self.num_relations)
        self.keys, order = torch.sort(keys)
        self.table = table[order]

    def sample_negatives(self, batch, num_negatives, *, generator=None):
        batch = self._check_batch(batch)
        k = _positive_int(num_negatives, "number of negatives")
        b, k0 = len(batch), self.table.shape[1]
        keys = triple_keys(batch, self.num_entities, self.num_relations)
        row = torch.searchsorted(self.keys, keys).clamp_max(max(len(self.keys) - 1, 0))
        found = self.keys[row] == keys if len(self.keys) else torch.zeros(b, dtype=torch.bool)
        if k == k0:
            cols = torch.arange(k).expand(b, k)
        elif k < k0:
            cols = torch.argsort(torch.rand((b, k0), generator=generator), dim=1)[:, :k]
        else:
            cols = torch.randint(k0, (b, k), generator=generator)
        given = self.table[row.unsqueeze(1), cols]
        # positives without given negatives: uniform corruption of head or tail
        fallback = super().sample_negatives(batch, k, generator=generator)
        triples = torch.where(found.view(b, 1, 1), given, fallback.triples)
        mask = torch.where(found.view(b, 1), (given != batch.unsqueeze(1)).any(dim=-1), fallback.mask)
        if self.known is not None:
            mask &= ~(found.view(b, 1) & self._known(given))
        corrupt_head = torch.where(found.view(b, 1), given[..., 0] != batch[:, 0:1], fallback.corrupt_head)
        return Negatives(triples=triples, mask=mask, corrupt_head=corrupt_head)

    def _draw(self, batch, corrupt_head, generator):
        return self._uniform(corrupt_head.shape, generator), None


SAMPLERS: dict[str, type[NegativeSampler]] = {
    "in-batch": InBatchSampler,
    "uniform": UniformSampler,
    "bernoulli": BernoulliSampler,
    "lemon": LemonSampler,
    "knn-hard": KnnHardSampler,
    "lemon-replaced": LemonReplacedSampler,
    "lm-proposed": LmProposedSampler,
    "given": GivenSampler,
}
SAMPLER_REGISTRY = Registry("negative sampler", NegativeSampler, SAMPLERS)


def get_sampler(name: str | type[NegativeSampler] | NegativeSampler, **kwargs: Any) -> NegativeSampler:
    """A sampler by registry name, class or instance (an instance is returned as it is).

    >>> get_sampler("in-batch", num_entities=kg.num_entities)
    >>> get_sampler("bernoulli", kg=split.train, entities=split.train_entities, filtered=True)
    >>> get_sampler("lemon", kg=split.train, entities=split.train_entities, n_clusters=15, n_nearest=3)
    """
    return SAMPLER_REGISTRY.make(name, **kwargs)


def build_sampler(name: str | type[NegativeSampler], split: SplitData, options: Mapping[str, Any] | None = None, *,
                  progress: bool = False) -> NegativeSampler:
    """The sampler ``name`` of a run on ``split``, built by its class (see
    :meth:`NegativeSampler.from_split`): the one way training and the benchmarks build it.

    >>> build_sampler("lemon", split, {"n_clusters": 15, "n_nearest": 3})
    """
    return SAMPLER_REGISTRY.lookup(name).from_split(split, options, progress=progress)


def check_sampler_options(name: str, options: dict[str, Any]) -> None:
    """Fail before any data loads on options ``name`` does not take, and, for the samplers that
    are cheap to build (``cheap_to_check``: no frozen encoder), on bad values: build one over a
    2-entity graph; the others check what they can without building (:meth:`NegativeSampler.check_values`)."""
    cls = SAMPLER_REGISTRY.check_options(name, options)
    cls.check_values(options)
    if cls.cheap_to_check:
        cls(**{"num_entities": 2, "num_relations": 1, "triples": torch.tensor([[0, 0, 1]]), **options})


__all__ = ["BernoulliSampler", "GivenSampler", "InBatchSampler", "KnnHardSampler", "LemonReplacedSampler",
           "LemonSampler", "LmProposedSampler", "Negatives",
           "NegativeSampler", "SAMPLERS", "SAMPLER_REGISTRY", "SIDES", "UniformSampler", "build_sampler",
           "check_sampler_options", "get_sampler", "mutual_share"]
