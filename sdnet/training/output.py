"""What a run writes into its directory: metrics lines, events, weights and checkpoints.

A file that cannot be written (disk full, I/O error) stops the run with
:class:`~sdnet.rundir.RunWriteError` naming the file and the error; the writes are atomic, so
the previous checkpoint stays whole and the run can be resumed once the disk is fixed.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from sdnet._io import WriteRefused
from sdnet.rundir import CHECKPOINT, METRICS, MetricsLog, RunWriteError

__all__ = ["RunOutput"]


class RunOutput:
    """The files of one run directory, written on the run's behalf.

    Parameters
    ----------
    run_dir : Path
    progress : sdnet.progress.Progress
        Closed before a failure is reported, so the message is not torn by a bar.
    """

    def __init__(self, run_dir: Path, progress: Any) -> None:
        self.run_dir, self.progress = run_dir, progress
        self.log = MetricsLog(run_dir / METRICS)
        self.checkpoint = run_dir / CHECKPOINT
        self.checkpoint_step: int | None = None  # the step of the checkpoint on disk, if known
        self.step = 0  # the step the run is at, for the messages

    def resume_hint(self) -> str:
        """How to continue this run."""
        return f"sdnet.train(resume={str(self.run_dir)!r}) or `sdnet train --resume {self.run_dir}`"

    def kept(self, what: str = "the last good checkpoint") -> str:
        """What is left on disk to resume from, for a message."""
        if self.checkpoint.is_file():
            return f"{what}, {self.checkpoint}, is kept"
        return "no checkpoint was written before it"

    def write(self, name: str, write: Callable[[Path], Any]) -> None:
        """``write(run_dir / name)``; an ``OSError`` stops the run (see the module docstring)."""
        path = self.run_dir / name
        try:
            write(path)
        except OSError as exc:
            self._failed(path, exc)

    def record(self, record: dict[str, Any]) -> None:
        """Append one line to ``metrics.jsonl``."""
        try:
            self.log.write(record)
        except RunWriteError as exc:
            cause = exc.__cause__
            self._failed(exc.path, cause if isinstance(cause, OSError) else exc)

    def event(self, kind: str, message: str) -> None:
        """Log an event (interruption, failure); a disk that refuses it is not an error here:
        the exception being raised carries the message."""
        try:
            self.log.write({"type": "event", "event": kind, "step": self.step, "message": message})
        except OSError:
            pass

    def _failed(self, path: Path, exc: OSError) -> NoReturn:
        self.progress.close()
        kept = (
            f"the previous checkpoint, {self.checkpoint} (step {self.checkpoint_step}), is intact"
            if self.checkpoint_step is not None and self.checkpoint.is_file()
            else "no checkpoint had been written yet"
        )
        if isinstance(exc, WriteRefused):  # something that is not sdnet's file is in the way
            why, fix = str(exc), f"Move {path} out of the way"
        else:
            code = errno.errorcode.get(exc.errno or 0)
            why = f"{exc.strerror or exc}" + (f" ({code})" if code else "")
            fix = "Free some disk space (or fix the disk)"
        msg = (
            f"training stopped: cannot write {path} at step {self.step}: {why}; {kept}. "
            f"{fix} and resume with {self.resume_hint()}"
        )
        self.event("write-failed", msg)
        raise RunWriteError(msg, path, exc) from exc
