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
