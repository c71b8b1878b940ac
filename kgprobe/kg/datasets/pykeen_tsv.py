"""The small classic benchmarks (Nations, UMLS, Kinships) shipped inside the pykeen wheel.

Each lives as ``<pykeen>/datasets/<name>/{train,valid,test}.txt``, one tab-separated
``head relation tail`` triple per line. Reading those files directly avoids importing pykeen,
which takes seconds; the package is only located with ``importlib.util.find_spec``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph

NAMES: tuple[str, ...] = ("nations", "umls", "kinships")
SPLITS: tuple[str, ...] = ("train", "valid", "test")

DESCRIPTIONS: dict[str, str] = {
    "nations": "Nations: 14 countries and 55 political/economic relations (pykeen's copy)",
    "umls": "UMLS: 135 biomedical semantic types and 46 relations (pykeen's copy)",
    "kinships": "Kinships: 104 people of the Alyawarra and 25 kinship terms (pykeen's copy)",
}


def dataset_dir(name: str) -> Path | None:
    """``<pykeen>/datasets/<name>`` when pykeen is installed, else None (pykeen is not imported)."""
    spec = importlib.util.find_spec("pykeen")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / name


def available(name: str) -> str | None:
    """None when all three split files of ``name`` exist, else what is missing and the fix."""
    root = dataset_dir(name)
    if root is None:
        return f"the {name} dataset comes with pykeen, which is not installed: pip install pykeen"
    missing = [s for s in SPLITS if not (root / f"{s}.txt").is_file()]
    if missing:
        return (f"the {name} dataset files are missing from {root} ({', '.join(missing)}): "
                "pip install --force-reinstall pykeen")
    return None


def _read_split(path: Path) -> list[tuple[str, str, str]]:
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise KgprobeError("expected three tab-separated fields", path=path, line=line_no)
        rows.append((parts[0].strip(), parts[1].strip(), parts[2].strip()))
    return rows


def _read_all(name: str) -> dict[str, list[tuple[str, str, str]]]:
    if name not in NAMES:
        raise KgprobeError(f"unknown pykeen dataset {name!r}; known: {', '.join(NAMES)}")
    problem = available(name)
    if problem:
        raise KgprobeError(problem)
    root = dataset_dir(name)
    assert root is not None  # available() checked it
    return {split: _read_split(root / f"{split}.txt") for split in SPLITS}


def _readable(identifier: str) -> str:
    # UMLS ids are snake_case phrases ("acquired_abnormality"); text-based models want words.
    return identifier.replace("_", " ")


def load_splits(name: str) -> dict[str, KnowledgeGraph]:
    """The official train/valid/test splits of ``name`` as three graphs named ``<name>-<split>``.

    All three share one entity table and one relation table (sorted ids, identical tuples), so
    an index means the same entity in every split and transductive evaluation can compare them
    directly. Labels are the ids with ``_`` shown as spaces; there are no descriptions.
    """
    rows = _read_all(name)
    # One tuple object for all three graphs: equal ids, and no triplicated tables in memory.
    entities = tuple(sorted({e for split in rows.values() for h, _, t in split for e in (h, t)}))
    relations = tuple(sorted({r for split in rows.values() for _, r, _ in split}))
    e_index = {e: i for i, e in enumerate(entities)}
    r_index = {r: i for i, r in enumerate(relations)}
    entity_labels = tuple(_readable(e) for e in entities)
    relation_labels = tuple(_readable(r) for r in relations)
    graphs = {}
    for split, triples in rows.items():
        tensor = torch.tensor([(e_index[h], r_index[r], e_index[t]) for h, r, t in triples],
                              dtype=torch.long).reshape(-1, 3)
        graphs[split] = KnowledgeGraph(
            entity_ids=entities,
            relation_ids=relations,
            triples=tensor,
            entity_labels=entity_labels,
            relation_labels=relation_labels,
            provenance=(split,) * len(triples),
            name=f"{name}-{split}",
        )
    return graphs


def build(name: str) -> KnowledgeGraph:
    """The whole of ``name``: train, valid and test triples in that order, provenance = split."""
    splits = load_splits(name)
    train = splits["train"]
    return train.replace(
        triples=torch.cat([splits[s].triples for s in SPLITS]),
        provenance=tuple(p for s in SPLITS for p in splits[s].provenance or ()),
        name=name,
    )
