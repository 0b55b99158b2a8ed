"""Convolution layer (no bias by default, as the paper's ResNets with batch norm)."""

from __future__ import annotations

from typing import Any

import sdnet.functional as F
from sdnet._array_api import namespace
from sdnet.layers.base import Backprop, Layer
from sdnet.random import kaiming_normal

__all__ = ["Conv2d"]


class Conv2d(Layer):
    """``weight`` (out, in, k, k), Kaiming-normal initialised on the host (fan-in, ReLU gain).

    Parameters
    ----------
    in_channels, out_channels, kernel_size : int
    stride, padding : int
    bias : bool
    backend : Backend
        Where the parameters live.
    dtype : str
    rng : numpy.random.Generator
        The host init stream.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        padding: int = 0,
        bias: bool = False,
        backend: Any,
        dtype: str = "float32",
        rng: Any,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"Conv2d supports stride 1 or 2, got {stride}")
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        fan_in = in_channels * kernel_size * kernel_size
        self.weight = self.param(
            "weight", backend.asarray(kaiming_normal(rng, shape, fan_in), dtype)
        )
        self.bias = (
            self.param("bias", backend.asarray([0.0] * out_channels, dtype)) if bias else None
        )
        self.stride, self.padding = stride, padding

    def forward(self, x: Any, *, train: bool, need_dx: bool = True) -> tuple[Any, Backprop]:
        y, saved = F.conv2d(x, self.weight.value, stride=self.stride, padding=self.padding)
        if self.bias is not None:
            y = y + self.bias.value[:, None, None]

        def backprop(dy: Any) -> Any:
            dx, dw = F.conv2d_backward(dy, saved, need_dx=need_dx)
            self.weight.accumulate(dw)
            if self.bias is not None:
                self.bias.accumulate(namespace(dy).sum(dy, axis=(0, 2, 3)))
            return dx

        return y, backprop
