"""Pooling and channel padding (the pieces of the option-A shortcut and the head).

* global average pool: (N, C, H, W) -> (N, C),  dx = dy / (H W) broadcast over H, W
* average pool, kernel k = stride k (no padding, H and W divisible by k is not required;
  the trailing rows/columns that do not fill a window are dropped, as in PyTorch):
  y[n, c, i, j] = mean_{a, b < k} x[n, c, k i + a, k j + b]; dx spreads dy / k^2 back
* channel zero-padding: (N, C, H, W) -> (N, C + extra, H, W), the new channels appended after
  the old ones (as the paper's reference code); dx is the first C channels of dy
"""

from __future__ import annotations

from typing import Any

from sdnet._array_api import device, namespace

__all__ = [
    "global_avg_pool",
    "global_avg_pool_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "pad_channels",
    "pad_channels_backward",
]

Array = Any


def global_avg_pool(x: Array) -> tuple[Array, tuple[int, ...]]:
    """Mean over H and W. Returns ``(y (N, C), saved=x.shape)``."""
    xp = namespace(x)
    return xp.mean(x, axis=(2, 3)), tuple(x.shape)


def global_avg_pool_backward(dy: Array, x_shape: tuple[int, ...]) -> Array:
    xp = namespace(dy)
    n, c, h, w = x_shape
    dx = xp.zeros(x_shape, dtype=dy.dtype, device=device(dy))  # (N, C, H, W)
    return dx + xp.reshape(dy / (h * w), (n, c, 1, 1))


def avg_pool2d(x: Array, kernel: int) -> tuple[Array, tuple[int, ...]]:
    """Average pooling with window = stride = ``kernel``. Returns ``(y, saved=x.shape)``."""
    if kernel == 1:
        return x, tuple(x.shape)
    h, w = x.shape[2], x.shape[3]
    ho, wo = h // kernel, w // kernel
    if ho == 0 or wo == 0:
        raise ValueError(f"avg_pool2d: input {h}x{w} is smaller than the window {kernel}")
    y = None
    for a in range(kernel):
        for b in range(kernel):
            v = x[
                :, :, a : a + kernel * (ho - 1) + 1 : kernel, b : b + kernel * (wo - 1) + 1 : kernel
            ]  # (N,C,Ho,Wo)
            y = v if y is None else y + v
    return y / (kernel * kernel), tuple(x.shape)


def avg_pool2d_backward(dy: Array, x_shape: tuple[int, ...], kernel: int) -> Array:
    if kernel == 1:
        return dy
    xp = namespace(dy)
    ho, wo = dy.shape[2], dy.shape[3]
    dx = xp.zeros(x_shape, dtype=dy.dtype, device=device(dy))  # (N, C, H, W)
    share = dy / (kernel * kernel)
    for a in range(kernel):
        for b in range(kernel):
            dx[
                :, :, a : a + kernel * (ho - 1) + 1 : kernel, b : b + kernel * (wo - 1) + 1 : kernel
            ] = share
    return dx


def pad_channels(x: Array, channels: int) -> tuple[Array, int]:
    """Append zero channels up to ``channels``. Returns ``(y, saved=C_in)``."""
    c = x.shape[1]
    if channels < c:
        raise ValueError(f"pad_channels: cannot pad {c} channels down to {channels}")
    if channels == c:
        return x, c
    xp = namespace(x)
    shape = (x.shape[0], channels - c) + tuple(x.shape[2:])
    zeros = xp.zeros(shape, dtype=x.dtype, device=device(x))
    return xp.concat([x, zeros], axis=1), c


def pad_channels_backward(dy: Array, c_in: int) -> Array:
    return dy[:, :c_in, ...]
