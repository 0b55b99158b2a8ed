"""A run's position and history, and the training checkpoint that saves and restores them.

A training checkpoint (:func:`sdnet.checkpoint.write_checkpoint` format) holds the weights and
batch-norm buffers (``model/<name>``), the momentum buffers (``optim/<name>``) and, in its
metadata, everything else resume needs to continue exactly as if never stopped: the global
step (the schedule is a function of it), the gate stream's state, the data stream's state at
the start of the current epoch (the epoch's plan is drawn again and the done batches skipped),
the partial sums of the epoch's metrics, the history and the best epoch so far.

It also holds the run's configuration and run id, covered by the file's checksums. Resume
(:func:`check_resumable`) compares that configuration with ``config.json``, refusing any
difference but the options listed in ``RESUME_OVERRIDES`` (they do not change the numbers), and
the run id with the run directory's ``run.json``, refusing a checkpoint copied from another
run. A checkpoint whose metadata lacks a part, or whose arrays do not fit the model, is
refused with :class:`~sdnet.checkpoint.CheckpointError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdnet.checkpoint import CheckpointError
from sdnet.rundir import CONFIG, MARKER, RunDirError

__all__ = ["TrainState", "empty_partial", "checkpoint_payload", "restore", "check_resumable"]

# the parts of a training checkpoint's metadata restore reads, and their JSON types
_PARTS: dict[str, type | tuple[type, ...]] = {
    "epoch": int,
    "step": int,
    "step_in_epoch": int,
    "rng": dict,
    "optim": dict,
    "history": list,
    "best": (dict, type(None)),
    "partial": dict,
    "config": dict,
}


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
    run_id: str | None = None,
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
        "run_id": run_id,
    }
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays |= {f"optim/{k}": v for k, v in buffers.items()}
    return arrays, meta


def check_resumable(
    meta: dict[str, Any],
    where: Path,
    config: dict[str, Any],
    run_id: str | None,
    overrides: tuple[str, ...],
) -> None:
    """Refuse to resume from checkpoint ``where`` (its metadata ``meta``) when it is not a
    whole training checkpoint, was trained with another configuration than ``config`` (the
    run's ``config.json``) in anything but ``overrides``, or belongs to another run than the
    one whose id is ``run_id`` (``None``: a run directory without ``run.json``)."""
    run_dir = where.parent
    if meta.get("kind") != "training":
        raise RunDirError(f"{where} is a weights file, not a training checkpoint")
    bad = [k for k, kind in _PARTS.items() if not _is(meta.get(k), kind)]
    if not bad:
        bad += [f"partial.{k}" for k in empty_partial() if not _is(meta["partial"].get(k), float)]
        bad += [f"rng.{k}" for k in ("gates", "data") if not _is(meta["rng"].get(k), dict)]
    if bad:
        raise CheckpointError(
            f"{where}: its metadata lacks a valid {', '.join(map(repr, bad))} (damaged, or not "
            "written by sdnet's training); the run cannot continue from it"
        )
    stored = meta.get("run_id")
    if stored != run_id:
        whose = f"run {stored}" if stored else "a run made before run ids"
        mine = f"run {run_id} ({run_dir / MARKER})" if run_id else f"a run without {MARKER}"
        raise RunDirError(
            f"{where} belongs to {whose}, but {run_dir} is {mine}: a checkpoint cannot move "
            "between runs; resume the run directory it was written in"
        )
    changed = [
        f"{k}: {meta['config'].get(k, '<unset>')!r} in the checkpoint, "
        f"{config.get(k, '<unset>')!r} in {CONFIG}"
        for k in sorted(set(config) | set(meta["config"]))
        if k not in overrides and config.get(k, _UNSET) != meta["config"].get(k, _UNSET)
    ]
    if changed:
        raise RunDirError(
            f"{run_dir / CONFIG} differs from the configuration {where.name} was trained with "
            f"({'; '.join(changed)}): put the checkpoint's values back, or start a new run with "
            f"the new ones; only {', '.join(overrides)} may change when resuming"
        )


_UNSET = object()


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    """A JSON value of ``kind`` (``float`` takes whole numbers too; ``int`` no booleans)."""
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def restore(
    state: TrainState,
    checkpoint: tuple[dict[str, Any], dict[str, Any]],
    model: Any,
    opt: Any,
    data_rng: Any,
    where: Path,
) -> None:
    """Put the run back where ``checkpoint`` (read from ``where``, checked by
    :func:`check_resumable`) left it."""
    arrays, meta = checkpoint
    try:
        model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model/")})
        opt_state = dict(meta["optim"])
        opt_state["buffers"] = {k[6:]: v for k, v in arrays.items() if k.startswith("optim/")}
        opt.load_state_dict(opt_state)
        model.gate_rng.bit_generator.state = meta["rng"]["gates"]
        data_rng.bit_generator.state = meta["rng"]["data"]
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{where}: does not fit this run's model and optimizer ({exc}); the run cannot "
            "continue from it"
        ) from exc
    state.epoch, state.step = meta["epoch"], meta["step"]
    state.step_in_epoch = meta["step_in_epoch"]
    state.epoch_start = meta["rng"]["data"]
    state.history, state.best = list(meta["history"]), meta["best"]
    state.partial = dict(meta["partial"])
