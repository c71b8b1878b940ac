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


def warn(message: str, *, path: str | Path | None = None, line: int | None = None) -> None:
    """Print one ``kgprobe: warning: ...`` line on stderr: the input is accepted but probably not
    what the user meant (an empty KG, a CUDA device on a machine without one, ...)."""
    import sys

    text = str(KgprobeError(message, path=path, line=line))
    print(f"kgprobe: warning: {text}", file=sys.stderr, flush=True)
