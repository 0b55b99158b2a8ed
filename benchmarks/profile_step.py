"""Where a ResNet-20 training step spends its time, kernel by kernel (cProfile, one thread).

It runs ``--steps`` SGD steps of ResNet-20 (constant depth, MNIST-shaped random input, batch
128, NumPy) under cProfile with one host thread and one BLAS thread, so that every kernel's
time is seen on the main thread, and prints milliseconds per step for each kernel: the
convolution's forward and backward (with their matrix products and the rest shown apart),
batch norm, ReLU, pooling and shortcuts, the loss, the optimizer and the rest.

``--write --label after`` records the profile in ``docs/benchmarks.json`` (in place of the
older ``after`` record) and rewrites ``docs/benchmarks.md``; ``--label before`` records the
profile of an older checkout of sdnet, put first on ``PYTHONPATH`` (the script uses only the
public API, so it runs unchanged on older versions). The commit profiled is read from the
checkout with git (``--commit`` overrides it); the record names it, never the checkout's
path::

    python benchmarks/profile_step.py --write --label after
    git worktree add <old checkout> <commit>
    PYTHONPATH=<old checkout> python benchmarks/profile_step.py --write --label before

``--smoke`` profiles one step of batch 8 and is never recorded.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _records import RECORDS, add_record, recorded_command
from _tables import MATMUL_ROW, REST_ROW, profile_table
from render_benchmarks import write_page

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads
REPO = Path(__file__).resolve().parent.parent

# (row label, file suffix, function name); the time of a row is its function's cumulative time
KERNELS = [
    ("conv forward", "functional/conv.py", "conv2d"),
    ("conv backward", "functional/conv.py", "conv2d_backward"),
    ("batch norm forward", "functional/batchnorm.py", "batch_norm_train"),
    ("batch norm backward", "functional/batchnorm.py", "batch_norm_backward"),
    ("ReLU forward", "functional/activation.py", "relu"),
    ("ReLU backward", "functional/activation.py", "relu_backward"),
    ("pooling, shortcuts", "functional/pooling.py", "*"),
    ("loss", "functional/loss.py", "*"),
    ("optimizer step", "optim/sgd.py", "step"),
    ("zero_grad", "layers/base.py", "zero_grad"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--write", action="store_true", help="record the profile, rewrite the page")
    p.add_argument("--records", type=Path, default=RECORDS, help="the records file (page beside)")
    p.add_argument("--label", choices=("before", "after"), default="after")
    p.add_argument("--commit", default=None, help="the sdnet commit profiled (default: git's)")
    p.add_argument("--smoke", action="store_true", help="one step of batch 8, never recorded")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch = 1, 8
    return args


def training_step(batch: int) -> tuple[Any, Callable[[], None]]:
    """A ResNet-20 (constant depth, one host thread) and one SGD step of it on random input."""
    import numpy as np

    import sdnet
    from sdnet.functional import softmax_cross_entropy, softmax_cross_entropy_backward

    if hasattr(sdnet, "set_num_threads"):
        sdnet.set_num_threads(1)
    model = sdnet.build_model("resnet20", num_classes=10, in_channels=1, p_last=1.0, seed=0)
    opt = sdnet.SGD(model.named_parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = model.backend.asarray(rng.standard_normal((batch, 1, 28, 28)), "float32")
    y = np.asarray(rng.integers(0, 10, batch))

    def step() -> None:
        model.zero_grad()
        logits, backprop = model(x, train=True)
        _, saved = softmax_cross_entropy(logits, y)
        backprop(softmax_cross_entropy_backward(saved))
        opt.step()

    return model, step


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from _machine import load_average, machine_info

    model, step = training_step(args.batch)
    info = machine_info(model.backend)
    step()  # warm-up
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for _ in range(args.steps):
        step()
    prof.disable()
    wall = (time.perf_counter() - t0) / args.steps
    info["load"] = f"{info['load']} at the start, {load_average()} at the end"
    argv = argv if argv is not None else sys.argv[1:]
    record = profile_record(kernel_times(pstats.Stats(prof), args.steps, wall), args, info, argv)
    print("\n".join(profile_table(record)))
    if args.write and not args.smoke:
        add_record(record, args.records)
        write_page(args.records)
    return 0


def profile_record(
    results: dict[str, Any], args: argparse.Namespace, info: dict[str, str], argv: list[str]
) -> dict[str, Any]:
    """The record of this profile, keyed by its label (layout: ``_tables.profile_table``)."""
    from _machine import THREAD_VARS, sdnet_commit

    import sdnet

    commit = args.commit or sdnet_commit()
    env = [f"{k}={os.environ[k]}" for k in THREAD_VARS if k in os.environ]
    if Path(sdnet.__file__).resolve().parent.parent != REPO:  # an older checkout, on the path
        env.append(f"PYTHONPATH=<checkout of sdnet {commit or sdnet.__version__}>")
    return {
        "kind": "profile",
        "key": args.label,
        "commit": commit,
        "command": recorded_command("benchmarks/profile_step.py", argv, env),
        "machine": info,
        "settings": {
            "model": "resnet20",
            "input": "1x28x28",
            "batch": args.batch,
            "steps": args.steps,
            "threads": 1,
        },
        "results": results,
    }


def kernel_times(stats: pstats.Stats, steps: int, wall: float) -> dict[str, Any]:
    """Milliseconds per step and share of the step of each kernel, from the profile."""
    rows = {label: 0.0 for label, *_ in KERNELS}
    matmul = 0.0  # BLAS self time, all of it inside the convolutions
    entries = stats.stats.items()  # type: ignore[attr-defined]
    for (path, _, func), (_, _, tottime, cumtime, _) in entries:
        for label, suffix, name in KERNELS:
            public = name == "*" and not func.startswith("_")
            if path.endswith(suffix) and (name == func or public):
                rows[label] += cumtime
        if func == "matmul" or func.endswith(".matmul>"):
            matmul += tottime
    ms, total = 1e3 / steps, 1e3 * wall
    kernels: list[dict[str, Any]] = []

    def add(name: str, value: float, part: bool = False) -> None:
        row: dict[str, Any] = {"kernel": name, "ms": value, "share": value / total}
        kernels.append(row | {"part": True} if part else row)

    for label, *_ in KERNELS:
        add(label, rows[label] * ms)
        if label == "conv backward":
            conv = (rows["conv forward"] + rows["conv backward"]) * ms
            add(MATMUL_ROW, matmul * ms, part=True)
            add(REST_ROW, conv - matmul * ms, part=True)
    add("everything else", total - sum(rows.values()) * ms)
    return {"step_ms": total, "kernels": kernels}


if __name__ == "__main__":
    sys.exit(main())
