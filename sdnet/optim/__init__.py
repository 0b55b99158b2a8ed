"""Optimizers and learning-rate schedules, on the device.

* :class:`SGD` - momentum, Nesterov, coupled (L2) or decoupled weight decay, parameter groups
  with learning-rate multipliers, a dropped-block policy, ``state_dict``/``load_state_dict``.
* :func:`param_groups` - split ``model.named_parameters()`` into groups (per-pattern learning
  rates, no decay on batch-norm parameters and biases).
* :func:`make_schedule` - learning-rate schedules as pure functions of the global step.

See docs/optim.md for the formulas and the choices made.
"""

from sdnet.optim.groups import param_groups
from sdnet.optim.schedules import SCHEDULES, Schedule, make_schedule
from sdnet.optim.sgd import SGD, ParamGroup

__all__ = ["SGD", "ParamGroup", "param_groups", "make_schedule", "Schedule", "SCHEDULES"]
