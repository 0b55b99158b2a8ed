"""Models and the name registry used by :func:`build_model`."""

from __future__ import annotations

import re
from typing import Any

from sdnet.models.base import Model
from sdnet.models.resnet import RESNET_DEPTHS, ResNet
from sdnet.models.seednet import SeedNet
from sdnet.models.stochastic_depth import ResidualBlock, survival_probabilities

__all__ = [
    "Model",
    "ResNet",
    "SeedNet",
    "ResidualBlock",
    "survival_probabilities",
    "build_model",
    "model_names",
]


def model_names() -> list[str]:
    """Names :func:`build_model` accepts (any ``resnet<6n+2>`` works; these are the usual ones)."""
    return [f"resnet{d}" for d in RESNET_DEPTHS] + ["seednet"]


def build_model(name: str, **kwargs: Any) -> Model:
    """Build a model by name.

    Parameters
    ----------
    name : str
        ``"resnet<depth>"`` with depth = 6n+2 (``"resnet20"``, ``"resnet110"`` ...) or
        ``"seednet"``.
    **kwargs
        Passed to the model: ``num_classes``, ``in_channels`` (ResNet), ``p_last``, ``rule``,
        ``mode``, ``scaling``, ``device``, ``dtype``, ``seed``, ...

    Examples
    --------
    >>> import sdnet
    >>> model = sdnet.build_model("resnet20", num_classes=10, in_channels=1, device="cpu")
    >>> len(model.blocks)
    9
    """
    key = name.strip().lower()
    m = re.fullmatch(r"resnet-?(\d+)", key)
    if m:
        return ResNet(int(m.group(1)), **kwargs)
    if key == "seednet":
        kwargs.pop("in_channels", None)  # SeedNet flattens whatever it gets
        return SeedNet(**kwargs)
    raise ValueError(
        f"unknown model {name!r}: use resnet<6n+2> (e.g. resnet20, resnet110) or seednet"
    )
