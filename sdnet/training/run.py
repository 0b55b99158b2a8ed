"""``sdnet.train``: one call from options to a trained model, a run directory and a history.

The loop, per step: the host plan gives the batch (already on the device) -> forward with this
step's gates -> mean cross-entropy -> backprops in reverse -> finiteness check -> SGD step
with the schedule's learning rate. After each epoch: evaluate, then checkpoint. Everything else
has a module of its own: the data (:mod:`~sdnet.training.data`), the model and optimizer
(:mod:`~sdnet.training.setup`), the finiteness guard (:mod:`~sdnet.training.guard`), the
metrics (:mod:`~sdnet.training.metrics`), the training state and its checkpoint
(:mod:`~sdnet.training.state`), the files written (:mod:`~sdnet.training.output`) and Ctrl-C
(:mod:`~sdnet.training.signals`).

One process at a time trains in a run directory (``RUN_DIR/.lock``, see :mod:`sdnet.rundir`).
Resume is exact on the CPU: see :mod:`sdnet.training.state` for what a checkpoint holds.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from sdnet.backends import get_backend
from sdnet.checkpoint import read_checkpoint, save, write_checkpoint
from sdnet.config import ConfigError, TrainConfig, check_keys
from sdnet.evaluate import evaluate_loader
from sdnet.functional import softmax_cross_entropy, softmax_cross_entropy_backward
from sdnet.progress import Progress, want_bars
from sdnet.random import make_streams
from sdnet.recipes import configure
from sdnet.rundir import (
    BEST,
    CHECKPOINT,
    CONFIG,
    MODEL,
    RunDirError,
    RunLock,
    claim_new_run_dir,
    read_config,
    read_marker,
    write_json,
    write_marker,
)
from sdnet.training.data import load_training_data
from sdnet.training.guard import FinitenessGuard, NonFiniteError
from sdnet.training.metrics import EpochMeter, epoch_line, step_line
from sdnet.training.output import RunOutput
from sdnet.training.setup import build_model, build_optimizer, build_schedule, check_memory
from sdnet.training.signals import Interrupted, StopRequest, signal_name
from sdnet.training.state import TrainState, check_resumable, checkpoint_payload, restore

__all__ = ["train", "TrainResult", "RESUME_OVERRIDES"]

LIVE_EVERY = 10  # steps between updates of a progress bar's loss/accuracy (a device sync)

# options that may differ when a run is resumed (they do not change the numbers)
RESUME_OVERRIDES = ("device", "progress", "data_dir", "download", "log_every")

Checkpoint = tuple[dict[str, Any], dict[str, Any]]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : sdnet.Model
        The trained model, on the training device.
    history : list of dict
        One entry per epoch: ``epoch``, ``step``, ``lr``, ``train_loss``, ``train_accuracy``,
        ``test_loss``, ``test_accuracy`` (``val_loss``, ``val_accuracy`` with a validation
        split), ``seconds``, ``images_per_second``, ``blocks_kept`` (mean residual blocks
        computed per step) and ``kept_fraction``.
    test_accuracy, test_loss : float
        On the test set after the last epoch.
    best : dict or None
        With a validation split: the epoch of best validation accuracy and the test accuracy
        then (the paper's protocol; :attr:`test_error_at_best` is its error).
    run_dir : Path
    config : TrainConfig
    """

    model: Any
    history: list[dict[str, Any]]
    test_accuracy: float
    test_loss: float
    best: dict[str, Any] | None
    run_dir: Path
    config: TrainConfig

    @property
    def test_error_at_best(self) -> float | None:
        """The test error at the epoch of lowest validation error, what the paper reports
        (``None`` without a validation split)."""
        return None if self.best is None else 1.0 - self.best["test_accuracy"]


def train(
    config: TrainConfig | None = None, *, resume: str | Path | None = None, **options: Any
) -> TrainResult:
    """Train a stochastic-depth network; every option of :class:`~sdnet.config.TrainConfig`
    is a keyword argument.

    Parameters
    ----------
    config : TrainConfig, optional
        Start from this configuration (keyword options override its fields).

    resume : path, optional
        A run directory to continue from its last checkpoint. Its saved configuration is used;
        only ``device``, ``progress``, ``data_dir``, ``download`` and ``log_every`` may be given
        (:data:`RESUME_OVERRIDES`). The checkpoint must have been written by this run (its run
        id) with this configuration: ``config.json`` edited in anything else is refused.
    **options
        Any field of :class:`~sdnet.config.TrainConfig` (``dataset``, ``model``, ``epochs``,
        ``device``, ``lr``, ``p_last``, ...). ``recipe=NAME`` starts from that recipe
        (:mod:`sdnet.recipes`) instead of the defaults, the other options over it; it cannot
        be combined with ``config``.

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        A bad option (before anything is read or built), or a model whose weights, gradients,
        momentum and activations would not fit in this machine's memory (estimated before
        anything is allocated).
    sdnet.BackendUnavailable
        The requested device cannot be used.
    RunDirError
        The run directory holds another run or other files, is ``/`` or the home folder, or
        another process is training in it; resuming: ``config.json`` differs from the
        checkpoint's configuration, or the checkpoint belongs to another run.
    NonFiniteError
        The input batch, the loss or a gradient became NaN or infinite; the last good
        checkpoint stays in the run directory.
    sdnet.rundir.RunWriteError
        A checkpoint, weights or metrics file could not be written (an ``OSError``: disk full,
        I/O error); the previous checkpoint stays whole.
    sdnet.Interrupted
        A ``KeyboardInterrupt``: after Ctrl-C, SIGTERM or SIGHUP, once a checkpoint of the last
        completed step is saved (``checkpointed``); a second signal stops at once.

    Examples
    --------
    >>> import sdnet
    >>> result = sdnet.train(epochs=1, limit_train=512, limit_test=256, progress=False,
    ...                      run_dir=tmp / "run")  # doctest: +SKIP
    """
    check_keys(options)
    with StopRequest() as stop:  # SIGTERM, SIGHUP, Ctrl-C: see sdnet.training.signals
        if resume is not None:
            cfg, run_dir, lock, ckpt = _open_resumed(Path(resume), config, options)
        else:
            cfg = configure(config, options).validate()
            # claim (lock and check) the directory before the slow work
            run_dir, lock = claim_new_run_dir(cfg.run_dir, cfg.dataset, cfg.model)
            ckpt = None
        try:
            run = Run(cfg, run_dir, ckpt, resuming=resume is not None, lock_note=lock.note)
        except BaseException:
            lock.release()
            if resume is None and not any(run_dir.iterdir()):  # give back what was claimed
                run_dir.rmdir()
            raise
        try:
            return run.run(stop)
        finally:
            lock.release()


def _open_resumed(
    run_dir: Path, config: TrainConfig | None, options: dict[str, Any]
) -> tuple[TrainConfig, Path, RunLock, Checkpoint | None]:
    """The saved configuration (with the allowed overrides), the lock, the last checkpoint
    (checked against the saved configuration and the run's id)."""
    saved = read_config(run_dir)
    fixed = {k: v for k, v in options.items() if k not in RESUME_OVERRIDES}
    if config is not None or fixed:
        raise ConfigError(
            f"resuming {run_dir} continues its saved configuration; only "
            f"{', '.join(RESUME_OVERRIDES)} may be given (got {', '.join(fixed) or 'config'})"
        )
    try:
        cfg = TrainConfig.from_dict(saved).validate()
    except (TypeError, ConfigError) as exc:
        raise RunDirError(
            f"{run_dir / CONFIG} does not hold a usable configuration: {exc}"
        ) from None
    cfg = cfg.replace(**options).validate()  # a bad flag is the caller's error (status 2)
    lock = RunLock.acquire(run_dir)  # before reading: nobody else writes it from now on
    try:
        # a run stopped before its first checkpoint starts over with its saved options
        ckpt = read_checkpoint(run_dir / CHECKPOINT) if _exists(run_dir / CHECKPOINT) else None
        if ckpt is not None:
            check_resumable(ckpt[1], run_dir / CHECKPOINT, saved, read_marker(run_dir),
                            RESUME_OVERRIDES)  # fmt: skip
    except BaseException:
        lock.release()
        raise
    return cfg, run_dir, lock, ckpt


def _exists(path: Path) -> bool:
    """Whether anything is at ``path`` (a dangling symbolic link too)."""
    return path.exists() or path.is_symlink()


class Run:
    """One training run: what :func:`train` sets up, and the loop (:meth:`run`)."""

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        ckpt: Checkpoint | None,
        *,
        resuming: bool,
        lock_note: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.backend = get_backend(cfg.device)
        check_memory(cfg, self.backend)  # a model that cannot fit: refused before any work
        self.progress = Progress(want_bars(cfg.progress))
        self.out = RunOutput(run_dir, self.progress)
        self.data = load_training_data(cfg, self.backend, self.progress.bars)
        self.model = build_model(cfg, self.data.train, self.backend)
        self.opt = build_optimizer(cfg, self.model)
        self.schedule = build_schedule(cfg, len(self.data.loader))
        self.total_steps = cfg.epochs * len(self.data.loader)
        self.data_rng = make_streams(cfg.seed).data
        params = list(self.model.named_parameters())
        classes = self.model.config.get("num_classes")
        self.guard = FinitenessGuard(params, self.backend, self._diverged, classes)
        self.state = TrainState()
        self.run_id = self._begin(run_dir, ckpt, resuming)
        if resuming:
            self.out.log.keep_until(self.state.step)
            start = "" if ckpt is not None else f" (no {CHECKPOINT} yet: from the start)"
            where = f"epoch {self.state.epoch + 1}, step {self.state.step}"
            self.progress.write(f"resuming {run_dir} at {where}{start}")
        if lock_note:
            self.progress.write(lock_note)
            self.out.event("lock-taken-over", lock_note)

    def _begin(self, run_dir: Path, ckpt: Checkpoint | None, resuming: bool) -> str | None:
        """Restore the checkpoint, or write ``config.json`` and ``run.json`` of a run that
        starts (``config.json`` is written once: a run starting over keeps its own); returns
        the run id (``None``: a run made before run ids, resumed)."""
        if ckpt is not None:
            restore(self.state, ckpt, self.model, self.opt, self.data_rng, self.out.checkpoint)
            self.out.checkpoint_step = self.out.step = self.state.step
            return read_marker(run_dir)  # the checkpoint's, checked by check_resumable
        if not resuming:
            write_json(run_dir / CONFIG, self.cfg.to_dict())
        return read_marker(run_dir) or write_marker(run_dir)

    # -- the algorithm ------------------------------------------------------------------------
    def run(self, stop: StopRequest | None = None) -> TrainResult:
        """Train the remaining epochs: for each epoch, for each batch, step; then evaluate and
        checkpoint. Save the final weights and return the result. A stop signal (``stop``'s)
        ends the run after the step in progress, with a checkpoint."""
        stop = stop or StopRequest()
        try:
            # CuPy computes on its current device: make the run's device current (cuda:N)
            with stop.deferred(), self.backend.activate():
                while self.state.epoch < self.cfg.epochs:
                    meter = self.train_epoch(stop)
                    self.end_epoch(meter)
        except KeyboardInterrupt as exc:
            if getattr(exc, "checkpointed", False):  # the last whole step is saved
                raise
            self._interrupted_mid_step(exc)
        finally:
            self.progress.close()
        self.out.write(MODEL, lambda p: save(self.model, p, extra=self._extra(), overwrite=True))
        last = self.state.history[-1]
        return TrainResult(
            self.model,
            self.state.history,
            last["test_accuracy"],
            last["test_loss"],
            self.state.best,
            self.out.run_dir,
            self.cfg,
        )

    def train_epoch(self, stop: StopRequest) -> EpochMeter:
        """The steps of one epoch (from the first not yet done)."""
        st, loader = self.state, self.data.loader
        if st.step_in_epoch == 0:
            st.epoch_start = self.data_rng.bit_generator.state
        plan = loader.plan_epoch(self.data_rng)
        meter = EpochMeter(self.backend, st.partial)
        self.progress.start_epoch(st.epoch + 1, self.cfg.epochs, len(loader), st.step_in_epoch)
        for x, y in loader.batches(plan, start=st.step_in_epoch):
            loss, logits = self.step(x, y)
            meter.add(loss, logits, y, self.model.kept_fraction() * len(self.model.blocks))
            st.step += 1
            st.step_in_epoch += 1
            self.out.step = st.step
            self.progress.advance()
            self.between_steps(meter, stop)
        self.guard.flush(st.step, self.opt.lr)
        return meter

    def step(self, x: Any, y: Any) -> tuple[Any, Any]:
        """One SGD step on the batch ``(x, y)``; returns the loss and the logits."""
        lr = self.opt.lr = self.schedule(self.state.step)
        self.model.zero_grad()
        logits, backprop = self.model(x, train=True, need_dx=False)  # gates drawn here
        loss, saved = softmax_cross_entropy(logits, y)
        backprop(softmax_cross_entropy_backward(saved, 1.0))
        grads = self.opt.flat_grads()  # one flat gradient per parameter segment
        self.guard.after_backward(self.state.step + 1, x, loss, grads, lr, y)  # before the update
        self.opt.step(grads)
        return loss, logits

    def end_epoch(self, meter: EpochMeter) -> None:
        """Evaluate, record the epoch, keep the best weights, checkpoint."""
        st = self.state
        lr = self.schedule(st.step - 1)
        blocks = len(self.model.blocks)
        record = meter.epoch_record(st.epoch + 1, st.step, lr, st.step_in_epoch, blocks)
        for split, loader in self.data.eval_loaders.items():
            res = evaluate_loader(self.model, loader)
            record[f"{split}_loss"], record[f"{split}_accuracy"] = res["loss"], res["accuracy"]
        record["seconds"] = meter.seconds()
        self.guard.check_weights(list(self.model.named_parameters()), st.step, self.opt.lr)
        if st.end_epoch(record):
            self.out.write(BEST, lambda p: save(self.model, p, extra=self._extra(), overwrite=True))
        self.out.record(record)
        self.checkpoint()
        self.progress.end_epoch(epoch_line(record, self.cfg.epochs))

    # -- between steps ------------------------------------------------------------------------
    def between_steps(self, meter: EpochMeter, stop: StopRequest) -> None:
        """Read the deferred checks, write a log line or a checkpoint when one is due, and stop
        after this step if Ctrl-C asked for it."""
        cfg, step = self.cfg, self.state.step
        stopping = stop.requested  # read once: a later Ctrl-C is served after the next step
        log_due = stopping or step % cfg.log_every == 0
        ckpt_due = stopping or bool(cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
        if self.guard.pending and (self.guard.due() or log_due or ckpt_due):
            self.guard.flush(step, self.opt.lr)
        if log_due:
            self.log_interval(meter)
        elif self.progress.bars and step % LIVE_EVERY == 0:  # a bar's live values, no log line
            self.progress.show(meter.live(), "")
        if ckpt_due:
            self.state.partial = meter.partial()
            self.checkpoint()
        if stopping:
            self._interrupted(stop.signum or signal.SIGINT)

    def log_interval(self, meter: EpochMeter) -> None:
        loss, accuracy, rate = meter.interval()
        rec = {
            "type": "step",
            "epoch": self.state.epoch + 1,
            "step": self.state.step,
            "lr": self.opt.lr,
            "loss": loss,
            "accuracy": accuracy,
            "images_per_second": rate,
        }
        self.out.record(rec)
        bar = {"loss": f"{loss:.4f}", "acc": f"{100 * accuracy:.1f}%", "img/s": f"{rate:.0f}"}
        self.progress.show(bar, step_line(rec, self.cfg.epochs, self.total_steps))

    def checkpoint(self) -> None:
        """Write the training checkpoint (atomically) after checking the weights are finite."""
        self.guard.check_weights(list(self.model.named_parameters()), self.state.step, self.opt.lr)
        arrays, meta = checkpoint_payload(
            self.state,
            self.model,
            self.opt,
            self.cfg.to_dict(),
            self.data_rng,
            self._extra(),
            self.run_id,
        )
        self.out.write(CHECKPOINT, lambda p: write_checkpoint(p, arrays, meta))
        self.out.checkpoint_step = self.state.step

    def _extra(self) -> dict[str, Any]:
        ds = self.data.train
        return {
            "dataset": self.cfg.dataset,
            "mean": list(ds.mean),
            "std": list(ds.std),
            "normalize": self.cfg.normalize,
        }

    # -- stopping -----------------------------------------------------------------------------
    def _diverged(self, what: str, lr: float, cause: str, advice: str) -> NoReturn:
        self.progress.close()
        msg = (
            f"training stopped: {what} (epoch {self.state.epoch + 1}, learning rate {lr:.4g})"
            f"{'; ' + cause if cause else ''}; {self.out.kept()}. {advice}"
        )
        self.out.event("non-finite", msg)
        raise NonFiniteError(msg)

    def _interrupted(self, signum: int) -> NoReturn:
        """The first stop signal, served after a whole step whose checkpoint is saved."""
        self.progress.close()
        msg = (
            f"interrupted ({signal_name(signum)}) at step {self.state.step}; checkpoint saved "
            f"to {self.out.checkpoint}. Resume with {self.out.resume_hint()}"
        )
        self.progress.write(msg)
        self.out.event("interrupted", msg)
        raise Interrupted(msg, signum, checkpointed=True)

    def _interrupted_mid_step(self, exc: KeyboardInterrupt) -> NoReturn:
        """A second stop signal (or one outside the main thread): nothing saved for this
        step; the event is logged all the same."""
        self.progress.close()
        signum = getattr(exc, "signum", signal.SIGINT)
        step, name = self.state.step + 1, signal_name(signum)
        msg = (
            f"interrupted ({name}) during step {step}; the last checkpoint, "
            f"{self.out.checkpoint}, is intact. Resume with {self.out.resume_hint()}"
            if self.out.checkpoint.is_file()
            else f"interrupted ({name}) during step {step}, before any checkpoint"
        )
        self.out.event("interrupted", msg)
        raise Interrupted(msg, signum) from None
