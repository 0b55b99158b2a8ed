"""Facts about the machine a benchmark ran on: date, versions, CPU, BLAS, threads, load."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

import sdnet

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


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


def write_doc_section(doc: Path, start: str, end: str, section: str, intro: str = "") -> None:
    """Replace the text between ``start`` and ``end`` in ``doc`` with ``section`` (which holds
    both markers); append it when the markers are missing, to ``intro`` for a new page."""
    text = doc.read_text() if doc.exists() else intro
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    print(f"wrote {doc}", file=sys.stderr)


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
    env = env or "no OMP/OPENBLAS/MKL_NUM_THREADS set"
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
