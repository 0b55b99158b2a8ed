"""Markdown for one benchmark record: what a script prints and what the page shows of it.

Each table function documents the ``results`` layout of its record kind (the fields every
record shares are described in ``_records``). Numbers are formatted here and only here.
"""

from __future__ import annotations

from typing import Any

from _targets import LAUNCH_BUDGETS, launch_verdict, model_title

Record = dict[str, Any]
VERSIONS = (("numpy", "NumPy"), ("torch", "PyTorch"), ("python", "Python"))
LABEL_ORDER = ("before", "after", "pytorch")

# -- the rows of a profile (profile_step.py writes them, the page's prose reads them) ---------
KERNEL_ROWS = (
    "conv forward",
    "conv backward",
    "batch norm forward",
    "batch norm backward",
    "ReLU forward",
    "ReLU backward",
    "pooling, shortcuts",
    "loss",
    "optimizer step",
    "zero_grad",
)
CONV_ROWS = ("conv forward", "conv backward")
# the two parts of the convolution rows, measured in sdnet only (after the conv rows)
MATMUL_ROW = "matrix products (forward and backward)"
REST_ROW = "the rest of the convolution (forward and backward)"
OTHER_ROW = "everything else"
# names older records gave a row, read as the row's present name
ROW_ALIASES = {"the rest: im2col, padding, scatter copies (forward and backward)": REST_ROW}
PROFILE_TITLES = {"before": "Before", "after": "After", "pytorch": "PyTorch"}


def sdnet_text(record: Record) -> str:
    """``sdnet <version> at <commit>``, or whichever of the two the record has."""
    version, commit = record["machine"].get("sdnet"), record.get("commit")
    if commit:
        return f"sdnet {version} at {commit}" if version else f"sdnet {commit}"
    return f"sdnet {version}" if version else ""


def machine_lines(record: Record) -> list[str]:
    """Bullets of what the record says of the run: date, versions, CPU, card, threads, load."""
    m = record["machine"]
    out = [f"* Date: {m['date']}"] if "date" in m else []
    versions = [sdnet_text(record)] + [f"{name} {m[k]}" for k, name in VERSIONS if k in m]
    where = [f"sdnet backend: {m['backend']}"] if "backend" in m else []
    where += [f"PyTorch device: {m['torch_device']}"] if "torch_device" in m else []
    out.append("* " + "; ".join([", ".join(v for v in versions if v), *where]))
    if "cpu" in m:
        out.append(f"* CPU: {m['cpu']}" + (f"; BLAS: {m['blas']}" if "blas" in m else ""))
    if "gpu" in m:
        out.append(f"* GPU: {m['gpu']}")
    n = m.get("sdnet_threads")
    threads = [f"sdnet {n} host thread{'' if n == '1' else 's'}"] if n else []
    threads += [m["threads"]] if "threads" in m else []
    threads += [f"PyTorch {m['torch_threads']} intra-op threads"] if "torch_threads" in m else []
    if threads:
        out.append("* Threads: " + "; ".join(threads))
    if "load" in m:
        out.append(f"* Load average (1 min): {m['load']}")
    return out


def speed_tables(record: Record) -> list[str]:
    """Step times, stochastic-depth saving and peak memory of a speed record.

    ``results`` holds one row per model and input: ``model``, ``input`` ("1x28x28"),
    ``rounds`` (timed rounds), ``work_kept`` and ``work_expected`` (fraction of the blocks'
    multiply-adds the drawn gates kept, and its expectation), and for each library, ``sdnet``
    and ``torch``: ``train_ms`` and ``train_sd_ms`` (median training step at constant depth
    and at p_L), ``eval_ms`` (median evaluation pass), ``sd_saving`` (mean step at p_L over
    mean step at constant depth), ``peak_mib`` (memory a training step adds, or null) and,
    in records that have it, ``eval_faults`` (median minor page faults of an evaluation pass).
    """
    s, rows = record["settings"], record["results"]
    out = [
        "| model | input | step | sdnet ms | PyTorch ms | sdnet / PyTorch |",
        "|---|---|---|---:|---:|---:|",
    ]
    steps = (
        (f"train, constant depth, batch {s['batch']}", "train_ms"),
        (f"train, p_L = {s['p_last']:g}, batch {s['batch']}", "train_sd_ms"),
        (f"eval, batch {s['eval_batch']}", "eval_ms"),
    )
    for r in rows:
        for label, field in steps:
            a, b = r["sdnet"][field], r["torch"][field]
            out.append(
                f"| {r['model']} | {r['input']} | {label} | {a:.1f} | {b:.1f} | {a / b:.2f} |"
            )
    out += [
        "",
        f"Stochastic-depth saving (mean step time at p_L = {s['p_last']:g} over constant "
        "depth; the gates of each step are shared by both libraries):",
        "",
        "| model | input | sdnet | PyTorch | conv work kept by the drawn gates | expected |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['model']} | {r['input']} | {r['sdnet']['sd_saving']:.2f} | "
            f"{r['torch']['sd_saving']:.2f} | {r['work_kept']:.3f} | {r['work_expected']:.3f} |"
        )
    return out + _faults_table(s, rows) + _memory_table(rows)


def _faults_table(settings: Record, rows: list[Record]) -> list[str]:
    if not all("eval_faults" in r[lib] for r in rows for lib in ("sdnet", "torch")):
        return []  # records made before the faults were counted
    out = [
        "",
        f"Minor page faults of one evaluation pass at batch {settings['eval_batch']} (pages "
        "touched for the first time, each a trip into the kernel; the median of the timed "
        "passes):",
        "",
        "| model | input | sdnet | PyTorch |",
        "|---|---|---:|---:|",
    ]
    for r in rows:
        a, b = r["sdnet"]["eval_faults"], r["torch"]["eval_faults"]
        out.append(f"| {r['model']} | {r['input']} | {a:,} | {b:,} |")
    return out


def _memory_table(rows: list[Record]) -> list[str]:
    if all(r[lib]["peak_mib"] is None for r in rows for lib in ("sdnet", "torch")):
        return []
    out = [
        "",
        "Peak memory a training step adds (MiB; CPU: rise of the peak resident set size in a "
        "fresh process; GPU: bytes held by the memory pool):",
        "",
        "| model | input | sdnet | PyTorch | sdnet / PyTorch |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        a, b = r["sdnet"]["peak_mib"], r["torch"]["peak_mib"]
        ratio = f"{a / b:.2f}" if a is not None and b else "n/a"
        shown = ["n/a" if v is None else f"{v:.0f}" for v in (a, b)]
        out.append(f"| {r['model']} | {r['input']} | {shown[0]} | {shown[1]} | {ratio} |")
    return out


def profile_table(record: Record) -> list[str]:
    """Milliseconds per training step, kernel by kernel, of a profile record.

    ``results``: ``step_ms`` (wall time of a step under the profiler) and ``kernels``, a list
    of ``kernel`` (name), ``ms`` (per step), ``share`` (of the step's wall time) and ``part``
    (true for a part of the convolution rows above it).
    """
    res = record["results"]
    out = ["| kernel | ms per step | share |", "|---|---:|---:|"]
    for k in res["kernels"]:
        name = f"  of which {k['kernel']}" if k.get("part") else k["kernel"]
        out.append(f"| {name} | {k['ms']:.0f} | {100 * k['share']:.0f}% |")
    out.append(f"| **step (wall, under the profiler)** | **{res['step_ms']:.0f}** | 100% |")
    return out


def profile_rows(record: Record) -> dict[str, Record]:
    """A profile record's rows by their present name (:data:`ROW_ALIASES`)."""
    return {ROW_ALIASES.get(k["kernel"], k["kernel"]): k for k in record["results"]["kernels"]}


def profile_order(records: list[Record]) -> list[str]:
    """Every row of the records: :data:`KERNEL_ROWS` with the convolution's parts after the
    conv rows, then rows only some records have, :data:`OTHER_ROW` last."""
    names = [*CONV_ROWS, MATMUL_ROW, REST_ROW, *KERNEL_ROWS[len(CONV_ROWS) :]]
    seen = [n for r in records for n in profile_rows(r) if n not in names and n != OTHER_ROW]
    return [*names, *dict.fromkeys(seen), OTHER_ROW]


def profile_comparison(records: list[Record]) -> list[str]:
    """One table of the profile records (ordered before, after, PyTorch): milliseconds per
    step and share of each row, a pair of columns per record, and where both an ``after``
    and a ``pytorch`` profile exist, their difference (after minus PyTorch) per row. A row a
    record lacks shows ``-`` (PyTorch has no split of the convolution rows)."""
    recs = by_label(records)
    rows = [profile_rows(r) for r in recs]
    keys = [r["key"] for r in recs]
    gap = "after" in keys and "pytorch" in keys
    head = [f"{PROFILE_TITLES.get(k, k)} ms | {PROFILE_TITLES.get(k, k)} share" for k in keys]
    head += ["after - PyTorch ms"] if gap else []
    out = ["| kernel | " + " | ".join(head) + " |", "|---|" + "---:|" * (2 * len(recs) + gap)]
    for name in profile_order(recs):
        cells = [r.get(name) for r in rows]
        if not any(cells):
            continue
        part = any(c.get("part") for c in cells if c)
        shown = [f"{c['ms']:.0f} | {100 * c['share']:.0f}%" if c else "- | -" for c in cells]
        if gap:
            a, b = (rows[keys.index(k)].get(name) for k in ("after", "pytorch"))
            shown.append(f"{a['ms'] - b['ms']:+.0f}" if a and b else "-")
        label = f"  of which {name}" if part else name
        out.append(f"| {label} | " + " | ".join(shown) + " |")
    steps = [f"**{r['results']['step_ms']:.0f}** | 100%" for r in recs]
    if gap:
        a, b = (recs[keys.index(k)]["results"]["step_ms"] for k in ("after", "pytorch"))
        steps.append(f"**{a - b:+.0f}**")
    return out + ["| **step (wall, under the profiler)** | " + " | ".join(steps) + " |"]


SKIP_VARIANTS = ("open", "closed", "drawn", "row", "subset")
# the gates of each variant: forced open or closed, or drawn with one gate per batch (the paper),
# one per sample masked (row mode) or one per sample with the branch run on the kept samples
SKIP_LABELS = {
    "open": "all open",
    "closed": "all closed",
    "drawn": "drawn, p_L = {p}",
    "row": "drawn per sample, p_L = {p}, row mode (masked)",
    "subset": "drawn per sample, p_L = {p}, subset mode",
}


def skip_ratio(row: Record, variant: str, stat: str = "mean_ms") -> float:
    """A variant's step time over the all-open step's (``stat``: mean_ms or median_ms)."""
    return row["variants"][variant][stat] / row["variants"]["open"][stat]


def skip_predicted(row: Record, kept: float) -> float:
    """drawn/open if a dropped block cost nothing: closed/open + (1 - closed/open) x kept."""
    closed = skip_ratio(row, "closed")
    return closed + (1.0 - closed) * kept


def skip_cost_tables(record: Record) -> list[str]:
    """Step times with every gate open, closed and drawn, against the work kept.

    ``results`` holds one row per depth: ``model``, ``blocks`` (residual blocks L),
    ``mean_survival`` (mean of the p_l), ``expected_macs_kept`` (expectation weighted by each
    block's multiply-adds) and ``variants``: for ``open``, ``closed``, ``drawn`` and, in newer
    records, ``row`` and ``subset`` (per-sample gates), ``median_ms``, ``mean_ms``,
    ``blocks_kept`` and ``macs_kept`` (fractions computed: of blocks, or of block-samples).
    """
    p = record["settings"]["p_last"]
    labels = {v: label.format(p=f"{p:g}") for v, label in SKIP_LABELS.items()}
    out = [
        "| model | gates | median ms/step | mean ms/step | median / open | mean / open | "
        "blocks computed | branch MACs computed |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in record["results"]:
        for v in (v for v in SKIP_VARIANTS if v in r["variants"]):
            x = r["variants"][v]
            out.append(
                f"| {model_title(r['model'])} | {labels[v]} | {x['median_ms']:.1f} | "
                f"{x['mean_ms']:.1f} | {skip_ratio(r, v, 'median_ms'):.3f} | "
                f"{skip_ratio(r, v):.3f} | {x['blocks_kept']:.3f} | {x['macs_kept']:.3f} |"
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
    for r in record["results"]:
        kept = r["variants"]["drawn"]["macs_kept"]
        out.append(
            f"| {model_title(r['model'])} | {r['blocks']} | {r['mean_survival']:.3f} | "
            f"{r['expected_macs_kept']:.3f} | {kept:.3f} | {skip_predicted(r, kept):.3f} | "
            f"{skip_ratio(r, 'drawn'):.3f} |"
        )
    return out


def by_label(records: list[Record]) -> list[Record]:
    """Records ordered before, after, then any other label."""
    order = {k: i for i, k in enumerate(LABEL_ORDER)}
    return sorted(records, key=lambda r: (order.get(r["key"], len(order)), r["key"]))


def launch_table(records: list[Record]) -> list[str]:
    """Kernel launches per steady training step, by kind, one column per label.

    A launch record (kind ``"launches"``, keyed by its label, ``"before"`` or ``"after"``)
    has ``settings`` with ``batch`` and ``input``, the card in ``machine["gpu"]``, and
    ``results``, one row per model: ``model``, ``total`` (launches per steady training step)
    and ``by_kind`` (launches per kind of kernel). Each model's total is read against its
    budget (``_targets.LAUNCH_BUDGETS``).
    """
    recs = by_label(records)
    rows = {(rec["key"], r["model"]): r for rec in recs for r in rec["results"]}
    models = list(dict.fromkeys(r["model"] for rec in recs for r in rec["results"]))
    heads = [f"{r['key']} ({sdnet_text(r)})" if sdnet_text(r) else r["key"] for r in recs]
    out = ["| model | launches | " + " | ".join(heads) + " |", "|---|---|" + "---:|" * len(recs)]
    for model in models:
        cells = [rows.get((rec["key"], model)) for rec in recs]
        kinds = sorted({k for c in cells if c for k in c["by_kind"]})
        for kind in kinds:
            shown = [_count(c["by_kind"].get(kind)) if c else "-" for c in cells]
            out.append(f"| {model} | {kind} | " + " | ".join(shown) + " |")
        totals = [f"**{c['total']:,.0f}**" if c else "-" for c in cells]
        out.append(f"| {model} | **total** | " + " | ".join(totals) + " |")
        verdicts = [launch_verdict(model, c["total"]) if c else "-" for c in cells]
        out.append(f"| {model} | {_budget_text(model)} | " + " | ".join(verdicts) + " |")
    return out


def _count(n: float | None) -> str:
    return "-" if n is None else f"{n:,.0f}"


def _budget_text(model: str) -> str:
    budget = LAUNCH_BUDGETS.get(model)
    return "budget: none" if budget is None else f"budget: at most {budget:,}"
