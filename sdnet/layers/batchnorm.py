"""Batch normalisation layer with PyTorch's running-statistics convention.

Training normalises with the biased batch variance and updates
``running = (1 - momentum) * running + momentum * batch`` with the *unbiased* variance;
evaluation uses the running statistics. ``num_batches_tracked`` is kept for PyTorch
state-dict compatibility, as a host-side counter.

Inside a model's training pass the running statistics of every batch-norm layer are updated
together, once the pass is done (:class:`RunningStats`): about fifteen kernel launches per pass
instead of six per layer, with the same arithmetic for each value. A layer used on its own
updates its statistics at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import sdnet.functional as F
from sdnet._array_api import device, namespace
from sdnet.layers.base import Backprop, Layer

__all__ = ["BatchNorm", "RunningStats", "deferred_running_stats"]

# (layer, batch mean (C,), biased batch variance (C,), values per channel) of a pass
Pending = list[tuple["BatchNorm", Any, Any, int]]
_PENDING: ContextVar[Pending | None] = ContextVar("sdnet_batch_norm_pending", default=None)


@contextmanager
def deferred_running_stats() -> Iterator[Pending]:
    """Collect, instead of applying, the running-statistics updates of the batch-norm layers
    run inside (apply them with :meth:`RunningStats.apply`)."""
    pending: Pending = []
    token = _PENDING.set(pending)
    try:
        yield pending
    finally:
        _PENDING.reset(token)


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
        self.num_batches_tracked = self.counter("num_batches_tracked")

    def forward(self, x: Any, *, train: bool, need_dx: bool = True) -> tuple[Any, Backprop]:
        g, b = self.weight.value, self.bias.value
        if train:
            y, saved = F.batch_norm_train(x, g, b, eps=self.eps)
            m = x.shape[0] * (x.shape[2] * x.shape[3] if x.ndim == 4 else 1)
            pending = _PENDING.get()
            if pending is None:
                self.update_running(saved.mean, saved.var, m)
            else:
                pending.append((self, saved.mean, saved.var, m))
            self.num_batches_tracked.value += 1
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

    def variance_factor(self, m: int) -> float:
        """momentum * m / (m - 1): the batch variance's weight, with Bessel's correction."""
        return self.momentum * m / max(m - 1, 1)

    def update_running(self, mean: Any, var: Any, m: int) -> None:
        """running = (1 - momentum) * running + momentum * (mean, unbiased var), in place."""
        rm, rv = self.running_mean.value, self.running_var.value
        rm *= 1.0 - self.momentum
        rm += mean * self.momentum
        rv *= 1.0 - self.momentum
        rv += var * self.variance_factor(m)


class RunningStats:
    """The running statistics of a model's batch-norm layers packed into two flat arrays (each
    layer's ``running_mean`` and ``running_var`` a view of its part), so that one training
    pass's updates are applied together, with the arithmetic of
    :meth:`BatchNorm.update_running` for every value.

    A value replaced since (a state dict loaded, the model moved) is noticed by an identity
    check on the host, and the arrays are packed again.
    """

    def __init__(self, layers: list[BatchNorm]) -> None:
        self.layers = layers
        self._pack()

    def _pack(self) -> None:
        like = self.layers[0].running_mean.value
        xp = namespace(like)
        self.means = xp.concat([bn.running_mean.value for bn in self.layers])  # (T,)
        self.variances = xp.concat([bn.running_var.value for bn in self.layers])  # (T,)
        self.sizes = [bn.running_mean.value.shape[0] for bn in self.layers]
        o = 0
        for bn, c in zip(self.layers, self.sizes, strict=True):
            bn.running_mean.value = self.means[o : o + c]
            bn.running_var.value = self.variances[o : o + c]
            o += c
        self.views = [(bn.running_mean.value, bn.running_var.value) for bn in self.layers]
        per_channel = [(bn.momentum, c) for bn, c in zip(self.layers, self.sizes, strict=True)]
        self.keep = self._array([1.0 - mo for mo, c in per_channel for _ in range(c)])  # (T,)
        self.weight = self._array([mo for mo, c in per_channel for _ in range(c)])  # (T,)
        self._parts: dict[Any, Any] = {}

    def _packed(self) -> bool:
        return all(
            bn.running_mean.value is m and bn.running_var.value is v
            for bn, (m, v) in zip(self.layers, self.views, strict=True)
        )

    def apply(self, pending: Pending) -> None:
        """Apply the updates collected in one pass; layers that did not run keep their values
        (a dropped block's batch norm is not updated)."""
        if not pending:
            return
        if not self._packed():
            self._pack()
        xp = namespace(self.means)
        ran = {id(bn): (mean, var, m) for bn, mean, var, m in pending}
        means, variances, factors, mask = [], [], [], []
        for bn, c in zip(self.layers, self.sizes, strict=True):
            mean, var, m = ran.get(id(bn), (None, None, 0))
            zeros = self._part(("zeros", c), [0.0] * c)
            means.append(zeros if mean is None else mean)
            variances.append(zeros if var is None else var)
            factors.append(self._part((id(bn), m), [bn.variance_factor(m)] * c))
            mask.append(mean is not None)
        ran_mask = self._expand(mask)  # (T,) bool
        new_means = self.means * self.keep + xp.concat(means) * self.weight
        new_vars = self.variances * self.keep + xp.concat(variances) * xp.concat(factors)
        self.means[...] = xp.where(ran_mask, new_means, self.means)
        self.variances[...] = xp.where(ran_mask, new_vars, self.variances)

    def _expand(self, ran: list[bool]) -> Any:
        """Which channels belong to a layer that ran: one host-to-device copy."""
        values = [r for r, c in zip(ran, self.sizes, strict=True) for _ in range(c)]
        xp, like = namespace(self.means), self.means
        return xp.asarray(values, dtype=xp.bool, device=device(like))

    def _part(self, key: Any, values: list[float]) -> Any:
        """A small constant array beside the statistics, made once."""
        if key not in self._parts:
            self._parts[key] = self._array(values)
        return self._parts[key]

    def _array(self, values: list[float]) -> Any:
        like = self.layers[0].running_mean.value
        xp = namespace(like)
        return xp.asarray(values, dtype=like.dtype, device=device(like))
