"""Batch normalisation layer with PyTorch's running-statistics convention.

Training normalises with the biased batch variance and updates
``running = (1 - momentum) * running + momentum * batch`` with the *unbiased* variance;
evaluation uses the running statistics. ``num_batches_tracked`` is kept for PyTorch
state-dict compatibility.
"""

from __future__ import annotations

from typing import Any

import sdnet.functional as F
from sdnet.layers.base import Backprop, Layer

__all__ = ["BatchNorm"]


class BatchNorm(Layer):
    """Per-channel batch norm for (N, C) or (N, C, H, W) inputs; ``weight`` = 1, ``bias`` = 0."""

    def __init__(
        self,
        channels: int,
        *,
        eps: float = 1e-5,
        momentum: float = 0.1,
        backend: Any,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = self.param("weight", backend.asarray([1.0] * channels, dtype))
        self.bias = self.param("bias", backend.asarray([0.0] * channels, dtype))
        self.running_mean = self.buffer("running_mean", backend.asarray([0.0] * channels, dtype))
        self.running_var = self.buffer("running_var", backend.asarray([1.0] * channels, dtype))
        self.num_batches_tracked = self.buffer(
            "num_batches_tracked", backend.asarray(0, backend.xp.int64)
        )

    def forward(self, x: Any, *, train: bool, need_dx: bool = True) -> tuple[Any, Backprop]:
        g, b = self.weight.value, self.bias.value
        if train:
            y, saved = F.batch_norm_train(x, g, b, eps=self.eps)
            m = x.shape[0] * (x.shape[2] * x.shape[3] if x.ndim == 4 else 1)
            unbiased = saved.var * (m / max(m - 1, 1))
            mo = self.momentum
            self.running_mean.value = (1 - mo) * self.running_mean.value + mo * saved.mean
            self.running_var.value = (1 - mo) * self.running_var.value + mo * unbiased
            self.num_batches_tracked.value = self.num_batches_tracked.value + 1
        else:
            y, saved = F.batch_norm_eval(
                x, g, b, self.running_mean.value, self.running_var.value, eps=self.eps
            )

        def backprop(dy: Any) -> Any:
            dx, dgamma, dbeta = F.batch_norm_backward(dy, saved, need_dx=need_dx)
            self.weight.accumulate(dgamma)
            self.bias.accumulate(dbeta)
            return dx

        return y, backprop
