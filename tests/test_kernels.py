"""Every kernel registered for a library (sdnet.backends.kernels) equals the array-API
reference it replaces: bit for bit where the arithmetic is the same, within rounding where
the operation order differs."""

from __future__ import annotations

import numpy as np
import pytest
from sdnet.backends.kernels import lookup, reference_kernels, registered

import sdnet
import sdnet.functional as F
from sdnet._threads import set_num_threads
from sdnet.functional import conv as conv_mod

CASES = [  # (N, C, H, W), (O, kh), stride, padding
    ((5, 3, 9, 9), (4, 3), 1, 1),
    ((4, 2, 8, 7), (3, 3), 2, 1),
    ((3, 4, 7, 7), (2, 1), 2, 0),
    ((6, 3, 6, 6), (5, 3), 1, 0),
    ((2, 1, 5, 9), (2, 3), 1, 2),
]


def _run(x: np.ndarray, w: np.ndarray, s: int, p: int, dy: np.ndarray) -> list[np.ndarray]:
    y, saved = F.conv2d(x, w, stride=s, padding=p)
    dx, dw = F.conv2d_backward(dy, saved)
    return [np.asarray(v) for v in (y, dx, dw)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape, kernel, s, p", CASES)
def test_numpy_convolution_kernels_equal_the_reference(
    shape, kernel, s, p, threads, dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conv_mod, "CHUNK_BYTES", 700)  # several blocks of a few images
    rng = np.random.default_rng(0)
    (n, c, h, wd), (o, k) = shape, kernel
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((o, c, k, k)).astype(dtype)
    ho, wo = F.conv_output_size(h, k, s, p), F.conv_output_size(wd, k, s, p)
    dy = rng.standard_normal((n, o, ho, wo)).astype(dtype)
    set_num_threads(threads)
    try:
        assert lookup("correlate", x) is not None
        fast = _run(x, w, s, p, dy)
        with reference_kernels():
            assert lookup("correlate", x) is None
            ref = _run(x, w, s, p, dy)
    finally:
        set_num_threads(None)
    rtol = 1e-5 if dtype == "float32" else 1e-13
    np.testing.assert_array_equal(fast[0], ref[0])  # the same products, block by block
    np.testing.assert_array_equal(fast[1], ref[1])
    np.testing.assert_allclose(fast[2], ref[2], rtol=rtol, atol=rtol)  # operands swapped


def test_registry_reports_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"correlate", "weight_grad"} <= set(registered()["numpy"])
    x = np.zeros((1, 1, 3, 3))
    assert lookup("correlate", x) is not None
    assert lookup("correlate", sdnet.get_backend("array_api_strict").asarray(x)) is None
    monkeypatch.setenv("SDNET_KERNELS", "reference")
    assert lookup("correlate", x) is None


def _channel_major(x: np.ndarray) -> np.ndarray:
    """``x`` (N, C, H, W) stored channel-major, as the network's activations are."""
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_batch_norm_and_relu_kernels_equal_the_reference(threads: int, dtype: str) -> None:
    rng = np.random.default_rng(1)
    x = _channel_major((rng.standard_normal((6, 5, 4, 3)) * 2 + 1).astype(dtype))
    g, b = (rng.standard_normal(5).astype(dtype) for _ in range(2))
    dy = _channel_major(rng.standard_normal(x.shape).astype(dtype))

    def run() -> list[np.ndarray]:
        y, saved = F.batch_norm_train(x, g, b)
        dx, dg, db = F.batch_norm_backward(dy, saved)
        ye, _ = F.batch_norm_eval(x, g, b, b * b, g * g + 1)
        r, _ = F.relu(x)
        dr = F.relu_backward(dy, r)
        ar, _ = F.add_relu(x, dy)
        return [y, saved.mean, saved.var, dx, dg, db, ye, r, dr, ar]

    set_num_threads(threads)
    try:
        fast = run()
        with reference_kernels():
            ref = run()
    finally:
        set_num_threads(None)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    names = "y mean var dx dgamma dbeta eval relu drelu add_relu".split()
    for name, a, r in zip(names, fast, ref, strict=True):
        np.testing.assert_allclose(a, r, rtol=rtol, atol=rtol, err_msg=name)
    for a, r in zip(fast[-4:], ref[-4:], strict=True):  # the same arithmetic: exactly
        np.testing.assert_array_equal(a, r)
    assert not fast[0].flags.c_contiguous and fast[0].transpose(1, 0, 2, 3).flags.c_contiguous


def test_kernels_take_the_reference_for_other_layouts() -> None:
    """A row-major (N, C, H, W) input is not the kernels' layout: the reference runs."""
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 4))
    y, saved = F.batch_norm_train(x, np.ones(3), np.zeros(3))
    with reference_kernels():
        y_ref, _ = F.batch_norm_train(x, np.ones(3), np.zeros(3))
    np.testing.assert_array_equal(y, y_ref)
