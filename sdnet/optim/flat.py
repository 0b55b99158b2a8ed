"""Parameters packed into one flat array per group and dtype, so that an update is a handful of
kernel launches for the whole group instead of a handful per tensor.

Packing copies the parameters' values into one flat array and makes each ``Param.value`` a
view of its segment (a basic slice reshaped: a view in NumPy, CuPy, PyTorch and
array_api_strict alike, which ``tests/test_optim_flat.py`` proves on every backend). The
update then runs in place on the flat array, so layers see the new weights through their views.
Whoever replaces a ``Param.value`` (loading a state dict, moving the model to another device)
detaches it; the next step notices (an identity check per parameter, on the host) and packs
again, carrying the momentum buffer along.

Gradients are not written into views: the backward pass leaves each one where its kernel put
it, and :meth:`FlatSegment.gather` concatenates them into the step's flat gradient in one
launch (writing each into a view would cost a copy launch per parameter). A parameter without
a gradient (its block was dropped) contributes zeros, made once and kept.
"""

from __future__ import annotations

from typing import Any

from sdnet.backends import Backend, backend_of
from sdnet.layers.base import Param

__all__ = ["FlatSegment", "Hyper"]

Array = Any


class Hyper:
    """The update's settings for one step of one group."""

    __slots__ = ("lr", "weight_decay", "momentum", "nesterov", "decoupled")

    def __init__(
        self, lr: float, weight_decay: float, momentum: float, nesterov: bool, decoupled: bool
    ) -> None:
        self.lr, self.weight_decay, self.momentum = lr, weight_decay, momentum
        self.nesterov, self.decoupled = nesterov, decoupled


class FlatSegment:
    """The parameters of one group that share a dtype, packed (see the module docstring).

    Attributes
    ----------
    names, params : list
        The parameters, in the group's order.
    values : array (n,)
        Every value, each ``Param.value`` a view of its part.
    momentum : array (n,) or None
        The momentum buffers, zero where a parameter has none yet (``has_buffer``).
    has_buffer : list of bool
        Whether each parameter has been updated with momentum (has a buffer).
    """

    def __init__(self, names: list[str], params: list[Param]) -> None:
        self.names, self.params = names, params
        self.momentum: Array | None = None
        self.has_buffer = [False] * len(params)
        self._pack()

    # -- packing --------------------------------------------------------------------------
    def _pack(self) -> None:
        values = [p.value for p in self.params]
        backend = backend_of(values[0])
        xp = backend.xp
        shapes = [tuple(v.shape) for v in values]
        with backend.activate():
            flat = xp.concat([xp.reshape(v, (-1,)) for v in values])  # (n,)
        offsets, o = [], 0
        for shape in shapes:
            size = 1
            for s in shape:
                size *= s
            offsets.append((o, size))
            o += size
        for p, (start, size), shape in zip(self.params, offsets, shapes, strict=True):
            p.value = xp.reshape(flat[start : start + size], shape)
        self.backend: Backend = backend
        self.values, self.offsets, self.shapes = flat, offsets, shapes
        self.views = [p.value for p in self.params]
        self._zeros: dict[int, Array] = {}
        self._segment_ids: Array | None = None

    def ensure_packed(self) -> None:
        """Pack again if a ``Param.value`` was replaced since (the momentum comes along)."""
        if all(p.value is v for p, v in zip(self.params, self.views, strict=True)):
            return
        momentum = None if self.momentum is None else self.backend.to_numpy(self.momentum)
        self._pack()
        if momentum is not None:
            self.momentum = self.backend.asarray(momentum, self.values.dtype)

    def view(self, flat: Array, i: int) -> Array:
        """Parameter ``i``'s part of a flat array, in the parameter's shape."""
        start, size = self.offsets[i]
        return self.backend.xp.reshape(flat[start : start + size], self.shapes[i])

    # -- one step -------------------------------------------------------------------------
    def gather(self) -> Array:
        """The step's flat gradient: every ``Param.grad`` (zeros where it is ``None``)."""
        xp = self.backend.xp
        parts = []
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                if i not in self._zeros:
                    self._zeros[i] = xp.zeros(self.shapes[i], dtype=self.values.dtype,
                                              device=self.backend.device)  # fmt: skip
                g = self._zeros[i]
            parts.append(xp.reshape(g, (-1,)))
        return xp.concat(parts)  # (n,)

    def update(self, g: Array, h: Hyper) -> None:
        """Update every parameter in place from the flat gradient ``g``::

        w = w * (1 - lr * wd)            (decoupled decay)   or   g = g + wd * w   (coupled)
        buf = momentum * buf + g         (buf = 0 before the first step: buf = g)
        w = w - lr * (g + momentum * buf if nesterov else buf)
        """
        w = self.values
        if h.weight_decay and h.decoupled:
            w *= 1.0 - h.lr * h.weight_decay
        elif h.weight_decay:
            g = g + h.weight_decay * w
        if h.momentum:
            buf = self._momentum()
            buf *= h.momentum
            buf += g
            g = g + h.momentum * buf if h.nesterov else buf
            self.has_buffer = [True] * len(self.params)
        w -= h.lr * g

    def update_some(self, g: Array, h: Hyper, keep: list[bool]) -> None:
        """:meth:`update` for the parameters whose ``keep`` is true; the others, and their
        momentum buffers, stay exactly as they are (a per-step mask of the segments)."""
        xp, w0 = self.backend.xp, self.values
        mask = xp.take(self.backend.asarray(keep), self._ids(), axis=0)  # (n,) bool
        w = w0 * (1.0 - h.lr * h.weight_decay) if h.weight_decay and h.decoupled else w0
        if h.weight_decay and not h.decoupled:
            g = g + h.weight_decay * w0
        if h.momentum:
            buf = self._momentum()
            new = h.momentum * buf + g
            buf[...] = xp.where(mask, new, buf)
            g = g + h.momentum * new if h.nesterov else new
            self.has_buffer = [a or b for a, b in zip(self.has_buffer, keep, strict=True)]
        w0[...] = xp.where(mask, w - h.lr * g, w0)

    def _momentum(self) -> Array:
        if self.momentum is None:
            self.momentum = self.backend.xp.zeros_like(self.values)
        return self.momentum

    def _ids(self) -> Array:
        """Which parameter each element belongs to, (n,) int64 on the device (made once)."""
        if self._segment_ids is None:
            ids = [i for i, (_, size) in enumerate(self.offsets) for _ in range(size)]
            self._segment_ids = self.backend.asarray(ids)
        return self._segment_ids
