"""Stochastic gradient descent on the device, PyTorch's update convention, with parameter groups.

For a parameter ``w`` in a group with learning-rate multiplier ``lr_mult`` and weight decay
``wd``, the step uses ``lr = opt.lr * lr_mult`` and, with the default coupled (L2) decay::

    g   = grad + wd * w                                   (L2 weight decay, coupled)
    buf = momentum * buf + g                              (buf = g on the first step)
    w   = w - lr * (g + momentum * buf if nesterov else buf)

With ``decoupled_weight_decay=True`` the decay is a separate shrink, scaled by the current
``lr`` (PyTorch's AdamW convention, ``param.mul_(1 - lr * weight_decay)``), applied before the
momentum update, which then sees the bare gradient::

    w   = w * (1 - lr * wd)                               (decoupled weight decay)
    g   = grad
    buf = momentum * buf + g
    w   = w - lr * (g + momentum * buf if nesterov else buf)

A parameter whose ``grad`` is ``None`` (its block was dropped this step) is, by default,
updated with a zero gradient, so momentum and weight decay still act on it, as in the paper's
code (Torch7's ``optim.sgd`` on one flat parameter vector whose gradient is zeroed each step).
``skip_missing=True`` freezes it for that step instead (no decay, momentum buffer kept).

Like Torch7's, the update runs on flat arrays: each group's parameters (one flat array per
dtype, :mod:`sdnet.optim.flat`), so that a step is a handful of kernel launches per group.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sdnet._array_api import to_numpy
from sdnet.backends import backend_of
from sdnet.layers.base import Param
from sdnet.optim.flat import FlatSegment, Hyper

__all__ = ["SGD", "ParamGroup", "DROPPED_PARAMS"]

# what happens to the parameters of a dropped block (the training option ``dropped_params``):
# "update" with a zero gradient (the paper's code), or "freeze" (``skip_missing=True``)
DROPPED_PARAMS = ("update", "freeze")

Array = Any
_GROUP_KEYS = {"params", "lr_mult", "weight_decay", "name"}
_STATE_KEYS = (
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "decoupled_weight_decay",
    "skip_missing",
    "groups",
    "buffers",
)


@dataclass
class ParamGroup:
    """Parameters that share a learning-rate multiplier and a weight decay.

    ``names[i]`` is the name of ``params[i]``; the group's learning rate is
    ``opt.lr * lr_mult``.
    """

    name: str
    names: list[str] = field(default_factory=list)
    params: list[Param] = field(default_factory=list)
    lr_mult: float = 1.0
    weight_decay: float = 0.0
    segments: list[FlatSegment] = field(default_factory=list, repr=False)

    def pack(self) -> None:
        """Pack the parameters, one flat array per dtype (in the group's order)."""
        by_dtype: dict[str, list[int]] = {}
        for i, p in enumerate(self.params):
            by_dtype.setdefault(str(p.value.dtype), []).append(i)
        self.segments = [
            FlatSegment([self.names[i] for i in idx], [self.params[i] for i in idx])
            for idx in by_dtype.values()
        ]


class SGD:
    """SGD with momentum, Nesterov, coupled or decoupled weight decay, and parameter groups.

    Parameters
    ----------
    params : iterable of (name, Param) or Param, or list of group dicts
        One group of parameters, or a list of dicts ``{"params": [(name, Param), ...],
        "lr_mult": 1.0, "weight_decay": <default>, "name": "group<i>"}`` (only ``params`` is
        required; see :func:`sdnet.optim.param_groups`). A bare ``Param`` is named
        ``param<i>`` by its position. A parameter may belong to one group only.
    lr : float
        Base learning rate (``opt.lr``; a schedule sets it before each step). A group's
        learning rate is ``opt.lr * lr_mult``.
    momentum : float
    nesterov : bool
    weight_decay : float
        Default weight decay of the groups that do not set their own (resolved at
        construction: the groups keep their value in ``opt.groups[i].weight_decay``).
    decoupled_weight_decay : bool
        ``False`` (default): L2 decay added to the gradient, ``g = grad + wd * w``, as the
        paper's code. ``True``: ``w = w * (1 - lr * wd)`` before the momentum update.
    skip_missing : bool
        Leave parameters without a gradient untouched (no momentum, no decay) for that step.

    Attributes
    ----------
    groups : list of ParamGroup
    params : list of Param
        Every parameter, group by group.
    buffers : dict of str to array or None
        Momentum buffer per parameter name, on the parameter's device (``None`` before the
        first update): views of the flat buffers, read-only in spirit.

    Raises
    ------
    ValueError
        On a negative or zero ``lr``, negative ``momentum``/``weight_decay``/``lr_mult``,
        ``nesterov`` without momentum, an empty group, an unknown group key, or a parameter
        (or a name) that appears twice.
    """

    def __init__(
        self,
        params: Iterable[Any],
        *,
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        skip_missing: bool = False,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        _check_hyper(momentum, nesterov, weight_decay)
        self.lr, self.momentum, self.nesterov = float(lr), float(momentum), bool(nesterov)
        self.weight_decay = float(weight_decay)
        self.decoupled_weight_decay = bool(decoupled_weight_decay)
        self.skip_missing = bool(skip_missing)
        self.groups: list[ParamGroup] = _make_groups(params, self.weight_decay)
        self.params: list[Param] = [p for g in self.groups for p in g.params]
        for group in self.groups:
            group.pack()

    @property
    def segments(self) -> list[FlatSegment]:
        """Every flat segment, group by group."""
        return [s for g in self.groups for s in g.segments]

    @property
    def buffers(self) -> dict[str, Array | None]:
        """Momentum buffer per parameter name (see the class docstring)."""
        out: dict[str, Array | None] = {}
        for seg in self.segments:
            for i, name in enumerate(seg.names):
                has = seg.momentum is not None and seg.has_buffer[i]
                out[name] = seg.view(seg.momentum, i) if has else None
        return out

    # -- the update -------------------------------------------------------------------
    def flat_grads(self) -> list[Array]:
        """This step's gradients, one flat array per segment (:attr:`segments`), zeros for
        parameters without one: what :meth:`step` applies, gathered once (one launch each)."""
        with backend_of(self.params[0].value).activate():
            for seg in self.segments:
                seg.ensure_packed()
            return [seg.gather() for seg in self.segments]

    def step(self, grads: list[Array] | None = None) -> None:
        """Apply one update from the accumulated gradients (``Param.grad``), or from
        ``grads`` gathered by :meth:`flat_grads` since they were accumulated.

        The parameters live on one device (a model's); it is made current for the update.
        """
        grads = self.flat_grads() if grads is None else grads
        flat = iter(grads)
        with backend_of(self.params[0].value).activate():
            for group in self.groups:
                h = Hyper(self.lr * group.lr_mult, group.weight_decay, self.momentum,
                          self.nesterov, self.decoupled_weight_decay)  # fmt: skip
                for seg in group.segments:
                    self._update(seg, next(flat), h)

    def _update(self, seg: FlatSegment, g: Array, h: Hyper) -> None:
        keep = [p.grad is not None for p in seg.params]
        if not self.skip_missing or all(keep):
            seg.update(g, h)
        elif any(keep):  # freeze the parameters of dropped blocks for this step
            seg.update_some(g, h, keep)

    def group_lrs(self) -> dict[str, float]:
        """The learning rate each group uses at the next step: ``{name: opt.lr * lr_mult}``."""
        return {g.name: self.lr * g.lr_mult for g in self.groups}

    # -- state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters (JSON-able) and momentum buffers (host NumPy copies).

        Returns
        -------
        dict
            ``lr``, ``momentum``, ``nesterov``, ``weight_decay``, ``decoupled_weight_decay``,
            ``skip_missing``; ``groups``: a list of ``{"name", "lr_mult", "weight_decay",
            "params": [parameter names in order]}``; ``buffers``: ``{parameter name: numpy
            array}`` for the parameters that have a momentum buffer. Everything but
            ``buffers`` is JSON-able; the buffer keys are the parameter names (valid ``.npz``
            keys).
        """
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
            "decoupled_weight_decay": self.decoupled_weight_decay,
            "skip_missing": self.skip_missing,
            "groups": [
                {
                    "name": g.name,
                    "lr_mult": g.lr_mult,
                    "weight_decay": g.weight_decay,
                    "params": list(g.names),
                }
                for g in self.groups
            ],
            "buffers": {
                name: to_numpy(buf).copy() for name, buf in self.buffers.items() if buf is not None
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore hyperparameters and momentum buffers from :meth:`state_dict`'s output.

        Buffers are created on each parameter's current device with its dtype. The groups
        must hold the same parameter names in the same order, and each buffer must have its
        parameter's shape. Group names are kept as they are in this optimizer.

        Raises
        ------
        ValueError
            Naming the mismatch (missing key, group count, parameter names, buffer shape,
            invalid hyperparameter); nothing is modified in that case.
        """
        saved_groups = self._check_state(state)
        self.lr, self.momentum = float(state["lr"]), float(state["momentum"])
        self.nesterov = bool(state["nesterov"])
        self.weight_decay = float(state["weight_decay"])
        self.decoupled_weight_decay = bool(state["decoupled_weight_decay"])
        self.skip_missing = bool(state["skip_missing"])
        for saved, group in zip(saved_groups, self.groups, strict=True):
            group.lr_mult = float(saved["lr_mult"])
            group.weight_decay = float(saved["weight_decay"])
        with backend_of(self.params[0].value).activate():
            for seg in self.segments:
                _load_buffers(seg, state["buffers"])

    def _check_state(self, state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """Validate an optimizer state against this optimizer; return its groups."""
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise ValueError(f"optimizer state lacks {missing}; expected SGD.state_dict() output")
        saved_groups = list(state["groups"])
        if len(saved_groups) != len(self.groups):
            raise ValueError(
                f"optimizer state has {len(saved_groups)} parameter groups, this optimizer "
                f"{len(self.groups)} ({[g.name for g in self.groups]})"
            )
        for i, (saved, group) in enumerate(zip(saved_groups, self.groups, strict=True)):
            names = list(saved["params"])
            if names != group.names:
                gone = [n for n in group.names if n not in names]
                extra = [n for n in names if n not in group.names]
                what = f"missing {gone}, unexpected {extra}" if gone or extra else "order differs"
                raise ValueError(
                    f"optimizer state group {i} ({group.name!r}): parameter names differ from "
                    f"this optimizer's: {what}"
                )
            _check_hyper(0.0, False, saved["weight_decay"], saved["lr_mult"])
        if float(state["lr"]) < 0:
            raise ValueError(f"optimizer state lr must be >= 0, got {state['lr']}")
        _check_hyper(state["momentum"], state["nesterov"], state["weight_decay"])
        by_name = {n: p for g in self.groups for n, p in zip(g.names, g.params, strict=True)}
        unknown = sorted(set(state["buffers"]) - set(by_name))
        if unknown:
            raise ValueError(f"optimizer state has buffers for unknown parameters {unknown}")
        for name, host in state["buffers"].items():
            shape, want = tuple(getattr(host, "shape", ())), tuple(by_name[name].value.shape)
            if shape != want:
                raise ValueError(
                    f"optimizer state buffer {name!r}: shape {shape} does not match "
                    f"the parameter's {want}"
                )
        return saved_groups

    def __repr__(self) -> str:
        groups = ", ".join(
            f"{g.name}({len(g.params)}, lr_mult={g.lr_mult}, wd={g.weight_decay})"
            for g in self.groups
        )
        return (
            f"SGD(lr={self.lr}, momentum={self.momentum}, nesterov={self.nesterov}, "
            f"decoupled_weight_decay={self.decoupled_weight_decay}, "
            f"skip_missing={self.skip_missing}, groups=[{groups}])"
        )


def _check_hyper(
    momentum: float, nesterov: bool, weight_decay: float, lr_mult: float = 1.0
) -> None:
    if momentum < 0:
        raise ValueError(f"momentum must be >= 0, got {momentum}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if lr_mult < 0:
        raise ValueError(f"lr_mult must be >= 0, got {lr_mult}")
    if nesterov and momentum == 0:
        raise ValueError("nesterov needs momentum > 0")


def _make_groups(params: Iterable[Any], default_wd: float) -> list[ParamGroup]:
    """Parse one iterable of parameters, or a list of group dicts, into ``ParamGroup``s."""
    items = list(params)
    if not items:
        raise ValueError("SGD got no parameters")
    specs: list[Mapping[str, Any]]
    if all(isinstance(it, Mapping) for it in items):
        specs = items
    elif any(isinstance(it, Mapping) for it in items):
        raise TypeError("pass either parameters or a list of group dicts, not a mix")
    else:
        specs = [{"params": items, "name": "default"}]
    groups: list[ParamGroup] = []
    owner: dict[int, tuple[str, str]] = {}  # id(Param) -> (group name, parameter name)
    seen: set[str] = set()
    position = 0
    for i, spec in enumerate(specs):
        unknown = sorted(set(spec) - _GROUP_KEYS)
        if unknown or "params" not in spec:
            raise ValueError(
                f"parameter group {i}: keys must be 'params' (required), 'lr_mult', "
                f"'weight_decay', 'name'; got {sorted(spec)}"
            )
        group = ParamGroup(
            name=str(spec.get("name", f"group{i}")),
            lr_mult=float(spec.get("lr_mult", 1.0)),
            weight_decay=float(
                default_wd if spec.get("weight_decay") is None else spec["weight_decay"]
            ),
        )
        _check_hyper(0.0, False, group.weight_decay, group.lr_mult)
        for it in spec["params"]:
            name, p = _named(it, position)
            position += 1
            if id(p) in owner:
                first = owner[id(p)]
                raise ValueError(
                    f"parameter {name!r} is in group {group.name!r} and already in group "
                    f"{first[0]!r} (as {first[1]!r}); a parameter may be in one group only"
                )
            if name in seen:
                raise ValueError(f"two different parameters are named {name!r}")
            owner[id(p)] = (group.name, name)
            seen.add(name)
            group.names.append(name)
            group.params.append(p)
        if not group.params:
            raise ValueError(f"parameter group {group.name!r} has no parameters")
        groups.append(group)
    return groups


def _named(item: Any, position: int) -> tuple[str, Param]:
    if isinstance(item, Param):
        return f"param{position}", item
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Param):
        return str(item[0]), item[1]
    raise TypeError(f"expected a Param or a (name, Param) pair, got {type(item).__name__}")


def _load_buffers(seg: FlatSegment, buffers: Mapping[str, Any]) -> None:
    """Put the saved momentum buffers of ``seg``'s parameters into its flat buffer (zeros
    for those without one)."""
    seg.ensure_packed()
    seg.momentum = seg.backend.xp.zeros_like(seg.values)
    seg.has_buffer = [name in buffers for name in seg.names]
    for i, name in enumerate(seg.names):
        if name in buffers:
            seg.view(seg.momentum, i)[...] = seg.backend.asarray(buffers[name], seg.values.dtype)
