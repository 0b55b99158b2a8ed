"""The convolution's cache-sized image blocks and channel-major memory order.

On a CPU :func:`sdnet.functional.conv2d` builds its im2col matrix a block of images at a time;
these tests force tiny blocks and check that nothing changes: outputs and both gradients equal
the whole-batch computation, and the float64 finite-difference check passes, on every backend.
They also pin down the memory order the fast path relies on (NumPy).
"""

from __future__ import annotations

import numpy as np
import pytest

import sdnet
import sdnet.functional as F
import sdnet.functional.conv as conv_module
from sdnet.gradcheck import gradcheck

CASES = [  # (N, C, O, H, W, k, stride, padding)
    (5, 3, 4, 7, 6, 3, 1, 1),
    (5, 2, 3, 8, 8, 3, 2, 1),
    (4, 3, 2, 6, 5, 3, 1, 0),
    (3, 2, 2, 5, 5, 3, 1, 2),
    (4, 3, 5, 6, 6, 1, 2, 0),
]


def _run(backend: sdnet.Backend, case: tuple[int, ...], seed: int = 0) -> list[np.ndarray]:
    n, c, o, h, w, k, s, p = case
    rng = np.random.default_rng(seed)
    x = backend.asarray(rng.standard_normal((n, c, h, w)), "float64")
    wt = backend.asarray(rng.standard_normal((o, c, k, k)), "float64")
    y, saved = F.conv2d(x, wt, stride=s, padding=p)
    dy = backend.asarray(rng.standard_normal(tuple(y.shape)), "float64")
    dx, dw = F.conv2d_backward(dy, saved)
    return [backend.to_numpy(v) for v in (y, dx, dw)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_image_blocks_change_nothing(
    backend: sdnet.Backend, case: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = _run(backend, case)
    monkeypatch.setattr(conv_module, "CHUNK_BYTES", 1)  # one image per block (if on the host)
    blocks = _run(backend, case)
    for a, b in zip(whole, blocks, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES[:3], ids=lambda c: "x".join(map(str, c)))
def test_gradcheck_with_image_blocks(
    backend: sdnet.Backend, case: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conv_module, "CHUNK_BYTES", 1)
    n, c, o, h, w, k, s, p = case
    rng = np.random.default_rng(1)
    x = backend.asarray(rng.standard_normal((n, c, h, w)), "float64")
    wt = backend.asarray(rng.standard_normal((o, c, k, k)), "float64")

    def run(x, wt):  # type: ignore[no-untyped-def]
        y, saved = F.conv2d(x, wt, stride=s, padding=p)
        return y, lambda dy: F.conv2d_backward(dy, saved)

    gradcheck(run, x, wt, names=["x", "w"])


def test_block_size_fits_the_budget() -> None:
    x = np.zeros((16, 128, 30, 30), dtype=np.float32)  # (C, N, H+2p, W+2p)
    per_image = 9 * 16 * 28 * 28 * 4  # bytes of one image's im2col columns
    nb = conv_module._block(x, per_image)
    assert 1 <= nb <= 128 and nb * per_image <= max(conv_module.CHUNK_BYTES, per_image)


def test_network_runs_channel_major_without_copies() -> None:
    """conv2d returns an (N, C, H, W) view of a (C, N, H, W) buffer; the layers after it keep
    that order, so the next convolution's channel-major view is free."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4, 6, 6)).astype(np.float32)
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    y, _ = F.conv2d(x, w, stride=1, padding=1)
    assert y.shape == (8, 5, 6, 6) and np.transpose(y, (1, 0, 2, 3)).flags.c_contiguous
    z, _ = F.batch_norm_train(y, np.ones(5, np.float32), np.zeros(5, np.float32))
    r, _ = F.relu(z)
    padded, _ = F.pad_channels(r, 7)
    pooled, _ = F.avg_pool2d(r, 2)
    for v in (
        z,
        r,
        padded,
        pooled,
        F.global_avg_pool_backward(np.ones((8, 5), np.float32), (8, 5, 6, 6)),
    ):
        assert np.transpose(v, (1, 0, 2, 3)).flags.c_contiguous, v.shape
    y2, saved = F.conv2d(r, np.ones((3, 5, 3, 3), np.float32), padding=1)
    dx, _ = F.conv2d_backward(F.relu(y2)[0], saved)  # dy as the next layers would give it
    assert np.transpose(dx, (1, 0, 2, 3)).flags.c_contiguous
