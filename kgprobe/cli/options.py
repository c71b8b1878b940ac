"""Option types shared by the commands."""
from __future__ import annotations

import os
from pathlib import Path

import click


class OutputPath(click.Path):
    """An output file or directory (``--out``, ``--out-dir``, a convert TARGET).

    An empty value (an unset shell variable: ``--out "$DIR"``) is refused rather than read as the
    current directory; ``.`` and ``..`` become absolute, so that the output has a name to write
    its temporary next to (see :mod:`kgprobe.atomic`).
    """

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("the path is empty", param, ctx)
        path = super().convert(value, param, ctx)
        if Path(path).name in ("", ".", ".."):
            path = Path(os.path.abspath(path))
            if not path.name:
                self.fail(f"{value!r} is the file system root, not an output path", param, ctx)
        return path


#: ``--seed``: what every consumer takes (torch, numpy's legacy seeding below 2**32, faiss k-means a C int)
SEED = click.IntRange(0, 2**31 - 1)

#: a positive count that faiss takes as a C int (index and k-means parameters, batch sizes)
COUNT = click.IntRange(1, 2**31 - 1)


def options_model(cls, *, renames: dict[str, str] | None = None, **values):
    """``cls(**values)`` (a pydantic options model), with a rejected value as one ``KgprobeError``
    line naming the command-line option: ``--epochs: Input should be ... (got 0)``. ``renames``
    maps a field to its option where the two are spelled differently."""
    from pydantic import ValidationError

    from kgprobe.errors import KgprobeError

    try:
        return cls(**values)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [str(x) for x in first["loc"]]
        renamed = (renames or {}).get(loc[0]) if loc else None
        name = renamed or ".".join(loc).replace("_", "-")
        raise KgprobeError(f"--{name}: {first['msg']} (got {first.get('input')!r})") from None
