"""Fully connected layer, PyTorch layout: ``weight`` (out, in), optional ``bias`` (out,)."""

from __future__ import annotations

from typing import Any

import sdnet.functional as F
from sdnet._array_api import namespace
from sdnet.layers.base import Backprop, Layer
from sdnet.random import kaiming_normal, uniform_fan_in

__all__ = ["Linear"]


class Linear(Layer):
    """``y = x @ weight^T + bias``; weights U(-1/sqrt(in), 1/sqrt(in)) unless ``init`` says
    ``"kaiming"`` (N(0, 2/in)). Inputs with more than 2 axes are flattened to (N, -1)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        backend: Any,
        dtype: str = "float32",
        rng: Any,
        init: str = "uniform",
    ) -> None:
        super().__init__()
        shape = (out_features, in_features)
        if init == "uniform":
            w = uniform_fan_in(rng, shape, in_features)
        elif init == "kaiming":
            w = kaiming_normal(rng, shape, in_features)
        else:
            raise ValueError(f"unknown init {init!r}: use 'uniform' or 'kaiming'")
        self.weight = self.param("weight", backend.asarray(w, dtype))
        self.bias = None
        if bias:
            self.bias = self.param(
                "bias", backend.asarray(uniform_fan_in(rng, (out_features,), in_features), dtype)
            )

    def forward(self, x: Any, *, train: bool, need_dx: bool = True) -> tuple[Any, Backprop]:
        shape = tuple(x.shape)
        if x.ndim != 2:
            x = namespace(x).reshape(x, (shape[0], -1))  # (N, C*H*W)
        y, saved = F.linear(x, self.weight.value, None if self.bias is None else self.bias.value)

        def backprop(dy: Any) -> Any:
            dx, dw, db = F.linear_backward(dy, saved, need_dx=need_dx)
            self.weight.accumulate(dw)
            if self.bias is not None:
                self.bias.accumulate(db)
            if dx is None or len(shape) == 2:
                return dx
            return namespace(dx).reshape(dx, shape)

        return y, backprop
