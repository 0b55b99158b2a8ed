"""Finite-difference gradient checks (central differences, float64).

For ``y, backprop = f(*inputs)`` the check draws a random cotangent ``v`` (the shape of ``y``)
and compares, for each input ``x`` and direction ``u``,

    analytic  = < backprop(v)[i], u >
    numerical = ( <v, f(x + eps u)> - <v, f(x - eps u)> ) / (2 eps)

Small tensors are checked element by element (``u`` = unit vectors); big ones along a few
random unit directions (random projections), which catches any wrong entry with probability 1.
Piecewise-linear layers (ReLU) are checked where no value sits within ``eps`` of a kink, which
random inputs in float64 satisfy with overwhelming probability at ``eps = 1e-6``.
All random draws are on the host from a seeded ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from sdnet._array_api import device, namespace, to_numpy

__all__ = ["gradcheck", "check_layer", "GradcheckError"]

Array = Any


class GradcheckError(AssertionError):
    """Analytic and numerical gradients disagree (the message lists where)."""


def gradcheck(
    f: Callable[..., tuple[Array, Callable[[Array], Sequence[Array | None]]]],
    *inputs: Array,
    names: Sequence[str] | None = None,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    max_elementwise: int = 48,
    directions: int = 6,
    seed: int = 0,
) -> dict[str, float]:
    """Check the backward of ``f`` against central differences.

    Parameters
    ----------
    f : callable
        ``f(*inputs) -> (y, backprop)`` with ``backprop(dy)`` returning one gradient per input
        (``None`` to skip an input). Must be deterministic.
    *inputs : arrays
        Float64 arrays (any array-API library, any device).
    names : sequence of str, optional
        Labels for the error message.
    eps, rtol, atol : float
        Step and tolerances: ``|num - ana| <= atol + rtol * max(|num|, |ana|)``.
    max_elementwise : int
        Inputs with at most this many entries are checked entry by entry.
    directions : int
        Random directions for larger inputs.
    seed : int

    Returns
    -------
    dict
        Worst relative error per input name.

    Raises
    ------
    GradcheckError
        If any direction disagrees.
    """
    if not inputs:
        raise ValueError("gradcheck needs at least one input")
    xp = namespace(*inputs)
    dev = device(inputs[0])
    names = list(names) if names is not None else [f"input{i}" for i in range(len(inputs))]
    rng = np.random.default_rng(seed)
    y, backprop = f(*inputs)
    v = xp.asarray(rng.standard_normal(tuple(y.shape)), dtype=y.dtype, device=dev)
    grads = list(backprop(v))
    if len(grads) != len(inputs):
        raise ValueError(f"backprop returned {len(grads)} gradients for {len(inputs)} inputs")

    def numerical(i: int, u: np.ndarray) -> float:
        # (<v, f(x + eps u)> - <v, f(x - eps u)>) / (2 eps), x the input i
        du = xp.asarray(u * eps, dtype=inputs[i].dtype, device=dev)
        plus = list(inputs)
        minus = list(inputs)
        plus[i], minus[i] = inputs[i] + du, inputs[i] - du
        return (_project(xp, v, f, plus) - _project(xp, v, f, minus)) / (2 * eps)

    worst: dict[str, float] = {}
    failures: list[str] = []
    for i, (x, g) in enumerate(zip(inputs, grads, strict=False)):
        if g is None:
            continue
        if tuple(g.shape) != tuple(x.shape):
            failures.append(
                f"{names[i]}: gradient shape {tuple(g.shape)} != input {tuple(x.shape)}"
            )
            continue
        g_host = to_numpy(g).astype(np.float64)
        dirs = _directions(rng, tuple(x.shape), max_elementwise, directions)
        worst[names[i]] = _compare(
            names[i], g_host, dirs, partial(numerical, i), rtol, atol, failures
        )
    if failures:
        raise GradcheckError("gradient check failed:\n  " + "\n  ".join(failures[:20]))
    return worst


def _project(xp: Any, v: Array, f: Callable[..., Any], args: list[Array]) -> float:
    """``<v, f(*args)[0]>`` as a host float."""
    return float(to_numpy(xp.sum(v * f(*args)[0])))


def _directions(
    rng: np.random.Generator, shape: tuple[int, ...], max_elementwise: int, directions: int
) -> list[np.ndarray]:
    """Unit vectors of every entry for a small input, else ``directions`` random unit
    directions (drawn from ``rng``)."""
    size = math.prod(shape)
    if size <= max_elementwise:
        return [np.eye(1, size, k).reshape(shape) for k in range(size)]
    dirs = [rng.standard_normal(shape) for _ in range(directions)]
    return [u / np.linalg.norm(u) for u in dirs]  # unit length: eps is the real step


def _compare(
    name: str,
    g_host: np.ndarray,
    dirs: list[np.ndarray],
    numerical: Callable[[np.ndarray], float],
    rtol: float,
    atol: float,
    failures: list[str],
) -> float:
    """Analytic ``<g, u>`` against ``numerical(u)`` for each direction ``u``; appends each
    disagreement to ``failures`` and returns the worst relative error."""
    worst = 0.0
    for k, u in enumerate(dirs):
        num = numerical(u)
        ana = float(np.sum(g_host * u))
        err = abs(num - ana)
        scale = max(abs(num), abs(ana))
        worst = max(worst, err / scale if scale > 0 else err)
        if err > atol + rtol * scale:
            failures.append(f"{name} direction {k}: analytic {ana:.10g} numerical {num:.10g}")
    return worst


def check_layer(layer: Any, x: Array, *, train: bool = True, **kwargs: Any) -> dict[str, float]:
    """:func:`gradcheck` of a layer or model: its input and every parameter.

    ``kwargs`` go to :func:`gradcheck` except ``gates``, which goes to the layer call.
    Buffers (batch-norm running statistics) are restored afterwards.
    """
    call_kw = {"gates": kwargs.pop("gates")} if "gates" in kwargs else {}
    params = list(layer.named_parameters())
    buffers = [(b, _snapshot(b.value)) for _, b in layer.named_buffers()]  # updated in place

    def f(x_: Array, *values: Array) -> tuple[Array, Callable[[Array], list[Array | None]]]:
        old = [p.value for _, p in params]
        for (_, p), val in zip(params, values, strict=False):
            p.value = val
        try:
            y, back = layer(x_, train=train, **call_kw)
        finally:
            for (_, p), val in zip(params, old, strict=False):
                p.value = val

        def backprop(dy: Array) -> list[Array | None]:
            layer.zero_grad()
            dx = back(dy)
            return [dx] + [_grad_or_zeros(p) for _, p in params]

        return y, backprop

    try:
        return gradcheck(
            f, x, *[p.value for _, p in params], names=["x"] + [n for n, _ in params], **kwargs
        )
    finally:
        for b, val in buffers:
            b.value = val
        layer.zero_grad()


def _snapshot(v: Any) -> Any:
    """A copy of a buffer's value (a host counter is an int, nothing to copy)."""
    return v if isinstance(v, int) else namespace(v).asarray(v, copy=True)


def _grad_or_zeros(p: Any) -> Array:
    if p.grad is not None:
        return p.grad
    xp = namespace(p.value)
    return xp.zeros_like(p.value)
