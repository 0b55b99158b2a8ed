"""Training: :func:`train` and the small modules its loop is made of.

``run`` (the algorithm: for each epoch, for each batch, step; then evaluate and checkpoint),
``data`` (splits, validation hold-out, augmentation policy, loaders), ``setup`` (model,
optimizer, schedule from a configuration), ``guard`` (finiteness checks, host and deferred
device policies), ``metrics`` (device-side sums, records and log lines), ``state`` (a run's
position and its training checkpoint), ``output`` (the run directory's files) and ``signals``
(Ctrl-C, SIGTERM and SIGHUP between steps).
"""

from sdnet.training.guard import NonFiniteError
from sdnet.training.run import RESUME_OVERRIDES, Run, TrainResult, train
from sdnet.training.signals import Interrupted

__all__ = ["train", "TrainResult", "NonFiniteError", "Interrupted", "RESUME_OVERRIDES", "Run"]
