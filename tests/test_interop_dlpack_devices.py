"""DLPack across devices: host data reaches a device through the backend's own copy
(``Backend.asarray``) and device data reaches NumPy through its backend's transfer
(``Backend.to_numpy``), never through ``numpy.from_dlpack``, which refuses device memory.

On the CPU a stand-in device proves the routing: PyTorch CPU tensors whose DLPack device says
CUDA, with a driver that counts its copies. On a GPU (``-m gpu``): CuPy and PyTorch CUDA.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from sdnet.backends import Backend, Driver
from sdnet.backends.backend import KDL_CPU, KDL_CUDA
from sdnet.backends.cuda import CupyDriver, TorchDriver

import sdnet
from sdnet.interop import apply_model, from_dlpack, to_library

torch = pytest.importorskip("torch")
dlpack_mod = importlib.import_module("sdnet.interop.dlpack")
backends_mod = importlib.import_module("sdnet.backends")


@dataclass
class CountingDevice(Driver):
    """A stand-in CUDA device holding PyTorch CPU tensors: its DLPack device is CUDA 0, and it
    counts the copies made onto it and off it."""

    on_host = False
    copies: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})

    def asarray(self, xp: Any, host: np.ndarray, dtype: Any, device: Any) -> Any:
        self.copies["in"] += 1
        return StandInTensor(torch.tensor(host, dtype=dtype))

    def to_numpy(self, x: Any) -> np.ndarray:
        self.copies["out"] += 1
        return x.t.numpy().copy()

    def dlpack_device(self, device: Any) -> tuple[int, int]:
        return (KDL_CUDA, 0)


class StandInTensor:
    """A tensor 'on' the stand-in device: DLPack says CUDA 0."""

    device = "standin:0"

    def __init__(self, t: Any) -> None:
        self.t = t

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self.t.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (KDL_CUDA, 0)


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> tuple[Backend, CountingDevice]:
    """The stand-in backend, known to ``backend_of``; ``numpy.from_dlpack`` made to refuse
    device memory loudly, as it does on a GPU."""
    from array_api_compat import torch as xp

    driver = CountingDevice()
    backend = Backend("standin", xp, "standin:0", "stand-in CUDA device", driver)

    def of(x: Any) -> Backend | None:
        return backend if isinstance(x, StandInTensor) else None

    monkeypatch.setitem(backends_mod._REGISTERED, "standin", (lambda spec: backend, of))
    real = np.from_dlpack

    def host_only(x: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        if x.__dlpack_device__()[0] != KDL_CPU:
            raise RuntimeError("numpy.from_dlpack was handed device memory")
        return real(x, *args, **kwargs)

    monkeypatch.setattr(dlpack_mod.np, "from_dlpack", host_only)
    return backend, driver


def test_each_backend_names_its_dlpack_device() -> None:
    assert sdnet.get_backend("cpu").dlpack_device == (KDL_CPU, 0)
    assert sdnet.get_backend("array_api_strict").dlpack_device == (KDL_CPU, 0)
    assert sdnet.get_backend("torch").dlpack_device == (KDL_CPU, 0)
    assert CupyDriver().dlpack_device(type("Dev", (), {"id": 3})()) == (KDL_CUDA, 3)
    assert TorchDriver().dlpack_device(torch.device("cuda", 1)) == (KDL_CUDA, 1)


def test_device_data_reaches_numpy_through_its_backend(stand_in: Any) -> None:
    backend, driver = stand_in
    y = StandInTensor(torch.arange(6.0).reshape(2, 3))
    host = to_library(y, "numpy")
    assert isinstance(host, np.ndarray) and driver.copies["out"] == 1
    np.testing.assert_array_equal(host, np.arange(6.0).reshape(2, 3))


def test_host_data_reaches_the_device_through_the_backend(
    stand_in: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, driver = stand_in

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("from_dlpack across devices: the backend's copy must be used")

    monkeypatch.setattr(backend.xp, "from_dlpack", refuse)
    x = np.ones((2, 2), np.float32)
    y = from_dlpack(x, backend)
    assert isinstance(y, StandInTensor) and driver.copies["in"] == 1
    with pytest.raises(BufferError, match="sharing is impossible; pass copy=None"):
        from_dlpack(x, backend, copy=False)


def test_device_data_into_a_cpu_model_is_copied_out_once(stand_in: Any) -> None:
    """A device tensor into a CPU model: one copy out through its backend, the logits NumPy."""
    _, driver = stand_in
    model = sdnet.build_model("resnet8", in_channels=1, device="cpu", seed=0)
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    a = from_dlpack(StandInTensor(torch.from_numpy(x)), model.backend)
    assert isinstance(a, np.ndarray) and driver.copies["out"] == 1
    ref, _ = model(x, train=False)
    np.testing.assert_array_equal(apply_model(model, x), ref)


def test_same_kind_of_memory_is_still_shared() -> None:
    t = torch.arange(4.0)
    a = from_dlpack(t, "cpu", copy=False)
    assert sdnet.interop.shares_memory(a, t)


# -- on a GPU ------------------------------------------------------------------------------------
def _gpu() -> Backend:
    try:
        return sdnet.get_backend("gpu")
    except sdnet.BackendUnavailable as why:
        pytest.skip(str(why))


def _models(device: Any) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """The same ResNet-8 on ``device`` and on the CPU, an input and the CPU's logits."""
    model = sdnet.build_model("resnet8", in_channels=1, device=device, seed=0)
    cpu = sdnet.build_model("resnet8", in_channels=1, device="cpu", seed=0)
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    ref, _ = cpu(x, train=False)
    return model, cpu, x, ref


@pytest.mark.gpu
def test_numpy_in_and_out_of_a_cupy_model() -> None:
    backend = _gpu()
    model, _, x, ref = _models(backend)
    out = apply_model(model, x)  # (4, 10) NumPy logits
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    logits, _ = model(backend.asarray(x, "float32"), train=False)
    np.testing.assert_array_equal(to_library(logits, "numpy"), backend.to_numpy(logits))
    with pytest.raises(BufferError, match="pass copy=None"):
        from_dlpack(x, backend, copy=False)
    on_gpu = to_library(x, "cupy")
    assert on_gpu.__dlpack_device__()[0] == KDL_CUDA


@pytest.mark.gpu
def test_torch_cuda_tensors_share_memory_with_a_cupy_model() -> None:
    backend = _gpu()
    if not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA device")
    model, _, x, ref = _models(backend)
    t = torch.from_numpy(x).to(f"cuda:{backend.dlpack_device[1]}")
    a = from_dlpack(t, backend, copy=False)
    assert a.data.ptr == t.data_ptr()  # the same device memory
    out = apply_model(model, t)
    assert out.is_cuda
    np.testing.assert_allclose(out.cpu().numpy(), ref, rtol=1e-4, atol=1e-4)
    logits, _ = model(a, train=False)
    back = to_library(logits, "torch")
    assert back.is_cuda and back.data_ptr() == logits.data.ptr


@pytest.mark.gpu
def test_numpy_in_and_out_of_a_torch_cuda_model() -> None:
    try:
        backend = sdnet.get_backend("torch:cuda")
    except sdnet.BackendUnavailable as why:
        pytest.skip(str(why))
    model, _, x, ref = _models(backend)
    out = apply_model(model, x)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    t = from_dlpack(x, backend)
    assert t.is_cuda and to_library(t, "numpy").shape == x.shape
