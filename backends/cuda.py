"""The CUDA backends: CuPy (``gpu``, ``cuda:N``) and PyTorch CUDA tensors (``torch:cuda``).

TF32 (float32 matrix products on tensor cores, inputs rounded to 10 bits of mantissa) is off by
default. ``SDNET_TF32=1`` or :func:`set_tf32` turns it on for the CuPy backend; with
``SDNET_TF32`` unset, CuPy's own ``CUPY_TF32`` is honoured. CuPy reads ``CUPY_TF32`` once, at the
first float32 matrix product (not at import), and only for two-dimensional products; the
batched ones follow the cuBLAS handle's math mode. So the setting is applied, whenever a CuPy
backend is made, both ways: CuPy's float32 compute type (``cupy._core.set_compute_type``, which
``CUPY_TF32`` would set) and the math mode of that thread's cuBLAS handle for the device
(``CUBLAS_TF32_TENSOR_OP_MATH`` or ``CUBLAS_DEFAULT_MATH``). PyTorch CUDA tensors follow
PyTorch's own switches (``torch.backends.cuda.matmul.allow_tf32``), which sdnet leaves alone.
"""

from __future__ import annotations

import importlib
import os
import sys
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from .backend import HOST, KDL_CUDA, Backend, Driver

__all__ = [
    "BackendUnavailable",
    "cupy_backend",
    "torch_backend",
    "parse_index",
    "CupyDriver",
    "TorchDriver",
    "set_tf32",
    "tf32_enabled",
    "tf32_status",
    "TF32_ENV",
]

TF32_ENV, CUPY_TF32_ENV = "SDNET_TF32", "CUPY_TF32"
CUBLAS_TF32_TENSOR_OP_MATH = 3  # cublasMath_t (cublas_api.h); CuPy names only 0 and 1
_ON, _OFF = ("1", "true", "on", "yes"), ("0", "false", "off", "no")
_tf32_choice: list[bool] = []  # set_tf32's choice (at most one entry); empty: the environment
_tf32_devices: dict[int, Any] = {}  # CuPy devices configured in this process, by index


class BackendUnavailable(RuntimeError):
    """The requested backend or device cannot be used on this machine (the message says why)."""


class CupyDriver(Driver):
    """CuPy: arrays on a CUDA device; kernels and new arrays go to the *current* device."""

    on_host = False

    def activate(self, device: Any) -> AbstractContextManager[Any]:
        return device  # cupy.cuda.Device is a context manager

    def synchronize(self, device: Any) -> None:
        device.synchronize()

    def memory_available(self, device: Any) -> int | None:
        return int(device.mem_info[0])

    def asarray(self, xp: Any, host: np.ndarray, dtype: Any, device: Any) -> Any:
        with device:  # the copy lands on ``device`` whatever device is current
            return xp.asarray(host, dtype=dtype, device=device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.get()

    def dlpack_device(self, device: Any) -> tuple[int, int]:
        return (KDL_CUDA, int(device.id))


class TorchDriver(Driver):
    """PyTorch tensors on a CUDA device (operations follow their inputs' device)."""

    on_host = False

    def synchronize(self, device: Any) -> None:
        import torch

        torch.cuda.synchronize(device)

    def memory_available(self, device: Any) -> int | None:
        import torch

        return int(torch.cuda.mem_get_info(device)[0])

    def dlpack_device(self, device: Any) -> tuple[int, int]:
        return (KDL_CUDA, int(device.index or 0))


CUPY, TORCH_CUDA = CupyDriver(), TorchDriver()


def parse_index(spec: str, prefix: str, accepted: str) -> int:
    """N of ``prefix:N`` (0 for a bare ``prefix``)."""
    rest = spec[len(prefix) :]
    if not rest:
        return 0
    if not rest.startswith(":") or not rest[1:].isdigit():
        raise ValueError(
            f"bad device {spec!r}: expected {prefix} or {prefix}:N with N a number; {accepted}"
        )
    return int(rest[1:])


def cupy_backend(index: int) -> Backend:
    """CuPy on ``cuda:index``, or :class:`BackendUnavailable` saying why not."""
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
    apply_tf32(dev)
    try:
        name = cupy.cuda.runtime.getDeviceProperties(index)["name"].decode()
    except Exception:
        name = "CUDA device"
    return Backend("cupy", xp, dev, f"cupy on cuda:{index} ({name})", CUPY)


def torch_backend(spec: str, accepted: str) -> Backend:
    """PyTorch on the CPU or ``torch:cuda[:N]``, or :class:`BackendUnavailable` saying why not."""
    try:
        torch = importlib.import_module("torch")
    except ImportError as exc:
        raise BackendUnavailable("torch backend requested but PyTorch is not installed") from exc
    from array_api_compat import torch as xp

    where = spec.split(":", 1)[1] if ":" in spec else "cpu"
    if where.startswith("cuda"):
        index = parse_index(where, "cuda", accepted)
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
            f"bad device {spec!r}: expected torch, torch:cpu or torch:cuda[:N]; {accepted}"
        )
    driver = TORCH_CUDA if dev.type == "cuda" else HOST
    return Backend("torch", xp, dev, f"torch on {dev}", driver)


# -- TF32 --------------------------------------------------------------------------------------
def _switch(name: str, text: str) -> bool:
    """An environment switch: 1/true/on/yes or 0/false/off/no (CuPy's own: an integer > 0)."""
    value = text.strip().lower()
    if name == CUPY_TF32_ENV and value.lstrip("-").isdigit():
        return int(value) > 0
    if value in _ON or value in _OFF:
        return value in _ON
    raise ValueError(f"{name}={text!r} is not a switch: set it to 1 (TF32 on) or 0 (off)")


def tf32_source() -> tuple[bool, str]:
    """Whether TF32 is allowed for CuPy's float32 matrix products, and what decided it:
    ``"sdnet.set_tf32"``, ``"SDNET_TF32=1"``, ``"CUPY_TF32=1"`` or ``"default"``.

    Raises
    ------
    ValueError
        ``SDNET_TF32`` (or ``CUPY_TF32``) is set to something that is not a switch.
    """
    if _tf32_choice:
        return _tf32_choice[0], "sdnet.set_tf32"
    for name in (TF32_ENV, CUPY_TF32_ENV):
        text = os.environ.get(name, "")
        if text.strip():
            return _switch(name, text), f"{name}={text.strip()}"
    return False, "default"


def tf32_enabled() -> bool:
    """Whether float32 matrix products on the CuPy backend may use TF32 (off by default).

    Returns
    -------
    bool
        :func:`set_tf32`'s choice if it was called, else ``SDNET_TF32``, else CuPy's
        ``CUPY_TF32``, else ``False``.
    """
    return tf32_source()[0]


def tf32_status() -> str:
    """One line for ``sdnet info``: ``"off (default)"``, ``"on (SDNET_TF32=1)"`` ..."""
    try:
        on, source = tf32_source()
    except ValueError as why:
        return f"invalid ({why})"
    return f"{'on' if on else 'off'} ({source})"


def set_tf32(enabled: bool) -> None:
    """Allow (``True``) or forbid (``False``, the default) TF32 in float32 matrix products on
    the CuPy backend.

    TF32 rounds each input of a float32 matrix product to 10 bits of mantissa (products and
    sums stay float32): several times faster on Ampere and newer GPUs, with relative errors
    near 1e-3 instead of 1e-6. The choice applies at once to every CuPy device this process
    has used (in the calling thread) and to every CuPy backend made afterwards, and is written
    to ``SDNET_TF32`` so that processes started from here (sweep workers) follow it. NumPy,
    the CPU and PyTorch tensors are not affected.

    Parameters
    ----------
    enabled : bool

    Examples
    --------
    >>> import sdnet
    >>> sdnet.set_tf32(False)
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"set_tf32 takes True or False, got {enabled!r}")
    _tf32_choice[:] = [enabled]
    os.environ[TF32_ENV] = "1" if enabled else "0"
    if "cupy" in sys.modules:
        for dev in _tf32_devices.values():
            apply_tf32(dev)


def apply_tf32(device: Any) -> bool:
    """Make CuPy's float32 matrix products on ``device`` follow :func:`tf32_enabled` (the
    compute type, process-wide, and the math mode of this thread's cuBLAS handle for
    ``device``); returns the setting. ``BackendUnavailable`` when TF32 is asked for and this
    CuPy cannot set it."""
    on = tf32_enabled()
    try:
        from cupy._core import _routines_linalg as linalg
        from cupy_backends.cuda.libs import cublas  # type: ignore[import-not-found]

        configure_tf32(linalg, cublas, device.cublas_handle, on)
    except (ImportError, AttributeError) as exc:
        if on:
            raise BackendUnavailable(
                f"TF32 was asked for but this CuPy cannot set it: {exc}"
            ) from exc
        return False  # CuPy's defaults are TF32 off
    _tf32_devices[int(device.id)] = device
    return on


def configure_tf32(linalg: Any, cublas: Any, handle: int, on: bool) -> None:
    """Set CuPy's float32 compute type (``linalg``: ``cupy._core._routines_linalg``) and the
    cuBLAS ``handle``'s math mode (``cublas``: ``cupy_backends.cuda.libs.cublas``)."""
    kind = linalg.COMPUTE_TYPE_TF32 if on else linalg.COMPUTE_TYPE_DEFAULT
    linalg.set_compute_type(np.float32, kind)
    cublas.setMathMode(handle, CUBLAS_TF32_TENSOR_OP_MATH if on else cublas.CUBLAS_DEFAULT_MATH)
