"""2-D convolution (cross-correlation, NCHW, no bias) by shifted views and matrix products.

Forward (stride s, zero padding p, kernel kh x kw)::

    y[n, o, i, j] = sum_{c, a, b} w[o, c, a, b] * xpad[n, c, s*i + a, s*j + b]

It gathers the kh*kw shifted, strided views of the padded input into ``cols`` (im2col) and
does one matmul. Backward::

    dw[o, c, a, b] = sum_{n, i, j} dy[n, o, i, j] * xpad[n, c, s*i + a, s*j + b]   (= dy @ cols^T)
    dxpad[n, c, s*i + a, s*j + b] += sum_o w[o, c, a, b] * dy[n, o, i, j]

The input gradient is accumulated one kernel offset at a time into strided views of a padded
buffer (a correlation with the flipped kernel), so d(cols), which is kh*kw times the input, is
never materialised.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sdnet._array_api import device, namespace, strided, zeros_like_padded

__all__ = ["conv2d", "conv2d_backward", "conv_output_size"]

Array = Any


class ConvSaved(NamedTuple):
    cols: Array  # (N, kh*kw*C, Ho*Wo) im2col of the padded input
    w: Array  # (O, C, kh, kw)
    x_shape: tuple[int, int, int, int]
    stride: int
    padding: int


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def _pad(x: Array, p: int) -> Array:
    if p == 0:
        return x
    h, w = x.shape[2], x.shape[3]
    out = zeros_like_padded(x, p)  # (N, C, H+2p, W+2p)
    out[:, :, p : p + h, p : p + w] = x
    return out


def conv2d(x: Array, w: Array, *, stride: int = 1, padding: int = 0) -> tuple[Array, ConvSaved]:
    """Convolve ``x`` (N, C, H, W) with ``w`` (O, C, kh, kw).

    Returns
    -------
    y : array, shape (N, O, Ho, Wo)
    saved : what :func:`conv2d_backward` needs.
    """
    xp = namespace(x, w)
    n, c, h, wd = x.shape
    o, c_w, kh, kw = w.shape
    if c != c_w:
        raise ValueError(f"conv2d: input has {c} channels but the weight expects {c_w}")
    ho = conv_output_size(h, kh, stride, padding)
    wo = conv_output_size(wd, kw, stride, padding)
    if ho <= 0 or wo <= 0:
        raise ValueError(f"conv2d: input {h}x{wd} too small for kernel {kh}x{kw}, pad {padding}")
    xpad = _pad(x, padding)  # (N, C, H+2p, W+2p)
    views = [
        xpad[:, :, strided(a, ho, stride), strided(b, wo, stride)]
        for a in range(kh)
        for b in range(kw)
    ]  # kh*kw arrays of shape (N, C, Ho, Wo)
    cols = xp.reshape(xp.concat(views, axis=1), (n, kh * kw * c, ho * wo))  # (N, kh*kw*C, P)
    # weight rows ordered like cols: (O, kh, kw, C) -> (O, kh*kw*C)
    w2 = xp.reshape(xp.permute_dims(w, (0, 2, 3, 1)), (o, kh * kw * c))
    y = xp.reshape(xp.matmul(w2, cols), (n, o, ho, wo))  # (N, O, Ho, Wo)
    return y, ConvSaved(cols, w, (n, c, h, wd), stride, padding)


def conv2d_backward(
    dy: Array, saved: ConvSaved, *, need_dx: bool = True
) -> tuple[Array | None, Array]:
    """Gradients of :func:`conv2d`.

    Parameters
    ----------
    dy : array, shape (N, O, Ho, Wo)
    saved : ConvSaved
    need_dx : bool
        Skip the input gradient (e.g. for the first layer, whose input is data).

    Returns
    -------
    dx : array (N, C, H, W) or None
    dw : array (O, C, kh, kw)
    """
    xp = namespace(dy)
    cols, w, (n, c, h, wd), s, p = saved
    o, _, kh, kw = w.shape
    ho, wo = dy.shape[2], dy.shape[3]
    dy3 = xp.reshape(dy, (n, o, ho * wo))  # (N, O, P)
    dw2 = xp.sum(xp.matmul(dy3, xp.matrix_transpose(cols)), axis=0)  # (O, kh*kw*C)
    dw = xp.permute_dims(xp.reshape(dw2, (o, kh, kw, c)), (0, 3, 1, 2))  # (O, C, kh, kw)
    if not need_dx:
        return None, dw
    dxpad = xp.zeros((n, c, h + 2 * p, wd + 2 * p), dtype=dy.dtype, device=device(dy))
    for a in range(kh):
        for b in range(kw):
            wt = xp.matrix_transpose(w[:, :, a, b])  # (C, O)
            contrib = xp.reshape(xp.matmul(wt, dy3), (n, c, ho, wo))  # (N, C, Ho, Wo)
            dxpad[:, :, strided(a, ho, s), strided(b, wo, s)] += contrib
    dx = dxpad[:, :, p : p + h, p : p + wd] if p else dxpad
    return dx, dw
