"""``sdnet plot SWEEP_DIR``: test accuracy against one swept option, one line per setting of
the others (like the paper's test error against p_L, one line per depth).

Each point is the mean over the finished seeds, with the standard deviation as an error bar
and every seed drawn faintly behind. Options whose values are not numbers (a model name, a
rule) are spread evenly along the axis. matplotlib is optional (``pip install
'sdnet[plot]'``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdnet.config import ConfigError
from sdnet.plot import pyplot, save_figure
from sdnet.sweep.plan import SWEEP_JSON, SweepPlan
from sdnet.sweep.results import summarize, trial_rows

__all__ = ["plot_sweep", "choose_x"]

PREFERRED = ("p_last",)  # the paper's swept parameter comes first on the x axis


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def choose_x(swept: dict[str, list[Any]], x: str | None = None) -> str:
    """The option on the x axis: ``x`` if given, else ``p_last`` when swept, else the numeric
    option with the most values, else the first swept option."""
    if not swept:
        raise ConfigError("this sweep varies no option (one configuration): nothing to plot")
    if x is not None:
        if x not in swept:
            raise ConfigError(f"--x {x!r} is not a swept option; choose one of {', '.join(swept)}")
        return x
    for name in PREFERRED:
        if name in swept:
            return name
    numeric = [k for k, v in swept.items() if _numeric(v)]
    if numeric:
        return max(numeric, key=lambda k: len(set(map(json.dumps, swept[k]))))
    return next(iter(swept))


def plot_sweep(
    sweep_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    x: str | None = None,
    metric: str = "final",
    overwrite: bool = False,
) -> Path:
    """Draw the sweep's accuracy against a swept option as a PNG.

    Parameters
    ----------
    sweep_dir : path
        A sweep directory (with ``sweep.json``).
    out : path, optional
        Default ``SWEEP_DIR/sweep.png`` (replaced by each plot).
    x : str, optional
        The option on the x axis (see :func:`choose_x`).
    metric : "final" or "best"
        Which accuracy (see :mod:`sdnet.sweep.results`).
    overwrite : bool
        Replace an existing file named by ``out`` (else it is refused).

    Returns
    -------
    Path
    """
    plt = pyplot()
    if metric not in ("final", "best"):
        raise ConfigError(f"metric must be 'final' or 'best', got {metric!r}")
    sweep_dir = Path(sweep_dir)
    plan, rows = trial_rows(sweep_dir)
    done = [r for r in rows if r["state"] == "done"]
    if not done:
        raise ConfigError(f"no trial of {sweep_dir} has finished yet: nothing to plot")
    names = plan.swept()
    swept = {k: [r[k] for r in rows] for k in names}
    xname = choose_x(swept, x)
    others = [k for k in names if k != xname]
    numeric = _numeric(swept[xname])
    order = _x_order(swept[xname], numeric)

    def position(v: Any) -> float:
        return float(v) if numeric else float(order.index(v))

    key = f"{metric}_accuracy"
    lines = _lines(plan, rows, others)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, entries) in enumerate(lines.items()):
        entries.sort(key=lambda e: position(e[xname]))
        _draw_line(ax, f"C{i % 10}", label, entries, done, xname, others, key, position)
    if not numeric:
        ax.set_xticks(range(len(order)), [str(v) for v in order])
    seeds = ", ".join(map(str, plan.seeds))
    title = f"{sweep_dir.name}: mean and std over seeds {seeds}"
    ax.set(xlabel=xname, ylabel=f"test accuracy, {metric} (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    target = Path(out) if out is not None else sweep_dir / "sweep.png"
    inputs = (sweep_dir / SWEEP_JSON,)
    return save_figure(fig, target, overwrite=overwrite or out is None, inputs=inputs)


def _x_order(values: list[Any], numeric: bool) -> list[Any]:
    """The distinct x values, in order of first appearance (sorted when numeric)."""
    order: list[Any] = []
    for v in values:
        if v not in order:
            order.append(v)
    if numeric:
        order.sort()
    return order


def _lines(
    plan: SweepPlan, rows: list[dict[str, Any]], others: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """Summary entries with finished seeds, grouped by their setting of the ``others``."""
    lines: dict[str, list[dict[str, Any]]] = {}
    for entry in summarize(plan, rows):
        if entry["count"]:
            label = ", ".join(f"{k}={entry[k]}" for k in others) or f"{len(plan.seeds)} seeds"
            lines.setdefault(label, []).append(entry)
    return lines


def _draw_line(
    ax: Any,
    color: str,
    label: str,
    entries: list[dict[str, Any]],
    done: list[dict[str, Any]],
    xname: str,
    others: list[str],
    key: str,
    position: Callable[[Any], float],
) -> None:
    """One setting's mean with std error bars, and each finished seed faintly behind it."""
    xs = [position(e[xname]) for e in entries]
    ys = [100 * e[f"{key}_mean"] for e in entries]
    err = [100 * (e[f"{key}_std"] or 0.0) for e in entries]
    ax.errorbar(xs, ys, yerr=err, fmt="-o", ms=4, capsize=3, color=color, label=label)
    for r in done:
        if all(r[k] == e_k for k, e_k in zip(others, _values(entries[0], others), strict=True)):
            ax.plot(position(r[xname]), 100 * float(r[key]), ".", color=color, alpha=0.35)


def _values(entry: dict[str, Any], names: list[str]) -> list[Any]:
    return [entry[k] for k in names]
