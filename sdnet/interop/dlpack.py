"""Arrays in and out of sdnet through DLPack, without copies where the libraries allow.

Every library that speaks DLPack (PyTorch, JAX, CuPy, NumPy, TensorFlow ...) hands its tensors
to sdnet through ``__dlpack__``: :func:`from_dlpack` turns such a tensor into an array of a
model's backend, sharing its memory when the tensor already lives on that backend's device.
:func:`to_library` hands a model's output back the same way, and :func:`apply_model` does both
around an evaluation pass.

What "without copies" means here:

* a PyTorch CPU tensor -> an sdnet model on ``device="cpu"`` (NumPy): shared memory;
* a PyTorch CUDA tensor -> a model on ``device="gpu"`` (CuPy) on the same GPU: shared memory;
* an sdnet NumPy output -> ``torch`` / ``jax``: shared memory (JAX may copy to align);
* an sdnet CuPy output -> ``torch``: a CUDA tensor sharing its memory;
* across devices (a CUDA tensor into a CPU model, NumPy data into a GPU model, CuPy logits to
  NumPy), a copy through the host is needed; with ``copy=False`` that raises instead.

Whether two sides are on the same device is read from DLPack itself: the tensor's
``__dlpack_device__()`` against the backend's (:attr:`sdnet.Backend.dlpack_device`). Copies
across devices go through the backends' own transfers (:meth:`sdnet.Backend.to_numpy` on the
source, :meth:`sdnet.Backend.asarray` on the target: CuPy's ``.get()`` and a copy made with
the target device current), never through ``numpy.from_dlpack``, which refuses device memory.

Shared memory means writes through one are seen by the other. A model never writes into its
input, so sharing is safe for inference; copy first if you mean to modify either side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import to_device

from sdnet._array_api import device as array_device
from sdnet._array_api import to_numpy
from sdnet.backends.backend import KDL_CPU

__all__ = ["from_dlpack", "to_library", "apply_model", "shares_memory", "LIBRARIES"]

LIBRARIES = ("numpy", "torch", "jax", "cupy")


def _detached(x: Any) -> Any:
    """PyTorch refuses to export a tensor that requires grad; its data is what sdnet needs."""
    if getattr(x, "requires_grad", False) and hasattr(x, "detach"):
        return x.detach()
    return x


def from_dlpack(
    x: Any, device: Any = "cpu", *, dtype: str | None = None, copy: bool | None = None
) -> Any:
    """An array of ``device``'s backend holding the data of any DLPack tensor ``x``.

    Parameters
    ----------
    x : object with ``__dlpack__``
        A PyTorch, JAX, CuPy, NumPy ... tensor. A PyTorch tensor that requires grad is
        detached first (sdnet computes no autograd graph).
    device : str or sdnet.Backend
        The backend to land on, e.g. ``model.backend`` or ``"cpu"``.
    dtype : {"float32", "float64"}, optional
        Cast to this dtype (a copy when the dtype differs; pass ``model.dtype`` to get an input
        the model accepts).
    copy : bool, optional
        ``None`` (default): share memory where possible, else copy. ``False``: never copy,
        raise ``BufferError`` when sharing is impossible (another device, a cast). ``True``:
        always copy.

    Returns
    -------
    array
        On ``device``'s backend; memory shared with ``x`` unless a copy was needed or asked for.

    Raises
    ------
    TypeError
        ``x`` does not implement DLPack.
    BufferError
        ``copy=False`` and the data cannot be shared.
    """
    from sdnet.backends import get_backend

    backend = get_backend(device)
    x = _detached(x)
    if not hasattr(x, "__dlpack__"):
        raise TypeError(
            f"{type(x).__module__}.{type(x).__name__} does not implement DLPack (__dlpack__); "
            "pass a PyTorch/JAX/CuPy/NumPy tensor, or copy host data with backend.asarray"
        )
    xp = backend.xp
    want = backend.dtype(dtype) if dtype is not None else None
    if _dlpack_device(x)[0] == backend.dlpack_device[0]:  # host and host, or CUDA and CUDA
        y = _import_same_device(x, backend, copy)
    elif copy is False:
        raise BufferError(
            f"the data is on DLPack device {_dlpack_device(x)}, not on {backend}: sharing "
            "is impossible; pass copy=None to copy it through the host"
        )
    else:
        y = backend.asarray(_host_copy(x))  # another device: through the host
    if array_device(y) != backend.device:  # another GPU (or strict's device1): move it
        if copy is False:
            raise BufferError(f"the data is on {array_device(y)}, not {backend}; pass copy=None")
        y = to_device(y, backend.device)
    if want is not None and y.dtype != want:
        if copy is False:
            raise BufferError(f"casting {y.dtype} to {dtype} needs a copy; pass copy=None")
        y = xp.astype(y, want)
    return y


def _dlpack_device(x: Any) -> tuple[int, int]:
    """``x.__dlpack_device__()`` as plain ints (libraries return enums); host memory for an
    exporter too old to say."""
    where = getattr(x, "__dlpack_device__", None)
    if where is None:
        return KDL_CPU, 0
    kind, index = where()
    return int(kind), int(index)


def _import_same_device(x: Any, backend: Any, copy: bool | None) -> Any:
    """``x`` through the backend library's ``from_dlpack`` (shared unless ``copy``); a library
    that refuses it is served a copy through the host, unless ``copy is False``."""
    xp = backend.xp
    try:
        return xp.from_dlpack(x, copy=True) if copy else xp.from_dlpack(x)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        if copy is False:
            raise BufferError(
                f"cannot share {type(x).__name__} memory with {backend} ({exc}); "
                "pass copy=None to allow a copy"
            ) from exc
        return backend.asarray(_host_copy(x))


def _host_copy(x: Any) -> np.ndarray:
    """``x`` in host memory as NumPy: through its own backend's transfer (CuPy ``.get()``,
    PyTorch ``.cpu()``; a view for host arrays), or ``__array__`` for libraries sdnet does not
    compute with (JAX ...)."""
    from sdnet.backends import backend_of

    try:
        source = backend_of(x)
    except TypeError:
        return np.asarray(x)
    return source.to_numpy(x)


def to_library(y: Any, library: str = "torch") -> Any:
    """Hand an sdnet array (e.g. a model's logits) to another library through DLPack.

    Parameters
    ----------
    y : array
        Any array sdnet computed (NumPy, CuPy, PyTorch, array_api_strict).
    library : {"numpy", "torch", "jax", "cupy"}

    Returns
    -------
    tensor
        Of ``library``, sharing ``y``'s memory where the library allows (NumPy and CuPy arrays
        to PyTorch and back always do). Device arrays to ``"numpy"`` and host arrays to
        ``"cupy"`` are copied (through the backend's transfer; CuPy's current device).
    """
    if library == "numpy":
        return _to_numpy(y)
    if library == "torch":
        import torch

        return torch.from_dlpack(y)
    if library == "jax":
        import jax.numpy as jnp  # type: ignore[import-not-found]

        return jnp.from_dlpack(y)
    if library == "cupy":
        import cupy

        if _dlpack_device(y)[0] == KDL_CPU:  # CuPy imports device memory only
            return cupy.asarray(_host_copy(y))  # onto CuPy's current device
        return cupy.from_dlpack(y)
    raise ValueError(f"unknown library {library!r}: use one of {LIBRARIES}")


def _to_numpy(y: Any) -> np.ndarray:
    """``y`` as a NumPy array: shared when ``y`` is in host memory, else a device-to-host copy
    through its backend (``numpy.from_dlpack`` refuses device memory)."""
    if isinstance(y, np.ndarray):
        return y
    if _dlpack_device(y)[0] == KDL_CPU:
        return np.from_dlpack(y)
    return _host_copy(y)


def _library_of(x: Any) -> str:
    top = type(x).__module__.split(".")[0]
    if top in ("jax", "jaxlib"):
        return "jax"
    return top if top in LIBRARIES else "numpy"


def apply_model(model: Any, x: Any) -> Any:
    """Evaluate ``model`` on a tensor of another library; the logits come back in that library.

    ``x`` (a PyTorch, JAX, CuPy or NumPy tensor (N, C, H, W)) enters through
    :func:`from_dlpack` (no copy when it is already on the model's device in the model's
    dtype), the model runs in evaluation mode, and the logits (N, num_classes) leave through
    :func:`to_library` to ``x``'s library.

    Examples
    --------
    >>> import torch, sdnet
    >>> from sdnet.interop import apply_model
    >>> model = sdnet.build_model("resnet8", in_channels=1, device="cpu")
    >>> apply_model(model, torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    xd = from_dlpack(x, model.backend, dtype=model.dtype)
    logits, _ = model(xd, train=False)
    return to_library(logits, _library_of(x))


def shares_memory(a: Any, b: Any) -> bool:
    """Whether two CPU tensors of any DLPack libraries view the same memory."""
    return bool(np.shares_memory(to_numpy(_detached(a)), to_numpy(_detached(b))))
