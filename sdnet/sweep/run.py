"""``sdnet.sweep``: train every trial of a plan, on this machine's devices or on Ray.

The sweep directory holds::

    sweep.json            the plan and its trials (a rerun must give the same plan)
    status/<id>.json      each trial's state: pending, running, done, failed (+ error)
    trials/<id>/          each trial's run directory (config.json, metrics.jsonl, ...)
    logs/<id>.log         each trial's output (local executor)
    attempts/<id>.<n>/    run directories of failed attempts, kept when a trial is retried
    results.csv           one row per trial
    summary.md            mean, std and count over seeds per configuration
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from sdnet.config import ConfigError
from sdnet.sweep.devices import local_slots, ray_resources
from sdnet.sweep.plan import SweepPlan, Trial, check_or_write_plan
from sdnet.sweep.results import RESULTS_CSV, SUMMARY_MD, write_tables
from sdnet.sweep.status import Board, SweepLock
from sdnet.training.signals import StopRequest

__all__ = ["sweep", "SweepResult"]

EXECUTORS = ("local", "ray")


@dataclass
class SweepResult:
    """What :func:`sweep` returns.

    Attributes
    ----------
    sweep_dir : Path
    status : dict
        Each trial's status record by trial id (``state``, ``final_accuracy``, ...,
        ``error``).
    done, failed, pending : list of str
        Trial ids by state at the end.
    results_csv, summary_md : Path
    """

    sweep_dir: Path
    status: dict[str, dict[str, Any]]
    done: list[str]
    failed: list[str]
    pending: list[str]
    results_csv: Path
    summary_md: Path


def sweep(
    base: dict[str, Any] | None = None,
    grid: dict[str, list[Any]] | None = None,
    seeds: Sequence[int] = (0,),
    *,
    out_dir: str | os.PathLike[str],
    random: dict[str, dict[str, Any]] | None = None,
    samples: int = 0,
    random_seed: int = 0,
    devices: str | Sequence[str] | None = "auto",
    executor: str = "local",
    address: str | None = None,
    max_concurrent: int | None = None,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 1,
    retry_failed: bool = False,
    heartbeat: float = 60.0,
    stream: TextIO | None = None,
) -> SweepResult:
    """Train every combination of ``grid`` (and ``random`` draws) once per seed.

    Parameters
    ----------
    base : dict
        Options of :func:`sdnet.train` shared by every trial (not ``seed``, ``device``,
        ``run_dir``, ``progress``). A relative ``data_dir`` is made absolute.
    grid : dict of str to list
        Values of each swept option; the Cartesian product is trained.
    seeds : sequence of int
        Each configuration is trained once per seed.
    out_dir : path
        The sweep directory. Rerunning with the same plan and directory skips finished
        trials and resumes interrupted ones; a different plan is refused.
    random, samples, random_seed
        Random search: ``samples`` draws per grid point from ranges such as
        ``{"lr": {"low": 1e-3, "high": 0.3, "log": True}}`` (see :class:`SweepPlan`).
    devices : "auto", "cpu", "gpu" or list of str
        Local: ``["cuda:0", "cuda:1"]`` runs one worker per GPU; ``"cpu"`` as many workers as
        cores, each told to use ``cores // workers`` threads. Ray: ``"cpu"``, ``"gpu"``
        or ``"auto"``.
    executor : "local" or "ray"
    address : str, optional
        Ray only: ``None`` starts a local Ray instance, ``"auto"`` or ``"ray://host:port"``
        joins a cluster.
    max_concurrent : int, optional
        At most this many trials at once (default: one per device slot, or what the Ray
        cluster holds).
    cpus_per_trial, gpus_per_trial : float
        Ray only: resources each trial task reserves.
    retry_failed : bool
        Run failed trials again (their old run directories are kept under ``attempts/``).
    heartbeat : float
        Seconds between lines listing the running trials (0: none).
    stream : file, optional
        Where progress lines go (default: stderr).

    Returns
    -------
    SweepResult
        Failed trials do not raise: they are listed in ``failed`` with their errors in
        ``status``.

    Raises
    ------
    ConfigError
        A bad plan or setting, before anything runs.
    SweepError
        ``out_dir`` holds another plan, or another sweep is running in it.
    sdnet.Interrupted
        A ``KeyboardInterrupt``: after Ctrl-C, SIGTERM or SIGHUP, once the running trials have
        checkpointed (they resume when the sweep is run again).
    """
    plan = SweepPlan(
        base=dict(base or {}),
        grid={k: list(v) for k, v in (grid or {}).items()},
        seeds=list(seeds),
        random=dict(random or {}),
        samples=samples,
        random_seed=random_seed,
    )
    plan = plan.with_absolute_data_dir(Path.cwd()).validate()
    return run_plan(
        plan,
        out_dir,
        devices=devices,
        executor=executor,
        address=address,
        max_concurrent=max_concurrent,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        retry_failed=retry_failed,
        heartbeat=heartbeat,
        stream=stream,
    )


def run_plan(
    plan: SweepPlan,
    out_dir: str | os.PathLike[str],
    *,
    devices: str | Sequence[str] | None = "auto",
    executor: str = "local",
    address: str | None = None,
    max_concurrent: int | None = None,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 1,
    retry_failed: bool = False,
    heartbeat: float = 60.0,
    stream: TextIO | None = None,
) -> SweepResult:
    """Run a validated :class:`SweepPlan` in ``out_dir`` (what :func:`sweep` does after
    building the plan; ``sdnet sweep FILE.toml`` calls it with the file's plan)."""
    # the plan and every setting are checked before the sweep directory is touched
    plan.validate()
    _check_settings(
        executor,
        address,
        devices,
        max_concurrent=max_concurrent,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        heartbeat=heartbeat,
        n_trials=plan.count(),
    )
    stream = stream or sys.stderr
    sweep_dir = Path(out_dir).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with StopRequest(), SweepLock(sweep_dir):  # Ctrl-C, SIGTERM, SIGHUP: see run_local
        trials = check_or_write_plan(sweep_dir, plan)
        board = Board(sweep_dir, trials, stream, on_change=lambda: write_tables(sweep_dir))
        todo = board.todo(retry_failed)
        _announce(sweep_dir, plan, board, todo, stream)
        if todo and executor == "local":
            _launch_local(board, todo, devices, max_concurrent, heartbeat, stream)
        elif todo:
            from sdnet.sweep.ray_executor import run_ray

            run_ray(
                board,
                todo,
                plan.base,
                devices=devices,
                address=address,
                max_concurrent=max_concurrent,
                cpus_per_trial=cpus_per_trial,
                gpus_per_trial=gpus_per_trial,
                heartbeat=heartbeat,
            )
        return _finish(sweep_dir, board, stream)


def _check_settings(
    executor: str,
    address: str | None,
    devices: str | Sequence[str] | None,
    *,
    max_concurrent: int | None,
    cpus_per_trial: float,
    gpus_per_trial: float,
    heartbeat: float,
    n_trials: int,
) -> None:
    """Raise ConfigError for a bad executor, address, device or other setting (writes
    nothing)."""
    if executor not in EXECUTORS:
        raise ConfigError(f"executor={executor!r} is not valid: use 'local' or 'ray'")
    if address is not None and executor != "ray":
        raise ConfigError("address is for the Ray executor: add executor='ray' (--executor ray)")
    if isinstance(heartbeat, bool) or not isinstance(heartbeat, (int, float)):
        raise ConfigError(f"heartbeat must be a number of seconds, got {heartbeat!r}")
    if not (math.isfinite(heartbeat) and heartbeat >= 0):
        raise ConfigError(f"heartbeat must be >= 0 seconds (0: none), got {heartbeat!r}")
    if executor == "local":
        local_slots(devices, max_concurrent=max_concurrent, n_trials=n_trials)
    else:
        from sdnet.sweep.ray_executor import import_ray

        ray_resources(devices, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial)
        import_ray()  # Ray missing: say how to install it, before anything is written


def _announce(
    sweep_dir: Path, plan: SweepPlan, board: Board, todo: list[Trial], stream: TextIO
) -> None:
    """Print the sweep's opening line: trials, configurations, seeds, done and to run."""
    skipped = board.count("failed") - (sum(1 for t in todo if _failed(board, t)))
    n_configs = len(plan.configurations())
    print(
        f"sweep {sweep_dir}: {len(board.trials)} trials ({n_configs} configurations x "
        f"{len(plan.seeds)} seeds); {board.count('done')} done, {len(todo)} to run"
        + (f", {skipped} failed not retried (retry_failed / --retry-failed)" if skipped else ""),
        file=stream,
        flush=True,
    )


def _launch_local(
    board: Board,
    todo: list[Trial],
    devices: str | Sequence[str] | None,
    max_concurrent: int | None,
    heartbeat: float,
    stream: TextIO,
) -> None:
    """Run ``todo`` on this machine's device slots, after a line naming the workers."""
    from sdnet.sweep.local import run_local

    slots = local_slots(devices, max_concurrent=max_concurrent, n_trials=len(todo))
    threads = slots[0].env["SDNET_NUM_THREADS"]
    print(
        f"local executor: {len(slots)} worker(s) on "
        f"{', '.join(s.label for s in slots)}; {threads} thread(s) each",
        file=stream,
        flush=True,
    )
    run_local(board, todo, slots, heartbeat=heartbeat)


def _finish(sweep_dir: Path, board: Board, stream: TextIO) -> SweepResult:
    """Write the tables, print the closing line and collect trial ids by final state."""
    csv_path, md_path = write_tables(sweep_dir)
    by_state = {
        s: [t.id for t in board.trials if board.status[t.id].get("state") == s]
        for s in ("done", "failed", "pending")
    }
    print(
        f"{board.counts()} sweep finished; tables in {sweep_dir / RESULTS_CSV} and "
        f"{sweep_dir / SUMMARY_MD}",
        file=stream,
        flush=True,
    )
    return SweepResult(
        sweep_dir,
        dict(board.status),
        by_state["done"],
        by_state["failed"],
        by_state["pending"],
        csv_path,
        md_path,
    )


def _failed(board: Board, trial: Any) -> bool:
    return board.status[trial.id].get("state") == "failed"
