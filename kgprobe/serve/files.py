"""Bounded, forgiving readers of a run's record files: a missing or torn file reads as nothing."""
from __future__ import annotations

import json
from itertools import islice
from pathlib import Path
from typing import Any, Iterator


def read_json(path: Path, *, max_bytes: int = 64 * 2**20) -> Any:
    """The JSON in ``path``, or None when it is missing, too big or not JSON."""
    try:
        if path.stat().st_size > max_bytes:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def iter_jsonl(path: Path) -> Iterator[dict]:
    """The JSON objects of ``path``, one a line; blank, torn or non-object lines are skipped."""
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except OSError:
        return
    with handle:
        for line in handle:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                yield row


def read_jsonl(path: Path, *, max_lines: int) -> list[dict]:
    """At most ``max_lines`` objects of ``path`` (:func:`iter_jsonl`)."""
    return list(islice(iter_jsonl(path), max_lines))


def count_lines(path: Path, *, max_lines: int) -> int | None:
    """Non-blank lines of ``path`` (counting stops at ``max_lines``), None when it is missing."""
    try:
        with path.open("rb") as handle:
            return sum(1 for line in islice(handle, max_lines) if line.strip())
    except OSError:
        return None
