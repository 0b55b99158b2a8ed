"""Does a dropped residual block really skip its work?

In sdnet's default ``mode="batch"`` a closed gate means the block's branch is never computed:
no forward, no backward, no parameter gradient, no batch-norm statistics update. This script
measures it. For each ResNet depth it times one training step (forward, softmax cross-entropy,
backward; no optimizer update) on MNIST-shaped random input in three variants:

* ``open``:   every gate forced open (a plain ResNet, all branches computed),
* ``closed``: every gate forced closed (only stem, shortcuts, head and loss are left),
* ``drawn``:  gates drawn from the model's own seeded stream, linear rule, p_L = 0.5
  (the paper's default), so over many steps the gates average out;
* ``row``:    one gate per sample (``mode="row"``, timm's): every branch runs, masked;
* ``subset``: one gate per sample (``mode="subset"``): each branch runs on its kept samples.

The variants alternate step by step (the order rotates every round), so that slow drift of the
machine (other processes, CPU frequency) hits all three alike. It reports the median and mean
milliseconds per step, the ratios to ``open``, and what the schedule predicts: the expected
fraction of branch work kept, both as the mean of the survival probabilities and weighted by
each block's convolution multiply-adds (MACs), and the fraction the drawn gates actually kept.
If a dropped block costs nothing, ``drawn / open = closed/open + (1 - closed/open) * kept``.

Examples
--------
Smoke run (seconds; never recorded)::

    python benchmarks/skip_cost.py --smoke

The run recorded in ``docs/benchmarks.json`` and shown in ``docs/benchmarks.md`` (one BLAS
thread: on a machine shared with other work, multi-threaded BLAS stalls whenever one of its
threads is descheduled); ``--write`` replaces the skip-cost record of the same device and
rewrites the page::

    OPENBLAS_NUM_THREADS=1 python benchmarks/skip_cost.py --depth 20 56 --steps 20 --write
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _machine import command_env, gpu_name, load_average, machine_info, sdnet_commit
from _records import RECORDS, recorded_command
from _tables import SKIP_VARIANTS, skip_cost_tables
from render_benchmarks import publish

import sdnet
import sdnet.functional as F
from sdnet.layers import Conv2d

DRAWN = {"drawn": "batch", "row": "row", "subset": "subset"}  # variant -> the model's mode


@dataclass
class Result:
    """Timings of one model depth."""

    depth: int
    survival: list[float]
    branch_macs: list[int]
    times: dict[str, list[float]] = field(default_factory=lambda: {v: [] for v in SKIP_VARIANTS})
    # drawn variants: fraction of blocks (per sample: of block-samples) and of branch MACs kept
    kept: dict[str, list[float]] = field(default_factory=lambda: {v: [] for v in DRAWN})
    kept_macs: dict[str, list[float]] = field(default_factory=lambda: {v: [] for v in DRAWN})

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
    p.add_argument("--write", action="store_true", help="record the run, rewrite the page")
    p.add_argument("--records", type=Path, default=RECORDS, help="the records file (page beside)")
    p.add_argument("--smoke", action="store_true", help="ResNet-8, 2 steps of 8: never recorded")
    args = p.parse_args(argv)
    if args.smoke:
        args.depth, args.steps, args.warmup, args.batch = [8], 2, 1, 8
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


def _models(depth: int, args: argparse.Namespace) -> dict[str, Any]:
    """One model per gate mode, all with the same seed (same weights, same gate stream)."""
    return {
        mode: sdnet.build_model(
            f"resnet{depth}",
            num_classes=10,
            in_channels=1,
            p_last=args.p_last,
            mode=mode,
            device=args.device,
            seed=args.seed,
        )  # fmt: skip
        for mode in ("batch", "row", "subset")
    }


def measure(depth: int, args: argparse.Namespace) -> Result:
    models = _models(depth, args)
    model = models["batch"]
    rng = np.random.default_rng(args.seed)
    x = model.backend.asarray(rng.standard_normal((args.batch, 1, 28, 28)), "float32")
    y = model.backend.asarray(rng.integers(0, 10, size=args.batch))
    n = len(model.blocks)
    forced: dict[str, list[bool] | None] = {"open": [True] * n, "closed": [False] * n}
    res = Result(depth, model.survival, branch_macs(model, 28, 28))
    k = len(SKIP_VARIANTS)
    for r in range(args.warmup + args.steps):
        for v in SKIP_VARIANTS[r % k :] + SKIP_VARIANTS[: r % k]:  # rotate who goes first
            m = models[DRAWN.get(v, "batch")]
            t = train_step(m, x, y, forced.get(v))
            if r >= args.warmup:
                res.times[v].append(t)
                if v in DRAWN:
                    _record_kept(res, v, m)
        if r >= args.warmup:
            print(
                f"  resnet{depth} round {r - args.warmup + 1}/{args.steps}: "
                + ", ".join(f"{v} {1e3 * res.times[v][-1]:.0f} ms" for v in SKIP_VARIANTS),
                file=sys.stderr,
                flush=True,
            )
    return res


def _record_kept(res: Result, v: str, model: Any) -> None:
    """The work the drawn gates of the last step kept (per sample: the fraction of samples)."""
    fractions = [
        float(g) if isinstance(g, bool) else sum(map(bool, g)) / len(g)
        for g in (model.last_gates or [])
    ]
    res.kept[v].append(sum(fractions) / len(fractions))
    macs = sum(m * f for m, f in zip(res.branch_macs, fractions, strict=True))
    res.kept_macs[v].append(macs / sum(res.branch_macs))


def _kept(res: Result, v: str) -> tuple[float, float]:
    """Fraction of blocks and of branch MACs computed in variant ``v`` (drawn: realised)."""
    if v in DRAWN:
        return statistics.fmean(res.kept[v]), statistics.fmean(res.kept_macs[v])
    return (1.0, 1.0) if v == "open" else (0.0, 0.0)


def result_row(res: Result) -> dict[str, Any]:
    """One depth of a skip-cost record (the layout: ``_tables.skip_cost_tables``)."""
    variants = {}
    for v in SKIP_VARIANTS:
        blocks, macs = _kept(res, v)
        variants[v] = {
            "median_ms": res.median_ms(v),
            "mean_ms": res.mean_ms(v),
            "blocks_kept": blocks,
            "macs_kept": macs,
        }
    return {
        "model": f"resnet{res.depth}",
        "blocks": len(res.survival),
        "mean_survival": res.mean_survival,
        "expected_macs_kept": res.weighted_survival,
        "variants": variants,
    }


def skip_record(
    results: list[Result],
    args: argparse.Namespace,
    info: dict[str, str],
    card: str | None,
    argv: list[str],
) -> dict[str, Any]:
    """The record of this run, one per device (the card on a GPU)."""
    return {
        "kind": "skip_cost",
        "key": f"gpu: {card}" if card else "cpu",
        "device": "gpu" if card else "cpu",
        "commit": sdnet_commit(),
        "command": recorded_command("benchmarks/skip_cost.py", argv, command_env()),
        "machine": dict(info, gpu=card) if card else info,
        "settings": {
            "depths": args.depth,
            "input": "1x28x28",
            "batch": args.batch,
            "steps": args.steps,
            "warmup": args.warmup,
            "p_last": args.p_last,
            "seed": args.seed,
        },
        "results": [result_row(r) for r in results],
    }


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
    argv = argv if argv is not None else sys.argv[1:]
    record = skip_record(results, args, info, gpu_name(backend), argv)
    print("\n".join(skip_cost_tables(record)))
    publish(record, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
