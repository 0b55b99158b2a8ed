"""Facts about the machine a benchmark ran on: date, versions, CPU, BLAS, threads, load."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

import sdnet

THREAD_VARS = ("SDNET_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# OpenBLAS's kernel choice: unset, OpenBLAS picks the kernel for the CPU it finds
BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def machine_info(backend: Any) -> dict[str, str]:
    info = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "sdnet": sdnet.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "backend": str(backend),
        "cpu": _cpu_model(),
        "threads": _thread_info(),
        "sdnet_threads": str(sdnet.get_num_threads()) if hasattr(sdnet, "get_num_threads") else "1",
        "blas": _blas_info(),
        "load": load_average(),
    }
    return info


def command_env(threads: bool = True) -> list[str]:
    """The environment a recorded command states, as words before ``python``: ``env -u`` for
    each of :data:`BLAS_VARS` the run went without, each one it had as ``NAME=value``, and
    with ``threads`` the thread variables set (:data:`THREAD_VARS`)."""
    unset = [f"-u {v}" for v in BLAS_VARS if v not in os.environ]
    names = [v for v in BLAS_VARS if v in os.environ] + (list(THREAD_VARS) if threads else [])
    values = [f"{v}={os.environ[v]}" for v in names if v in os.environ]
    return (["env", *unset] if unset else []) + values


def gpu_name(backend: Any) -> str | None:
    """The card sdnet's backend computes on (``None`` off a GPU)."""
    if backend.name == "cupy":
        import cupy

        return str(cupy.cuda.runtime.getDeviceProperties(backend.device.id)["name"].decode())
    if backend.name == "torch" and str(backend.device).startswith("cuda"):
        import torch

        return str(torch.cuda.get_device_name(backend.device))
    return None


def sdnet_commit() -> str | None:
    """The commit of the sdnet checkout that is imported, ``-dirty`` when its ``sdnet/`` or
    ``backends/`` differ from it; ``None`` for an installed copy or without git."""
    root = Path(sdnet.__file__).resolve().parent.parent

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60
        )

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode or Path(top.stdout.strip()).resolve() != root:
            return None
        head = git("rev-parse", "--short=7", "HEAD").stdout.strip()
        dirty = git("diff", "--quiet", "HEAD", "--", "sdnet", "backends").returncode != 0
    except (OSError, subprocess.SubprocessError):
        return None
    if not head:
        return None
    return f"{head}-dirty" if dirty else head


def load_average() -> str:
    """The 1-minute load average against the CPU count: other work on the machine skews times."""
    try:
        return f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} logical CPUs"
    except OSError:
        return "unknown"


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"{platform.processor() or 'unknown CPU'} ({os.cpu_count()} logical CPUs)"
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    name = m.group(1).strip() if m else "unknown CPU"
    return f"{name}, {os.cpu_count()} logical CPUs"


def _thread_info() -> str:
    env = ", ".join(f"{k}={os.environ[k]}" for k in THREAD_VARS if k in os.environ)
    env = env or "no SDNET/OMP/OPENBLAS/MKL_NUM_THREADS set"
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return f"threadpoolctl not installed, BLAS thread count not recorded ({env})"
    pools = [f"{p.get('internal_api')} {p.get('num_threads')} threads" for p in threadpool_info()]
    return f"{'; '.join(pools) or 'no thread pools found'} ({env})"


def _blas_info() -> str:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # the config layout is NumPy's, not a stable API
        return "unknown"
