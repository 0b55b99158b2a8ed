"""An independent PyTorch definition of sdnet's models, for the tests (not a test module).

Written from the architecture description with ``torch.nn`` modules only; it does not import
sdnet. Module names mirror the PyTorch CIFAR ResNet convention sdnet uses for its state dicts,
so ``TorchResNet.load_state_dict(<sdnet state dict as tensors>, strict=True)`` works.

Stochastic depth (Huang et al. 2016) as a forward argument:

* ``gates``: one entry per residual block. A bool (whole batch; a closed gate means the block is
  the shortcut only, its branch is not run) or, in row mode, a sequence of N bools (per-sample
  mask multiplying the branch; the branch is not run when no sample keeps it).
* training: the kept branch is multiplied by 1 (``scaling="paper"``) or 1/p (``"inverted"``).
* evaluation (``module.eval()``): every branch runs, times p (paper) or 1 (inverted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "schedule",
    "TorchResNet",
    "TorchSeedNet",
    "load_numpy_state",
    "numpy_state",
]


def schedule(num_blocks: int, p_last: float, rule: str = "linear") -> list[float]:
    """Survival probabilities p_1..p_L (paper linear rule, uniform, timm linspace)."""
    if rule == "linear":
        return [1.0 - (l / num_blocks) * (1.0 - p_last) for l in range(1, num_blocks + 1)]
    if rule == "uniform":
        return [p_last] * num_blocks
    if rule == "timm":
        return [float(v) for v in np.linspace(1.0, p_last, num_blocks)]
    raise ValueError(rule)


def _gated(
    shortcut: torch.Tensor,
    x: torch.Tensor,
    branch: Any,
    gate: Any,
    survival: float,
    scaling: str,
    training: bool,
) -> torch.Tensor:
    """``shortcut + c * branch(x)`` with the stochastic-depth coefficient ``c``."""
    if not training:
        return shortcut + (survival if scaling == "paper" else 1.0) * branch(x)
    inv = 1.0 / survival if scaling == "inverted" else 1.0
    if isinstance(gate, (bool, np.bool_)):
        return shortcut + inv * branch(x) if gate else shortcut
    mask = np.asarray(gate, dtype=bool)
    if mask.shape != (x.shape[0],):
        raise ValueError(f"row gates must have shape ({x.shape[0]},), got {mask.shape}")
    if not mask.any():
        return shortcut
    m = torch.as_tensor(mask, device=x.device).to(x.dtype)
    m = m.reshape((-1,) + (1,) * (x.ndim - 1))
    return shortcut + (m * inv) * branch(x)


class ZeroPadAvgShortcut(nn.Module):
    """Option A: ``avg_pool2d(kernel=stride, ceil_mode=True)`` then zero channels appended after."""

    def __init__(self, stride: int, out_channels: int) -> None:
        super().__init__()
        self.stride, self.out_channels = stride, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, kernel_size=self.stride, stride=self.stride, ceil_mode=True)
        extra = self.out_channels - x.shape[1]
        zeros = x.new_zeros((x.shape[0], extra, x.shape[2], x.shape[3]))
        return torch.cat([x, zeros], dim=1)


class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN branch, shortcut, sum, ReLU."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        shortcut: str,
        survival: float,
        scaling: str,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride != 1 or c_in != c_out:
            if shortcut == "A":
                self.shortcut: nn.Module = ZeroPadAvgShortcut(stride, c_out)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
                )
        else:
            self.shortcut = nn.Identity()
        self.survival, self.scaling = survival, scaling

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor, gate: Any = True) -> torch.Tensor:
        z = _gated(
            self.shortcut(x), x, self.branch, gate, self.survival, self.scaling, self.training
        )
        return F.relu(z)


class TorchResNet(nn.Module):
    """CIFAR ResNet-(6n+2) with stochastic depth (He et al. 2016 layout)."""

    def __init__(
        self,
        depth: int = 20,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 1,
        shortcut: str = "A",
        p_last: float = 0.5,
        rule: str = "linear",
        scaling: str = "paper",
    ) -> None:
        super().__init__()
        assert (depth - 2) % 6 == 0
        n = (depth - 2) // 6
        c = 16 * width
        self.conv1 = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        survival = schedule(3 * n, p_last, rule)
        c_in, k = c, 0
        for stage in range(3):
            c_out = c * 2**stage
            blocks = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(c_in, c_out, stride, shortcut, survival[k], scaling))
                c_in, k = c_out, k + 1
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(c_in, num_classes)

    @property
    def blocks(self) -> list[BasicBlock]:
        return [*self.layer1, *self.layer2, *self.layer3]

    def forward(self, x: torch.Tensor, gates: Sequence[Any] | None = None) -> torch.Tensor:
        blocks = self.blocks
        gates = [True] * len(blocks) if gates is None else list(gates)
        assert len(gates) == len(blocks)
        x = F.relu(self.bn1(self.conv1(x)))
        for block, g in zip(blocks, gates, strict=True):
            x = block(x, g)
        x = x.mean(dim=(2, 3))
        return self.fc(x)


class SeedBlock(nn.Module):
    """``relu(arctan(x Wa^T) Wb^T * gate + tanh(x Wh^T))``."""

    def __init__(self, d_in: int, d_hid: int, d_out: int, survival: float, scaling: str) -> None:
        super().__init__()
        self.wa = nn.Linear(d_in, d_hid, bias=False)
        self.wb = nn.Linear(d_hid, d_out, bias=False)
        self.wh = nn.Linear(d_in, d_out, bias=False)
        self.survival, self.scaling = survival, scaling

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.wb(torch.atan(self.wa(x)))

    def forward(self, x: torch.Tensor, gate: Any = True) -> torch.Tensor:
        s = torch.tanh(self.wh(x))
        return F.relu(_gated(s, x, self.branch, gate, self.survival, self.scaling, self.training))


class TorchSeedNet(nn.Module):
    """The three dense residual blocks of the blog network (no biases, no BN)."""

    def __init__(
        self,
        widths: Sequence[Sequence[int]] = ((784, 1024, 824), (824, 512, 256), (256, 128, 10)),
        *,
        p_last: float = 1.0,
        rule: str = "linear",
        scaling: str = "paper",
    ) -> None:
        super().__init__()
        survival = schedule(len(widths), p_last, rule)
        for i, (d_in, d_hid, d_out) in enumerate(widths):
            setattr(self, f"block{i + 1}", SeedBlock(d_in, d_hid, d_out, survival[i], scaling))
        self.num_blocks = len(widths)

    @property
    def blocks(self) -> list[SeedBlock]:
        return [getattr(self, f"block{i + 1}") for i in range(self.num_blocks)]

    def forward(self, x: torch.Tensor, gates: Sequence[Any] | None = None) -> torch.Tensor:
        blocks = self.blocks
        gates = [True] * len(blocks) if gates is None else list(gates)
        x = x.reshape(x.shape[0], -1)
        for block, g in zip(blocks, gates, strict=True):
            x = block(x, g)
        return x


def load_numpy_state(module: nn.Module, state: Mapping[str, Any]) -> None:
    """Load a mapping of host (NumPy) arrays into ``module`` with ``strict=True``."""
    module.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()})


def numpy_state(module: nn.Module) -> dict[str, np.ndarray]:
    """``module.state_dict()`` as host NumPy arrays (copies)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
