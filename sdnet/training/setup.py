"""The model, optimizer and learning-rate schedule a training configuration describes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdnet.config import ConfigError
from sdnet.models import Model, registry
from sdnet.optim import SGD, Schedule, make_schedule, param_groups

__all__ = [
    "build_model",
    "build_optimizer",
    "build_schedule",
    "ConstantWarmup",
    "check_memory",
    "memory_needed",
    "model_options",
]


def model_options(cfg: Any, shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
    """The options of ``registry.build_model(cfg.model, ...)`` (all but the device) for images
    of ``shape`` (C, H, W) in ``num_classes`` classes.

    The model registry says which options shape the network (``width``, ``stem_stride``,
    ``shortcut`` for ResNets) and what it takes from the data (input channels).
    """
    family, _ = registry.resolve(cfg.model)
    try:
        from_data = family.data_options(shape)
    except ValueError as exc:
        raise ConfigError(f"model={cfg.model!r} does not fit {cfg.dataset}: {exc}") from None
    resolved = {"stem_stride": cfg.stem()}  # the size-dependent default, resolved
    shape_options = {k: resolved.get(k, getattr(cfg, k)) for k in family.shape_options}
    return dict(
        num_classes=num_classes,
        p_last=cfg.survival_last(),
        rule=cfg.drop_rule,
        mode=cfg.drop_mode,
        scaling=cfg.scaling,
        dtype=cfg.dtype,
        seed=cfg.seed,
        **from_data,
        **shape_options,
    )


def build_model(cfg: Any, ds: Any, backend: Any) -> Model:
    """The network of ``cfg`` for images like ``ds``'s, on ``backend``."""
    options = model_options(cfg, ds.shape, ds.num_classes)
    return registry.build_model(cfg.model, device=backend, **options)


def memory_needed(cfg: Any) -> tuple[int, int]:
    """A lower bound of the bytes training ``cfg`` needs: ``(weights, activations)``.

    Weights: every parameter and buffer (the registry's ``state_size``) twice, for the values
    and the momentum (the gradients are not counted). Activations: ``batch_size`` times the
    registry's ``activation_size`` of one image, times ``p_L`` (every block survives with at
    least that probability, so a step keeps at least that share on average).
    """
    from sdnet.data import DATASETS

    info = DATASETS[cfg.dataset]
    family, implied = registry.resolve(cfg.model)
    config = {"name": cfg.model, **implied, **model_options(cfg, info.shape, info.num_classes)}
    item = 8 if cfg.dtype == "float64" else 4
    weights = 2 * family.state_size(config) * item
    per_image = family.activation_size(config, (info.shape[1], info.shape[2]))
    return weights, int(cfg.batch_size * per_image * cfg.survival_last()) * item


def check_memory(cfg: Any, backend: Any) -> None:
    """Refuse (:class:`ConfigError`) a model and batch size whose :func:`memory_needed` is
    more than the memory available where they would live (the device's, else the host's)."""
    from sdnet._memory import host_memory_available, human_bytes

    device = backend.memory_available()
    available, where = (
        (device, f"device {backend.device}")
        if device is not None
        else (host_memory_available(), "this machine")
    )
    weights, activations = memory_needed(cfg)
    if available is None or weights + activations <= available:
        return
    shape = ", ".join(f"{k}={getattr(cfg, k)}" for k in ("width",) if getattr(cfg, k) != 1)
    raise ConfigError(
        f"model={cfg.model!r}{' (' + shape + ')' if shape else ''} with batch_size="
        f"{cfg.batch_size} needs at least {human_bytes(weights + activations)} to train "
        f"({human_bytes(weights)} of weights and momentum, {human_bytes(activations)} of "
        f"activations, estimated), but {where} has {human_bytes(available)} available: "
        "choose a smaller model, width or batch_size"
    )


def build_optimizer(cfg: Any, model: Model) -> SGD:
    """SGD over the model's parameter groups (weight decay, per-pattern learning rates)."""
    groups = param_groups(
        model.named_parameters(),
        weight_decay=cfg.weight_decay,
        decay_bn_and_bias=cfg.decay_bn_and_bias,
        lr_mult=cfg.lr_mult,
    )
    return SGD(
        groups,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        decoupled_weight_decay=cfg.decoupled_weight_decay,
        skip_missing=cfg.dropped_params == "freeze",
    )


@dataclass(frozen=True)
class ConstantWarmup:
    """``schedule`` with its first ``steps`` steps at the constant rate ``lr`` (in place of
    its linear ramp): ``lr(step) = lr if step < steps else schedule(step)``.

    The paper's ResNet-1202 protocol: 0.01 for 10 epochs, then the step schedule from 0.1.
    """

    schedule: Schedule
    steps: int
    lr: float

    def __call__(self, step: int) -> float:
        return self.lr if step < self.steps else self.schedule(step)


def build_schedule(cfg: Any, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning rate as a function of the global step (a constant warm-up when
    ``warmup_lr`` is set, else the schedule's own linear one)."""
    schedule = make_schedule(
        cfg.schedule,
        base_lr=cfg.lr,
        total_steps=cfg.epochs * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        milestones=list(cfg.milestones) or None,
        gamma=cfg.gamma,
        warmup_steps=int(round(cfg.warmup_epochs * steps_per_epoch)),
    )
    if cfg.warmup_lr is None:
        return schedule
    return ConstantWarmup(schedule, schedule.warmup_steps, float(cfg.warmup_lr))
