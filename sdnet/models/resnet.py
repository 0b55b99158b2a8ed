"""The paper's CIFAR ResNets of depth 6n+2, every residual block gated by stochastic depth.

Layout (He et al. 2016, section 4.2; Huang et al. 2016)::

    conv1 3x3 (in -> 16w), bn1, relu                          (N, 16w, H, W)
    layer1: n blocks, 16w channels, stride 1                  (N, 16w, H, W)
    layer2: n blocks, 32w channels, first block stride 2      (N, 32w, H/2, W/2)
    layer3: n blocks, 64w channels, first block stride 2      (N, 64w, H/4, W/4)
    global average pool, fc (64w -> num_classes)              (N, num_classes)

A block's branch is conv3x3(stride)-BN-ReLU-conv3x3-BN; the sum with the shortcut goes through
ReLU. Downsampling shortcuts are "A" (average pool with stride 2, zero channels appended; no
parameters; the default) or "B" (1x1 conv with stride 2 + BN). State names follow the common
PyTorch CIFAR ResNet (``layer2.0.conv1.weight``, ``layer2.0.shortcut.0.weight`` ...).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from sdnet.layers import BatchNorm, Conv2d, GlobalAvgPool, Linear, ReLU, Sequential, ShortcutA
from sdnet.models.base import Model
from sdnet.models.family import ModelFamily, with_defaults
from sdnet.models.stochastic_depth import ResidualBlock, survival_probabilities

__all__ = ["ResNet", "RESNET_DEPTHS", "SHORTCUTS", "FAMILY", "blocks_per_stage", "stage_layout"]

RESNET_DEPTHS = (8, 14, 20, 32, 44, 56, 110, 1202)  # any 6n+2 builds; these are listed
SHORTCUTS = ("A", "B")
SMALL_BELOW = 20  # resnet8 and resnet14 (one or two blocks per stage) are the small networks


def blocks_per_stage(depth: Any) -> int:
    """n for a ResNet of depth 6n + 2 (the paper's rule); ``ValueError`` for other depths."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"ResNet depth must be 6n+2 with n >= 1: 8, 14, 20, 32, 44, 56, 110 ..., got {depth}"
        )
    return (depth - 2) // 6


class Stage(NamedTuple):
    """One stage: ``blocks`` residual blocks; the first maps ``c_in`` to ``c_out`` with
    ``stride``, the others keep ``c_out`` channels at stride 1."""

    c_in: int
    c_out: int
    stride: int
    blocks: int


def stage_layout(depth: int, width: int = 1) -> list[Stage]:
    """The three stages of ResNet-``depth`` (16w, 32w, 64w channels)."""
    n, c = blocks_per_stage(depth), 16 * width
    return [Stage(c, c, 1, n), Stage(c, 2 * c, 2, n), Stage(2 * c, 4 * c, 2, n)]


class ResNet(Model):
    """ResNet-(6n+2) with stochastic depth.

    Parameters
    ----------
    depth : int
        6n + 2 (8, 20, 32, 44, 56, 110, 1202 ...); n blocks per stage, L = 3n blocks.
    num_classes, in_channels : int
    width : int
        Channel multiplier (16w, 32w, 64w).
    stem_stride : {1, 2}
        Stride of the first convolution. 2 halves every feature map (a quarter of the
        compute): small, fast networks for 28x28 digits.
    shortcut : {"A", "B"}
    p_last : float
        Survival probability of the last block, in (0, 1]; 1 = constant depth.
    rule, mode, scaling : str
        See :mod:`sdnet.models.stochastic_depth` (defaults: the paper).
    device : str or Backend
    dtype : {"float32", "float64"}
    seed : int
        Seeds the host init and gate streams.
    """

    def __init__(
        self,
        depth: int = 20,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 1,
        stem_stride: int = 1,
        shortcut: str = "A",
        p_last: float = 0.5,
        rule: str = "linear",
        mode: str = "batch",
        scaling: str = "paper",
        device: Any = "cpu",
        dtype: str = "float32",
        seed: int = 0,
    ) -> None:
        super().__init__(device=device, dtype=dtype, seed=seed)
        _check(depth, shortcut, width, num_classes, in_channels, stem_stride)
        self.config = dict(
            name=f"resnet{depth}", num_classes=num_classes, in_channels=in_channels, width=width,
            stem_stride=stem_stride, shortcut=shortcut, p_last=p_last, rule=rule, mode=mode,
            scaling=scaling, dtype=dtype, seed=seed,
        )  # fmt: skip
        layout = stage_layout(depth, width)
        kw: dict[str, Any] = dict(backend=self.backend, dtype=dtype, rng=self.init_rng)
        c = layout[0].c_in
        self.stem = self.child(
            "stem",
            Sequential(
                ("conv1", Conv2d(in_channels, c, 3, stride=stem_stride, padding=1, **kw)),
                ("bn1", BatchNorm(c, backend=self.backend, dtype=dtype)),
                ("relu", ReLU()),
            ),
            merge=True,
        )
        survival = survival_probabilities(3 * layout[0].blocks, p_last, rule)
        self.blocks = []
        for k, stage in enumerate(layout):
            blocks = [
                self._block(stage, i, survival, shortcut, mode, scaling, kw)
                for i in range(stage.blocks)
            ]
            self.blocks += blocks
            self.child(f"layer{k + 1}", Sequential(*blocks))
        fc = Linear(layout[-1].c_out, num_classes, **kw)
        self.head = self.child(
            "head", Sequential(("pool", GlobalAvgPool()), ("fc", fc)), merge=True
        )

    def _block(
        self,
        stage: Stage,
        i: int,
        survival: list[float],
        shortcut: str,
        mode: str,
        scaling: str,
        kw: dict[str, Any],
    ) -> ResidualBlock:
        """Block ``i`` of ``stage`` (the first one changes channels and stride)."""
        c_in, stride = (stage.c_in, stage.stride) if i == 0 else (stage.c_out, 1)
        return ResidualBlock(
            _branch(c_in, stage.c_out, stride, kw),
            _shortcut(c_in, stage.c_out, stride, shortcut, kw),
            survival=survival[len(self.blocks) + i],
            mode=mode,
            scaling=scaling,
        )


def _check(
    depth: int, shortcut: str, width: int, num_classes: int, in_channels: int, stem_stride: int
) -> None:
    blocks_per_stage(depth)
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
    if width < 1 or num_classes < 1 or in_channels < 1:
        raise ValueError("width, num_classes and in_channels must be positive")
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")


def _branch(c_in: int, c_out: int, stride: int, kw: dict[str, Any]) -> Sequential:
    """conv3x3(stride)-BN-ReLU-conv3x3-BN (``kw``: backend, dtype and the init stream)."""
    bn = {k: kw[k] for k in ("backend", "dtype")}
    return Sequential(
        ("conv1", Conv2d(c_in, c_out, 3, stride=stride, padding=1, **kw)),
        ("bn1", BatchNorm(c_out, **bn)),
        ("relu", ReLU()),
        ("conv2", Conv2d(c_out, c_out, 3, padding=1, **kw)),
        ("bn2", BatchNorm(c_out, **bn)),
    )


def _shortcut(c_in: int, c_out: int, stride: int, kind: str, kw: dict[str, Any]) -> Any:
    """``None`` (identity) unless the block changes the shape: option A or B."""
    if stride == 1 and c_in == c_out:
        return None
    if kind == "A":
        return ShortcutA(stride, c_out)
    conv = Conv2d(c_in, c_out, 1, stride=stride, **kw)
    return Sequential(conv, BatchNorm(c_out, backend=kw["backend"], dtype=kw["dtype"]))


def _bn_size(c: int) -> int:
    return 4 * c + 1  # weight, bias, running mean and variance, num_batches_tracked


def state_size(config: dict[str, Any]) -> int:
    """Values in every parameter and buffer of ``ResNet(**config)``, without building it."""
    config = with_defaults(ResNet, config)
    depth = _depth(config)
    w, c_img, k = config["width"], config["in_channels"], config["num_classes"]
    layout = stage_layout(depth, w)
    c = layout[0].c_in
    total = 9 * c * c_img + _bn_size(c) + 4 * c * k + k  # stem conv + bn, head fc
    for s in layout:
        total += s.blocks * (18 * s.c_out * s.c_out + 2 * _bn_size(s.c_out))
        total -= 9 * s.c_out * (s.c_out - s.c_in)  # the first block's conv1 has c_in inputs
        if config["shortcut"] == "B" and (s.stride != 1 or s.c_in != s.c_out):
            total += s.c_out * s.c_in + _bn_size(s.c_out)
    return total


def activation_size(config: dict[str, Any], image_hw: tuple[int, int]) -> int:
    """Values a training forward pass of one ``image_hw`` image through ``ResNet(**config)``
    keeps, every block computed: the stem's convolution, batch-norm and ReLU outputs, and in
    each block those of conv1, bn1, relu, conv2 and bn2 (a 3x3 convolution with padding 1 and
    stride s gives ceil(H/s) x ceil(W/s)). A lower bound: the convolutions' work buffers,
    the shortcuts and the sums are not counted."""
    config = with_defaults(ResNet, config)
    layout = stage_layout(_depth(config), config["width"])
    s = config["stem_stride"]
    h, w = -(-image_hw[0] // s), -(-image_hw[1] // s)
    total = 3 * layout[0].c_in * h * w
    for stage in layout:
        h, w = -(-h // stage.stride), -(-w // stage.stride)
        total += stage.blocks * 5 * stage.c_out * h * w
    return total


_PATTERN = r"resnet-?(\d+)"


def _parse(m: re.Match[str]) -> dict[str, Any]:
    depth = int(m.group(1))
    blocks_per_stage(depth)  # refuse other depths here, with the rule in the message
    return {"depth": depth}


def _depth(config: dict[str, Any]) -> int:
    """The depth a configuration's name gives (``ValueError`` if it is not a ResNet's)."""
    m = re.fullmatch(_PATTERN, str(config["name"]).strip().lower())
    if not m:
        raise ValueError(f"{config['name']!r} is not a ResNet")
    return int(_parse(m)["depth"])


FAMILY = ModelFamily(
    title="ResNet",
    name="resnet",
    pattern=_PATTERN,
    usage="resnet<6n+2> (e.g. resnet20, resnet110)",
    listed=tuple(f"resnet{d}" for d in RESNET_DEPTHS),
    parse=_parse,
    build=ResNet,
    shape_options=("width", "stem_stride", "shortcut"),
    small=lambda options: options["depth"] < SMALL_BELOW,
    data_options=lambda shape: {"in_channels": int(shape[0])},
    state_size=state_size,
    activation_size=activation_size,
    input_shape=lambda config: (config["in_channels"], "height", "width"),
    torch_class="SDResNet",
    torch_options=lambda config: dict(
        blocks_per_stage=blocks_per_stage(_depth(config)),
        **{
            k: config[k] for k in ("num_classes", "in_channels", "width", "stem_stride", "shortcut")
        },
    ),
)
