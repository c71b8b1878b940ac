"""Inductive (unseen-entity) train/valid/test splits, following the BLP protocol.

In an inductive split the entities of the evaluation sets are *held out*: a model never sees
them during training and must embed them from their text alone (as BLP, Daza et al. 2021,
does). Entities are visited in a seeded random order and dropped from the training graph when
that keeps the training graph usable: every neighbour of a dropped entity must keep more than
``min_neighbors`` distinct neighbours, and every relation at least ``min_relation_edges``
training edges. The dropped entities' edges become the evaluation triples; most link an unseen
entity to training entities (seen-to-unseen), a few link two held-out entities of the same set.

Guarantees, which the tests check: the held-out entity sets are pairwise disjoint, no valid or
test entity occurs in a training triple, and no valid entity occurs in a test triple or vice
versa (edges between a valid and a test entity are discarded and counted). All three graphs keep
the source graph's full entity and relation tables, so indices agree across them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph

_TRAIN, _VALID, _TEST = 0, 1, 2


@dataclass(frozen=True, eq=False)
class InductiveSplit:
    """Three graphs over one entity table plus the held-out entity sets.

    ``train_entities`` are all entities not held out (including any that occur in no training
    triple); ``valid_entities`` / ``test_entities`` are the held-out ones. All three are sorted
    long tensors of indices into the shared entity table.
    """

    train: KnowledgeGraph
    valid: KnowledgeGraph
    test: KnowledgeGraph
    train_entities: torch.Tensor
    valid_entities: torch.Tensor
    test_entities: torch.Tensor
    dropped_target: int
    discarded_triples: int
    seed: int
    min_neighbors: int
    min_relation_edges: int

    def stats(self) -> dict:
        """Sizes of every part, how many triples were discarded, and target vs achieved drops."""
        dropped = len(self.valid_entities) + len(self.test_entities)
        return {
            "seed": self.seed,
            "min_neighbors": self.min_neighbors,
            "min_relation_edges": self.min_relation_edges,
            "entities": self.train.num_entities,
            "train_entities": len(self.train_entities),
            "valid_entities": len(self.valid_entities),
            "test_entities": len(self.test_entities),
            "train_triples": self.train.num_triples,
            "valid_triples": self.valid.num_triples,
            "test_triples": self.test.num_triples,
            "discarded_valid_test_triples": self.discarded_triples,
            "unseen_to_unseen_triples": {
                "valid": _count_both_held_out(self.valid, self.valid_entities),
                "test": _count_both_held_out(self.test, self.test_entities),
            },
            "dropped_target": self.dropped_target,
            "dropped_achieved": dropped,
            "dropped_short_by": max(0, self.dropped_target - dropped),
        }


def _count_both_held_out(kg: KnowledgeGraph, held_out: torch.Tensor) -> int:
    mask = torch.zeros(kg.num_entities, dtype=torch.bool)
    mask[held_out] = True
    return int((mask[kg.triples[:, 0]] & mask[kg.triples[:, 2]]).sum())


def _check_options(valid_fraction: float, test_fraction: float, min_neighbors: int,
                   min_relation_edges: int) -> None:
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1):
        raise KgprobeError(
            f"split fractions must be in [0, 1): valid={valid_fraction}, test={test_fraction}")
    if valid_fraction + test_fraction >= 1:
        raise KgprobeError(f"valid_fraction + test_fraction must be below 1, got {valid_fraction + test_fraction}")
    if min_neighbors < 0 or min_relation_edges < 0:
        raise KgprobeError("min_neighbors and min_relation_edges must not be negative")


def _choose_dropped(kg: KnowledgeGraph, order: list[int], target: int, *, min_neighbors: int,
                    min_relation_edges: int, progress: bool) -> list[int]:
    """Entities to hold out, in the order they were dropped (at most ``target``).

    The training graph is never rebuilt: each entity's distinct neighbours, each edge's
    liveness and each relation's live edge count are updated as entities are dropped, so a
    visit costs O(degree) and the whole pass stays linear in the graph size.
    """
    n = kg.num_entities
    heads, rels, tails = (kg.triples[:, k].tolist() for k in range(3))
    incident: list[list[int]] = [[] for _ in range(n)]
    neighbors: list[set[int]] = [set() for _ in range(n)]
    for edge, (h, t) in enumerate(zip(heads, tails)):
        incident[h].append(edge)
        if t != h:
            incident[t].append(edge)
            neighbors[h].add(t)
            neighbors[t].add(h)
    alive = [True] * len(heads)
    rel_count = torch.bincount(kg.triples[:, 1], minlength=kg.num_relations).tolist()

    dropped: list[int] = []
    # leave=False: a split that fails (too small a graph) leaves its one error line alone on stderr
    with tqdm(total=target, desc="inductive split", unit="entity", disable=not progress, leave=False) as bar:
        for entity in order:
            if len(dropped) >= target:
                break
            edges = [e for e in incident[entity] if alive[e]]
            # An entity without training edges would give no evaluation triple to learn from.
            if not edges:
                continue
            # Each neighbour loses exactly one neighbour (this entity), whatever the number of
            # edges between them, because neighbours are counted as a set.
            if any(len(neighbors[nb]) - 1 <= min_neighbors for nb in neighbors[entity]):
                continue
            lost: dict[int, int] = {}
            for e in edges:
                lost[rels[e]] = lost.get(rels[e], 0) + 1
            if any(rel_count[r] - k < min_relation_edges for r, k in lost.items()):
                continue
            for e in edges:
                alive[e] = False
            for r, k in lost.items():
                rel_count[r] -= k
            for nb in neighbors[entity]:
                neighbors[nb].discard(entity)
            neighbors[entity] = set()
            dropped.append(entity)
            bar.update(1)
    return dropped


def _take(kg: KnowledgeGraph, mask: torch.Tensor, name: str) -> KnowledgeGraph:
    """The triples under ``mask`` with the full entity/relation tables kept as they are."""
    idx = mask.nonzero().reshape(-1)
    provenance = None
    if kg.provenance is not None:
        provenance = tuple(kg.provenance[i] for i in idx.tolist())
    return kg.replace(
        triples=kg.triples[idx],
        scores=None if kg.scores is None else kg.scores[idx],
        provenance=provenance,
        name=name,
    )


def inductive_split(
    kg: KnowledgeGraph,
    *,
    seed: int = 0,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    min_neighbors: int = 2,
    min_relation_edges: int = 100,
    progress: bool = True,
) -> InductiveSplit:
    """Hold out ``(valid_fraction + test_fraction) * num_entities`` entities, BLP style.

    Entities are visited in the order of ``torch.randperm`` seeded with ``seed`` (same seed,
    same split) and dropped when every neighbour keeps more than ``min_neighbors`` distinct
    training neighbours and every relation keeps at least ``min_relation_edges`` training
    edges; entities with no training edge left are skipped. If candidates run out first, fewer
    are dropped and ``stats()`` says by how many. The first ``test_fraction`` share of the
    dropped entities is the test set, the rest the validation set.

    Test triples touch a test entity and no valid entity; valid triples the reverse; triples
    joining a valid and a test entity are discarded; training triples join two training
    entities.
    """
    _check_options(valid_fraction, test_fraction, min_neighbors, min_relation_edges)
    n = kg.num_entities
    share = valid_fraction + test_fraction
    target = int(round(share * n))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator).tolist()
    dropped = _choose_dropped(kg, order, target, min_neighbors=min_neighbors,
                              min_relation_edges=min_relation_edges, progress=progress)

    # Split what was achieved in the requested proportion, so a short run stays balanced.
    n_test = int(round(len(dropped) * test_fraction / share)) if share else 0
    role = torch.full((n,), _TRAIN, dtype=torch.long)
    role[torch.tensor(dropped[:n_test], dtype=torch.long)] = _TEST
    role[torch.tensor(dropped[n_test:], dtype=torch.long)] = _VALID

    head_role, tail_role = role[kg.triples[:, 0]], role[kg.triples[:, 2]]
    touches_test = (head_role == _TEST) | (tail_role == _TEST)
    touches_valid = (head_role == _VALID) | (tail_role == _VALID)
    train_mask = (head_role == _TRAIN) & (tail_role == _TRAIN)

    def members(which: int) -> torch.Tensor:
        return (role == which).nonzero().reshape(-1)

    return InductiveSplit(
        train=_take(kg, train_mask, f"{kg.name}-train"),
        valid=_take(kg, touches_valid & ~touches_test, f"{kg.name}-valid"),
        test=_take(kg, touches_test & ~touches_valid, f"{kg.name}-test"),
        train_entities=members(_TRAIN),
        valid_entities=members(_VALID),
        test_entities=members(_TEST),
        dropped_target=target,
        discarded_triples=int((touches_test & touches_valid).sum()),
        seed=seed,
        min_neighbors=min_neighbors,
        min_relation_edges=min_relation_edges,
    )
