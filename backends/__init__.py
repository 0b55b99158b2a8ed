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

Other backends can be registered under a prefix of their own (:func:`register_backend`): the
tests do so for a simulated CUDA device that counts kernel launches and host syncs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sdnet._array_api import device as array_device
from sdnet._array_api import namespace

from . import numpy_kernels  # noqa: F401  (registers NumPy's forms of a few kernels)
from .backend import DTYPES, HOST, Backend, Driver
from .cuda import (
    CUPY,
    TORCH_CUDA,
    BackendUnavailable,
    cupy_backend,
    parse_index,
    set_tf32,
    tf32_enabled,
    tf32_status,
    torch_backend,
)

__all__ = [
    "Backend",
    "BackendUnavailable",
    "Driver",
    "DTYPES",
    "get_backend",
    "backend_of",
    "register_backend",
    "available_backends",
    "set_tf32",
    "tf32_enabled",
    "tf32_status",
]

log = logging.getLogger("sdnet")
_ACCEPTED = "use 'cpu', 'gpu', 'cuda:N', 'auto', 'torch', 'torch:cuda' or 'array_api_strict'"
# prefix -> (make the backend from a device string, give the backend of an array or None)
_REGISTERED: dict[str, tuple[Callable[[str], Backend], Callable[[Any], Backend | None]]] = {}


def register_backend(
    prefix: str, make: Callable[[str], Backend], of: Callable[[Any], Backend | None]
) -> None:
    """Make ``get_backend("<prefix>...")`` call ``make(spec)``, and :func:`backend_of` ask
    ``of(array)`` (``None``: not one of its arrays). Used by the tests' simulated device."""
    _REGISTERED[prefix] = (make, of)


def _numpy() -> Backend:
    from array_api_compat import numpy as xp

    return Backend("numpy", xp, "cpu", "numpy on cpu", HOST)


def _strict() -> Backend:
    try:
        import array_api_strict as xp
    except ImportError as exc:
        raise BackendUnavailable(
            "array_api_strict is not installed: pip install 'sdnet[test]' (or array-api-strict)"
        ) from exc
    dev = xp.Device("device1")
    return Backend("array_api_strict", xp, dev, "array_api_strict on device1", HOST)


def _auto() -> Backend:
    try:
        backend = cupy_backend(0)
    except BackendUnavailable as why:
        log.info("device='auto': using the CPU (%s)", why)
        return _numpy()
    log.info("device='auto': using %s", backend)
    return backend


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
        return cupy_backend(0)
    if spec.startswith("cuda"):
        return cupy_backend(parse_index(spec, "cuda", _ACCEPTED))
    if spec in ("array_api_strict", "strict"):
        return _strict()
    if spec == "torch" or spec.startswith("torch:"):
        return torch_backend(spec, _ACCEPTED)
    if spec == "auto":
        return _auto()
    for prefix, (make, _) in _REGISTERED.items():
        if spec.split(":", 1)[0] == prefix:
            return make(spec)
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

    for _, of in _REGISTERED.values():
        found = of(x)
        if found is not None:
            return found
    xp, dev = namespace(x), array_device(x)
    if is_numpy_namespace(xp):
        return Backend("numpy", xp, dev, f"numpy on {dev}", HOST)
    if is_cupy_namespace(xp):
        return Backend("cupy", xp, dev, f"cupy on cuda:{dev.id}", CUPY)
    if is_torch_namespace(xp):
        driver = TORCH_CUDA if dev.type == "cuda" else HOST
        return Backend("torch", xp, dev, f"torch on {dev}", driver)
    if is_array_api_strict_namespace(xp):
        return Backend("array_api_strict", xp, dev, f"array_api_strict on {dev}", HOST)
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
