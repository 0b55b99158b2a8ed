"""The CUDA backends: CuPy (``gpu``, ``cuda:N``) and PyTorch CUDA tensors (``torch:cuda``)."""

from __future__ import annotations

import importlib
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from .backend import HOST, Backend, Driver

__all__ = [
    "BackendUnavailable",
    "cupy_backend",
    "torch_backend",
    "parse_index",
    "CupyDriver",
    "TorchDriver",
]


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


class TorchDriver(Driver):
    """PyTorch tensors on a CUDA device (operations follow their inputs' device)."""

    on_host = False

    def synchronize(self, device: Any) -> None:
        import torch

        torch.cuda.synchronize(device)

    def memory_available(self, device: Any) -> int | None:
        import torch

        return int(torch.cuda.mem_get_info(device)[0])


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
