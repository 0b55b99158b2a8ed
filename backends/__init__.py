"""Backend selection: which array library and which device sdnet computes on.

``get_backend(device)`` turns a user's device string into a :class:`Backend`, a small object
holding the array namespace (through ``array-api-compat``), the device object, the default
dtype, and the few operations the array API standard lacks: host <-> device transfer and
synchronisation. There is no global device state: the backend is passed down explicitly.

Accepted strings
----------------
``"cpu"``/``"numpy"``
    NumPy on the host.
``"gpu"``/``"cuda"``/``"cuda:N"``/``"cupy"``
    CuPy on CUDA device 0 (or N). An error says why when that device cannot be had.
``"auto"``
    The GPU when CuPy and a CUDA device are usable, else the CPU; the choice is logged.
``"array_api_strict"``
    The reference namespace on a non-default device (``device1``): any array created without
    ``device=`` fails to combine with it. Used by the tests.
``"torch"``/``"torch:cpu"``/``"torch:cuda"``/``"torch:cuda:N"``
    PyTorch tensors through ``array-api-compat`` (a third real library the kernels run on).
"""

from __future__ import annotations

import importlib
import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sdnet._array_api import device as array_device
from sdnet._array_api import namespace, to_numpy

__all__ = [
    "Backend",
    "BackendUnavailable",
    "DTYPES",
    "get_backend",
    "backend_of",
    "available_backends",
]

log = logging.getLogger("sdnet")
DTYPES = ("float32", "float64")  # the floating-point types sdnet computes in
_ACCEPTED = "use 'cpu', 'gpu', 'cuda:N', 'auto', 'torch', 'torch:cuda' or 'array_api_strict'"


class BackendUnavailable(RuntimeError):
    """The requested backend or device cannot be used on this machine (the message says why)."""


@dataclass(frozen=True)
class Backend:
    """An array namespace plus a device.

    Attributes
    ----------
    name : str
        ``"numpy"``, ``"cupy"``, ``"array_api_strict"`` or ``"torch"``.
    xp : module
        The array-API namespace (the ``array-api-compat`` wrapper where there is one).
    device : object
        The device object passed as ``device=`` to every array creation.
    label : str
        Human-readable description, e.g. ``"cupy on cuda:0 (NVIDIA H100)"``.
    """

    name: str
    xp: Any
    device: Any
    label: str = field(default="", compare=False)

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
        if self.name == "cupy":
            return False
        return not (self.name == "torch" and str(self.device).startswith("cuda"))

    def asarray(self, host: Any, dtype: Any = None) -> Any:
        """Copy host data (a NumPy array or nested sequence) onto this backend's device."""
        if dtype is not None:
            dtype = self.dtype(dtype)
        return self.xp.asarray(np.asarray(host), dtype=dtype, device=self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        """Copy an array of this backend to a host NumPy array."""
        return to_numpy(x)

    def activate(self) -> AbstractContextManager[Any]:
        """A context in which this backend's device is the current one.

        CuPy launches kernels on its *current* device; a model on ``cuda:N`` enters this around
        its forward and backward so that N > 0 works without any global state being left set.
        A no-op context for the other backends (their operations follow their inputs).
        """
        if self.name == "cupy":
            return self.device  # cupy.cuda.Device is a context manager
        return nullcontext()

    def synchronize(self) -> None:
        """Wait until all queued device work is done (a no-op on the CPU)."""
        if self.name == "cupy":
            import cupy

            cupy.cuda.Device(self.device.id).synchronize()
        elif self.name == "torch" and str(self.device).startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)

    def memory_available(self) -> int | None:
        """Free bytes on this backend's device, or ``None`` for host memory.

        ``None`` means the arrays live in host memory (NumPy, array_api_strict, torch on the
        CPU): callers treat data as resident there. CuPy reports ``Device.mem_info[0]`` (memory
        cached by CuPy's pool is not counted as free).
        """
        if self.name == "cupy":
            import cupy

            return int(cupy.cuda.Device(self.device.id).mem_info[0])
        if self.name == "torch" and str(self.device).startswith("cuda"):
            import torch

            return int(torch.cuda.mem_get_info(self.device)[0])
        return None

    def __str__(self) -> str:
        return self.label or f"{self.name} on {self.device}"


def _numpy() -> Backend:
    from array_api_compat import numpy as xp

    return Backend("numpy", xp, "cpu", "numpy on cpu")


def _strict() -> Backend:
    try:
        import array_api_strict as xp
    except ImportError as exc:
        raise BackendUnavailable(
            "array_api_strict is not installed: pip install 'sdnet[test]' (or array-api-strict)"
        ) from exc
    dev = xp.Device("device1")
    return Backend("array_api_strict", xp, dev, "array_api_strict on device1")


def _parse_index(spec: str, prefix: str) -> int:
    rest = spec[len(prefix) :]
    if not rest:
        return 0
    if not rest.startswith(":") or not rest[1:].isdigit():
        raise ValueError(
            f"bad device {spec!r}: expected {prefix} or {prefix}:N with N a number; {_ACCEPTED}"
        )
    return int(rest[1:])


def _cupy(index: int) -> Backend:
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as exc:
        raise BackendUnavailable(
            "GPU requested but CuPy is not installed: pip install 'sdnet[gpu]' (CUDA 12) "
            "or 'sdnet[gpu-cuda13]' (CUDA 13), or use device='cpu'"
        ) from exc
    except Exception as exc:  # a broken CUDA install can fail at import time
        raise BackendUnavailable(f"GPU requested but CuPy failed to import: {exc}") from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise BackendUnavailable(
            f"GPU requested but CuPy finds no usable CUDA device ({exc}); use device='cpu'"
        ) from exc
    if count == 0:
        raise BackendUnavailable("GPU requested but no CUDA device is present; use device='cpu'")
    if index >= count:
        raise BackendUnavailable(
            f"cuda:{index} requested but this machine has {count} CUDA device(s): "
            f"use cuda:0..cuda:{count - 1}"
        )
    from array_api_compat import cupy as xp

    dev = cupy.cuda.Device(index)
    try:
        name = cupy.cuda.runtime.getDeviceProperties(index)["name"].decode()
    except Exception:
        name = "CUDA device"
    return Backend("cupy", xp, dev, f"cupy on cuda:{index} ({name})")


def _torch(spec: str) -> Backend:
    try:
        torch = importlib.import_module("torch")
    except ImportError as exc:
        raise BackendUnavailable("torch backend requested but PyTorch is not installed") from exc
    from array_api_compat import torch as xp

    where = spec.split(":", 1)[1] if ":" in spec else "cpu"
    if where.startswith("cuda"):
        index = _parse_index(where, "cuda")
        if not torch.cuda.is_available():
            raise BackendUnavailable("torch:cuda requested but PyTorch sees no CUDA device")
        if index >= torch.cuda.device_count():
            raise BackendUnavailable(
                f"torch:cuda:{index} requested but PyTorch sees "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
        dev = torch.device("cuda", index)
    elif where == "cpu":
        dev = torch.device("cpu")
    else:
        raise ValueError(
            f"bad device {spec!r}: expected torch, torch:cpu or torch:cuda[:N]; {_ACCEPTED}"
        )
    return Backend("torch", xp, dev, f"torch on {dev}")


def get_backend(device: str | Backend = "cpu") -> Backend:
    """Resolve a device string to a :class:`Backend`.

    Parameters
    ----------
    device : str or Backend
        See the module docstring for the accepted strings. A ``Backend`` passes through.

    Returns
    -------
    Backend

    Raises
    ------
    BackendUnavailable
        A specific GPU/library was requested and cannot be used; the message says why and
        what to install. Only ``"auto"`` falls back to the CPU.
    ValueError
        The string is not a device sdnet knows.
    """
    if isinstance(device, Backend):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu' or 'gpu', got {device!r}")
    spec = device.strip().lower()
    if spec in ("cpu", "numpy"):
        return _numpy()
    if spec in ("gpu", "cupy"):
        return _cupy(0)
    if spec.startswith("cuda"):
        return _cupy(_parse_index(spec, "cuda"))
    if spec in ("array_api_strict", "strict"):
        return _strict()
    if spec == "torch" or spec.startswith("torch:"):
        return _torch(spec)
    if spec == "auto":
        try:
            backend = _cupy(0)
        except BackendUnavailable as why:
            log.info("device='auto': using the CPU (%s)", why)
            return _numpy()
        log.info("device='auto': using %s", backend)
        return backend
    raise ValueError(f"unknown device {device!r}: {_ACCEPTED}")


def backend_of(x: Any) -> Backend:
    """The :class:`Backend` an array belongs to: its library and its device.

    Raises
    ------
    TypeError
        ``x`` is not an array of a library sdnet supports.
    """
    from array_api_compat import (
        is_array_api_strict_namespace,
        is_cupy_namespace,
        is_numpy_namespace,
        is_torch_namespace,
    )

    xp, dev = namespace(x), array_device(x)
    for name, test in (
        ("numpy", is_numpy_namespace),
        ("cupy", is_cupy_namespace),
        ("torch", is_torch_namespace),
        ("array_api_strict", is_array_api_strict_namespace),
    ):
        if test(xp):
            return Backend(name, xp, dev, f"{name} on {dev}")
    raise TypeError(f"arrays of {xp.__name__} are not supported: {_ACCEPTED}")


def available_backends() -> dict[str, str]:
    """Probe every backend; map its name to ``"ok: <label>"`` or the reason it is unavailable."""
    out: dict[str, str] = {}
    for spec in ("cpu", "array_api_strict", "torch", "gpu", "torch:cuda"):
        try:
            out[spec] = f"ok: {get_backend(spec)}"
        except (BackendUnavailable, ValueError) as why:
            out[spec] = f"unavailable: {why}"
    return out
