"""An epoch's running metrics, kept on the device, and the records and lines made from them.

Loss and accuracy sums stay on the device and are read back only when a log line, a progress
bar's live values, a checkpoint or the end of the epoch needs them: no sync per step. The
device holds the sums since the last read, in the model's dtype (no float64 work on a device);
each read adds them to the epoch's totals, kept on the host in double precision. On the host,
where reading costs nothing, every step is read at once: the totals then do not depend on
when they are read, which keeps a resumed run's metrics exactly those of an uninterrupted one.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["EpochMeter", "step_line", "epoch_line"]


class EpochMeter:
    """Sums of one epoch: loss and correct predictions (device), images, blocks kept, seconds.

    Parameters
    ----------
    backend : Backend
    partial : dict
        Sums carried over from a checkpoint taken inside the epoch
        (:func:`sdnet.training.state.empty_partial` for a new epoch).
    """

    def __init__(self, backend: Any, partial: dict[str, Any]) -> None:
        self.xp, self.on_host = backend.xp, backend.on_host
        self._loss, self._correct = float(partial["loss"]), float(partial["correct"])  # host
        self._dev_loss: Any = None  # device sums since the last read (None: nothing yet)
        self._dev_correct: Any = None
        self.seen, self.kept, self.steps = partial["seen"], partial["kept"], 0
        self.start_seen = partial["seen"]
        self._secs, self._t0 = partial["seconds"], time.perf_counter()
        # seen, loss and correct sums at the last log line (kept in checkpoints, so that the
        # first line after a resume covers the same steps as without the interruption)
        seen0, loss0, correct0 = partial.get("logged", (0, 0.0, 0.0))
        self._mark = (seen0, loss0, correct0, self._t0)

    def add(self, loss: Any, logits: Any, y: Any, blocks_kept: float) -> None:
        """Count one step (no sync: the sums stay on the device)."""
        xp, n = self.xp, int(y.shape[0])
        hits = xp.sum(xp.astype(xp.argmax(logits, axis=1) == y, logits.dtype))
        if self.on_host:  # free to read: double-precision totals, whatever the reading times
            self._loss += float(loss) * n
            self._correct += float(hits)
            self.seen += n
            self.kept += blocks_kept
            return
        loss_n = loss * n
        first = self._dev_loss is None
        self._dev_loss = loss_n if first else self._dev_loss + loss_n
        self._dev_correct = hits if first else self._dev_correct + hits
        self.seen += n
        self.kept += blocks_kept

    @property
    def loss(self) -> float:
        """The epoch's loss sum so far (reads the device)."""
        self._read()
        return self._loss

    @property
    def correct(self) -> float:
        """The epoch's count of correct predictions so far (reads the device)."""
        self._read()
        return self._correct

    def _read(self) -> None:
        if self._dev_loss is not None:
            self._loss += float(self._dev_loss)
            self._correct += float(self._dev_correct)
            self._dev_loss = self._dev_correct = None

    def seconds(self) -> float:
        """Training time of the epoch so far (before a resume included)."""
        return self._secs + time.perf_counter() - self._t0

    def partial(self) -> dict[str, Any]:
        """The sums as a checkpoint stores them (reads the device)."""
        return dict(
            loss=float(self.loss),
            correct=float(self.correct),
            seen=self.seen,
            kept=self.kept,
            seconds=self.seconds(),
            logged=list(self._mark[:3]),
        )

    def interval(self) -> tuple[float, float, float]:
        """Mean loss, accuracy and images per second since the last call (reads the device)."""
        seen0, loss0, correct0, t0 = self._mark
        loss, correct, now = float(self.loss), float(self.correct), time.perf_counter()
        n = max(self.seen - seen0, 1)
        self._mark = (self.seen, loss, correct, now)
        return (loss - loss0) / n, (correct - correct0) / n, n / max(now - t0, 1e-9)

    def live(self) -> dict[str, str]:
        """A progress bar's values: the epoch's mean loss and accuracy (reads the device)."""
        seen = max(self.seen, 1)
        rate = max(self.seen - self.start_seen, 1) / max(time.perf_counter() - self._t0, 1e-9)
        return {
            "loss": f"{float(self.loss) / seen:.4f}",
            "acc": f"{100 * float(self.correct) / seen:.1f}%",
            "img/s": f"{rate:.0f}",
        }

    def epoch_record(self, epoch: int, step: int, lr: float, steps: int, blocks: int) -> dict:
        """The epoch's training record (``steps`` in the epoch, ``blocks`` in the model)."""
        secs, seen = self.seconds(), max(self.seen, 1)
        return {
            "type": "epoch",
            "epoch": epoch,
            "step": step,
            "lr": lr,
            "train_loss": float(self.loss) / seen,
            "train_accuracy": float(self.correct) / seen,
            "images_per_second": self.seen / secs if secs else 0.0,
            "blocks_kept": self.kept / max(steps, 1),
            "kept_fraction": self.kept / max(steps, 1) / max(blocks, 1),
        }


def step_line(rec: dict[str, Any], epochs: int, total_steps: int) -> str:
    """The log line of a step record."""
    return (
        f"epoch {rec['epoch']}/{epochs} step {rec['step']}/{total_steps} "
        f"loss {rec['loss']:.4f} acc {100 * rec['accuracy']:.2f}% lr {rec['lr']:.4g} "
        f"{rec['images_per_second']:.0f} img/s"
    )


def epoch_line(r: dict[str, Any], epochs: int) -> str:
    """The line printed at the end of an epoch."""
    val = f" val {100 * r['val_accuracy']:.2f}%" if "val_accuracy" in r else ""
    return (
        f"epoch {r['epoch']}/{epochs}: train loss {r['train_loss']:.4f} "
        f"acc {100 * r['train_accuracy']:.2f}%{val} test loss {r['test_loss']:.4f} "
        f"acc {100 * r['test_accuracy']:.2f}% ({r['seconds']:.1f} s, "
        f"{r['images_per_second']:.0f} img/s, {r['blocks_kept']:.2f} blocks kept)"
    )
