"""Parameter-free activation layers."""

from __future__ import annotations

from typing import Any

import sdnet.functional as F
from sdnet.layers.base import Backprop, Layer

__all__ = ["ReLU", "Arctan", "Tanh"]


class _Elementwise(Layer):
    _fwd: Any
    _bwd: Any

    def forward(self, x: Any, *, train: bool, need_dx: bool = True) -> tuple[Any, Backprop]:
        y, saved = type(self)._fwd(x)
        bwd = type(self)._bwd
        return y, (lambda dy: bwd(dy, saved)) if need_dx else (lambda dy: None)


class ReLU(_Elementwise):
    """``max(x, 0)``."""

    _fwd, _bwd = F.relu, F.relu_backward


class Arctan(_Elementwise):
    """``atan(x)`` (the blog network's branch activation)."""

    _fwd, _bwd = F.arctan, F.arctan_backward


class Tanh(_Elementwise):
    """``tanh(x)`` (the blog network's shortcut activation)."""

    _fwd, _bwd = F.tanh, F.tanh_backward
