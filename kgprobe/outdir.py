"""One policy for every command that writes an output directory.

* ``OUT`` does not exist, or is an empty directory: it is created (``new``).
* ``OUT`` holds the output of the same command (its marker file ``.kgprobe`` says so, or, for
  directories written before markers existed, the command's own record file): the command resumes
  or replaces it, as that command documents (``own``).
* ``OUT`` holds anything else (a user's files, another command's output, a plain file): refused
  with one line naming what is there, unless ``overwrite``: then it is replaced as a whole, by a
  rename, only once the command starts writing (``replace``).

:func:`check_output_dir` only looks; it runs before any model or data is loaded, so that a
refused or mistyped command costs nothing and leaves nothing. :func:`open_output_dir` then makes
the directory when the command is ready to write.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kgprobe.atomic import remove_stale_temporaries, replace_directory, temp_prefix
from kgprobe.errors import KgprobeError

MARKER = ".kgprobe"
State = Literal["new", "own", "replace"]

#: record files (and, for JSON records, a key they hold) by which directories written before
#: markers existed are recognised; the order matters where records share a name
LEGACY_RECORDS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "harvest": (("config.json", "relation"),),
    "linkpred train": (("checkpoint.pt", None), ("best.pt", None), ("linkpred.json", "entity_ids")),
    "data build": (("build.json", "dataset"),),
    "embed": (("meta.json", "model"),),
    "linkpred encode": (("embeddings.npy", None),),
    "probe": (("scan.pt", None), ("known.json", None), ("candidates.jsonl", None)),
    "run": (("run.json", "pipeline"),),
}


@dataclass(frozen=True)
class OutputDir:
    """An output directory that passed :func:`check_output_dir`, and what opening it will do."""

    path: Path
    command: str
    state: State


def marker_command(path: Path) -> str | None:
    """The command whose marker ``path`` holds, else None."""
    try:
        return str(json.loads((path / MARKER).read_text(encoding="utf-8"))["command"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _owner(path: Path) -> str | None:
    """The kgprobe command that wrote directory ``path``: its marker, else its record files, else
    ``run`` when a child directory is some command's output (a pipeline interrupted early)."""
    owner = recorded_command(path)
    if owner is None and any(child.is_dir() and recorded_command(child) for child in path.iterdir()):
        return "run"
    return owner


def recorded_command(path: Path) -> str | None:
    """The kgprobe command that wrote directory ``path``, by its marker, else by its record files
    (directories written before markers existed); None for anything else."""
    owner = marker_command(path)
    if owner is not None:
        return owner
    return next((cmd for cmd, records in LEGACY_RECORDS.items()
                 if any(_is_record(path / name, key) for name, key in records)), None)


def _is_record(file: Path, key: str | None) -> bool:
    if not file.is_file():
        return False
    if key is None:
        return True
    try:  # a record file is small; a user's big file of the same name is not one
        return file.stat().st_size < 2**26 and key in json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def _writable_parent(path: Path) -> None:
    """Fail now, not after an hour of work, when ``path`` cannot be created."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise KgprobeError(f"cannot create {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise KgprobeError(f"cannot create {path}: {parent} is not writable (permission denied)")


def check_output_dir(path: str | Path, *, command: str, overwrite: bool = False,
                     option: str = "--out") -> OutputDir:
    """Decide what writing ``command``'s output to ``path`` means; write nothing.

    Raises ``KgprobeError`` when ``path`` holds something this command did not write and
    ``overwrite`` is false, or cannot be created at all.
    """
    path = Path(path)
    _writable_parent(path)
    if not path.exists() and not path.is_symlink():
        return OutputDir(path, command, "new")
    hint = f"choose another {option}, or pass --overwrite to replace it"
    if not path.is_dir():
        if overwrite:
            return OutputDir(path, command, "replace")
        raise KgprobeError(f"{path} is a file, not a directory: {hint}")
    if not os.access(path, os.W_OK | os.X_OK):
        raise KgprobeError(f"cannot write to {path}: permission denied")
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return OutputDir(path, command, "new")
    owner = _owner(path)
    if owner == command:
        return OutputDir(path, command, "own")
    if overwrite:
        if Path.cwd().resolve().is_relative_to(path.resolve()):
            raise KgprobeError(f"refusing to replace {path}: it is or holds the current directory")
        return OutputDir(path, command, "replace")
    if owner is not None:
        raise KgprobeError(f"{path} holds the output of `kgprobe {owner}`, not of `kgprobe {command}`: {hint}")
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    raise KgprobeError(f"{path} holds other files ({shown}), not an output of `kgprobe {command}`: {hint}")


def write_marker(directory: Path, command: str) -> None:
    """Mark ``directory`` as ``command``'s output (written into temporaries before their rename)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("kgprobe")
    except PackageNotFoundError:
        ours = "unknown"
    (directory / MARKER).write_text(json.dumps({"command": command, "kgprobe": ours}) + "\n", encoding="utf-8")


def open_output_dir(out: OutputDir) -> Path:
    """Create (or, for ``replace``, swap in a fresh) output directory with its marker; return it.

    A replaced directory is renamed away in one step and then deleted, so ``out.path`` never
    holds a mix of old and new files; leftovers of killed runs of this output are removed first.
    """
    path = out.path
    remove_stale_temporaries(path)
    if out.state == "replace" and (path.exists() or path.is_symlink()):
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = path.with_name(temp_prefix(path) + "0")
        fresh.mkdir()
        write_marker(fresh, out.command)
        replace_directory(path, fresh)
        return path
    path.mkdir(parents=True, exist_ok=True)
    if out.state == "new" or not (path / MARKER).is_file():
        write_marker(path, out.command)
    return path


def check_output_file(path: str | Path, *, overwrite: bool = False, option: str = "TARGET") -> Path:
    """An output *file* cannot carry a marker, so nothing proves kgprobe wrote an existing one:
    it is replaced only with ``overwrite`` (atomically, by :func:`kgprobe.atomic.atomic_path`)."""
    path = Path(path)
    _writable_parent(path)
    if path.is_dir():
        raise KgprobeError(f"{path} is a directory; {option} must be a file path for this format")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise KgprobeError(f"{path} exists: choose another {option}, or pass --overwrite to replace it")
    return path

