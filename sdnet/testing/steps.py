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

:func:`systematic_gates` fixes the stochastic-depth gates to the expected number of kept
blocks, so that launch counts are the expected ones without averaging many random draws.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import sdnet
from sdnet.data import DATASETS, ArrayDataset
from sdnet.models.base import Model
from sdnet.testing.simdevice import Recording, install
from sdnet.testing.simdevice._record import attach, detach
from sdnet.training import data as training_data
from sdnet.training.guard import FinitenessGuard
from sdnet.training.run import Run

__all__ = [
    "WARMUP_STEPS",
    "MeasuredRun",
    "train_steps",
    "per_step",
    "systematic_gates",
    "fixed_gates",
    "synthetic_datasets",
]

WARMUP_STEPS = 2
NEVER = 10**9  # log_every of a measured run: no log line


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
    """

    steps: list[Recording] = field(default_factory=list)
    flushed: set[int] = field(default_factory=set)
    logged: set[int] = field(default_factory=set)
    rest: Recording = field(default_factory=Recording)

    def steady(self) -> list[int]:
        """The steady steps (1-based; see the module docstring)."""
        return [
            k
            for k in range(WARMUP_STEPS + 1, len(self.steps) + 1)
            if k not in self.flushed and k not in self.logged
        ]

    def steady_recordings(self) -> list[Recording]:
        return [self.steps[k - 1] for k in self.steady()]


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


def systematic_gates(survival: Sequence[float]) -> list[bool]:
    """Batch-mode gates keeping exactly ``round(sum(survival))`` blocks, the expected count.

    Block l is kept when the running sum of the survival probabilities crosses a half-integer
    at l (systematic sampling): over the blocks, each is kept in proportion to its p_l, and the
    number kept is the expectation rounded. The launches of a step with these gates are the
    expected launches of a step (a dropped block's launches are those of its shortcut), up to
    which blocks of equal cost are kept.
    """
    sums = [0.0, *itertools.accumulate(survival)]
    return [math.floor(b + 0.5) > math.floor(a + 0.5) for a, b in itertools.pairwise(sums)]


@contextmanager
def fixed_gates() -> Iterator[None]:
    """Every training pass of every model uses :func:`systematic_gates` (batch mode)."""
    real = Model.draw_gates

    def draw(self: Model, batch_size: int) -> list[Any]:
        if self.mode != "batch":
            raise ValueError("fixed_gates is for mode='batch'")
        real(self, batch_size)  # keep the gate stream where a drawn run would leave it
        return list(systematic_gates(self.survival))

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
        Use :func:`systematic_gates` instead of drawn gates (batch mode).
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
            stack.enter_context(fixed_gates())
        stack.enter_context(per_step(measured))
        sdnet.train(epochs=1, limit_train=steps * batch, device=device, progress=False,
                    run_dir=str(tmp / "run"), **options)  # fmt: skip
    return measured
