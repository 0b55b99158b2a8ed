"""Whole training steps of :func:`sdnet.train` on the simulated device, one recording each.

:func:`train_steps` runs the real ``sdnet.train`` (one epoch of a few batches) and splits what
the simulated device recorded at the loop's step boundaries (``Run.between_steps``): step k's
recording runs from the end of step k-1 to the end of step k, so it holds the loader's gather
of batch k, the forward and backward passes, the loss, the finiteness flag, the optimizer
update, the metric sums and whatever ``between_steps`` did. What comes after the last step
(the epoch's evaluation and checkpoint) is kept apart.

A **steady** step is one that is not among the first :data:`WARMUP_STEPS` (the first one also
builds the epoch's plan and copies the dataset to the device; the optimizer's momentum buffers
appear in the first update) and in which the run neither read its deferred finiteness flags
(:meth:`~sdnet.training.guard.FinitenessGuard.flush` with flags pending, every
``CHECK_EVERY_ON_DEVICE`` steps) nor wrote a log line or a checkpoint (``log_every`` and
``checkpoint_every`` are set beyond the run).

:func:`fixed_gates` replaces the drawn stochastic-depth gates by :func:`systematic_gates`,
whose number of kept blocks averages to the expected number over any :data:`GATE_CYCLE`
consecutive steps: the mean launches of those steps are the expected launches of a step,
without averaging many random draws.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import sdnet
from sdnet.data import DATASETS, ArrayDataset
from sdnet.models.base import Model
from sdnet.testing.simdevice import Event, Recording, install
from sdnet.testing.simdevice._record import attach, detach
from sdnet.training import data as training_data
from sdnet.training.guard import FinitenessGuard
from sdnet.training.run import Run

__all__ = [
    "GROUPS",
    "StepCost",
    "group_of",
    "steady_cost",
    "WARMUP_STEPS",
    "MeasuredRun",
    "train_steps",
    "per_step",
    "systematic_gates",
    "fixed_gates",
    "synthetic_datasets",
]

WARMUP_STEPS = 2
GATE_CYCLE = 4  # fixed gates repeat every 4 passes: measure 4 steady steps for the expectation
NEVER = 10**9  # log_every of a measured run: no log line

# the part of a training step a launch belongs to: the first of its sdnet frames (innermost
# first) whose file starts with one of these; helpers shared by several kinds of layer
# (``sdnet/_array_api.py``, ``sdnet/_threads.py``, ``sdnet/layers/sequential.py``) are
# looked through
GROUPS = {
    "sdnet/optim/": "optimizer",
    "sdnet/functional/batchnorm.py": "batch norm",
    "sdnet/layers/batchnorm.py": "batch norm",
    "sdnet/functional/conv.py": "convolution",
    "sdnet/layers/conv.py": "convolution",
    "sdnet/functional/pooling.py": "pooling and option-A shortcuts",
    "sdnet/layers/pooling.py": "pooling and option-A shortcuts",
    "sdnet/functional/activation.py": "activations and residual adds",
    "sdnet/layers/activation.py": "activations and residual adds",
    "sdnet/models/stochastic_depth.py": "activations and residual adds",
    "sdnet/functional/linear.py": "fully connected head",
    "sdnet/layers/linear.py": "fully connected head",
    "sdnet/layers/base.py": "gradient accumulation",
    "sdnet/functional/loss.py": "loss",
    "sdnet/data/": "loader",
    "sdnet/training/guard.py": "finiteness checks",
    "sdnet/training/metrics.py": "metrics",
}
OTHER = "other"


@dataclass
class MeasuredRun:
    """The recordings of one measured run.

    Attributes
    ----------
    steps : list of Recording
        ``steps[k - 1]`` is training step k.
    flushed : set of int
        The steps in which the deferred finiteness flags were read.
    logged : set of int
        The steps that wrote a log line or a checkpoint.
    rest : Recording
        Everything after the last step (evaluation, checkpoint, final flag read).
    kept : list of int
        With fixed gates: the residual blocks each training step computed.
    """

    steps: list[Recording] = field(default_factory=list)
    flushed: set[int] = field(default_factory=set)
    logged: set[int] = field(default_factory=set)
    rest: Recording = field(default_factory=Recording)
    kept: list[int] = field(default_factory=list)

    def steady(self) -> list[int]:
        """The steady steps (1-based; see the module docstring)."""
        return [
            k
            for k in range(WARMUP_STEPS + 1, len(self.steps) + 1)
            if k not in self.flushed and k not in self.logged
        ]

    def steady_recordings(self) -> list[Recording]:
        return [self.steps[k - 1] for k in self.steady()]


def group_of(event: Event) -> str:
    """The part of the training step that caused ``event`` (:data:`GROUPS`, else ``"other"``)."""
    for frame in event.where.split(" < "):
        for prefix, group in GROUPS.items():
            if frame.startswith(prefix):
                return group
    return OTHER


@dataclass(frozen=True)
class StepCost:
    """Means over the steady steps of a measured run.

    ``launches``: kernel launches per step; ``by_op`` and ``by_group``: the same, per operation
    and per part of the step (:data:`GROUPS`); ``syncs``, ``h2d`` (copies) and ``h2d_bytes``
    per step; ``steps``: the steady steps averaged; ``kept``: the mean residual blocks they
    computed (fixed gates; ``None`` with drawn gates).
    """

    launches: float
    by_op: dict[str, float]
    by_group: dict[str, float]
    syncs: float
    h2d: float
    h2d_bytes: float
    steps: list[int]
    kept: float | None


def _mean_counts(counts: list[Counter[str]]) -> dict[str, float]:
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return {k: v / len(counts) for k, v in sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))}


def steady_cost(run: MeasuredRun) -> StepCost:
    """The mean cost of ``run``'s steady steps.

    Raises
    ------
    ValueError
        When the run has no steady step (too short, or every step read the flags).
    """
    recs = run.steady_recordings()
    if not recs:
        raise ValueError(f"no steady step among {len(run.steps)} (flags read at {run.flushed})")
    n = len(recs)
    return StepCost(
        launches=sum(r.launches for r in recs) / n,
        by_op=_mean_counts([r.by_op for r in recs]),
        by_group=_mean_counts([Counter(group_of(e) for e in r.launch_events) for r in recs]),
        syncs=sum(len(r.syncs) for r in recs) / n,
        h2d=sum(len(r.h2d) for r in recs) / n,
        h2d_bytes=sum(r.h2d_bytes for r in recs) / n,
        steps=run.steady(),
        kept=sum(run.kept[k - 1] for k in run.steady()) / n if run.kept else None,
    )


@contextmanager
def per_step(run: MeasuredRun) -> Iterator[MeasuredRun]:
    """Fill ``run`` with one recording per training step of the ``sdnet.train`` calls inside."""
    real_between, real_flush = Run.between_steps, FinitenessGuard.flush
    live = [Recording()]
    attach(live[0])

    def between_steps(self: Run, meter: Any, stop: Any) -> None:
        try:
            real_between(self, meter, stop)
        finally:  # close this step's recording and open the next one
            detach(live[0])
            run.steps.append(live[0])
            live[0] = Recording()
            attach(live[0])
            cfg, step = self.cfg, self.state.step
            if step % cfg.log_every == 0 or (
                cfg.checkpoint_every and step % cfg.checkpoint_every == 0
            ):
                run.logged.add(step)

    def flush(self: FinitenessGuard, step: int, lr: float) -> None:
        if self.pending:
            run.flushed.add(len(run.steps) + 1)  # the step being recorded
        real_flush(self, step, lr)

    Run.between_steps, FinitenessGuard.flush = between_steps, flush  # type: ignore[method-assign]
    try:
        yield run
    finally:
        Run.between_steps, FinitenessGuard.flush = real_between, real_flush  # type: ignore[method-assign]
        detach(live[0])
        run.rest = live[0]


def systematic_gates(survival: Sequence[float], offset: float = 0.5) -> list[bool]:
    """Batch-mode gates keeping block l when the running sum of the survival probabilities,
    shifted by ``offset`` in [0, 1), passes an integer at l (systematic sampling).

    ``floor(sum(survival) + offset)`` blocks are kept, spread over the network in proportion
    to their p_l. Over the offsets ``(i + 1/2) / K``, i = 0 .. K-1, each block is kept in
    K p_l of the K passes (rounded) and the mean number kept is the expected number
    ``sum(survival)`` (within 1 / 2K of a block).
    """
    if not 0.0 <= offset < 1.0:
        raise ValueError(f"offset must be in [0, 1), got {offset}")
    sums = [offset, *(offset + s for s in itertools.accumulate(survival))]
    return [math.floor(b) > math.floor(a) for a, b in itertools.pairwise(sums)]


@contextmanager
def fixed_gates(cycle: int = GATE_CYCLE, kept: list[int] | None = None) -> Iterator[None]:
    """Training pass i of every model uses ``systematic_gates(survival, (i % cycle + 1/2) /
    cycle)`` (batch mode): any ``cycle`` consecutive passes keep the expected number of blocks
    on average. The number of blocks each pass keeps is appended to ``kept``."""
    real, passes = Model.draw_gates, itertools.count()

    def draw(self: Model, batch_size: int) -> list[Any]:
        if self.mode != "batch":
            raise ValueError("fixed_gates is for mode='batch'")
        real(self, batch_size)  # keep the gate stream where a drawn run would leave it
        gates = systematic_gates(self.survival, (next(passes) % cycle + 0.5) / cycle)
        if kept is not None:
            kept.append(sum(gates))
        return list(gates)

    Model.draw_gates = draw  # type: ignore[method-assign]
    try:
        yield
    finally:
        Model.draw_gates = real  # type: ignore[method-assign]


@contextmanager
def synthetic_datasets(names: Sequence[str], count: int, seed: int = 0) -> Iterator[None]:
    """``sdnet.train`` gets ``count`` random images of the right shape for each dataset of
    ``names`` (for datasets whose files are not on the machine, e.g. CIFAR in CI)."""
    real = training_data.load_dataset

    def load(name: str, split: str = "train", **kwargs: Any) -> ArrayDataset:
        if name not in names:
            return real(name, split=split, **kwargs)
        info, rng = DATASETS[name], np.random.default_rng([seed, split == "test"])
        images = rng.integers(0, 256, size=(count, *info.shape), dtype=np.uint8)
        labels = rng.integers(0, info.num_classes, size=count).astype(np.int64)
        return ArrayDataset(images, labels, name, split, info.num_classes, info.mean, info.std)

    training_data.load_dataset = load  # type: ignore[assignment]
    try:
        yield
    finally:
        training_data.load_dataset = real


def train_steps(
    steps: int, *, device: str = "sim:1", fixed: bool = False, **options: Any
) -> MeasuredRun:
    """Run ``sdnet.train`` for ``steps`` steps of one epoch on a simulated device, recorded.

    Parameters
    ----------
    steps : int
        Training steps (``limit_train = steps * batch_size``).
    device : str
        A simulated device (``"sim:N"``); the calling thread's current device is left as it is.
    fixed : bool
        Use :func:`fixed_gates` instead of drawn gates (batch mode).
    **options
        Options of :func:`sdnet.train` (``model``, ``batch_size``, ``dataset``, ``data_dir`` ...).
        ``log_every`` and ``checkpoint_every`` default to beyond the run.

    Returns
    -------
    MeasuredRun
    """
    install()
    batch = int(options.get("batch_size", sdnet.TrainConfig().batch_size))
    options = {"log_every": NEVER, "checkpoint_every": 0, "limit_test": 16,
               "eval_batch_size": 16, "download": False, **options}  # fmt: skip
    measured = MeasuredRun()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sdnet-sim-")))
        if fixed:
            stack.enter_context(fixed_gates(kept=measured.kept))
        stack.enter_context(per_step(measured))
        sdnet.train(epochs=1, limit_train=steps * batch, device=device, progress=False,
                    run_dir=str(tmp / "run"), **options)  # fmt: skip
    return measured
