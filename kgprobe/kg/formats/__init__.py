"""Reading and writing knowledge graphs: one entry point, the format picked from the path.

====================  ==========================  =========================================
format                path                        keeps
====================  ==========================  =========================================
``dir``               a directory (no suffix)     everything (the main, lossless format)
``tsv``               ``.tsv``, ``.txt``          triples (+ scores); ids double as labels
``jsonl``             ``.jsonl``                  everything
``turtle``            ``.ttl``                    everything (plain RDF triples + reification)
``ntriples``          ``.nt``                     everything
``graphml``           ``.graphml``                everything XML can hold
====================  ==========================  =========================================

Every writer goes through :func:`kgprobe.atomic.atomic_path`, so a failed save never leaves a
partial file or directory behind; every reader reports problems as ``KgprobeError`` naming the
file (and line, where there is one).
"""
from __future__ import annotations

from pathlib import Path

from kgprobe.atomic import is_temporary
from kgprobe.errors import KgprobeError, warn
from kgprobe.kg.formats.graphml import from_networkx, load_graphml, save_graphml, to_networkx
from kgprobe.kg.formats.jsonl import load_jsonl, save_jsonl
from kgprobe.kg.formats.rdf import load_rdf, save_rdf
from kgprobe.kg.formats.tsv import load_dir, load_tsv, save_dir, save_tsv
from kgprobe.kg.graph import KnowledgeGraph

__all__ = ["FORMATS", "format_for", "load_kg", "save_kg", "to_networkx", "from_networkx"]

FORMATS = ("dir", "tsv", "jsonl", "turtle", "ntriples", "graphml")
SUFFIXES = {".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".ttl": "turtle", ".nt": "ntriples",
            ".graphml": "graphml"}
_FILE_FORMATS = "tsv (.tsv, .txt), jsonl (.jsonl), turtle (.ttl), ntriples (.nt), graphml (.graphml)"
_KNOWN = f"dir (a directory), {_FILE_FORMATS}"
KG_DIR_FILES = ("entities.tsv", "relations.tsv", "triples.tsv")


def format_for(path: str | Path) -> str:
    """The format a path implies: ``"dir"`` for a directory or a suffix-less path, else by suffix."""
    path = Path(path)
    if path.is_dir():
        return "dir"
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is not None:
        return fmt
    if not path.suffix and not path.exists():
        return "dir"  # a new KG directory to be written
    suffix = f"suffix {path.suffix!r}" if path.suffix else "no suffix"
    raise KgprobeError(f"unknown knowledge-graph format ({suffix}); known formats: {_KNOWN}", path=path)


def _resolve(path: Path, format: str | None) -> str:
    if format is None:
        return format_for(path)
    if format not in FORMATS:
        raise KgprobeError(f"unknown knowledge-graph format {format!r}; known formats: {_KNOWN}", path=path)
    return format


def load_kg(path: str | Path, *, format: str | None = None, progress: bool = True,
            warn_empty: bool = True) -> KnowledgeGraph:
    """Read a knowledge graph; ``format`` (one of :data:`FORMATS`) overrides the path's suffix.

    ``progress``: show a progress bar on stderr while a big RDF file is parsed. A graph without
    triples is returned with a warning on stderr (it is usually a wrong or truncated file) unless
    ``warn_empty`` is false (for callers that report an empty graph themselves).
    """
    path = Path(path)
    _check_readable(path)
    fmt = _resolve(path, format)
    if (fmt == "dir") != path.is_dir():
        kind = "a directory" if path.is_dir() else "a file"
        raise KgprobeError(f"is {kind}, which the {fmt} format cannot read", path=path)
    if fmt == "dir" and format is None and not any((path / name).exists() for name in KG_DIR_FILES):
        # No KG directory at all: most likely a folder given where a file was meant.
        meant = SUFFIXES.get(path.suffix.lower())
        expected = f"a {meant} file ({path.suffix})" if meant else f"a KG file ({_FILE_FORMATS})"
        raise KgprobeError(f"is a directory, expected {expected} or a KG directory "
                           f"(holding {', '.join(KG_DIR_FILES)})", path=path)
    try:
        kg = _load(path, fmt, progress=progress)
    except OSError as err:
        # e.g. permissions: a user problem, so one line rather than a traceback
        raise KgprobeError(f"cannot read: {err.strerror or err}", path=err.filename or path) from None
    if kg.num_triples == 0 and warn_empty:
        warn("holds no triples", path=path)
    return kg


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise KgprobeError(f"no such file or directory (expected a KG in one of: {_KNOWN})", path=path)
    # a write killed midway leaves its temporary (kgprobe.atomic): the output itself, or a KG directory's file
    for part in (path, path.parent):
        if is_temporary(part):
            raise KgprobeError("is an unfinished temporary output of an interrupted kgprobe run (it is "
                               "removed by the next run of that command)", path=path)


def _load(path: Path, fmt: str, *, progress: bool) -> KnowledgeGraph:
    if fmt == "dir":
        return load_dir(path)
    if fmt == "tsv":
        return load_tsv(path)
    if fmt == "jsonl":
        return load_jsonl(path)
    if fmt in ("turtle", "ntriples"):
        return load_rdf(path, format=fmt, progress=progress)
    return load_graphml(path)


def save_kg(kg: KnowledgeGraph, path: str | Path, *, format: str | None = None) -> Path:
    """Write ``kg`` to ``path`` (replacing it atomically) and return the path."""
    path = Path(path)
    fmt = _resolve(path, format)
    if fmt == "dir" and path.exists() and not path.is_dir():
        raise KgprobeError("is a file; a KG directory cannot replace it", path=path)
    if fmt != "dir" and path.is_dir():
        raise KgprobeError(f"is a directory; cannot write a {fmt} file there", path=path)
    try:
        if fmt == "dir":
            return save_dir(kg, path)
        if fmt == "tsv":
            return save_tsv(kg, path)
        if fmt == "jsonl":
            return save_jsonl(kg, path)
        if fmt in ("turtle", "ntriples"):
            return save_rdf(kg, path, format=fmt)
        return save_graphml(kg, path)
    except OSError as err:
        # err.filename is usually atomic_path's temporary sibling, which means nothing to the user.
        raise KgprobeError(f"cannot write: {err.strerror or err}", path=path) from None
    except UnicodeEncodeError as err:
        # Lone surrogates (from Python code, e.g. a bytes name decoded with 'surrogateescape')
        raise KgprobeError(f"cannot write: the text {err.object[max(err.start - 20, 0):err.end + 20]!r} holds "
                           f"U+{ord(err.object[err.start]):04X}, which UTF-8 cannot encode", path=path) from None
