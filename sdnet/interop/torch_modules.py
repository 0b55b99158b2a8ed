"""PyTorch definitions of sdnet's models: ``torch.nn.Module`` classes with sdnet's state names.

This file imports only ``torch`` (never sdnet), so it can be copied into a PyTorch project on
its own and loaded with a state dict exported by :func:`sdnet.interop.torch_state_dict`.
:mod:`sdnet.interop.torch` imports it only when called, so sdnet itself never needs PyTorch.

Stochastic depth, as in sdnet (``survival`` holds p_l for each block, first to last):

* evaluation (``module.eval()``): every branch runs, multiplied by p_l (``scaling="paper"``)
  or by 1 (``"inverted"``);
* training, ``mode="batch"``: one gate per block per forward pass; a closed gate skips the
  branch; a kept branch is multiplied by 1 (paper) or 1/p_l (inverted);
* training, ``mode="row"``: one gate per sample multiplying the branch;
* training, ``mode="subset"``: one gate per sample; the branch runs on the kept samples only
  and its output is added to their rows.

Gates are drawn with ``torch.rand`` from ``module.generator`` (a ``torch.Generator``; the
global PyTorch generator when ``None``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ShortcutA", "BasicBlock", "SDResNet", "SeedBlock", "SDSeedNet"]


class _Gated(nn.Module):
    """``shortcut(x) + c * branch(x)`` with the stochastic-depth coefficient ``c``."""

    survival: float
    mode: str
    scaling: str
    generator: torch.Generator | None

    def _sum(self, s: torch.Tensor, x: torch.Tensor, branch: Callable[[Any], Any]) -> torch.Tensor:
        if not self.training:
            return s + (self.survival if self.scaling == "paper" else 1.0) * branch(x)
        inv = 1.0 / self.survival if self.scaling == "inverted" else 1.0
        if self.mode == "batch":
            keep = bool(torch.rand((), generator=self.generator) < self.survival)
            return s + inv * branch(x) if keep else s
        mask = torch.rand((x.shape[0],), generator=self.generator) < self.survival  # (N,)
        if not bool(mask.any()):
            return s
        if self.mode == "subset" and not bool(mask.all()):
            kept = torch.nonzero(mask).reshape(-1).to(x.device)  # (M,)
            return s.index_add(0, kept, inv * branch(x.index_select(0, kept)))
        m = mask.to(device=x.device, dtype=x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
        return s + (m * inv) * branch(x)


class ShortcutA(nn.Module):
    """Option A: average pooling (window = stride, partial edge windows kept), then zero
    channels appended up to ``out_channels``."""

    def __init__(self, stride: int, out_channels: int) -> None:
        super().__init__()
        self.stride, self.out_channels = stride, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:  # (N, C, ceil(H/s), ceil(W/s))
            x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
        extra = self.out_channels - x.shape[1]
        return F.pad(x, (0, 0, 0, 0, 0, extra))  # (N, C_out, ceil(H/s), ceil(W/s))


class BasicBlock(_Gated):
    """``relu(shortcut(x) + c * bn2(conv2(relu(bn1(conv1(x))))))``."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        *,
        shortcut: str = "A",
        survival: float = 1.0,
        mode: str = "batch",
        scaling: str = "paper",
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = (
                ShortcutA(stride, c_out)
                if shortcut == "A"
                else nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
                )
            )
        self.survival, self.mode, self.scaling = survival, mode, scaling
        self.generator = None

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self._sum(self.shortcut(x), x, self.branch))


class SDResNet(nn.Module):
    """CIFAR ResNet with ``blocks_per_stage`` = n blocks in each of its three stages (depth
    6n + 2) and stochastic depth; state names as sdnet's ``ResNet``."""

    def __init__(
        self,
        blocks_per_stage: int = 3,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 1,
        stem_stride: int = 1,
        shortcut: str = "A",
        survival: Sequence[float] | None = None,
        mode: str = "batch",
        scaling: str = "paper",
    ) -> None:
        super().__init__()
        n = blocks_per_stage
        if n < 1:
            raise ValueError(f"blocks_per_stage must be at least 1, got {n}")
        survival = [1.0] * (3 * n) if survival is None else list(survival)
        if len(survival) != 3 * n:
            raise ValueError(f"need {3 * n} survival probabilities, got {len(survival)}")
        c = 16 * width
        self.conv1 = nn.Conv2d(in_channels, c, 3, stride=stem_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        c_in, k = c, 0
        for stage in range(3):
            c_out = c * 2**stage
            blocks = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(
                    BasicBlock(
                        c_in,
                        c_out,
                        stride,
                        shortcut=shortcut,
                        survival=survival[k],
                        mode=mode,
                        scaling=scaling,
                    )
                )
                c_in, k = c_out, k + 1
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(c_in, num_classes)
        self.layer1: nn.Module
        self.layer2: nn.Module
        self.layer3: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (N, 16w, H/s, W/s)
        for stage in (self.layer1, self.layer2, self.layer3):
            x = stage(x)  # (N, 64w, H/4s, W/4s) after the last
        return self.fc(x.mean(dim=(2, 3)))  # (N, num_classes)


class SeedBlock(_Gated):
    """``relu(tanh(x Wh^T) + c * arctan(x Wa^T) Wb^T)``, no biases."""

    def __init__(
        self,
        d_in: int,
        d_hid: int,
        d_out: int,
        *,
        survival: float = 1.0,
        mode: str = "batch",
        scaling: str = "paper",
    ) -> None:
        super().__init__()
        self.wa = nn.Linear(d_in, d_hid, bias=False)
        self.wb = nn.Linear(d_hid, d_out, bias=False)
        self.wh = nn.Linear(d_in, d_out, bias=False)
        self.survival, self.mode, self.scaling = survival, mode, scaling
        self.generator = None

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.wb(torch.atan(self.wa(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self._sum(torch.tanh(self.wh(x)), x, self.branch))


class SDSeedNet(nn.Module):
    """SeedNet: dense residual blocks on flattened inputs; state names as sdnet's ``SeedNet``."""

    def __init__(
        self,
        widths: Sequence[Sequence[int]] = ((784, 1024, 824), (824, 512, 256), (256, 128, 10)),
        *,
        survival: Sequence[float] | None = None,
        mode: str = "batch",
        scaling: str = "paper",
    ) -> None:
        super().__init__()
        survival = [1.0] * len(widths) if survival is None else list(survival)
        for i, (d_in, d_hid, d_out) in enumerate(widths):
            block = SeedBlock(d_in, d_hid, d_out, survival=survival[i], mode=mode, scaling=scaling)
            self.add_module(f"block{i + 1}", block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)  # (N, in_features)
        for block in self.children():
            x = block(x)
        return x
