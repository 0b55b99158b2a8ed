"""A run directory: ``config.json``, ``metrics.jsonl``, ``checkpoint.npz``, ``model.npz``.

* ``config.json``     the :class:`~sdnet.config.TrainConfig` of the run (written once, atomically);
* ``metrics.jsonl``   one JSON object per line: ``{"type": "step", ...}`` every ``log_every``
  steps, ``{"type": "epoch", ...}`` per epoch (the history), ``{"type": "event", ...}`` for
  interruptions and failures;
* ``checkpoint.npz``  the latest training checkpoint (model, optimizer, schedule position,
  every RNG stream): what ``resume`` continues from;
* ``model.npz``       the final weights (:func:`sdnet.load` reads it); ``best.npz`` the weights
  at the best validation accuracy when a validation split is used.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from sdnet._io import atomic_write_bytes

__all__ = ["RunDirError", "new_run_dir", "MetricsLog", "CONFIG", "METRICS", "CHECKPOINT"]

CONFIG, METRICS, CHECKPOINT = "config.json", "metrics.jsonl", "checkpoint.npz"
MODEL, BEST = "model.npz", "best.npz"


class RunDirError(ValueError):
    """A run directory cannot be used (exists already, unreadable, not a run)."""


def new_run_dir(run_dir: str | os.PathLike[str] | None, dataset: str, model: str) -> Path:
    """Create the directory of a new run (default ``runs/<time>-<dataset>-<model>``).

    Refuses a directory that already holds a run, so nothing is overwritten.
    """
    if run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path("runs") / f"{stamp}-{dataset}-{model}"
        path, i = base, 1
        while path.exists():
            i += 1
            path = base.with_name(f"{base.name}-{i}")
    else:
        path = Path(run_dir)
    if (path / CONFIG).exists() or (path / CHECKPOINT).exists():
        raise RunDirError(
            f"{path} already holds a run; continue it with resume={str(path)!r} "
            "(sdnet train --resume DIR) or choose another run_dir"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".sdnet-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"cannot write to run directory {path}: {exc.strerror or exc}") from exc
    return path


def write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(path, lambda fh: fh.write(text.encode()))


def read_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The saved configuration of the run in ``run_dir``."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"run directory {path} does not exist")
    try:
        data = json.loads((path / CONFIG).read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path} is not an sdnet run directory (no {CONFIG})") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path / CONFIG} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise RunDirError(f"{path / CONFIG} does not hold a configuration")
    return data


class MetricsLog:
    """Append-only JSON lines, flushed after every record."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")

    def read(self) -> list[dict[str, Any]]:
        """Every record; a torn last line (crash mid-write) is skipped."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def keep_until(self, step: int) -> None:
        """Drop records written after ``step`` (the resumed checkpoint's step): on resume the
        steps after the checkpoint are trained again and logged again."""
        kept = [r for r in self.read() if r.get("step", 0) <= step or r.get("type") == "event"]
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
        atomic_write_bytes(self.path, lambda fh: fh.write(text.encode()))
