"""How much host memory this process may still allocate, and sizes written for people.

:func:`host_memory_available` is the smallest of what the system has free
(``MemAvailable``), what the process's control group still allows (a container's limit) and
what its address-space limit (``ulimit -v``, ``RLIMIT_AS``) leaves; ``None`` where none of
them can be read. A device's own memory is the backend's question
(:meth:`sdnet.Backend.memory_available`).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["host_memory_available", "human_bytes"]


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _meminfo(key: str) -> int | None:
    """A ``/proc/meminfo`` or ``/proc/self/status`` style field in bytes (``kB`` lines)."""
    path = "/proc/meminfo" if key == "MemAvailable" else "/proc/self/status"
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(key + ":"):
            parts = line.split()
            return int(parts[1]) * 1024 if len(parts) > 1 and parts[1].isdigit() else None
    return None


def _cgroup_left() -> int | None:
    """What the control group (v2, else v1) still lets its processes allocate."""
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        cap = _read_int(limit)
        if cap is not None and cap < 1 << 60:  # v1 writes a huge number for "no limit"
            return max(0, cap - (_read_int(usage) or 0))
    return None


def _address_space_left() -> int | None:
    """What ``RLIMIT_AS`` leaves of the address space (``None``: no limit)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(0, soft - (_meminfo("VmSize") or 0))


def host_memory_available() -> int | None:
    """Bytes this process may still allocate in host memory, as far as the system says."""
    free = _meminfo("MemAvailable")
    if free is None and hasattr(os, "sysconf"):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            free = None
    known = [v for v in (free, _cgroup_left(), _address_space_left()) if v is not None]
    return min(known) if known else None


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``, up to EiB."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    i = 0
    while abs(n) >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.0f} bytes" if i == 0 else f"{n:.1f} {units[i]}"
