"""Parameter-owning layers: ``layer(x, train=...) -> (y, backprop)``."""

from sdnet.layers.activation import Arctan, ReLU, Tanh
from sdnet.layers.base import Backprop, Layer, Param
from sdnet.layers.batchnorm import BatchNorm
from sdnet.layers.conv import Conv2d
from sdnet.layers.linear import Linear
from sdnet.layers.pooling import GlobalAvgPool, ShortcutA
from sdnet.layers.sequential import Sequential

__all__ = [
    "Arctan",
    "Backprop",
    "BatchNorm",
    "Conv2d",
    "GlobalAvgPool",
    "Layer",
    "Linear",
    "Param",
    "ReLU",
    "Sequential",
    "ShortcutA",
    "Tanh",
]
