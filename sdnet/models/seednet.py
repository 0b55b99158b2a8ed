"""SeedNet: the blog network that started sdnet, as a faithful preset.

Three fully connected residual blocks on flattened 28x28 images, no biases, no batch norm::

    out = relu(arctan(x @ Wa^T) @ Wb^T + tanh(x @ Wh^T))

    block1: 784 -> 1024 -> 824   (Wa 1024x784, Wb 824x1024, Wh 824x784)
    block2: 824 ->  512 -> 256
    block3: 256 ->  128 ->  10   (the ReLU after the last block is the blog's; logits >= 0)

The ``tanh(x Wh)`` term is the block's (parametrised) shortcut; stochastic depth gates the
``arctan(x Wa) Wb`` branch. The blog trained the shortcut weights with their own learning rate:
their state names end in ``wh.weight`` so a parameter group can pick them out.

Initialisation (``init``), drawn on the host from the model's seeded init stream:

* ``"default"``: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for linear layers;
* ``"blog"``: the blog's, every weight N(0, 1), the last block's (Wa, Wb, Wh) then multiplied
  by 0.01. The layers are built as for ``"default"`` first (same draws), then every weight is
  drawn again, block by block in the order Wa, Wb, Wh, so a seed gives the same network
  whatever code path built it.

The blog also fed pixels as x / 255 in [0, 1], not standardised: that is the data's business
(``normalize="unit"``, :mod:`sdnet.data.datasets`), not the model's.
"""

from __future__ import annotations

import math
from typing import Any

from sdnet.layers import Arctan, Linear, Sequential, Tanh
from sdnet.models.base import Model
from sdnet.models.family import ModelFamily, with_defaults
from sdnet.models.stochastic_depth import ResidualBlock, survival_probabilities

__all__ = ["SeedNet", "SEEDNET_WIDTHS", "INITS", "BLOG_LAST_BLOCK_SCALE", "FAMILY"]

SEEDNET_WIDTHS = ((784, 1024, 824), (824, 512, 256), (256, 128, 10))
INITS = ("default", "blog")  # weight initialisations (see the module docstring)
BLOG_LAST_BLOCK_SCALE = 0.01  # the blog's factor on the last block's N(0, 1) weights


class SeedNet(Model):
    """The blog's 3-block dense residual network.

    Parameters
    ----------
    num_classes : int
        Must be 10 unless ``widths`` is given.
    in_features : int
        784 for 28x28 inputs (any (N, ...) input is flattened).
    widths : sequence of (in, hidden, out)
    p_last : float
        Stochastic depth on the arctan branches; 1.0 (default) keeps every block, as the blog.
    init : {"default", "blog"}
        Weight initialisation (see the module docstring); ``"blog"`` is the blog's.
    rule, mode, scaling, device, dtype, seed
        As :class:`~sdnet.models.ResNet`.
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_features: int = 784,
        widths: Any = SEEDNET_WIDTHS,
        p_last: float = 1.0,
        init: str = "default",
        rule: str = "linear",
        mode: str = "batch",
        scaling: str = "paper",
        device: Any = "cpu",
        dtype: str = "float32",
        seed: int = 0,
    ) -> None:
        super().__init__(device=device, dtype=dtype, seed=seed)
        if init not in INITS:
            raise ValueError(f"unknown SeedNet init {init!r}: use one of {', '.join(INITS)}")
        widths = _checked_widths(widths, in_features, num_classes)
        self.config = dict(
            name="seednet",
            num_classes=num_classes,
            in_features=in_features,
            widths=[list(w) for w in widths],
            p_last=p_last,
            init=init,
            rule=rule,
            mode=mode,
            scaling=scaling,
            dtype=dtype,
            seed=seed,
        )
        kw: dict[str, Any] = dict(backend=self.backend, dtype=dtype, rng=self.init_rng, bias=False)
        survival = survival_probabilities(len(widths), p_last, rule)
        self.stem = None
        self.head = None
        self.blocks = []
        for i, dims in enumerate(widths):
            block = _seednet_block(dims, kw, survival=survival[i], mode=mode, scaling=scaling)
            self.blocks.append(self.child(f"block{i + 1}", block))
        if init == "blog":
            self._blog_init()

    def _blog_init(self) -> None:
        """Every weight N(0, 1), the last block's times 0.01 (the blog's initialisation)."""
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            scale = BLOG_LAST_BLOCK_SCALE if i == last else 1.0
            params = dict(block.named_parameters())
            for name in ("wa", "wb", "wh"):
                param = params[f"{name}.weight"]
                w = self.init_rng.standard_normal(tuple(param.value.shape)) * scale  # (out, in)
                param.value = self.backend.asarray(w, self.dtype)


def _checked_widths(widths: Any, in_features: int, num_classes: int) -> list[tuple[int, ...]]:
    """``widths`` as tuples, checked to map ``in_features`` to ``num_classes`` and to chain."""
    widths = [tuple(w) for w in widths]
    if widths[0][0] != in_features or widths[-1][2] != num_classes:
        raise ValueError(
            f"SeedNet widths {widths} do not map {in_features} inputs to {num_classes} classes"
        )
    for (_, _, out), (nxt, _, _) in zip(widths, widths[1:], strict=False):
        if out != nxt:
            raise ValueError(f"SeedNet widths do not chain: {widths}")
    return widths


def _seednet_block(
    dims: tuple[int, ...], kw: dict[str, Any], *, survival: float, mode: str, scaling: str
) -> ResidualBlock:
    """``relu(arctan(x Wa^T) Wb^T + tanh(x Wh^T))`` for ``dims = (in, hidden, out)``; the
    weights are drawn in the order Wa, Wb, Wh."""
    d_in, d_hid, d_out = dims
    branch = Sequential(
        ("wa", Linear(d_in, d_hid, **kw)),
        ("arctan", Arctan()),
        ("wb", Linear(d_hid, d_out, **kw)),
    )
    short = Sequential(("wh", Linear(d_in, d_out, **kw)), ("tanh", Tanh()))
    return ResidualBlock(
        branch, short, survival=survival, mode=mode, scaling=scaling, merge_shortcut=True
    )


def _data_options(shape: tuple[int, ...]) -> dict[str, Any]:
    if math.prod(shape) != SEEDNET_WIDTHS[0][0]:
        raise ValueError(f"seednet takes 28x28 images ({SEEDNET_WIDTHS[0][0]} inputs), not {shape}")
    return {}


def state_size(config: dict[str, Any]) -> int:
    """Values in every weight of ``SeedNet(**config)`` (no buffers), without building it."""
    widths = with_defaults(SeedNet, config)["widths"]
    return sum(h * i + o * h + o * i for i, h, o in widths)


def activation_size(config: dict[str, Any], image_hw: tuple[int, int]) -> int:
    """Values a training forward pass of one image through ``SeedNet(**config)`` keeps, every
    block computed: per block (in, hidden, out), the hidden layer's output and its arctan, and
    the output layer's (a lower bound)."""
    widths = with_defaults(SeedNet, config)["widths"]
    return sum(2 * h + o for _, h, o in widths)


def _build(**kwargs: Any) -> SeedNet:
    kwargs.pop("in_channels", None)  # SeedNet flattens whatever it gets
    return SeedNet(**kwargs)


FAMILY = ModelFamily(
    title="SeedNet",
    name="seednet",
    pattern="seednet",
    usage="seednet",
    listed=("seednet",),
    parse=lambda m: {},
    build=_build,
    shape_options=("init",),
    small=lambda options: True,  # three blocks: as the small ResNets, constant depth by default
    data_options=_data_options,
    state_size=state_size,
    activation_size=activation_size,
    input_shape=lambda config: (config["in_features"],),
    torch_class="SDSeedNet",
    torch_options=lambda config: {"widths": config["widths"]},
)
