"""The simulated device as an sdnet backend: ``get_backend("sim:1")`` once :func:`install` ran.

Its driver does what :class:`sdnet.backends.cuda.CupyDriver` does: arrays are not on the host
(so sdnet takes its device paths: deferred finiteness checks, whole-batch convolutions),
``activate`` makes the device current, ``asarray`` copies host data with the device made
current, ``to_numpy`` is a device-to-host copy and a sync.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from sdnet.backends import Backend, Driver, register_backend
from sdnet.testing.simdevice._array import SimArray
from sdnet.testing.simdevice._device import MEMORY_BYTES, SimDevice, device
from sdnet.testing.simdevice._namespace import xp

__all__ = ["SimDriver", "DRIVER", "backend", "install", "PREFIX"]

PREFIX = "sim"


class SimDriver(Driver):
    """The simulated CUDA device's driver (mirrors ``CupyDriver``)."""

    on_host = False

    def activate(self, device: Any) -> AbstractContextManager[Any]:
        return device  # a SimDevice is a context manager, as cupy.cuda.Device

    def synchronize(self, device: Any) -> None:
        device.synchronize()

    def memory_available(self, device: Any) -> int | None:
        return MEMORY_BYTES

    def asarray(self, xp: Any, host: np.ndarray, dtype: Any, device: Any) -> Any:
        with device:  # the copy lands on ``device`` whatever device is current
            return xp.asarray(host, dtype=dtype, device=device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.get()


DRIVER = SimDriver()


def backend(spec: str | int | SimDevice = 0) -> Backend:
    """The backend of a simulated device: ``"sim"``, ``"sim:N"``, ``N`` or a device."""
    dev = device(spec)
    return Backend(PREFIX, xp, dev, f"sim on {dev} (simulated CUDA device)", DRIVER)


def _of(x: Any) -> Backend | None:
    return backend(x.device) if isinstance(x, SimArray) else None


def install() -> None:
    """Register the ``sim`` prefix with :func:`sdnet.get_backend` (idempotent)."""
    register_backend(PREFIX, backend, _of)
