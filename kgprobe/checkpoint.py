"""Append-only JSONL checkpoints: one line per finished chunk, fsync'd, torn last line ignored.

A chunk is written only after all of its work is done, and chunks are numbered, so a run killed
at any moment resumes from the first missing chunk and never loses or repeats results.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from kgprobe.errors import KgprobeError


class ChunkLog:
    def __init__(self, path: Path):
        self.path = path
        self.chunks: dict[int, dict] = {}
        if path.exists():
            good = 0
            with path.open("rb") as f:
                for raw in f:
                    try:
                        record = json.loads(raw)
                    except ValueError:
                        break  # a write cut short by a kill: everything after it is redone
                    if not raw.endswith(b"\n") or record.get("chunk") != len(self.chunks):
                        break
                    self.chunks[record["chunk"]] = record
                    good += len(raw)
            with path.open("r+b") as f:
                f.truncate(good)

    def done(self, chunk: int) -> dict | None:
        return self.chunks.get(chunk)

    def done_for(self, chunk: int, *, key: str, value: str) -> dict | None:
        """``chunk``'s record when its ``key`` is ``value`` (None when not done yet); a record for
        another ``value`` means the inputs changed since the log was written: a one-line error."""
        record = self.chunks.get(chunk)
        if record is not None and record.get(key) != value:
            raise KgprobeError(f"{self.path}: checkpoint line {chunk} is for {record.get(key)!r}, not {value!r}; "
                               f"the {key} list changed — use a fresh output directory")
        return record

    def write(self, chunk: int, record: dict) -> None:
        record = {"chunk": chunk, **record}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.chunks[chunk] = record
