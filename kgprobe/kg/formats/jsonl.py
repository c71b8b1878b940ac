"""JSON Lines: one record per line, lossless and easy to stream or grep.

The writer emits a ``meta`` record, then every ``entity``, every ``relation`` and every
``triple`` in graph order::

    {"type": "meta", "name": "wn18", "format": "kgprobe-kg", "version": 1, "scores": false, "provenance": false}
    {"type": "entity", "id": "dog.n.01", "label": "dog", "description": "a member of ..."}
    {"type": "relation", "id": "_hypernym", "label": "hypernym"}
    {"type": "triple", "head": "dog.n.01", "relation": "_hypernym", "tail": "canine.n.02"}

Triples carry ``score`` / ``provenance`` keys when the graph has them. When reading, records
may come in any order, ``label`` defaults to the id and ``description`` to ``""``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from kgprobe.atomic import atomic_path
from kgprobe.errors import KgprobeError
from kgprobe.kg.formats.tsv import META_FORMAT, META_VERSION, read_lines, score_strings, shorten
from kgprobe.kg.graph import KnowledgeGraph

RECORD_TYPES = ("meta", "entity", "relation", "triple")
# Valid raw inside JSON strings, but str.splitlines() and some JSON Lines tools break lines there.
_LINE_BREAKS = re.compile("[\x85\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def save_jsonl(kg: KnowledgeGraph, target: str | Path) -> Path:
    """Write ``kg`` as JSON Lines through a temporary file."""
    target = Path(target)
    to_json = json.JSONEncoder(ensure_ascii=False).encode

    def encode(record: dict) -> str:
        text = to_json(record)
        if text.isascii():  # the common case, and a quick test
            return text
        return _LINE_BREAKS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)

    e_ids, r_ids = kg.entity_ids, kg.relation_ids
    # Short decimal strings for the float32 scores, so a file reads "0.9" rather than 0.8999999761.
    scores = None if kg.scores is None else [float(s) for s in score_strings(kg.scores)]
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(encode({"type": "meta", "name": kg.name, "format": META_FORMAT, "version": META_VERSION,
                        "scores": kg.scores is not None, "provenance": kg.provenance is not None}) + "\n")
        f.writelines(encode({"type": "entity", "id": e, "label": label, "description": desc}) + "\n"
                     for e, label, desc in zip(e_ids, kg.entity_labels, kg.entity_descriptions))
        f.writelines(encode({"type": "relation", "id": r, "label": label}) + "\n"
                     for r, label in zip(r_ids, kg.relation_labels))
        for i, (h, r, t) in enumerate(kg.triples.tolist()):
            record: dict[str, Any] = {"type": "triple", "head": e_ids[h], "relation": r_ids[r], "tail": e_ids[t]}
            if scores is not None:
                record["score"] = scores[i]
            if kg.provenance is not None:
                record["provenance"] = kg.provenance[i]
            f.write(encode(record) + "\n")
    return target


class _Reader:
    """Collects records line by line; all checks report ``file:line``."""

    def __init__(self, path: Path):
        self.path = path
        self.name = path.stem
        self.flags: dict[str, bool] = {}  # "scores"/"provenance" declared by the meta record
        self.entities: dict[str, int] = {}  # id -> line number where it was defined
        self.labels: list[str] = []
        self.descriptions: list[str] = []
        self.relations: dict[str, int] = {}
        self.relation_labels: list[str] = []
        self.triples: list[tuple[int, str, str, str]] = []  # line, head, relation, tail
        self.scores: list[tuple[int, float | None]] = []
        self.provenance: list[tuple[int, str | None]] = []

    def error(self, message: str, line: int) -> KgprobeError:
        return KgprobeError(message, path=self.path, line=line)

    def text(self, record: dict, key: str, line: int, *, default: str | None = None) -> str:
        if key not in record:
            if default is None:
                raise self.error(f"{record['type']} record is missing key {key!r}", line)
            return default
        value = record[key]
        if not isinstance(value, str):
            raise self.error(f"{record['type']} record: {key!r} must be a string, got {shorten(value)}", line)
        return value

    def add(self, record: Any, line: int) -> None:
        if not isinstance(record, dict):
            raise self.error("expected a JSON object", line)
        kind = record.get("type")
        if kind not in RECORD_TYPES:
            raise self.error(f"unknown record type {shorten(kind)} (expected one of {', '.join(RECORD_TYPES)})", line)
        getattr(self, f"_add_{kind}")(record, line)

    def _add_meta(self, record: dict, line: int) -> None:
        if record.get("format", META_FORMAT) != META_FORMAT:
            raise self.error(f"format is {shorten(record.get('format'))}, expected {META_FORMAT!r}", line)
        version = record.get("version", META_VERSION)
        if not isinstance(version, int) or version > META_VERSION:
            raise self.error(f"unsupported version {shorten(version)} (this kgprobe reads version "
                             f"{META_VERSION}); upgrade kgprobe", line)
        self.name = self.text(record, "name", line, default=self.name)
        for key in ("scores", "provenance"):
            if key in record:
                self.flags[key] = bool(record[key])

    def _add_entity(self, record: dict, line: int) -> None:
        entity = self.text(record, "id", line)
        if entity in self.entities:
            raise self.error(f"duplicate entity id {shorten(entity)} (first on line {self.entities[entity]})", line)
        self.entities[entity] = line
        self.labels.append(self.text(record, "label", line, default=entity))
        self.descriptions.append(self.text(record, "description", line, default=""))

    def _add_relation(self, record: dict, line: int) -> None:
        relation = self.text(record, "id", line)
        if relation in self.relations:
            raise self.error(f"duplicate relation id {shorten(relation)} (first on line {self.relations[relation]})",
                             line)
        self.relations[relation] = line
        self.relation_labels.append(self.text(record, "label", line, default=relation))

    def _add_triple(self, record: dict, line: int) -> None:
        self.triples.append((line, self.text(record, "head", line), self.text(record, "relation", line),
                             self.text(record, "tail", line)))
        score = record.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise self.error(f"score {shorten(score)} is not a number", line)
        if isinstance(score, int):
            # float32 anyway; a huge JSON integer would overflow float() and torch.tensor()
            score = float(score) if abs(score) < 2**1000 else float("inf") if score > 0 else float("-inf")
        self.scores.append((line, score))
        provenance = record.get("provenance")
        if provenance is not None and not isinstance(provenance, str):
            raise self.error(f"provenance must be a string, got {shorten(provenance)}", line)
        self.provenance.append((line, provenance))

    def _optional_column(self, key: str, values: list[tuple[int, Any]]) -> list | None:
        """A per-triple column that every triple has, or none has (unless meta says otherwise)."""
        if not (self.flags.get(key, False) or any(v is not None for _, v in values)):
            return None
        for line, value in values:
            if value is None:
                raise self.error(f"triple has no {key.rstrip('s')}, but other triples (or the meta "
                                 f"record) say the graph has them", line)
        return [v for _, v in values]

    def _unknown_reference(self, e_index: dict, r_index: dict) -> KgprobeError:
        """The error for the first triple naming an undeclared entity or relation."""
        for line, head, relation, tail in self.triples:
            for what, key, index in (("head entity", head, e_index), ("relation", relation, r_index),
                                     ("tail entity", tail, e_index)):
                if key not in index:
                    return self.error(f"unknown {what} {shorten(key)} (no {what.split()[-1]} record with that id)",
                                      line)
        raise AssertionError("no unknown reference found")

    def graph(self) -> KnowledgeGraph:
        e_index = {e: i for i, e in enumerate(self.entities)}
        r_index = {r: i for i, r in enumerate(self.relations)}
        try:
            rows = [(e_index[h], r_index[r], e_index[t]) for _, h, r, t in self.triples]
        except KeyError:
            raise self._unknown_reference(e_index, r_index) from None
        scores = self._optional_column("scores", self.scores)
        return KnowledgeGraph(
            entity_ids=list(self.entities), relation_ids=list(self.relations),
            triples=torch.tensor(rows, dtype=torch.long).reshape(-1, 3),
            entity_labels=self.labels, entity_descriptions=self.descriptions,
            relation_labels=self.relation_labels,
            scores=None if scores is None else torch.tensor(scores, dtype=torch.float32),
            provenance=self._optional_column("provenance", self.provenance),
            name=self.name,
        )


def load_jsonl(path: str | Path) -> KnowledgeGraph:
    """Read a JSON Lines KG; blank lines are skipped, every other line must be a record."""
    path = Path(path)
    reader = _Reader(path)
    decode = json.JSONDecoder().decode
    for number, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = decode(line)
        except json.JSONDecodeError as err:
            raise KgprobeError(f"invalid JSON: {err.msg} (column {err.colno})", path=path, line=number) from None
        except ValueError:  # int() refuses more than 4300 digits (a guard against slow parsing)
            raise KgprobeError("invalid JSON: a number has too many digits", path=path, line=number) from None
        except RecursionError:
            raise KgprobeError("invalid JSON: arrays or objects nested too deeply", path=path, line=number) from None
        if "\\u" in line and _has_surrogate(record):
            raise KgprobeError("a string holds a \\uD800-\\uDFFF escape that is not part of a surrogate pair, "
                               "which is not text (write the character itself)", path=path, line=number)
        reader.add(record, number)
    return reader.graph()


def _has_surrogate(value: Any) -> bool:
    """Whether a decoded JSON value holds a lone surrogate, which no UTF-8 file can store."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False
