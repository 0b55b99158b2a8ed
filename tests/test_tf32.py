"""TF32 for CuPy's float32 matrix products: off by default, switched by ``SDNET_TF32`` or
``sdnet.set_tf32``, shown by ``sdnet info``, applied to CuPy whenever a CuPy backend is made
(here with a stand-in CuPy that records the calls; on a GPU, ``-m gpu``, by its numbers)."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

import sdnet
from sdnet.cli import main as cli_main

cuda_mod = importlib.import_module("sdnet.backends.cuda")


@pytest.fixture
def clean_tf32(monkeypatch: pytest.MonkeyPatch) -> None:
    """No choice made yet, no switch in the environment; both restored afterwards."""
    monkeypatch.setattr(cuda_mod, "_tf32_choice", [])
    monkeypatch.setattr(cuda_mod, "_tf32_devices", {})
    for name in ("SDNET_TF32", "CUPY_TF32"):
        monkeypatch.setenv(name, "0")  # recorded as it was, so that set_tf32's write is undone
        monkeypatch.delenv(name)
    yield  # set_tf32 writes SDNET_TF32: monkeypatch puts the environment back as it was


def test_off_by_default(clean_tf32: None) -> None:
    assert sdnet.backends.tf32_enabled() is False
    assert sdnet.backends.tf32_status() == "off (default)"


@pytest.mark.parametrize("text, on", [("1", True), ("on", True), ("TRUE", True), ("yes", True),
                                      ("0", False), ("off", False), ("no", False)])  # fmt: skip
def test_the_environment_switches_it(
    clean_tf32: None, monkeypatch: pytest.MonkeyPatch, text: str, on: bool
) -> None:
    monkeypatch.setenv("SDNET_TF32", text)
    assert sdnet.backends.tf32_enabled() is on
    assert sdnet.backends.tf32_status() == f"{'on' if on else 'off'} (SDNET_TF32={text})"


def test_cupys_own_switch_counts_unless_sdnets_is_set(
    clean_tf32: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUPY_TF32", "1")
    assert sdnet.backends.tf32_status() == "on (CUPY_TF32=1)"
    monkeypatch.setenv("SDNET_TF32", "0")
    assert sdnet.backends.tf32_enabled() is False


def test_a_bad_switch_says_what_to_do(clean_tf32: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDNET_TF32", "maybe")
    with pytest.raises(ValueError, match=r"SDNET_TF32='maybe' is not a switch: set it to 1"):
        sdnet.backends.tf32_enabled()
    assert sdnet.backends.tf32_status().startswith("invalid (SDNET_TF32='maybe'")
    with pytest.raises(TypeError, match="set_tf32 takes True or False"):
        sdnet.set_tf32("yes")  # type: ignore[arg-type]


def test_set_tf32_wins_and_is_inherited_by_child_processes(
    clean_tf32: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDNET_TF32", "0")
    sdnet.set_tf32(True)
    assert sdnet.backends.tf32_enabled() is True
    assert sdnet.backends.tf32_status() == "on (sdnet.set_tf32)"
    import os

    assert os.environ["SDNET_TF32"] == "1"  # sweep workers start with the same choice


def test_sdnet_info_reports_it(
    clean_tf32: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SDNET_TF32", "1")
    assert cli_main(["info"]) == 0
    assert (
        "TF32 in float32 matrix products on CUDA (CuPy): on (SDNET_TF32=1)"
        in capsys.readouterr().out
    )  # noqa: E501


# -- applied to CuPy: a stand-in CuPy records what sdnet asks of it --------------------------
def _module(name: str, **attrs: Any) -> ModuleType:
    m = ModuleType(name)
    m.__dict__.update(attrs)
    return m


@pytest.fixture
def fake_cupy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any, Any]]:
    """``cupy``, its compute-type switch and cuBLAS, recording every call."""
    calls: list[tuple[str, Any, Any]] = []

    class Device:
        def __init__(self, index: int = 0) -> None:
            self.id = index
            self.cublas_handle = 1000 + index

    runtime = SimpleNamespace(getDeviceCount=lambda: 1,
                              getDeviceProperties=lambda i: {"name": b"Stand-in GPU"})  # fmt: skip

    def compute(dtype: Any, kind: int) -> None:
        calls.append(("compute", dtype, kind))

    def math(handle: int, mode: int) -> None:
        calls.append(("math", handle, mode))

    linalg = _module("cupy._core._routines_linalg", COMPUTE_TYPE_DEFAULT=1, COMPUTE_TYPE_TF32=7,
                     set_compute_type=compute)  # fmt: skip
    cublas = _module("cupy_backends.cuda.libs.cublas", CUBLAS_DEFAULT_MATH=0, setMathMode=math)
    cupy = _module("cupy", cuda=SimpleNamespace(runtime=runtime, Device=Device))
    modules = {
        "cupy": cupy,
        "cupy._core": _module("cupy._core", _routines_linalg=linalg),
        "cupy._core._routines_linalg": linalg,
        "cupy_backends": _module("cupy_backends"),
        "cupy_backends.cuda": _module("cupy_backends.cuda"),
        "cupy_backends.cuda.libs": _module("cupy_backends.cuda.libs", cublas=cublas),
        "cupy_backends.cuda.libs.cublas": cublas,
        "array_api_compat.cupy": _module("array_api_compat.cupy"),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delattr(importlib.import_module("array_api_compat"), "cupy", raising=False)
    return calls


def test_a_cupy_backend_applies_the_setting(clean_tf32: None, fake_cupy: list[Any]) -> None:
    backend = sdnet.get_backend("gpu")
    assert backend.name == "cupy" and backend.dlpack_device == (2, 0)
    assert fake_cupy == [("compute", np.float32, 1), ("math", 1000, 0)]  # off: the defaults
    fake_cupy.clear()
    sdnet.set_tf32(True)  # applied at once to the device already in use
    assert fake_cupy == [
        ("compute", np.float32, 7),
        ("math", 1000, cuda_mod.CUBLAS_TF32_TENSOR_OP_MATH),
    ]  # noqa: E501
    assert cuda_mod.CUBLAS_TF32_TENSOR_OP_MATH == 3  # cublas_api.h


def test_the_environment_reaches_cupy(
    clean_tf32: None, fake_cupy: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDNET_TF32", "1")
    sdnet.get_backend("cuda:0")
    assert ("compute", np.float32, 7) in fake_cupy and ("math", 1000, 3) in fake_cupy


def test_a_cupy_that_cannot_switch_refuses_only_when_asked(
    clean_tf32: None, fake_cupy: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(sys.modules["cupy_backends.cuda.libs.cublas"], "setMathMode")
    sdnet.get_backend("gpu")  # off is CuPy's default: nothing to refuse
    monkeypatch.setenv("SDNET_TF32", "1")
    with pytest.raises(sdnet.BackendUnavailable, match="TF32 was asked for but this CuPy"):
        sdnet.get_backend("gpu")


# -- on a GPU: the numbers show it ---------------------------------------------------------------
def _product_error(backend: Any, a: np.ndarray, b: np.ndarray, batched: bool) -> float:
    """Largest error of a float32 product against float64, relative to the largest entry."""
    xp = backend.xp
    xa, xb = backend.asarray(a), backend.asarray(b)
    if batched:  # (2, M, K) @ (2, K, N): cuBLAS's batched path, which follows the math mode
        y = xp.matmul(xp.stack([xa, xa]), xp.stack([xb, xb]))[1, ...]
    else:
        y = xp.matmul(xa, xb)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    return float(np.max(np.abs(backend.to_numpy(y) - exact)) / np.max(np.abs(exact)))


@pytest.mark.gpu
@pytest.mark.parametrize("batched", [False, True], ids=["2d", "batched"])
def test_tf32_rounds_float32_products_on_the_gpu(clean_tf32: None, batched: bool) -> None:
    try:
        backend = sdnet.get_backend("gpu")
    except sdnet.BackendUnavailable as why:
        pytest.skip(str(why))
    import cupy

    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 512)).astype(np.float32)  # (M, K)
    b = rng.standard_normal((512, 384)).astype(np.float32)  # (K, N)
    off = _product_error(backend, a, b, batched)
    assert off < 1e-5  # float32: about 1e-7
    sdnet.set_tf32(True)
    on = _product_error(backend, a, b, batched)
    sdnet.set_tf32(False)
    again = _product_error(backend, a, b, batched)
    assert again < 1e-5  # switched back off
    if int(cupy.cuda.Device().compute_capability) >= 80:  # TF32 exists from Ampere on
        assert on > max(5e-5, 20 * off)  # inputs rounded to 10 bits: about 4e-4
