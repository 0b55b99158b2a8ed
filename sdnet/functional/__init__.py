"""Pure kernels: each ``op(...) -> (y, saved)`` sits beside ``op_backward(dy, saved)``.

No parameters, no randomness, no state: the namespace comes from the inputs.
"""

from sdnet.functional.activation import (
    add_relu,
    arctan,
    arctan_backward,
    relu,
    relu_backward,
    tanh,
    tanh_backward,
)
from sdnet.functional.batchnorm import batch_norm_backward, batch_norm_eval, batch_norm_train
from sdnet.functional.conv import conv2d, conv2d_backward, conv_output_size
from sdnet.functional.linear import linear, linear_backward
from sdnet.functional.loss import one_hot, softmax_cross_entropy, softmax_cross_entropy_backward
from sdnet.functional.pooling import (
    avg_pool2d,
    avg_pool2d_backward,
    global_avg_pool,
    global_avg_pool_backward,
    pad_channels,
    pad_channels_backward,
)

__all__ = [
    "add_relu",
    "arctan",
    "arctan_backward",
    "relu",
    "relu_backward",
    "tanh",
    "tanh_backward",
    "batch_norm_train",
    "batch_norm_eval",
    "batch_norm_backward",
    "conv2d",
    "conv2d_backward",
    "conv_output_size",
    "linear",
    "linear_backward",
    "one_hot",
    "softmax_cross_entropy",
    "softmax_cross_entropy_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "global_avg_pool",
    "global_avg_pool_backward",
    "pad_channels",
    "pad_channels_backward",
]
