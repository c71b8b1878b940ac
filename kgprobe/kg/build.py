"""Build a named dataset and write it: the one code path behind ``kgprobe data build`` and the
``build_dataset`` pipeline step.

Layout of ``OUT`` (a KG directory, see ``kgprobe.kg.formats``), and with an inductive split also::

    OUT/train/ OUT/valid/ OUT/test/      one KG directory per split: its triples and their entities
    OUT/{train,valid,test}_entities.txt  the split's own entities, one id a line (pairwise disjoint)
    OUT/split.json                       sizes, seed, and how many entities/edges were dropped
    OUT/build.json                       what was built (dataset, options, seed, inductive)

``build.json`` lets a pipeline that is run again (or on another machine that lacks the dataset's
sources, e.g. a GPU box with no WordNet install) reuse the directory instead of rebuilding it.

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
from kgprobe.errors import KgprobeError
from kgprobe.kg.datasets import build_dataset
from kgprobe.kg.formats import save_kg
from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.outdir import check_output_dir, write_marker


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


BUILD_FILE = "build.json"
COMMAND = "data build"


def _check_split(name: str, split: Any) -> None:
    """An inductive split without held-out entities evaluates nothing: say so instead of writing it."""
    empty = [part for part in ("valid", "test") if not len(split_parts(split)[part][1])]
    if empty:
        raise KgprobeError(f"dataset {name!r} is too small for an inductive split: no {' and no '.join(empty)} "
                           f"entities could be held out (every held-out entity must leave its neighbours more "
                           f"than 2 neighbours and each relation 100 edges)")


def build_record(name: str, *, inductive: bool, seed: int, options: dict[str, Any] | None) -> dict:
    """What ``OUT/build.json`` holds: everything that decides the directory's content."""
    return {"dataset": name, "inductive": bool(inductive), "seed": int(seed) if inductive else None,
            "options": dict(options or {})}


def find_built(name: str, out: str | Path, *, inductive: bool = False, seed: int = 0,
               options: dict[str, Any] | None = None) -> Path | None:
    """``out`` when it holds a finished build of exactly this request (per ``build.json``), else None."""
    out = Path(out)
    try:
        record = json.loads((out / BUILD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return out if record == build_record(name, inductive=inductive, seed=seed, options=options) else None


def load_built(out: str | Path, *, inductive: bool) -> tuple[KnowledgeGraph, dict[str, KnowledgeGraph]]:
    """The whole graph and (when ``inductive``) the train / valid / test graphs of a build directory."""
    from kgprobe.kg.formats import load_kg

    out = Path(out)
    parts = {part: load_kg(out / part) for part in ("train", "valid", "test")} if inductive else {}
    return load_kg(out), parts


def build_and_save(
    name: str,
    out: str | Path,
    *,
    inductive: bool = False,
    seed: int = 0,
    progress: bool = True,
    options: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> tuple[KnowledgeGraph, Any]:
    """Build dataset ``name``, write it (and its inductive split) to ``out`` atomically.

    ``out`` may be new, empty or an earlier build (replaced); anything else needs ``overwrite``
    (see :mod:`kgprobe.outdir`). Returns the graph and the split (``None`` unless ``inductive``).
    """
    from kgprobe.kg.datasets import check_dataset
    from kgprobe.kg.split import inductive_split

    out = Path(out)
    check_dataset(name, **(options or {}))  # the likelier mistake first
    check_output_dir(out, command=COMMAND, overwrite=overwrite)
    kg = build_dataset(name, **(options or {}))
    split = inductive_split(kg, seed=seed, progress=progress) if inductive else None
    if split is not None:
        _check_split(name, split)
    with atomic_path(out, directory=True) as tmp:
        save_kg(kg, tmp, format="dir")
        write_marker(tmp, COMMAND)
        if split is not None:
            write_split(split, tmp)
        record = build_record(name, inductive=inductive, seed=seed, options=options)
        (tmp / BUILD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return kg, split
