"""The local executor: trials in worker processes on this machine, one per device slot.

Each trial runs in a new process (``python -m sdnet.sweep.trial``), started with its slot's
environment (thread counts, ``CUDA_VISIBLE_DEVICES``) so that the limits hold before
NumPy or CuPy is imported, and with its output in ``SWEEP_DIR/logs/<id>.log``. A process per
trial means a crash (an exception, the out-of-memory killer, SIGKILL) takes down that trial
only: it is recorded as failed and its slot takes the next trial.

Ctrl-C (or SIGTERM, SIGHUP) stops the sweep: each running trial is sent SIGINT, so it finishes its
step, writes a checkpoint and stops; those trials go back to ``pending`` and the next run of
the same sweep resumes them. Workers run in their own session, so a Ctrl-C in the terminal
reaches them once, through the sweep.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sdnet._io import check_target
from sdnet.sweep.devices import Slot
from sdnet.sweep.plan import Trial
from sdnet.sweep.status import Board
from sdnet.sweep.trial import OUTCOME_SUFFIX
from sdnet.training.signals import Interrupted, signal_name

__all__ = ["run_local"]

POLL = 0.1  # seconds between looks at the workers
STOP_GRACE = 120.0  # seconds an interrupted trial may take to checkpoint and stop


@dataclass
class _Worker:
    trial: Trial
    slot: Slot
    proc: subprocess.Popen[bytes]
    log: IO[bytes]


def run_local(
    board: Board,
    trials: list[Trial],
    slots: list[Slot],
    *,
    heartbeat: float = 60.0,
) -> None:
    """Run ``trials`` on ``slots``, at most one trial per slot at a time.

    Returns when every trial has ended; raises ``KeyboardInterrupt`` after stopping the
    running trials (their checkpoints are kept) on Ctrl-C (and on SIGTERM, which
    :func:`sdnet.sweep.run_plan` turns into one).
    """
    sweep_dir = board.sweep_dir
    (sweep_dir / "logs").mkdir(exist_ok=True)
    queue = list(trials)
    free = list(range(len(slots)))
    running: dict[int, _Worker] = {}
    last_beat = time.monotonic()
    try:
        while queue or running:
            while queue and free:
                i = free.pop(0)
                running[i] = _launch(board, queue.pop(0), slots[i])
            time.sleep(POLL)
            for i, w in list(running.items()):
                code = w.proc.poll()
                if code is None:
                    continue
                w.log.close()
                _finish(board, w, code)
                del running[i]
                free.append(i)
            if heartbeat and time.monotonic() - last_beat >= heartbeat:
                board.heartbeat([w.trial for w in running.values()])
                last_beat = time.monotonic()
    except KeyboardInterrupt as exc:
        _stop_all(board, list(running.values()))
        signum = getattr(exc, "signum", signal.SIGINT)
        raise Interrupted(
            f"sweep {sweep_dir} interrupted ({signal_name(signum)}); running trials were "
            "checkpointed. Rerun the same command to continue",
            signum,
        ) from None


def _launch(board: Board, trial: Trial, slot: Slot) -> _Worker:
    sweep_dir = board.sweep_dir
    outcome = sweep_dir / "status" / (trial.id + OUTCOME_SUFFIX)
    outcome.unlink(missing_ok=True)
    fresh = board.start(trial, slot.label)
    log = open(check_target(sweep_dir / "logs" / f"{trial.id}.log"), "ab")
    log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {trial.id} on {slot.label}\n".encode())
    log.flush()
    cmd = [sys.executable, "-m", "sdnet.sweep.trial", str(sweep_dir), trial.id, slot.device]
    if fresh:
        cmd.append("--fresh")
    env = {**os.environ, **slot.env, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    board.update(trial, pid=proc.pid)
    return _Worker(trial, slot, proc, log)


def _finish(board: Board, w: _Worker, code: int) -> None:
    outcome = _read_outcome(board.sweep_dir / "status" / (w.trial.id + OUTCOME_SUFFIX))
    if code == 0 and outcome and outcome.get("ok"):
        outcome.pop("ok")
        board.done(w.trial, outcome)
    elif code == 130:
        board.interrupted(w.trial)
    elif outcome and not outcome.get("ok") and outcome.get("error"):
        board.failed(w.trial, outcome["error"])
    elif code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        hint = " (the out-of-memory killer sends SIGKILL)" if name == "SIGKILL" else ""
        board.failed(w.trial, f"the trial's process was killed by {name}{hint}")
    else:
        board.failed(w.trial, f"the trial's process exited with status {code} and no result")


def _read_outcome(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    path.unlink(missing_ok=True)
    return record if isinstance(record, dict) else None


def _stop_all(board: Board, workers: list[_Worker]) -> None:
    """SIGINT to every running trial (checkpoint, then stop); SIGKILL to those still running
    after the grace period or at a second Ctrl-C (their previous checkpoints stay)."""
    for w in workers:
        if w.proc.poll() is None:
            try:
                w.proc.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + STOP_GRACE
    try:
        while any(w.proc.poll() is None for w in workers) and time.monotonic() < deadline:
            time.sleep(POLL)
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
        pass
    for w in workers:
        if w.proc.poll() is None:
            w.proc.kill()
        code = w.proc.wait()
        w.log.close()
        if code == 0:
            _finish(board, w, code)
        else:
            board.interrupted(w.trial)
