"""The knowledge graph every kgprobe capability reads and writes.

A graph is a set of entities and relations, each with a string id and a label (entities also
carry a free-text description), plus an integer tensor of triples ``(head, relation, tail)``
indexing into those tables. Triples may carry a float ``score`` (how sure a harvester was) and a
string ``provenance`` (where a triple came from). Everything is plain data: operations return
new graphs and never mutate in place.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch

from kgprobe.errors import KgprobeError


@dataclass(frozen=True, eq=False)
class KnowledgeGraph:
    """Entities, relations and an ``(n, 3)`` long tensor of ``(head, relation, tail)`` triples.

    Invariants (checked in ``__post_init__``): ids are unique, label/description lists have one
    entry per entity/relation, every triple index is in range, and ``scores`` / ``provenance``
    are either ``None`` or have one entry per triple.
    """

    entity_ids: tuple[str, ...]
    relation_ids: tuple[str, ...]
    triples: torch.Tensor
    entity_labels: tuple[str, ...] = ()
    entity_descriptions: tuple[str, ...] = ()
    relation_labels: tuple[str, ...] = ()
    scores: torch.Tensor | None = None
    provenance: tuple[str, ...] | None = None
    name: str = "kg"
    _entity_index: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _relation_index: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "entity_ids", tuple(self.entity_ids))
        set_(self, "relation_ids", tuple(self.relation_ids))
        n_e, n_r = len(self.entity_ids), len(self.relation_ids)
        set_(self, "entity_labels", tuple(self.entity_labels) or self.entity_ids)
        set_(self, "entity_descriptions", tuple(self.entity_descriptions) or ("",) * n_e)
        set_(self, "relation_labels", tuple(self.relation_labels) or self.relation_ids)
        triples = torch.as_tensor(self.triples, dtype=torch.long).reshape(-1, 3)
        set_(self, "triples", triples)
        for what, seq, n in (("entity labels", self.entity_labels, n_e),
                             ("entity descriptions", self.entity_descriptions, n_e),
                             ("relation labels", self.relation_labels, n_r)):
            if len(seq) != n:
                raise KgprobeError(f"{what}: {len(seq)} given for {n} ids")
        ent_index = {e: i for i, e in enumerate(self.entity_ids)}
        rel_index = {r: i for i, r in enumerate(self.relation_ids)}
        if len(ent_index) != n_e:
            raise KgprobeError("entity ids are not unique")
        if len(rel_index) != n_r:
            raise KgprobeError("relation ids are not unique")
        set_(self, "_entity_index", ent_index)
        set_(self, "_relation_index", rel_index)
        if len(triples):
            if triples.min() < 0 or triples[:, [0, 2]].max() >= n_e or triples[:, 1].max() >= n_r:
                raise KgprobeError("a triple refers to an entity or relation index out of range")
        if self.scores is not None:
            scores = torch.as_tensor(self.scores, dtype=torch.float32).reshape(-1)
            if len(scores) != len(triples):
                raise KgprobeError(f"{len(scores)} scores for {len(triples)} triples")
            set_(self, "scores", scores)
        if self.provenance is not None:
            prov = tuple(self.provenance)
            if len(prov) != len(triples):
                raise KgprobeError(f"{len(prov)} provenance entries for {len(triples)} triples")
            set_(self, "provenance", prov)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_labeled_triples(
        cls,
        triples: Iterable[Sequence[str]],
        *,
        entity_labels: dict[str, str] | None = None,
        entity_descriptions: dict[str, str] | None = None,
        relation_labels: dict[str, str] | None = None,
        scores: Sequence[float] | None = None,
        provenance: Sequence[str] | None = None,
        extra_entities: Iterable[str] = (),
        name: str = "kg",
    ) -> "KnowledgeGraph":
        """Build a graph from ``(head_id, relation_id, tail_id)`` strings.

        Entities and relations are numbered in order of first appearance (entities listed in
        ``extra_entities`` and in the label/description dicts come first, in their own order),
        so the same input always gives the same indices.
        """
        ent: dict[str, int] = {}
        rel: dict[str, int] = {}
        for e in [*extra_entities, *(entity_labels or {}), *(entity_descriptions or {})]:
            ent.setdefault(e, len(ent))
        for r in relation_labels or {}:
            rel.setdefault(r, len(rel))
        rows = []
        for h, r, t in triples:
            rows.append((ent.setdefault(h, len(ent)), rel.setdefault(r, len(rel)), ent.setdefault(t, len(ent))))
        e_ids, r_ids = list(ent), list(rel)
        el, ed, rl = entity_labels or {}, entity_descriptions or {}, relation_labels or {}
        return cls(
            entity_ids=e_ids,
            relation_ids=r_ids,
            triples=torch.tensor(rows, dtype=torch.long).reshape(-1, 3),
            entity_labels=[el.get(e, e) for e in e_ids],
            entity_descriptions=[ed.get(e, "") for e in e_ids],
            relation_labels=[rl.get(r, r) for r in r_ids],
            scores=None if scores is None else list(scores),
            provenance=None if provenance is None else list(provenance),
            name=name,
        )

    def replace(self, **changes) -> "KnowledgeGraph":
        """A copy with some fields changed (the invariants are checked again)."""
        fields = dict(
            entity_ids=self.entity_ids, relation_ids=self.relation_ids, triples=self.triples,
            entity_labels=self.entity_labels, entity_descriptions=self.entity_descriptions,
            relation_labels=self.relation_labels, scores=self.scores, provenance=self.provenance,
            name=self.name,
        )
        fields.update(changes)
        return KnowledgeGraph(**fields)

    # ----------------------------------------------------------------- lookups
    @property
    def num_entities(self) -> int:
        return len(self.entity_ids)

    @property
    def num_relations(self) -> int:
        return len(self.relation_ids)

    @property
    def num_triples(self) -> int:
        return int(self.triples.shape[0])

    def entity_index(self, entity_id: str) -> int:
        try:
            return self._entity_index[entity_id]
        except KeyError:
            raise KgprobeError(f"unknown entity id {entity_id!r}") from None

    def relation_index(self, relation_id: str) -> int:
        try:
            return self._relation_index[relation_id]
        except KeyError:
            raise KgprobeError(f"unknown relation id {relation_id!r}") from None

    def labeled_triples(self) -> list[tuple[str, str, str]]:
        """The triples as ``(head_id, relation_id, tail_id)`` strings, in tensor order."""
        e, r = self.entity_ids, self.relation_ids
        return [(e[h], r[p], e[t]) for h, p, t in self.triples.tolist()]

    # ----------------------------------------------------------------- operations
    def _select_triples(self, mask_or_index: torch.Tensor) -> dict:
        idx = mask_or_index.nonzero().reshape(-1) if mask_or_index.dtype == torch.bool else mask_or_index
        return dict(
            triples=self.triples[idx],
            scores=None if self.scores is None else self.scores[idx],
            provenance=None if self.provenance is None else tuple(self.provenance[i] for i in idx.tolist()),
        )

    def dedup(self) -> "KnowledgeGraph":
        """Drop repeated triples, keeping the first occurrence (and the highest score if scored).

        With scores, rows are ordered by descending score first (stable), so the kept copy of a
        repeated triple is its best-scored one; the result keeps the original relative order.
        """
        if self.num_triples == 0:
            return self
        order = torch.arange(self.num_triples)
        if self.scores is not None:
            order = torch.sort(self.scores, descending=True, stable=True).indices
        t = self.triples[order]
        key = (t[:, 0] * self.num_relations + t[:, 1]) * self.num_entities + t[:, 2]
        uniq, inverse = torch.unique(key, return_inverse=True)
        # position of the first occurrence (in `order`) of every unique key
        pos = torch.full((len(uniq),), len(key), dtype=torch.long)
        pos.scatter_reduce_(0, inverse, torch.arange(len(key)), reduce="amin")
        keep = torch.sort(order[pos]).values
        return self.replace(**self._select_triples(keep))

    def subgraph(
        self,
        *,
        entities: Iterable[str] | None = None,
        relations: Iterable[str] | None = None,
        drop_isolated: bool = True,
    ) -> "KnowledgeGraph":
        """Triples whose head and tail are in ``entities`` and relation in ``relations``.

        With ``drop_isolated`` the entity table keeps only entities that still occur in a
        triple (plus every requested entity); relations keep their table.
        """
        mask = torch.ones(self.num_triples, dtype=torch.bool)
        keep_e = None
        if entities is not None:
            keep_e = torch.zeros(self.num_entities, dtype=torch.bool)
            keep_e[[self.entity_index(e) for e in entities]] = True
            mask &= keep_e[self.triples[:, 0]] & keep_e[self.triples[:, 2]]
        if relations is not None:
            keep_r = torch.zeros(self.num_relations, dtype=torch.bool)
            keep_r[[self.relation_index(r) for r in relations]] = True
            mask &= keep_r[self.triples[:, 1]]
        picked = self._select_triples(mask)
        if not drop_isolated:
            return self.replace(**picked)
        used = torch.zeros(self.num_entities, dtype=torch.bool)
        used[picked["triples"][:, [0, 2]].reshape(-1)] = True
        if keep_e is not None:
            used |= keep_e
        return self._reindex_entities(used, picked)

    def _reindex_entities(self, keep: torch.Tensor, picked: dict) -> "KnowledgeGraph":
        new_index = torch.full((self.num_entities,), -1, dtype=torch.long)
        kept = keep.nonzero().reshape(-1)
        new_index[kept] = torch.arange(len(kept))
        triples = picked["triples"].clone()
        triples[:, 0] = new_index[triples[:, 0]]
        triples[:, 2] = new_index[triples[:, 2]]
        k = kept.tolist()
        return self.replace(
            entity_ids=[self.entity_ids[i] for i in k],
            entity_labels=[self.entity_labels[i] for i in k],
            entity_descriptions=[self.entity_descriptions[i] for i in k],
            triples=triples, scores=picked["scores"], provenance=picked["provenance"],
        )

    def merge(self, other: "KnowledgeGraph", *, name: str | None = None) -> "KnowledgeGraph":
        """Union of two graphs by id (no dedup: call ``.dedup()`` for that).

        For an entity or relation in both graphs this graph's label wins; a missing description
        is filled from ``other``. Scores/provenance survive only if both sides have them,
        except that a missing provenance becomes the other graph's name.
        """
        e_ids = list(self.entity_ids) + [e for e in other.entity_ids if e not in self._entity_index]
        r_ids = list(self.relation_ids) + [r for r in other.relation_ids if r not in self._relation_index]
        e_pos = {e: i for i, e in enumerate(e_ids)}
        r_pos = {r: i for i, r in enumerate(r_ids)}
        e_map = torch.tensor([e_pos[e] for e in other.entity_ids], dtype=torch.long)
        r_map = torch.tensor([r_pos[r] for r in other.relation_ids], dtype=torch.long)
        ot = other.triples
        mapped = torch.stack([e_map[ot[:, 0]], r_map[ot[:, 1]], e_map[ot[:, 2]]], dim=1) if len(ot) else ot

        def pick(attr_self, attr_other, ids, idx_self, idx_other):
            return [(attr_self[idx_self[x]] if x in idx_self else "")
                    or (attr_other[idx_other[x]] if x in idx_other else "") for x in ids]

        scores = None
        if self.scores is not None and other.scores is not None:
            scores = torch.cat([self.scores, other.scores])
        provenance = None
        if self.provenance is not None or other.provenance is not None:
            provenance = (self.provenance or (self.name,) * self.num_triples) + (
                other.provenance or (other.name,) * other.num_triples)
        return KnowledgeGraph(
            entity_ids=e_ids,
            relation_ids=r_ids,
            triples=torch.cat([self.triples, mapped]),
            entity_labels=pick(self.entity_labels, other.entity_labels, e_ids, self._entity_index, other._entity_index),
            entity_descriptions=pick(self.entity_descriptions, other.entity_descriptions, e_ids,
                                     self._entity_index, other._entity_index),
            relation_labels=pick(self.relation_labels, other.relation_labels, r_ids,
                                 self._relation_index, other._relation_index),
            scores=scores,
            provenance=provenance,
            name=name or self.name,
        )

    def statistics(self) -> dict:
        """Counts a researcher checks first: sizes, per-relation triple counts, degree summary."""
        per_rel = torch.bincount(self.triples[:, 1], minlength=self.num_relations).tolist()
        degree = torch.bincount(self.triples[:, [0, 2]].reshape(-1), minlength=self.num_entities)
        described = sum(1 for d in self.entity_descriptions if d)
        stats = {
            "name": self.name,
            "entities": self.num_entities,
            "relations": self.num_relations,
            "triples": self.num_triples,
            "entities_with_description": described,
            "isolated_entities": int((degree == 0).sum()),
            "mean_degree": round(float(degree.float().mean()) if self.num_entities else 0.0, 4),
            "max_degree": int(degree.max()) if self.num_entities else 0,
            "triples_per_relation": dict(zip(self.relation_ids, per_rel)),
        }
        if self.scores is not None and self.num_triples:
            stats["score_range"] = [float(self.scores.min()), float(self.scores.max())]
        return stats

    def same_as(self, other: "KnowledgeGraph") -> bool:
        """True when both graphs hold the same entities, relations and triples (all fields)."""
        return (
            self.entity_ids == other.entity_ids
            and self.relation_ids == other.relation_ids
            and torch.equal(self.triples, other.triples)
            and self.entity_labels == other.entity_labels
            and self.entity_descriptions == other.entity_descriptions
            and self.relation_labels == other.relation_labels
            and (self.scores is None) == (other.scores is None)
            and (self.scores is None or torch.allclose(self.scores, other.scores))
            and self.provenance == other.provenance
        )
