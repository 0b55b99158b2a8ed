"""Composition: forward walks the layers in order, backprop walks their backprops in reverse."""

from __future__ import annotations

from typing import Any

from sdnet.layers.base import Backprop, Layer

__all__ = ["Sequential"]


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

    def forward(self, x: Any, *, train: bool) -> tuple[Any, Backprop]:
        backprops = []
        for layer in self._children.values():
            x, back = layer(x, train=train)
            backprops.append(back)

        def backprop(dy: Any) -> Any:
            for back in reversed(backprops):
                dy = back(dy)
            return dy

        return x, backprop
