"""Signals: Ctrl-C (SIGINT), SIGTERM and SIGHUP all stop sdnet the same way.

During training the first of them does not interrupt the step in progress: it asks the loop
(:meth:`StopRequest.deferred`) to stop after the current step, which saves a checkpoint of that
state; a second one interrupts at once. Outside the loop (setting up a run, ``sdnet eval``,
``predict``, ``export``, a sweep's own process) one of them interrupts at once. Either way
:class:`Interrupted` is raised, a ``KeyboardInterrupt`` carrying the signal, and the command
line exits with ``128 + signal number``: 130 (SIGINT), 143 (SIGTERM), 129 (SIGHUP), the
statuses a shell gives a process killed by the signal.

The handlers are installed in the main thread only (where Python delivers signals) and the
handlers found before are put back afterwards, whatever they were. A signal that was ignored
when sdnet began (``nohup`` ignores SIGHUP; a background job of a non-interactive shell
ignores SIGINT) stays ignored, and so does one whose handler was set outside Python.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["StopRequest", "Interrupted", "STOP_SIGNALS", "exit_status"]

# the signals that stop sdnet, those this platform has (Windows has no SIGHUP)
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def exit_status(signum: int) -> int:
    """The exit status of a command stopped by ``signum``: ``128 + signum``."""
    return 128 + int(signum)


class Interrupted(KeyboardInterrupt):
    """sdnet was stopped by a signal (Ctrl-C, SIGTERM, SIGHUP); a ``KeyboardInterrupt``.

    Attributes
    ----------
    signum : int
        The signal (``signal.SIGINT`` for Ctrl-C).
    exit_status : int
        ``128 + signum``: what the ``sdnet`` command exits with.
    checkpointed : bool
        Whether a checkpoint of the last whole step was saved before it was raised.
    """

    def __init__(
        self, message: str = "", signum: int = signal.SIGINT, *, checkpointed: bool = False
    ) -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.exit_status = exit_status(signum)
        self.checkpointed = checkpointed

    @property
    def signal_name(self) -> str:
        """``"SIGTERM"`` (``"Ctrl-C"`` for SIGINT), for messages."""
        return signal_name(self.signum)


def signal_name(signum: int) -> str:
    """How messages name a signal: ``"Ctrl-C"`` for SIGINT, else ``"SIGTERM"`` etc."""
    if signum == signal.SIGINT:
        return "Ctrl-C"
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopRequest:
    """A context manager that turns SIGINT, SIGTERM and SIGHUP into :class:`Interrupted`, or,
    inside :meth:`deferred`, the first of them into :attr:`requested`.

    Attributes
    ----------
    requested : bool
        A signal asked to stop after the current step.
    signum : int or None
        The first signal received.
    """

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._defer = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in STOP_SIGNALS:
            old = signal.getsignal(sig)
            if old is signal.SIG_IGN or old is None:  # ignored, or not Python's to restore
                continue
            self._old[sig] = old
            signal.signal(sig, self._handle)
        return self

    @contextlib.contextmanager
    def deferred(self) -> Iterator[StopRequest]:
        """Within this block the first signal only sets :attr:`requested`."""
        self._defer = True
        try:
            yield self
        finally:
            self._defer = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self._defer and not self.requested:
            self.requested, self.signum = True, signum
            return
        raise Interrupted(signal_name(signum), signum)

    def __exit__(self, *exc: Any) -> None:
        old, self._old = self._old, {}
        for sig, handler in old.items():
            signal.signal(sig, handler)
