"""The :class:`Backend` object and the per-library :class:`Driver` behind it.

A backend is an array namespace plus a device. What the array API standard leaves out (making
a device current, moving data to and from the host, waiting for queued work, free memory) is
done by the backend's driver, one per library: the host driver for NumPy, array_api_strict and
PyTorch on the CPU, and the CUDA drivers of :mod:`sdnet.backends.cuda`. Every device question
sdnet asks goes through a ``Backend``; nothing else tests which library an array belongs to.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sdnet._array_api import to_numpy

__all__ = ["Backend", "Driver", "HOST", "DTYPES", "KDL_CPU", "KDL_CUDA"]

DTYPES = ("float32", "float64")  # the floating-point types sdnet computes in


class Driver:
    """The operations of one array library that the standard leaves out; the defaults are
    those of a library whose arrays live in host memory."""

    on_host = True

    def activate(self, device: Any) -> AbstractContextManager[Any]:
        """A context in which ``device`` is the current one (where new arrays and kernels go)."""
        return nullcontext()

    def synchronize(self, device: Any) -> None:
        """Wait until the work queued on ``device`` is done."""

    def memory_available(self, device: Any) -> int | None:
        """Free bytes on ``device``; ``None`` for host memory."""
        return None

    def asarray(self, xp: Any, host: np.ndarray, dtype: Any, device: Any) -> Any:
        """Copy a host array to ``device`` (one host-to-device copy on a GPU)."""
        return xp.asarray(host, dtype=dtype, device=device)

    def to_numpy(self, x: Any) -> np.ndarray:
        """Copy ``x`` to a host NumPy array (a device-to-host copy and a sync on a GPU)."""
        return to_numpy(x)

    def dlpack_device(self, device: Any) -> tuple[int, int]:
        """``device`` as DLPack names it, ``(device type, index)``: ``(1, 0)`` for host memory
        (``kDLCPU``), ``(2, N)`` for CUDA device N (``kDLCUDA``). Two arrays can share memory
        through DLPack only when their DLPack devices are equal."""
        return (KDL_CPU, 0)


KDL_CPU, KDL_CUDA = 1, 2  # DLPack's DLDeviceType codes
HOST = Driver()


@dataclass(frozen=True)
class Backend:
    """An array namespace plus a device.

    Attributes
    ----------
    name : str
        ``"numpy"``, ``"cupy"``, ``"array_api_strict"`` or ``"torch"`` (or a backend a test
        registered, see :func:`sdnet.backends.register_backend`).
    xp : module
        The array-API namespace (the ``array-api-compat`` wrapper where there is one).
    device : object
        The device object passed as ``device=`` to every array creation.
    label : str
        Human-readable description, e.g. ``"cupy on cuda:0 (NVIDIA H100)"``.
    driver : Driver
        What the library does beyond the standard (see :class:`Driver`).
    """

    name: str
    xp: Any
    device: Any
    label: str = field(default="", compare=False)
    driver: Driver = field(default=HOST, compare=False, repr=False)

    def dtype(self, name: str | Any) -> Any:
        """The namespace's dtype object for ``"float32"``/``"float64"`` (others pass through)."""
        if not isinstance(name, str):
            return name
        if name not in DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {name!r}")
        return getattr(self.xp, name)

    @property
    def on_host(self) -> bool:
        """Whether arrays live in host memory (NumPy, array_api_strict, torch on the CPU):
        reading a value back costs nothing, and kernels work in cache-sized blocks."""
        return self.driver.on_host

    def asarray(self, host: Any, dtype: Any = None) -> Any:
        """Copy host data (a NumPy array or nested sequence) onto this backend's device."""
        if dtype is not None:
            dtype = self.dtype(dtype)
        return self.driver.asarray(self.xp, np.asarray(host), dtype, self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        """Copy an array of this backend to a host NumPy array (a host-side counter, a Python
        int, becomes a 0-d int64 array)."""
        if isinstance(x, int) and not isinstance(x, bool):
            return to_numpy(x)
        return self.driver.to_numpy(x)

    def activate(self) -> AbstractContextManager[Any]:
        """A context in which this backend's device is the current one.

        CuPy creates arrays and launches kernels on its *current* device; a model on
        ``cuda:N`` enters this around its forward and backward so that N > 0 works without any
        global state being left set. A no-op for libraries whose operations follow their inputs.
        """
        return self.driver.activate(self.device)

    def synchronize(self) -> None:
        """Wait until all queued device work is done (a no-op on the CPU)."""
        self.driver.synchronize(self.device)

    @property
    def dlpack_device(self) -> tuple[int, int]:
        """This backend's device as DLPack names it (``x.__dlpack_device__()`` of its arrays):
        ``(1, 0)`` on the host, ``(2, N)`` on CUDA device N."""
        return self.driver.dlpack_device(self.device)

    def memory_available(self) -> int | None:
        """Free bytes on this backend's device, or ``None`` for host memory.

        ``None`` means the arrays live in host memory (NumPy, array_api_strict, torch on the
        CPU): callers treat data as resident there. CuPy reports ``Device.mem_info[0]`` (memory
        cached by CuPy's pool is not counted as free).
        """
        return self.driver.memory_available(self.device)

    def __str__(self) -> str:
        return self.label or f"{self.name} on {self.device}"
