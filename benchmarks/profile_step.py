"""Where a ResNet-20 training step spends its time, kernel by kernel (cProfile, one thread).

It runs ``--steps`` SGD steps of ResNet-20 (constant depth, MNIST-shaped random input, batch
128, NumPy) under cProfile with one host thread and one BLAS thread, so that every kernel's
time is seen on the main thread, and prints milliseconds per step for each kernel: the
convolution's forward and backward (with their matrix products and the rest shown apart),
batch norm, ReLU, pooling and shortcuts, the loss, the optimizer and the rest.

``--write --label after`` puts the table into ``docs/benchmarks.md`` between the
``<!-- profile-after:start -->`` and ``<!-- profile-after:end -->`` markers; ``--label
before`` fills the other pair from an older checkout of sdnet (the script uses only the public
API, so it runs unchanged on older versions)::

    OPENBLAS_NUM_THREADS=1 python benchmarks/profile_step.py --write --label after
    git worktree add /tmp/sdnet-old <commit>
    OPENBLAS_NUM_THREADS=1 PYTHONPATH=/tmp/sdnet-old:/tmp/sdnet-old/benchmarks \\
        python benchmarks/profile_step.py --write --label before --commit <commit>
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads
REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"

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
MATMUL = "  of which matrix products"
REST = "  of which the rest: im2col, padding, scatter copies"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--write", action="store_true")
    p.add_argument("--label", choices=("before", "after"), default="after")
    p.add_argument("--commit", default=None, help="the sdnet commit profiled (for the page)")
    args = p.parse_args(argv)

    import numpy as np

    import sdnet
    from sdnet.functional import softmax_cross_entropy, softmax_cross_entropy_backward

    if hasattr(sdnet, "set_num_threads"):
        sdnet.set_num_threads(1)
    model = sdnet.build_model("resnet20", num_classes=10, in_channels=1, p_last=1.0, seed=0)
    opt = sdnet.SGD(model.named_parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = model.backend.asarray(rng.standard_normal((args.batch, 1, 28, 28)), "float32")
    y = np.asarray(rng.integers(0, 10, args.batch))

    def step() -> None:
        model.zero_grad()
        logits, backprop = model(x, train=True)
        _, saved = softmax_cross_entropy(logits, y)
        backprop(softmax_cross_entropy_backward(saved))
        opt.step()

    step()  # warm-up
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for _ in range(args.steps):
        step()
    prof.disable()
    wall = (time.perf_counter() - t0) / args.steps
    table = render(pstats.Stats(prof), args.steps, wall)
    print(table)
    if args.write:
        where = sdnet.__file__.rsplit("/sdnet/", 1)[0]
        head = (
            f"Profiled: sdnet {args.commit or sdnet.__version__} ({where}), "
            f"ResNet-20, batch {args.batch}, {args.steps} steps, one thread; "
            f"NumPy {np.__version__}.\n\n"
        )
        from _machine import write_doc_section

        start, end = f"<!-- profile-{args.label}:start -->", f"<!-- profile-{args.label}:end -->"
        write_doc_section(DOC, start, end, f"{start}\n{head}{table}\n{end}")
    return 0


def render(stats: pstats.Stats, steps: int, wall: float) -> str:
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
    ms = 1e3 / steps
    out = ["| kernel | ms per step | share |", "|---|---:|---:|"]
    total = wall * 1e3
    for label, *_ in KERNELS:
        out.append(f"| {label} | {rows[label] * ms:.0f} | {100 * rows[label] * ms / total:.0f}% |")
        if label == "conv backward":
            conv = rows["conv forward"] + rows["conv backward"]
            for ilabel, v in ((MATMUL, matmul * ms), (REST, (conv - matmul) * ms)):
                share = 100 * v / total
                out.append(f"| {ilabel} (forward and backward) | {v:.0f} | {share:.0f}% |")
    known = sum(rows.values()) * ms
    out.append(f"| everything else | {total - known:.0f} | {100 * (total - known) / total:.0f}% |")
    out.append(f"| **step (wall, under the profiler)** | **{total:.0f}** | 100% |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
