"""Tab-separated formats: the lossless KG directory and PyKEEN-style plain triple files.

A KG directory holds ``entities.tsv``, ``relations.tsv``, ``triples.tsv`` and ``meta.json``.
Text fields are escaped (``\\t``, ``\\n``, ``\\r``, ``\\\\``) so that any string survives a
round trip; the same escaping is used by plain triple files, where it only ever matters for ids
with tabs, newlines or backslashes in them (and a leading ``#``, written ``\\#``).

The small text helpers here (reading UTF-8 lines, escaping) are shared with the other formats.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator, Sequence

import torch

from kgprobe.atomic import atomic_path
from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph

ENTITY_COLUMNS = ("id", "label", "description")
RELATION_COLUMNS = ("id", "label")
TRIPLE_COLUMNS = ("head", "relation", "tail")
OPTIONAL_TRIPLE_COLUMNS = ("score", "provenance")
META_FORMAT = "kgprobe-kg"
META_VERSION = 1

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "#": "#"}
_ESCAPE_SEQUENCE = re.compile(r"\\(.)", re.DOTALL)


# --------------------------------------------------------------------------- shared helpers
def escape(text: str) -> str:
    """Escape backslashes, tabs and line breaks so ``text`` fits in one TSV field."""
    return text.translate(_ESCAPES)


def unescape(field: str) -> str:
    """Undo :func:`escape`; unknown escape sequences are kept as written."""
    if "\\" not in field:  # the common case, and much cheaper than the regex
        return field
    return _ESCAPE_SEQUENCE.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(0)), field)


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file, without line endings (``\\n`` or ``\\r\\n``).

    Only ``\\n`` ends a line: ``str.splitlines`` would also split on characters such as
    U+2028 that are legal inside a field.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise KgprobeError(f"not valid UTF-8 text ({err.reason})", path=path, line=line) from None
    lines = text.split("\n")
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _is_blank(line: str) -> bool:
    # A row of empty fields still has tabs, so only tab-free whitespace counts as blank.
    return "\t" not in line and not line.strip()


def _rows(lines: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
    """``(line number, raw fields)`` for every non-blank line."""
    for number, line in enumerate(lines, 1):
        if not _is_blank(line):
            yield number, line.split("\t")


def shorten(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: error messages echo fields of any size."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(columns: Sequence[str]) -> str:
    text = ", ".join(columns)
    return text if len(text) <= 200 else text[:197] + "..."


def _expect_header(path: Path, rows: Iterator[tuple[int, list[str]]],
                   columns: Sequence[str]) -> tuple[int, list[str]]:
    try:
        number, fields = next(rows)
    except StopIteration:
        raise KgprobeError(f"empty file, expected a header line with columns {_describe(columns)}",
                           path=path, line=1) from None
    if fields[: len(columns)] != list(columns):
        raise KgprobeError(f"expected a header line with columns {_describe(columns)}, "
                           f"got {_describe(fields)}", path=path, line=number)
    return number, fields


def _check_width(path: Path, number: int, fields: list[str], columns: Sequence[str]) -> None:
    if len(fields) != len(columns):
        raise KgprobeError(f"expected {len(columns)} tab-separated fields ({_describe(columns)}), "
                           f"got {len(fields)}", path=path, line=number)


def _parse_score(path: Path, number: int, field: str) -> float:
    try:
        return float(field)
    except ValueError:
        raise KgprobeError(f"score {shorten(field)} is not a number", path=path, line=number) from None


def score_strings(scores: torch.Tensor) -> list[str]:
    """Scores as the shortest decimal strings that read back to the same float32 values."""
    return scores.numpy().astype(str).tolist()


def _write_text(path: Path, lines: list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(line + "\n" for line in lines))


# --------------------------------------------------------------------------- KG directory
def save_dir(kg: KnowledgeGraph, target: str | Path) -> Path:
    """Write ``kg`` as a KG directory (replacing an existing KG directory as a whole, atomically)."""
    target = Path(target)
    if target.is_dir() and any(target.iterdir()) and not (target / "entities.tsv").is_file():
        # Replacing means deleting the old directory: never do that to an arbitrary folder.
        raise KgprobeError("is a non-empty directory that is not a KG directory; refusing to replace it",
                           path=target)
    with atomic_path(target, directory=True) as tmp:
        _write_text(tmp / "entities.tsv", ["\t".join(ENTITY_COLUMNS)] + [
            f"{escape(e)}\t{escape(label)}\t{escape(desc)}"
            for e, label, desc in zip(kg.entity_ids, kg.entity_labels, kg.entity_descriptions)])
        _write_text(tmp / "relations.tsv", ["\t".join(RELATION_COLUMNS)] + [
            f"{escape(r)}\t{escape(label)}" for r, label in zip(kg.relation_ids, kg.relation_labels)])
        _write_text(tmp / "triples.tsv", triple_lines(kg, header=True, provenance=True))
        meta = {"name": kg.name, "format": META_FORMAT, "version": META_VERSION,
                "statistics": kg.statistics()}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    return target


def triple_lines(kg: KnowledgeGraph, *, header: bool, provenance: bool) -> list[str]:
    """Escaped ``head, relation, tail[, score][, provenance]`` lines, optionally with a header."""
    entities = [escape(e) for e in kg.entity_ids]
    relations = [escape(r) for r in kg.relation_ids]
    columns: list[list[str]] = [
        [entities[i] for i in kg.triples[:, 0].tolist()],
        [relations[i] for i in kg.triples[:, 1].tolist()],
        [entities[i] for i in kg.triples[:, 2].tolist()],
    ]
    names = list(TRIPLE_COLUMNS)
    if kg.scores is not None:
        names.append("score")
        columns.append(score_strings(kg.scores))
    if provenance and kg.provenance is not None:
        names.append("provenance")
        columns.append([escape(p) for p in kg.provenance])
    # Plain triple files treat '#' lines as comments, so a head id starting with '#' becomes '\#'
    # (in a KG directory too, so that its triples.tsv can be read as a plain file).
    lines = [("\\" + line) if line.startswith("#") else line for line in map("\t".join, zip(*columns))]
    return (["\t".join(names)] if header else []) + lines


def load_dir(directory: str | Path) -> KnowledgeGraph:
    """Read a KG directory written by :func:`save_dir`, checking every line."""
    directory = Path(directory)
    for name in ("entities.tsv", "relations.tsv", "triples.tsv"):
        if not (directory / name).is_file():
            raise KgprobeError(f"not a KG directory: {name} is missing", path=directory)
    entity_ids, labels, descriptions = _read_table(directory / "entities.tsv", ENTITY_COLUMNS, "entity")
    relation_ids, relation_labels = _read_table(directory / "relations.tsv", RELATION_COLUMNS, "relation")
    triples, scores, provenance = _read_triples(
        directory / "triples.tsv",
        {e: i for i, e in enumerate(entity_ids)},
        {r: i for i, r in enumerate(relation_ids)},
    )
    return KnowledgeGraph(
        entity_ids=entity_ids, relation_ids=relation_ids, triples=triples,
        entity_labels=labels, entity_descriptions=descriptions, relation_labels=relation_labels,
        scores=scores, provenance=provenance, name=_read_meta(directory / "meta.json", directory.name),
    )


def _read_table(path: Path, columns: Sequence[str], what: str) -> list[list[str]]:
    """The columns of ``entities.tsv`` / ``relations.tsv``, unescaped; ids must be unique."""
    rows = _rows(read_lines(path))
    header_line, header = _expect_header(path, rows, columns)
    _check_width(path, header_line, header, columns)
    table: list[list[str]] = [[] for _ in columns]
    seen: dict[str, int] = {}
    for number, fields in rows:
        _check_width(path, number, fields, columns)
        key = unescape(fields[0])
        if key in seen:
            raise KgprobeError(f"duplicate {what} id {shorten(key)} (first on line {seen[key]})",
                               path=path, line=number)
        seen[key] = number
        table[0].append(key)
        for column, field in zip(table[1:], fields[1:]):
            column.append(unescape(field))
    return table


def _read_triples(path: Path, entities: dict[str, int], relations: dict[str, int],
                  ) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    """Triple ids (checked against the tables), plus scores / provenance when the header has them."""
    rows = _rows(read_lines(path))
    header_line, header = _expect_header(path, rows, TRIPLE_COLUMNS)
    if not _is_triples_header(header):
        raise KgprobeError(f"unexpected header columns {_describe(header[len(TRIPLE_COLUMNS):])} after "
                           f"head, relation, tail (allowed: {_describe(OPTIONAL_TRIPLE_COLUMNS)}, once each)",
                           path=path, line=header_line)
    score_col = header.index("score") if "score" in header else None
    prov_col = header.index("provenance") if "provenance" in header else None
    ids: list[tuple[int, int, int]] = []
    scores: list[float] = []
    provenance: list[str] = []
    for number, fields in rows:
        _check_width(path, number, fields, header)
        head, relation, tail = (unescape(f) for f in fields[:3])
        try:
            ids.append((entities[head], relations[relation], entities[tail]))
        except KeyError:
            raise _unknown_reference(path, number, head, relation, tail, entities, relations) from None
        if score_col is not None:
            scores.append(_parse_score(path, number, fields[score_col]))
        if prov_col is not None:
            provenance.append(unescape(fields[prov_col]))
    return (torch.tensor(ids, dtype=torch.long).reshape(-1, 3),
            None if score_col is None else torch.tensor(scores, dtype=torch.float32),
            None if prov_col is None else provenance)


def _unknown_reference(path: Path, number: int, head: str, relation: str, tail: str,
                       entities: dict[str, int], relations: dict[str, int]) -> KgprobeError:
    if head not in entities:
        return KgprobeError(f"unknown head entity {shorten(head)} (not in entities.tsv)", path=path, line=number)
    if relation not in relations:
        return KgprobeError(f"unknown relation {shorten(relation)} (not in relations.tsv)", path=path, line=number)
    return KgprobeError(f"unknown tail entity {shorten(tail)} (not in entities.tsv)", path=path, line=number)


def _read_meta(path: Path, default_name: str) -> str:
    """The graph name from ``meta.json`` (optional: a hand-made directory may lack it)."""
    if not path.is_file():
        return default_name
    try:
        meta = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise KgprobeError(f"invalid JSON: {err.msg}", path=path, line=err.lineno) from None
    except UnicodeDecodeError as err:
        raise KgprobeError(f"not valid UTF-8 text ({err.reason})", path=path) from None
    except ValueError:  # int() refuses more than 4300 digits (a guard against slow parsing)
        raise KgprobeError("invalid JSON: a number has too many digits", path=path) from None
    except RecursionError:
        raise KgprobeError("invalid JSON: arrays or objects nested too deeply", path=path) from None
    if not isinstance(meta, dict):
        raise KgprobeError("expected a JSON object", path=path, line=1)
    if meta.get("format", META_FORMAT) != META_FORMAT:
        raise KgprobeError(f"format is {shorten(meta.get('format'))}, expected {META_FORMAT!r}", path=path)
    version = meta.get("version", META_VERSION)
    if not isinstance(version, int) or version > META_VERSION:
        raise KgprobeError(f"unsupported version {shorten(version)} (this kgprobe reads version "
                           f"{META_VERSION}); upgrade kgprobe", path=path)
    name = meta.get("name", default_name)
    if not isinstance(name, str):
        raise KgprobeError(f"name must be a string, got {shorten(name)}", path=path)
    return name


# --------------------------------------------------------------------------- plain triples
def save_tsv(kg: KnowledgeGraph, target: str | Path) -> Path:
    """Write ``head<TAB>relation<TAB>tail[<TAB>score]`` lines, no header (PyKEEN style: its
    ``TriplesFactory.from_path`` reads the triples and ignores a score column).

    Labels, descriptions, provenance, isolated entities and unused relations are not kept.
    """
    target = Path(target)
    lines = triple_lines(kg, header=False, provenance=False)
    if lines and (_is_triples_header(lines[0].split("\t")) or lines[0].startswith("\ufeff")):
        # The reader would take this first triple for a header (or its leading U+FEFF for a byte
        # order mark); a real header line before it keeps it a triple. Only then does PyKEEN,
        # which has no notion of a header, read one triple too many.
        lines.insert(0, "\t".join([*TRIPLE_COLUMNS, "score"] if kg.scores is not None else TRIPLE_COLUMNS))
    with atomic_path(target) as tmp:
        _write_text(tmp, lines)
    return target


def load_tsv(path: str | Path, *, name: str | None = None) -> KnowledgeGraph:
    """Read plain triple lines; ids double as labels, entities numbered by first appearance.

    Blank lines and lines starting with ``#`` are skipped. A first line that is a kgprobe
    ``triples.tsv`` header (``head, relation, tail[, score][, provenance]``) is honoured, so a
    KG directory's triple file can be read on its own.
    """
    path = Path(path)
    entities: dict[str, int] = {}
    relations: dict[str, int] = {}
    ids: list[tuple[int, int, int]] = []
    scores: list[float] = []
    provenance: list[str] = []
    columns: list[str] | None = None  # fixed by the header or by the first triple line
    score_col: int | None = None
    prov_col: int | None = None
    for number, line in enumerate(read_lines(path), 1):
        if _is_blank(line) or line.startswith("#"):
            continue
        fields = line.split("\t")
        if columns is None:
            if _is_triples_header(fields):
                columns = fields
                score_col = fields.index("score") if "score" in fields else None
                prov_col = fields.index("provenance") if "provenance" in fields else None
                continue
            if len(fields) not in (3, 4):
                raise KgprobeError(f"expected 3 tab-separated fields (head, relation, tail), "
                                   f"got {len(fields)}", path=path, line=number)
            columns = [*TRIPLE_COLUMNS, "score"][: len(fields)]
            score_col = 3 if len(fields) == 4 else None
        _check_width(path, number, fields, columns)
        head, relation, tail = (unescape(f) for f in fields[:3])
        ids.append((entities.setdefault(head, len(entities)), relations.setdefault(relation, len(relations)),
                    entities.setdefault(tail, len(entities))))
        if score_col is not None:
            scores.append(_parse_score(path, number, fields[score_col]))
        if prov_col is not None:
            provenance.append(unescape(fields[prov_col]))
    return KnowledgeGraph(
        entity_ids=list(entities), relation_ids=list(relations),
        triples=torch.tensor(ids, dtype=torch.long).reshape(-1, 3),
        scores=None if score_col is None else torch.tensor(scores, dtype=torch.float32),
        provenance=None if prov_col is None else provenance,
        name=name if name is not None else path.stem,
    )


def _is_triples_header(fields: list[str]) -> bool:
    extra = fields[len(TRIPLE_COLUMNS):]
    return (fields[: len(TRIPLE_COLUMNS)] == list(TRIPLE_COLUMNS)
            and all(c in OPTIONAL_TRIPLE_COLUMNS for c in extra) and len(set(extra)) == len(extra))
