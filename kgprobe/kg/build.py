"""Build a named dataset and write it: the one code path behind ``kgprobe data build`` and the
``build_dataset`` pipeline step.

Layout of ``OUT`` (a KG directory, see ``kgprobe.kg.formats``), and with an inductive split also::

    OUT/train/ OUT/valid/ OUT/test/      one KG directory per split: its triples and their entities
    OUT/{train,valid,test}_entities.txt  the split's own entities, one id a line (pairwise disjoint)
    OUT/split.json                       sizes, seed, and how many entities/edges were dropped

Valid and test triples join an unseen entity to training entities (seen-to-unseen, as in BLP),
so the split's *own* entity sets are the disjoint ones: no valid or test entity occurs in a train
triple, and no valid entity in a test triple nor the other way round.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from kgprobe.atomic import atomic_path
from kgprobe.kg.datasets import build_dataset
from kgprobe.kg.formats import save_kg
from kgprobe.kg.graph import KnowledgeGraph


def split_parts(split: Any) -> dict[str, tuple[KnowledgeGraph, torch.Tensor]]:
    """``{"train": (graph, own entity indices), ...}`` for an ``InductiveSplit``."""
    return {
        "train": (split.train, split.train_entities),
        "valid": (split.valid, split.valid_entities),
        "test": (split.test, split.test_entities),
    }


def write_split(split: Any, out: Path) -> None:
    """Write the three splits of an ``InductiveSplit`` into ``out`` (which must exist)."""
    for part, (graph, own) in split_parts(split).items():
        ids = [graph.entity_ids[i] for i in own.tolist()]
        save_kg(graph.subgraph(drop_isolated=True), out / part)
        (out / f"{part}_entities.txt").write_text("".join(f"{e}\n" for e in ids), encoding="utf-8")
    (out / "split.json").write_text(json.dumps(split.stats(), indent=2) + "\n", encoding="utf-8")


def build_and_save(
    name: str,
    out: str | Path,
    *,
    inductive: bool = False,
    seed: int = 0,
    progress: bool = True,
    options: dict[str, Any] | None = None,
) -> tuple[KnowledgeGraph, Any]:
    """Build dataset ``name``, write it (and its inductive split) to ``out`` atomically.

    Returns the graph and the split (``None`` unless ``inductive``).
    """
    from kgprobe.kg.split import inductive_split

    kg = build_dataset(name, **(options or {}))
    split = inductive_split(kg, seed=seed, progress=progress) if inductive else None
    out = Path(out)
    with atomic_path(out, directory=True) as tmp:
        save_kg(kg, tmp, format="dir")
        if split is not None:
            write_split(split, tmp)
    return kg, split
