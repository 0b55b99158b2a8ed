"""Host-side randomness: explicit, seeded ``numpy.random.Generator`` streams, never global seeds.

One integer seed yields independent streams through ``numpy.random.SeedSequence.spawn``:
``init`` (weights), ``gates`` (stochastic-depth gates) and ``data`` (shuffling, augmentation).
Everything is drawn on the host and copied to the device, so the same seed gives the same
initial weights, gates and data order on every backend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Streams", "make_streams", "kaiming_normal", "uniform_fan_in", "draw_gates"]


@dataclass
class Streams:
    """The independent random streams of one run."""

    init: np.random.Generator
    gates: np.random.Generator
    data: np.random.Generator


def make_streams(seed: int) -> Streams:
    """Split ``seed`` into the ``init``, ``gates`` and ``data`` streams."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    init, gates, data = np.random.SeedSequence(int(seed)).spawn(3)
    return Streams(
        np.random.default_rng(init), np.random.default_rng(gates), np.random.default_rng(data)
    )


def kaiming_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """He et al. normal init for ReLU nets: N(0, 2 / fan_in), as the paper's reference code."""
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)


def uniform_fan_in(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for linear layers."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape)


def draw_gates(
    rng: np.random.Generator, survival: list[float], mode: str, batch_size: int
) -> list[bool] | list[np.ndarray]:
    """Draw one training pass's stochastic-depth gates on the host.

    ``mode="batch"`` (the paper): one Bernoulli(p_l) gate per block, a list of bools.
    ``mode="row"`` (timm/torchvision) and ``mode="subset"`` (sdnet's compute-saving per-sample
    mode): one gate per block and sample, a list of (N,) bool arrays.
    Exactly ``len(survival)`` (batch) or ``len(survival) * batch_size`` (per sample) uniforms are
    consumed, whatever the outcome, so the stream stays aligned across runs and backends.
    """
    p = np.asarray(survival, dtype=np.float64)
    if mode == "batch":
        return [bool(g) for g in rng.random(p.shape[0]) < p]
    if mode in ("row", "subset"):
        u = rng.random((p.shape[0], batch_size))  # (L, N)
        return list(u < p[:, None])
    raise ValueError(f"unknown drop mode {mode!r}: use 'batch', 'row' or 'subset'")
