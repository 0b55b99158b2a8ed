"""sdnet: deep residual networks with stochastic depth, one hand-written forward and backward
pass per layer on the Python array API, for NumPy (CPU) and CuPy (CUDA)."""

from importlib.metadata import PackageNotFoundError, version

from sdnet._io import WriteRefused
from sdnet._threads import get_num_threads, set_num_threads
from sdnet.backends import (
    Backend,
    BackendUnavailable,
    available_backends,
    get_backend,
    set_tf32,
)
from sdnet.checkpoint import CheckpointError, load, save
from sdnet.config import ConfigError, TrainConfig
from sdnet.evaluate import evaluate
from sdnet.gradcheck import GradcheckError, check_layer, gradcheck
from sdnet.models import Model, ResNet, SeedNet, build_model, model_names, survival_probabilities
from sdnet.optim import SGD
from sdnet.sweep import sweep  # light: Ray is imported only when a sweep uses it
from sdnet.training import Interrupted, NonFiniteError, TrainResult, train

try:
    __version__ = version("sdnet")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

__all__ = [
    "Backend",
    "BackendUnavailable",
    "available_backends",
    "get_backend",
    "set_tf32",
    "GradcheckError",
    "check_layer",
    "gradcheck",
    "Model",
    "ResNet",
    "SeedNet",
    "build_model",
    "model_names",
    "survival_probabilities",
    "SGD",
    "get_num_threads",
    "set_num_threads",
    "train",
    "sweep",
    "evaluate",
    "TrainConfig",
    "TrainResult",
    "ConfigError",
    "NonFiniteError",
    "Interrupted",
    "WriteRefused",
    "save",
    "load",
    "CheckpointError",
    "__version__",
]
