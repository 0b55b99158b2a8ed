"""Does a dropped residual block really skip its work?

In sdnet's default ``mode="batch"`` a closed gate means the block's branch is never computed:
no forward, no backward, no parameter gradient, no batch-norm statistics update. This script
measures it. For each ResNet depth it times one training step (forward, softmax cross-entropy,
backward; no optimizer update) on MNIST-shaped random input in three variants:

* ``open``:   every gate forced open (a plain ResNet, all branches computed),
* ``closed``: every gate forced closed (only stem, shortcuts, head and loss are left),
* ``drawn``:  gates drawn from the model's own seeded stream, linear rule, p_L = 0.5
  (the paper's default), so over many steps the gates average out.

The variants alternate step by step (the order rotates every round), so that slow drift of the
machine (other processes, CPU frequency) hits all three alike. It reports the median and mean
milliseconds per step, the ratios to ``open``, and what the schedule predicts: the expected
fraction of branch work kept, both as the mean of the survival probabilities and weighted by
each block's convolution multiply-adds (MACs), and the fraction the drawn gates actually kept.
If a dropped block costs nothing, ``drawn / open = closed/open + (1 - closed/open) * kept``.

Examples
--------
Smoke run (seconds)::

    python benchmarks/skip_cost.py --depth 20 --steps 2 --warmup 1 --batch 16

The numbers in ``docs/benchmarks.md`` (one BLAS thread: on a machine shared with other work,
multi-threaded BLAS stalls whenever one of its threads is descheduled)::

    OPENBLAS_NUM_THREADS=1 python benchmarks/skip_cost.py --depth 20 56 --steps 20 --write
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _machine import THREAD_VARS, load_average, machine_info, write_doc_section

import sdnet
import sdnet.functional as F
from sdnet.layers import Conv2d

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- skip_cost:start -->", "<!-- skip_cost:end -->"
VARIANTS = ("open", "closed", "drawn")
INTRO = """# Benchmarks

What sdnet's speed claims rest on, measured on a named machine with the exact command that
produced each number, so anyone can rerun it. Each section is rewritten by the script that
measures it (between its `<!-- name:start -->` and `<!-- name:end -->` markers); everything
outside the markers is kept.

* **Skip cost** (`benchmarks/skip_cost.py`): stochastic depth saves training time only if a
  dropped block costs (almost) nothing. sdnet's default batch mode never computes a dropped
  block's branch, so a ResNet trained with the paper's linear schedule (p_L = 0.5) should need
  about the fraction of the work predicted from its survival probabilities.
* **Speed against PyTorch**: to come (the same ResNet-20/110 step in sdnet and in PyTorch, on
  the CPU and on a GPU).

Threads: the commands below pin one BLAS thread (`OPENBLAS_NUM_THREADS=1`). On the 2-CPU
machine of these measurements, shared with other work, OpenBLAS's default of one thread per
CPU made a ResNet-20 training step about three times slower (around 4 s instead of 1.5 s),
most likely because a BLAS thread that loses its CPU stalls the other. On a dedicated
machine, compare both settings before trusting either.

"""


@dataclass
class Result:
    """Timings of one model depth."""

    depth: int
    survival: list[float]
    branch_macs: list[int]
    times: dict[str, list[float]] = field(default_factory=lambda: {v: [] for v in VARIANTS})
    kept: list[float] = field(default_factory=list)  # drawn variant: fraction of blocks kept
    kept_macs: list[float] = field(default_factory=list)  # ... and of branch MACs kept

    def median_ms(self, v: str) -> float:
        return 1e3 * statistics.median(self.times[v])

    def mean_ms(self, v: str) -> float:
        return 1e3 * statistics.fmean(self.times[v])

    @property
    def mean_survival(self) -> float:
        return statistics.fmean(self.survival)

    @property
    def weighted_survival(self) -> float:
        total = sum(self.branch_macs)
        return sum(p * m for p, m in zip(self.survival, self.branch_macs, strict=True)) / total

    def ratio(self, v: str, stat: str = "mean") -> float:
        f = self.mean_ms if stat == "mean" else self.median_ms
        return f(v) / f("open")

    def predicted_ratio(self, kept: float) -> float:
        """drawn/open if a dropped block cost nothing: closed/open + (1 - closed/open) kept."""
        rc = self.ratio("closed")
        return rc + (1.0 - rc) * kept


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="sdnet device string (default: cpu)")
    p.add_argument("--steps", type=int, default=20, help="measured steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first (default 2)")
    p.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    p.add_argument(
        "--depth", type=int, nargs="+", default=[20], help="ResNet depths 6n+2 (default: 20)"
    )
    p.add_argument("--p-last", type=float, default=0.5, help="p_L of the drawn variant")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write", action="store_true", help=f"update the section in {DOC.name}")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch < 1:
        p.error("--steps and --batch must be >= 1, --warmup >= 0")
    return args


def branch_macs(model: Any, height: int, width: int) -> list[int]:
    """Multiply-adds per sample of each block's branch convolutions (BN/ReLU neglected)."""
    out = []
    h, w = height, width
    for block in model.blocks:
        macs = 0
        for layer in block.branch.layers:
            if isinstance(layer, Conv2d):
                o, c, kh, kw = layer.weight.value.shape
                h = F.conv_output_size(h, kh, layer.stride, layer.padding)
                w = F.conv_output_size(w, kw, layer.stride, layer.padding)
                macs += h * w * o * c * kh * kw
        out.append(macs)
    return out


def train_step(model: Any, x: Any, y: Any, gates: list[bool] | None) -> float:
    """Seconds for zero_grad + forward + loss + backward, device work included."""
    model.backend.synchronize()
    t0 = time.perf_counter()
    model.zero_grad()
    logits, backprop = model(x, train=True, gates=gates)
    _, saved = F.softmax_cross_entropy(logits, y)
    backprop(F.softmax_cross_entropy_backward(saved))
    model.backend.synchronize()
    return time.perf_counter() - t0


def measure(depth: int, args: argparse.Namespace) -> Result:
    model = sdnet.build_model(
        f"resnet{depth}",
        num_classes=10,
        in_channels=1,
        p_last=args.p_last,
        device=args.device,
        seed=args.seed,
    )
    rng = np.random.default_rng(args.seed)
    x = model.backend.asarray(rng.standard_normal((args.batch, 1, 28, 28)), "float32")
    y = model.backend.asarray(rng.integers(0, 10, size=args.batch))
    n = len(model.blocks)
    forced: dict[str, list[bool] | None] = {"open": [True] * n, "closed": [False] * n}
    forced["drawn"] = None
    res = Result(depth, model.survival, branch_macs(model, 28, 28))
    for r in range(args.warmup + args.steps):
        order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]  # rotate who goes first
        for v in order:
            t = train_step(model, x, y, forced[v])
            if r >= args.warmup:
                res.times[v].append(t)
                if v == "drawn":
                    res.kept.append(model.kept_fraction())
                    gates = model.last_gates or []
                    kept = sum(m for m, g in zip(res.branch_macs, gates, strict=True) if g)
                    res.kept_macs.append(kept / sum(res.branch_macs))
        if r >= args.warmup:
            print(
                f"  resnet{depth} round {r - args.warmup + 1}/{args.steps}: "
                + ", ".join(f"{v} {1e3 * res.times[v][-1]:.0f} ms" for v in VARIANTS),
                file=sys.stderr,
                flush=True,
            )
    return res


def _kept(res: Result, v: str) -> tuple[float, float]:
    """Fraction of blocks and of branch MACs computed in variant ``v`` (drawn: realised)."""
    if v == "drawn":
        return statistics.fmean(res.kept), statistics.fmean(res.kept_macs)
    return (1.0, 1.0) if v == "open" else (0.0, 0.0)


def report_text(results: list[Result]) -> str:
    head = f"{'model':<10}{'variant':<9}{'median ms':>11}{'mean ms':>10}{'median/open':>13}"
    lines = [head + f"{'mean/open':>11}{'MACs kept':>11}"]
    for res in results:
        for v in VARIANTS:
            lines.append(
                f"{'resnet' + str(res.depth):<10}{v:<9}{res.median_ms(v):>11.1f}"
                f"{res.mean_ms(v):>10.1f}{res.ratio(v, 'median'):>13.3f}{res.ratio(v):>11.3f}"
                f"{_kept(res, v)[1]:>11.3f}"
            )
        realised = _kept(res, "drawn")[1]
        lines.append(
            f"  resnet{res.depth}: expected branch work kept {res.weighted_survival:.3f} "
            f"(MAC-weighted; mean p_l {res.mean_survival:.3f}), drawn gates kept {realised:.3f}; "
            f"if a dropped block cost nothing, drawn/open = "
            f"{res.predicted_ratio(realised):.3f}; measured {res.ratio('drawn'):.3f} (means)"
        )
    return "\n".join(lines)


def report_markdown(results: list[Result], args: argparse.Namespace, info: dict[str, str]) -> str:
    env = [f"{k}={os.environ[k]}" for k in THREAD_VARS if k in os.environ]
    argv = [shlex.quote(a) for a in sys.argv[1:]]
    cmd = " ".join(env + ["python benchmarks/skip_cost.py"] + argv)
    out = [
        START,
        "## Skip cost: does a dropped block cost nothing?",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        f"* Date: {info['date']}",
        f"* sdnet {info['sdnet']}, NumPy {info['numpy']}, Python {info['python']}; "
        f"backend: {info['backend']}",
        f"* CPU: {info['cpu']}; BLAS: {info['blas']}",
        f"* Threads: {info['threads']}",
        f"* Load average (1 min): {info['load']}",
        f"* One step: forward, softmax cross-entropy and backward of a batch of {args.batch} "
        f"random 1x28x28 float32 images (no optimizer update); {args.steps} measured steps per "
        f"variant after {args.warmup} warm-up rounds, the three variants alternating step by "
        "step.",
        "",
        "| model | gates | median ms/step | mean ms/step | median / open | mean / open | "
        "blocks computed | branch MACs computed |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {"open": "all open", "closed": "all closed", "drawn": f"drawn, p_L = {args.p_last}"}
    for res in results:
        for v in VARIANTS:
            blocks, macs = _kept(res, v)
            out.append(
                f"| ResNet-{res.depth} | {labels[v]} | {res.median_ms(v):.1f} | "
                f"{res.mean_ms(v):.1f} | {res.ratio(v, 'median'):.3f} | {res.ratio(v):.3f} | "
                f"{blocks:.3f} | {macs:.3f} |"
            )
    out += [
        "",
        "Expected and realised work, and the time the step would take if a dropped block cost "
        "nothing (`closed/open + (1 - closed/open) x MACs kept`, from the means):",
        "",
        "| model | blocks L | mean of p_l | expected MACs kept | drawn gates kept (MACs) | "
        "predicted drawn / open | measured drawn / open |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        realised = _kept(res, "drawn")[1]
        out.append(
            f"| ResNet-{res.depth} | {len(res.survival)} | {res.mean_survival:.3f} | "
            f"{res.weighted_survival:.3f} | {realised:.3f} | "
            f"{res.predicted_ratio(realised):.3f} | {res.ratio('drawn'):.3f} |"
        )
    out += [
        "",
        "MACs are the branch convolutions' multiply-adds; the first block of stages 2 and 3 does "
        "3/4 of the work of the others, so the MAC-weighted expectation differs slightly from "
        "the mean of the p_l. Ratios of means are the ones to compare for the drawn variant: its "
        "step time depends on how many gates a step happens to draw, and the expected cost is "
        "the mean of that spread, not its median.",
        END,
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backend = sdnet.get_backend(args.device)
    info = machine_info(backend)
    print(
        f"sdnet {info['sdnet']}, numpy {info['numpy']}, {info['backend']}, {info['cpu']}; "
        f"{info['threads']}",
        file=sys.stderr,
    )
    results = [measure(d, args) for d in args.depth]
    info["load"] = f"{info['load']} at the start, {load_average()} at the end"
    print(report_text(results))
    if args.write:
        write_doc_section(DOC, START, END, report_markdown(results, args, info), INTRO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
