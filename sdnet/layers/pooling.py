"""Pooling layers and the option-A shortcut."""

from __future__ import annotations

from typing import Any

import sdnet.functional as F
from sdnet.layers.base import Backprop, Layer

__all__ = ["GlobalAvgPool", "ShortcutA"]


class GlobalAvgPool(Layer):
    """(N, C, H, W) -> (N, C), the mean over H and W."""

    def forward(self, x: Any, *, train: bool, need_dx: bool = True) -> tuple[Any, Backprop]:
        y, shape = F.global_avg_pool(x)
        if not need_dx:
            return y, lambda dy: None
        return y, lambda dy: F.global_avg_pool_backward(dy, shape)


class ShortcutA(Layer):
    """Parameter-free downsampling shortcut ("option A" of He et al., as the paper's code):
    average pooling with window = stride, then zero channels appended up to ``out_channels``.

    Pooling keeps a partial edge window (ceil mode), so on odd sizes the shortcut is
    ceil(H/s) x ceil(W/s), like the stride-s branch it is added to (the reference code assumes
    even sizes, which 28x28 and 32x32 inputs give)."""

    def __init__(self, stride: int, out_channels: int) -> None:
        super().__init__()
        self.stride, self.out_channels = stride, out_channels

    def forward(self, x: Any, *, train: bool, need_dx: bool = True) -> tuple[Any, Backprop]:
        # (N, C, ceil(H/s), ceil(W/s)), then (N, C_out, ceil(H/s), ceil(W/s))
        pooled, pool_saved = F.avg_pool2d(x, self.stride, ceil_mode=True)
        y, c_in = F.pad_channels(pooled, self.out_channels)

        def backprop(dy: Any) -> Any:
            if not need_dx:
                return None
            return F.avg_pool2d_backward(F.pad_channels_backward(dy, c_in), pool_saved)

        return y, backprop
