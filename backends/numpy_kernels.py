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

import functools
import threading
from typing import Any

import numpy as np

from sdnet._threads import get_num_threads, map_blocks

from .kernels import register

__all__ = [
    "correlate",
    "weight_grad",
    "fill_cols",
    "backward_same",
    "batch_norm_train",
    "batch_norm_backward",
    "relu",
    "relu_backward",
    "batch_norm_eval",
    "add_relu",
]

_local = threading.local()
_MAX_WORKSPACES = 16  # per thread: a network has a handful of shapes


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b`` (into ``out``): a named function, so that a profile shows the BLAS time."""
    return np.matmul(a, b, out=out)


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
    for k, dst, source, wrapped in _shifts(h, w, kh, kw, p):
        flat[:, k, :, dst] = src[:, :, source]
        if wrapped is not None:
            cols[:, k, :, :, wrapped] = 0


@functools.lru_cache(maxsize=64)
def _shifts(h: int, w: int, kh: int, kw: int, p: int) -> list[tuple[int, slice, slice, Any]]:
    """For each offset (a, b): its row k of ``cols``, where its shifted copy goes in a
    flattened plane and where it comes from, and the columns that wrapped around a row."""
    out = []
    for a in range(kh):
        for b in range(kw):
            d = (a - p) * w + (b - p)  # source index - destination index
            dst, source = slice(max(0, -d), h * w - max(0, d)), slice(max(0, d), h * w - max(0, -d))
            # columns 0 .. p-b-1 read the previous row's end, the last b-p the next row's start
            wrapped = slice(0, p - b) if b < p else slice(w - (b - p), w) if b > p else None
            out.append((a * kw + b, dst, source, wrapped))
    return out


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
        matmul(w2, cols, out=out)

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
        return matmul(cols, dy2.T)  # (C*kh*kw, O)

    parts = map_blocks(block, range(0, n, nb), xt)
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return np.ascontiguousarray(total.T)  # (O, C*kh*kw)


@register("numpy", "backward_same")
def backward_same(
    xt: np.ndarray, dyt: np.ndarray, wf2: np.ndarray, k: int, p: int, q: int, nb: int
) -> tuple[np.ndarray, np.ndarray]:
    """Both gradients of a stride-1 convolution whose output has its input's size, in one
    pass over the blocks (each block's ``x`` and ``dy`` are used while they are in cache):
    ``(dx (C, N, H, W), dw2 (O, C*k*k))``, each computed as :func:`weight_grad` and
    :func:`correlate` compute them."""
    c, n, h, w = xt.shape
    o = dyt.shape[0]
    dx = np.empty((c, n, h, w), dtype=np.result_type(dyt, wf2))

    def block(n0: int) -> np.ndarray:
        n1 = min(n, n0 + nb)
        cols = fill_cols(xt[:, n0:n1], k, k, h, w, 1, p)  # (C*k*k, m*H*W)
        part = matmul(cols, dyt[:, n0:n1].reshape(o, (n1 - n0) * h * w).T)  # (C*k*k, O)
        dcols = fill_cols(dyt[:, n0:n1], k, k, h, w, 1, q)  # (O*k*k, m*H*W)
        matmul(wf2, dcols, out=dx.reshape(c, n * h * w)[:, n0 * h * w : n1 * h * w])
        return part

    parts = map_blocks(block, range(0, n, nb), xt)
    total = parts[0]
    for part in parts[1:]:  # in block order: the same sum whatever the thread count
        total = total + part
    return dx, np.ascontiguousarray(total.T)


# -- batch norm and ReLU: by channel, in parallel host threads ---------------------------------
def _planes(x: np.ndarray) -> np.ndarray | None:
    """``x`` (N, C, H, W) stored channel-major as its (C, N*H*W) matrix (a view), or ``None``
    when it is stored otherwise (the caller then takes the reference)."""
    if x.ndim != 4:
        return None
    xt = x.transpose(1, 0, 2, 3)  # (C, N, H, W)
    if not xt.flags.c_contiguous:
        return None
    return xt.reshape(xt.shape[0], -1)


def _like(planes: np.ndarray, x: np.ndarray, dtype: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """A new (C, M) matrix and its (N, C, H, W) channel-major view, shaped like ``x``."""
    n, c, h, w = x.shape
    out = np.empty(planes.shape, dtype=dtype or planes.dtype)
    return out, out.reshape(c, n, h, w).transpose(1, 0, 2, 3)


def _by_channel(fn: Any, channels: int, like: np.ndarray) -> None:
    """``fn(c0, c1)`` over channel ranges, one per host thread (channels are independent, so
    the result does not depend on the thread count)."""
    k = max(1, min(get_num_threads(), channels))
    bounds = [channels * i // k for i in range(k + 1)]
    map_blocks(lambda i: fn(bounds[i], bounds[i + 1]), range(k), like)


@register("numpy", "batch_norm_train")
def batch_norm_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> Any:
    """``(y, xhat, scale, mean, var)`` with the reference's formulas, channel by channel:
    ``xhat = (x - mean) / sqrt(var + eps)``, ``y = gamma * xhat + beta``."""
    x2 = _planes(x)
    if x2 is None:
        return NotImplemented
    m = x2.shape[1]
    xhat2, xhat = _like(x2, x)
    y2, y = _like(x2, x)
    mean, var = np.empty(x2.shape[0], x2.dtype), np.empty(x2.shape[0], x2.dtype)

    def chunk(c0: int, c1: int) -> None:
        xc, xh = x2[c0:c1], xhat2[c0:c1]  # (k, M)
        mean[c0:c1] = xc.mean(axis=1)
        np.subtract(xc, mean[c0:c1, None], out=xh)
        var[c0:c1] = np.einsum("ij,ij->i", xh, xh) / m
        xh *= ((var[c0:c1] + eps) ** -0.5)[:, None]
        np.multiply(xh, gamma[c0:c1, None], out=y2[c0:c1])
        y2[c0:c1] += beta[c0:c1, None]

    _by_channel(chunk, x2.shape[0], x2)
    scale = (gamma * (var + eps) ** -0.5).reshape(1, -1, 1, 1)
    return y, xhat, scale, mean, var


@register("numpy", "batch_norm_backward")
def batch_norm_backward(dy: np.ndarray, xhat: np.ndarray, scale: np.ndarray) -> Any:
    """``(dx, dgamma, dbeta)`` of a training batch norm, channel by channel:
    ``dx = scale * (dy - xhat * dgamma / m - dbeta / m)``."""
    dy2, xh2 = _planes(dy), _planes(xhat)
    if dy2 is None or xh2 is None:
        return NotImplemented
    m = dy2.shape[1]
    dx2, dx = _like(dy2, dy)
    dgamma, dbeta = np.empty(dy2.shape[0], dy2.dtype), np.empty(dy2.shape[0], dy2.dtype)
    s = scale.reshape(-1)

    def chunk(c0: int, c1: int) -> None:
        d, xh, out = dy2[c0:c1], xh2[c0:c1], dx2[c0:c1]  # (k, M)
        dbeta[c0:c1] = d.sum(axis=1)
        dgamma[c0:c1] = np.einsum("ij,ij->i", d, xh)
        np.multiply(xh, (dgamma[c0:c1] / m)[:, None], out=out)
        out += (dbeta[c0:c1] / m)[:, None]
        np.subtract(d, out, out=out)
        out *= s[c0:c1, None]

    _by_channel(chunk, dy2.shape[0], dy2)
    return dx, dgamma, dbeta


@register("numpy", "relu")
def relu(x: np.ndarray) -> Any:
    """``max(x, 0)``, channel by channel."""
    x2 = _planes(x)
    if x2 is None:
        return NotImplemented
    y2, y = _like(x2, x)
    _by_channel(lambda c0, c1: np.maximum(x2[c0:c1], 0, out=y2[c0:c1]), x2.shape[0], x2)
    return y


@register("numpy", "relu_backward")
def relu_backward(dy: np.ndarray, y: np.ndarray) -> Any:
    """``dy * [y > 0]`` (a multiply by the 0/1 mask, as the reference), channel by channel."""
    dy2, y2 = _planes(dy), _planes(y)
    if dy2 is None or y2 is None:
        return NotImplemented
    dx2, dx = _like(dy2, dy)

    def chunk(c0: int, c1: int) -> None:
        np.greater(y2[c0:c1], 0, out=dx2[c0:c1], casting="unsafe")  # the mask, as 0/1
        dx2[c0:c1] *= dy2[c0:c1]

    _by_channel(chunk, dy2.shape[0], dy2)
    return dx


@register("numpy", "batch_norm_eval")
def batch_norm_eval(x: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> Any:
    """``x * scale + shift`` with the per-channel (1, C, 1, 1) ``scale`` and ``shift``, channel
    by channel, into a new channel-major array."""
    x2 = _planes(x)
    if x2 is None:
        return NotImplemented
    y2, y = _like(x2, x)
    s, t = scale.reshape(-1, 1), shift.reshape(-1, 1)

    def chunk(c0: int, c1: int) -> None:
        np.multiply(x2[c0:c1], s[c0:c1], out=y2[c0:c1])
        y2[c0:c1] += t[c0:c1]

    _by_channel(chunk, x2.shape[0], x2)
    return y


@register("numpy", "add_relu")
def add_relu(a: np.ndarray, b: np.ndarray) -> Any:
    """``max(a + b, 0)`` (a residual sum through ReLU), channel by channel."""
    a2, b2 = _planes(a), _planes(b)
    if a2 is None or b2 is None:
        return NotImplemented
    y2, y = _like(a2, a, np.result_type(a2, b2))

    def chunk(c0: int, c1: int) -> None:
        np.add(a2[c0:c1], b2[c0:c1], out=y2[c0:c1])
        np.maximum(y2[c0:c1], 0, out=y2[c0:c1])

    _by_channel(chunk, a2.shape[0], a2)
    return y
