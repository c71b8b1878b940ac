"""Which text of an entity gets embedded: its label, its description, or both; and the
``id<TAB>text`` files that give the text of new entities (``kgprobe linkpred encode RUN TEXTS``)."""
from __future__ import annotations

from pathlib import Path

from kgprobe.errors import KgprobeError
from kgprobe.kg.graph import KnowledgeGraph

TEXT_FIELDS = ("label", "description", "both")


def entity_texts(kg: KnowledgeGraph, text: str = "label") -> list[str]:
    """One string per entity, in ``kg.entity_ids`` order.

    ``label``: the label; ``description``: the description; ``both``: ``"label: description"``.
    An entity without a description falls back to its label (for ``description``) or to the
    label alone (for ``both``), so no entity is embedded from an empty string.
    """
    if text not in TEXT_FIELDS:
        raise KgprobeError(f"unknown text field {text!r}; choose one of: {', '.join(TEXT_FIELDS)}")
    out = []
    for label, desc in zip(kg.entity_labels, kg.entity_descriptions):
        label, desc = " ".join(label.split()), " ".join((desc or "").split())
        if text == "label" or not desc:
            out.append(label)
        elif text == "description":
            out.append(desc)
        else:
            out.append(f"{label}: {desc}")
    return out


def read_texts_tsv(path: str | Path) -> tuple[list[str], list[str]]:
    """``id<TAB>text`` lines (blank lines skipped): the ids and texts, both stripped.

    Every problem is a one-line ``KgprobeError`` naming the file (and line): a missing file or a
    directory, bytes that are not UTF-8, a line without exactly two non-empty fields, a repeated
    id, or no line at all. Only ``\\n`` ends a line (as in the KG formats), so a U+2028 or form
    feed inside a text neither splits it nor shifts the line numbers.
    """
    from kgprobe.kg.formats.tsv import read_lines, shorten

    path = Path(path)
    if path.is_dir():
        raise KgprobeError("is a directory, expected a file of id<TAB>text lines", path=path)
    if not path.is_file():
        raise KgprobeError("no such file or directory (expected a file of id<TAB>text lines)", path=path)
    try:
        lines = read_lines(path)
    except OSError as err:
        raise KgprobeError(f"cannot read: {err.strerror or err}", path=path) from None
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split("\t")]
        if len(fields) != 2 or not all(fields):
            raise KgprobeError("expected id<TAB>text (two non-empty tab-separated fields)", path=path, line=number)
        if fields[0] in seen:
            raise KgprobeError(f"duplicate id {shorten(fields[0])} (first on line {seen[fields[0]]})",
                               path=path, line=number)
        seen[fields[0]] = number
        ids.append(fields[0])
        texts.append(fields[1])
    if not ids:
        raise KgprobeError("no entities in the file (expected id<TAB>text lines)", path=path)
    return ids, texts
