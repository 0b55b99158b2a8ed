"""One trial, in the process that trains it (a local worker or a Ray task).

:func:`run_trial` prepares the trial's run directory, calls :func:`sdnet.train` and returns a
summary (accuracies, epochs, seconds, host). Its run directory is reused as follows:

* empty or absent: a new run;
* holding a checkpoint of an interrupted attempt (the sweep was stopped, not the trial
  failed): the run continues from it (``sdnet.train(resume=...)``), exactly;
* anything else (a failed attempt being retried, or files without a checkpoint): the old
  directory is moved to ``SWEEP_DIR/attempts/<id>.<n>`` (never deleted) and the run starts
  afresh.

``python -m sdnet.sweep.trial SWEEP_DIR TRIAL_ID DEVICE`` is how the local executor starts
a worker: the trial's options come from ``SWEEP_DIR/sweep.json``, the outcome goes to
``SWEEP_DIR/status/<id>.outcome.json``. The exit status is 0 (done), 1 (failed: the outcome
holds the error), or 130 (interrupted; resumable). A worker whose parent (the sweep) dies
interrupts itself, so that it checkpoints and stops instead of running on unattended.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["run_trial", "main"]

# Testing only: a comma-separated list of trial ids whose process kills itself with SIGKILL
# when the trial starts. It lets the tests check that a crashed trial is recorded as failed.
TESTING_KILL_ENV = "SDNET_SWEEP_TESTING_KILL"

OUTCOME_SUFFIX = ".outcome.json"


def _testing_kill(trial_id: str) -> None:
    if trial_id in os.environ.get(TESTING_KILL_ENV, "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)


def _move_aside(run_dir: Path, attempts: Path) -> Path:
    attempts.mkdir(parents=True, exist_ok=True)
    n = 1
    while (attempts / f"{run_dir.name}.{n}").exists():
        n += 1
    target = attempts / f"{run_dir.name}.{n}"
    shutil.move(str(run_dir), str(target))
    return target


def run_trial(
    trial_id: str,
    options: dict[str, Any],
    sweep_dir: str | os.PathLike[str],
    device: str,
    *,
    fresh: bool = False,
) -> dict[str, Any]:
    """Train one trial into ``SWEEP_DIR/trials/<trial_id>`` and summarize it.

    Parameters
    ----------
    trial_id : str
    options : dict
        Options of :func:`sdnet.train` (without ``run_dir``, ``device``, ``progress``).
    sweep_dir : path
    device : str
        The device string in this process (``"cpu"``, ``"cuda:0"``).
    fresh : bool
        Start afresh even where a checkpoint could be resumed (a failed trial retried).

    Returns
    -------
    dict
        ``final_accuracy``, ``best_accuracy``, ``epochs``, ``seconds`` (wall clock of the
        trial, data loading included), ``train_seconds``, ``host``, ``resumed``.
    """
    import sdnet
    from sdnet.rundir import CHECKPOINT, CONFIG

    _testing_kill(trial_id)
    start = time.perf_counter()
    sweep_dir = Path(sweep_dir)
    run_dir = sweep_dir / "trials" / trial_id
    resumable = (run_dir / CHECKPOINT).is_file() and (run_dir / CONFIG).is_file()
    if run_dir.is_dir() and any(run_dir.iterdir()) and (fresh or not resumable):
        _move_aside(run_dir, sweep_dir / "attempts")
        resumable = False
    if resumable:
        where = {k: options[k] for k in ("data_dir", "download") if k in options}
        result = sdnet.train(resume=run_dir, device=device, progress=False, **where)
    else:
        result = sdnet.train(**options, run_dir=str(run_dir), device=device, progress=False)
    history = result.history
    if result.best is not None:
        best = float(result.best["test_accuracy"])
    else:
        best = max(float(h["test_accuracy"]) for h in history)
    return {
        "final_accuracy": float(result.test_accuracy),
        "best_accuracy": best,
        "epochs": int(history[-1]["epoch"]),
        "seconds": round(time.perf_counter() - start, 3),
        "train_seconds": round(sum(float(h["seconds"]) for h in history), 3),
        "host": socket.gethostname(),
        "resumed": resumable,
    }


def error_text(exc: BaseException) -> str:
    """One line naming the error: ``"ConfigError: lr=-1 is not valid: ..."``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _watch_parent() -> None:
    """Interrupt this process (SIGINT: checkpoint, then stop) if the sweep process dies."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(2.0)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGINT)
                return

    threading.Thread(target=watch, daemon=True, name="sdnet-sweep-parent-watch").start()


def main(argv: list[str] | None = None) -> int:
    """Run one trial of a sweep directory (the local executor's worker process)."""
    from sdnet._io import atomic_write_bytes
    from sdnet.sweep.plan import read_sweep

    # SIGINT is how the sweep asks this worker to checkpoint and stop: honour it even when the
    # sweep was started with SIGINT ignored (a background job), which this process inherited
    signal.signal(signal.SIGINT, signal.default_int_handler)
    argv = sys.argv[1:] if argv is None else argv
    fresh = "--fresh" in argv
    sweep_dir, trial_id, device = [a for a in argv if a != "--fresh"]
    outcome = Path(sweep_dir) / "status" / (trial_id + OUTCOME_SUFFIX)

    def report(record: dict[str, Any]) -> None:
        text = json.dumps(record, sort_keys=True)
        atomic_write_bytes(outcome, lambda fh: fh.write(text.encode()))

    _watch_parent()
    threads = ", ".join(
        f"{k}={os.environ[k]}"
        for k in ("SDNET_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
        if k in os.environ
    )
    print(
        f"sdnet sweep: trial {trial_id} on {device} (pid {os.getpid()}, {threads})",
        file=sys.stderr,
        flush=True,
    )
    try:
        plan, trials = read_sweep(sweep_dir)
        trial = next(t for t in trials if t.id == trial_id)
        summary = run_trial(trial_id, trial.options(plan.base), sweep_dir, device, fresh=fresh)
    except KeyboardInterrupt as exc:
        print(f"sdnet sweep: trial {trial_id} interrupted: {exc}", file=sys.stderr)
        return 130
    except BaseException as exc:
        traceback.print_exc()
        report({"ok": False, "error": error_text(exc)})
        return 1
    report({"ok": True, **summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
