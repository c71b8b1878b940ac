"""Where a KG comes from, and one KG file turned into another: the library behind ``kgprobe embed KG``
(:func:`load_kg_source`) and ``kgprobe kg convert`` (:func:`convert_kg`).

A *KG source* is a path that :func:`kgprobe.kg.formats.load_kg` reads (a KG directory, ``.tsv``,
``.jsonl``, ``.ttl``, ``.nt``, ``.graphml``) or ``dataset:NAME``, a bundled dataset built on the
fly (:data:`kgprobe.kg.datasets.DATASETS`, e.g. ``dataset:wordnet``).
"""
from __future__ import annotations

from pathlib import Path

from kgprobe.kg.formats import format_for, load_kg, save_kg
from kgprobe.kg.graph import KnowledgeGraph
from kgprobe.outdir import check_output_file

#: the start of a KG source that names a bundled dataset: ``dataset:nations``
DATASET_PREFIX = "dataset:"


def load_kg_source(source: str | Path) -> KnowledgeGraph:
    """The KG ``source`` names: ``dataset:NAME`` (a string) is built on the fly, anything else is
    read from that path. Every problem (unknown dataset, missing or malformed file) is a ``KgprobeError``."""
    if isinstance(source, str) and source.startswith(DATASET_PREFIX):
        from kgprobe.kg.datasets import build_dataset  # looked up when called: tests replace it

        return build_dataset(source[len(DATASET_PREFIX):])
    return load_kg(Path(source))


def convert_kg(source: str | Path, target: str | Path, *, source_format: str | None = None,
               target_format: str | None = None, overwrite: bool = False) -> tuple[KnowledgeGraph, Path]:
    """Read the KG at ``source`` and write it to ``target``; return the graph and the path written.

    The formats come from the paths' suffixes unless given (one of :data:`kgprobe.kg.formats.FORMATS`).
    An existing target *file* is replaced (atomically) only with ``overwrite``, checked before
    ``source`` is read; a KG directory target follows :func:`kgprobe.kg.formats.save_kg`'s own rule
    whatever ``overwrite`` says (an earlier KG directory is replaced, any other non-empty folder refused).
    """
    target = Path(target)
    if (target_format or format_for(target)) != "dir":
        check_output_file(target, overwrite=overwrite)
    graph = load_kg(Path(source), format=source_format)
    return graph, save_kg(graph, target, format=target_format)


__all__ = ["DATASET_PREFIX", "convert_kg", "load_kg_source"]
