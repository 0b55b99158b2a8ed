"""The few array helpers the standard leaves out, written once.

Kernels call :func:`namespace` to get ``xp`` from their inputs and :func:`device` to create new
arrays next to them. :func:`to_numpy` is the one way data leaves a device (checkpoints, metrics).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from array_api_compat import array_namespace, is_cupy_array, is_numpy_array, is_torch_array
from array_api_compat import device as _device

__all__ = [
    "on_input_device",
    "device_context",
    "namespace",
    "device",
    "on_host",
    "to_numpy",
    "zeros_like_padded",
    "zeros_channel_major",
    "strided",
]

Array = Any
F = TypeVar("F", bound=Callable[..., Any])


def on_input_device(fn: F) -> F:
    """Run ``fn`` with the device of its first argument made current (an array, or the first
    array in a tuple such as a kernel's saved values).

    CuPy creates arrays and launches kernels on its *current* device, whatever device the
    inputs live on; a kernel called on ``cuda:1`` arrays while ``cuda:0`` is current would
    allocate and compute on the wrong device. Host arrays skip the check.
    """

    @functools.wraps(fn)
    def run(first: Any, *args: Any, **kwargs: Any) -> Any:
        x = next((v for v in first if _is_array(v)), None) if isinstance(first, tuple) else first
        context = device_context(x)
        if context is None:  # the host: nothing to make current
            return fn(first, *args, **kwargs)
        with context:
            return fn(first, *args, **kwargs)

    return run  # type: ignore[return-value]


def device_context(x: Any) -> Any:
    """The context making ``x``'s device current, or ``None`` where there is nothing to do (a
    host array, or not an array at all: the caller reports that)."""
    if is_numpy_array(x):
        return None
    from sdnet.backends import backend_of

    try:
        backend = backend_of(x)
    except TypeError:
        return None
    return None if backend.on_host else backend.activate()


def _is_array(v: Any) -> bool:
    return hasattr(v, "__array_namespace__") or is_numpy_array(v)


def namespace(*arrays: Array) -> Any:
    """The array-API namespace shared by ``arrays`` (``None`` entries are ignored)."""
    return array_namespace(*[a for a in arrays if a is not None])


def device(x: Array) -> Any:
    """The device ``x`` lives on; pass it as ``device=`` to every array created beside ``x``."""
    return _device(x)


def on_host(x: Array) -> bool:
    """Whether ``x`` lives in host memory (NumPy, array_api_strict, a CPU torch tensor), as
    its backend says (:attr:`sdnet.backends.Backend.on_host`).

    Kernels use it to pick a cache-sized working block on a CPU and the whole batch on a GPU.
    """
    from sdnet.backends import backend_of

    return backend_of(x).on_host


def to_numpy(x: Array) -> Any:
    """Copy ``x`` to a host NumPy array (the only place device data leaves for the host)."""
    import numpy as np

    if isinstance(x, int) and not isinstance(x, bool):  # a host-side counter
        return np.asarray(x, dtype=np.int64)
    if is_numpy_array(x):
        return np.asarray(x)  # 0-d results of NumPy arithmetic are scalars: make them arrays
    if is_cupy_array(x):
        return x.get()
    if is_torch_array(x):
        return x.detach().cpu().numpy()
    return np.from_dlpack(x)  # array_api_strict and other CPU libraries


def zeros_like_padded(x: Array, pad: int) -> Array:
    """Zeros of shape ``(N, C, H + 2*pad, W + 2*pad)`` with ``x``'s dtype and device."""
    xp = namespace(x)
    n, c, h, w = x.shape
    return xp.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=x.dtype, device=device(x))


def zeros_channel_major(shape: tuple[int, int, int, int], like: Array) -> Array:
    """Zeros of NCHW ``shape`` stored channel-major, with ``like``'s dtype and device.

    The result is an (N, C, H, W) view of a (C, N, H, W) buffer: the memory order that
    :func:`sdnet.functional.conv2d` produces and consumes without copies, so element-wise work
    on it never mixes memory orders.
    """
    xp = namespace(like)
    n, c, h, w = shape
    buf = xp.zeros((c, n, h, w), dtype=like.dtype, device=device(like))
    return xp.permute_dims(buf, (1, 0, 2, 3))


def strided(offset: int, count: int, step: int) -> slice:
    """The slice of ``count`` positions ``offset, offset + step, ...``.

    Its stop stays within the axis: array_api_strict rejects out-of-bounds stops, which the
    standard leaves unspecified.
    """
    return slice(offset, offset + step * (count - 1) + 1, step)
