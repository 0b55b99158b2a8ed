"""The ``sdnet`` command (``python -m sdnet``): train, eval, plot, info, export, predict, sweep.

Every :class:`~sdnet.config.TrainConfig` field is a ``sdnet train`` flag, generated from the
dataclass (its help text and default included), so the two never disagree. A bad option, a
missing dataset or an unusable device ends the command with one line on stderr and a non-zero
exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


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
    from sdnet.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
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
        "--x",
        default=None,
        help="sweep: the option on the x axis (default: p_last when swept, else the numeric "
        "option with most values)",
    )


def _add_export_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``sdnet export CHECKPOINT OUT.onnx``."""
    ex = sub.add_parser("export", help="write a checkpoint's evaluation graph as ONNX")
    ex.add_argument("checkpoint", metavar="CHECKPOINT", help="model.npz, best.npz, checkpoint.npz")
    ex.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")


def _add_predict_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``sdnet predict CHECKPOINT IMAGE...``."""
    pr = sub.add_parser("predict", help="classify image files (PNG, JPEG) with a checkpoint")
    pr.add_argument("checkpoint", metavar="CHECKPOINT", help="model.npz, best.npz, checkpoint.npz")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
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
    import sdnet
    from sdnet.checkpoint import read_checkpoint
    from sdnet.config import ConfigError

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    _, meta = read_checkpoint(args.checkpoint)
    extra = meta.get("extra") or {}
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

        out = plot_sweep(args.run_dir, args.out, x=args.x)
    else:
        out = plot_run(args.run_dir, args.out)
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
    from sdnet.checkpoint import read_checkpoint
    from sdnet.interop.onnx import export_onnx

    _, meta = read_checkpoint(args.checkpoint)
    extra = meta.get("extra") or {}
    model = sdnet.load(args.checkpoint, device="cpu")
    out = export_onnx(model, args.out, extra={k: extra[k] for k in extra if k in _ONNX_META})
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
    for p in predict_files(
        args.checkpoint,
        args.images,
        dataset=args.dataset,
        top=args.top,
        invert=invert,
        device=args.device,
    ):
        print(p)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sdnet`` command; returns the exit status."""
    from sdnet.backends import BackendUnavailable
    from sdnet.config import ConfigError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    handlers = {
        "train": _cmd_train,
        "eval": _cmd_eval,
        "plot": _cmd_plot,
        "info": _cmd_info,
        "sweep": _cmd_sweep,
        "export": _cmd_export,
        "predict": _cmd_predict,
    }
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt as exc:
        msg = str(exc) or "interrupted"
        print(f"sdnet: {msg}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ConfigError, TypeError) as exc:  # a bad option: usage error
        print(f"sdnet: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (
        BackendUnavailable,
        OSError,
        ValueError,
        FloatingPointError,
        ImportError,
    ) as exc:  # the command could not be done: device, data, files, diverged training
        print(f"sdnet: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
