"""Learning-rate schedules: pure functions of the global step (resuming needs only the step).

``make_schedule(name, ...)`` returns ``sched`` with ``sched(step) -> float`` for the step
``0 .. total_steps - 1`` about to be taken (``opt.lr = sched(step); opt.step()``); later steps
keep the value of step ``total_steps - 1``. With ``warmup_steps = W > 0`` every schedule starts
with a linear ramp ``base_lr * (step + 1) / W`` for ``step < W`` and follows its own formula
from step ``W`` on (cosine then spans the remaining ``total_steps - W`` steps; the step
milestones stay where they are in absolute steps).

"step" is the paper's schedule: the learning rate is divided by 10 (``gamma``) at 50% and 75%
of training, ``milestones = (int(0.5 * T), int(0.75 * T))`` in steps.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "SCHEDULES",
    "Schedule",
    "make_schedule",
    "constant_lr",
    "multistep_lr",
    "cosine_lr",
    "warmup_lr",
]

SCHEDULES = ("constant", "step", "multistep", "cosine")


def constant_lr(step: int, *, base_lr: float) -> float:
    """``lr(step) = base_lr``."""
    return float(base_lr)


def multistep_lr(step: int, *, base_lr: float, milestones: Sequence[int], gamma: float) -> float:
    """``lr(step) = base_lr * gamma ** k``, ``k`` = the number of milestones ``<= step``.

    As ``torch.optim.lr_scheduler.MultiStepLR`` stepped once per step: the decay takes effect
    at the milestone step itself.
    """
    return float(base_lr * gamma ** bisect_right(milestones, step))


def cosine_lr(step: int, *, base_lr: float, total_steps: int, min_lr: float) -> float:
    """``lr(t) = min_lr + (base_lr - min_lr) * (1 + cos(pi * t / total_steps)) / 2``.

    A half cosine from ``base_lr`` at ``t = 0`` towards ``min_lr`` (reached at
    ``t = total_steps``, one past the last step), as ``CosineAnnealingLR(T_max=total_steps,
    eta_min=min_lr)``.
    """
    return float(min_lr + (base_lr - min_lr) * (1.0 + math.cos(math.pi * step / total_steps)) / 2)


def warmup_lr(step: int, *, base_lr: float, warmup_steps: int) -> float:
    """``lr(step) = base_lr * (step + 1) / warmup_steps`` for ``step < warmup_steps``.

    The first step uses ``base_lr / warmup_steps``; step ``warmup_steps - 1`` uses ``base_lr``.
    """
    return float(base_lr * (step + 1) / warmup_steps)


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule, ``sched(step) -> float``; see :func:`make_schedule`.

    ``milestones`` are in steps (for "step" and "multistep").
    """

    name: str
    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    min_lr: float = 0.0

    def __call__(self, step: int) -> float:
        step = operator.index(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        step = min(step, self.total_steps - 1)  # past the end: keep the final value
        if step < self.warmup_steps:
            return warmup_lr(step, base_lr=self.base_lr, warmup_steps=self.warmup_steps)
        if self.name == "constant":
            return constant_lr(step, base_lr=self.base_lr)
        if self.name == "cosine":
            return cosine_lr(
                step - self.warmup_steps,
                base_lr=self.base_lr,
                total_steps=self.total_steps - self.warmup_steps,
                min_lr=self.min_lr,
            )
        return multistep_lr(
            step, base_lr=self.base_lr, milestones=self.milestones, gamma=self.gamma
        )


def make_schedule(
    name: str,
    *,
    base_lr: float = 0.1,
    total_steps: int,
    steps_per_epoch: int | None = None,
    milestones: Sequence[int] | None = None,
    gamma: float = 0.1,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
) -> Schedule:
    """Build a learning-rate schedule over ``total_steps`` optimizer steps.

    Parameters
    ----------
    name : {"constant", "step", "multistep", "cosine"}
        ``constant``: ``base_lr``. ``step`` (the paper's): ``base_lr * gamma ** k`` with ``k``
        the number of milestones ``int(0.5 * T)``, ``int(0.75 * T)`` reached. ``multistep``:
        the same with ``milestones`` given in epochs. ``cosine``: ``min_lr + (base_lr -
        min_lr) * (1 + cos(pi * t / (T - W))) / 2`` with ``t = step - W``.
    base_lr : float
        Peak learning rate (> 0).
    total_steps : int
        ``T``, the number of optimizer steps of the whole run.
    steps_per_epoch : int, optional
        Needed by ``multistep`` only (milestone epoch ``e`` is step ``e * steps_per_epoch``).
    milestones : sequence of int, optional
        ``multistep`` only: increasing positive epochs, each before the end of training.
    gamma : float
        Multiplier at each milestone (``step``, ``multistep``); in (0, 1] usually.
    warmup_steps : int
        ``W``: linear ramp ``base_lr * (step + 1) / W`` for the first ``W`` steps
        (``0 <= W < T``).
    min_lr : float
        ``cosine`` only: the floor the cosine decays towards.

    Raises
    ------
    ValueError
        Unknown name (the valid ones are listed), bad numbers, or arguments that the chosen
        schedule does not use (``milestones`` outside ``multistep``, ``min_lr`` outside
        ``cosine``); each message says what to pass instead.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    total_steps = operator.index(total_steps)
    warmup_steps = operator.index(warmup_steps)
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if base_lr <= 0:
        raise ValueError(f"base_lr must be > 0, got {base_lr}")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"warmup_steps must be >= 0 and < total_steps={total_steps}, got {warmup_steps}; "
            "shorten the warmup or train for longer"
        )
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    if min_lr != 0.0 and name != "cosine":
        raise ValueError(f"min_lr is used by the cosine schedule only; drop it for {name!r}")
    if not 0 <= min_lr <= base_lr:
        raise ValueError(f"min_lr must be in [0, base_lr={base_lr}], got {min_lr}")
    if milestones is not None and name != "multistep":
        hint = " (its milestones are fixed at 50% and 75%)" if name == "step" else ""
        raise ValueError(
            f"milestones are used by the 'multistep' schedule only; drop them for {name!r}{hint}"
        )
    steps: tuple[int, ...] = ()
    if name == "step":
        steps = (int(0.5 * total_steps), int(0.75 * total_steps))
    elif name == "multistep":
        steps = _milestone_steps(milestones, steps_per_epoch, total_steps)
    return Schedule(
        name=name,
        base_lr=float(base_lr),
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        milestones=steps,
        gamma=float(gamma),
        min_lr=float(min_lr),
    )


def _milestone_steps(
    milestones: Sequence[int] | None, steps_per_epoch: int | None, total_steps: int
) -> tuple[int, ...]:
    """Milestone epochs -> steps, validated."""
    if milestones is None or steps_per_epoch is None:
        raise ValueError(
            "the multistep schedule needs milestones (epochs, e.g. [150, 225]) and steps_per_epoch"
        )
    steps_per_epoch = operator.index(steps_per_epoch)
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    epochs = [operator.index(e) for e in milestones]
    if not epochs:
        raise ValueError("milestones is empty; give at least one epoch or use 'constant'")
    if epochs[0] <= 0 or any(b <= a for a, b in zip(epochs, epochs[1:], strict=False)):
        raise ValueError(f"milestones must be positive, strictly increasing epochs; got {epochs}")
    steps = tuple(e * steps_per_epoch for e in epochs)
    if steps[-1] >= total_steps:
        raise ValueError(
            f"milestone epoch {epochs[-1]} is step {steps[-1]}, not before total_steps="
            f"{total_steps} ({total_steps / steps_per_epoch:g} epochs); milestones are in "
            "epochs, not steps"
        )
    return steps
