"""Where a ResNet-20 training step spends its time, kernel by kernel, in sdnet or in PyTorch.

It runs ``--steps`` SGD steps of ResNet-20 (constant depth, MNIST-shaped random input, batch
128, one thread) under a profiler and prints milliseconds per step for each kernel: the
convolution's forward and backward, batch norm, ReLU, pooling and shortcuts, the loss, the
optimizer, zero_grad and the rest (the rows: ``_tables.KERNEL_ROWS``).

``--library sdnet`` (the default) profiles sdnet (NumPy, one host thread and one BLAS thread,
so that every kernel's time is seen on the main thread) with cProfile; a row is the cumulative
time of sdnet's functions named in :data:`KERNELS`, and the convolution rows are also split
into the matrix products and the rest. The step is the training loop's:
``model(x, train=True, need_dx=False)`` and ``opt.step(opt.flat_grads())`` where the profiled
sdnet has them (an older checkout runs its own forms of the same step).

``--library torch`` profiles the same step in PyTorch: the peer model of
``tests/torch_reference.py`` with sdnet's initial weights, the same batch, one intra-op thread,
SGD with the same hyperparameters, as ``speed.py`` times it, under ``torch.profiler`` (CPU
activities). Each op's *self* CPU time goes to one row (nothing is counted twice): the row of
the outermost op on its stack that :data:`TORCH_OPS` names, so the ops a convolution or an
optimizer step calls inside count with it. An op called straight from the model's code and
named in :data:`TORCH_CALLED_OPS` (the residual sum) goes to that row; anything else (the
autograd engine's own work and gradient sums, the linear head, the peer model's multiply by
the gate coefficient, which sdnet skips at constant depth) is "everything else", which is the
step's wall time less the rows.

``--write`` records the profile in ``docs/benchmarks.json`` (in place of the older record of
its key) and rewrites ``docs/benchmarks.md``: sdnet's under ``--label after`` (default) or
``--label before`` (an older checkout of sdnet, put first on ``PYTHONPATH``; the script
feature-detects what it calls), PyTorch's under ``pytorch``. The commit profiled is read from
the checkout with git (``--commit`` overrides it); the record names it, never the checkout's
path, and the environment it ran in: OpenBLAS's kernel choice and thread count, as the
speed runs' records state theirs (run the first two with ``env -u OPENBLAS_CORETYPE -u
OPENBLAS_L2_SIZE`` in front, as the speed runs are, so that the profiles read against them)::

    python benchmarks/profile_step.py --write --label after
    python benchmarks/profile_step.py --write --library torch
    git worktree add <old checkout> <commit>
    PYTHONPATH=<old checkout> python benchmarks/profile_step.py --write --label before

``--smoke`` profiles one step of batch 8 and is never recorded.
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import os
import pstats
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from _records import RECORDS, add_record, recorded_command
from _tables import KERNEL_ROWS, MATMUL_ROW, OTHER_ROW, REST_ROW, profile_table
from render_benchmarks import write_page

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads
REPO = Path(__file__).resolve().parent.parent
Step = Callable[[], None]
Ops = Iterable[tuple[Sequence[str], float]]

# (row, file suffix, function name): a row is the cumulative time of its functions ("*": every
# public function of the file), calls from one of them to another counted once (_row_time)
KERNELS = [
    ("conv forward", "functional/conv.py", "conv2d"),
    ("conv backward", "functional/conv.py", "conv2d_backward"),
    ("batch norm forward", "functional/batchnorm.py", "batch_norm_train"),
    ("batch norm backward", "functional/batchnorm.py", "batch_norm_backward"),
    ("ReLU forward", "functional/activation.py", "relu"),
    ("ReLU forward", "functional/activation.py", "add_relu"),  # the residual sum through ReLU
    ("ReLU backward", "functional/activation.py", "relu_backward"),
    ("pooling, shortcuts", "functional/pooling.py", "*"),
    ("loss", "functional/loss.py", "*"),
    ("optimizer step", "optim/sgd.py", "step"),
    ("optimizer step", "optim/sgd.py", "flat_grads"),
    ("zero_grad", "layers/base.py", "zero_grad"),
]
# the wrapper of sdnet's device decorator (on_input_device): one kernel reaches another
# through it, so a call from a row's function to it is a call to the row's functions
WRAPPERS = [("_array_api.py", "run")]

# PyTorch op or autograd node -> row; the outermost named op on an op's stack decides its row
_TORCH_NAMES = {
    "conv forward": "aten::conv2d aten::convolution aten::_convolution aten::mkldnn_convolution "
    "aten::_slow_conv2d_forward aten::thnn_conv2d aten::_nnpack_spatial_convolution",
    "conv backward": "ConvolutionBackward0 aten::convolution_backward "
    "aten::mkldnn_convolution_backward aten::_slow_conv2d_backward",
    "batch norm forward": "aten::batch_norm aten::_batch_norm_impl_index aten::native_batch_norm "
    "aten::_native_batch_norm_legit aten::_native_batch_norm_legit_no_training",
    "batch norm backward": "NativeBatchNormBackward0 aten::native_batch_norm_backward",
    "ReLU forward": "aten::relu aten::relu_ aten::clamp_min",
    "ReLU backward": "ReluBackward0 aten::threshold_backward AddBackward0",
    "pooling, shortcuts": "aten::avg_pool2d AvgPool2DBackward0 aten::avg_pool2d_backward "
    "aten::new_zeros aten::cat CatBackward0 aten::mean MeanBackward1",
    "loss": "aten::cross_entropy_loss aten::log_softmax aten::_log_softmax aten::nll_loss_nd "
    "aten::nll_loss aten::nll_loss_forward LogSoftmaxBackward0 aten::_log_softmax_backward_data "
    "NllLossBackward0 aten::nll_loss_backward",
    "optimizer step": "Optimizer.step#SGD.step",
    "zero_grad": "Optimizer.zero_grad#SGD.zero_grad",
}
TORCH_OPS = {name: row for row, names in _TORCH_NAMES.items() for name in names.split()}
# ops whose row holds only when the model's code calls them (no op above them): the block's
# residual sum, which sdnet computes with the ReLU after it (add_relu)
TORCH_CALLED_OPS = {"aten::add": "ReLU forward"}
PROFILER_STEP = "ProfilerStep"  # torch.profiler's own marker around each step


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--library", choices=("sdnet", "torch"), default="sdnet")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--write", action="store_true", help="record the profile, rewrite the page")
    p.add_argument("--records", type=Path, default=RECORDS, help="the records file (page beside)")
    p.add_argument("--label", choices=("before", "after"), default=None, help="sdnet's profile")
    p.add_argument("--commit", default=None, help="the sdnet commit profiled (default: git's)")
    p.add_argument("--smoke", action="store_true", help="one step of batch 8, never recorded")
    args = p.parse_args(argv)
    if args.library == "torch" and args.label:
        p.error("--label names sdnet's profiles; PyTorch's is recorded under 'pytorch'")
    args.key = "pytorch" if args.library == "torch" else args.label or "after"
    if args.smoke:
        args.steps, args.batch = 1, 8
    return args


def _inputs(batch: int) -> tuple[Any, Any]:
    """The random batch both libraries train on: float32 images and int64 labels."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    return x, np.asarray(rng.integers(0, 10, batch))


def _model() -> Any:
    """sdnet's ResNet-20 at constant depth (seed 0), on one host thread."""
    import sdnet

    if hasattr(sdnet, "set_num_threads"):
        sdnet.set_num_threads(1)
    return sdnet.build_model("resnet20", num_classes=10, in_channels=1, p_last=1.0, seed=0)


def training_step(batch: int) -> tuple[Any, Step, str]:
    """sdnet's ResNet-20, one SGD step of it on the random batch, and the calls it makes
    (the training loop's, where this sdnet has them)."""
    import sdnet
    from sdnet.functional import softmax_cross_entropy, softmax_cross_entropy_backward

    model = _model()
    opt = sdnet.SGD(model.named_parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x_host, y = _inputs(batch)
    x = model.backend.asarray(x_host, "float32")
    call = {"need_dx": False} if "need_dx" in inspect.signature(model.forward).parameters else {}
    flat = hasattr(opt, "flat_grads")

    def step() -> None:
        model.zero_grad()
        logits, backprop = model(x, train=True, **call)
        _, saved = softmax_cross_entropy(logits, y)
        backprop(softmax_cross_entropy_backward(saved))
        if flat:
            opt.step(opt.flat_grads())
        else:
            opt.step()

    forward = "model(x, train=True" + (", need_dx=False)" if call else ")")
    update = "opt.step(opt.flat_grads())" if flat else "opt.step()"
    return model, step, f"model.zero_grad(); {forward}; loss; backprop; {update}"


def torch_training_step(batch: int) -> tuple[Any, Step, str]:
    """The same step in PyTorch: the peer model with sdnet's initial weights, one intra-op
    thread, ``speed.torch_step`` (zero_grad, cross-entropy, backward, SGD step)."""
    sys.path.insert(0, str(REPO / "tests"))  # the PyTorch peer lives with the tests
    import torch
    from speed import torch_step
    from torch_reference import TorchResNet, load_numpy_state

    torch.set_num_threads(1)
    sd = _model()
    tm = TorchResNet(20, in_channels=1, p_last=1.0)
    load_numpy_state(tm, {k: sd.backend.to_numpy(v) for k, v in sd.state_dict().items()})
    tm.train()
    opt = torch.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = (torch.from_numpy(a) for a in _inputs(batch))
    calls = "opt.zero_grad(set_to_none=True); cross_entropy(model(x), y).backward(); opt.step()"
    return sd.backend, lambda: torch_step(tm, opt, x, y, None), calls


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from _machine import load_average, machine_info

    if args.library == "torch":
        backend, step, calls = torch_training_step(args.batch)
        info = _torch_machine(machine_info(backend))
        step()  # warm-up
        ops, wall = profile_torch(step, args.steps)
        results = torch_kernel_times(ops, args.steps, wall)
    else:
        model, step, calls = training_step(args.batch)
        info = machine_info(model.backend)
        step()  # warm-up
        stats, wall = profile_sdnet(step, args.steps)
        results = kernel_times(stats, args.steps, wall)
    info["load"] = f"{info['load']} at the start, {load_average()} at the end"
    argv = argv if argv is not None else sys.argv[1:]
    record = profile_record(results, args, info, argv, calls)
    print("\n".join(profile_table(record)))
    if args.write and not args.smoke:
        add_record(record, args.records)
        write_page(args.records)
    return 0


def _torch_machine(info: dict[str, str]) -> dict[str, str]:
    """What a PyTorch profile records of the machine: sdnet's facts less its backend and
    threads, with PyTorch's version, device and intra-op threads."""
    import torch

    out = {k: v for k, v in info.items() if k not in ("backend", "sdnet_threads")}
    return out | {"torch": torch.__version__, "torch_device": "cpu",
                  "torch_threads": str(torch.get_num_threads())}  # fmt: skip


def profile_record(
    results: dict[str, Any],
    args: argparse.Namespace,
    info: dict[str, str],
    argv: list[str],
    calls: str,
) -> dict[str, Any]:
    """The record of this profile, keyed by its label (layout: ``_tables.profile_table``)."""
    from _machine import command_env, sdnet_commit

    import sdnet

    commit = args.commit or sdnet_commit()
    env = command_env()
    if Path(sdnet.__file__).resolve().parent.parent != REPO:  # an older checkout, on the path
        env.append(f"PYTHONPATH=<checkout of sdnet {commit or sdnet.__version__}>")
    torch = args.library == "torch"
    return {
        "kind": "profile",
        "key": args.key,
        "commit": commit,
        "command": recorded_command("benchmarks/profile_step.py", argv, env),
        "machine": info,
        "settings": {
            "library": args.library,
            "profiler": "torch.profiler (CPU), self times" if torch else "cProfile",
            "model": "resnet20",
            "input": "1x28x28",
            "batch": args.batch,
            "steps": args.steps,
            "threads": 1,
            "step": calls,
        },
        "results": results,
    }


# -- sdnet: cProfile -----------------------------------------------------------------------


def profile_sdnet(step: Step, steps: int) -> tuple[pstats.Stats, float]:
    """cProfile's statistics of ``steps`` calls of ``step``, and the wall time of one."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for _ in range(steps):
        step()
    prof.disable()
    return pstats.Stats(prof), (time.perf_counter() - t0) / steps


def _members(entries: Iterable[tuple[str, int, str]]) -> dict[str, set[tuple[str, int, str]]]:
    """The profiled functions of each row of :data:`KERNELS`."""
    rows: dict[str, set[tuple[str, int, str]]] = {label: set() for label in KERNEL_ROWS}
    for key in entries:
        path, _, func = key
        for label, suffix, name in KERNELS:
            public = name == "*" and not func.startswith("_")
            if path.endswith(suffix) and (name == func or public):
                rows[label].add(key)
    return rows


def _row_time(stats: dict[Any, Any], funcs: set[tuple[str, int, str]]) -> float:
    """Seconds inside the functions ``funcs``: their cumulative times, less the calls one of
    them makes to another (directly or through a decorator's wrapper), counted once."""
    wrappers = {k for k in stats if any(k[0].endswith(f) and k[2] == n for f, n in WRAPPERS)}
    total = sum(stats[f][3] for f in funcs)
    for callee in funcs | wrappers:
        total -= sum(v[3] for caller, v in stats[callee][4].items() if caller in funcs)
    return total


def kernel_times(stats: pstats.Stats, steps: int, wall: float) -> dict[str, Any]:
    """Milliseconds per step and share of the step of each kernel, from cProfile's stats."""
    entries = stats.stats  # type: ignore[attr-defined]
    ms = 1e3 / steps
    rows = {label: _row_time(entries, funcs) * ms for label, funcs in _members(entries).items()}
    # BLAS runs inside the products' own Python function: its self time, all in convolutions
    matmul = ms * sum(
        v[2] for (_, _, func), v in entries.items() if func == "matmul" or func.endswith(".matmul>")
    )
    conv = rows["conv forward"] + rows["conv backward"]
    return row_results(rows, 1e3 * wall, {MATMUL_ROW: matmul, REST_ROW: conv - matmul})


def row_results(
    rows: dict[str, float], total: float, parts: dict[str, float] | None = None
) -> dict[str, Any]:
    """The ``results`` of a profile record: each row's milliseconds per step and share of
    the ``total`` (the step's wall time, ms), ``parts`` of the convolution after its rows,
    and everything else (the total less the rows)."""
    kernels: list[dict[str, Any]] = []

    def add(name: str, value: float, part: bool = False) -> None:
        row: dict[str, Any] = {"kernel": name, "ms": value, "share": value / total}
        kernels.append(row | {"part": True} if part else row)

    for label in KERNEL_ROWS:
        add(label, rows[label])
        if label == "conv backward":
            for name, value in (parts or {}).items():
                add(name, value, part=True)
    add(OTHER_ROW, total - sum(rows.values()))
    return {"step_ms": total, "kernels": kernels}


# -- PyTorch: torch.profiler ---------------------------------------------------------------


def profile_torch(step: Step, steps: int) -> tuple[list[tuple[tuple[str, ...], float]], float]:
    """Each op's stack (outermost first) and self CPU time in ms over ``steps`` profiled calls
    of ``step`` (after one profiled warm-up call, which is dropped), and the wall time of one
    step (the profiler's bookkeeping between steps left out)."""
    from torch.profiler import ProfilerActivity, profile, schedule

    plan = schedule(wait=0, warmup=1, active=steps, repeat=1)
    wall = 0.0
    with profile(activities=[ProfilerActivity.CPU], schedule=plan) as prof:
        for i in range(1 + steps):
            t0 = time.perf_counter()
            step()
            wall += (time.perf_counter() - t0) if i else 0.0
            prof.step()
    ops = [(op_stack(e), e.self_cpu_time_total / 1e3) for e in prof.events()]
    return ops, wall / steps


def op_stack(event: Any) -> tuple[str, ...]:
    """The names of a profiler event and the ops above it, outermost first (the profiler's
    step markers left out)."""
    names = []
    while event is not None:
        if not event.name.startswith(PROFILER_STEP):
            names.append(event.name)
        event = event.cpu_parent
    return tuple(reversed(names))


def torch_row(stack: Sequence[str]) -> str:
    """The row of an op from its stack (outermost first): the outermost op :data:`TORCH_OPS`
    names decides; an op called from the model's code alone may be in :data:`TORCH_CALLED_OPS`;
    anything else is :data:`OTHER_ROW`."""
    for name in stack:
        if name in TORCH_OPS:
            return TORCH_OPS[name]
    return TORCH_CALLED_OPS.get(stack[0], OTHER_ROW) if len(stack) == 1 else OTHER_ROW


def torch_kernel_times(ops: Ops, steps: int, wall: float) -> dict[str, Any]:
    """``results`` of a PyTorch profile from ``(op stack, self ms)`` pairs over ``steps``
    steps of ``wall`` seconds each: each op's self time added to its row (:func:`torch_row`),
    everything else the step's wall time less the rows."""
    rows = {label: 0.0 for label in KERNEL_ROWS}
    for stack, self_ms in ops:
        row = torch_row(stack)
        if row != OTHER_ROW:
            rows[row] += self_ms / steps
    return row_results(rows, 1e3 * wall)


if __name__ == "__main__":
    sys.exit(main())
