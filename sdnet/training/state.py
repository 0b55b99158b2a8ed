"""A run's position and history, and the training checkpoint that saves and restores them.

A training checkpoint (:func:`sdnet.checkpoint.write_checkpoint` format) holds the weights and
batch-norm buffers (``model/<name>``), the momentum buffers (``optim/<name>``) and, in its
metadata, everything else resume needs to continue exactly as if never stopped: the global
step (the schedule is a function of it), the gate stream's state, the data stream's state at
the start of the current epoch (the epoch's plan is drawn again and the done batches skipped),
the partial sums of the epoch's metrics, the history and the best epoch so far.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdnet.rundir import RunDirError

__all__ = ["TrainState", "empty_partial", "checkpoint_payload", "restore"]


def empty_partial() -> dict[str, Any]:
    """The sums of an epoch not yet begun."""
    return {"loss": 0.0, "correct": 0.0, "seen": 0, "kept": 0.0, "seconds": 0.0}


@dataclass
class TrainState:
    """Where a run is: epochs and steps done, history, best epoch, this epoch's partial sums,
    and the data stream's state at the start of this epoch."""

    epoch: int = 0
    step: int = 0
    step_in_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    partial: dict[str, Any] = field(default_factory=empty_partial)
    epoch_start: Any = None

    def end_epoch(self, record: dict[str, Any]) -> bool:
        """Close the epoch with its ``record``; whether it is the best by validation accuracy."""
        self.epoch += 1
        self.step_in_epoch = 0
        self.partial = empty_partial()
        self.history.append(record)
        if "val_accuracy" not in record:
            return False
        if self.best is not None and record["val_accuracy"] <= self.best["val_accuracy"]:
            return False
        self.best = {k: record[k] for k in ("epoch", "val_accuracy", "test_accuracy")}
        return True


def checkpoint_payload(
    state: TrainState,
    model: Any,
    opt: Any,
    config: dict[str, Any],
    data_rng: Any,
    extra: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The arrays and metadata of a training checkpoint of the run's current state."""
    opt_state = opt.state_dict()
    buffers = opt_state.pop("buffers")
    data = data_rng.bit_generator.state if state.step_in_epoch == 0 else state.epoch_start
    meta = {
        "kind": "training",
        "model": dict(model.config),
        "config": config,
        "epoch": state.epoch,
        "step": state.step,
        "step_in_epoch": state.step_in_epoch,
        "rng": {"gates": model.gate_rng.bit_generator.state, "data": data},
        "optim": opt_state,
        "history": state.history,
        "best": state.best,
        "partial": state.partial,
        "extra": extra,
    }
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays |= {f"optim/{k}": v for k, v in buffers.items()}
    return arrays, meta


def restore(
    state: TrainState,
    checkpoint: tuple[dict[str, Any], dict[str, Any]],
    model: Any,
    opt: Any,
    data_rng: Any,
    where: Path,
) -> None:
    """Put the run back where ``checkpoint`` (read from ``where``) left it."""
    arrays, meta = checkpoint
    if meta.get("kind") != "training":
        raise RunDirError(f"{where} is a weights file, not a training checkpoint")
    model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model/")})
    opt_state = dict(meta["optim"])
    opt_state["buffers"] = {k[6:]: v for k, v in arrays.items() if k.startswith("optim/")}
    opt.load_state_dict(opt_state)
    state.epoch, state.step = meta["epoch"], meta["step"]
    state.step_in_epoch = meta["step_in_epoch"]
    model.gate_rng.bit_generator.state = meta["rng"]["gates"]
    data_rng.bit_generator.state = meta["rng"]["data"]
    state.epoch_start = meta["rng"]["data"]
    state.history, state.best = list(meta["history"]), meta["best"]
    state.partial = dict(meta["partial"])
