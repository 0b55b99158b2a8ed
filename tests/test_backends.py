"""Backend selection, error messages, and the rule that kernels never import an array library."""

from __future__ import annotations

import ast
import logging
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sdnet
from sdnet import BackendUnavailable, available_backends, get_backend

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def no_cupy(monkeypatch):
    """Make ``import cupy`` fail, whether or not CuPy is installed."""
    monkeypatch.setitem(sys.modules, "cupy", None)


# -- resolving device strings -------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["cpu", "numpy", "CPU", " cpu "])
def test_cpu_is_numpy(spec):
    be = get_backend(spec)
    assert be.name == "numpy"
    assert be.device == "cpu"
    x = be.asarray([1.0, 2.0], "float32")
    assert isinstance(x, np.ndarray) and x.dtype == np.float32


def test_array_api_strict_backend():
    import array_api_strict as xp

    be = get_backend("array_api_strict")
    assert be.name == "array_api_strict"
    assert be.device == xp.Device("device1")
    assert be.device != xp.Device("CPU_DEVICE")  # a non-default device on purpose
    x = be.asarray([1.0, 2.0], "float64")
    assert x.device == be.device and x.dtype == xp.float64
    with pytest.raises(ValueError):  # arrays on the default device do not mix with it
        x + xp.asarray([1.0, 2.0], dtype=xp.float64)


@pytest.mark.parametrize("spec", ["torch", "torch:cpu"])
def test_torch_backend(spec):
    import torch

    be = get_backend(spec)
    assert be.name == "torch"
    assert be.device == torch.device("cpu")
    x = be.asarray(np.arange(3.0), "float32")
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32


def test_backend_passes_through():
    be = get_backend("cpu")
    assert get_backend(be) is be


def test_auto_without_cupy_is_numpy_and_logs(no_cupy, caplog):
    caplog.set_level(logging.INFO, logger="sdnet")
    be = get_backend("auto")
    assert be.name == "numpy"
    msgs = [r.getMessage() for r in caplog.records if r.name == "sdnet"]
    assert any("auto" in m and "CPU" in m for m in msgs), msgs
    assert any("sdnet[gpu]" in m for m in msgs), msgs  # says why


@pytest.mark.parametrize("spec", ["gpu", "cuda", "cuda:0", "cuda:1", "cupy", "GPU"])
def test_gpu_without_cupy_raises_with_install_hint(no_cupy, spec):
    with pytest.raises(BackendUnavailable) as info:
        get_backend(spec)
    assert "sdnet[gpu]" in str(info.value)
    assert isinstance(info.value, RuntimeError)


def test_broken_cupy_import_is_backend_unavailable(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name == "cupy":
            raise OSError("libcudart.so.12: cannot open shared object file")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(BackendUnavailable, match="libcudart"):
        get_backend("gpu")


@pytest.mark.parametrize("spec", ["tpu", "metal", "", "numpy:0"])
def test_unknown_device_string_lists_accepted(spec):
    with pytest.raises(ValueError) as info:
        get_backend(spec)
    msg = str(info.value)
    for accepted in ("'cpu'", "'gpu'", "'cuda:N'", "'auto'", "'torch'", "'array_api_strict'"):
        assert accepted in msg, (accepted, msg)


@pytest.mark.parametrize(
    "spec", ["cuda:x", "cuda:", "cuda-1", "cuda:1.5", "torch:cuda:x", "torch:tpu"]
)
def test_malformed_indices_raise_value_error(no_cupy, spec):
    with pytest.raises(ValueError) as info:
        get_backend(spec)
    msg = str(info.value)
    assert "expected" in msg and "cuda" in msg, msg


@pytest.mark.parametrize("bad", [None, 0, 1.5, ["cpu"]])
def test_non_string_device_raises_type_error(bad):
    with pytest.raises(TypeError):
        get_backend(bad)


def test_torch_cuda_without_gpu_raises():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(BackendUnavailable, match="CUDA"):
        get_backend("torch:cuda")


def test_available_backends_reports(no_cupy):
    report = available_backends()
    assert set(report) >= {"cpu", "array_api_strict", "torch", "gpu"}
    assert report["cpu"].startswith("ok: numpy")
    assert report["array_api_strict"].startswith("ok:")
    assert report["torch"].startswith("ok:")
    assert report["gpu"].startswith("unavailable:")
    assert "sdnet[gpu]" in report["gpu"]


def test_dtype_names():
    be = get_backend("cpu")
    assert be.dtype("float32") is be.xp.float32
    assert be.dtype("float64") is be.xp.float64
    assert be.dtype(be.xp.float32) is be.xp.float32  # dtype objects pass through
    with pytest.raises(ValueError):
        be.dtype("float16")
    with pytest.raises(ValueError):
        sdnet.build_model("resnet8", dtype="int32")


def test_asarray_to_numpy_round_trip(backend):
    host = np.random.default_rng(0).standard_normal((2, 3, 4))
    for dtype in ("float32", "float64"):
        x = backend.asarray(host, dtype)
        assert tuple(x.shape) == host.shape
        back = backend.to_numpy(x)
        assert isinstance(back, np.ndarray)
        assert back.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(back, host.astype(dtype))
    # from a nested list, and integer labels keep an integer type
    labels = backend.to_numpy(backend.asarray([[1, 2], [3, 4]]))
    np.testing.assert_array_equal(labels, [[1, 2], [3, 4]])
    assert np.issubdtype(labels.dtype, np.integer)
    backend.synchronize()  # a no-op on the CPU, must not fail
    assert str(backend)


# -- imports ------------------------------------------------------------------------------------
def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_import_sdnet_does_not_import_cupy_and_works_without_it():
    code = """
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "cupy" or name.startswith("cupy."):
                    raise ImportError("cupy is blocked for this test")

        sys.meta_path.insert(0, Block())
        import sdnet
        assert "cupy" not in sys.modules, "import sdnet imported cupy"
        assert "torch" not in sys.modules, "import sdnet imported torch"
        assert "array_api_strict" not in sys.modules
        m = sdnet.build_model("resnet8", in_channels=1, device="cpu")
        try:
            sdnet.get_backend("gpu")
        except sdnet.BackendUnavailable as e:
            assert "sdnet[gpu]" in str(e)
        else:
            raise AssertionError("gpu backend without cupy")
        assert sdnet.get_backend("auto").name == "numpy"
        print("OK")
    """
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OK"


def _imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Call):  # importlib.import_module("numpy") / __import__
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.add(arg.value)
    return names


KERNEL_FILES = sorted(
    p
    for sub in ("functional", "layers", "models", "optim")
    for p in (ROOT / "sdnet" / sub).glob("*.py")
)


def test_kernel_files_found():
    names = {p.relative_to(ROOT).as_posix() for p in KERNEL_FILES}
    assert "sdnet/functional/conv.py" in names
    assert "sdnet/layers/batchnorm.py" in names
    assert "sdnet/models/stochastic_depth.py" in names


@pytest.mark.parametrize("path", KERNEL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_kernels_do_not_import_numpy_or_cupy(path):
    bad = {
        m for m in _imported_modules(path) if m.split(".")[0] in ("numpy", "cupy", "torch", "cupyx")
    }
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_import_checker_sees_imports(tmp_path):
    """The AST check above is able to fail."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import numpy as np\nfrom cupy import ndarray\n"
        "def f():\n    import cupyx.scipy\n    importlib.import_module('torch')\n"
    )
    assert _imported_modules(probe) >= {"numpy", "cupy", "cupyx.scipy", "torch"}


def test_device_questions_are_answered_by_the_backend(backend: sdnet.Backend) -> None:
    """``on_host`` and ``backend_of``: where an array lives, asked of the Backend alone."""
    from sdnet.backends import backend_of

    x = backend.asarray([1.0, 2.0], "float32")
    assert backend_of(x) == backend
    assert backend.on_host is (backend.name != "cupy")
    with backend_of(x).activate():
        assert backend.to_numpy(x * 2).tolist() == [2.0, 4.0]
    with pytest.raises(TypeError, match="supported"):
        backend_of([1.0, 2.0])
