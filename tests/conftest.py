"""Shared fixtures: every test that takes ``backend`` runs once per available backend.

* ``numpy``            always
* ``array_api_strict`` on a non-default device (``device1``): an array created without
                       ``device=`` cannot be combined with the model's arrays, so the test fails
* ``torch``            PyTorch CPU tensors through array-api-compat, when torch is installed
* ``cupy``             only with ``pytest -m gpu`` on a machine with CuPy and a CUDA device

The ``sim`` fixture gives the simulated CUDA device (``sdnet.testing.simdevice``) that the GPU
path's measurements run on, on every machine.
"""

# ruff: noqa: E402  (the BLAS thread variables must be set before NumPy is imported)
from __future__ import annotations

import importlib.util
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

# One BLAS thread in the tests and in every process they start (set before NumPy loads):
# OpenBLAS rounds matrix products differently with different thread counts, and several tests
# compare a subprocess's weights (sweep workers, killed and resumed runs) bit for bit with a
# run in this process. sdnet's own host threads do not change results (tests/test_threads.py).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np
import pytest
from sdnet.backends import BackendUnavailable

import sdnet

CPU_BACKENDS = ["cpu", "array_api_strict"] + (
    ["torch"] if importlib.util.find_spec("torch") is not None else []
)


def _gpu_params() -> list:
    try:
        sdnet.get_backend("gpu")
    except (BackendUnavailable, ValueError) as why:
        return [pytest.param("gpu", marks=[pytest.mark.gpu, pytest.mark.skip(reason=str(why))])]
    return [pytest.param("gpu", marks=pytest.mark.gpu)]


@pytest.fixture(params=CPU_BACKENDS + _gpu_params())
def backend(request: pytest.FixtureRequest) -> sdnet.Backend:
    """A :class:`sdnet.Backend` for each available library/device."""
    return sdnet.get_backend(request.param)


@pytest.fixture
def sim() -> Iterator[ModuleType]:
    """The simulated CUDA device, :mod:`sdnet.testing.simdevice`, registered so that
    ``get_backend("sim:N")`` works; ``sim:0`` is current, as device 0 of a fresh CUDA thread.
    Not one of the ``backend`` fixture's backends: the tests that measure the GPU path ask
    for it by name."""
    from sdnet.testing import simdevice

    simdevice.install()
    assert simdevice.current() == simdevice.device(0), "an earlier test left a device current"
    yield simdevice
    assert simdevice.current() == simdevice.device(0), "the test left another device current"


def default_signals() -> None:
    """``preexec_fn`` of a child process that is sent SIGINT, SIGTERM or SIGHUP: their default
    behaviour, even when the tests run with one ignored (SIGINT in a background job of a
    non-interactive shell, SIGHUP under ``nohup``), which a child would inherit and sdnet
    respects."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


@pytest.fixture
def sigint_handled() -> Iterator[None]:
    """Python's own Ctrl-C handler for the test (KeyboardInterrupt), whatever the runner
    inherited; the runner's handler is put back afterwards."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh seeded host generator for test data."""
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST files: ``$SDNET_DATA/mnist`` (CI sets it), else ``../shared/data/mnist``.

    Missing data is a failure, not a skip: a test suite that silently skips its real-data tests
    would pass without proving anything.
    """
    root = os.environ.get("SDNET_DATA") or str(Path(__file__).resolve().parents[2] / "shared/data")
    d = Path(root) / "mnist"
    if not (d / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"real MNIST not found in {d}: set SDNET_DATA to the folder holding mnist/")
    return d
