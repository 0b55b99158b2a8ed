"""Stochastic gradient descent on the device, PyTorch's update convention.

    g = grad + weight_decay * w                         (L2 weight decay, coupled)
    buf = momentum * buf + g                            (buf = g on the first step)
    w = w - lr * (g + momentum * buf if nesterov else buf)

A parameter whose ``grad`` is ``None`` (its block was dropped this step) is, by default,
updated with a zero gradient, so momentum and weight decay still act on it as in the paper's
code; ``skip_missing=True`` freezes it for that step instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

from array_api_compat import is_cupy_array

from sdnet._array_api import device, namespace, to_numpy
from sdnet.layers.base import Param

__all__ = ["SGD"]


class SGD:
    """SGD with momentum, Nesterov and L2 weight decay.

    Parameters
    ----------
    params : iterable of (name, Param) or Param
    lr, momentum, weight_decay : float
    nesterov : bool
    skip_missing : bool
        Leave parameters without a gradient untouched (no momentum, no decay) for that step.
    """

    def __init__(
        self,
        params: Iterable[Any],
        *,
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        skip_missing: bool = False,
    ) -> None:
        if lr <= 0 or momentum < 0 or weight_decay < 0:
            raise ValueError("lr must be > 0, momentum and weight_decay >= 0")
        if nesterov and momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        self.params: list[Param] = [p[1] if isinstance(p, tuple) else p for p in params]
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.weight_decay, self.skip_missing = weight_decay, skip_missing
        self.buffers: list[Any] = [None] * len(self.params)

    def step(self) -> None:
        """Apply one update from the accumulated gradients."""
        for i, p in enumerate(self.params):
            if p.grad is None and self.skip_missing:
                continue
            # CuPy runs kernels on its current device: make the parameter's device current
            with device(p.value) if is_cupy_array(p.value) else nullcontext():
                self._update(i, p)

    def _update(self, i: int, p: Param) -> None:
        xp = namespace(p.value)
        g = p.grad if p.grad is not None else xp.zeros_like(p.value)
        if self.weight_decay:
            g = g + self.weight_decay * p.value
        if self.momentum:
            prev = self.buffers[i]
            if prev is not None and not _same_place(prev, p.value):
                # the model moved (to_device) since the last step: bring the buffer along
                prev = xp.asarray(to_numpy(prev), dtype=p.value.dtype, device=device(p.value))
            buf = g if prev is None else self.momentum * prev + g
            self.buffers[i] = buf
            g = g + self.momentum * buf if self.nesterov else buf
        p.value = p.value - self.lr * g


def _same_place(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` belong to one library and one device."""
    try:
        return namespace(a) is namespace(b) and device(a) == device(b)
    except TypeError:
        return False
