"""Accuracy benchmark: train the documented recipes for real and write ``docs/results.md``.

Each experiment is a recipe (:mod:`sdnet.recipes`, which owns the options; the experiment
names are kept, see ``EXPERIMENTS``). Every run appends one record
(options, seed, accuracies, wall time, machine) to ``docs/results.json``; ``--write`` then
regenerates ``docs/results.md`` from all records: a table per experiment with the median over
seeds, and the exact command of every run. Nothing in the table is typed by hand.

Experiments (experiment: recipe)
--------------------------------
``default``          ``default``: ``sdnet.train()`` with no options (ResNet-8, MNIST, 2 epochs)
``resnet20-sd``      ``mnist-resnet20-sd``: ResNet-20, p_L = 0.5, SGD Nesterov 0.9, wd 5e-4, cosine
``resnet20-const``   ``mnist-resnet20-const``: the same at constant depth (p_L = 1)
``fashion-sd``       ``fashion-resnet20-sd``: ``resnet20-sd`` on Fashion-MNIST
``seednet-blog``     ``seednet-blog``: the blog's network and recipe (batch 1, lr 1e-3, shortcut
                     lr 1e-5, plain SGD, the blog's init and [0, 1] inputs, one epoch)
``seednet-sound``    ``seednet-sound``: the same network with a sound recipe (batch 128, cosine)

Examples
--------
::

    OPENBLAS_NUM_THREADS=1 python benchmarks/accuracy.py default --seeds 0 1 2 --write
    python benchmarks/accuracy.py resnet20-sd resnet20-const --epochs 15 --device gpu --write
    python benchmarks/accuracy.py seednet-blog seednet-sound --write

``--epochs`` overrides the experiments' epoch counts (the ResNet-20 protocol is 15 epochs).
``--smoke`` trains on 256 images for a few steps (for tests); such runs are never recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _machine import THREAD_VARS, machine_info

import sdnet
from sdnet.recipes import RECIPES

REPO = Path(__file__).resolve().parent.parent
RECORDS = REPO / "docs" / "results.json"
DOC = REPO / "docs" / "results.md"

# each experiment is a recipe (sdnet/recipes.py, the one owner of the options); the
# experiments keep their names, which the records in docs/results.json carry
EXPERIMENTS: dict[str, str] = {
    "default": "default",
    "resnet20-sd": "mnist-resnet20-sd",
    "resnet20-const": "mnist-resnet20-const",
    "fashion-sd": "fashion-resnet20-sd",
    "seednet-blog": "seednet-blog",
    "seednet-sound": "seednet-sound",
}


def protocol_epochs(name: str) -> int:
    """The epochs of experiment ``name``'s recipe."""
    return int(RECIPES[EXPERIMENTS[name]].options.get("epochs", sdnet.TrainConfig().epochs))


NOTES = {
    "default": "`sdnet.train()` with no arguments (`sdnet train` on the command line).",
    "resnet20-sd": "The paper's network (stride-1 first convolution, option-A shortcuts, linear "
    "survival rule) and its recipe scaled down to MNIST; `resnet20-const` is the same run at "
    "constant depth, side by side.",
    "resnet20-const": "`resnet20-sd` at constant depth (p_L = 1).",
    "fashion-sd": "`resnet20-sd` on Fashion-MNIST.",
    "seednet-blog": "The blog's own network and recipe. The blog reported 72% on 50 test images; "
    "here the accuracy is on the full 10,000-image test set, after one epoch of batch-1 SGD.",
    "seednet-sound": "The blog's network trained with a sound recipe (mini-batches, Nesterov "
    "momentum, weight decay, cosine schedule).",
}
TARGETS = {
    "default": 0.990,
    "resnet20-sd": 0.996,
    "resnet20-const": None,
    "fashion-sd": 0.940,
    "seednet-blog": None,
    "seednet-sound": None,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("experiments", nargs="*", metavar="EXPERIMENT", help=", ".join(EXPERIMENTS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=None, help="override the experiments' epochs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default=None, help="MNIST folder (default: sdnet's search)")
    p.add_argument("--write", action="store_true", help="record the runs, rewrite results.md")
    p.add_argument("--smoke", action="store_true", help="256 images, never recorded")
    p.add_argument("--render", action="store_true", help="only rewrite results.md from records")
    return p.parse_args(argv)


def run_one(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    options = dict(RECIPES[EXPERIMENTS[name]].options, seed=seed, device=args.device)
    options["progress"] = False
    if args.epochs is not None and name != "default":
        options["epochs"] = args.epochs
    if args.data_dir:
        options["data_dir"] = args.data_dir
    if args.smoke:
        options.update(
            limit_train=256,
            limit_test=200,
            epochs=1,
            batch_size=min(options.get("batch_size", 128), 64),
        )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = sdnet.train(recipe=EXPERIMENTS[name], run_dir=str(Path(tmp) / "run"), **options)
        wall = time.perf_counter() - t0
    last = result.history[-1]
    shown = {k: v for k, v in options.items() if k not in ("progress", "data_dir")}
    env = [f"{k}={os.environ[k]}" for k in THREAD_VARS if k in os.environ]
    return {
        "experiment": name,
        "seed": seed,
        "options": shown,
        "p_last": result.config.survival_last(),
        "stem_stride": result.model.config.get("stem_stride"),
        "epochs": last["epoch"],
        "test_accuracy": result.test_accuracy,
        "train_loss": last["train_loss"],
        "wall_seconds": wall,
        "train_images_per_second": statistics.median(
            h["images_per_second"] for h in result.history
        ),
        "command": " ".join(env + ["python", "benchmarks/accuracy.py", name, "--seeds",
                                   str(seed)] + (["--epochs", str(args.epochs)]
                                                 if args.epochs and name != "default" else [])
                            + (["--device", args.device] if args.device != "cpu" else [])),
        "machine": machine_info(result.model.backend),
    }  # fmt: skip


def load_records() -> list[dict[str, Any]]:
    if RECORDS.exists():
        return json.loads(RECORDS.read_text())
    return []


def render(records: list[dict[str, Any]]) -> str:
    out = [
        "# Results",
        "",
        "Test accuracies of sdnet's documented recipes, trained for real by",
        "`benchmarks/accuracy.py` (which writes this page from `docs/results.json`; nothing",
        "here is typed by hand). Medians over the seeds run; every run's command, date and",
        "machine are listed below its table. Wall times include loading the data and the",
        "evaluation after every epoch; the load average (1 minute, read when the run ended)",
        "shows how busy the machine was: runs that shared its CPUs took longer, so compare",
        "wall times only between runs with a similar load.",
        "",
        *summary(records),
    ]
    for name in EXPERIMENTS:
        rows = [r for r in records if r["experiment"] == name]
        if not rows:
            continue
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for r in rows:
            key = (r["epochs"], r["machine"]["backend"], r["p_last"], _host_threads(r))
            groups.setdefault(key, []).append(r)
        target = TARGETS[name]
        protocol = protocol_epochs(name)
        out += [f"## {name}", "", NOTES[name], "", f"Options: `{_options(rows[0])}`", ""]
        if target:
            out += [f"Target: test accuracy >= {100 * target:.1f}% after {protocol} epochs.", ""]
        if any(r["epochs"] < protocol for r in rows):
            out += [
                f"Rows with fewer than {protocol} epochs are scaled-down runs (the full "
                "protocol did not fit the machine's time); they do not test the target.",
                "",
            ]
        out += [
            "| epochs | p_L | device | host threads | seeds | median test acc. | min | max | "
            "median wall s | train img/s |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for (epochs, backend, p_last, threads), rs in sorted(groups.items(), key=lambda kv: kv[0]):
            accs = [r["test_accuracy"] for r in rs]
            walls = [r["wall_seconds"] for r in rs]
            ips = [r["train_images_per_second"] for r in rs]
            out.append(
                f"| {epochs} | {p_last:g} | {backend} | {threads} | {len(rs)} | "
                f"{100 * statistics.median(accs):.2f}% | {100 * min(accs):.2f}% | "
                f"{100 * max(accs):.2f}% | {statistics.median(walls):.0f} | "
                f"{statistics.median(ips):.0f} |"
            )
        out += ["", "Runs:", ""]
        for r in rs_sorted(rows):
            m = r["machine"]
            out.append(
                f"* seed {r['seed']}: {100 * r['test_accuracy']:.2f}% in "
                f"{r['wall_seconds']:.0f} s; `{r['command']}`; {m['date']}; {m['cpu']}; "
                f"sdnet {m['sdnet']}, NumPy {m['numpy']}; load at the end {m['load']}"
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _host_threads(record: dict[str, Any]) -> str:
    """sdnet's host threads in a run (runs before sdnet had them used one)."""
    return record["machine"].get("sdnet_threads", "1")


def summary(records: list[dict[str, Any]]) -> list[str]:
    """One line per experiment: its longest runs' median accuracy against the target."""
    out = [
        "| experiment | epochs (protocol) | seeds | median test acc. | target | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name in EXPERIMENTS:
        rows = [r for r in records if r["experiment"] == name]
        if not rows:
            continue
        epochs = max(r["epochs"] for r in rows)
        longest = [r for r in rows if r["epochs"] == epochs]
        acc = statistics.median(r["test_accuracy"] for r in longest)
        protocol = protocol_epochs(name)
        target = TARGETS[name]
        if target is None:
            verdict = "no target (a comparison)"
        elif epochs < protocol:
            verdict = "not tested: scaled down"
        else:
            verdict = "met" if acc >= target else "NOT met"
        shown = f"{100 * target:.1f}%" if target else "-"
        out.append(
            f"| [{name}](#{name}) | {epochs} ({protocol}) | {len(longest)} | {100 * acc:.2f}% | "
            f"{shown} | {verdict} |"
        )
    return out + [""]


def rs_sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["epochs"], r["seed"], r["machine"]["date"]))


def _options(r: dict[str, Any]) -> str:
    opts = {k: v for k, v in r["options"].items() if k not in ("seed", "device", "epochs")}
    return ", ".join(f"{k}={v!r}" for k, v in opts.items()) or "none (the defaults)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    unknown = [e for e in args.experiments if e not in EXPERIMENTS]
    if unknown:
        print(f"unknown experiment {unknown}: use {', '.join(EXPERIMENTS)}", file=sys.stderr)
        return 2
    records = load_records()
    if not args.render:
        if not args.experiments:
            print("name at least one experiment:", ", ".join(EXPERIMENTS), file=sys.stderr)
            return 2
        for name in args.experiments:
            for seed in args.seeds:
                rec = run_one(name, seed, args)
                print(
                    f"{name} seed {seed}: test accuracy {100 * rec['test_accuracy']:.2f}% "
                    f"({rec['epochs']} epochs, {rec['wall_seconds']:.0f} s, "
                    f"{rec['train_images_per_second']:.0f} img/s)",
                    flush=True,
                )
                if args.write and not args.smoke:
                    records = load_records() + [rec]  # re-read: runs may go in parallel
                    RECORDS.write_text(json.dumps(records, indent=1) + "\n")
    if args.write or args.render:
        DOC.write_text(render(load_records()))
        print(f"wrote {DOC.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
