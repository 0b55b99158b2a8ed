"""Kernel launches and host syncs per steady training step on a (simulated) CUDA device.

Each launch a GPU makes costs a few microseconds of host time whatever its size, so a ResNet
whose step launches thousands of small kernels is bound by the launches, not by the card.
This script counts them without a GPU, on the simulated CUDA device of
:mod:`sdnet.testing.simdevice` (CuPy's rules through array-api-compat: one launch per
operation producing or writing an array, none for views; CuPy's copies for joins and matrix
products; host syncs for every value read back, boolean masks included).

For each model it runs the real ``sdnet.train`` on ``sim:1`` (batch 128, CIFAR-shaped random
3x32x32 images with the CIFAR default crops and flips, stochastic depth with the paper's
linear rule and p_L = 0.5, one gate per block per batch, the gates fixed so that the measured
steps keep the expected number of blocks on average) and measures whole steady steps (the
loader's gather, forward, loss, backward, finiteness flag, update, metric sums; see
:mod:`sdnet.testing.steps`). It prints the launches per step by part of the step (optimizer,
batch norm, convolution ...) and by operation, the host syncs per step with the lines that
cause them, and the host-to-device copies.

Examples
--------
::

    python benchmarks/launches.py --smoke                 # ResNet-8, batch 8: never recorded
    python benchmarks/launches.py                         # ResNet-20 and ResNet-110, printed
    python benchmarks/launches.py --write before          # ... recorded as "before", page rewritten

``--write LABEL`` replaces the ``launches`` record of that label (``before``, ``after``) in
``docs/benchmarks.json`` and rewrites ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads

from _machine import machine_info, sdnet_commit  # noqa: E402
from _records import RECORDS, recorded_command  # noqa: E402
from _tables import launch_table  # noqa: E402
from _targets import model_title  # noqa: E402
from render_benchmarks import publish  # noqa: E402

import sdnet  # noqa: E402
from sdnet.testing.steps import (  # noqa: E402
    GATE_CYCLE,
    WARMUP_STEPS,
    MeasuredRun,
    StepCost,
    steady_cost,
    synthetic_datasets,
    train_steps,
)

DEVICE = "sim:1"
CARD = "simulated CUDA device (sdnet.testing.simdevice: CuPy's launch rules)"
INPUT = "3x32x32"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet110"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument(
        "--steps", type=int, default=WARMUP_STEPS + GATE_CYCLE, help="training steps run"
    )
    p.add_argument("--p-last", type=float, default=0.5)
    p.add_argument("--write", metavar="LABEL", help="record as LABEL (before, after); rewrite page")
    p.add_argument("--records", type=Path, default=RECORDS, help="the records file (page beside)")
    p.add_argument("--smoke", action="store_true", help="ResNet-8, batch 8: never recorded")
    args = p.parse_args(argv)
    if args.smoke:
        args.models, args.batch = ["resnet8"], 8
    if args.steps <= WARMUP_STEPS or args.batch < 1:
        p.error(f"--steps must be > {WARMUP_STEPS} (the first are not steady), --batch >= 1")
    return args


def measure(model: str, args: argparse.Namespace) -> tuple[StepCost, MeasuredRun]:
    """The steady steps of ``model`` on the simulated device."""
    with synthetic_datasets(["cifar10"], args.steps * args.batch):
        run = train_steps(args.steps, device=DEVICE, model=model, dataset="cifar10",
                          batch_size=args.batch, p_last=args.p_last, fixed=True)  # fmt: skip
    print(f"  {model}: steps {run.steady()} measured", file=sys.stderr, flush=True)
    return steady_cost(run), run


def sync_sources(run: MeasuredRun) -> dict[str, float]:
    """Host syncs per steady step, by kind and the line that causes them."""
    recs = run.steady_recordings()
    counts = Counter(f"{e.kind} at {e.where}" for r in recs for e in r.syncs)
    return {k: n / len(recs) for k, n in counts.most_common()}


def result_row(model: str, cost: StepCost, run: MeasuredRun) -> dict[str, Any]:
    """One model of a launches record (the layout: ``_tables.launch_table``, plus the by-op
    counts, syncs and copies, which the page does not show)."""
    return {
        "model": model,
        "total": cost.launches,
        "by_kind": cost.by_group,
        "by_op": cost.by_op,
        "syncs": cost.syncs,
        "sync_sources": sync_sources(run),
        "h2d": cost.h2d,
        "h2d_bytes": cost.h2d_bytes,
        "steps": cost.steps,
        "blocks_kept": cost.kept,
    }


def counts_table(title: str, counts: dict[str, float]) -> list[str]:
    out = [f"| {title} | per step |", "|---|---:|"]
    return out + [f"| {k} | {v:,.1f} |" for k, v in counts.items()]


def report(row: dict[str, Any]) -> list[str]:
    """What the script prints for one model."""
    out = [
        f"## {model_title(row['model'])}: {row['total']:,.0f} launches, {row['syncs']:g} host "
        f"syncs, {row['h2d']:g} host-to-device copies ({row['h2d_bytes']:,.0f} B) per step",
        "",
        *counts_table("part of the step", row["by_kind"]),
        "",
        *counts_table("operation", row["by_op"]),
    ]
    if row["sync_sources"]:
        out += ["", *counts_table("host sync", row["sync_sources"])]
    return out + [""]


def launch_record(rows: list[dict[str, Any]], args: argparse.Namespace, argv: list[str]) -> Any:
    """The record of this run, keyed by its label."""
    info = machine_info(sdnet.get_backend(DEVICE))
    return {
        "kind": "launches",
        "key": args.write,
        "commit": sdnet_commit(),
        "command": recorded_command("benchmarks/launches.py", argv),
        "machine": dict(info, gpu=CARD),
        "settings": {
            "batch": args.batch,
            "input": INPUT,
            "augmentation": "crops (padding 4) and flips",
            "p_last": args.p_last,
            "rule": "linear",
            "mode": "batch",
            "gates": f"systematic sampling: the expected blocks kept over {GATE_CYCLE} steps",
            "steps": args.steps,
        },
        "results": rows,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    argv = argv if argv is not None else sys.argv[1:]
    rows = []
    for model in args.models:
        cost, run = measure(model, args)
        rows.append(result_row(model, cost, run))
        print("\n".join(report(rows[-1])), flush=True)
    record = launch_record(rows, args, argv)
    print("\n".join(launch_table([dict(record, key=args.write or "this run")])))
    publish(record, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
