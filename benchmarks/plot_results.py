"""Draw the accuracy results as PNG: ``docs/results.json`` -> ``docs/img/results.png``.

One horizontal bar per experiment of ``benchmarks/accuracy.py``: the median test accuracy of
its longest runs, a whisker from the lowest to the highest seed, the target as a diamond, and
runs shorter than the experiment's protocol hatched (scaled down: they do not test the
target). Every number comes from the records; rerun after ``accuracy.py --write``::

    python benchmarks/plot_results.py            # writes docs/img/results.png
    python benchmarks/plot_results.py --out results.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from accuracy import EXPERIMENTS, RECORDS, REPO, TARGETS, protocol_epochs

import sdnet

OUT = REPO / "docs" / "img" / "results.png"


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per experiment (in the order of ``EXPERIMENTS``): median, min, max of the longest runs."""
    rows = []
    for name in EXPERIMENTS:
        runs = [r for r in records if r["experiment"] == name]
        if not runs:
            continue
        epochs = max(r["epochs"] for r in runs)
        acc = [r["test_accuracy"] for r in runs if r["epochs"] == epochs]
        protocol = protocol_epochs(name)
        rows.append(
            dict(
                name=name,
                epochs=epochs,
                protocol=protocol,
                seeds=len(acc),
                median=statistics.median(acc),
                low=min(acc),
                high=max(acc),
                target=TARGETS.get(name),
            )
        )
    return rows


def plot(rows: list[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if not rows:
        raise ValueError("no records to plot: run benchmarks/accuracy.py first")
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.4), dpi=110)
    ys = list(range(len(rows)))[::-1]
    for y, r in zip(ys, rows, strict=True):
        scaled = r["epochs"] < r["protocol"]
        ax.barh(
            y, 100 * r["median"], color="#4c72b0", alpha=0.55 if scaled else 0.9,
            hatch="//" if scaled else None, edgecolor="white",
        )  # fmt: skip
        ax.plot([100 * r["low"], 100 * r["high"]], [y, y], color="black", lw=1.2)
        if r["target"]:
            ax.plot(100 * r["target"], y, marker="D", color="#c44e52", ms=6)
        ax.text(
            100 * r["median"] + 0.08, y + 0.22, f"{100 * r['median']:.2f}%", fontsize=8,
            va="bottom",
        )  # fmt: skip
    labels = [
        f"{r['name']}\n{r['epochs']} of {r['protocol']} epochs, {r['seeds']} seed(s)" for r in rows
    ]
    ax.set_yticks(ys, labels, fontsize=8)
    lows = [100 * min(r["low"], r["target"] or 1.0) for r in rows]
    ax.set_xlim(max(0.0, min(lows) - 1.5), 100.0)
    ax.set_xlabel("test accuracy (%)")
    ax.set_title("sdnet test accuracy (docs/results.json)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    handles = [
        Line2D([], [], marker="D", color="#c44e52", ls="", label="target"),
        Patch(facecolor="#4c72b0", alpha=0.55, hatch="//", edgecolor="white", label="scaled down"),
        Line2D([], [], color="black", label="seeds: min to max"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, metadata={"Software": f"sdnet {sdnet.__version__}"})
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=Path, default=RECORDS, help="results JSON")
    parser.add_argument("--out", type=Path, default=OUT, help="PNG to write")
    args = parser.parse_args(argv)
    try:
        records = json.loads(args.records.read_text())
        out = plot(summarize(records), args.out)
    except (OSError, ValueError) as exc:
        print(f"plot_results: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
