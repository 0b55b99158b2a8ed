"""Accuracy benchmark: train the documented recipes for real and write ``docs/results.md``.

Each experiment is a recipe (:mod:`sdnet.recipes`, which owns the options), sometimes with a
few options changed (``EXPERIMENTS``). Every run appends one record
(options, seed, accuracies, wall time, machine) to ``docs/results.json``; ``--write`` then
regenerates ``docs/results.md`` from all records: a table per experiment with the median over
seeds, and the exact command of every run. Nothing in the table is typed by hand. Records of
an experiment made with other options than its recipe's current ones (the recipe has changed
since) are listed apart, as earlier recipes, and never count for its target.

Experiments (experiment: recipe)
--------------------------------
``default``          ``default``: ``sdnet.train()`` with no options (ResNet-8, MNIST, 2 epochs)
``resnet20-sd``      ``mnist-resnet20-sd``: ResNet-20, p_L = 0.8, SGD Nesterov 0.9, wd 5e-4, cosine,
                     crops of the image padded by 2 black pixels, 15 epochs
``resnet20-const``   ``mnist-resnet20-const``: the same at constant depth (p_L = 1)
``fashion-sd``       ``fashion-resnet20-sd``: the same on Fashion-MNIST, with flips, 30 epochs
``fashion-const``    ``fashion-resnet20-const``: the same at constant depth
``fashion-sd-p05``   ``fashion-resnet20-sd`` at the paper's p_L = 0.5 (why the recipe has 0.8)
``modes-batch``      ``mnist-resnet20-sd`` for 3 epochs: one gate per mini-batch (the paper)
``modes-row``        the same with one gate per sample, masked (``drop_mode="row"``)
``modes-subset``     the same with one gate per sample, the branch run on the kept samples
``seednet-blog``     ``seednet-blog``: the blog's network and recipe (batch 1, lr 1e-3, shortcut
                     lr 1e-5, plain SGD, the blog's init and [0, 1] inputs, one epoch)
``seednet-sound``    ``seednet-sound``: the same network with a sound recipe (batch 128, cosine)

Examples
--------
::

    OPENBLAS_NUM_THREADS=1 python benchmarks/accuracy.py default --seeds 0 1 2 --write
    python benchmarks/accuracy.py resnet20-sd resnet20-const --epochs 15 --device gpu --write
    python benchmarks/accuracy.py seednet-blog seednet-sound --write

``--epochs`` overrides the experiments' epoch counts (the ResNet-20 protocols are 15
epochs on MNIST, 30 on Fashion-MNIST).
``--smoke`` trains on 256 images for a few steps (for tests); such runs are never recorded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _machine import command_env, machine_info

import sdnet
from sdnet.recipes import RECIPES

REPO = Path(__file__).resolve().parent.parent
RECORDS = REPO / "docs" / "results.json"
DOC = REPO / "docs" / "results.md"

# each experiment is a recipe (sdnet/recipes.py, the one owner of the options) and the options
# it changes; the experiments keep their names, which the records in docs/results.json carry.
# The modes-* experiments compare the stochastic-depth modes at equal epochs, scaled down.
_MODES = {"epochs": 3}
EXPERIMENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("default", {}),
    "resnet20-sd": ("mnist-resnet20-sd", {}),
    "resnet20-const": ("mnist-resnet20-const", {}),
    "fashion-sd": ("fashion-resnet20-sd", {}),
    "fashion-const": ("fashion-resnet20-const", {}),
    "fashion-sd-p05": ("fashion-resnet20-sd", {"p_last": 0.5}),
    "modes-batch": ("mnist-resnet20-sd", dict(_MODES)),
    "modes-row": ("mnist-resnet20-sd", dict(_MODES, drop_mode="row")),
    "modes-subset": ("mnist-resnet20-sd", dict(_MODES, drop_mode="subset")),
    "seednet-blog": ("seednet-blog", {}),
    "seednet-sound": ("seednet-sound", {}),
}


def experiment_options(name: str) -> dict[str, Any]:
    """The options experiment ``name`` trains with: its recipe's, and its own changes."""
    recipe, changes = EXPERIMENTS[name]
    return dict(RECIPES[recipe].options, **changes)


def protocol_epochs(name: str) -> int:
    """The epochs of experiment ``name``."""
    return int(experiment_options(name).get("epochs", sdnet.TrainConfig().epochs))


def _same_recipe(record: dict[str, Any], name: str) -> bool:
    """Whether a record was made with the experiment's current options (seed, device and an
    epoch override aside)."""
    ignored = ("seed", "device", "epochs")
    current = {k: v for k, v in experiment_options(name).items() if k not in ignored}
    return {k: v for k, v in record["options"].items() if k not in ignored} == current


NOTES = {
    "default": "`sdnet.train()` with no arguments (`sdnet train` on the command line).",
    "resnet20-sd": "The paper's network (stride-1 first convolution, option-A shortcuts, linear "
    "survival rule) and optimizer, with sdnet's recipe for 28x28 digits: random crops of the "
    "image padded by 2 black pixels, p_L = 0.8 (recipes.md says why), 15 epochs; "
    "`resnet20-const` is the same run at constant depth, side by side.",
    "resnet20-const": "`resnet20-sd` at constant depth (p_L = 1).",
    "fashion-sd": "`resnet20-sd`'s recipe on Fashion-MNIST, with flips too (a mirrored shirt "
    "is a shirt) and 30 epochs; `fashion-const` is the same run at constant depth, side by side.",
    "fashion-const": "`fashion-sd` at constant depth (p_L = 1).",
    "fashion-sd-p05": "`fashion-sd` at the paper's p_L = 0.5, everything else the same: the "
    "comparison behind the digit recipes' p_L = 0.8.",
    "modes-batch": "The stochastic-depth modes compared at equal epochs, scaled down to 3 epochs "
    "of `resnet20-sd` (same seed, same recipe otherwise): one gate per mini-batch, the paper's "
    "mode. Their step times are in benchmarks.md (skip cost).",
    "modes-row": "`modes-batch` with one gate per sample, the branch computed for every sample "
    "and masked (timm's and torchvision's mode).",
    "modes-subset": "`modes-batch` with one gate per sample, the branch computed on the kept "
    "samples only (sdnet's subset mode).",
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
    "fashion-const": None,
    "fashion-sd-p05": None,
    "modes-batch": None,
    "modes-row": None,
    "modes-subset": None,
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
    options = dict(experiment_options(name), seed=seed, device=args.device)
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
        recipe = EXPERIMENTS[name][0]
        result = sdnet.train(recipe=recipe, run_dir=str(Path(tmp) / "run"), **options)
        wall = time.perf_counter() - t0
    last = result.history[-1]
    shown = {k: v for k, v in options.items() if k not in ("progress", "data_dir")}
    env = command_env()  # BLAS kernel settings and thread counts, as the run had them
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
        if rows:
            out += experiment_section(name, rows)
    return "\n".join(out).rstrip() + "\n"


def experiment_section(name: str, rows: list[dict[str, Any]]) -> list[str]:
    """One experiment: its current recipe's runs in a table, then earlier recipes' runs."""
    current = [r for r in rows if _same_recipe(r, name)]
    earlier = [r for r in rows if not _same_recipe(r, name)]
    target, protocol = TARGETS[name], protocol_epochs(name)
    out = [f"## {name}", "", NOTES[name], "", f"Options: `{_options(experiment_options(name))}`"]
    out.append("")
    if target:
        out += [f"Target: test accuracy >= {100 * target:.1f}% after {protocol} epochs.", ""]
    if not current:
        out += ["Not run yet with these options.", ""]
    else:
        out += _runs_table(current, protocol)
    if earlier:
        out += [
            "Earlier recipes of this experiment (other options; they do not count for its target):",
            "",
        ]
        out += [f"* {_run_line(r)}; options `{_options(r['options'])}`" for r in rs_sorted(earlier)]
        out.append("")
    return out


def _runs_table(rows: list[dict[str, Any]], protocol: int) -> list[str]:
    """The medians over seeds, one line per epochs, device, p_L and threads; then every run."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["epochs"], r["machine"]["backend"], r["p_last"], _host_threads(r))
        groups.setdefault(key, []).append(r)
    out = []
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
    return out + ["", "Runs:", ""] + [f"* {_run_line(r)}" for r in rs_sorted(rows)] + [""]


def _run_line(r: dict[str, Any]) -> str:
    m = r["machine"]
    return (
        f"seed {r['seed']}: {100 * r['test_accuracy']:.2f}% after {r['epochs']} epochs in "
        f"{r['wall_seconds']:.0f} s; `{r['command']}`; {m['date']}; {m['cpu']}; "
        f"sdnet {m['sdnet']}, NumPy {m['numpy']}; load at the end {m['load']}"
    )


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
        rows = [r for r in records if r["experiment"] == name and _same_recipe(r, name)]
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


def _options(options: dict[str, Any]) -> str:
    opts = {k: v for k, v in options.items() if k not in ("seed", "device", "epochs")}
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
