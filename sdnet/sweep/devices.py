"""Which worker runs where: device slots of the local executor and resources of Ray tasks.

Local executor: one slot per worker, each running one trial at a time in its own process.

* ``"cpu"``: as many workers as cores (``max_concurrent`` sets fewer), each given
  ``cores // workers`` threads, so the machine is never oversubscribed (:func:`thread_env`);
* ``"gpu"``: one worker per visible CUDA device; ``["cuda:0", "cuda:1"]``: one per entry
  (an entry given twice runs two trials on that GPU). A GPU worker sees only its own GPU
  (``CUDA_VISIBLE_DEVICES``), where it is ``cuda:0``; results record the machine's name for
  it (``cuda:1``). An existing ``CUDA_VISIBLE_DEVICES`` is respected: with ``"2,3"``,
  ``cuda:1`` is physical GPU 3;
* ``"auto"`` (default): ``"gpu"`` when CuPy sees a CUDA device, else ``"cpu"``.

Ray executor: ``devices`` is ``"cpu"``, ``"gpu"`` or ``"auto"``; each trial is a task that
reserves ``gpus_per_trial`` GPUs (Ray picks which and sets ``CUDA_VISIBLE_DEVICES``) or
``cpus_per_trial`` cores.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sdnet.config import ConfigError
from sdnet.sweep.plan import MAX_TRIALS

__all__ = ["Slot", "local_slots", "ray_resources", "thread_env", "cpu_count", "gpu_count"]

BLAS_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


@dataclass(frozen=True)
class Slot:
    """One local worker: ``label`` is the device as results record it (``"cuda:1"``),
    ``device`` what the trial's process passes to :func:`sdnet.train`, ``env`` the variables
    set in that process before anything is imported."""

    label: str
    device: str
    env: dict[str, str] = field(default_factory=dict)


def thread_env(threads: int) -> dict[str, str]:
    """Environment of a worker that may use ``threads`` cores.

    sdnet's own kernel threads (``SDNET_NUM_THREADS``: the convolution's image blocks run in
    parallel) get the ``threads``, and every BLAS / OpenMP library is told to use one thread
    per call, as ``sdnet._threads`` advises: the two kinds of threads would otherwise compete
    for the same cores. With one core per worker (the default on a CPU) everything is 1.
    """
    return {"SDNET_NUM_THREADS": str(threads), **{name: "1" for name in BLAS_VARS}}


def cpu_count() -> int:
    """Cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def gpu_count() -> int:
    """CUDA devices CuPy sees (0 without CuPy or a usable driver)."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no CuPy, no driver, no device: all mean "no GPU"
        return 0


def _gpu_index(spec: str) -> int | None:
    """``"gpu"``, ``"cuda"`` -> 0; ``"cuda:N"`` -> N; anything else -> None."""
    if spec in ("gpu", "cuda"):
        return 0
    if spec.startswith("cuda:"):
        tail = spec[5:]
        if not tail.isdigit():
            raise ConfigError(f"bad device {spec!r}: use cuda:N with N a GPU number")
        return int(tail)
    return None


def local_slots(
    devices: str | Sequence[str] | None,
    *,
    max_concurrent: int | None = None,
    n_trials: int | None = None,
    cores: int | None = None,
    gpus: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Slot]:
    """The workers of the local executor.

    Parameters
    ----------
    devices : "auto", "cpu", "gpu", or a list of device strings
        See the module docstring.
    max_concurrent : int, optional
        At most this many workers (and never more than the trials to run, or than
        :data:`~sdnet.sweep.plan.MAX_TRIALS`).
    n_trials : int, optional
        No more workers than trials to run.
    cores, gpus, environ : optional
        The machine's core count, CUDA device count and environment (default: this one's).

    Returns
    -------
    list of Slot
    """
    environ = os.environ if environ is None else environ
    cores = cpu_count() if cores is None else cores
    if max_concurrent is not None and (
        isinstance(max_concurrent, bool)
        or not isinstance(max_concurrent, int)
        or max_concurrent < 1
    ):
        raise ConfigError(f"max_concurrent must be a whole number >= 1, got {max_concurrent!r}")
    if max_concurrent is not None:  # never more workers than trials to run
        max_concurrent = min(max_concurrent, n_trials or MAX_TRIALS)
    specs = _device_specs(devices, max_concurrent, n_trials, cores, gpus)
    if max_concurrent is not None:
        specs = specs[:max_concurrent]
    threads = thread_env(max(1, cores // len(specs)))
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    # set (even to ""): only the GPUs it lists exist for CUDA here
    listed = None if visible is None else [v.strip() for v in visible.split(",") if v.strip()]
    slots = []
    for spec in specs:
        index = _gpu_index(spec)
        if index is None:
            slots.append(Slot(spec, spec, dict(threads)))
            continue
        physical = str(index) if listed is None else _physical_gpu(index, visible, listed)
        env = dict(threads, CUDA_VISIBLE_DEVICES=physical)
        slots.append(Slot(f"cuda:{index}", "cuda:0", env))
    return slots


def _device_specs(
    devices: str | Sequence[str] | None,
    max_concurrent: int | None,
    n_trials: int | None,
    cores: int,
    gpus: int | None,
) -> list[str]:
    """One device string per worker (``"cpu"``, ``"cuda:1"``, ...), before ``max_concurrent``."""
    if devices is None or devices == "auto":
        gpus = gpu_count() if gpus is None else gpus
        devices = "gpu" if gpus > 0 else "cpu"
    if devices == "cpu":
        workers = max_concurrent or cores
        if n_trials is not None:
            workers = max(1, min(workers, n_trials))
        return ["cpu"] * workers
    if devices == "gpu":
        gpus = gpu_count() if gpus is None else gpus
        if gpus < 1:
            raise ConfigError(
                "devices='gpu' but no CUDA device is usable here (CuPy missing or no GPU): "
                "install 'sdnet[gpu]' or use devices='cpu'"
            )
        return [f"cuda:{i}" for i in range(gpus)]
    if isinstance(devices, str):
        return [devices]
    if isinstance(devices, Sequence) and devices and all(isinstance(d, str) for d in devices):
        return list(devices)
    raise ConfigError(
        f"devices={devices!r} is not valid: use 'auto', 'cpu', 'gpu' or a list such as "
        "['cuda:0', 'cuda:1']"
    )


def _physical_gpu(index: int, visible: str | None, listed: list[str]) -> str:
    """The entry of ``CUDA_VISIBLE_DEVICES`` (split into ``listed``) that ``cuda:index`` is."""
    if not listed:
        raise ConfigError(
            f"device cuda:{index} requested but CUDA_VISIBLE_DEVICES={visible!r} hides "
            "every GPU: unset it, or use devices='cpu'"
        )
    if index >= len(listed):
        raise ConfigError(
            f"device cuda:{index} requested but CUDA_VISIBLE_DEVICES={visible!r} "
            f"lists {len(listed)} device(s): use cuda:0..cuda:{len(listed) - 1}"
        )
    return listed[index]


def ray_resources(
    devices: str | Sequence[str] | None,
    *,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 1,
    cluster_gpus: float | None = None,
) -> tuple[dict[str, float], str]:
    """Resources of one Ray trial task and the device string the trial trains on.

    Returns ``({"num_cpus": c, "num_gpus": g}, device)``. With ``devices="auto"`` the GPU is
    chosen when the cluster has any (``cluster_gpus``).
    """
    if devices is None or devices == "auto":
        devices = "gpu" if (cluster_gpus or 0) > 0 else "cpu"
    if not (isinstance(cpus_per_trial, (int, float)) and cpus_per_trial > 0):
        raise ConfigError(f"cpus_per_trial must be > 0, got {cpus_per_trial!r}")
    if devices == "cpu":
        return {"num_cpus": cpus_per_trial, "num_gpus": 0}, "cpu"
    if devices == "gpu":
        if not (isinstance(gpus_per_trial, (int, float)) and 0 < gpus_per_trial):
            raise ConfigError(f"gpus_per_trial must be > 0, got {gpus_per_trial!r}")
        # Ray sets CUDA_VISIBLE_DEVICES to the GPU(s) it reserved: the first is cuda:0
        return {"num_cpus": cpus_per_trial, "num_gpus": gpus_per_trial}, "cuda:0"
    raise ConfigError(
        f"with the Ray executor devices is 'cpu', 'gpu' or 'auto' (Ray picks the GPU), "
        f"got {devices!r}"
    )
