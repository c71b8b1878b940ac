"""The address a ``kgprobe serve`` child process announces, for scripts and tests that start one."""
from __future__ import annotations

import selectors
import subprocess
import time

from kgprobe.errors import KgprobeError


def announced_url(proc: subprocess.Popen, *, timeout_s: float = 90) -> str:
    """The ``http://HOST:PORT`` that ``kgprobe serve`` (started with text-mode ``stdout=PIPE``) prints
    once it listens (``--port 0`` picks the port then); a :class:`KgprobeError` with what it printed
    when it exits or stays silent for ``timeout_s`` seconds."""
    seen, deadline = [], time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.1, deadline - time.monotonic())):
                continue
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("kgprobe serve:") and " at http://" in line:
                return line.split(" at ", 1)[1].split()[0].rstrip("/")
    raise KgprobeError(f"kgprobe serve did not start: {''.join(seen)[-2000:]}")
