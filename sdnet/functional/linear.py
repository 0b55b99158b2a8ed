"""Fully connected layer, PyTorch layout ``w`` (out, in).

Forward ``y = x @ w^T + b``; backward ``dx = dy @ w``, ``dw = dy^T @ x``, ``db = sum_n dy``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sdnet._array_api import namespace, on_input_device

__all__ = ["linear", "linear_backward"]

Array = Any


class LinearSaved(NamedTuple):
    x: Array  # (N, in)
    w: Array  # (out, in)
    has_bias: bool


@on_input_device
def linear(x: Array, w: Array, b: Array | None = None) -> tuple[Array, LinearSaved]:
    """``y = x @ w^T (+ b)`` for ``x`` (N, in), ``w`` (out, in), ``b`` (out,)."""
    xp = namespace(x, w, b)
    if x.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"linear: input shape {x.shape} does not match weight {w.shape}")
    y = xp.matmul(x, xp.matrix_transpose(w))  # (N, out)
    if b is not None:
        y = y + b
    return y, LinearSaved(x, w, b is not None)


@on_input_device
def linear_backward(
    dy: Array, saved: LinearSaved, *, need_dx: bool = True
) -> tuple[Array | None, Array, Array | None]:
    """Return ``(dx, dw, db)``; ``db`` is ``None`` without bias, ``dx`` without ``need_dx``."""
    xp = namespace(dy)
    dw = xp.matmul(xp.matrix_transpose(dy), saved.x)  # (out, in)
    db = xp.sum(dy, axis=0) if saved.has_bias else None  # (out,)
    dx = xp.matmul(dy, saved.w) if need_dx else None  # (N, in)
    return dx, dw, db
