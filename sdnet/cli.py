"""The ``sdnet`` command (``python -m sdnet``): train, eval, plot, info, export, predict, sweep.

Every :class:`~sdnet.config.TrainConfig` field is a ``sdnet train`` flag, generated from the
dataclass (its help text, default and group included), so the two never disagree. A bad
option, a missing dataset or an unusable device ends the command with one line on stderr and a
non-zero exit status, never a traceback: 2 for a bad option, 1 when the work failed (including
an unexpected error, reported as one line too), 128 + the signal after Ctrl-C (130), SIGTERM
(143) or SIGHUP (129), 141 when the reader of the output went away (``sdnet info | head -1``,
quietly, as a command killed by SIGPIPE).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 2, 1, 130, 141


def _lr_mult(text: str) -> tuple[str, float]:
    pattern, sep, value = text.rpartition("=")
    try:
        if not sep or not pattern:
            raise ValueError
        return pattern, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected PATTERN=MULT (e.g. '*.wh.weight=0.01'), got {text!r}"
        ) from None


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, in the field's group (``sdnet.config.GROUPS``)."""
    from sdnet.config import GROUPS, TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    groups = {g: p.add_argument_group(f"{g} options") for g in GROUPS}
    for f in dataclasses.fields(TrainConfig):
        _add_flag(groups[f.metadata["group"]], f, hints[f.name])


def _add_flag(p: typing.Any, f: dataclasses.Field[typing.Any], kind: typing.Any) -> None:
    """The flag of TrainConfig field ``f`` (of type ``kind``), its default and help text."""
    flag = "--" + f.name.replace("_", "-")
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
    help_ = f.metadata.get("help", "") + " (default: %(default)s)"
    args = typing.get_args(kind)
    base = next((a for a in args if a is not type(None)), kind) if args else kind
    if kind is bool or base is bool:
        p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_)
    elif f.name == "lr_mult":
        p.add_argument(
            flag,
            type=_lr_mult,
            action="append",
            default=None,
            metavar="PATTERN=MULT",
            help=f.metadata["help"] + " (repeatable; default: none)",
        )
    elif typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0]
        p.add_argument(flag, type=item, nargs="+", default=default, help=help_,
                       metavar="N" if item is int else "NAME")  # fmt: skip
    else:
        p.add_argument(flag, type=base, default=default, help=help_)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sdnet`` command."""
    import sdnet

    parser = argparse.ArgumentParser(
        prog="sdnet",
        description="Train and use deep residual networks with stochastic depth.",
    )
    parser.add_argument("--version", action="version", version=f"sdnet {sdnet.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_train_parser(sub)
    _add_eval_parser(sub)
    _add_plot_parser(sub)
    from sdnet.sweep.cli import add_sweep_parser

    add_sweep_parser(sub)
    sub.add_parser("info", help="version, backends and devices, where datasets were found")
    _add_export_parser(sub)
    _add_predict_parser(sub)
    return parser


def _add_train_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``sdnet train``: ``--resume`` and one flag per TrainConfig field."""
    tr = sub.add_parser("train", help="train a model (every option of sdnet.train is a flag)")
    tr.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue the run in RUN_DIR from its last checkpoint",
    )
    _add_train_flags(tr)


def _add_eval_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``sdnet eval CHECKPOINT``."""
    ev = sub.add_parser("eval", help="evaluate a checkpoint (model.npz or checkpoint.npz)")
    ev.add_argument("checkpoint", help="a file written by training or sdnet.save")
    ev.add_argument("--dataset", default=None, help="default: the dataset it was trained on")
    ev.add_argument("--split", default="test", choices=("test", "train"))
    ev.add_argument("--data-dir", default=None, help="directory holding the dataset files")
    ev.add_argument("--device", default="auto", help="cpu, gpu, cuda:N, auto")
    ev.add_argument("--batch-size", type=int, default=1000)
    ev.add_argument("--limit", type=int, default=None, help="only the first N images")
    ev.add_argument("--no-download", dest="download", action="store_false")


def _add_plot_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``sdnet plot RUN_DIR`` (a run or a sweep directory)."""
    pl = sub.add_parser("plot", help="plot a run (loss, accuracy, lr) or a sweep (PNG)")
    pl.add_argument("run_dir", help="a run directory, or a sweep directory (with sweep.json)")
    pl.add_argument(
        "--out",
        default=None,
        help="output file (default: RUN_DIR/metrics.png, SWEEP_DIR/sweep.png)",
    )
    pl.add_argument(
        "--force",
        action="store_true",
        help="replace the file named by --out if it exists (the default PNG is always replaced)",
    )
    pl.add_argument(
        "--x",
        default=None,
        help="sweep: the option on the x axis (default: p_last when swept, else the numeric "
        "option with most values)",
    )


def _add_export_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``sdnet export CHECKPOINT OUT.onnx``."""
    ex = sub.add_parser("export", help="write a checkpoint's evaluation graph as ONNX")
    ex.add_argument("checkpoint", metavar="CHECKPOINT", help="model.npz, best.npz, checkpoint.npz")
    ex.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write (a new file)")
    ex.add_argument("--force", action="store_true", help="replace OUT.onnx if it exists")


def _add_predict_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``sdnet predict CHECKPOINT IMAGE...``."""
    from sdnet.predict import FORMATS

    pr = sub.add_parser("predict", help="classify image files (PNG, JPEG) with a checkpoint")
    pr.add_argument("checkpoint", metavar="CHECKPOINT", help="model.npz, best.npz, checkpoint.npz")
    pr.add_argument(
        "images", nargs="+", metavar="IMAGE", help=f"image files ({', '.join(FORMATS)})"
    )
    pr.add_argument(
        "--top", type=int, default=3, help="classes shown per image (default: %(default)s)"
    )
    pr.add_argument(
        "--invert",
        choices=("auto", "yes", "no"),
        default="auto",
        help="invert colours (dark digit on light paper -> MNIST's light on black); auto: "
        "when the image's border is light (default: %(default)s)",
    )
    pr.add_argument("--dataset", default=None, help="default: the dataset it was trained on")
    pr.add_argument("--device", default="auto", help="cpu, gpu, cuda:N, auto")


def _cmd_train(args: argparse.Namespace) -> int:
    import sdnet
    from sdnet.config import TrainConfig

    if args.recipe == "list":
        from sdnet.recipes import listing

        print(listing())
        return 0
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    options["lr_mult"] = dict(options["lr_mult"] or [])
    if args.recipe and not args.resume:  # the recipe's options, then the flags typed
        typed = _typed_options(args.argv) | {"recipe"}
        options = {k: v for k, v in options.items() if k in typed}
    if args.resume:
        # a resumed run keeps its saved options: pass on exactly the flags that were typed,
        # so that sdnet.train refuses those a resume may not change
        typed = _typed_options(args.argv)
        options = {k: v for k, v in options.items() if k in typed}
        result = sdnet.train(resume=args.resume, **options)
    else:
        result = sdnet.train(**options)
    last = result.history[-1]
    best = ""
    if result.best is not None:  # the paper's number: test error at the best validation epoch
        b = result.best
        best = (
            f"; test error at the best validation epoch ({b['epoch']}, validation error "
            f"{100 * (1 - b['val_accuracy']):.2f}%): {100 * (1 - b['test_accuracy']):.2f}%"
        )
    print(
        f"test accuracy {100 * result.test_accuracy:.2f}% after {last['epoch']} epochs{best}; "
        f"run directory {result.run_dir}"
    )
    return 0


def _typed_options(argv: Sequence[str]) -> set[str]:
    """TrainConfig fields named on the command line (``--lr 0.1``, ``--lr=0.1``,
    ``--no-progress``)."""
    names = set()
    for token in argv:
        if token.startswith("--"):
            flag = token[2:].split("=", 1)[0]
            flag = flag[3:] if flag.startswith("no-") else flag
            names.add(flag.replace("-", "_"))
    return names


def _cmd_eval(args: argparse.Namespace) -> int:
    import math

    import sdnet
    from sdnet.checkpoint import read_checkpoint, stored_extra
    from sdnet.config import ConfigError

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    _, meta = read_checkpoint(args.checkpoint)
    extra = stored_extra(meta, args.checkpoint)
    dataset = args.dataset or extra.get("dataset")
    if not dataset:
        raise ConfigError(f"{args.checkpoint} does not say its dataset; pass --dataset")
    model = sdnet.load(args.checkpoint, device=args.device)
    res = sdnet.evaluate(
        model,
        dataset,
        split=args.split,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        limit=args.limit,
        download=args.download,
        normalize=extra.get("normalize", "dataset"),
    )
    if not math.isfinite(res["loss"]):
        raise FloatingPointError(
            f"{args.checkpoint}: the model's outputs on {dataset} {args.split} are not finite "
            f"(loss {res['loss']}): the weights overflow on this data; evaluate another checkpoint"
        )
    print(
        f"{dataset} {args.split}: accuracy {100 * res['accuracy']:.2f}% "
        f"loss {res['loss']:.4f} ({res['count']} images)"
    )
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sdnet.plot import plot_run

    if (Path(args.run_dir) / "sweep.json").is_file():
        from sdnet.sweep.plot import plot_sweep

        out = plot_sweep(args.run_dir, args.out, x=args.x, overwrite=args.force)
    else:
        out = plot_run(args.run_dir, args.out, overwrite=args.force)
    print(f"wrote {out}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from sdnet.sweep.cli import run_command

    return run_command(args)


def _cmd_info(args: argparse.Namespace) -> int:
    import platform

    import numpy as np

    import sdnet
    from sdnet.data import DATASETS, DataNotFound, locate

    print(f"sdnet {sdnet.__version__} (Python {platform.python_version()}, NumPy {np.__version__})")
    print("backends:")
    for name, status in sdnet.available_backends().items():
        print(f"  {name}: {status}")
    print(f"TF32 in float32 matrix products on CUDA (CuPy): {sdnet.backends.tf32_status()}")
    print("datasets:")
    for name in DATASETS:
        try:
            where = str(locate(name, download=False))
        except DataNotFound:
            where = "not found locally (downloaded on first use)"
        print(f"  {name}: {where}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import sdnet
    from sdnet._io import check_target
    from sdnet.checkpoint import read_checkpoint, stored_extra
    from sdnet.interop.onnx import export_onnx

    check_target(args.out, overwrite=args.force, inputs=(args.checkpoint,))  # before the work
    _, meta = read_checkpoint(args.checkpoint)
    extra = stored_extra(meta, args.checkpoint)
    model = sdnet.load(args.checkpoint, device="cpu")
    out = export_onnx(
        model,
        args.out,
        extra={k: extra[k] for k in extra if k in _ONNX_META},
        overwrite=args.force,
        inputs=(args.checkpoint,),
    )
    print(f"wrote {out} (input: normalized images (N, C, H, W); output: logits)")
    return 0


_ONNX_META = ("dataset", "mean", "std", "normalize")


def _cmd_predict(args: argparse.Namespace) -> int:
    from sdnet.config import ConfigError
    from sdnet.predict import predict_files

    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    invert: bool | typing.Literal["auto"] = (
        "auto" if args.invert == "auto" else args.invert == "yes"
    )
    results = predict_files(
        args.checkpoint,
        args.images,
        dataset=args.dataset,
        top=args.top,
        invert=invert,
        device=args.device,
        skip_unreadable=True,  # one bad file does not stop the others
    )
    for p in results:  # one line per image: its classes, or why it could not be read
        print(f"sdnet: error: {p}" if p.error else p, file=sys.stderr if p.error else sys.stdout)
    return EXIT_FAILED if any(p.error for p in results) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sdnet`` command; returns the exit status."""
    from sdnet.training.signals import StopRequest

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        with StopRequest():  # Ctrl-C, SIGTERM, SIGHUP: Interrupted (train defers its own)
            status = _HANDLERS[args.command](args)
            sys.stdout.flush()  # here, not at exit: a closed pipe is handled below
        return status
    except BrokenPipeError:
        return _broken_pipe()
    except BaseException as exc:
        return _report(exc)


_HANDLERS = {
    "train": _cmd_train,
    "eval": _cmd_eval,
    "plot": _cmd_plot,
    "info": _cmd_info,
    "sweep": _cmd_sweep,
    "export": _cmd_export,
    "predict": _cmd_predict,
}


def _broken_pipe() -> int:
    """The reader of our output went away (``sdnet info | head -1``): stop quietly, as a
    command killed by SIGPIPE does, with that status (128 + 13)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing left to flush at exit
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def _report(exc: BaseException) -> int:
    """One line on stderr for ``exc`` and the exit status (see the module docstring)."""
    from sdnet.backends import BackendUnavailable
    from sdnet.config import ConfigError

    if isinstance(exc, KeyboardInterrupt):
        msg = str(exc) or "Ctrl-C"
        if " " not in msg:  # only the signal's name: stopped before anything was saved
            msg = f"interrupted ({msg})"
        print(f"sdnet: {msg}", file=sys.stderr)
        return int(getattr(exc, "exit_status", EXIT_INTERRUPTED))
    if not isinstance(exc, Exception):  # SystemExit and the like: not ours to report
        raise exc
    status = EXIT_FAILED
    if isinstance(exc, (ConfigError, TypeError)):  # a bad option: usage error
        status, text = EXIT_USAGE, str(exc)
    elif isinstance(exc, MemoryError):
        text = (
            f"out of memory ({exc or 'an allocation failed'}): use a smaller batch size "
            "(--batch-size), a smaller model, or a machine with more memory"
        )
    elif isinstance(exc, OSError) and exc.strerror and not str(exc).startswith(str(exc.filename)):
        where = f"{exc.filename}: " if exc.filename else ""
        text = f"{where}{exc.strerror}"
    elif isinstance(
        exc, (BackendUnavailable, OSError, ValueError, FloatingPointError, ImportError)
    ):
        text = str(exc)
    else:  # a bug: still one line, with what it was
        text = f"unexpected {type(exc).__name__}: {exc} (please report this with the command)"
    print(f"sdnet: error: {text}", file=sys.stderr)
    return status
