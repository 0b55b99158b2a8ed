"""Stochastic depth: the survival schedule and the gated residual block.

A block computes ``y = post(shortcut(x) + g * branch(x))``. The gate ``g`` is drawn on the host
before the forward pass.

Choices, where the paper, timm and torchvision differ
-----------------------------------------------------
* **Schedule** (``rule``). ``"linear"`` (paper, default): ``p_l = 1 - (l / L)(1 - p_L)`` for
  ``l = 1..L``, so even the first block may be dropped. ``"uniform"``: ``p_l = p_L``.
  ``"timm"``: ``p_l = 1 - (l - 1) / (L - 1) (1 - p_L)`` (timm's ``linspace`` drop-path rates,
  also torchvision's ConvNeXt/Swin), so the first block always survives.
* **Mode**. ``"batch"`` (paper, default): one gate per block per mini-batch; a closed gate skips
  the branch entirely: no forward, no backward, no parameter gradient, no batch-norm statistics
  update. ``"row"`` (timm/torchvision): one gate per sample; the branch always runs (some rows
  survive), and is multiplied by the 0/1 mask. ``"subset"`` (sdnet's): one gate per sample,
  and the branch runs on the samples that keep it only (:mod:`sdnet.models.subset`), so it
  saves compute like the batch mode.
* **Scaling**. ``"paper"`` (default): no scaling in training; at evaluation the branch is
  multiplied by ``p_l`` (its expected gate). ``"inverted"`` (timm/torchvision): divide the
  surviving branch by ``p_l`` in training; identity at evaluation.

Backward (``z = s + c * b`` with ``c`` = gate x scale, ``y = relu(z)``)::

    dz = dy * [z > 0]
    dx = shortcut_backprop(dz) + (c != 0) * branch_backprop(c * dz)
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sdnet._array_api import device, namespace
from sdnet.functional import add_relu, relu, relu_backward
from sdnet.layers.base import Backprop, Layer
from sdnet.models.subset import SubsetGate, gather, scatter

__all__ = [
    "survival_probabilities",
    "normalize_gate",
    "RowGate",
    "ResidualBlock",
    "RULES",
    "MODES",
    "SCALINGS",
]

RULES = ("linear", "uniform", "timm")
MODES = ("batch", "row", "subset")
PER_SAMPLE = ("row", "subset")  # the modes with one gate per sample
SCALINGS = ("paper", "inverted")


def survival_probabilities(
    num_blocks: int, p_last: float = 0.5, rule: str = "linear"
) -> list[float]:
    """Survival probability of each of ``num_blocks`` residual blocks, first to last.

    Parameters
    ----------
    num_blocks : int
        L, the number of residual blocks.
    p_last : float
        p_L in (0, 1]; 1 means constant depth.
    rule : {"linear", "uniform", "timm"}
        See the module docstring.
    """
    if not 0.0 < p_last <= 1.0:
        raise ValueError(f"p_last must be in (0, 1], got {p_last}")
    if rule not in RULES:
        raise ValueError(f"unknown survival rule {rule!r}: use one of {RULES}")
    n = num_blocks
    if rule == "linear":
        return [1.0 - (l / n) * (1.0 - p_last) for l in range(1, n + 1)]
    if rule == "uniform":
        return [float(p_last)] * n
    if n == 1:
        return [float(p_last)]
    return [1.0 - ((l - 1) / (n - 1)) * (1.0 - p_last) for l in range(1, n + 1)]


class RowGate(NamedTuple):
    """A row-mode gate prepared by the model: the host gates and, on the device, what
    multiplies the branch (gate x scale per sample, a row of one array made for every block
    of the pass with a single host-to-device copy)."""

    host: list[bool]  # (N,) one gate per sample
    coef: Any  # (N,) array of the model's dtype on its device


def normalize_gate(
    gate: Any, mode: str, batch_size: int
) -> bool | list[bool] | RowGate | SubsetGate:
    """One block's training gate, checked: a ``bool`` (the whole batch) or, in row mode, a list
    of ``batch_size`` bools (one per sample). Read on the host: gates never come from a device.

    Raises
    ------
    ValueError
        Per-sample gates outside row mode, or a per-sample gate of the wrong length.
    """
    if isinstance(gate, (RowGate, SubsetGate)):
        return gate
    if isinstance(gate, bool) or getattr(gate, "shape", None) == ():  # Python or 0-d bool
        return bool(gate)
    if mode not in PER_SAMPLE:
        raise ValueError(
            "in mode='batch' each gate is one bool; per-sample gates need mode='row' or 'subset'"
        )
    host = [bool(g) for g in gate]
    if len(host) != batch_size:
        raise ValueError(f"row gates must have {batch_size} entries, got {len(host)}")
    return host


class ResidualBlock(Layer):
    """``post(shortcut(x) + gate * branch(x))`` with a stochastic-depth gate.

    Parameters
    ----------
    branch : Layer
        The residual branch (conv-BN-ReLU-conv-BN in a ResNet).
    shortcut : Layer or None
        ``None`` is the identity.
    survival : float
        p_l, this block's survival probability.
    mode, scaling : str
        See the module docstring.
    post_relu : bool
        Apply ReLU after the sum (ResNet and SeedNet both do).
    merge_shortcut : bool
        Name the shortcut's state like the branch's, without a ``shortcut.`` prefix (SeedNet).
        The branch's names are always merged into the block's (``layer1.0.conv1.weight``).
    """

    def __init__(
        self,
        branch: Layer,
        shortcut: Layer | None = None,
        *,
        survival: float = 1.0,
        mode: str = "batch",
        scaling: str = "paper",
        post_relu: bool = True,
        merge_shortcut: bool = False,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown drop mode {mode!r}: use one of {MODES}")
        if scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {scaling!r}: use one of {SCALINGS}")
        if not 0.0 < survival <= 1.0:
            raise ValueError(f"survival probability must be in (0, 1], got {survival}")
        self.branch = self.child("branch", branch, merge=True)
        self.shortcut = None
        if shortcut is not None:
            self.shortcut = self.child("shortcut", shortcut, merge=merge_shortcut)
        self.survival, self.mode, self.scaling, self.post_relu = survival, mode, scaling, post_relu

    def forward(
        self, x: Any, *, train: bool, gate: Any = True, need_dx: bool = True
    ) -> tuple[Any, Backprop]:
        """``gate``: a bool (whole batch) or, in row mode, a host sequence of N bools."""
        skip: dict[str, Any] = {} if need_dx else {"need_dx": False}  # see layers.chain
        if self.shortcut is not None:
            s, s_back = self.shortcut(x, train=train, **skip)
        else:
            s, s_back = x, None
        coef = self._coefficient(x, train, gate)
        if isinstance(coef, SubsetGate):
            z, b_back = self._subset_branch(x, s, coef, skip)
            coef = 1.0  # the branch's gradient path applies its own scale
        elif coef is None:
            z, b_back = s, None
        else:
            b, b_back = self.branch(x, train=train, **skip)
            _check_shapes(b, s, x)
            z = b if _is_one(coef) else coef * b
            if self.post_relu:  # the sum and the ReLU in one pass where the backend has one
                y, y_saved = add_relu(s, z)
                return y, self._backprop(s_back, b_back, coef, y_saved, need_dx)
            z = s + z
        y, y_saved = relu(z) if self.post_relu else (z, None)
        return y, self._backprop(s_back, b_back, coef, y_saved, need_dx)

    def _backprop(
        self, s_back: Any, b_back: Any, coef: Any, y_saved: Any, need_dx: bool
    ) -> Backprop:
        """``dy -> dx`` of the block (see the module docstring)."""

        def backprop(dy: Any) -> Any:
            dz = relu_backward(dy, y_saved) if self.post_relu else dy
            dx = s_back(dz) if s_back is not None else (dz if need_dx else None)
            if b_back is not None:
                db = b_back(dz if _is_one(coef) else coef * dz)
                dx = None if dx is None else dx + db
            return dx

        return backprop

    def _subset_branch(
        self, x: Any, s: Any, g: SubsetGate, skip: dict[str, Any]
    ) -> tuple[Any, Backprop]:
        """``s + scatter(c * branch(x[kept]))`` and its backprop ``dz -> dx`` contribution."""
        inv = 1.0 / self.survival if self.scaling == "inverted" else 1.0
        b, back = self.branch(gather(x, g.idx), train=True, **skip)  # (M, ...)
        full = scatter(b if inv == 1.0 else inv * b, g.pos)  # (N, ...)
        _check_shapes(full, s, x)

        def backprop(dz: Any) -> Any:
            d = gather(dz, g.idx)  # (M, ...)
            dxs = back(d if inv == 1.0 else inv * d)
            return None if dxs is None else scatter(dxs, g.pos)

        return s + full, backprop

    def _coefficient(self, x: Any, train: bool, gate: Any) -> Any:
        """What multiplies the branch: a float, an (N, 1, ...) array (row mode), the samples to
        run it on (subset mode), or ``None`` when the branch is not computed at all."""
        if not train:
            return self.survival if self.scaling == "paper" else 1.0
        inv = 1.0 / self.survival if self.scaling == "inverted" else 1.0
        g = normalize_gate(gate, self.mode, x.shape[0])  # decided on the host: no device sync
        if isinstance(g, bool):
            return inv if g else None
        if isinstance(g, SubsetGate):
            return g
        host = g.host if isinstance(g, RowGate) else g
        if not any(host):
            return None
        if self.mode == "subset":  # every sample keeps the branch: the whole batch, no gather
            return inv
        xp = namespace(x)
        if isinstance(g, RowGate):
            coef = g.coef  # (N,), prepared with the other blocks' (one copy for the pass)
        else:
            coef = xp.asarray([inv if k else 0.0 for k in host], dtype=x.dtype, device=device(x))
        return xp.reshape(coef, (-1,) + (1,) * (x.ndim - 1))  # (N, 1[, 1, 1])


def _check_shapes(b: Any, s: Any, x: Any) -> None:
    if tuple(b.shape) != tuple(s.shape):
        raise ValueError(
            f"residual branch output {tuple(b.shape)} does not match the shortcut's "
            f"{tuple(s.shape)} for input {tuple(x.shape)}"
        )


def _is_one(c: Any) -> bool:
    return isinstance(c, float) and c == 1.0
