"""Batch normalisation layer with PyTorch's running-statistics convention.

Training normalises with the biased batch variance and updates
``running = (1 - momentum) * running + momentum * batch`` with the *unbiased* variance;
evaluation uses the running statistics. ``num_batches_tracked`` is kept for PyTorch
state-dict compatibility, as a host-side counter.

The running mean and variance are the two rows of one (2, C) array (``running_mean`` and
``running_var`` are views of it), so that both are updated together: four kernel launches per
training pass instead of seven.
"""

from __future__ import annotations

from typing import Any

import sdnet.functional as F
from sdnet._array_api import device, namespace
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
        running = backend.asarray([[0.0] * channels, [1.0] * channels], dtype)  # (2, C)
        self.running_mean = self.buffer("running_mean", running[0, :])
        self.running_var = self.buffer("running_var", running[1, :])
        self.num_batches_tracked = self.counter("num_batches_tracked")
        self._running, self._views = running, (self.running_mean.value, self.running_var.value)
        self._factors: dict[tuple[int, Any], Any] = {}  # (m, dtype) -> (2, 1) update factors

    def forward(self, x: Any, *, train: bool, need_dx: bool = True) -> tuple[Any, Backprop]:
        g, b = self.weight.value, self.bias.value
        if train:
            y, saved = F.batch_norm_train(x, g, b, eps=self.eps)
            self._update_running(saved.mean, saved.var, x.shape[0] * _spatial(x))
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

    def _update_running(self, mean: Any, var: Any, m: int) -> None:
        """running = (1 - momentum) * running + momentum * (mean, unbiased var), in place."""
        running = self._stacked()
        xp = namespace(running)
        running *= 1.0 - self.momentum
        running += xp.stack([mean, var]) * self._factor(m, running)
        self.num_batches_tracked.value += 1

    def _stacked(self) -> Any:
        """The (2, C) running statistics; stacked again if a row was replaced (state loaded,
        model moved to another device)."""
        rm, rv = self.running_mean, self.running_var
        if rm.value is not self._views[0] or rv.value is not self._views[1]:
            xp = namespace(rm.value, rv.value)
            self._running = xp.stack([rm.value, rv.value])  # (2, C)
            rm.value, rv.value = self._running[0, :], self._running[1, :]
            self._views = (rm.value, rv.value)
            self._factors.clear()
        return self._running

    def _factor(self, m: int, like: Any) -> Any:
        """(2, 1) factors on ``like``'s device: momentum for the mean, momentum * m / (m - 1)
        for the variance (Bessel's correction), made once per batch size."""
        key = (m, like.dtype)
        if key not in self._factors:
            xp = namespace(like)
            values = [[self.momentum], [self.momentum * m / max(m - 1, 1)]]
            self._factors[key] = xp.asarray(values, dtype=like.dtype, device=device(like))
        return self._factors[key]


def _spatial(x: Any) -> int:
    return x.shape[2] * x.shape[3] if x.ndim == 4 else 1
