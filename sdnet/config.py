"""Everything a training run is told, with its default, in one place.

:class:`TrainConfig` is what :func:`sdnet.train` takes as keyword arguments, what ``sdnet train``
turns into flags (the help text below is the ``--help`` text) and what a run directory stores as
``config.json``. :meth:`TrainConfig.validate` turns a bad value into one clear
:class:`ConfigError` before any data is read or any model is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, NoReturn

from sdnet.backends import DTYPES
from sdnet.data.datasets import NORMALIZATIONS
from sdnet.models import registry
from sdnet.models.resnet import SHORTCUTS
from sdnet.models.seednet import INITS
from sdnet.models.stochastic_depth import MODES, RULES, SCALINGS
from sdnet.optim.schedules import SCHEDULES
from sdnet.optim.sgd import DROPPED_PARAMS

__all__ = ["TrainConfig", "ConfigError", "DEFAULTS", "GROUPS"]


class ConfigError(ValueError):
    """A training option has a value sdnet cannot use; the message says which and why."""


# the groups of ``sdnet train --help``, in order; every field names one (``group=``)
GROUPS = ("model", "stochastic depth", "optimisation", "data", "run")


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
    recipe: str | None = _opt(
        None,
        "a named set of options applied first, the other options over it (sdnet train "
        "--recipe list); stored with the resolved options",
        group="run",
    )
    dataset: str = _opt(
        "mnist", "dataset: mnist, fashion-mnist, cifar10, cifar100, svhn", group="data"
    )
    model: str = _opt(
        "resnet8", "model: resnet<6n+2> (resnet20, resnet110, ...) or seednet", group="model"
    )
    epochs: int = _opt(2, "number of passes over the training set", group="optimisation")
    device: str = _opt(
        "auto", "cpu, gpu, cuda:N, auto (GPU when usable, else CPU), ...", group="run"
    )
    dtype: str = _opt("float32", "float32 or float64", group="run")
    seed: int = _opt(
        0, "seeds weights, stochastic-depth gates, data order and augmentation", group="run"
    )
    # network shape (ResNets)
    width: int = _opt(1, "ResNet channel multiplier (16w, 32w, 64w channels)", group="model")
    stem_stride: int | None = _opt(
        None,
        "ResNet first-convolution stride: 1 (the paper) or 2 (4x cheaper). Default: 2 for "
        "resnet8/resnet14, 1 for resnet20 and deeper",
        group="model",
    )
    shortcut: str = _opt(
        "A", "ResNet downsampling shortcut: A (pool + zero channels) or B (conv)", group="model"
    )
    init: str = _opt(
        "default",
        "SeedNet weight init: default (U(+-1/sqrt(fan_in))) or blog (N(0, 1), the last "
        "block's x0.01, as the blog)",
        group="model",
    )
    # stochastic depth
    p_last: float | None = _opt(
        None,
        "survival probability of the last block, in (0, 1]; 1 = constant depth. Default: 0.5 "
        "(the paper) for resnet20 and deeper, 1 for resnet8/resnet14 and seednet",
        group="stochastic depth",
    )
    drop_mode: str = _opt(
        "batch",
        "batch (one gate per mini-batch, the paper), row (one per sample, masked: timm) or "
        "subset (one per sample, the branch run on the kept samples only)",
        group="stochastic depth",
    )
    drop_rule: str = _opt(
        "linear", "survival rule: linear (the paper), uniform, timm", group="stochastic depth"
    )
    scaling: str = _opt(
        "paper",
        "paper (scale by p_l at test) or inverted (divide in training)",
        group="stochastic depth",
    )
    # optimizer
    batch_size: int = _opt(128, "mini-batch size", group="optimisation")
    lr: float = _opt(0.1, "base learning rate", group="optimisation")
    momentum: float = _opt(0.9, "SGD momentum (0 for plain SGD)", group="optimisation")
    nesterov: bool = _opt(True, "Nesterov momentum", group="optimisation")
    weight_decay: float = _opt(5e-4, "weight decay", group="optimisation")
    decoupled_weight_decay: bool = _opt(
        False, "decay w by lr*wd apart from the gradient (SGDW)", group="optimisation"
    )
    decay_bn_and_bias: bool = _opt(
        True, "apply weight decay to batch-norm and bias parameters", group="optimisation"
    )
    dropped_params: str = _opt(
        "update",
        "parameters of dropped blocks: update (zero grad; the paper) or freeze",
        group="optimisation",
    )
    lr_mult: dict[str, float] = _opt(
        {},
        "learning-rate multipliers by parameter-name pattern, e.g. '*.wh.weight=0.01'",
        group="optimisation",
    )
    schedule: str = _opt(
        "cosine",
        "learning-rate schedule: step (the paper), multistep, cosine",
        group="optimisation",
    )
    milestones: list[int] = _opt(
        [], "multistep: epochs at which lr is multiplied by gamma", group="optimisation"
    )
    gamma: float = _opt(0.1, "multistep: lr factor at each milestone", group="optimisation")
    warmup_epochs: float = _opt(
        0.0, "linear warm-up length in epochs (may be fractional)", group="optimisation"
    )
    warmup_lr: float | None = _opt(
        None,
        "warm up at this constant learning rate instead of the linear ramp (the paper's "
        "ResNet-1202: 0.01 for 10 epochs)",
        group="optimisation",
    )
    # data
    data_dir: str | None = _opt(
        None, "folder holding the dataset files (else search, download)", group="data"
    )
    download: bool = _opt(True, "download missing datasets into ~/.cache/sdnet", group="data")
    normalize: str = _opt(
        "dataset",
        "input scaling: dataset ((x/255 - mean)/std, the dataset's statistics) or unit (x/255, "
        "as the SeedNet blog); stored with the weights",
        group="data",
    )
    augment: bool | None = _opt(
        None,
        "augmentation: crops (+ flips for CIFAR, Fashion-MNIST); default per dataset",
        group="data",
    )
    crop_pad: int | None = _opt(
        None, "crop padding in pixels (default 4 CIFAR, 2 digits, padded black)", group="data"
    )
    train_splits: list[str] = _opt(
        ["train"],
        "the dataset's splits trained on, in order (SVHN: train extra)",
        group="data",
    )
    val_split: float = _opt(
        0.0,
        "validation set carved from training: a fraction (<1) or a count (0 = none)",
        group="data",
    )
    val_per_class: list[int] = _opt(
        [],
        "validation set of N images per class from each training split, one N per split "
        "(SVHN's paper protocol: 400 200)",
        group="data",
    )
    limit_train: int | None = _opt(
        None, "use only the first N training images (quick runs)", group="data"
    )
    limit_test: int | None = _opt(None, "evaluate on the first N test images only", group="data")
    eval_batch_size: int = _opt(1000, "batch size for evaluation", group="data")
    # run directory and output
    run_dir: str | None = _opt(
        None, "where config, metrics and checkpoints go (default runs/...)", group="run"
    )
    log_every: int = _opt(100, "write a metrics line every N steps", group="run")
    checkpoint_every: int = _opt(
        0, "also checkpoint every N steps (0 = at each epoch's end)", group="run"
    )
    progress: bool | None = _opt(
        None, "progress bars (default: when writing to a terminal)", group="run"
    )

    def is_small(self) -> bool:
        """Whether the model is one of the small, fast networks (the model registry says):
        a ResNet shallower than 20 layers (fewer than 3 blocks per stage), or SeedNet (3
        blocks). An unknown model counts as small; :meth:`validate` refuses it."""
        try:
            return registry.is_small(self.model)
        except ValueError:
            return True

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
        _check_places(self)
        _check_types(self)
        family = _check_model(self)
        _check_optimizer(self)
        for name, choices in _CHOICES.items():
            _choice(self, name, choices)
        _check_schedule(self)
        _check_data(self)
        _shape_options_apply(self, family)
        return self


# options whose value is one of a list, each list owned by the module that gives it meaning
_CHOICES: dict[str, tuple[str, ...]] = {
    "drop_mode": MODES,
    "drop_rule": RULES,
    "scaling": SCALINGS,
    "dropped_params": DROPPED_PARAMS,
    "schedule": SCHEDULES,
    "dtype": DTYPES,
    "shortcut": SHORTCUTS,
    "init": INITS,
    "normalize": NORMALIZATIONS,
}


def _check_places(cfg: TrainConfig) -> None:
    """The recipe, the device, the folders (pathlib paths are welcome; stored as text) and the
    dataset."""
    from sdnet.data import DATASETS
    from sdnet.recipes import recipe_options

    if cfg.recipe is not None:
        recipe_options(cfg.recipe)  # refuses an unknown name

    if not isinstance(cfg.device, str):
        _bad("device", cfg.device, "give a device string: cpu, gpu, cuda:N, auto, torch ...")
    for name in ("data_dir", "run_dir"):
        value = getattr(cfg, name)
        if isinstance(value, os.PathLike):
            setattr(cfg, name, os.fspath(value))
        elif value is not None and not isinstance(value, str):
            _bad(name, value, "give a folder path (a str or a pathlib.Path)")
    if cfg.dataset not in DATASETS:
        _bad("dataset", cfg.dataset, f"use one of {', '.join(DATASETS)}")


def _check_types(cfg: TrainConfig) -> None:
    """Every value has its field's type: numbers finite (no NaN, no infinity), whole numbers
    whole (a float such as ``2.0`` becomes ``2``; ``1.5`` and ``True`` are refused), flags
    ``True``/``False``, names text, lists of their items; ``None`` where the field allows."""
    hints = _hints()
    for f in dataclasses.fields(TrainConfig):
        if f.name == "model":  # the model registry says what names are (_check_model)
            continue
        kind, value = hints[f.name], getattr(cfg, f.name)
        args = typing.get_args(kind)
        if value is None and type(None) in args:
            continue
        if type(None) in args:  # X | None
            kind = next(a for a in args if a is not type(None))
        setattr(cfg, f.name, _typed(f.name, value, kind))


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _typed(name: str, value: Any, kind: Any) -> Any:
    """``value`` as a ``kind`` (int, float, bool, str, list[...], dict[str, float])."""
    origin = typing.get_origin(kind)
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, (list, tuple)):
            _bad(name, value, f"give a list of {_WHAT[item]}")
        return [_typed(f"{name}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            _bad(name, value, "give a table of name patterns and numbers")
        return {k: _typed(f"{name}[{k!r}]", v, float) for k, v in value.items()}
    if kind is bool:
        if not isinstance(value, bool):
            _bad(name, value, "use true or false")
        return value
    if kind is str:
        if not isinstance(value, str):
            _bad(name, value, "give a name (text)")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _bad(name, value, f"use {_WHAT[kind]}")
    if not math.isfinite(value):
        _bad(name, value, f"use {_WHAT[kind]} (finite: not NaN or infinity)")
    if kind is int:
        if value != int(value):
            _bad(name, value, "use a whole number")
        return int(value)
    return value


_WHAT = {int: "a whole number", float: "a number", str: "names", bool: "true/false values"}


def _check_model(cfg: TrainConfig) -> registry.ModelFamily:
    """The model name (the registry's), its size options and stochastic depth's p_L."""
    try:
        family, _ = registry.resolve(cfg.model)
    except ValueError as exc:
        _bad("model", cfg.model, str(exc))
    _positive_int(cfg, "epochs", "batch_size", "eval_batch_size", "log_every", "width")
    if cfg.seed < 0:
        _bad("seed", cfg.seed, "use a whole number >= 0")
    if cfg.p_last is not None and not 0.0 < cfg.p_last <= 1.0:
        _bad("p_last", cfg.p_last, "it must be in (0, 1]; 1 means constant depth")
    if cfg.stem_stride not in (None, 1, 2):
        _bad("stem_stride", cfg.stem_stride, "use 1 or 2")
    return family


def _check_optimizer(cfg: TrainConfig) -> None:
    if not cfg.lr > 0:
        _bad("lr", cfg.lr, "the learning rate must be > 0")
    if cfg.momentum < 0 or cfg.momentum >= 1:
        _bad("momentum", cfg.momentum, "use a value in [0, 1)")
    if cfg.nesterov and cfg.momentum == 0:
        _bad("nesterov", True, "Nesterov needs momentum > 0 (set --no-nesterov)")
    if cfg.weight_decay < 0:
        _bad("weight_decay", cfg.weight_decay, "use a value >= 0")
    for pattern, mult in cfg.lr_mult.items():
        if not isinstance(mult, (int, float)) or mult < 0:
            _bad("lr_mult", f"{pattern}={mult}", "multipliers must be numbers >= 0")


def _check_schedule(cfg: TrainConfig) -> None:
    ms = cfg.milestones
    if cfg.schedule == "multistep" and not ms:
        _bad("milestones", [], "schedule 'multistep' needs milestones (epochs), e.g. 10 15")
    if ms and cfg.schedule != "multistep":
        _bad("milestones", ms, "milestones apply to schedule 'multistep' only")
    if ms and (sorted(set(ms)) != list(ms) or ms[0] <= 0 or ms[-1] >= cfg.epochs):
        _bad("milestones", ms, f"give increasing epochs in 1..{cfg.epochs - 1}")
    if cfg.warmup_epochs < 0 or cfg.warmup_epochs >= cfg.epochs:
        _bad("warmup_epochs", cfg.warmup_epochs, "use 0 <= warmup < epochs")
    if cfg.warmup_lr is not None and not (cfg.warmup_lr > 0 and cfg.warmup_epochs > 0):
        _bad("warmup_lr", cfg.warmup_lr, "give a learning rate > 0, with warmup_epochs > 0")
    if cfg.gamma <= 0:
        _bad("gamma", cfg.gamma, "use a factor > 0")


def _check_data(cfg: TrainConfig) -> None:
    """The training splits, the validation split, the limits, crops and the checkpoint
    interval."""
    from sdnet.data import DATASETS

    splits = [s for s in DATASETS[cfg.dataset].counts if s != "test"]
    ts = cfg.train_splits
    if not ts or len(set(ts)) != len(ts) or any(s not in splits for s in ts):
        _bad("train_splits", ts, f"give one or more of {', '.join(splits)} ({cfg.dataset})")
    if cfg.val_split < 0 or (cfg.val_split >= 1 and cfg.val_split != int(cfg.val_split)):
        _bad("val_split", cfg.val_split, "use a fraction in [0, 1) or a whole count")
    vpc = cfg.val_per_class
    if vpc and (len(vpc) != len(ts) or any(not isinstance(n, int) or n < 0 for n in vpc)):
        _bad("val_per_class", vpc, f"give one count >= 0 per training split ({' '.join(ts)})")
    if vpc and cfg.val_split:
        _bad("val_per_class", vpc, "use val_split or val_per_class, not both")
    for name in ("limit_train", "limit_test", "crop_pad"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, int) or v < (0 if name == "crop_pad" else 1)):
            _bad(name, v, "use a positive whole number (or leave it unset)")
    if cfg.checkpoint_every < 0:
        _bad("checkpoint_every", cfg.checkpoint_every, "use 0 (epoch ends) or a step count")


def check_keys(values: dict[str, Any]) -> None:
    """Refuse option names TrainConfig does not have, suggesting the closest ones."""
    known = [f.name for f in dataclasses.fields(TrainConfig)]
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise TypeError(f"unknown training option {key!r}{hint}")


def _bad(name: str, value: Any, what: str) -> NoReturn:
    raise ConfigError(f"{name}={value!r} is not valid: {what}")


def _choice(cfg: TrainConfig, name: str, choices: tuple[str, ...]) -> None:
    if getattr(cfg, name) not in choices:
        _bad(name, getattr(cfg, name), f"use one of {', '.join(choices)}")


def _shape_options_apply(cfg: TrainConfig, family: registry.ModelFamily) -> None:
    """Refuse network-shape options (``width``, ``stem_stride``, ...) set away from their
    defaults for a model family that has no such option."""
    foreign = [
        name
        for other in registry.FAMILIES
        for name in other.shape_options
        if name not in family.shape_options and getattr(cfg, name) != getattr(DEFAULTS, name)
    ]
    if foreign:
        owners = [f"{f.title}s" for f in registry.FAMILIES if set(foreign) & set(f.shape_options)]
        verb = "applies" if len(set(foreign)) == 1 else "apply"
        _bad(
            "model",
            cfg.model,
            f"{', '.join(sorted(set(foreign)))} {verb} to {' and '.join(owners)} only",
        )


def _positive_int(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            _bad(name, v, "use a whole number >= 1")


DEFAULTS = TrainConfig()
