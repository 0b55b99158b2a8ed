"""Simulated devices ``sim:0`` ... ``sim:N-1`` and the current device, with CuPy's semantics.

As with ``cupy.cuda.Device``, a device is a context manager that makes itself the current
device of the calling thread and restores the previous one on exit; a thread starts with
device 0 current. Kernels run, and new arrays are allocated, on the current device.
"""

from __future__ import annotations

import threading
from typing import Any

from sdnet.testing.simdevice._record import emit

__all__ = ["SimDevice", "DEVICE_COUNT", "device", "current"]

DEVICE_COUNT = 4  # sim:0 .. sim:3
MEMORY_BYTES = 1 << 40  # what every simulated device reports free


class SimDevice:
    """One simulated CUDA device; ``with dev:`` makes it current (``cupy.cuda.Device``)."""

    __slots__ = ("id",)

    def __init__(self, index: int) -> None:
        self.id = index

    def __enter__(self) -> SimDevice:
        _state().stack.append(current())
        _state().current = self
        return self

    def __exit__(self, *exc: object) -> None:
        st = _state()
        st.current = st.stack.pop()

    def synchronize(self) -> None:
        """Wait for the device's queued work: a host sync."""
        emit("syncs", "synchronize", str(current()))

    @property
    def mem_info(self) -> tuple[int, int]:
        """(free, total) bytes, as ``cupy.cuda.Device.mem_info``."""
        return MEMORY_BYTES, MEMORY_BYTES

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SimDevice) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("sim", self.id))

    def __repr__(self) -> str:
        return f"sim:{self.id}"


_DEVICES = tuple(SimDevice(i) for i in range(DEVICE_COUNT))


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.current: SimDevice = _DEVICES[0]
        self.stack: list[SimDevice] = []


_THREADS = _ThreadState()


def _state() -> _ThreadState:
    return _THREADS


def device(index: int | str | Any) -> SimDevice:
    """``sim:index``; accepts ``3``, ``"sim:3"``, ``"sim"`` (device 0) or a :class:`SimDevice`.

    Raises
    ------
    ValueError
        For an index outside ``0 .. DEVICE_COUNT - 1`` (as CuPy for a missing device).
    """
    if isinstance(index, SimDevice):
        return index
    if isinstance(index, str):
        rest = index.strip().lower().removeprefix("sim")
        index = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else -1
        index = 0 if rest == "" else index
    if not isinstance(index, int) or not 0 <= index < DEVICE_COUNT:
        raise ValueError(f"no simulated device {index!r}: use sim:0 .. sim:{DEVICE_COUNT - 1}")
    return _DEVICES[index]


def current() -> SimDevice:
    """The calling thread's current device."""
    return _state().current
