"""Progress output: tqdm bars on a terminal, plain log lines elsewhere (files, CI logs)."""

from __future__ import annotations

import sys
from typing import Any, TextIO

__all__ = ["Progress", "want_bars"]


def want_bars(progress: bool | None, stream: TextIO | None = None) -> bool:
    """``progress=None`` means: bars when the output stream is a terminal."""
    if progress is not None:
        return bool(progress)
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class Progress:
    """One bar per epoch (``bars=True``) or one line per log interval and per epoch.

    Parameters
    ----------
    bars : bool
        tqdm bars with live loss, accuracy and images per second.
    stream : file, optional
        Where to write (default: stderr, like tqdm).
    """

    def __init__(self, bars: bool, stream: TextIO | None = None) -> None:
        self.bars = bars
        self.stream = stream or sys.stderr
        self._bar: Any = None

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int = 0) -> None:
        if not self.bars:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=total,
            initial=done,
            desc=f"epoch {epoch}/{epochs}",
            unit="step",
            file=self.stream,
            dynamic_ncols=True,
            leave=True,
        )

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def show(self, values: dict[str, Any], line: str) -> None:
        """Live values on the bar, or ``line`` written as a plain log line."""
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)
        else:
            self.write(line)

    def end_epoch(self, line: str) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.write(line)

    def write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
