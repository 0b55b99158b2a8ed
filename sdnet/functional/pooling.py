"""Pooling and channel padding (the pieces of the option-A shortcut and the head).

* global average pool: (N, C, H, W) -> (N, C),  dx = dy / (H W) broadcast over H, W
* average pool, kernel k = stride k, no padding:
  y[n, c, i, j] = mean_{a, b < k} x[n, c, k i + a, k j + b]; dx spreads dy / k^2 back.
  Trailing rows/columns that do not fill a window are dropped (PyTorch's default) or, with
  ``ceil_mode``, pooled over the values present (the option-A shortcut uses this so that its
  output matches the stride-2 branch on odd sizes: ceil(H/2))
* channel zero-padding: (N, C, H, W) -> (N, C + extra, H, W), the new channels appended after
  the old ones (as the paper's reference code); dx is the first C channels of dy
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sdnet._array_api import device, namespace, on_input_device, strided, zeros_channel_major

__all__ = [
    "global_avg_pool",
    "global_avg_pool_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "pad_channels",
    "pad_channels_backward",
]

Array = Any


@on_input_device
def global_avg_pool(x: Array) -> tuple[Array, tuple[int, ...]]:
    """Mean over H and W. Returns ``(y (N, C), saved=x.shape)``."""
    xp = namespace(x)
    return xp.mean(x, axis=(2, 3)), tuple(x.shape)


@on_input_device
def global_avg_pool_backward(dy: Array, x_shape: tuple[int, ...]) -> Array:
    xp = namespace(dy)
    n, c, h, w = x_shape
    dx = zeros_channel_major(x_shape, dy)  # (N, C, H, W)
    dx += xp.reshape(dy / (h * w), (n, c, 1, 1))
    return dx


class PoolSaved(NamedTuple):
    x_shape: tuple[int, ...]
    kernel: int
    divisor: Any  # float k*k, or a (Ho, Wo) array of window sizes (ceil mode)


def _reach(size: int, kernel: int, out: int) -> list[int]:
    """Per kernel offset a, how many of the ``out`` windows hold a row at offset a."""
    return [max(0, min(out, -(-(size - a) // kernel))) for a in range(kernel)]


@on_input_device
def avg_pool2d(x: Array, kernel: int, *, ceil_mode: bool = False) -> tuple[Array, PoolSaved]:
    """Average pooling with window = stride = ``kernel``, no padding.

    With ``ceil_mode`` a partial window at the bottom/right edge is kept and averaged over the
    values it holds (PyTorch's ``ceil_mode=True``): the output is ceil(H/k) x ceil(W/k), the size
    a stride-k convolution with "same" padding gives.
    """
    xp = namespace(x)
    h, w = x.shape[2], x.shape[3]
    ho = -(-h // kernel) if ceil_mode else h // kernel
    wo = -(-w // kernel) if ceil_mode else w // kernel
    if ho == 0 or wo == 0:
        raise ValueError(f"avg_pool2d: input {h}x{w} is smaller than the window {kernel}")
    if kernel == 1:
        return x, PoolSaved(tuple(x.shape), 1, 1.0)
    rows, cols = _reach(h, kernel, ho), _reach(w, kernel, wo)
    y = zeros_channel_major((x.shape[0], x.shape[1], ho, wo), x)
    for a in range(kernel):
        for b in range(kernel):
            r, c = rows[a], cols[b]
            if r and c:  # x[n, c, k i + a, k j + b] for the windows that reach offset (a, b)
                y[:, :, :r, :c] += x[:, :, strided(a, r, kernel), strided(b, c, kernel)]
    if ceil_mode and (h % kernel or w % kernel):
        rc = [min(kernel, h - kernel * i) for i in range(ho)]
        cc = [min(kernel, w - kernel * j) for j in range(wo)]
        grid = [[float(r * c) for c in cc] for r in rc]  # (Ho, Wo) window sizes
        divisor = xp.asarray(grid, dtype=x.dtype, device=device(x))
    else:
        divisor = float(kernel * kernel)
    return y / divisor, PoolSaved(tuple(x.shape), kernel, divisor)


@on_input_device
def avg_pool2d_backward(dy: Array, saved: PoolSaved) -> Array:
    """Each input value receives dy / (its window's size); values in no window get 0."""
    x_shape, kernel, divisor = saved
    if kernel == 1:
        return dy
    h, w = x_shape[2], x_shape[3]
    ho, wo = dy.shape[2], dy.shape[3]
    rows, cols = _reach(h, kernel, ho), _reach(w, kernel, wo)
    dx = zeros_channel_major(x_shape, dy)  # (N, C, H, W)
    share = dy / divisor  # (N, C, Ho, Wo)
    for a in range(kernel):
        for b in range(kernel):
            r, c = rows[a], cols[b]
            if r and c:
                dx[:, :, strided(a, r, kernel), strided(b, c, kernel)] = share[:, :, :r, :c]
    return dx


@on_input_device
def pad_channels(x: Array, channels: int) -> tuple[Array, int]:
    """Append zero channels up to ``channels``. Returns ``(y, saved=C_in)``."""
    c = x.shape[1]
    if channels < c:
        raise ValueError(f"pad_channels: cannot pad {c} channels down to {channels}")
    if channels == c:
        return x, c
    if x.ndim != 4:
        raise ValueError(f"pad_channels expects (N, C, H, W) input, got shape {tuple(x.shape)}")
    y = zeros_channel_major((x.shape[0], channels) + tuple(x.shape[2:]), x)
    y[:, :c, :, :] = x
    return y, c


@on_input_device
def pad_channels_backward(dy: Array, c_in: int) -> Array:
    return dy[:, :c_in, ...]
