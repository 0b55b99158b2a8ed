"""Models, and the registry every question about a model name goes through."""

from __future__ import annotations

from sdnet.models.base import Model
from sdnet.models.registry import FAMILIES, build_model, is_small, model_names, resolve
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
    "is_small",
    "resolve",
    "FAMILIES",
    "RESNET_DEPTHS",
]
