"""Everything a training run is told, with its default, in one place.

:class:`TrainConfig` is what :func:`sdnet.train` takes as keyword arguments, what ``sdnet train``
turns into flags (the help text below is the ``--help`` text) and what a run directory stores as
``config.json``. :meth:`TrainConfig.validate` turns a bad value into one clear
:class:`ConfigError` before any data is read or any model is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainConfig", "ConfigError", "DEFAULTS"]

SCHEDULES = ("step", "multistep", "cosine", "constant")


class ConfigError(ValueError):
    """A training option has a value sdnet cannot use; the message says which and why."""


def _opt(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Options of one training run (see each field's help; ``sdnet train --help`` lists them).

    The defaults make ``sdnet.train()`` a good first run: ResNet-8 on MNIST for 2 epochs,
    which reaches about 99.1% test accuracy in about 2 minutes on a 2-core CPU
    (``docs/results.md`` has the measurements).

    Two defaults depend on the network's size, by one rule (:meth:`is_small`): the small
    ResNets (resnet8, resnet14: one or two blocks per stage) are built for speed, with a
    stride-2 first convolution and constant depth, because dropping one of their few blocks
    removes a large part of a stage; resnet20 and deeper, and SeedNet's stem, are the
    paper's: stride-1 first convolution and p_L = 0.5 (SeedNet: p_L = 1, as in the blog).
    Setting ``stem_stride`` or ``p_last`` overrides the rule.
    """

    # what to train
    dataset: str = _opt("mnist", "dataset: mnist, fashion-mnist, cifar10, cifar100")
    model: str = _opt("resnet8", "model: resnet<6n+2> (resnet20, resnet110, ...) or seednet")
    epochs: int = _opt(2, "number of passes over the training set")
    device: str = _opt("auto", "cpu, gpu, cuda:N, auto (GPU when usable, else CPU), ...")
    dtype: str = _opt("float32", "float32 or float64")
    seed: int = _opt(0, "seeds weights, stochastic-depth gates, data order and augmentation")
    # network shape (ResNets)
    width: int = _opt(1, "ResNet channel multiplier (16w, 32w, 64w channels)")
    stem_stride: int | None = _opt(
        None,
        "ResNet first-convolution stride: 1 (the paper) or 2 (4x cheaper). Default: 2 for "
        "resnet8/resnet14, 1 for resnet20 and deeper",
    )
    shortcut: str = _opt("A", "ResNet downsampling shortcut: A (pool + zero channels) or B (conv)")
    # stochastic depth
    p_last: float | None = _opt(
        None,
        "survival probability of the last block, in (0, 1]; 1 = constant depth. Default: 0.5 "
        "(the paper) for resnet20 and deeper, 1 for resnet8/resnet14 and seednet",
    )
    drop_mode: str = _opt("batch", "batch (one gate per mini-batch, the paper) or row (timm)")
    drop_rule: str = _opt("linear", "survival rule: linear (the paper), uniform, timm")
    scaling: str = _opt("paper", "paper (scale by p_l at test) or inverted (divide in training)")
    # optimizer
    batch_size: int = _opt(128, "mini-batch size")
    lr: float = _opt(0.1, "base learning rate")
    momentum: float = _opt(0.9, "SGD momentum (0 for plain SGD)")
    nesterov: bool = _opt(True, "Nesterov momentum")
    weight_decay: float = _opt(5e-4, "weight decay")
    decoupled_weight_decay: bool = _opt(False, "decay w by lr*wd apart from the gradient (SGDW)")
    decay_bn_and_bias: bool = _opt(True, "apply weight decay to batch-norm and bias parameters")
    dropped_params: str = _opt(
        "update", "parameters of dropped blocks: update (zero grad; the paper) or freeze"
    )
    lr_mult: dict[str, float] = _opt(
        {}, "learning-rate multipliers by parameter-name pattern, e.g. '*.wh.weight=0.01'"
    )
    schedule: str = _opt("cosine", "learning-rate schedule: step (the paper), multistep, cosine")
    milestones: list[int] = _opt([], "multistep: epochs at which lr is multiplied by gamma")
    gamma: float = _opt(0.1, "multistep: lr factor at each milestone")
    warmup_epochs: float = _opt(0.0, "linear warm-up length in epochs (may be fractional)")
    # data
    data_dir: str | None = _opt(None, "folder holding the dataset files (else search, download)")
    download: bool = _opt(True, "download missing datasets into ~/.cache/sdnet")
    augment: bool | None = _opt(None, "augmentation: crop (+ flip for CIFAR); default per dataset")
    crop_pad: int | None = _opt(None, "zero padding for random crops (default 4 CIFAR, 2 digits)")
    val_split: float = _opt(
        0.0, "validation set carved from training: a fraction (<1) or a count (0 = none)"
    )
    limit_train: int | None = _opt(None, "use only the first N training images (quick runs)")
    limit_test: int | None = _opt(None, "evaluate on the first N test images only")
    eval_batch_size: int = _opt(1000, "batch size for evaluation")
    # run directory and output
    run_dir: str | None = _opt(None, "where config, metrics and checkpoints go (default runs/...)")
    log_every: int = _opt(100, "write a metrics line every N steps")
    checkpoint_every: int = _opt(0, "also checkpoint every N steps (0 = at each epoch's end)")
    progress: bool | None = _opt(None, "progress bars (default: when writing to a terminal)")

    def is_small(self) -> bool:
        """Whether the model is one of the small, fast networks: a ResNet shallower than 20
        layers (fewer than 3 blocks per stage), or SeedNet (3 blocks)."""
        m = re.fullmatch(r"resnet-?(\d+)", self.model.lower())
        return not m or int(m.group(1)) < 20

    def survival_last(self) -> float:
        """The p_L used: ``p_last`` if given, else 1.0 for small networks, else 0.5."""
        if self.p_last is not None:
            return float(self.p_last)
        return 1.0 if self.is_small() else 0.5

    def stem(self) -> int:
        """The ResNet first-convolution stride: ``stem_stride`` if given, else 2 for small
        ResNets, 1 (the paper) for resnet20 and deeper."""
        if self.stem_stride is not None:
            return int(self.stem_stride)
        return 2 if self.is_small() else 1

    # -- conversion -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict (e.g. a run's ``config.json``); unknown keys are an error."""
        check_keys(values)
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        check_keys(changes)
        return dataclasses.replace(self, **changes)

    # -- validation -------------------------------------------------------------------------
    def validate(self) -> TrainConfig:
        """Check every value; raise :class:`ConfigError` with one line saying what to do."""
        from sdnet.data import DATASETS

        if not isinstance(self.device, str):
            _bad("device", self.device, "give a device string: cpu, gpu, cuda:N, auto, torch ...")
        for name in ("data_dir", "run_dir"):  # pathlib paths are welcome; stored as text
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))
            elif value is not None and not isinstance(value, str):
                _bad(name, value, "give a folder path (a str or a pathlib.Path)")
        if self.dataset not in DATASETS:
            _bad("dataset", self.dataset, f"use one of {', '.join(DATASETS)}")
        if not (re.fullmatch(r"resnet-?\d+", self.model.lower()) or self.model == "seednet"):
            _bad("model", self.model, "use resnet<6n+2> (e.g. resnet20) or seednet")
        m = re.fullmatch(r"resnet-?(\d+)", self.model.lower())
        if m and (int(m.group(1)) < 8 or (int(m.group(1)) - 2) % 6):
            _bad("model", self.model, "ResNet depth must be 6n+2: 8, 14, 20, 32, 44, 56, 110 ...")
        _positive_int(self, "epochs", "batch_size", "eval_batch_size", "log_every", "width")
        if self.p_last is not None and not 0.0 < self.p_last <= 1.0:
            _bad("p_last", self.p_last, "it must be in (0, 1]; 1 means constant depth")
        if not self.lr > 0:
            _bad("lr", self.lr, "the learning rate must be > 0")
        if self.momentum < 0 or self.momentum >= 1:
            _bad("momentum", self.momentum, "use a value in [0, 1)")
        if self.nesterov and self.momentum == 0:
            _bad("nesterov", True, "Nesterov needs momentum > 0 (set --no-nesterov)")
        if self.weight_decay < 0:
            _bad("weight_decay", self.weight_decay, "use a value >= 0")
        _choice(self, "drop_mode", ("batch", "row"))
        _choice(self, "drop_rule", ("linear", "uniform", "timm"))
        _choice(self, "scaling", ("paper", "inverted"))
        _choice(self, "dropped_params", ("update", "freeze"))
        _choice(self, "schedule", SCHEDULES)
        _choice(self, "dtype", ("float32", "float64"))
        _choice(self, "shortcut", ("A", "B"))
        if self.stem_stride not in (None, 1, 2):
            _bad("stem_stride", self.stem_stride, "use 1 or 2")
        if self.schedule == "multistep" and not self.milestones:
            _bad("milestones", [], "schedule 'multistep' needs milestones (epochs), e.g. 10 15")
        if self.milestones and self.schedule != "multistep":
            _bad("milestones", self.milestones, "milestones apply to schedule 'multistep' only")
        if self.milestones and (
            sorted(set(self.milestones)) != list(self.milestones)
            or self.milestones[0] <= 0
            or self.milestones[-1] >= self.epochs
        ):
            _bad("milestones", self.milestones, f"give increasing epochs in 1..{self.epochs - 1}")
        if self.warmup_epochs < 0 or self.warmup_epochs >= self.epochs:
            _bad("warmup_epochs", self.warmup_epochs, "use 0 <= warmup < epochs")
        if self.gamma <= 0:
            _bad("gamma", self.gamma, "use a factor > 0")
        if self.val_split < 0 or (self.val_split >= 1 and self.val_split != int(self.val_split)):
            _bad("val_split", self.val_split, "use a fraction in [0, 1) or a whole count")
        for name in ("limit_train", "limit_test", "crop_pad"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < (0 if name == "crop_pad" else 1)):
                _bad(name, v, "use a positive whole number (or leave it unset)")
        if self.checkpoint_every < 0:
            _bad("checkpoint_every", self.checkpoint_every, "use 0 (epoch ends) or a step count")
        for pattern, mult in self.lr_mult.items():
            if not isinstance(mult, (int, float)) or mult < 0:
                _bad("lr_mult", f"{pattern}={mult}", "multipliers must be numbers >= 0")
        if self.model == "seednet" and (
            self.width != 1 or self.shortcut != "A" or self.stem_stride is not None
        ):
            _bad("model", "seednet", "width, shortcut and stem_stride apply to ResNets only")
        return self


def check_keys(values: dict[str, Any]) -> None:
    """Refuse option names TrainConfig does not have, suggesting the closest ones."""
    known = [f.name for f in dataclasses.fields(TrainConfig)]
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise TypeError(f"unknown training option {key!r}{hint}")


def _bad(name: str, value: Any, what: str) -> None:
    raise ConfigError(f"{name}={value!r} is not valid: {what}")


def _choice(cfg: TrainConfig, name: str, choices: tuple[str, ...]) -> None:
    if getattr(cfg, name) not in choices:
        _bad(name, getattr(cfg, name), f"use one of {', '.join(choices)}")


def _positive_int(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            _bad(name, v, "use a whole number >= 1")


DEFAULTS = TrainConfig()
