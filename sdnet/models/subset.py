"""Per-sample stochastic depth that skips compute (``mode="subset"``).

Each sample keeps each block's branch with probability p_l, as in ``mode="row"``, but instead of
computing the branch for the whole batch and zeroing the dropped rows, the block gathers the
samples that keep it, runs the branch on those only (its batch norm sees, and its running
statistics follow, only them) and scatters the result back::

    xs = x[kept]                      (M, ...)   M = number of samples keeping the branch
    z  = s + scatter(c * branch(xs))  (N, ...)   zeros in the rows of dropped samples

Backward: ``d(xs) = branch_backprop(c * dz[kept])``, ``dx = shortcut_backprop(dz) +
scatter(d(xs))``. With no sample kept the branch is skipped entirely; with every sample kept
it runs on the whole batch, with no gather.

The draw is one Bernoulli(p_l) per sample and block, matching the paper's expectation (the
expected work kept is that of the batch mode). DINOv2's subset drop path keeps a fixed count
``int(N p_l)`` instead; sdnet does not offer it.

Gather and scatter are ``take`` along the batch axis (a scatter takes from the branch output
with one zero row appended, a dropped sample pointing at that row): standard array-API
operations, no scatter-assignment, no device sync. The indices of every block of a pass are
copied to the device together, once per pass (:func:`prepare`). On 4-D inputs the rows are
taken from the channel-major (C, N, H, W) view, so the result keeps the memory order the
convolutions work in.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sdnet._array_api import device, namespace

__all__ = ["SubsetGate", "prepare", "gather", "scatter"]

Array = Any


class SubsetGate(NamedTuple):
    """A subset-mode gate prepared by the model: the host gates, the kept samples' indices and
    each sample's row in the gathered batch (``M`` for a dropped sample: the zero row)."""

    host: list[bool]  # (N,)
    idx: Array  # (M,) int64, on the device
    pos: Array  # (N,) int64, on the device


def prepare(gates: list[Any], backend: Any) -> list[Any]:
    """Replace each per-sample gate that keeps some but not all samples by a
    :class:`SubsetGate`, all of their indices copied to the device in one transfer."""
    ints: list[int] = []
    spans: list[tuple[int, int, int] | None] = []
    for g in gates:
        if not isinstance(g, list) or all(g) or not any(g):
            spans.append(None)
            continue
        kept = [n for n, k in enumerate(g) if k]
        pos, row = [], 0
        for k in g:
            pos.append(row if k else len(kept))
            row += bool(k)
        spans.append((len(ints), len(kept), len(pos)))
        ints += kept + pos
    if not ints:
        return gates
    flat = backend.asarray(ints)  # (sum of M + N,) int64: one host-to-device copy
    out = []
    for g, span in zip(gates, spans, strict=True):
        if span is None:
            out.append(g)
            continue
        start, m, n = span
        out.append(SubsetGate(g, flat[start : start + m], flat[start + m : start + m + n]))
    return out


def gather(x: Array, idx: Array) -> Array:
    """The rows ``idx`` of ``x`` (N, ...) -> (M, ...)."""
    xp = namespace(x)
    if x.ndim != 4:
        return xp.take(x, idx, axis=0)
    xt = xp.permute_dims(x, (1, 0, 2, 3))  # (C, N, H, W), free when x is channel-major
    return xp.permute_dims(xp.take(xt, idx, axis=1), (1, 0, 2, 3))  # (M, C, H, W)


def scatter(b: Array, pos: Array) -> Array:
    """(M, ...) rows back to their samples: (N, ...) with zero rows for dropped samples."""
    xp = namespace(b)
    if b.ndim != 4:
        zero = xp.zeros((1,) + tuple(b.shape[1:]), dtype=b.dtype, device=device(b))
        return xp.take(xp.concat([b, zero], axis=0), pos, axis=0)
    bt = xp.permute_dims(b, (1, 0, 2, 3))  # (C, M, H, W)
    c, _, h, w = bt.shape
    zero = xp.zeros((c, 1, h, w), dtype=b.dtype, device=device(b))
    full = xp.take(xp.concat([bt, zero], axis=1), pos, axis=1)  # (C, N, H, W)
    return xp.permute_dims(full, (1, 0, 2, 3))
