"""The finiteness guard: a NaN or infinite loss, gradient or weight stops the run where it
appears, before a bad update is saved anywhere, with a message naming the step and the culprit.

Two policies, by where the arrays live (:attr:`sdnet.backends.Backend.on_host`):

* **on the host** each step's flag (loss and every gradient finite) is read at once, before
  the update, which costs nothing there; a bad step is diagnosed (the input batch, the loss or
  which gradient) and its update is never applied;
* **on a device** reading a value stalls the queue, so the flags stay on the device and the
  pending ones are read together every :data:`CHECK_EVERY_ON_DEVICE` steps and before every
  checkpoint, log line and evaluation (one sync); the first bad step is named. The steps after
  it were applied, and are never saved: every checkpoint is written after a check that passed.

The weights themselves are checked before every checkpoint and at the end of every epoch.

Labels outside ``0 .. K-1`` make the loss NaN by construction (:mod:`sdnet.functional.loss`),
so such a step fails the same check. Naming the labels as the cause costs nothing on the normal
path: the step's label array is kept by reference with its flag (the last few batches' labels
on a device), and only after a failure is it read and compared with the class count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["NonFiniteError", "FinitenessGuard", "CHECK_EVERY_ON_DEVICE", "defers_checks"]

# steps between reads of the deferred flags on a device
CHECK_EVERY_ON_DEVICE = 10
ADVICE = "Lower the learning rate or add warm-up (warmup_epochs) and train again."
DATA_ADVICE = (
    "The data, not the training, is at fault: check the dataset files and any preprocessing."
)

# stop(what, lr, cause, advice): raises NonFiniteError with the run's context
Stop = Callable[[str, float, str, str], NoReturn]


class NonFiniteError(FloatingPointError):
    """The input batch, the loss, a gradient or the weights became NaN or infinite; the run
    stopped."""


def defers_checks(backend: Any) -> bool:
    """Whether the per-step check is deferred: on devices, where reading a value stalls."""
    return not backend.on_host


class FinitenessGuard:
    """Checks one run's loss, gradients and weights (see the module docstring).

    Parameters
    ----------
    params : list of (name, Param)
        The model's trainable parameters.
    backend : Backend
    stop : callable
        ``stop(what, lr, cause, advice)``: stops the run (raises); called on the first bad value.
    num_classes : int, optional
        The model's class count: a failed step's labels are compared with it (diagnosis only).
    """

    def __init__(
        self,
        params: list[tuple[str, Any]],
        backend: Any,
        stop: Stop,
        num_classes: int | None = None,
    ) -> None:
        self.params, self.backend, self._stop = params, backend, stop
        self.num_classes = num_classes
        self.defer = defers_checks(backend)
        self.pending: list[tuple[int, Any, Any]] = []  # (step, device flag, labels) not read yet

    def flag(self, loss: Any, grads: list[Any]) -> Any:
        """A 0-d device bool: the loss and every gradient are finite (no sync). ``grads``: the
        step's flat gradients (:meth:`sdnet.SGD.flat_grads`), one reduction each."""
        xp = self.backend.xp
        ok = xp.isfinite(loss)
        for g in grads:
            ok = ok & xp.all(xp.isfinite(g))
        return ok

    def finite(self, loss: Any, grads: list[Any]) -> bool:
        """Whether the loss and every gradient are finite: one scalar read back."""
        return bool(self.flag(loss, grads))

    def after_backward(
        self, step: int, x: Any, loss: Any, grads: list[Any], lr: float, y: Any = None
    ) -> None:
        """Check step ``step`` (1-based) after its backward pass, before its update; ``y``, the
        step's labels, is only looked at if the check fails."""
        if self.defer:
            self.pending.append((step, self.flag(loss, grads), y))
        elif not self.finite(loss, grads):
            self._diagnose(step, x, loss, lr, y)

    def due(self) -> bool:
        """Whether enough deferred flags are pending to read them now."""
        return len(self.pending) >= CHECK_EVERY_ON_DEVICE

    def flush(self, step: int, lr: float) -> None:
        """Read the pending flags at once (one sync); stop at the first bad step."""
        if not self.pending:
            return
        xp = self.backend.xp
        pending, self.pending = self.pending, []
        ok = [bool(v) for v in self.backend.to_numpy(xp.stack([f for _, f, _ in pending]))]
        if all(ok):
            return
        bad_step, _, labels = pending[ok.index(False)]
        where = (
            f"found at the check after step {step}; on a GPU the check is read every "
            f"{CHECK_EVERY_ON_DEVICE} steps, so the steps after it were applied and not saved"
        )
        wrong = self._bad_labels(labels)
        if wrong:
            what = f"the loss became non-finite at step {bad_step}"
            self._stop(what, lr, f"{wrong}; {where}", DATA_ADVICE)
        what = f"the loss or a gradient became non-finite at step {bad_step}"
        self._stop(what, lr, where, ADVICE)

    def check_weights(self, params: list[tuple[str, Any]], step: int, lr: float) -> None:
        """Refuse non-finite weights (one sync; the name is looked up only on failure)."""
        xp = self.backend.xp
        finite = [xp.all(xp.isfinite(p.value)) for _, p in params]
        if bool(xp.all(xp.stack(finite))):
            return
        name = next(n for (n, _), ok in zip(params, finite, strict=True) if not bool(ok))
        self._stop(f"parameter {name} became non-finite after step {step}", lr, "", ADVICE)

    def _bad_labels(self, y: Any) -> str:
        """What is wrong with a failed step's labels ``y`` (``""``: nothing, or unknown)."""
        if y is None or self.num_classes is None:
            return ""
        labels = self.backend.to_numpy(y).reshape(-1)  # (B,), read after the failure only
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if not bad.size:
            return ""
        return (
            f"its labels hold {bad.size} value(s) outside 0..{self.num_classes - 1} "
            f"(e.g. {int(bad[0])}), which make the loss NaN"
        )

    def _diagnose(self, step: int, x: Any, loss: Any, lr: float, y: Any = None) -> NoReturn:
        """Stop at the step whose input, labels, loss or gradient is NaN/infinite or out of
        range, naming which."""
        xp = self.backend.xp
        wrong = self._bad_labels(y)
        if wrong:
            self._stop(f"the loss became non-finite at step {step}", lr, wrong, DATA_ADVICE)
        if bool(xp.isfinite(loss)):
            name = next(
                n
                for n, p in self.params
                if p.grad is not None and not bool(xp.all(xp.isfinite(p.grad)))
            )
            self._stop(f"the gradient of {name} became non-finite at step {step}", lr, "", ADVICE)
        bad = int(xp.sum(xp.astype(~xp.isfinite(x), xp.int64)))
        what = f"the loss became {float(loss)} at step {step}"
        if not bad:
            self._stop(what, lr, "", ADVICE)
        self._stop(what, lr, f"its input batch holds {bad} NaN or infinite values", DATA_ADVICE)
