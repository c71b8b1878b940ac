"""The one exception type the CLI turns into a one-line message and exit code 2.

Anything a user can get wrong (a file, a config, a model name) raises ``KgprobeError``;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

from pathlib import Path


class KgprobeError(Exception):
    """A user-facing error: ``str(err)`` is the whole message, one line."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + " ".join(str(message).split()))
