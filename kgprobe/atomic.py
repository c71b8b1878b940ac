"""Write files and directories so that a crash never leaves a half-written result behind.

A result is written to a hidden sibling ``.NAME.tmp-HOST-PID-RANDOM`` and renamed onto ``NAME``
only when it is complete. A process killed with SIGKILL cannot clean up after itself, so the
next write of the same target removes the temporaries that it can prove are leftovers of a dead
process: the name says which target they were for, that they were made on this host, and the
PID that made them, and that PID no longer runs. Anything else (an unrelated hidden file, a
temporary of a process still running, one from another machine sharing the folder) is left.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from kgprobe.errors import KgprobeError

# what a crashed write can leave next to its target: a temporary or a replaced old version
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)(?:-.*)?$")
# the same, also as older versions named them (".NAME.tmp-RANDOM": no host or PID to prove whose)
_ANY_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-[A-Za-z0-9_-]+$")


def host_tag() -> str:
    """Eight hex digits naming this machine (a folder may be shared between machines)."""
    return hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()


def temp_prefix(target: Path, kind: str = "tmp") -> str:
    """``.NAME.tmp-HOST-PID-``: the start of every temporary made for ``target`` by this process."""
    return f".{target.name}.{kind}-{host_tag()}-{os.getpid()}-"


def temporary_target(path: str | Path) -> str | None:
    """The name of the output that ``path`` is a temporary (or replaced old version) of, if it is
    named like one, by this version of kgprobe or an older one; else None."""
    match = _ANY_LEFTOVER.match(Path(path).name)
    return None if match is None else match["name"]


def is_temporary(path: str | Path) -> bool:
    """Whether ``path`` is named like a temporary or replaced output of some kgprobe write."""
    return temporary_target(path) is not None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(target: str | Path) -> list[Path]:
    """Delete the leftovers of killed writes of ``target`` (see the module docstring); return them."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    removed = []
    for entry in target.parent.iterdir():
        match = _LEFTOVER.match(entry.name)
        if (match is None or match["name"] != target.name or match["host"] != host_tag()
                or _pid_alive(int(match["pid"]))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _named_by_target(err: KgprobeError, tmp: Path, target: Path) -> KgprobeError:
    """The same error, naming the file the user asked for instead of our temporary."""
    return KgprobeError(str(err).replace(str(tmp), str(target)).replace(tmp.name, target.name))


@contextlib.contextmanager
def atomic_path(target: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``target``; rename it onto ``target`` only on success.

    The sibling lives in the same folder so the final ``os.replace`` is atomic on POSIX.
    For directories an existing target is replaced as a whole (callers decide whether it may be:
    see :mod:`kgprobe.outdir`). Leftovers of earlier killed writes of ``target`` are removed first.
    """
    target = Path(os.path.abspath(target))  # "." has no name to make a sibling from
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    prefix = temp_prefix(target)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    # mkstemp/mkdtemp make private (0600/0700) paths; results get the user's usual permissions
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)
    try:
        try:
            yield tmp
        except KgprobeError as err:
            raise _named_by_target(err, tmp, target) from None
        if directory and target.exists():
            replace_directory(target, tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def replace_directory(target: Path, new: Path) -> None:
    """Put directory ``new`` in place of ``target`` (a directory or a file): ``target`` never holds
    a mix of both, and a crash in between leaves the old version as a ``.NAME.old-...`` leftover
    that the next write removes."""
    old = target.with_name(temp_prefix(target, "old") + "0")
    os.replace(target, old)
    os.replace(new, target)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def write_json(path: str | Path, data: object, *, indent: int | None = 2) -> None:
    """Write ``data`` as UTF-8 JSON (non-ASCII kept as is, one trailing newline) to ``path`` in one
    rename: a reader sees the old file or the whole new one, never half of it."""
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
