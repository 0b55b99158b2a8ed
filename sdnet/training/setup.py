"""The model, optimizer and learning-rate schedule a training configuration describes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdnet.config import ConfigError
from sdnet.models import Model, registry
from sdnet.optim import SGD, Schedule, make_schedule, param_groups

__all__ = ["build_model", "build_optimizer", "build_schedule", "ConstantWarmup"]


def build_model(cfg: Any, ds: Any, backend: Any) -> Model:
    """The network of ``cfg`` for images like ``ds``'s, on ``backend``.

    The model registry says which options shape the network (``width``, ``stem_stride``,
    ``shortcut`` for ResNets) and what it takes from the data (input channels).
    """
    family, _ = registry.resolve(cfg.model)
    try:
        from_data = family.data_options(ds.shape)
    except ValueError as exc:
        raise ConfigError(f"model={cfg.model!r} does not fit {cfg.dataset}: {exc}") from None
    resolved = {"stem_stride": cfg.stem()}  # the size-dependent default, resolved
    shape = {k: resolved.get(k, getattr(cfg, k)) for k in family.shape_options}
    return registry.build_model(
        cfg.model,
        num_classes=ds.num_classes,
        p_last=cfg.survival_last(),
        rule=cfg.drop_rule,
        mode=cfg.drop_mode,
        scaling=cfg.scaling,
        device=backend,
        dtype=cfg.dtype,
        seed=cfg.seed,
        **from_data,
        **shape,
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
