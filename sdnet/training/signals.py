"""Signals during training: the first Ctrl-C asks the loop to stop after the current step.

The loop checks :attr:`StopRequest.requested` between steps, so the checkpoint it then saves
is the state after a whole step; a second Ctrl-C interrupts at once. The handler is installed
in the main thread only (where Python delivers signals) and the handler found before is put
back afterwards, whatever it was. A SIGINT that was ignored when training began (a background
job of a non-interactive shell) stays ignored.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["StopRequest"]


class StopRequest:
    """A context manager turning the first SIGINT into :attr:`requested`."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None
        self._installed = False

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is not threading.main_thread():
            return self
        old = signal.getsignal(signal.SIGINT)
        if old is not signal.SIG_IGN:
            self._old = old
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._old)
            self._installed = False
