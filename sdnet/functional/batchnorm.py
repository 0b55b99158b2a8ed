"""Batch normalisation over the batch (and spatial) axes, per channel.

Training (statistics of the batch; M = number of values per channel)::

    mu = mean(x), var = mean((x - mu)^2)            (biased, used to normalise)
    xhat = (x - mu) * (var + eps)^(-1/2),  y = gamma * xhat + beta

    dbeta  = sum(dy),  dgamma = sum(dy * xhat)
    dx = gamma / sqrt(var + eps) / M * (M * dy - dbeta - xhat * dgamma)

Evaluation (running statistics, a fixed affine map)::

    y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta
    dx = dy * gamma / sqrt(running_var + eps)

Inputs are (N, C) or (N, C, H, W); the channel axis is 1.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from sdnet._array_api import namespace, on_input_device
from sdnet.backends.kernels import lookup

__all__ = ["batch_norm_train", "batch_norm_eval", "batch_norm_backward"]

Array = Any


class BNSaved(NamedTuple):
    xhat: Array | None  # same shape as x (eval: None, recomputed by the backward if needed)
    scale: Array  # gamma / sqrt(var + eps), broadcastable to x: (1, C[, 1, 1])
    mean: Array  # (C,) batch mean (train) or running mean (eval)
    var: Array  # (C,) biased batch variance (train) or running variance (eval)
    train: bool
    x: Array | None = None  # eval: the input
    invstd: Array | None = None  # eval: 1 / sqrt(running_var + eps), (1, C[, 1, 1])


def _axes(x: Array) -> tuple[int, ...]:
    if x.ndim == 2:
        return (0,)
    if x.ndim == 4:
        return (0, 2, 3)
    raise ValueError(f"batch norm expects (N, C) or (N, C, H, W) input, got shape {x.shape}")


def _bcast(v: Array, ndim: int) -> Array:
    xp = namespace(v)
    return xp.reshape(v, (1, v.shape[0]) + (1,) * (ndim - 2))  # (1, C[, 1, 1])


@on_input_device
def batch_norm_train(
    x: Array, gamma: Array, beta: Array, *, eps: float = 1e-5
) -> tuple[Array, BNSaved]:
    """Normalise with the batch statistics. ``saved.mean``/``saved.var`` feed the running stats.

    Raises
    ------
    ValueError
        An empty batch, or one value per channel (batch 1 on a 1x1 map, or a 2-D input of
        batch 1): the statistics would be NaN or degenerate (the output would be ``beta``, the
        input gradient 0), so training refuses it, as PyTorch does.
    """
    xp = namespace(x, gamma, beta)
    axes = _axes(x)
    m = math.prod(x.shape) // max(x.shape[1], 1)  # values per channel
    if m < 2:
        what = "an empty batch" if m == 0 else f"one value per channel (input {tuple(x.shape)})"
        raise ValueError(
            f"batch norm in training got {what}: it needs more than one value per channel; "
            "use a larger batch (or evaluation mode)"
        )
    fast = lookup("batch_norm_train", x)
    out = NotImplemented if fast is None else fast(x, gamma, beta, eps)
    if out is not NotImplemented:  # the backend's own form (sdnet.backends.kernels)
        y, xhat, scale, mean, var = out
        return y, BNSaved(xhat, scale, mean, var, True)
    mean = xp.mean(x, axis=axes, keepdims=True)  # (1, C[, 1, 1])
    xhat = x - mean  # centred now, normalised in place below (one buffer, not three)
    var = xp.mean(xhat * xhat, axis=axes, keepdims=True)
    invstd = (var + eps) ** -0.5  # one pass over C values, not two (sqrt, then divide)
    xhat *= invstd
    g = _bcast(gamma, x.ndim)
    y = xhat * g
    y += _bcast(beta, x.ndim)
    flat = (x.shape[1],)
    return y, BNSaved(xhat, g * invstd, xp.reshape(mean, flat), xp.reshape(var, flat), True)


@on_input_device
def batch_norm_eval(
    x: Array,
    gamma: Array,
    beta: Array,
    running_mean: Array,
    running_var: Array,
    *,
    eps: float = 1e-5,
) -> tuple[Array, BNSaved]:
    """Normalise with the running statistics (inference): one fused affine map of ``x``."""
    namespace(x, gamma, beta)  # one library for all three
    _axes(x)
    invstd = (_bcast(running_var, x.ndim) + eps) ** -0.5  # (1, C[, 1, 1])
    scale = _bcast(gamma, x.ndim) * invstd
    shift = _bcast(beta, x.ndim) - _bcast(running_mean, x.ndim) * scale
    fast = lookup("batch_norm_eval", x)
    y = NotImplemented if fast is None else fast(x, scale, shift)  # the backend's own form
    if y is NotImplemented:
        y = x * scale
        y += shift  # two passes over x instead of four
    return y, BNSaved(None, scale, running_mean, running_var, False, x, invstd)


@on_input_device
def batch_norm_backward(
    dy: Array, saved: BNSaved, *, need_dx: bool = True
) -> tuple[Array | None, Array, Array]:
    """Return ``(dx, dgamma, dbeta)`` for either mode; ``dx`` is ``None`` without ``need_dx``."""
    xp = namespace(dy)
    axes = _axes(dy)
    if saved.train and need_dx and (fast := lookup("batch_norm_backward", dy)) is not None:
        out = fast(dy, saved.xhat, saved.scale)
        if out is not NotImplemented:  # the backend's own form (sdnet.backends.kernels)
            return out
    dbeta = xp.sum(dy, axis=axes)  # (C,)
    xhat = saved.xhat
    if xhat is None:  # evaluation mode kept only x
        xhat = (saved.x - _bcast(saved.mean, dy.ndim)) * saved.invstd
    dgamma = xp.sum(dy * xhat, axis=axes)  # (C,)
    if not need_dx:
        return None, dgamma, dbeta
    if not saved.train:
        return dy * saved.scale, dgamma, dbeta
    m = math.prod(dy.shape) // dy.shape[1]  # values per channel
    # the batch statistics depend on every x: subtract the mean gradient and its xhat component,
    # dx = scale * (dy - xhat * dgamma / m - dbeta / m), built in one buffer
    dx = saved.xhat * _bcast(dgamma / m, dy.ndim)
    dx += _bcast(dbeta / m, dy.ndim)
    dx = dy - dx
    dx *= saved.scale
    return dx, dgamma, dbeta
