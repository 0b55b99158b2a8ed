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

from typing import Any

from sdnet.layers import BatchNorm, Conv2d, GlobalAvgPool, Linear, ReLU, Sequential, ShortcutA
from sdnet.models.base import Model
from sdnet.models.stochastic_depth import ResidualBlock, survival_probabilities

__all__ = ["ResNet", "RESNET_DEPTHS"]

RESNET_DEPTHS = (8, 14, 20, 32, 44, 56, 110, 1202)  # any 6n+2 builds; these are listed


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
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n+2 with n >= 1 (8, 20, 32, ...), got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        if width < 1 or num_classes < 1 or in_channels < 1:
            raise ValueError("width, num_classes and in_channels must be positive")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
        self.config = dict(
            name=f"resnet{depth}",
            num_classes=num_classes,
            in_channels=in_channels,
            width=width,
            stem_stride=stem_stride,
            shortcut=shortcut,
            p_last=p_last,
            rule=rule,
            mode=mode,
            scaling=scaling,
            dtype=dtype,
            seed=seed,
        )
        n = (depth - 2) // 6
        kw: dict[str, Any] = dict(backend=self.backend, dtype=dtype)
        rng = self.init_rng
        c = 16 * width
        self.stem = self.child(
            "stem",
            Sequential(
                ("conv1", Conv2d(in_channels, c, 3, stride=stem_stride, padding=1, rng=rng, **kw)),
                ("bn1", BatchNorm(c, **kw)),
                ("relu", ReLU()),
            ),
            merge=True,
        )
        survival = survival_probabilities(3 * n, p_last, rule)
        self.blocks = []
        c_in = c
        for stage in range(3):
            c_out = c * 2**stage
            stage_blocks = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                branch = Sequential(
                    ("conv1", Conv2d(c_in, c_out, 3, stride=stride, padding=1, rng=rng, **kw)),
                    ("bn1", BatchNorm(c_out, **kw)),
                    ("relu", ReLU()),
                    ("conv2", Conv2d(c_out, c_out, 3, padding=1, rng=rng, **kw)),
                    ("bn2", BatchNorm(c_out, **kw)),
                )
                short = None
                if stride != 1 or c_in != c_out:
                    short = (
                        ShortcutA(stride, c_out)
                        if shortcut == "A"
                        else Sequential(
                            Conv2d(c_in, c_out, 1, stride=stride, rng=rng, **kw),
                            BatchNorm(c_out, **kw),
                        )
                    )
                block = ResidualBlock(
                    branch, short, survival=survival[len(self.blocks)], mode=mode, scaling=scaling
                )
                self.blocks.append(block)
                stage_blocks.append(block)
                c_in = c_out
            self.child(f"layer{stage + 1}", Sequential(*stage_blocks))
        self.head = self.child(
            "head",
            Sequential(
                ("pool", GlobalAvgPool()),
                ("fc", Linear(c_in, num_classes, rng=rng, **kw)),
            ),
            merge=True,
        )
