"""``sdnet.train``: one call from options to a trained model, a run directory and a history.

The loop, per step: the host plan gives the batch (already on the device) -> forward with this
step's gates -> mean cross-entropy -> backprops in reverse -> SGD step with the schedule's
learning rate. Loss and accuracy sums stay on the device and are read back only when a log line
or the end of an epoch needs them. Only the finiteness of the loss and of the gradients is
checked every step (one scalar, one device sync): a NaN or infinite value stops the run at the
step it appears, before its update is applied or saved anywhere, with a message saying whether
the input batch, the loss or which gradient went bad.

One process at a time trains in a run directory (``RUN_DIR/.lock``, see :mod:`sdnet.rundir`).
A checkpoint, weights or metrics file that cannot be written (disk full, I/O error) stops the
run with :class:`~sdnet.rundir.RunWriteError` naming the file and the error; the previous
checkpoint stays whole and the run can be resumed once the disk is fixed.

Resume is exact on the CPU: a checkpoint holds the weights and batch-norm buffers, the momentum
buffers, the global step (the schedule is a function of it), the gate stream's state, the data
stream's state at the start of the current epoch (the epoch's plan is drawn again and the done
batches skipped) and the partial sums of the epoch's metrics.
"""

from __future__ import annotations

import errno
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdnet.backends import get_backend
from sdnet.checkpoint import read_checkpoint, save, write_checkpoint
from sdnet.config import ConfigError, TrainConfig, check_keys
from sdnet.data import DATASETS, Loader, load_dataset, split_train_val
from sdnet.evaluate import evaluate_loader
from sdnet.functional import softmax_cross_entropy, softmax_cross_entropy_backward
from sdnet.models import build_model
from sdnet.optim import SGD, make_schedule, param_groups
from sdnet.progress import Progress, want_bars
from sdnet.random import make_streams
from sdnet.rundir import (
    BEST,
    CHECKPOINT,
    CONFIG,
    METRICS,
    MODEL,
    MetricsLog,
    RunDirError,
    RunLock,
    RunWriteError,
    claim_new_run_dir,
    read_config,
    write_json,
)

__all__ = ["train", "TrainResult", "NonFiniteError", "RESUME_OVERRIDES"]

LIVE_EVERY = 10  # steps between updates of a progress bar's loss/accuracy (a device sync)
# On a GPU the finiteness of loss and gradients is gathered on the device and read every this
# many steps (and before every checkpoint, log line and evaluation): one sync, not one per step.
CHECK_EVERY_ON_DEVICE = 10


def _defers_checks(backend: Any) -> bool:
    """Whether the per-step finiteness check is deferred: on devices, where reading a value
    stalls the queue. On the host reading it costs nothing, so each step is checked at once."""
    from sdnet._array_api import on_host

    return not on_host(backend.asarray([0.0]))


# options that may differ when a run is resumed (they do not change the numbers)
RESUME_OVERRIDES = ("device", "progress", "data_dir", "download", "log_every")


class NonFiniteError(FloatingPointError):
    """The input batch, the loss, a gradient or the weights became NaN or infinite; the run
    stopped."""


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
        then (the paper's protocol).
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
        only ``device``, ``progress``, ``data_dir``, ``download`` and ``log_every`` may be given.
    **options
        Any field of :class:`~sdnet.config.TrainConfig` (``dataset``, ``model``, ``epochs``,
        ``device``, ``lr``, ``p_last``, ...).

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        A bad option (before anything is read or built).
    sdnet.BackendUnavailable
        The requested device cannot be used.
    RunDirError
        The run directory holds another run, or another process is training in it.
    NonFiniteError
        The input batch, the loss or a gradient became NaN or infinite; the last good
        checkpoint stays in the run directory.
    sdnet.rundir.RunWriteError
        A checkpoint, weights or metrics file could not be written (an ``OSError``: disk full,
        I/O error); the previous checkpoint stays whole.
    KeyboardInterrupt
        After Ctrl-C, once a checkpoint of the last completed step is saved.

    Examples
    --------
    >>> import sdnet
    >>> result = sdnet.train(epochs=1, limit_train=512, limit_test=256, progress=False,
    ...                      run_dir=tmp / "run")  # doctest: +SKIP
    """
    check_keys(options)
    ckpt: tuple[dict[str, Any], dict[str, Any]] | None = None
    if resume is not None:
        run_dir = Path(resume)
        saved = read_config(run_dir)
        fixed = {k: v for k, v in options.items() if k not in RESUME_OVERRIDES}
        if config is not None or fixed:
            raise ConfigError(
                f"resuming {run_dir} continues its saved configuration; only "
                f"{', '.join(RESUME_OVERRIDES)} may be given (got {', '.join(fixed) or 'config'})"
            )
        cfg = TrainConfig.from_dict(saved).replace(**options).validate()
        lock = RunLock.acquire(run_dir)  # before reading: nobody else writes it from now on
        try:
            # a run stopped before its first checkpoint starts over with its saved options
            if (run_dir / CHECKPOINT).exists():
                ckpt = read_checkpoint(run_dir / CHECKPOINT)
            run = _Run(cfg, ckpt, run_dir, lock)
        except BaseException:
            lock.release()
            raise
        return run.run()
    cfg = (config or TrainConfig()).replace(**options).validate()
    return _Run(cfg, None, None, None).run()


class _Run:
    """One training run's objects and counters (the body of :func:`train`)."""

    def __init__(
        self,
        cfg: TrainConfig,
        ckpt: tuple[dict[str, Any], dict[str, Any]] | None,
        resume_dir: Path | None,
        lock: RunLock | None,
    ) -> None:
        self.cfg = cfg
        self.resuming = resume_dir is not None
        self.ckpt_step: int | None = ckpt[1].get("step") if ckpt is not None else None
        self.backend = get_backend(cfg.device)
        self.bars = want_bars(cfg.progress)
        self.progress = Progress(self.bars)
        if resume_dir is not None and lock is not None:  # train() holds the lock
            self.run_dir, self.lock = resume_dir, lock
            self._setup(ckpt)
            return
        # a new run: claim (lock and check) the directory before the slow work, and give it
        # back if the setup fails before anything is written
        self.run_dir, self.lock = claim_new_run_dir(cfg.run_dir, cfg.dataset, cfg.model)
        try:
            self._setup(None)
        except BaseException:
            self.lock.release()
            if not any(self.run_dir.iterdir()):
                self.run_dir.rmdir()
            raise

    def _setup(self, ckpt: tuple[dict[str, Any], dict[str, Any]] | None) -> None:
        cfg = self.cfg
        self._load_data()
        self.model = _build(cfg, self.train_ds, self.backend)
        self.params = list(self.model.named_parameters())
        self.defer_checks = _defers_checks(self.backend)
        self.pending: list[tuple[int, Any]] = []  # (step, device flag) not read yet
        groups = param_groups(
            self.model.named_parameters(),
            weight_decay=cfg.weight_decay,
            decay_bn_and_bias=cfg.decay_bn_and_bias,
            lr_mult=cfg.lr_mult,
        )
        self.opt = SGD(
            groups,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
            decoupled_weight_decay=cfg.decoupled_weight_decay,
            skip_missing=cfg.dropped_params == "freeze",
        )
        spe = len(self.loader)
        self.total_steps = cfg.epochs * spe
        self.schedule = make_schedule(
            cfg.schedule,
            base_lr=cfg.lr,
            total_steps=self.total_steps,
            steps_per_epoch=spe,
            milestones=list(cfg.milestones) or None,
            gamma=cfg.gamma,
            warmup_steps=int(round(cfg.warmup_epochs * spe)),
        )
        self.data_rng = make_streams(cfg.seed).data
        self.epoch, self.step, self.step_in_epoch = 0, 0, 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.partial: dict[str, Any] = {
            "loss": 0.0,
            "correct": 0.0,
            "seen": 0,
            "kept": 0.0,
            "seconds": 0.0,
        }
        self.log = MetricsLog(self.run_dir / METRICS)
        if ckpt is not None:
            self._restore(*ckpt)
        elif not self.resuming:  # written once; a resumed run keeps its file
            write_json(self.run_dir / CONFIG, cfg.to_dict())
        if self.resuming:
            self.log.keep_until(self.step)
            where = f"epoch {self.epoch + 1}, step {self.step}"
            start = "" if ckpt is not None else f" (no {CHECKPOINT} yet: from the start)"
            self.progress.write(f"resuming {self.run_dir} at {where}{start}")
        if self.lock.note:
            self.progress.write(self.lock.note)
            self._event("lock-taken-over", self.lock.note)

    # -- setup ------------------------------------------------------------------------------
    def _load_data(self) -> None:
        cfg = self.cfg
        kw: dict[str, Any] = dict(data_dir=cfg.data_dir, download=cfg.download, progress=self.bars)
        train_ds = load_dataset(cfg.dataset, split="train", **kw)
        test_ds = load_dataset(cfg.dataset, split="test", **kw)
        if cfg.limit_train:
            train_ds = train_ds.subset(np.arange(min(cfg.limit_train, len(train_ds.labels))))
        if cfg.limit_test:
            test_ds = test_ds.subset(np.arange(min(cfg.limit_test, len(test_ds.labels))))
        self.val_ds = None
        if cfg.val_split:
            n = len(train_ds.labels)
            size = int(cfg.val_split) if cfg.val_split >= 1 else cfg.val_split
            # a stream of its own (the 4th child of the seed), so the split never moves
            rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(3,)))
            tr, va = split_train_val(n, size, rng)
            self.val_ds, train_ds = train_ds.subset(va), train_ds.subset(tr)
        self.train_ds, self.test_ds = train_ds, test_ds
        aug = dict(DATASETS[cfg.dataset].default_augment)
        if cfg.augment is not None:
            aug = dict(aug, crop_pad=(4 if cfg.dataset.startswith("cifar") else 2) * cfg.augment)
            aug["hflip"] = bool(cfg.augment) and cfg.dataset.startswith("cifar")
        if cfg.crop_pad is not None:
            aug["crop_pad"] = cfg.crop_pad if cfg.augment is not False else 0
        self.augment = aug
        common = dict(backend=self.backend, dtype=cfg.dtype)
        self.loader = Loader(train_ds, batch_size=cfg.batch_size, shuffle=True, **common, **aug)
        self.eval_loaders = {
            "test": Loader(test_ds, batch_size=cfg.eval_batch_size, shuffle=False, **common)
        }
        if self.val_ds is not None:
            self.eval_loaders["val"] = Loader(
                self.val_ds, batch_size=cfg.eval_batch_size, shuffle=False, **common
            )

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> TrainResult:
        try:
            return self._run()
        finally:
            self.lock.release()

    def _run(self) -> TrainResult:
        cfg = self.cfg
        stop = _InterruptFlag()
        try:
            # CuPy computes on its current device: make the run's device current (cuda:N)
            with stop, self.backend.activate():
                while self.epoch < cfg.epochs:
                    self._epoch(stop)
        except KeyboardInterrupt:
            if stop.requested:  # the checkpoint of the last whole step is saved
                raise
            # interrupted mid-step (second Ctrl-C, or outside the main thread): nothing saved
            self.progress.close()
            ck = self.run_dir / CHECKPOINT
            msg = (
                f"interrupted during step {self.step + 1}; the last checkpoint, {ck}, is "
                f"intact. Resume with sdnet.train(resume={str(self.run_dir)!r}) or "
                f"`sdnet train --resume {self.run_dir}`"
                if ck.exists()
                else f"interrupted during step {self.step + 1}, before any checkpoint"
            )
            self._event("interrupted", msg)
            raise KeyboardInterrupt(msg) from None
        finally:
            self.progress.close()
        self._write(self.run_dir / MODEL, lambda p: save(self.model, p, extra=self._extra()))
        last = self.history[-1]
        return TrainResult(
            self.model,
            self.history,
            last["test_accuracy"],
            last["test_loss"],
            self.best,
            self.run_dir,
            cfg,
        )

    def _epoch(self, stop: _InterruptFlag) -> None:
        cfg, xp = self.cfg, self.backend.xp
        spe = len(self.loader)
        if self.step_in_epoch == 0:
            self.epoch_start_state = self.data_rng.bit_generator.state
        plan = self.loader.plan_epoch(self.data_rng)
        dev = self.backend.device
        loss_sum = xp.asarray(self.partial["loss"], dtype=xp.float64, device=dev)
        correct = xp.asarray(self.partial["correct"], dtype=xp.float64, device=dev)
        seen, kept = self.partial["seen"], self.partial["kept"]
        secs, t0 = self.partial["seconds"], time.perf_counter()
        mark = (self.step, seen, 0.0, 0.0, t0)  # for per-interval log lines
        self.progress.start_epoch(self.epoch + 1, cfg.epochs, spe, self.step_in_epoch)
        for x, y in self.loader.batches(plan, start=self.step_in_epoch):
            lr = self.schedule(self.step)
            self.opt.lr = lr
            self.model.zero_grad()
            logits, backprop = self.model(x, train=True)
            loss, saved = softmax_cross_entropy(logits, y)
            backprop(softmax_cross_entropy_backward(saved, 1.0))
            if not self.defer_checks:
                if not self._finite(loss):  # before the update: the weights stay good
                    self._non_finite_step(x, loss, lr)
            else:  # a GPU: keep the flag on the device, read a batch of them now and then
                self.pending.append((self.step + 1, self._finite_flag(loss)))
            self.opt.step()
            n = int(y.shape[0])
            loss_sum = loss_sum + xp.astype(loss, xp.float64) * n
            hits = xp.astype(xp.argmax(logits, axis=1) == y, xp.float64)
            correct = correct + xp.sum(hits)
            seen += n
            kept += self.model.kept_fraction() * len(self.model.blocks)
            self.step += 1
            self.step_in_epoch += 1
            self.progress.advance()
            if self.pending and (
                len(self.pending) >= CHECK_EVERY_ON_DEVICE
                or self.step % cfg.log_every == 0
                or stop.requested
                or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0)
            ):
                self._check_pending(lr)
            if self.step % cfg.log_every == 0 or stop.requested:
                mark = self._log_steps(mark, float(loss_sum), float(correct), seen, lr)
            elif self.bars and self.step % LIVE_EVERY == 0:  # a bar's live values, no log line
                n = max(seen - self.partial["seen"], 1)
                self.progress.show(
                    {"loss": f"{float(loss_sum) / max(seen, 1):.4f}",
                     "acc": f"{100 * float(correct) / max(seen, 1):.1f}%",
                     "img/s": f"{n / max(time.perf_counter() - t0, 1e-9):.0f}"},
                    "",
                )  # fmt: skip
            if stop.requested or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0):
                self.partial = dict(
                    loss=float(loss_sum),
                    correct=float(correct),
                    seen=seen,
                    kept=kept,
                    seconds=secs + time.perf_counter() - t0,
                )
                self._checkpoint()
            if stop.requested:
                self._interrupted()
        if self.pending:
            self._check_pending(self.opt.lr)
        train_secs = secs + time.perf_counter() - t0
        steps_done = self.step_in_epoch
        record: dict[str, Any] = {
            "type": "epoch",
            "epoch": self.epoch + 1,
            "step": self.step,
            "lr": self.schedule(self.step - 1),
            "train_loss": float(loss_sum) / max(seen, 1),
            "train_accuracy": float(correct) / max(seen, 1),
            "images_per_second": seen / train_secs if train_secs else 0.0,
            "blocks_kept": kept / max(steps_done, 1),
            "kept_fraction": kept / max(steps_done, 1) / max(len(self.model.blocks), 1),
        }
        t1 = time.perf_counter()
        for split, loader in self.eval_loaders.items():
            res = evaluate_loader(self.model, loader)
            record[f"{split}_loss"], record[f"{split}_accuracy"] = res["loss"], res["accuracy"]
        record["seconds"] = train_secs + time.perf_counter() - t1
        self._check_weights()
        self.epoch += 1
        self.step_in_epoch = 0
        self.partial = {"loss": 0.0, "correct": 0.0, "seen": 0, "kept": 0.0, "seconds": 0.0}
        self.history.append(record)
        if "val_accuracy" in record and (
            self.best is None or record["val_accuracy"] > self.best["val_accuracy"]
        ):
            self.best = {
                "epoch": record["epoch"],
                "val_accuracy": record["val_accuracy"],
                "test_accuracy": record["test_accuracy"],
            }
            self._write(self.run_dir / BEST, lambda p: save(self.model, p, extra=self._extra()))
        self._log(record)
        self._checkpoint()
        self.progress.end_epoch(_epoch_line(record, cfg.epochs))

    def _log_steps(
        self,
        mark: tuple[int, int, float, float, float],
        loss: float,
        correct: float,
        seen: int,
        lr: float,
    ) -> tuple[int, int, float, float, float]:
        step0, seen0, loss0, correct0, t0 = mark
        now = time.perf_counter()
        n = max(seen - seen0, 1)
        rec: dict[str, Any] = {
            "type": "step",
            "epoch": self.epoch + 1,
            "step": self.step,
            "lr": lr,
            "loss": (loss - loss0) / n,
            "accuracy": (correct - correct0) / n,
            "images_per_second": n / max(now - t0, 1e-9),
        }
        self._log(rec)
        line = (
            f"epoch {self.epoch + 1}/{self.cfg.epochs} step {self.step}/{self.total_steps} "
            f"loss {rec['loss']:.4f} acc {100 * rec['accuracy']:.2f}% lr {lr:.4g} "
            f"{rec['images_per_second']:.0f} img/s"
        )
        self.progress.show(
            {
                "loss": f"{rec['loss']:.4f}",
                "acc": f"{100 * rec['accuracy']:.1f}%",
                "img/s": f"{rec['images_per_second']:.0f}",
            },
            line,
        )
        return (self.step, seen, loss, correct, now)

    # -- checkpoints --------------------------------------------------------------------------
    def _extra(self) -> dict[str, Any]:
        ds = self.train_ds
        return {"dataset": self.cfg.dataset, "mean": list(ds.mean), "std": list(ds.std)}

    def _checkpoint(self) -> None:
        """Write the training checkpoint (atomically) after checking the weights are finite."""
        self._check_weights()
        opt_state = self.opt.state_dict()
        buffers = opt_state.pop("buffers")
        data_state = (
            self.data_rng.bit_generator.state if self.step_in_epoch == 0 else self.epoch_start_state
        )
        meta = {
            "kind": "training",
            "model": dict(self.model.config),
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "step_in_epoch": self.step_in_epoch,
            "rng": {"gates": self.model.gate_rng.bit_generator.state, "data": data_state},
            "optim": opt_state,
            "history": self.history,
            "best": self.best,
            "partial": self.partial,
            "extra": self._extra(),
        }
        arrays = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        arrays |= {f"optim/{k}": v for k, v in buffers.items()}
        self._write(self.run_dir / CHECKPOINT, lambda p: write_checkpoint(p, arrays, meta))
        self.ckpt_step = self.step

    def _write(self, path: Path, write: Any) -> None:
        """``write(path)``; an ``OSError`` (disk full, I/O error) stops the run with
        :class:`RunWriteError` naming the file (the write is atomic: the old file stays)."""
        try:
            write(path)
        except OSError as exc:
            self._write_failed(path, exc)

    def _log(self, record: dict[str, Any]) -> None:
        try:
            self.log.write(record)
        except RunWriteError as exc:
            self._write_failed(
                exc.path, exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            )

    def _write_failed(self, path: Path, exc: OSError) -> None:
        self.progress.close()
        code = errno.errorcode.get(exc.errno or 0)
        why = f"{exc.strerror or exc}" + (f" ({code})" if code else "")
        ck = self.run_dir / CHECKPOINT
        kept = (
            f"the previous checkpoint, {ck} (step {self.ckpt_step}), is intact"
            if self.ckpt_step is not None and ck.exists()
            else "no checkpoint had been written yet"
        )
        msg = (
            f"training stopped: cannot write {path} at step {self.step}: {why}; {kept}. Free "
            f"some disk space (or fix the disk) and resume with "
            f"sdnet.train(resume={str(self.run_dir)!r}) or `sdnet train --resume {self.run_dir}`"
        )
        self._event("write-failed", msg)
        raise RunWriteError(msg, path, exc) from exc

    def _restore(self, arrays: dict[str, Any], meta: dict[str, Any]) -> None:
        where = self.run_dir / CHECKPOINT
        if meta.get("kind") != "training":
            raise RunDirError(f"{where} is a weights file, not a training checkpoint")
        self.model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model/")})
        opt_state = dict(meta["optim"])
        opt_state["buffers"] = {k[6:]: v for k, v in arrays.items() if k.startswith("optim/")}
        self.opt.load_state_dict(opt_state)
        self.epoch, self.step = meta["epoch"], meta["step"]
        self.step_in_epoch = meta["step_in_epoch"]
        self.model.gate_rng.bit_generator.state = meta["rng"]["gates"]
        self.data_rng.bit_generator.state = meta["rng"]["data"]
        self.epoch_start_state = meta["rng"]["data"]
        self.history, self.best = list(meta["history"]), meta["best"]
        self.partial = dict(meta["partial"])

    def _finite_flag(self, loss: Any) -> Any:
        """A 0-d device bool: the loss and every gradient are finite (no sync)."""
        xp = self.backend.xp
        flags = [xp.isfinite(loss)]
        flags += [xp.all(xp.isfinite(p.grad)) for _, p in self.params if p.grad is not None]
        return xp.all(xp.stack(flags))

    def _finite(self, loss: Any) -> bool:
        """Whether the loss and every gradient are finite: one scalar, one device sync."""
        return bool(self._finite_flag(loss))

    def _check_pending(self, lr: float) -> None:
        """Read the deferred flags of the last steps at once (one sync); stop at the first bad.

        The steps after it have been applied to the weights, which are therefore never saved:
        the last checkpoint was written after a check that passed.
        """
        xp = self.backend.xp
        steps = [s for s, _ in self.pending]
        ok = self.backend.to_numpy(xp.stack([f for _, f in self.pending]))
        self.pending = []
        if bool(ok.all()):
            return
        first = steps[int(np.argmin(ok))]
        self._diverged(
            f"the loss or a gradient became non-finite at step {first}",
            lr,
            cause=f"found at the check after step {self.step}; on a GPU the check is read "
            f"every {CHECK_EVERY_ON_DEVICE} steps, so the steps after it were applied and not "
            "saved",
        )

    def _non_finite_step(self, x: Any, loss: Any, lr: float) -> None:
        """Stop at the step whose input, loss or gradient is NaN/infinite, naming which."""
        xp, step = self.backend.xp, self.step + 1
        if bool(xp.isfinite(loss)):
            name = next(
                n
                for n, p in self.params
                if p.grad is not None and not bool(xp.all(xp.isfinite(p.grad)))
            )
            self._diverged(f"the gradient of {name} became non-finite at step {step}", lr)
        bad = int(xp.sum(xp.astype(~xp.isfinite(x), xp.int64)))
        if not bad:
            self._diverged(f"the loss became {float(loss)} at step {step}", lr)
        self._diverged(
            f"the loss became {float(loss)} at step {step}",
            lr,
            cause=f"its input batch holds {bad} NaN or infinite values",
            advice="The data, not the training, is at fault: check the dataset files and any "
            "preprocessing.",
        )

    def _check_weights(self) -> None:
        """Refuse non-finite weights (one device sync; the name is looked up only on failure)."""
        xp = self.backend.xp
        params = list(self.model.named_parameters())
        finite = [xp.all(xp.isfinite(p.value)) for _, p in params]
        if bool(xp.all(xp.stack(finite))):
            return
        name = next(n for (n, _), ok in zip(params, finite, strict=True) if not bool(ok))
        self._diverged(f"parameter {name} became non-finite after step {self.step}", self.opt.lr)

    def _diverged(
        self,
        what: str,
        lr: float,
        cause: str = "",
        advice: str = "Lower the learning rate or add warm-up (warmup_epochs) and train again.",
    ) -> None:
        self.progress.close()
        ck = self.run_dir / CHECKPOINT if hasattr(self, "run_dir") else None
        keep = (
            f"the last good checkpoint, {ck}, is kept"
            if ck is not None and ck.exists()
            else "no checkpoint was written before it"
        )
        msg = (
            f"training stopped: {what} (epoch {self.epoch + 1}, learning rate {lr:.4g})"
            f"{'; ' + cause if cause else ''}; {keep}. {advice}"
        )
        self._event("non-finite", msg)
        raise NonFiniteError(msg)

    def _interrupted(self) -> None:
        self.progress.close()
        msg = (
            f"interrupted at step {self.step}; checkpoint saved to {self.run_dir / CHECKPOINT}. "
            f"Resume with sdnet.train(resume={str(self.run_dir)!r}) or "
            f"`sdnet train --resume {self.run_dir}`"
        )
        self.progress.write(msg)
        self._event("interrupted", msg)
        raise KeyboardInterrupt(msg)

    def _event(self, kind: str, message: str) -> None:
        if hasattr(self, "log"):
            record = {"type": "event", "event": kind, "step": self.step, "message": message}
            try:
                self.log.write(record)
            except OSError:  # e.g. the disk is full: the exception carries the message
                pass


def _build(cfg: TrainConfig, ds: Any, backend: Any) -> Any:
    common = dict(
        num_classes=ds.num_classes,
        p_last=cfg.survival_last(),
        rule=cfg.drop_rule,
        mode=cfg.drop_mode,
        scaling=cfg.scaling,
        device=backend,
        dtype=cfg.dtype,
        seed=cfg.seed,
    )
    if cfg.model == "seednet":
        if math.prod(ds.shape) != 784:
            raise ConfigError(f"seednet takes 28x28 images (784 inputs); {cfg.dataset} has others")
        return build_model("seednet", **common)
    return build_model(
        cfg.model,
        in_channels=ds.shape[0],
        width=cfg.width,
        stem_stride=cfg.stem(),
        shortcut=cfg.shortcut,
        **common,
    )


def _epoch_line(r: dict[str, Any], epochs: int) -> str:
    val = f" val {100 * r['val_accuracy']:.2f}%" if "val_accuracy" in r else ""
    return (
        f"epoch {r['epoch']}/{epochs}: train loss {r['train_loss']:.4f} "
        f"acc {100 * r['train_accuracy']:.2f}%{val} test loss {r['test_loss']:.4f} "
        f"acc {100 * r['test_accuracy']:.2f}% ({r['seconds']:.1f} s, "
        f"{r['images_per_second']:.0f} img/s, {r['blocks_kept']:.2f} blocks kept)"
    )


class _InterruptFlag:
    """Turn the first Ctrl-C into a flag checked between steps (so the checkpoint saved is the
    state after a whole step); a second Ctrl-C interrupts at once. Main thread only."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> _InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
