"""Run paths from URLs: relative paths resolved strictly under RUNS_DIR, and safely served files."""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from kgprobe.errors import KgprobeError


class NotFound(KgprobeError):
    """A run, file or entity that is not there (HTTP 404)."""


class BadPath(KgprobeError):
    """A path that may not be asked for: absolute, with ``..``, or leading out of RUNS_DIR (HTTP 400)."""


def resolve_run(runs_dir: Path, run: str) -> Path:
    """The directory ``run`` (a ``/``-separated path relative to ``runs_dir``, as the runs page links
    it) names; raises :class:`BadPath` for an absolute path, a ``..`` part, a backslash or NUL, or
    one whose real path (symlinks followed) is outside ``runs_dir``, :class:`NotFound` when it is no
    directory. ``""`` is ``runs_dir`` itself."""
    if "\x00" in run or "\\" in run:
        raise BadPath(f"bad run path {run!r}")
    parts = PurePosixPath(run).parts
    if run.startswith("/") or any(p in ("..",) for p in parts) or (parts and parts[0].endswith(":")):
        raise BadPath(f"run paths are relative to the runs directory, without '..': {run!r}")
    root = runs_dir.resolve()
    path = (root.joinpath(*[p for p in parts if p != "."])).resolve()
    if path != root and not path.is_relative_to(root):
        raise BadPath(f"{run!r} leads out of the runs directory")
    if not path.is_dir():
        raise NotFound(f"no run {run!r}")
    return path


def run_file(run_dir: Path, name: str, *, suffixes: tuple[str, ...]) -> Path:
    """The file ``name`` directly in ``run_dir`` with one of ``suffixes`` (a plain name, no
    directories; its real path inside ``run_dir``), else :class:`BadPath` / :class:`NotFound`."""
    if not name or "/" in name or "\\" in name or "\x00" in name or name.startswith("."):
        raise BadPath(f"bad file name {name!r}")
    if not name.lower().endswith(suffixes):
        raise BadPath(f"only {', '.join(suffixes)} files are served: {name!r}")
    path = (run_dir / name).resolve()
    if path.parent != run_dir.resolve() or not path.is_file():
        raise NotFound(f"no file {name!r} in this run")
    return path


def relative(runs_dir: Path, path: Path) -> str:
    """``path`` as the ``/``-separated run path under ``runs_dir`` that URLs carry (``""`` for itself)."""
    rel = path.resolve().relative_to(runs_dir.resolve()).as_posix()
    return "" if rel == "." else rel
