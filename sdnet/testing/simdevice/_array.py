"""The simulated device array: a NumPy array plus the device it lives on.

Every operation computes with NumPy (results are NumPy's, bit for bit) and tells the recording
what a CUDA device would pay for it, the way CuPy does it:

* a **kernel launch** per operation that produces an array or writes one in place (see
  :func:`kernel`); none for a view;
* a **host sync** (and a device-to-host copy) for every value read back: ``bool``, ``float``,
  ``int``, ``index``, ``item``, ``tolist``, ``get``, ``__array__`` (CuPy refuses this one
  outright), DLPack export to the host, printing;
* **wrong-device work**: a kernel launched while an input lives on another device than the
  current one, or mixing arrays of two devices (recorded, not refused, unless in strict mode).

Host NumPy arrays do not combine with device arrays (``TypeError``, as in CuPy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from sdnet.testing.simdevice._device import SimDevice, current
from sdnet.testing.simdevice._record import active, emit

__all__ = ["SimArray", "kernel", "inplace", "unwrap", "wrap", "note_launch", "host_read"]

NAMESPACE: Any = None  # the namespace module object, set by _namespace on import


class SimArray:
    """An array on a simulated device (implements the array API's array object)."""

    __slots__ = ("_a", "_dev")
    __array_ufunc__ = None  # NumPy's operators defer to ours, which refuse host arrays

    def __init__(self, a: np.ndarray, dev: SimDevice) -> None:
        self._a = a
        self._dev = dev

    # -- attributes (no device work) ---------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._a.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._a.dtype

    @property
    def ndim(self) -> int:
        return self._a.ndim

    @property
    def size(self) -> int:
        return int(self._a.size)

    @property
    def nbytes(self) -> int:
        return int(self._a.nbytes)

    @property
    def device(self) -> SimDevice:
        return self._dev

    @property
    def mT(self) -> SimArray:  # noqa: N802 (the standard's name)
        return SimArray(np.swapaxes(self._a, -1, -2), self._dev)

    @property
    def T(self) -> SimArray:  # noqa: N802
        if self.ndim != 2:
            raise ValueError("x.T is for 2-D arrays; use permute_dims or x.mT")
        return SimArray(self._a.T, self._dev)

    def __array_namespace__(self, *, api_version: str | None = None) -> Any:
        return NAMESPACE

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d array")
        return int(self._a.shape[0])

    def __iter__(self) -> Iterator[SimArray]:
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self._a.shape[0]))

    # -- reading values back: host syncs ---------------------------------------------------------
    def __bool__(self) -> bool:
        return bool(host_read(self, "__bool__"))

    def __float__(self) -> float:
        return float(host_read(self, "__float__"))

    def __int__(self) -> int:
        return int(host_read(self, "__int__"))

    def __index__(self) -> int:
        return int(host_read(self, "__index__").__index__())

    def __complex__(self) -> complex:
        return complex(host_read(self, "__complex__"))

    def item(self) -> Any:
        return host_read(self, "item").item()

    def tolist(self) -> Any:
        return host_read(self, "tolist").tolist()

    def get(self) -> np.ndarray:
        """A host copy (``cupy.ndarray.get``): a device-to-host copy and a sync."""
        return host_read(self, "get").copy()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        # CuPy raises TypeError here; the simulator records it as a sync so a test lists them all
        out = host_read(self, "__array__")
        return np.array(out, dtype=dtype, copy=True)

    def __dlpack__(self, **kwargs: Any) -> Any:
        """Export to a host consumer (``np.from_dlpack``): a device-to-host copy and a sync.
        The simulated memory is host memory; the export hands over a copy of it."""
        return host_read(self, "__dlpack__").copy().__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU: what the exported copy is

    def __repr__(self) -> str:
        return f"SimArray({np.array2string(host_read(self, '__repr__'))}, device={self._dev})"

    def __format__(self, spec: str) -> str:
        return format(host_read(self, "__format__").item() if self.ndim == 0 else repr(self), spec)

    def to_device(self, device: Any, /, *, stream: Any = None) -> Any:
        """A copy on ``device`` (a :class:`SimDevice`; ``"cpu"`` gives a host NumPy copy)."""
        if device == "cpu":
            return self.get()
        if not isinstance(device, SimDevice):
            raise TypeError(f"to_device: expected a simulated device or 'cpu', got {device!r}")
        if device == self._dev:
            return self
        with device:  # a peer copy, made on the target device on purpose: not wrong-device
            note_launch("copy (to_device)", [], np.dtype(self.dtype))
            return SimArray(self._a.copy(), device)

    # -- indexing -------------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> SimArray:
        from sdnet.testing.simdevice._indexing import getitem

        return getitem(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        from sdnet.testing.simdevice._indexing import setitem

        setitem(self, key, value)

    # -- operators ------------------------------------------------------------------------------
    def __matmul__(self, other: Any) -> SimArray:
        return NAMESPACE.matmul(self, other)

    def __rmatmul__(self, other: Any) -> SimArray:
        return NAMESPACE.matmul(other, self)

    def __neg__(self) -> SimArray:
        return kernel("negative", np.negative, self)

    def __pos__(self) -> SimArray:
        return kernel("positive", np.positive, self)

    def __abs__(self) -> SimArray:
        return kernel("abs", np.abs, self)

    def __invert__(self) -> SimArray:
        return kernel("bitwise_invert", np.invert, self)


def _binary(name: str, ufunc: Callable[..., Any], reflected: bool = False) -> Any:
    def op(self: SimArray, other: Any) -> SimArray:
        return kernel(name, ufunc, other, self) if reflected else kernel(name, ufunc, self, other)

    return op


def _in_place(name: str, ufunc: Callable[..., Any]) -> Any:
    def op(self: SimArray, other: Any) -> SimArray:
        return inplace(f"{name} (in place)", ufunc, self, other)

    return op


# operator -> (array API function name, NumPy ufunc)
_OPERATORS = {
    "add": ("add", np.add),
    "sub": ("subtract", np.subtract),
    "mul": ("multiply", np.multiply),
    "truediv": ("divide", np.divide),
    "floordiv": ("floor_divide", np.floor_divide),
    "mod": ("remainder", np.remainder),
    "pow": ("pow", np.power),
    "and": ("bitwise_and", np.bitwise_and),
    "or": ("bitwise_or", np.bitwise_or),
    "xor": ("bitwise_xor", np.bitwise_xor),
    "lshift": ("bitwise_left_shift", np.left_shift),
    "rshift": ("bitwise_right_shift", np.right_shift),
}
_COMPARISONS = {
    "lt": ("less", np.less),
    "le": ("less_equal", np.less_equal),
    "gt": ("greater", np.greater),
    "ge": ("greater_equal", np.greater_equal),
    "eq": ("equal", np.equal),
    "ne": ("not_equal", np.not_equal),
}
for _op, (_name, _ufunc) in _OPERATORS.items():
    setattr(SimArray, f"__{_op}__", _binary(_name, _ufunc))
    setattr(SimArray, f"__r{_op}__", _binary(_name, _ufunc, reflected=True))
    setattr(SimArray, f"__i{_op}__", _in_place(_name, _ufunc))
for _op, (_name, _ufunc) in _COMPARISONS.items():
    setattr(SimArray, f"__{_op}__", _binary(_name, _ufunc))
SimArray.__hash__ = None  # type: ignore[assignment]  # elementwise ==, as every array library


# -- the kernel core -----------------------------------------------------------------------------


def unwrap(obj: Any, devices: list[SimDevice]) -> Any:
    """``obj`` with every device array replaced by its NumPy array (their devices appended to
    ``devices``); lists and tuples are walked. Host NumPy arrays are refused, as CuPy does."""
    if isinstance(obj, SimArray):
        devices.append(obj._dev)
        return obj._a
    if isinstance(obj, np.ndarray):
        raise TypeError(
            "a host NumPy array cannot be combined with a simulated device array (CuPy "
            "refuses it too): copy it to the device first"
        )
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(unwrap(o, devices) for o in obj)
    return obj


def wrap(out: Any, dev: SimDevice) -> Any:
    """NumPy results (arrays, scalars, tuples of them) as device arrays on ``dev``."""
    if isinstance(out, np.ndarray):
        return SimArray(out, dev)
    if isinstance(out, np.generic):
        return SimArray(np.asarray(out), dev)  # 0-d results stay arrays, as in CuPy
    if isinstance(out, tuple):
        items = [wrap(o, dev) for o in out]
        return type(out)(*items) if hasattr(out, "_fields") else tuple(items)
    if isinstance(out, list):
        return [wrap(o, dev) for o in out]
    return out


def _arrays(out: Any) -> list[SimArray]:
    if isinstance(out, SimArray):
        return [out]
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in _arrays(o)]
    return []


def check_devices(op: str, devices: Sequence[SimDevice]) -> None:
    """Record a kernel whose inputs live on a device that is not current, or on several."""
    if not devices or not active():
        return
    cur = current()
    others = sorted({str(d) for d in devices if d != cur})
    if not others:
        return
    mixed = len(set(devices)) > 1
    detail = f"reads {', '.join(others)} while {cur} is current" + (
        "; mixes devices" if mixed else ""
    )
    emit("wrong_device", op, str(cur), detail=detail)


def note_launch(op: str, devices: Sequence[SimDevice], dtype: Any) -> None:
    """Record one launch of ``op`` on the current device reading ``devices``; a float64
    ``dtype`` (the type the kernel computes in) is recorded too."""
    if not active():
        return
    cur = str(current())
    emit("launches", op, cur)
    check_devices(op, devices)
    if dtype is not None and np.dtype(dtype) == np.float64:
        emit("float64", op, cur)


def kernel(op: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` (NumPy) on the unwrapped arguments as one kernel launch on the current
    device; the results are allocated there."""
    devices: list[SimDevice] = []
    a = [unwrap(x, devices) for x in args]
    kw = {k: unwrap(v, devices) for k, v in kwargs.items()}
    result = wrap(fn(*a, **kw), current())
    float64 = any(out.dtype == np.float64 for out in _arrays(result))  # one record per kernel
    note_launch(op, devices, np.float64 if float64 else None)
    return result


def inplace(op: str, ufunc: Callable[..., Any], target: SimArray, other: Any) -> SimArray:
    """``target op= other``: one launch on the current device, writing ``target``'s memory."""
    devices = [target._dev]
    value = unwrap(other, devices)
    ufunc(target._a, value, out=target._a)
    note_launch(op, devices, np.result_type(target._a, value))
    return target


def host_read(x: SimArray, why: str) -> np.ndarray:
    """``x``'s values on the host: a device-to-host copy, and a host sync (recorded as ``why``)."""
    emit("syncs", why, str(current()))
    emit("d2h", why, str(current()), x.nbytes)
    return x._a
