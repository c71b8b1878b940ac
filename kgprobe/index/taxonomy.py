"""Taxonomy-aware search: rank entities by the classes a descriptive query names.

A dictionary-style description names a genus and its differentiae: "a domesticated carnivorous
mammal". A sentence encoder matches such a query by its words, so the nearest WordNet labels
are the classes it mentions ("carnivorous", "domestic animal", "carnivore"), not the things
that belong to all of them. The KG's is-a edges say what belongs where: dog is a canine (a
carnivore, a mammal) and a domestic animal. So the ``m`` nearest entities are read as classes
the query names, and every entity scores the evidence of the classes it belongs to:

.. math:: s(e) = \\lambda \\cos(q, e) + \\sum_{c \\in \\mathrm{top}_m(q)} [e \\preceq c]\\,
          \\max(0, \\cos(q, c) - \\tau)

where :math:`e \\preceq c` means ``c`` is ``e`` or one of its ancestors (transitively, through
the is-a relations). An entity under several named classes (dog: domestic animal and carnivore)
outscores one under a single class, and :math:`\\lambda \\cos(q, e)` orders the members of the
same classes by their own match. Entities under none of the classes keep
:math:`\\lambda \\cos(q, e)`, so the ranking degrades to plain search when the taxonomy says
nothing. Per query the classes' evidence is one sparse-matrix product (a vector over the
entities, like a flat search's scores); only the classes' members and the plain hits are scored.

What it is worth, measured by ``eval/bench_taxonomy.py`` (``eval/results/taxonomy.json``) as a
reverse dictionary: WordNet glosses as queries against the label index (all-MiniLM-L6-v2,
117,659 synsets). The defaults (m = 10, tau = 0.4, lambda = 0.05) are the best of an 80-point
grid by validation MRR (2,000 random synsets' glosses and 716 of synsets with two parents);
on held-out queries MRR goes from 0.195 to 0.234 (1,000 random synsets) and from 0.242 to 0.371
(716 two-parent synsets), Hits@10 from 0.32 to 0.39 and from 0.40 to 0.56. For the example
above the top 5 become domestic cat, hunting dog, dog, English toy spaniel, toy spaniel (plain
search: dog 162nd). m = 5 is too few classes for such a query (dog 6th to 8th).

The taxonomy is stored beside the embeddings as ``taxonomy.npz`` (a sparse ``descendants``
matrix: row ``c`` lists every ``e`` with :math:`e \\preceq c`) by ``kgprobe embed``, which finds
the is-a relations by name (:data:`ISA_RELATION_NAMES`) unless told which to use.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from kgprobe.atomic import atomic_path
from kgprobe.errors import KgprobeError

__all__ = ["FLOOR", "ISA_RELATION_NAMES", "OWN_WEIGHT", "TAXONOMY_FILE", "TOP", "Taxonomy", "TaxonomyHits",
           "find_isa_relations", "named_classes", "taxonomy_search"]

TAXONOMY_FILE = "taxonomy.npz"
TOP = 10
FLOOR = 0.4
OWN_WEIGHT = 0.05

# is-a relations of common KGs, compared after dropping any namespace and leading "_", lower-cased:
# WordNet / WN18RR, RDF(S), Wikidata, ConceptNet. All point child -> parent (head is the narrower).
ISA_RELATION_NAMES = frozenset({"hypernym", "instance_hypernym", "subclassof", "type", "p31", "p279", "isa",
                                "is_a", "instanceof", "instance_of", "subclass_of"})


def _local_name(relation_id: str) -> str:
    return re.split(r"[/#:]", relation_id)[-1].lstrip("_").lower()


def find_isa_relations(relation_ids: Sequence[str]) -> list[str]:
    """The relations among ``relation_ids`` whose name says is-a (see :data:`ISA_RELATION_NAMES`)."""
    return [r for r in relation_ids if _local_name(r) in ISA_RELATION_NAMES]


@dataclass
class Taxonomy:
    """The reflexive-transitive closure of is-a edges over ``count`` entities.

    ``descendants[c, e] = 1`` when ``e`` is ``c`` or below it (CSR, one row per class).
    """

    descendants: sp.csr_matrix
    relations: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return int(self.descendants.shape[0])

    @classmethod
    def from_edges(cls, child: Sequence[int] | np.ndarray, parent: Sequence[int] | np.ndarray, count: int, *,
                   relations: Sequence[str] = ()) -> "Taxonomy":
        """Close child -> parent edges transitively (cycles are fine: each pair is added once).

        Level by level: ``frontier`` holds the pairs (e, c) first reached at the current depth,
        so the loop ends when a level adds nothing new, and costs one sparse product per level.
        """
        child = np.asarray(child, dtype=np.int64).reshape(-1)
        parent = np.asarray(parent, dtype=np.int64).reshape(-1)
        if len(child) != len(parent):
            raise KgprobeError(f"{len(child)} children for {len(parent)} parents")
        if len(child) and (min(child.min(), parent.min()) < 0 or max(child.max(), parent.max()) >= count):
            raise KgprobeError(f"an is-a edge refers to an entity outside 0..{count - 1}")
        up = sp.csr_matrix((np.ones(len(child), np.float32), (child, parent)), shape=(count, count))
        up.data[:] = 1
        known = sp.identity(count, dtype=np.float32, format="csr")
        frontier = known
        while True:
            frontier = frontier @ up
            frontier.data[:] = 1
            frontier = (frontier - frontier.multiply(known)).tocsr()
            frontier.eliminate_zeros()
            if frontier.nnz == 0:
                break
            known = known + frontier  # disjoint from frontier: every entry stays 1
        return cls(descendants=known.T.tocsr(), relations=list(relations))

    @classmethod
    def from_kg(cls, kg, relations: Sequence[str] | None = None) -> "Taxonomy | None":
        """The taxonomy of ``kg`` through ``relations`` (default: :func:`find_isa_relations`);
        ``None`` when the KG has none of them."""
        if relations is None:
            relations = find_isa_relations(kg.relation_ids)
        else:
            unknown = [r for r in relations if r not in kg.relation_ids]
            if unknown:
                raise KgprobeError(f"unknown relation {unknown[0]!r} for the taxonomy; the KG has: "
                                   f"{', '.join(kg.relation_ids[:12])}{' ...' if kg.num_relations > 12 else ''}")
        if not relations:
            return None
        rel = np.array([kg.relation_index(r) for r in relations])
        triples = kg.triples.numpy()
        isa = triples[np.isin(triples[:, 1], rel)]
        return cls.from_edges(isa[:, 0], isa[:, 2], kg.num_entities, relations=relations)

    def save(self, path: str | Path) -> Path:
        """Write ``descendants`` and the relation names to one ``.npz`` file, atomically."""
        path = Path(path)
        d = self.descendants
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, indptr=d.indptr.astype(np.int64), indices=d.indices.astype(np.int32),
                                    count=np.array(self.count), relations=np.array(json.dumps(self.relations)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Taxonomy":
        path = Path(path)
        try:
            with np.load(path) as z:
                indptr, indices, count = z["indptr"], z["indices"], int(z["count"])
                relations = json.loads(str(z["relations"]))
        except (OSError, KeyError, ValueError) as err:
            raise KgprobeError(f"unreadable taxonomy: {err}", path=path) from None
        if len(indptr) != count + 1 or (len(indices) and (indices.min() < 0 or indices.max() >= count)):
            raise KgprobeError(f"corrupt taxonomy: {len(indptr) - 1} rows for {count} entities", path=path)
        data = np.ones(len(indices), np.float32)
        return cls(descendants=sp.csr_matrix((data, indices, indptr), shape=(count, count)), relations=relations)

    def members(self, classes: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Entities under any of ``classes`` and the sum of the weights of the classes each is under."""
        if len(classes) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        summed = self.descendants[classes].T @ np.asarray(weights, np.float32)  # (count,): one query's vector
        rows = np.flatnonzero(summed)
        return rows, summed[rows].astype(np.float32)


def named_classes(hit_rows: np.ndarray, hit_scores: np.ndarray, *, top: int = TOP,
                  floor: float = FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """The classes a query names and their weights: the first ``top`` hits whose cosine exceeds
    ``floor``, each weighing ``cos - floor``."""
    if top <= 0:
        raise KgprobeError(f"the number of classes must be positive, got {top}")
    weights = np.asarray(hit_scores[:top], np.float32) - np.float32(floor)
    named = weights > 0
    return np.asarray(hit_rows[:top], np.int64)[named], weights[named]


class TaxonomyHits(NamedTuple):
    """One query's ranking, best first: entity rows, scores :math:`s(e)` and own cosines."""

    rows: np.ndarray
    scores: np.ndarray
    cosine: np.ndarray


def taxonomy_search(query: np.ndarray, *, hit_rows: np.ndarray, hit_scores: np.ndarray, vectors: np.ndarray,
                    taxonomy: Taxonomy, top: int = TOP, floor: float = FLOOR, own_weight: float = OWN_WEIGHT,
                    k: int | None = None) -> TaxonomyHits:
    """Entity rows, scores :math:`s(e)` (module docstring) and cosines, best first, for one query.

    ``hit_rows`` / ``hit_scores``: a plain search's result, best first, with cosine scores (the
    classes come from the first ``top``, :func:`named_classes`; the rest keep
    :math:`\\lambda \\cos`). ``vectors``: every entity's vector (rows match the taxonomy;
    normalised here, as is ``query``). Ties keep the lower row first, so the order is
    deterministic. ``k``: keep only the best ``k``.
    """
    if taxonomy.count != len(vectors):
        raise KgprobeError(f"the taxonomy covers {taxonomy.count} entities but there are {len(vectors)} vectors")
    hit_rows = np.asarray(hit_rows, np.int64)
    hit_scores = np.asarray(hit_scores, np.float32)
    member_rows, evidence = taxonomy.members(*named_classes(hit_rows, hit_scores, top=top, floor=floor))
    query = np.asarray(query, np.float32).reshape(-1)
    query = query / max(float(np.linalg.norm(query)), 1e-12)
    member_vectors = vectors[member_rows]
    member_cosine = (member_vectors @ query) / np.maximum(np.linalg.norm(member_vectors, axis=1), 1e-12)
    rest = ~np.isin(hit_rows, member_rows)
    rows = np.concatenate([member_rows, hit_rows[rest]])
    cosine = np.concatenate([member_cosine, hit_scores[rest]]).astype(np.float32)
    scores = (own_weight * cosine + np.concatenate([evidence, np.zeros(int(rest.sum()), np.float32)])).astype(
        np.float32)
    order = np.lexsort((rows, -scores))[:k]
    return TaxonomyHits(rows[order], scores[order], cosine[order])
