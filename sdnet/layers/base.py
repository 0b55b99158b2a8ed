"""The layer protocol: ``layer(x, train=...) -> (y, backprop)``; ``backprop(dy) -> dx``.

``backprop`` is a closure over what its forward computed, so nothing is cached on the layer:
an evaluation pass between a training forward and its backward cannot corrupt it. It returns
the input gradient and *adds* the parameter gradients into ``Param.grad`` (``None`` means no
gradient reached the parameter since the last ``zero_grad``, e.g. a dropped block).

State naming follows PyTorch (``layer1.0.conv1.weight``, ``bn1.running_var`` ...), so a state
dict moves both ways between sdnet and PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from typing import Any

from sdnet._array_api import device, device_context, namespace, to_numpy
from sdnet.backends import DTYPES

__all__ = ["Param", "Counter", "Layer", "Backprop"]

Array = Any
Backprop = Callable[[Array], Array]


class Param:
    """A tensor slot: ``value`` (on the device) and, for trainable ones, ``grad``."""

    __slots__ = ("value", "grad", "trainable")

    def __init__(self, value: Array, trainable: bool = True) -> None:
        self.value = value
        self.grad: Array | None = None
        self.trainable = trainable

    def accumulate(self, g: Array) -> None:
        """Add ``g`` to ``grad`` (the backward of a parameter used more than once adds up)."""
        self.grad = g if self.grad is None else self.grad + g

    def __repr__(self) -> str:
        return f"Param(shape={tuple(self.value.shape)}, dtype={self.value.dtype})"


class Counter(Param):
    """A whole number kept on the host, such as batch norm's ``num_batches_tracked``: saved and
    loaded like a 0-d int64 buffer, counted without a kernel launch or a device round trip."""

    __slots__ = ()

    def __init__(self, value: int = 0) -> None:
        super().__init__(int(value), trainable=False)


class Layer:
    """Base class: owns parameters, buffers and child layers, and knows their names."""

    def __init__(self) -> None:
        self._params: dict[str, Param] = {}
        self._buffers: dict[str, Param] = {}
        self._children: dict[str, Layer] = {}
        self._merged: set[str] = set()  # children whose state names are not prefixed

    # -- registration ---------------------------------------------------------------
    def param(self, name: str, value: Array) -> Param:
        self._params[name] = p = Param(value)
        return p

    def buffer(self, name: str, value: Array) -> Param:
        self._buffers[name] = b = Param(value, trainable=False)
        return b

    def counter(self, name: str, value: int = 0) -> Counter:
        """Register a host-side whole-number buffer (see :class:`Counter`)."""
        self._buffers[name] = c = Counter(value)
        return c

    def child(self, name: str, layer: Layer, *, merge: bool = False) -> Layer:
        """Register ``layer`` as ``name``; with ``merge`` its state names are not prefixed
        (``conv1.weight`` rather than ``stem.conv1.weight``)."""
        if name in self._children:
            raise ValueError(f"duplicate child name {name!r}")
        self._children[name] = layer
        if merge:
            self._merged.add(name)
        return layer

    # -- the call ---------------------------------------------------------------------
    def forward(self, x: Array, *, train: bool, need_dx: bool = True) -> tuple[Array, Backprop]:
        """``(y, backprop)``; with ``need_dx=False`` (the input is data) ``backprop`` returns
        ``None`` instead of the input gradient, and skips computing it."""
        raise NotImplementedError

    def __call__(self, x: Array, *, train: bool = True, **kwargs: Any) -> tuple[Array, Backprop]:
        """``forward`` with ``x``'s device made current, for the forward and the backward pass
        (CuPy works on its current device only; nothing to do on the host)."""
        context = device_context(x)
        if context is None:
            return self.forward(x, train=train, **kwargs)
        with context:
            y, back = self.forward(x, train=train, **kwargs)

        def backprop(dy: Array) -> Array:
            with device_context(x) or nullcontext():
                return back(dy)

        return y, backprop

    # -- traversal --------------------------------------------------------------------
    def _named(self, kind: str, prefix: str = "") -> Iterator[tuple[str, Param]]:
        for name, p in getattr(self, kind).items():
            yield prefix + name, p
        for name, c in self._children.items():
            yield from c._named(kind, prefix if name in self._merged else f"{prefix}{name}.")

    def named_parameters(self) -> Iterator[tuple[str, Param]]:
        """``(name, Param)`` for every trainable parameter, in definition order."""
        return self._named("_params")

    def named_buffers(self) -> Iterator[tuple[str, Param]]:
        """``(name, Param)`` for every non-trainable state tensor (BN running statistics)."""
        return self._named("_buffers")

    def sublayers(self) -> Iterator[Layer]:
        """This layer and every layer under it, depth first, in definition order."""
        yield self
        for c in self._children.values():
            yield from c.sublayers()

    def parameters(self) -> list[Param]:
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        """Forget all accumulated gradients (``grad = None``)."""
        for p in self.parameters():
            p.grad = None

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Every parameter and buffer as a host NumPy array (copies), PyTorch key names."""
        out = {}
        for name, p in list(self.named_parameters()) + list(self.named_buffers()):
            out[name] = to_numpy(p.value).copy()
        return out

    def load_state_dict(self, state: Mapping[str, Any], *, strict: bool = True) -> None:
        """Copy host arrays into this layer's tensors, keeping each tensor's dtype and device.

        Raises
        ------
        KeyError
            With ``strict``, when keys are missing or unexpected (all of them are listed).
        ValueError
            When a shape differs; nothing is modified in that case.
        """
        slots = dict(self.named_parameters()) | dict(self.named_buffers())
        missing = sorted(set(slots) - set(state))
        unexpected = sorted(set(state) - set(slots))
        if strict and (missing or unexpected):
            raise KeyError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
        staged = {name: _staged(name, p, state[name]) for name, p in slots.items() if name in state}
        for name, v in staged.items():
            slots[name].value = v

    def to_device(self, backend: Any) -> Layer:
        """Move every parameter and buffer to ``backend`` (a :class:`sdnet.backends.Backend`)."""
        for _, p in list(self.named_parameters()) + list(self.named_buffers()):
            if isinstance(p, Counter):
                continue  # host-side: nothing to move
            host = to_numpy(p.value)
            p.value = backend.asarray(host, dtype=_dtype_name(host))
            p.grad = None
        return self


def _staged(name: str, slot: Param, v: Any) -> Any:
    """``v`` as ``slot`` holds it (its dtype and device, or a host int), after a shape check."""
    shape = tuple(getattr(v, "shape", ()))
    want = () if isinstance(slot, Counter) else tuple(slot.value.shape)
    if shape != want:
        raise ValueError(f"{name}: shape {shape} does not match {want}")
    if isinstance(slot, Counter):
        return int(_host(v))
    xp = namespace(slot.value)
    return xp.asarray(_host(v), dtype=slot.value.dtype, device=device(slot.value))


def _host(v: Any) -> Any:
    """A host array (NumPy) from a NumPy array or a tensor of any supported library."""
    try:
        namespace(v)
    except TypeError:
        return v
    return to_numpy(v)


def _dtype_name(host: Any) -> Any:
    name = str(host.dtype)
    return name if name in DTYPES else None
