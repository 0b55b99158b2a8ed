"""``x[key]`` and ``x[key] = value`` on the simulated device, costed as CuPy does them.

* Basic indices (integers, slices, ``None``, ``...``) make a view: no launch. Setting through
  them is one copy kernel (one fill kernel for a scalar); none when the value is that very
  view, as in ``x[key] += y`` (the update is the in-place kernel; CuPy skips the write-back).
* Integer arrays gather (``take``) or scatter: one launch (one more per extra index array).
* A boolean mask must be counted before the result can be allocated: CuPy scans it
  (``cumsum``) and reads the count back, so getting and setting with a mask each cost a
  **host sync**, a scan and the masked kernel (``_routines_indexing.pyx``).
* Index arrays given as host lists or NumPy arrays are copied to the device first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sdnet.testing.simdevice._array import SimArray, note_launch
from sdnet.testing.simdevice._device import current
from sdnet.testing.simdevice._record import emit

__all__ = ["getitem", "setitem"]


def _device_index(item: Any) -> Any:
    """Host index arrays (lists, NumPy arrays) become device arrays: a host-to-device copy."""
    if isinstance(item, (list, np.ndarray)):
        host = np.asarray(item)
        emit("h2d", "index array", str(current()), host.nbytes)
        return SimArray(host, current())
    return item


def _parse(key: Any) -> tuple[tuple[Any, ...], list[SimArray], list[SimArray]]:
    """The key as a tuple of NumPy indices, its boolean masks and its integer index arrays."""
    items = [_device_index(k) for k in (key if isinstance(key, tuple) else (key,))]
    masks = [k for k in items if isinstance(k, SimArray) and k.dtype == np.bool_]
    ints = [k for k in items if isinstance(k, SimArray) and k.dtype != np.bool_]
    raw = tuple(k._a if isinstance(k, SimArray) else k for k in items)
    if not masks and not ints and all(isinstance(k, (int, np.integer)) for k in raw):
        raw = raw + (Ellipsis,)  # a 0-d view, as CuPy returns, rather than a NumPy scalar
    return raw, masks, ints


def _count_masks(masks: list[SimArray], why: str) -> None:
    """The scan of each mask, and the read-back of its count (an int32: a host sync)."""
    for m in masks:
        note_launch("scan (mask count)", [m._dev], None)
        emit("syncs", why, str(current()))
        emit("d2h", why, str(current()), 4)


def getitem(x: SimArray, key: Any) -> SimArray:
    """``x[key]``: a view, a gather, or a masked copy (with a host sync)."""
    raw, masks, ints = _parse(key)
    if not masks and not ints:
        return SimArray(x._a[raw], x._dev)
    devices = [x._dev] + [k._dev for k in masks + ints]
    out = x._a[raw]
    if masks:
        _count_masks(masks, "boolean index")
        note_launch("getitem (boolean mask)", devices, out.dtype)
    else:
        for _ in ints[1:]:
            note_launch("index arithmetic", devices, None)
        note_launch("take", devices, out.dtype)
    return SimArray(out, current())


def setitem(x: SimArray, key: Any, value: Any) -> None:
    """``x[key] = value``: a copy or fill kernel; a scatter; or a masked scatter (a sync)."""
    raw, masks, ints = _parse(key)
    devices = [x._dev] + [k._dev for k in masks + ints]
    if isinstance(value, SimArray):
        devices.append(value._dev)
        v: Any = value._a
    elif isinstance(value, np.ndarray) and value.ndim > 0:
        raise TypeError("CuPy refuses to assign a host NumPy array into a device array")
    else:
        v = value
    scalar = not isinstance(value, SimArray)
    if masks:
        _count_masks(masks, "boolean index (set)")
        if scalar:  # CuPy makes the scalar a 0-d device array first (a fill)
            emit("h2d", "scalar operand", str(current()), x.dtype.itemsize)
            note_launch("fill", [], x.dtype)
        op = "setitem (boolean mask)"
    elif ints:
        op = "scatter"
    elif not scalar and _same_view(x._a[raw], v):
        return  # ``x[key] += y`` writes back the view it updated: CuPy skips the copy
    else:
        op = "fill" if scalar else "setitem (copy)"
    x._a[raw] = v
    note_launch(op, devices, x.dtype)


def _same_view(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` and ``b`` are the same memory seen the same way."""
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.shape == b.shape
        and a.strides == b.strides
        and a.dtype == b.dtype
    )
