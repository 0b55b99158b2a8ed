"""Per-trial status in ``SWEEP_DIR/status/<id>.json``, the directory lock, progress lines.

Each trial is ``pending``, ``running``, ``done`` or ``failed`` (with its error). Only the
sweep process writes these files, each atomically, so a crash at any moment leaves every one
readable. A trial still ``running`` when a new sweep process starts was cut off with its
sweep (the lock proves no other sweep runs there): it is put back to ``pending`` and resumes
from its checkpoint.

Progress goes to one stream as plain lines, one when a trial starts and one when it ends,
each with the overall count, so a log file reads like this::

    [0/4 done, 1 running] start 000-p_last=0.5-seed=0 on cpu
    [0/4 done, 2 running] start 001-p_last=1-seed=0 on cpu
    [0/4 done, 1 failed, 1 running] FAILED 001-p_last=1-seed=0: the trial's process was
        killed by SIGKILL (...); see logs/001-p_last=1-seed=0.log
    [1/4 done, 1 failed] done  000-p_last=0.5-seed=0: accuracy 97.31% (best 97.31%),
        epochs 1, 8.2 s, cpu

(one line each; wrapped here),
and, every ``heartbeat`` seconds while trials run, one line naming each running trial with
its last logged epoch and step.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from sdnet._io import atomic_write_bytes, check_target
from sdnet.sweep.plan import SweepError, Trial

__all__ = ["Board", "SweepLock", "STATES", "read_statuses"]

STATES = ("pending", "running", "done", "failed")


def _status_path(sweep_dir: Path, trial_id: str) -> Path:
    return sweep_dir / "status" / f"{trial_id}.json"


def read_statuses(sweep_dir: Path, trials: list[Trial]) -> dict[str, dict[str, Any]]:
    """The status record of every trial (``{"state": "pending"}`` where none was written)."""
    out = {}
    for t in trials:
        path = _status_path(sweep_dir, t.id)
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            record = {"state": "pending"}
        except (OSError, json.JSONDecodeError) as exc:
            raise SweepError(f"status file {path} is unreadable: {exc}") from exc
        out[t.id] = record
    return out


class SweepLock:
    """An exclusive lock on ``SWEEP_DIR/.lock`` for as long as a sweep runs there."""

    def __init__(self, sweep_dir: Path) -> None:
        self.path = sweep_dir / ".lock"
        self._fh: Any = None

    def __enter__(self) -> SweepLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_target(self.path)  # a link or a device planted as .lock is never written
        self._fh = open(self.path, "a+")
        try:
            import fcntl
        except ImportError:  # no advisory locks on this OS: go on unlocked
            return self
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.seek(0)
            holder = self._fh.read().strip()
            self._fh.close()
            raise SweepError(
                f"another sdnet sweep is running in {self.path.parent} ({holder or 'pid ?'}); "
                "wait for it to end or stop it first"
            ) from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"pid {os.getpid()}\n")
        self._fh.flush()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.close()  # closing releases the lock


class Board:
    """The sweep's view of its trials: states on disk, counts, progress lines.

    Parameters
    ----------
    sweep_dir : Path
    trials : list of Trial
    stream : file, optional
        Where progress lines go (default: stderr).
    on_change : callable, optional
        Called after each trial ends (the sweep rewrites its tables then).
    """

    def __init__(
        self,
        sweep_dir: Path,
        trials: list[Trial],
        stream: TextIO | None = None,
        on_change: Any = None,
    ) -> None:
        self.sweep_dir = sweep_dir
        self.trials = trials
        self.stream = stream or sys.stderr
        self.on_change = on_change
        self.status = read_statuses(sweep_dir, trials)
        for tid, record in self.status.items():
            if record.get("state") == "running":  # cut off with its sweep: resume it
                record.update(state="pending", note="interrupted; resumes from its checkpoint")
                self._write(tid)

    # -- queries ----------------------------------------------------------------------------
    def count(self, state: str) -> int:
        return sum(1 for r in self.status.values() if r.get("state") == state)

    def todo(self, retry_failed: bool) -> list[Trial]:
        """Trials to run now: pending ones, and failed ones when ``retry_failed``."""
        wanted = ("pending", "failed") if retry_failed else ("pending",)
        return [t for t in self.trials if self.status[t.id].get("state") in wanted]

    def counts(self) -> str:
        text = f"[{self.count('done')}/{len(self.trials)} done"
        for state in ("failed", "running"):
            if self.count(state):
                text += f", {self.count(state)} {state}"
        return text + "]"

    # -- transitions ------------------------------------------------------------------------
    def start(self, trial: Trial, label: str, **extra: Any) -> bool:
        """Mark ``trial`` running on ``label``; returns whether it is a retry of a failure
        (so the trial starts afresh)."""
        old = self.status[trial.id]
        retry = old.get("state") == "failed"
        self.status[trial.id] = {
            "state": "running",
            "device": label,
            "attempt": int(old.get("attempt", 0)) + 1,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "run_dir": f"trials/{trial.id}",
            "log": f"logs/{trial.id}.log",
            **extra,
        }
        self._write(trial.id)
        self.say(f"start {trial.id} on {label}")
        return retry

    def update(self, trial: Trial, **fields: Any) -> None:
        """Add ``fields`` to the trial's record (e.g. its process id)."""
        self.status[trial.id].update(fields)
        self._write(trial.id)

    def done(self, trial: Trial, summary: dict[str, Any]) -> None:
        record = self.status[trial.id]
        record.update(summary, state="done", finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        record.pop("error", None)
        record.pop("pid", None)
        self._write(trial.id)
        self.say(
            f"done  {trial.id}: accuracy {100 * summary['final_accuracy']:.2f}% "
            f"(best {100 * summary['best_accuracy']:.2f}%), epochs {summary['epochs']}, "
            f"{summary['seconds']:.1f} s, {record.get('device')}"
        )
        self._changed()

    def failed(self, trial: Trial, error: str) -> None:
        record = self.status[trial.id]
        record.update(state="failed", error=error, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        record.pop("pid", None)
        self._write(trial.id)
        where = record.get("log")
        self.say(f"FAILED {trial.id}: {error}" + (f"; see {where}" if where else ""))
        self._changed()

    def interrupted(self, trial: Trial) -> None:
        record = self.status[trial.id]
        record.update(state="pending", note="interrupted; resumes from its checkpoint")
        record.pop("pid", None)
        self._write(trial.id)
        self.say(f"interrupted {trial.id} (resumes on the next run)")

    # -- output -----------------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(f"{self.counts()} {text}", file=self.stream, flush=True)

    def heartbeat(self, running: list[Trial]) -> None:
        """One line naming each running trial and where its training is."""
        parts = []
        for t in running:
            where = _last_position(self.sweep_dir / "trials" / t.id / "metrics.jsonl")
            parts.append(f"{t.id} ({where})" if where else t.id)
        if parts:
            self.say("running: " + ", ".join(parts))

    def _write(self, trial_id: str) -> None:
        text = json.dumps(self.status[trial_id], indent=2, sort_keys=True) + "\n"
        atomic_write_bytes(
            _status_path(self.sweep_dir, trial_id), lambda fh: fh.write(text.encode())
        )

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


def _last_position(metrics: Path) -> str | None:
    """``"epoch 2, step 300"`` from the last line of a run's ``metrics.jsonl``, if readable."""
    try:
        with open(metrics, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "step" in r:
            epoch = r.get("epoch")
            return f"epoch {epoch}, step {r['step']}" if epoch is not None else f"step {r['step']}"
    return None
