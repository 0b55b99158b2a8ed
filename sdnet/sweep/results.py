"""The tables of a sweep: ``results.csv`` (one row per trial) and ``summary.md`` (per
configuration: mean, standard deviation and count over seeds).

Accuracies are test-set accuracies. ``final_accuracy`` is after the last epoch;
``best_accuracy`` is the test accuracy at the epoch of best validation accuracy when the runs
have a validation split (the paper's protocol), and otherwise the highest test accuracy of any
epoch, which is optimistic (it picks the epoch on the test set). In ``results.csv`` they are
fractions (as in ``metrics.jsonl``); ``summary.md`` shows percentages. The standard deviation
is the sample one (n - 1), shown once a configuration has two finished seeds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

from sdnet._io import atomic_write_bytes
from sdnet.sweep.plan import SweepPlan, Trial, read_sweep
from sdnet.sweep.status import read_statuses

__all__ = ["trial_rows", "summarize", "write_tables", "RESULTS_CSV", "SUMMARY_MD"]

RESULTS_CSV, SUMMARY_MD = "results.csv", "summary.md"
COLUMNS = (
    "state",
    "final_accuracy",
    "best_accuracy",
    "epochs",
    "seconds",
    "device",
    "host",
    "attempt",
    "error",
)


def trial_rows(sweep_dir: str | os.PathLike[str]) -> tuple[SweepPlan, list[dict[str, Any]]]:
    """The plan and one row per trial: ``trial``, the swept values, ``seed`` and
    :data:`COLUMNS` (empty where a trial has no result)."""
    sweep_dir = Path(sweep_dir)
    plan, trials = read_sweep(sweep_dir)
    statuses = read_statuses(sweep_dir, trials)
    return plan, [_row(t, statuses[t.id]) for t in trials]


def _row(trial: Trial, status: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"trial": trial.id, **trial.params, "seed": trial.seed}
    for key in COLUMNS:
        row[key] = status.get(key, "")
    return row


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def summarize(plan: SweepPlan, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per configuration (plan order): the swept values, ``count`` (finished
    seeds), ``failed``, and the mean and standard deviation of both accuracies (``None``
    where undefined)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for params in plan.configurations():
        groups.setdefault(_key(params), [])
    names = plan.swept()
    for row in rows:
        groups.setdefault(_key({k: row[k] for k in names}), []).append(row)
    out = []
    for key, members in groups.items():
        done = [r for r in members if r["state"] == "done"]
        entry: dict[str, Any] = dict(json.loads(key))
        entry["count"] = len(done)
        entry["failed"] = sum(1 for r in members if r["state"] == "failed")
        for metric in ("final_accuracy", "best_accuracy"):
            values = [float(r[metric]) for r in done]
            entry[f"{metric}_mean"] = statistics.fmean(values) if values else None
            entry[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else None
        out.append(entry)
    return out


def _csv_text(plan: SweepPlan, rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    fields = ["trial", *plan.swept(), "seed", *COLUMNS]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k, "")) for k in fields})
    return buf.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _summary_text(name: str, plan: SweepPlan, rows: list[dict[str, Any]]) -> str:
    states = {s: sum(1 for r in rows if r["state"] == s) for s in ("done", "failed")}
    pending = len(rows) - states["done"] - states["failed"]
    names = plan.swept()
    lines = [
        f"# Sweep {name}",
        "",
        f"{len(rows)} trials: {states['done']} done, {states['failed']} failed, "
        f"{pending} not run yet. Seeds: {', '.join(map(str, plan.seeds))}.",
        "",
        "Test accuracy in %, mean and sample standard deviation over the finished seeds "
        "(`n`). *final*: after the last epoch; *best*: at the epoch of best validation "
        "accuracy with a validation split, else the highest of any epoch.",
        "",
    ]
    if plan.base:
        fixed = ", ".join(f"{k}={_cell(v)}" for k, v in plan.base.items() if k != "data_dir")
        lines += [f"Common options: {fixed}.", ""]
    header = [*names, "n", "failed", "final mean", "final std", "best mean", "best std"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for s in summarize(plan, rows):
        cells = [str(_cell(s[k])) for k in names] + [str(s["count"]), str(s["failed"])]
        cells += [_pct(s["final_accuracy_mean"]), _pct(s["final_accuracy_std"])]
        cells += [_pct(s["best_accuracy_mean"]), _pct(s["best_accuracy_std"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(sweep_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(Re)write ``results.csv`` and ``summary.md`` from the status files; returns both
    paths."""
    sweep_dir = Path(sweep_dir)
    plan, rows = trial_rows(sweep_dir)
    csv_text = _csv_text(plan, rows)
    md_text = _summary_text(sweep_dir.name, plan, rows)
    a = atomic_write_bytes(sweep_dir / RESULTS_CSV, lambda fh: fh.write(csv_text.encode()))
    b = atomic_write_bytes(sweep_dir / SUMMARY_MD, lambda fh: fh.write(md_text.encode()))
    return a, b
