"""Composition: forward walks the layers in order, backprop walks their backprops in reverse.

:func:`chain` is that walk, written once: :class:`Sequential` and :class:`~sdnet.models.Model`
(which passes each residual block its gate) both use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sdnet.layers.base import Backprop, Layer

__all__ = ["Sequential", "chain"]


def chain(
    calls: Iterable[tuple[Layer, dict[str, Any]]],
    x: Any,
    *,
    train: bool,
    need_dx: bool = True,
    keep: bool = True,
) -> tuple[Any, Backprop | None]:
    """Run ``layer(x, train=train, **kwargs)`` for each ``(layer, kwargs)`` in order.

    Parameters
    ----------
    calls : iterable of (Layer, dict)
        The layers and the extra keyword arguments of each call (a block's ``gate``).
    need_dx : bool
        Whether the backward pass must return the input gradient; ``False`` tells the first
        layer to skip it (its input is data), and ``backprop`` then returns ``None``.
    keep : bool
        ``False`` when no backward pass will follow: each layer's backprop closure (and what
        it saved) is dropped at once, and ``None`` is returned in its place.

    Returns
    -------
    y : array
    backprop : callable or None
        ``backprop(dy)`` runs the layers' backprops in reverse order.
    """
    backprops: list[Backprop] = []
    skip_dx = not need_dx
    for layer, kwargs in calls:
        # only the first layer is told (and only when it can skip): layers written without a
        # need_dx argument keep working everywhere else
        x, back = layer(x, train=train, **(dict(kwargs, need_dx=False) if skip_dx else kwargs))
        skip_dx = False
        if keep:
            backprops.append(back)
    if not keep:
        return x, None

    def backprop(dy: Any) -> Any:
        for back in reversed(backprops):
            dy = back(dy)
        return dy

    return x, backprop


class Sequential(Layer):
    """Chain layers, named ``Sequential(("conv1", c), ("bn1", b))`` or by position ("0", "1")."""

    def __init__(self, *layers: Layer | tuple[str, Layer]) -> None:
        super().__init__()
        for i, item in enumerate(layers):
            name, layer = item if isinstance(item, tuple) else (str(i), item)
            self.child(name, layer)

    @property
    def layers(self) -> list[Layer]:
        return list(self._children.values())

    def forward(self, x: Any, *, train: bool, need_dx: bool = True) -> tuple[Any, Backprop]:
        y, backprop = chain(
            ((layer, {}) for layer in self._children.values()), x, train=train, need_dx=need_dx
        )
        assert backprop is not None
        return y, backprop
