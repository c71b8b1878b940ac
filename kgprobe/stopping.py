"""Stop a long run at a safe point when asked to (SIGTERM from a scheduler or a shutdown, Ctrl-C).

Killing a training run in the middle of an optimiser step leaves nothing consistent to save, so
:class:`StopRequests` turns the first SIGTERM or SIGINT into a flag that the loop reads after each
step: it writes its checkpoint there and raises :class:`Stopped`, which the CLI reports in one
line with exit code 128 + the signal's number (143 for SIGTERM, 130 for Ctrl-C), as a shell
does for a process the signal killed. Inside :meth:`StopRequests.immediate` (an evaluation, which
changes no state) a signal raises :class:`StopNow` at once instead. A second signal while the
first is being honoured gets the previous handler's behaviour: Ctrl-C twice still interrupts.

Handlers can only be installed from the main thread; elsewhere the object is inert and signals
keep their usual effect, as does a signal the process ignores (``nohup`` and friends).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
    """A run stopped on a signal after saving what it had; running it again resumes it."""

    def __init__(self, message: str, *, signum: int):
        super().__init__(" ".join(str(message).split()))
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


class StopNow(Exception):
    """Raised by the handler itself inside :meth:`StopRequests.immediate`."""


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StopRequests:
    """``with StopRequests() as stop:`` ... ``if stop.requested: save(); raise Stopped(...)``."""

    def __init__(self, signals: tuple[int, ...] = SIGNALS):
        self.signals = tuple(signals)
        self.requested: int | None = None
        self._previous: dict[int, object] = {}
        self._immediate = False

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                if signal.getsignal(signum) is not signal.SIG_IGN:  # an ignored signal stays ignored
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.requested is not None:
            previous = self._previous.get(signum)
            self.__exit__()
            if callable(previous):
                previous(signum, frame)
                return
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.requested = signum
        if self._immediate:
            raise StopNow

    @contextlib.contextmanager
    def immediate(self) -> Iterator[None]:
        """A block with no state to keep consistent: a signal (or one already received) stops it at once."""
        if self.requested is not None:
            raise StopNow
        self._immediate = True
        try:
            yield
        finally:
            self._immediate = False


__all__ = ["SIGNALS", "StopNow", "StopRequests", "Stopped", "signal_name"]
