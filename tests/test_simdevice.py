"""The simulated CUDA device itself: what it records is what CuPy through array-api-compat
would do, and what it computes is NumPy's, bit for bit. Each test can fail: a sync that is not
seen, a view counted as a launch, a creation that honours ``device=``, a count off by one."""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from sdnet.backends import backend_of

import sdnet
import sdnet.functional as F

# -- host syncs ------------------------------------------------------------------------------

SYNCS: dict[str, tuple[Callable[[Any, Any], Any], list[str]]] = {
    # name: (action on (xp, x) with x = arange(6.0) on sim:0, the syncs it must record)
    "bool": (lambda xp, x: bool(x[1] > 0), ["__bool__"]),
    "float": (lambda xp, x: float(xp.sum(x)), ["__float__"]),
    "int": (lambda xp, x: int(x[2]), ["__int__"]),
    "index": (lambda xp, x: operator.index(xp.astype(x[2], xp.int64)), ["__index__"]),
    "item": (lambda xp, x: x[3].item(), ["item"]),
    "tolist": (lambda xp, x: x.tolist(), ["tolist"]),
    "np.asarray": (lambda xp, x: np.asarray(x), ["__array__"]),
    "from_dlpack": (lambda xp, x: np.from_dlpack(x), ["__dlpack__"]),
    "get": (lambda xp, x: x.get(), ["get"]),
    "mask get": (lambda xp, x: x[x > 2.0], ["boolean index"]),
    "mask set": (lambda xp, x: x.__setitem__(x > 2.0, 0.0), ["boolean index (set)"]),
    "nonzero": (lambda xp, x: xp.nonzero(x > 2.0), ["nonzero"]),
    "unique": (lambda xp, x: xp.unique_values(x), ["unique_values"]),
    "clip both": (lambda xp, x: xp.clip(x, 1.0, 4.0), ["boolean index", "boolean index (set)"] * 2),
    "clip min": (lambda xp, x: xp.clip(x, 1.0), ["boolean index", "boolean index (set)"]),
    "print": (lambda xp, x: repr(x), ["__repr__"]),
}


@pytest.mark.parametrize("name", list(SYNCS))
def test_every_kind_of_host_read_is_a_sync(sim: ModuleType, name: str) -> None:
    action, expected = SYNCS[name]
    x = sim.xp.arange(6.0, dtype=sim.xp.float32)
    with sim.record() as rec:
        action(sim.xp, x)
    assert [e.kind for e in rec.syncs] == expected, rec.summary()
    assert len(rec.d2h) == len(expected)


def test_the_drivers_copy_to_the_host_is_a_sync(sim: ModuleType) -> None:
    be = sdnet.get_backend("sim:1")
    x = be.asarray(np.arange(5.0), "float32")
    with sim.record() as rec:
        host = be.to_numpy(x)
    assert isinstance(host, np.ndarray) and host.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [e.kind for e in rec.syncs] == ["get"] and [e.nbytes for e in rec.d2h] == [20]


def test_device_work_alone_never_syncs(sim: ModuleType) -> None:
    xp = sim.xp
    x = xp.reshape(xp.arange(24.0, dtype=xp.float32), (2, 3, 4))
    with sim.record() as rec:
        y = xp.sum(xp.maximum(x * 2.0 - 3.0, 0.0), axis=(1, 2))
        y = xp.take(y, xp.asarray([1, 0], device=x.device), axis=0)
        y = xp.where(y > 1.0, y, xp.zeros_like(y))
        _ = xp.stack([y, y]), xp.argmax(y), y.shape, len(y), x.device
    assert rec.syncs == [] and rec.d2h == [], rec.summary()


# -- devices ---------------------------------------------------------------------------------


def test_creation_ignores_device_and_is_recorded_when_used(sim: ModuleType) -> None:
    """As array-api-compat's CuPy wrappers: zeros(device=sim:1) with sim:0 current lands on
    sim:0; used with sim:1 arrays it is a kernel mixing devices."""
    xp, d0, d1 = sim.xp, sim.device(0), sim.device(1)
    w = xp.asarray([1.0, 2.0], dtype=xp.float32, device=d1)  # asarray honours device=
    assert w.device == d1
    with sim.record() as rec:
        z = xp.zeros((2,), dtype=xp.float32, device=d1)
        s = w + z
    assert z.device == d0 and s.device == d0
    kinds = [(e.kind, e.detail) for e in rec.wrong_device]
    assert kinds == [
        ("zeros", "device=sim:1 ignored: allocated on sim:0"),
        ("add", "reads sim:1 while sim:0 is current; mixes devices"),
    ], rec.summary()
    with d1, sim.record() as rec:  # made current, everything stays on sim:1
        z = xp.zeros((2,), dtype=xp.float32, device=d1)
        s = w + z
    assert z.device == d1 and s.device == d1 and rec.wrong_device == []


@pytest.mark.parametrize(
    "create",
    [
        lambda xp, d: xp.empty((2,), device=d),
        lambda xp, d: xp.ones((2,), device=d),
        lambda xp, d: xp.full((2,), 3.0, device=d),
        lambda xp, d: xp.arange(2, device=d),
        lambda xp, d: xp.eye(2, device=d),
        lambda xp, d: xp.linspace(0.0, 1.0, 2, device=d),
    ],
    ids=["empty", "ones", "full", "arange", "eye", "linspace"],
)
def test_every_creation_function_allocates_on_the_current_device(
    sim: ModuleType, create: Callable[[Any, Any], Any]
) -> None:
    with sim.record() as rec:
        a = create(sim.xp, sim.device(2))
    assert a.device == sim.device(0)
    assert [e.detail for e in rec.wrong_device] == ["device=sim:2 ignored: allocated on sim:0"]


def test_like_functions_follow_the_current_device_not_their_input(sim: ModuleType) -> None:
    x = sim.xp.asarray([1.0, 2.0], device=sim.device(1))
    with sim.record() as rec:
        z = sim.xp.zeros_like(x)
    assert z.device == sim.device(0)
    assert [e.detail for e in rec.wrong_device] == ["reads sim:1 while sim:0 is current"]


def test_the_current_device_nests_and_is_per_thread(sim: ModuleType) -> None:
    d1, d2 = sim.device(1), sim.device(2)
    seen: list[Any] = []
    with d1:
        with d2:
            assert sim.current() == d2
            thread = threading.Thread(target=lambda: seen.append(sim.current()))
            thread.start()
            thread.join()
        assert sim.current() == d1
    assert sim.current() == sim.device(0) and seen == [sim.device(0)]


def test_host_arrays_do_not_mix_with_device_arrays(sim: ModuleType) -> None:
    x = sim.xp.ones((2,))
    for mixed in (lambda: x + np.ones(2), lambda: np.ones(2) * x):
        with pytest.raises(TypeError, match="host NumPy array"):
            mixed()
    with pytest.raises(TypeError, match="host NumPy array"):
        x[:] = np.ones(2)


def test_strict_mode_raises_at_the_first_wrong_device_kernel(sim: ModuleType) -> None:
    x = sim.xp.asarray([1.0], device=sim.device(1))
    with sim.strict(), pytest.raises(sim.SimDeviceError, match="reads sim:1 while sim:0"):
        x * 2.0
    with sim.device(1), sim.strict():
        x * 2.0  # on its own device: nothing to refuse


# -- launches --------------------------------------------------------------------------------

VIEWS: dict[str, Callable[[Any, Any], Any]] = {
    "reshape": lambda xp, x: xp.reshape(x, (4, 6)),
    "permute_dims": lambda xp, x: xp.permute_dims(x, (2, 0, 1)),
    "slice": lambda xp, x: x[1:, ::2, None, ...],
    "integer": lambda xp, x: x[1, 2],
    "matrix_transpose": lambda xp, x: xp.matrix_transpose(x),
    "mT": lambda xp, x: x.mT,
    "expand_dims": lambda xp, x: xp.expand_dims(x, axis=1),
    "squeeze": lambda xp, x: xp.squeeze(x[:1], axis=0),
    "flip": lambda xp, x: xp.flip(x, axis=(1, 2)),
    "broadcast_to": lambda xp, x: xp.broadcast_to(x[:1], (5, 3, 4)),
    "astype, same dtype, copy=False": lambda xp, x: xp.astype(x, xp.float32, copy=False),
}


@pytest.mark.parametrize("name", list(VIEWS))
def test_views_launch_nothing(sim: ModuleType, name: str) -> None:
    xp = sim.xp
    x = xp.reshape(xp.arange(24.0, dtype=xp.float32), (2, 3, 4))
    with sim.record() as rec:
        v = VIEWS[name](xp, x)
    assert rec.launches == 0, rec.by_op
    assert np.shares_memory(v._a, x._a)  # a view of x's memory, on x's device
    assert v.device == x.device


def test_a_reshape_that_cannot_be_a_view_is_a_copy(sim: ModuleType) -> None:
    xp = sim.xp
    x = xp.permute_dims(xp.reshape(xp.arange(24.0, dtype=xp.float32), (2, 3, 4)), (0, 2, 1))
    with sim.record() as rec:
        y = xp.reshape(x, (2, 12))  # (2, 4, 3) with transposed strides: no view possible
    assert rec.by_op == {"reshape (copy)": 1}
    assert not np.shares_memory(y._a, x._a)


def test_a_small_computation_counts_exactly(sim: ModuleType) -> None:
    xp = sim.xp
    x = xp.ones((4, 3), dtype=xp.float32)
    w = xp.ones((2, 3), dtype=xp.float32)
    with sim.record() as rec:
        y = xp.matmul(x, xp.matrix_transpose(w))  # transposed view: cuBLAS takes it as is
        y = y + 1.0
        y *= 2.0
        y, _ = F.relu(y)
        loss = xp.mean(y)
        g = xp.matmul(x[:, ::2], xp.ones((2, 2), dtype=xp.float32))  # strided: copied first
    assert dict(rec.by_op) == {
        "matmul": 2,
        "add": 1,
        "multiply (in place)": 1,
        "maximum": 1,
        "mean": 1,
        "fill": 1,
        "matmul operand copy (not contiguous)": 1,
    }
    assert rec.launches == 8 and rec.syncs == [] and rec.h2d == []
    assert float(loss) == 8.0 and g.shape == (4, 2)


def test_an_augmented_assignment_through_a_view_is_one_kernel(sim: ModuleType) -> None:
    """``x[key] += y``: CuPy updates the view in place and skips writing it back."""
    x = sim.xp.zeros((4, 4), dtype=sim.xp.float32)
    with sim.record() as rec:
        x[:, 1:3] += 1.0
        x[::2, :] = x[1::2, :]  # another view: a copy
    assert rec.by_op == {"add (in place)": 1, "setitem (copy)": 1}
    assert x.tolist()[1] == [0.0, 1.0, 1.0, 0.0] and x.tolist()[0] == x.tolist()[1]


def test_joins_follow_cupys_rule(sim: ModuleType) -> None:
    """At most 8 arrays (or large ones): a copy kernel each; more small ones: one kernel after
    uploading the pointer table (and, for non-contiguous inputs, offsets and strides)."""
    xp = sim.xp
    small = [xp.ones((3,), dtype=xp.float32) for _ in range(9)]
    with sim.record() as rec:
        xp.stack(small[:8])
    assert rec.by_op == {"stack (copy per array)": 8} and rec.h2d == []
    with sim.record() as rec:
        xp.stack(small)
    assert rec.by_op == {"stack (one kernel)": 1} and [e.nbytes for e in rec.h2d] == [72]
    strided = [xp.ones((6,), dtype=xp.float32)[::2] for _ in range(9)]
    with sim.record() as rec:
        xp.concat(strided)
    assert rec.by_op == {"concat (one kernel)": 1} and [e.nbytes for e in rec.h2d] == [9 * 8 * 3]
    big = [xp.empty((1 << 19,), dtype=xp.float32) for _ in range(9)]  # 2 MiB each
    with sim.record() as rec:
        xp.stack(big)
    assert rec.by_op == {"stack (copy per array)": 9}


def test_clip_costs_what_array_api_compat_makes_it_cost_on_cupy(sim: ModuleType) -> None:
    """A copy; per bound: the bound uploaded (a fill), two comparisons, an ``or``, and a masked
    get and set, each a scan, a read of the count and a kernel."""
    x = sim.xp.arange(10, dtype=sim.xp.int64)
    with sim.record() as rec:
        y = sim.xp.clip(x, 2, 7)
    assert y.tolist() == [2, 2, 2, 3, 4, 5, 6, 7, 7, 7]
    per_bound = {"fill (asarray of a scalar)": 1, "isnan": 1, "bitwise_or": 1,
                 "scan (mask count)": 2, "getitem (boolean mask)": 1,
                 "setitem (boolean mask)": 1}  # fmt: skip
    expected = {k: 2 * v for k, v in per_bound.items()} | {"setitem (copy)": 1, "less": 1}
    assert dict(rec.by_op) == expected | {"greater": 1}
    assert len(rec.syncs) == 4 and [e.nbytes for e in rec.h2d] == [8, 8]


def test_a_scalar_upload_is_a_fill_and_an_array_upload_a_copy(sim: ModuleType) -> None:
    xp = sim.xp
    with sim.record() as rec:
        xp.asarray(np.ones((2, 3), dtype=np.float32))
        xp.asarray(0.5, dtype=xp.float32)
        xp.asarray([True, False, True])
    assert [e.nbytes for e in rec.h2d] == [24, 4, 3]
    assert rec.by_op == {"fill (asarray of a scalar)": 1}


# -- float64 and sources ---------------------------------------------------------------------


def test_float64_results_are_recorded_with_their_operation(sim: ModuleType) -> None:
    xp = sim.xp
    x = xp.ones((3,), dtype=xp.float32)
    with sim.record() as rec:
        _ = x * 2.0  # a Python float does not promote
        _ = x * np.float64(2.0)  # a NumPy float64 scalar does (NEP 50), as in CuPy
        _ = xp.zeros((2,))  # the default dtype
        _ = xp.astype(x, xp.float64)
    assert [e.kind for e in rec.float64] == ["multiply", "zeros (memset)", "astype"]


def test_events_name_the_sdnet_line_that_caused_them(sim: ModuleType) -> None:
    x = sim.xp.ones((2, 3), dtype=sim.xp.float32)
    with sim.record() as rec:
        y, saved = F.relu(x)
        F.relu_backward(y, saved)
    where = [e.where for e in rec.launch_events]
    assert where[0].startswith("sdnet/functional/activation.py:")
    assert " relu" in where[0] and " relu_backward" in where[-1]
    assert {e.file for e in rec.launch_events} == {"sdnet/functional/activation.py"}
    assert not any(str(Path.cwd()) in w for w in where)


# -- the backend -----------------------------------------------------------------------------


def test_the_backend_is_a_device_backend_on_the_chosen_device(sim: ModuleType) -> None:
    be = sdnet.get_backend("sim:1")
    assert be.name == "sim" and be.device == sim.device(1) and not be.on_host
    assert be.xp is sim.xp and be.memory_available() > 1 << 30
    with sim.record() as rec:
        x = be.asarray(np.ones((4, 2)), "float32")  # with sim:0 current
    assert x.device == sim.device(1) and x.dtype == np.float32
    assert [e.nbytes for e in rec.h2d] == [32] and rec.wrong_device == []
    assert backend_of(x) == be and backend_of(sim.xp.ones(1)) == sdnet.get_backend("sim")
    with be.activate():
        assert sim.current() == sim.device(1)
    with pytest.raises(ValueError, match="no simulated device"):
        sdnet.get_backend(f"sim:{sim.DEVICE_COUNT}")


def test_results_equal_numpys_bit_for_bit(sim: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ResNet-8 training step on sim:1 and on NumPy give the same weights, bit for bit (the
    CPU path is made to take the whole batch at once, as the device path does, and to run the
    array-API reference rather than NumPy's registered kernels, which sum in another order)."""
    conv = __import__("sdnet.functional.conv", fromlist=["CHUNK_BYTES"])
    monkeypatch.setattr(conv, "CHUNK_BYTES", 1 << 40)
    rng = np.random.default_rng(3)
    x_host, y_host = rng.normal(size=(8, 1, 12, 12)), rng.integers(0, 10, size=8)
    weights = {}
    for device in ("cpu", "sim:1"):
        weights[device] = _two_steps(device, x_host, y_host)
    for name, w in weights["cpu"].items():
        assert w.dtype == weights["sim:1"][name].dtype
        assert np.array_equal(w, weights["sim:1"][name]), name


def _two_steps(device: str, x_host: np.ndarray, y_host: np.ndarray) -> dict[str, np.ndarray]:
    from sdnet.backends.kernels import reference_kernels

    with reference_kernels():
        model = sdnet.build_model("resnet8", in_channels=1, p_last=0.5, device=device, seed=1)
        opt = sdnet.SGD(model.named_parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        x, y = model.backend.asarray(x_host, "float32"), model.backend.asarray(y_host)
        for _ in range(2):
            model.zero_grad()
            logits, backprop = model(x, train=True)
            _, saved = F.softmax_cross_entropy(logits, y)
            backprop(F.softmax_cross_entropy_backward(saved))
            opt.step()
        return model.state_dict()
