"""The Ray executor: each trial a Ray task that reserves one GPU (or its CPUs).

Needs Ray (``pip install 'sdnet[sweep]'``), imported only here. ``address=None`` starts a
local Ray instance for the sweep (and stops it at the end); ``"auto"`` joins the cluster
this machine belongs to, ``"ray://host:10001"`` connects to a remote one through Ray Client.
When Ray is already initialised (``ray.init(...)`` called before, e.g. with a
``runtime_env``), that connection is used as it is and left open.

What travels: the task runs :func:`sdnet.sweep.trial.run_trial`, which Ray finds by module
name, so every node needs the same sdnet installed (and CuPy on GPU nodes); the trial's
options (``data_dir`` included) go with the task as plain values, so a ``data_dir`` must be a
path that exists on every node (or leave it unset: each node then looks in
``$SDNET_DATA`` and its own cache, and downloads when allowed). Each trial writes its run
directory at ``SWEEP_DIR/trials/<id>`` on the node that runs it, so put ``out_dir`` on a
file system every node shares to keep run directories in one place; the results
(accuracies, seconds, host) come back with the task either way.

A task runs in a fresh worker process (``max_calls=1``: the GPU's memory is freed after each
trial), told by ``runtime_env`` how many threads to use (its CPUs, as a local worker is). A
worker that dies (SIGKILL, out of memory) fails its trial only (``max_retries=0``: a crash is
recorded, not hidden). Ctrl-C cancels the running tasks (Ray raises ``KeyboardInterrupt`` in
them) and puts their trials back to ``pending``; the next run resumes each from its last
checkpoint.
"""

from __future__ import annotations

import math
import os
import signal
import time
from typing import Any, NoReturn

from sdnet.config import ConfigError
from sdnet.sweep.devices import ray_resources, thread_env
from sdnet.sweep.plan import Trial
from sdnet.sweep.status import Board
from sdnet.sweep.trial import TESTING_KILL_ENV, error_text, run_trial
from sdnet.training.signals import Interrupted, signal_name

__all__ = ["run_ray"]

STOP_GRACE = 120.0


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(
            "the Ray executor needs Ray: pip install 'sdnet[sweep]' (or pip install ray)"
        ) from None
    return ray


def _trial_task(
    trial_id: str, options: dict[str, Any], sweep_dir: str, device: str, fresh: bool
) -> dict[str, Any]:
    """The body of a Ray trial task; adds the node's name of the GPU it ran on."""
    import ray

    summary = run_trial(trial_id, options, sweep_dir, device, fresh=fresh)
    gpu_ids = ray.get_gpu_ids()  # the node's numbering, before CUDA_VISIBLE_DEVICES
    summary["device"] = f"cuda:{gpu_ids[0]}" if gpu_ids else device
    return summary


def run_ray(
    board: Board,
    trials: list[Trial],
    base: dict[str, Any],
    *,
    devices: Any = "auto",
    address: str | None = None,
    max_concurrent: int | None = None,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 1,
    heartbeat: float = 60.0,
) -> None:
    """Run ``trials`` as Ray tasks; see the module docstring."""
    ray = import_ray()
    if max_concurrent is not None and (
        isinstance(max_concurrent, bool)
        or not isinstance(max_concurrent, int)
        or max_concurrent < 1
    ):
        raise ConfigError(f"max_concurrent must be a whole number >= 1, got {max_concurrent!r}")
    if max_concurrent is not None:
        max_concurrent = min(max_concurrent, len(trials))  # never more tasks than trials
    started_here = not ray.is_initialized()
    if started_here:
        if address is None:
            ray.init(include_dashboard=False)
        else:
            ray.init(address=address)
    try:
        _run(
            ray,
            board,
            trials,
            base,
            devices,
            max_concurrent,
            cpus_per_trial,
            gpus_per_trial,
            heartbeat,
        )
    finally:
        if started_here:
            ray.shutdown()


def _run(
    ray: Any,
    board: Board,
    trials: list[Trial],
    base: dict[str, Any],
    devices: Any,
    max_concurrent: int | None,
    cpus_per_trial: float,
    gpus_per_trial: float,
    heartbeat: float,
) -> None:
    """Size the trial task for the cluster, then keep up to its capacity of trials running."""
    cluster = ray.cluster_resources()
    resources, device = ray_resources(
        devices,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        cluster_gpus=cluster.get("GPU", 0),
    )
    capacity = _capacity(cluster, resources, max_concurrent)
    task = _remote_task(ray, resources)
    label = "cpu" if device == "cpu" else "gpu"
    running: dict[Any, Trial] = {}
    try:
        _launch_loop(ray, board, trials, base, task, device, label, capacity, heartbeat, running)
    except KeyboardInterrupt as exc:
        _stop(ray, board, running, label, getattr(exc, "signum", signal.SIGINT))


def _capacity(
    cluster: dict[str, float], resources: dict[str, float], max_concurrent: int | None
) -> int:
    """Trials the cluster runs at once; ConfigError when it cannot hold even one."""
    kind, need = ("GPU", resources["num_gpus"]) if resources["num_gpus"] else ("CPU", None)
    need = need or resources["num_cpus"]
    have = cluster.get(kind, 0)
    if have < need:
        raise ConfigError(
            f"the Ray cluster has {have:g} {kind}(s) but each trial asks for {need:g}: "
            f"lower {'gpus' if kind == 'GPU' else 'cpus'}_per_trial or add nodes"
        )
    return max_concurrent or max(1, int(have // need))


def _remote_task(ray: Any, resources: dict[str, float]) -> Any:
    """The Ray remote of :func:`_trial_task`: one fresh worker per trial, no retries."""
    env = thread_env(max(1, math.floor(resources["num_cpus"])))
    if os.environ.get(TESTING_KILL_ENV):
        env[TESTING_KILL_ENV] = os.environ[TESTING_KILL_ENV]
    return ray.remote(max_calls=1, max_retries=0)(_trial_task).options(
        **resources, runtime_env={"env_vars": env}
    )


def _launch_loop(
    ray: Any,
    board: Board,
    trials: list[Trial],
    base: dict[str, Any],
    task: Any,
    device: str,
    label: str,
    capacity: int,
    heartbeat: float,
    running: dict[Any, Trial],
) -> None:
    """Submit trials while fewer than ``capacity`` run, record each as it ends, until all
    have; ``running`` (task reference -> trial) is filled in place for :func:`_stop`."""
    queue = list(trials)
    sweep_dir = str(board.sweep_dir)
    last_beat = time.monotonic()
    while queue or running:
        while queue and len(running) < capacity:
            trial = queue.pop(0)
            fresh = board.start(trial, f"ray:{label}", log=None)
            ref = task.remote(trial.id, trial.options(base), sweep_dir, device, fresh)
            running[ref] = trial
        ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
        for ref in ready:
            _finish(ray, board, running.pop(ref), ref, label)
        if heartbeat and time.monotonic() - last_beat >= heartbeat:
            board.heartbeat(list(running.values()))
            last_beat = time.monotonic()


def _stop(ray: Any, board: Board, running: dict[Any, Trial], label: str, signum: int) -> NoReturn:
    """After Ctrl-C (or SIGTERM, SIGHUP: ``signum``): cancel the running tasks, record those
    that still finished, put the others back to pending, and raise ``Interrupted``."""
    for ref in running:
        ray.cancel(ref)  # a KeyboardInterrupt in the task: it checkpoints and stops
    ready, _ = ray.wait(list(running), num_returns=len(running), timeout=STOP_GRACE)
    for ref, trial in running.items():
        if ref in ready and _succeeded(ray, ref):
            _finish(ray, board, trial, ref, label)
        else:
            board.interrupted(trial)
    raise Interrupted(
        f"sweep {board.sweep_dir} interrupted ({signal_name(signum)}); running trials were "
        "checkpointed. Rerun the same command to continue",
        signum,
    ) from None


def _succeeded(ray: Any, ref: Any) -> bool:
    try:
        ray.get(ref)
    except Exception:
        return False
    return True


def _finish(ray: Any, board: Board, trial: Trial, ref: Any, label: str) -> None:
    try:
        summary = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:  # the trial raised
        cause = getattr(exc, "cause", None)
        board.failed(trial, error_text(cause) if cause is not None else _first_line(exc))
        return
    except ray.exceptions.RayError as exc:  # the worker died (SIGKILL, OOM), node lost, ...
        board.failed(trial, f"{type(exc).__name__}: {_first_line(exc)}")
        return
    summary["device"] = f"{summary.get('device', label)}@{summary.get('host', '?')}"
    board.done(trial, summary)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(exc).__name__
