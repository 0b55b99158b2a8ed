"""The simulated device's array namespace: ``array_api_compat.numpy``, costed like CuPy.

Every function of ``array_api_compat.numpy`` is available. Most are wrapped generically: the
NumPy result, wrapped on the current device, one kernel launch named after the function. The
exceptions follow CuPy through ``array-api-compat`` (``array_api_compat/cupy/_aliases.py`` and
CuPy's ``_core``):

* **creation functions ignore ``device=``** (``zeros``, ``empty``, ``ones``, ``full``, ``arange``,
  ``eye``, ``linspace`` and the ``*_like`` ones): the array goes to the *current* device and a
  ``device=`` naming another one is recorded as wrong-device work. ``zeros`` is a memset and
  ``ones``/``full`` a fill (one launch each); ``empty`` launches nothing.
* ``asarray`` honours ``device=`` (array-api-compat makes that device current around it); host
  data is a host-to-device copy (a 0-d one is a fill kernel with the value as its argument). A
  device array passed with its own dtype is returned as it is, even when ``device=`` names
  another device (recorded: it was not moved).
* views launch nothing: ``reshape`` when the strides allow it (else one copy),
  ``permute_dims``, ``matrix_transpose``, ``expand_dims``, ``squeeze``, ``flip``,
  ``broadcast_to``, ``broadcast_arrays``, ``unstack``, ``moveaxis``.
* ``astype`` to the same dtype copies (one launch) unless ``copy=False``.
* ``matmul`` copies a 2-D operand that is neither C- nor F-contiguous first (cuBLAS needs one
  of the two), one launch each, then one launch for the product.
* ``concat``/``stack`` follow CuPy's ``_concatenate``: more than 8 arrays of one dtype averaging
  under 2 MiB are joined by one kernel (after host-to-device copies of the pointer, offset and
  stride tables); otherwise each array is copied by a kernel of its own.
* ``clip`` is array-api-compat's own ``clip`` run on this namespace, exactly as for CuPy: a
  copy, then per bound a scalar upload, two comparisons and an ``or``, and a boolean-mask get
  and set (two **host syncs** per bound).
* data-dependent output shapes (``nonzero``, ``unique_*``): a scan, a **host sync**, the kernel.

Approximations, where CuPy's count depends on more than the call: a reduction counts one
launch (CuPy's default CUB path takes two for a full reduction of a large array); a matrix
product counts one (cuBLAS may split it); ``sort``/``argsort`` and the ``unique_*`` functions
count one (thrust takes several); a memset counts as a launch.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any, cast

import array_api_compat.numpy as cnp
import numpy as np
from array_api_compat.common import _aliases

from sdnet.testing.simdevice import _array
from sdnet.testing.simdevice._array import SimArray, check_devices, kernel, note_launch, unwrap
from sdnet.testing.simdevice._device import DEVICE_COUNT, SimDevice, current, device
from sdnet.testing.simdevice._record import emit

__all__ = ["SimNamespace", "xp"]

VIEWS = frozenset(
    {"permute_dims", "matrix_transpose", "expand_dims", "squeeze", "flip", "broadcast_to",
     "broadcast_arrays", "unstack", "moveaxis"}
)  # fmt: skip
NO_WORK = frozenset({"isdtype", "result_type", "can_cast", "finfo", "iinfo", "broadcast_shapes"})
DATA_DEPENDENT = frozenset(
    {"nonzero", "unique_all", "unique_counts", "unique_inverse", "unique_values"}
)
JOIN_MAX_SEPARATE = 8  # CuPy copies each of at most this many arrays with its own kernel
JOIN_BYTES_PER_ARRAY = 2 * 1024 * 1024  # ... and arrays averaging at least this many bytes
_HOST_TYPES = (np.ndarray, np.generic, list, tuple, int, float, bool, complex)


def _target(op: str, device: Any) -> SimDevice:
    """Where a creation function allocates: the current device, whatever ``device=`` says."""
    cur = current()
    if device is not None and not isinstance(device, SimDevice):
        raise TypeError(f"{op}: device must be a simulated device, got {device!r}")
    if device is not None and device != cur:
        emit("wrong_device", op, str(cur), detail=f"device={device} ignored: allocated on {cur}")
    return cur


def _created(op: str, a: np.ndarray, dev: SimDevice, launches: int = 1) -> SimArray:
    for _ in range(launches):
        note_launch(op, [], a.dtype)
    if launches == 0 and a.dtype == np.float64:
        emit("float64", op, str(dev))
    return SimArray(a, dev)


class _Info:
    """``__array_namespace_info__()``: the simulated devices and NumPy's default dtypes."""

    def devices(self) -> list[SimDevice]:
        return [device(i) for i in range(DEVICE_COUNT)]

    def default_device(self) -> SimDevice:
        return current()

    def capabilities(self) -> dict[str, Any]:
        return {"boolean indexing": True, "data-dependent shapes": True, "max dimensions": 64}

    def default_dtypes(self, *, device: Any = None) -> Any:
        return cnp.__array_namespace_info__().default_dtypes()

    def dtypes(self, *, device: Any = None, kind: Any = None) -> Any:
        return cnp.__array_namespace_info__().dtypes(kind=kind)


class SimNamespace:
    """The namespace of :class:`SimArray` (``x.__array_namespace__()``)."""

    __name__ = "sdnet.testing.simdevice.xp"

    def __getattr__(self, name: str) -> Any:
        attr = getattr(cnp, name)  # AttributeError for names the namespace lacks
        if isinstance(attr, types.ModuleType):
            raise AttributeError(f"{name}: submodules are not simulated")
        if not callable(attr) or isinstance(attr, type):
            return attr  # dtypes, constants
        wrapped = _wrapper(name, attr)
        setattr(self, name, wrapped)  # made once per name
        return wrapped

    def __array_namespace_info__(self) -> _Info:
        return _Info()

    # -- creation ---------------------------------------------------------------------------------
    def asarray(
        self, obj: Any, /, *, dtype: Any = None, device: Any = None, copy: Any = None
    ) -> Any:
        if device is not None and not isinstance(device, SimDevice):
            raise TypeError(f"asarray: device must be a simulated device, got {device!r}")
        if isinstance(obj, SimArray):
            return _asarray_device(obj, dtype, device, copy)
        if isinstance(obj, (list, tuple)) and obj and all(isinstance(o, SimArray) for o in obj):
            with device or current():
                return self.stack([self.asarray(o, dtype=dtype) for o in obj])
        if not isinstance(obj, _HOST_TYPES):
            raise TypeError(f"asarray: cannot copy a {type(obj).__name__} to the device")
        if copy is False:
            raise ValueError("asarray: host data cannot reach the device without a copy")
        host = np.array(obj, dtype=dtype, copy=True)
        target = device or current()
        emit("h2d", "asarray", str(target), host.nbytes)
        with target:  # array-api-compat makes device= current around CuPy's asarray
            if host.ndim == 0:  # CuPy fills a 0-d array with the value as the kernel's argument
                note_launch("fill (asarray of a scalar)", [], host.dtype)
            elif host.dtype == np.float64:
                emit("float64", "asarray", str(target))
            return SimArray(host, target)

    def zeros(self, shape: Any, *, dtype: Any = None, device: Any = None) -> SimArray:
        return _created("zeros (memset)", np.zeros(shape, dtype), _target("zeros", device))

    def ones(self, shape: Any, *, dtype: Any = None, device: Any = None) -> SimArray:
        return _created("fill", np.ones(shape, dtype), _target("ones", device))

    def empty(self, shape: Any, *, dtype: Any = None, device: Any = None) -> SimArray:
        return _created("empty", np.empty(shape, dtype), _target("empty", device), 0)

    def full(self, shape: Any, fill_value: Any, *, dtype: Any = None, device: Any = None) -> Any:
        return _created("fill", np.full(shape, fill_value, dtype), _target("full", device))

    def arange(
        self,
        start: Any,
        /,
        stop: Any = None,
        step: Any = 1,
        *,
        dtype: Any = None,
        device: Any = None,
    ) -> SimArray:
        a = np.arange(start, stop, step, dtype=dtype)
        return _created("arange", a, _target("arange", device))

    def eye(
        self,
        n_rows: int,
        n_cols: int | None = None,
        /,
        *,
        k: int = 0,
        dtype: Any = None,
        device: Any = None,
    ) -> SimArray:
        a = np.eye(n_rows, n_cols, k=k, dtype=dtype)
        return _created("eye", a, _target("eye", device), 2)  # a memset, then the diagonal

    def linspace(
        self,
        start: Any,
        stop: Any,
        /,
        num: int,
        *,
        dtype: Any = None,
        device: Any = None,
        endpoint: bool = True,
    ) -> SimArray:
        a = np.linspace(start, stop, num, dtype=dtype, endpoint=endpoint)
        return _created("linspace", a, _target("linspace", device))

    def zeros_like(self, x: SimArray, /, *, dtype: Any = None, device: Any = None) -> SimArray:
        return _like("zeros_like (memset)", np.zeros_like, x, dtype, device)

    def ones_like(self, x: SimArray, /, *, dtype: Any = None, device: Any = None) -> SimArray:
        return _like("fill", np.ones_like, x, dtype, device)

    def empty_like(self, x: SimArray, /, *, dtype: Any = None, device: Any = None) -> SimArray:
        return _like("empty_like", np.empty_like, x, dtype, device, 0)

    def full_like(
        self, x: SimArray, /, fill_value: Any, *, dtype: Any = None, device: Any = None
    ) -> SimArray:
        a = np.full_like(x._a, fill_value, dtype=dtype)
        check_devices("full_like", [x.device])
        return _created("fill", a, _target("full_like", device))

    def from_dlpack(self, x: Any, /, *, device: Any = None, copy: Any = None) -> Any:
        if isinstance(x, SimArray):
            return self.asarray(x, device=device, copy=copy)
        return self.asarray(np.from_dlpack(x), device=device)

    # -- conversions and views ----------------------------------------------------------------
    def astype(self, x: SimArray, dtype: Any, /, *, copy: bool = True, device: Any = None) -> Any:
        if device is not None:
            return self.astype(x, dtype, copy=copy).to_device(device)
        if not copy and x.dtype == np.dtype(dtype):
            return x
        return kernel("astype", lambda a: a.astype(dtype), x)

    def reshape(self, x: SimArray, /, shape: Sequence[int], *, copy: bool | None = None) -> Any:
        if copy is not True:
            try:
                return SimArray(np.reshape(x._a, tuple(shape), copy=False), x.device)
            except ValueError:  # a copy is needed (or the shape is wrong: the copy says so)
                if copy is False:
                    raise
        return kernel("reshape (copy)", lambda a: np.reshape(a, tuple(shape), copy=True), x)

    # -- kernels with a cost of their own -------------------------------------------------------
    def matmul(self, x1: SimArray, x2: SimArray, /) -> SimArray:
        for a in (x1, x2):
            flags = unwrap(a, []).flags
            if a.ndim >= 2 and not flags.c_contiguous and (a.ndim > 2 or not flags.f_contiguous):
                note_launch("matmul operand copy (not contiguous)", [a.device], a.dtype)
        return kernel("matmul", np.matmul, x1, x2)

    def concat(self, arrays: Sequence[SimArray], /, *, axis: int | None = 0) -> SimArray:
        flat = [self.reshape(a, (-1,)) for a in arrays] if axis is None else list(arrays)
        _join_cost("concat", flat, 0 if axis is None else axis)
        return _joined(lambda xs: np.concatenate(xs, axis=0 if axis is None else axis), flat)

    def stack(self, arrays: Sequence[SimArray], /, *, axis: int = 0) -> SimArray:
        expanded = [self.expand_dims(a, axis=axis) for a in arrays]  # CuPy: concatenate these
        _join_cost("stack", expanded, axis)
        return _joined(lambda xs: np.stack(xs, axis=axis), list(arrays))

    def clip(self, x: SimArray, /, min: Any = None, max: Any = None) -> SimArray:  # noqa: A002
        # array-api-compat's clip, run on this namespace as it runs on CuPy's
        return _aliases.clip(x, min, max, xp=cast(Any, self))


def _like(
    op: str, fn: Callable[..., Any], x: SimArray, dtype: Any, device: Any, launches: int = 1
) -> SimArray:
    """``*_like``: allocated on the current device, wherever ``x`` lives (recorded if elsewhere)."""
    check_devices(op, [x.device])
    return _created(op, fn(x._a, dtype=dtype), _target(op, device), launches)


def _asarray_device(obj: SimArray, dtype: Any, device: Any, copy: Any) -> Any:
    """``asarray`` of a device array: itself when nothing changes (even for another
    ``device=``, as CuPy), else a cast or copy made on ``device``."""
    if (dtype is None or np.dtype(dtype) == obj.dtype) and copy is not True:
        if device is not None and device != obj.device:
            note = f"an array on {obj.device} is not moved by asarray(device={device})"
            emit("wrong_device", "asarray", str(current()), detail=note)
        return obj
    with device or current():
        return kernel("astype", lambda a: np.array(a, dtype=dtype, copy=True), obj)


def _join_cost(op: str, arrays: list[SimArray], axis: int) -> None:
    """Record CuPy's launches for joining ``arrays`` along ``axis`` (``_concatenate``)."""
    dtype = np.result_type(*[a.dtype for a in arrays])
    one_type = all(a.dtype == arrays[0].dtype for a in arrays)
    total = sum(a.size for a in arrays) * dtype.itemsize
    devices = [a.device for a in arrays]
    if len(arrays) > JOIN_MAX_SEPARATE and one_type and total < JOIN_BYTES_PER_ARRAY * len(arrays):
        width = sum(a.shape[axis] for a in arrays) // len(arrays)
        same = all(unwrap(a, []).flags.c_contiguous and a.shape[axis] == width for a in arrays)
        table = (
            8 * len(arrays) * (1 if same else 2 + arrays[0].ndim)
        )  # pointers (+ offsets, strides)
        emit("h2d", f"{op} (pointer tables)", str(current()), table)
        note_launch(f"{op} (one kernel)", devices, dtype)
        return
    for a in arrays:
        note_launch(f"{op} (copy per array)", [a.device], dtype)


def _joined(fn: Callable[[list[np.ndarray]], np.ndarray], arrays: list[SimArray]) -> SimArray:
    return SimArray(fn([unwrap(a, []) for a in arrays]), current())


def _wrapper(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """The generic wrapping of ``array_api_compat.numpy.<name>``."""
    if name in NO_WORK:
        return lambda *args, **kwargs: fn(*unwrap(args, []), **unwrap(kwargs, []))
    if name in VIEWS:

        def view(x: Any, *args: Any, **kwargs: Any) -> Any:
            items = x if isinstance(x, (list, tuple)) else [x]
            return _array.wrap(fn(*unwrap([x, *args], []), **kwargs), items[0].device)

        return view
    if name in DATA_DEPENDENT:

        def data_dependent(*args: Any, **kwargs: Any) -> Any:
            note_launch("scan (output size)", [], None)
            emit("syncs", name, str(current()))
            emit("d2h", name, str(current()), 8)
            return kernel(name, fn, *args, **kwargs)

        return data_dependent
    return lambda *args, **kwargs: kernel(name, fn, *args, **kwargs)


xp = SimNamespace()
_array.NAMESPACE = xp
