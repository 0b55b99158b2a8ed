"""What sdnet knows about one family of models (see :mod:`sdnet.models.registry`)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ModelFamily", "with_defaults"]


@dataclass(frozen=True)
class ModelFamily:
    """One family of model names and everything sdnet needs to know about it.

    Attributes
    ----------
    name : str
        ``"resnet"``, ``"seednet"``.
    title : str
        How the docs and messages name the family (``"ResNet"``).
    pattern : str
        Regular expression the lower-cased model name must match in full.
    usage : str
        How the names are written, for error messages (``"resnet<6n+2> (e.g. resnet20)"``).
    listed : tuple of str
        The usual names, for :func:`model_names`.
    parse : callable
        ``parse(match) -> options`` the name implies (``{"depth": 20}``); ``ValueError``
        with a message saying what to do for names that match but cannot be built.
    build : callable
        ``build(**options) -> Model``: the class.
    shape_options : tuple of str
        Training options (fields of ``TrainConfig``) that shape this family's network.
    small : callable
        ``small(options) -> bool``: a small, fast network (its defaults differ: see
        :meth:`~sdnet.config.TrainConfig.is_small`).
    data_options : callable
        ``data_options(image_shape) -> options`` the data implies (``in_channels``);
        ``ValueError`` when the family cannot take such images.
    state_size : callable
        ``state_size(config) -> int``: the number of values in every parameter and buffer of
        the model built from ``config`` (``model.config``), computed without building it.
    input_shape : callable
        ``input_shape(config) -> tuple``: one sample's shape, ``str`` for a free axis.
    activation_size : callable
        ``activation_size(config, (H, W)) -> int``: values a training forward pass of one
        image of that size keeps for the backward pass with every block computed, counting
        only the outputs of the layers (a lower bound: no work buffers), computed without
        building the model. With ``state_size`` it bounds what training needs from below, so
        that a model which cannot fit is refused before anything is allocated.
    torch_class : str
        The class of :mod:`sdnet.interop.torch_modules` that mirrors this family.
    torch_options : callable
        ``torch_options(config) -> kwargs`` of that class (besides survival, mode, scaling).
    """

    name: str
    title: str
    pattern: str
    usage: str
    listed: tuple[str, ...]
    parse: Callable[[re.Match[str]], dict[str, Any]]
    build: Callable[..., Any]
    shape_options: tuple[str, ...]
    small: Callable[[dict[str, Any]], bool]
    data_options: Callable[[tuple[int, ...]], dict[str, Any]]
    state_size: Callable[[dict[str, Any]], int]
    input_shape: Callable[[dict[str, Any]], tuple[Any, ...]]
    torch_class: str
    torch_options: Callable[[dict[str, Any]], dict[str, Any]]
    activation_size: Callable[[dict[str, Any], tuple[int, int]], int] = lambda config, hw: 0


def with_defaults(cls: type, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` completed with the defaults of ``cls``'s constructor (what building it from
    ``config`` would use for the keys it lacks)."""
    params = inspect.signature(cls).parameters.values()
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return {**defaults, **config}
