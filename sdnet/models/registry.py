"""The model registry: every question asked of a model by its name is answered here.

A :class:`ModelFamily` says how a family of names is parsed (``resnet110`` -> depth 110), how it
is built, which training options shape it, what it needs from the data, whether it is one of
the small networks (whose defaults differ), how many values its state holds (checked before a
stored configuration is trusted), what its input looks like, and which PyTorch class mirrors
it. :func:`build_model`, :class:`~sdnet.config.TrainConfig`, :func:`sdnet.load`, the training
setup and the PyTorch/ONNX export all ask this module, so adding a model means adding a
``FAMILY`` in ``sdnet/models/`` and listing it in :data:`FAMILIES`, nothing else (plus a class
in :mod:`sdnet.interop.torch_modules` if it should export to PyTorch).
"""

from __future__ import annotations

import re
from typing import Any

from sdnet.models.family import ModelFamily
from sdnet.models.resnet import FAMILY as RESNET
from sdnet.models.seednet import FAMILY as SEEDNET

__all__ = ["ModelFamily", "FAMILIES", "resolve", "build_model", "model_names", "is_small"]


FAMILIES: tuple[ModelFamily, ...] = (RESNET, SEEDNET)


def usage() -> str:
    """How model names are written, every family: ``"resnet<6n+2> (...) or seednet"``."""
    return " or ".join(f.usage for f in FAMILIES)


def resolve(name: Any) -> tuple[ModelFamily, dict[str, Any]]:
    """The family of model ``name`` and the options the name implies.

    Raises
    ------
    ValueError
        ``name`` is not a model sdnet builds; the message says what names are.
    """
    if not isinstance(name, str):
        raise ValueError(f"a model name must be a string, got {name!r}; use {usage()}")
    key = name.strip().lower()
    for family in FAMILIES:
        m = re.fullmatch(family.pattern, key)
        if m:
            return family, family.parse(m)
    raise ValueError(f"unknown model {name!r}: use {usage()}")


def build_model(name: str, **kwargs: Any) -> Any:
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
    family, implied = resolve(name)
    for key in kwargs.keys() & implied.keys():
        if kwargs[key] != implied[key]:
            raise ValueError(f"model {name!r} implies {key}={implied[key]}, got {kwargs[key]!r}")
    return family.build(**{**kwargs, **implied})


def model_names() -> list[str]:
    """Names :func:`build_model` accepts (any ``resnet<6n+2>`` works; these are the usual ones)."""
    return [n for f in FAMILIES for n in f.listed]


def is_small(name: str) -> bool:
    """Whether ``name`` is one of the small, fast networks (see ``ModelFamily.small``)."""
    family, implied = resolve(name)
    return family.small(implied)
