"""NumPy forms of the convolution's two block loops (registered in :mod:`.kernels`).

The array-API reference (``sdnet/functional/conv.py``) pads each block of images, stacks the
kh*kw shifted views into a fresh ``cols`` matrix and copies each product into the output.
Here each thread keeps one ``cols`` workspace per shape, allocated zeroed once: the window of
every kernel offset is copied straight from the unpadded input into its place, and the parts
that fall in the padding are never written, so they stay zero. The product is written with
``out=`` into the output's own (strided) block. Same numbers, with no padded copy, no new
``cols`` and no output copy per block; the weight gradient is computed as ``cols @ dy^T``
(then transposed), the operand order OpenBLAS is fastest at here.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from sdnet._threads import map_blocks

from .kernels import register

__all__ = ["correlate", "weight_grad", "fill_cols"]

_local = threading.local()
_MAX_WORKSPACES = 16  # per thread: a network has a handful of shapes


def _window(size: int, out: int, offset: int, s: int, p: int) -> tuple[int, int, int]:
    """Output positions ``[o0, o1)`` whose source ``s*o + offset - p`` lies in ``[0, size)``,
    and the first source position."""
    o0 = max(0, -(-(p - offset) // s))
    o1 = min(out, (size - 1 - offset + p) // s + 1)
    return o0, max(o0, o1), s * o0 + offset - p


def _workspace(shape: tuple[int, ...], dtype: np.dtype, key: tuple[Any, ...]) -> np.ndarray:
    """This thread's zeroed ``cols`` workspace for ``key`` (its padding parts stay zero)."""
    spaces = getattr(_local, "spaces", None)
    if spaces is None:
        spaces = _local.spaces = {}
    if key not in spaces:
        if len(spaces) >= _MAX_WORKSPACES:
            spaces.pop(next(iter(spaces)))
        spaces[key] = np.zeros(shape, dtype=dtype)
    return spaces[key]


def fill_cols(xblk: np.ndarray, kh: int, kw: int, ho: int, wo: int, s: int, p: int) -> np.ndarray:
    """``cols`` (C*kh*kw, m*Ho*Wo) of the (C, m, H, W) block ``xblk``, zero padding ``p``, in
    this thread's workspace (valid until this thread's next call with the same shapes)."""
    c, m, h, w = xblk.shape
    key = (c, m, h, w, kh, kw, ho, wo, s, p, xblk.dtype.str)
    cols = _workspace((c, kh * kw, m, ho, wo), xblk.dtype, key)  # (C, kh*kw, m, Ho, Wo)
    if s == 1 and (ho, wo) == (h, w) and xblk.strides[2:] == (w * xblk.itemsize, xblk.itemsize):
        _fill_same(cols, xblk, kh, kw, p)
    else:
        _fill_windows(cols, xblk, kh, kw, ho, wo, s, p)
    return cols.reshape(c * kh * kw, m * ho * wo)


def _fill_same(cols: np.ndarray, xblk: np.ndarray, kh: int, kw: int, p: int) -> None:
    """Stride 1, output the input's size: each offset is one shift of the flattened image
    planes (long contiguous copies), then the column that wrapped around a row is zeroed."""
    c, m, h, w = xblk.shape
    src = xblk.reshape(c, m, h * w)  # a view: the planes are contiguous
    flat = cols.reshape(c, kh * kw, m, h * w)
    for a in range(kh):
        for b in range(kw):
            d = (a - p) * w + (b - p)  # source index - destination index
            dst = flat[:, a * kw + b]  # (C, m, H*W)
            dst[:, :, max(0, -d) : h * w - max(0, d)] = src[:, :, max(0, d) : h * w - max(0, -d)]
            if b < p:  # columns 0 .. p-b-1 read the previous row's end: padding
                cols[:, a * kw + b, :, :, : p - b] = 0
            elif b > p:  # the last b-p columns read the next row's start
                cols[:, a * kw + b, :, :, w - (b - p) :] = 0


def _fill_windows(
    cols: np.ndarray, xblk: np.ndarray, kh: int, kw: int, ho: int, wo: int, s: int, p: int
) -> None:
    """Any stride: each offset's window of valid positions, copied from its strided source."""
    h, w = xblk.shape[2], xblk.shape[3]
    for a in range(kh):
        i0, i1, r0 = _window(h, ho, a, s, p)
        for b in range(kw):
            j0, j1, c0 = _window(w, wo, b, s, p)
            if i1 > i0 and j1 > j0:
                src = xblk[
                    :, :, r0 : r0 + s * (i1 - i0 - 1) + 1 : s, c0 : c0 + s * (j1 - j0 - 1) + 1 : s
                ]
                cols[:, a * kw + b, :, i0:i1, j0:j1] = src


@register("numpy", "correlate")
def correlate(
    xt: np.ndarray, w2: np.ndarray, kh: int, kw: int, ho: int, wo: int, s: int, p: int, nb: int
) -> np.ndarray:
    """``w2 (O, C*kh*kw) @ cols`` of ``xt`` (C, N, H, W) in blocks of ``nb`` images ->
    (O, N, Ho, Wo), each block's product written in place."""
    n, o = xt.shape[1], w2.shape[0]
    y = np.empty((o, n, ho, wo), dtype=np.result_type(xt, w2))

    def block(n0: int) -> None:  # blocks write disjoint slices of y: safe in parallel threads
        n1 = min(n, n0 + nb)
        cols = fill_cols(xt[:, n0:n1], kh, kw, ho, wo, s, p)  # (C*kh*kw, m*Ho*Wo)
        out = y.reshape(o, n * ho * wo)[:, n0 * ho * wo : n1 * ho * wo]  # a strided view of y
        np.matmul(w2, cols, out=out)

    map_blocks(block, range(0, n, nb), xt)
    return y


@register("numpy", "weight_grad")
def weight_grad(
    xt: np.ndarray, dyt: np.ndarray, kh: int, kw: int, s: int, p: int, nb: int
) -> np.ndarray:
    """``sum over blocks of (cols @ dy^T)^T`` -> (O, C*kh*kw), partial sums added in block
    order (the same result for every thread count)."""
    n = xt.shape[1]
    o, _, ho, wo = dyt.shape

    def block(n0: int) -> np.ndarray:
        n1 = min(n, n0 + nb)
        cols = fill_cols(xt[:, n0:n1], kh, kw, ho, wo, s, p)  # (C*kh*kw, m*Ho*Wo)
        dy2 = dyt[:, n0:n1].reshape(o, (n1 - n0) * ho * wo)  # (O, m*Ho*Wo)
        return np.matmul(cols, dy2.T)  # (C*kh*kw, O)

    parts = map_blocks(block, range(0, n, nb), xt)
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return np.ascontiguousarray(total.T)  # (O, C*kh*kw)
