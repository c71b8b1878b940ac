"""A small thread-safe LRU of things loaded from run directories (models, graphs, parsed files),
keyed by path and the files' modification times, so a rewritten run is read again."""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable


def stamp(paths: Iterable[Path]) -> tuple:
    """The modification times and sizes of ``paths`` (missing ones as None): a cache key part."""
    out = []
    for path in paths:
        try:
            st = path.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


class LoadCache:
    """At most ``size`` values; :meth:`get` loads a missing one (one load per key at a time)."""

    def __init__(self, size: int):
        self.size = max(1, int(size))
        self._values: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Any, threading.Lock] = {}

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._values:
                    return self._values[key]
            value = load()
            with self._lock:
                self._values[key] = value
                self._values.move_to_end(key)
                while len(self._values) > self.size:
                    self._values.popitem(last=False)
                self._loading.pop(key, None)
            return value
