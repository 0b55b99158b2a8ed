"""``sdnet plot RUN_DIR``: loss, accuracy and learning rate of a run, as a PNG (matplotlib).

matplotlib is optional (``pip install 'sdnet[plot]'``); it is imported only here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sdnet.rundir import METRICS, MetricsLog, RunDirError

__all__ = ["plot_run", "pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend, or an ImportError saying what to
    install (matplotlib is the optional extra ``sdnet[plot]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "sdnet plot needs matplotlib: pip install 'sdnet[plot]' (or pip install matplotlib)"
        ) from None
    return plt


def plot_run(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Draw ``metrics.jsonl`` of ``run_dir``: loss, accuracy (%) and learning rate per epoch.

    Step-level training loss (every ``log_every`` steps) is drawn faintly under the per-epoch
    curves. Returns the path of the PNG (default ``RUN_DIR/metrics.png``, replaced by each
    plot; a file named by ``out`` is replaced only with ``overwrite=True``).
    """
    plt = pyplot()
    run = Path(run_dir)
    if not (run / METRICS).is_file():
        raise RunDirError(f"{run} is not a run directory with {METRICS}")
    records = MetricsLog(run / METRICS).read()
    epochs = [r for r in records if r.get("type") == "epoch"]
    steps = [r for r in records if r.get("type") == "step"]
    if not epochs and not steps:
        raise RunDirError(f"{run / METRICS} holds no metrics yet")
    spe = epochs[0]["step"] / epochs[0]["epoch"] if epochs else None

    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(13, 3.8))
    ep = [r["epoch"] for r in epochs]
    if steps and spe:
        ax_loss.plot(
            [r["step"] / spe for r in steps],
            [r["loss"] for r in steps],
            color="0.75",
            lw=0.8,
            label="train (steps)",
        )
    for split, style in (("train", "-o"), ("val", "-s"), ("test", "-^")):
        key = f"{split}_loss"
        if epochs and key in epochs[0]:
            ax_loss.plot(ep, [r[key] for r in epochs], style, ms=3, label=split)
            ax_acc.plot(
                ep, [100 * r[f"{split}_accuracy"] for r in epochs], style, ms=3, label=split
            )
    if steps and spe:
        ax_lr.plot([r["step"] / spe for r in steps], [r["lr"] for r in steps], lw=1)
    elif epochs:
        ax_lr.plot(ep, [r["lr"] for r in epochs], "-o", ms=3)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="learning rate")
    for ax in (ax_loss, ax_acc):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax_lr.grid(alpha=0.3)
    fig.suptitle(run.name, fontsize=10)
    fig.tight_layout()
    target = Path(out) if out is not None else run / "metrics.png"
    return save_figure(fig, target, overwrite=overwrite or out is None, inputs=(run / METRICS,))


def save_figure(
    fig: Any, target: Path, *, overwrite: bool, inputs: tuple[os.PathLike[str], ...]
) -> Path:
    """Write ``fig`` as a PNG through sdnet's checked, atomic write, then close it."""
    from sdnet._io import atomic_write_bytes

    plt = pyplot()
    try:
        return atomic_write_bytes(
            target,
            lambda fh: fig.savefig(fh, format="png", dpi=110),
            overwrite=overwrite,
            inputs=inputs,
        )
    finally:
        plt.close(fig)
