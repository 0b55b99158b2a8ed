"""Write ``docs/benchmarks.md`` from the records in ``docs/benchmarks.json``.

The page is generated, never edited by hand: the explanations are constant text here, and
every number on it comes from a record (``_records`` describes them), formatted by
``_tables``; the verdicts are computed from the targets declared in ``_targets``. A section
whose records are missing says that it is still to be measured.

Examples
--------
::

    python benchmarks/render_benchmarks.py            # rewrite the page from the records
    python benchmarks/render_benchmarks.py --check    # exit status 1 if the page differs

The measuring scripts (``speed.py``, ``profile_step.py``, ``skip_cost.py``) replace their
record and rewrite the page themselves when run with ``--write``.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

from _records import RECORDS, add_record, load_records
from _tables import (
    CONV_ROWS,
    KERNEL_ROWS,
    MATMUL_ROW,
    OTHER_ROW,
    PROFILE_TITLES,
    REST_ROW,
    by_label,
    launch_table,
    machine_lines,
    profile_comparison,
    profile_rows,
    sdnet_text,
    skip_cost_tables,
    skip_predicted,
    skip_ratio,
    speed_tables,
)
from _targets import (
    LAUNCH_BUDGETS,
    TARGETS,
    model_title,
    run_order,
    threads_text,
    verdict_table,
)

Record = dict[str, Any]

INTRO = """\
# Benchmarks

What sdnet's speed claims rest on, measured on a named machine with the exact command that
produced each number, so anyone can rerun it. This page is generated: each measuring script,
run with `--write`, replaces its record in `docs/benchmarks.json` (speed runs are kept one per
device and thread count, skip-cost runs one per device, profiles one per label: before, after
or pytorch) and rewrites the page; `python benchmarks/render_benchmarks.py` rewrites it from
the records alone. The targets the numbers are read against are declared once, in
`benchmarks/_targets.py`.

* **Speed against PyTorch** (`benchmarks/speed.py`): the same ResNet-20 and ResNet-110 in
  sdnet and in PyTorch (same weights, same gates, same batch, the same number of cores),
  training and evaluation step times, the stochastic-depth saving and the peak memory of a
  training step, on 1x28x28 and 3x32x32 inputs.
* **Profile** (`benchmarks/profile_step.py`): where a ResNet-20 training step spends its time,
  kernel by kernel, before and after a change to the kernels, and where PyTorch's same step
  spends it.
* **Skip cost** (`benchmarks/skip_cost.py`): stochastic depth saves training time only if a
  dropped block costs (almost) nothing. sdnet's default batch mode never computes a dropped
  block's branch, so a ResNet trained with the paper's linear schedule (p_L = 0.5) should need
  about the fraction of the work predicted from its survival probabilities."""

NO_GPU = """\
**GPU figures are still to be measured**: no GPU machine has run these scripts yet. The GPU
path of `speed.py` (another array namespace, device synchronisation, the pool-based memory
figures) runs on the CPU in the tests with `--device torch` and `--device array_api_strict`;
on a GPU machine, `python benchmarks/speed.py --device gpu --write` fills the GPU section
against PyTorch CUDA (eager)."""
GPU_COMMAND = "benchmarks/speed.py --device gpu"

THREADS = """\
## Threads

On the CPU sdnet splits each convolution's batch into cache-sized blocks of images and runs
them in parallel host threads (NumPy releases the GIL while it copies and multiplies), each
calling a one-thread BLAS; NumPy's batch norm and ReLU share out the channels the same way.
`sdnet.set_num_threads(n)` or `SDNET_NUM_THREADS=n` sets the count (default: the CPUs the
process may use, at most 8); keep `OPENBLAS_NUM_THREADS=1` beside it, or the two kinds of
thread compete for the same cores. Results do not depend on the count (tested bit for bit).
`speed.py --threads N` gives each library N cores: sdnet N host threads with one BLAS thread
each, PyTorch N intra-op threads; a speed run is recorded per thread count, and each target
names the thread count it holds for.

The profile and skip-cost commands pin one BLAS thread (`OPENBLAS_NUM_THREADS=1`): on a small
machine shared with other work, OpenBLAS's default of one thread per CPU made a ResNet-20
training step several times slower, most likely because a BLAS thread that loses its CPU
stalls the others."""

KERNELS = """\
The changes. The array-API code in `sdnet/functional/` is the reference, which runs on every
backend; where NumPy can do better than the standard allows, a faster form of a kernel is
registered for it (`backends/kernels.py`, `backends/numpy_kernels.py`), which
`tests/test_kernels.py` proves equal to the reference; `SDNET_KERNELS=reference` turns them
off.

* **Convolution, channel-major.** The input is viewed as (C, N, H, W) and the 9 shifted views
  of each kernel offset are stacked into one (9C, N*Ho*Wo) matrix `cols`, so a block of images
  is a single matrix product whose result, (O, N, Ho, Wo), is returned as an (N, O, Ho, Wo)
  *view*. Batch norm, ReLU, pooling and the option-A shortcut keep that memory order (their
  new buffers are allocated channel-major too), so the next convolution gets its channel-major
  view for free. Before, each image was its own small matrix product, and outputs had to be
  reshuffled.
* **Cache-sized blocks, one run per thread.** On the CPU the batch is cut into blocks of
  images sized so that a block's `cols` stays in the cache, an even number of blocks of nearly
  equal size whatever the thread count, and each host thread takes one run of consecutive
  blocks; partial sums are added in block order, so results do not depend on the count.
* **NumPy's convolution loops.** Each thread keeps one zeroed `cols` workspace per shape and
  fills it straight from the unpadded input: for a stride-1 convolution that keeps the
  image's size, each kernel offset is one shift of the flattened image planes (long contiguous
  copies), then the column that wrapped around a row is zeroed; the parts that fall in the
  padding are never written, so they stay zero. No padded copy is made and no `cols` is
  allocated per block. The products of the forward pass and of the input gradient are written
  with `out=` straight into the output's own block; the weight gradient is computed as
  `cols @ dy^T` (then transposed), the operand order OpenBLAS is fastest at here; and such a
  same-size stride-1 convolution computes both of its gradients in one pass over the blocks,
  while each block's input and output gradient are in cache.
* **Less kept for the backward pass.** Only a view of the input is saved, not `cols` (9 times
  larger); the weight gradient rebuilds it block by block. The input gradient of a stride-1
  convolution is the forward correlation of the output gradient, zero-padded, with the flipped
  kernel: the same blocked product, never materialising d(cols) (in NumPy's form the padding
  is the workspace's zeros).
* **Batch norm and ReLU, channel by channel.** NumPy's forms of batch norm (training forward
  and backward, evaluation), of ReLU (forward and backward) and of the residual sum through
  ReLU (`add_relu`: the sum and the ReLU in one pass) work on each channel's contiguous plane,
  the channels shared out among the host threads, writing into their output buffers with
  `out=`. The reference keeps its own economies: ReLU's backward multiplies by a 0/1 mask
  instead of `where()`, ReLU uses `maximum`, which keeps the memory order, batch norm
  normalises in place, and evaluation-mode batch norm is one fused affine map.
* **The training step.** The training loop skips the stem's input gradient (the input is
  data: `model(x, train=True, need_dx=False)`) and runs the optimizer on flat buffers, one
  per parameter segment (`opt.step(opt.flat_grads())`).
* **Inference frees as it goes.** `model(x, train=False, grad=False)` (what `sdnet.evaluate`
  uses) releases each block's saved arrays as soon as the next block has run."""

PROFILE_NOTE = """\
sdnet under cProfile, which adds time to every Python call: a row is the cumulative time of
sdnet's functions for that kernel, a call from one to another counted once, and the
convolution rows are also split into the matrix products and the rest. Constant depth, one
thread; ReLU forward includes the residual sum through the ReLU where sdnet computes both in
one pass (`add_relu`), and "everything else" is the step's wall time less the rows."""
PROFILE_TORCH_NOTE = """\
PyTorch (the peer model of `tests/torch_reference.py` with sdnet's initial weights, the same
batch and SGD step) under torch.profiler with CPU activities: each op's self CPU time goes to
the row of the outermost aten op or autograd node on its stack that
`benchmarks/profile_step.py` maps (its `TORCH_OPS`; the block's residual `aten::add` to ReLU
forward), so nothing is counted twice; the autograd engine's own work and gradient sums, the
linear head and the peer model's multiply by the gate coefficient (1 at constant depth, which
sdnet skips) fall in everything else. The last column is sdnet's after profile less
PyTorch's."""

MACS_NOTE = """\
MACs are the branch convolutions' multiply-adds; the first block of stages 2 and 3 does 3/4 of
the work of the others, so the MAC-weighted expectation differs slightly from the mean of the
p_l. Ratios of means are the ones to compare for the drawn variant: its step time depends on
how many gates a step happens to draw, and the expected cost is the mean of that spread, not
its median."""


def prose(text: str) -> str:
    """One paragraph, wrapped as the hand-written ones are."""
    return textwrap.fill(text, 95, break_on_hyphens=False, break_long_words=False)


def of_kind(records: list[Record], kind: str, device: str | None = None) -> list[Record]:
    """The records of ``kind`` (on ``device``), ordered by key."""
    found = [r for r in records if r["kind"] == kind]
    found = [r for r in found if device is None or r.get("device") == device]
    return sorted(found, key=run_order)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _span(values: list[float], fmt: str = "{:.2f}") -> str:
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


def _profile(records: list[Record], label: str) -> Record | None:
    return next((r for r in of_kind(records, "profile") if r["key"] == label), None)


def _pct(record: Record, name: str) -> str:
    """A profile row's share of the step and milliseconds, as prose: ``40% (417 ms)``."""
    row = profile_rows(record)[name]
    return f"{100 * row['share']:.0f}% ({row['ms']:.0f} ms)"


# -- sections ------------------------------------------------------------------------------


def intro(records: list[Record]) -> list[str]:
    """The page's head, and whether GPU figures exist yet."""
    cards = [r["machine"].get("gpu", r["key"]) for r in of_kind(records, "speed", "gpu")]
    if not cards:
        return [INTRO, NO_GPU]
    gpu = f"GPU figures: see [the GPU section](#speed-against-pytorch-on-a-gpu) ({_and(cards)})."
    return [INTRO, gpu]


def kernels_section(records: list[Record]) -> list[str]:
    """What made the kernels faster, with the profiled step times before and after."""
    out = ["## What made the kernels faster"]
    before, after = _profile(records, "before"), _profile(records, "after")
    if before and after:
        out.append(prose(speedup_text(before, after)))
    return out + [KERNELS]


def speedup_text(before: Record, after: Record) -> str:
    """The profiled step before and after, and the rows that shrank most, computed."""
    s = after["settings"]
    b, a = before["results"]["step_ms"], after["results"]["step_ms"]
    text = (
        f"Before ({sdnet_text(before)}) a {model_title(s['model'])} training step on "
        f"{s['input']} inputs took {b:.0f} ms on {threads_text(s['threads'])} under the "
        f"profiler, after ({sdnet_text(after)}) {a:.0f} ms, {a / b:.2f} of the time; the "
        "profile below shows where."
    )
    rows_b, rows_a = profile_rows(before), profile_rows(after)
    saved = [
        (rows_b[n]["ms"] - rows_a[n]["ms"], n)
        for n in (*KERNEL_ROWS, OTHER_ROW)
        if n in rows_b and n in rows_a and rows_b[n]["ms"] - rows_a[n]["ms"] >= 0.5
    ]
    top = sorted(saved, reverse=True)[:3]
    if top:
        shrank = [f"{n} ({rows_b[n]['ms']:.0f} to {rows_a[n]['ms']:.0f} ms)" for _, n in top]
        text += f" The rows that shrank most: {_semi(shrank)}."
    return text


def run_head(record: Record, extra: list[str]) -> list[str]:
    """Command, then the machine's bullets and the run's own (``extra``)."""
    return [f"Command: `{record['command']}`", "\n".join(machine_lines(record) + extra)]


def speed_section(record: Record, level: str = "##") -> list[str]:
    """One speed run: its command, machine and tables."""
    s = record["settings"]
    if record["device"] == "cpu":
        title = f"Speed against PyTorch ({record['machine']['backend']}, "
        title += f"{threads_text(s.get('threads'))})"
    else:
        title = record["machine"].get("gpu", record["key"])
    fewer = [(r["rounds"], r["model"]) for r in record["results"] if r["rounds"] != s["steps"]]
    rounds = f"{s['steps']} timed rounds"
    if fewer:
        rounds += f" ({', '.join(dict.fromkeys(f'{n} for {model}' for n, model in fewer))})"
    steps = (
        f"* Steps: {rounds} after {s['warmup']} warm-up rounds, each running all four training "
        f"variants in rotated order; {s['eval_steps']} evaluation passes"
    )
    return [f"{level} {title}", *run_head(record, [steps]), "\n".join(speed_tables(record))]


def verdict_section(records: list[Record]) -> list[str]:
    """The CPU runs read against the targets, then what stands in the way of parity."""
    runs = [
        f"{threads_text(r['settings'].get('threads'))}, {r['machine']['date']}"
        for r in of_kind(records, "speed", "cpu")
    ]
    head = "Reading the CPU runs above" + (f" ({'; '.join(runs)})" if runs else "")
    head += (
        " against the targets. A number in bold misses its target; a target that no run "
        "measures is not measured yet."
    )
    table = "\n".join(verdict_table(records, "cpu"))
    return ["## Against the targets", prose(head), table, *parity_text(records)]


def parity_text(records: list[Record]) -> list[str]:
    """What stands in the way of parity on the CPU, from the profiles and the speed runs."""
    after = _profile(records, "after")
    if after is None:
        return []
    torch = _profile(records, "pytorch")
    profiled = f"{sdnet_text(after)}, {threads_text(after['settings']['threads'])}"
    text = (
        f"What stands in the way of parity on the CPU, from the profiles below ({profiled}): "
        f"the convolution's matrix products (float32, BLAS) take {_pct(after, MATMUL_ROW)} of "
        f"sdnet's step, and the rest of the convolution another {_pct(after, REST_ROW)}: "
        "filling the `cols` workspaces with shifted copies of the input (or of the output "
        "gradient), adding up the weight gradient's block parts, and the Python work around "
        "them."
    )
    if torch is not None:
        text += " " + gap_text(after, torch)
    text += _speed_text(records, after, torch)
    skip = [r for s in of_kind(records, "skip_cost") for r in s["results"]]
    text += (
        " Dropping a block saves its branch entirely, so the stochastic-depth saving follows "
        "the work kept, plus a fixed cost (stem, shortcuts, head, loss)"
    )
    if skip:
        closed = _span([100 * skip_ratio(r, "closed") for r in skip], "{:.0f}")
        text += f" of {closed}% of a full step (the skip-cost section)"
    return [prose(text + ".")]


def gap_text(after: Record, torch: Record) -> str:
    """sdnet's profiled step against PyTorch's, row by row: the rows where the two differ by
    at least 1% of sdnet's step, largest first, and the convolution rows' part of the
    difference."""
    a, t = after["results"]["step_ms"], torch["results"]["step_ms"]
    rows_a, rows_t = profile_rows(after), profile_rows(torch)
    diffs = sorted(
        ((rows_a[n]["ms"] - rows_t[n]["ms"], n) for n in (*KERNEL_ROWS, OTHER_ROW)
         if n in rows_a and n in rows_t),
        key=lambda dn: -abs(dn[0]),
    )  # fmt: skip
    big = [(d, n) for d, n in diffs if abs(d) >= 0.01 * a]
    version = torch["machine"].get("torch", "")
    text = (
        f"Each library under its own profiler (cProfile for sdnet, torch.profiler for PyTorch"
        f"{' ' + version if version else ''}), whose overheads differ, so the rows compare "
        f"roughly: sdnet's step took {a:.0f} ms, PyTorch's {t:.0f} ms."
    )
    if big:
        shown = [f"{n} {d:+.0f} ms" for d, n in big]
        rest = sum(d for d, n in diffs) - sum(d for d, _ in big)
        text += f" Row by row, sdnet less PyTorch: {_semi(shown)}"
        text += f" (the other rows {rest:+.0f} ms together)." if len(big) < len(diffs) else "."
    conv = sum(d for d, n in diffs if n in CONV_ROWS)
    if a - t >= 0.5:
        text += (
            f" The two convolution rows account for {conv:.0f} ms of the {a - t:.0f} ms "
            f"difference ({100 * conv / (a - t):.0f}%)."
        )
    return text


def _semi(items: list[str]) -> str:
    """``a; b and c``: a list whose items may hold commas."""
    return items[0] if len(items) == 1 else "; ".join(items[:-1]) + " and " + items[-1]


def _speed_run(records: list[Record], profile: Record) -> tuple[Record, Record] | None:
    """The CPU speed run and row of the profiled model and input, the run with the profile's
    thread count first; ``None`` without one."""
    s = profile["settings"]
    speed = [
        (r, row)
        for r in of_kind(records, "speed", "cpu")
        for row in r["results"]
        if (row["model"], row["input"]) == (s["model"], s["input"])
    ]
    same = [(r, row) for r, row in speed if r["settings"].get("threads") == s["threads"]]
    return (same or speed)[0] if speed else None


def _speed_text(records: list[Record], after: Record, torch: Record | None) -> str:
    """PyTorch's training step over sdnet's in the speed run (:func:`_speed_run`), and how
    much slower each library's step ran under its profiler than there."""
    found = _speed_run(records, after)
    if found is None:
        return ""
    record, row = found
    s = after["settings"]
    sd, pt = row["sdnet"]["train_ms"], row["torch"]["train_ms"]
    text = (
        f" In the speed run ({threads_text(record['settings'].get('threads'))}, "
        f"{record['machine']['date']}) PyTorch does a whole {model_title(s['model'])} training "
        f"step ({s['input']}, constant depth) in {pt / sd:.2f} of sdnet's time"
    )
    if torch is None:
        return text + "."
    slow = (after["results"]["step_ms"] / sd, torch["results"]["step_ms"] / pt)
    return text + (
        f"; under their profilers the steps took {slow[0]:.2f} (sdnet) and {slow[1]:.2f} "
        "(PyTorch) times as long as there."
    )


def gpu_section(records: list[Record]) -> list[str]:
    """The GPU speed runs, one per card, and the kernel launches per training step."""
    out = ["## Speed against PyTorch on a GPU"]
    runs = of_kind(records, "speed", "gpu")
    if not runs:
        out.append(f"Still to be measured: no GPU machine has run `{GPU_COMMAND}` yet.")
    for r in runs:
        out += speed_section(r, "###")
    if runs and any(t.device == "gpu" for t in TARGETS):
        out += ["\n".join(verdict_table(records, "gpu"))]
    return out + launches_section(records)


def launches_section(records: list[Record]) -> list[str]:
    """Kernel launches per steady training step against their budgets."""
    budgets = _and([f"{n:,} for {model_title(m)}" for m, n in LAUNCH_BUDGETS.items()])
    budgets = f"at most {budgets} (launches per steady training step)"
    out = ["### Kernel launches per training step"]
    runs = by_label(of_kind(records, "launches"))
    if not runs:
        return out + [prose(f"Not measured yet. Budgets: {budgets}.")]
    head = (
        f"Kernel launches per steady training step on a GPU, by kind of kernel; budgets: {budgets}."
    )
    out.append(prose(head))
    for r in runs:
        s = r["settings"]
        what = f"{r['key'].capitalize()}: batch {s['batch']}, {s['input']}"
        out += [f"{what}; command `{r['command']}`", "\n".join(machine_lines(r))]
    return out + ["\n".join(launch_table(runs))]


def profile_section(records: list[Record]) -> list[str]:
    """The profiles of a ResNet-20 training step (before, after, PyTorch) in one table."""
    out = ["## Profile of a ResNet-20 training step"]
    runs = by_label(of_kind(records, "profile"))
    if not runs:
        return out + ["Not measured yet: run `benchmarks/profile_step.py --write`."]
    torch = any(r["key"] == "pytorch" for r in runs)
    out.append(prose(PROFILE_NOTE + (" " + PROFILE_TORCH_NOTE if torch else "")))
    for r in runs:
        out += [profile_run(r), "\n".join(machine_lines(r))]
    return out + ["\n".join(profile_comparison(runs))]


def profile_run(record: Record) -> str:
    """What a profile ran: the library and commit, sizes, the step's calls, the command."""
    s, key = record["settings"], record["key"]
    title = PROFILE_TITLES.get(key) or str(key)
    if key == "pytorch":
        title += f" {record['machine']['torch']}" if "torch" in record["machine"] else ""
    elif sdnet_text(record):
        title += f" ({sdnet_text(record)})"
    what = (
        f"{title}: {model_title(s['model'])}, {s['input']} inputs, batch {s['batch']}, "
        f"{s['steps']} steps, {threads_text(s['threads'])}"
    )
    if "step" in s:
        what += f"; step `{s['step']}`"
    return f"{what}; command `{record['command']}`"


def skip_cost_section(record: Record) -> list[str]:
    """One skip-cost run: command, machine, tables, and how to read them."""
    s = record["settings"]
    where = "" if record["device"] == "cpu" else f" ({record['machine'].get('gpu', record['key'])})"
    one_step = (
        f"* One step: forward, softmax cross-entropy and backward of a batch of {s['batch']} "
        f"random {s['input']} float32 images (no optimizer update); {s['steps']} measured steps "
        f"per variant after {s['warmup']} warm-up rounds, the three variants alternating step "
        "by step."
    )
    return [
        f"## Skip cost: does a dropped block cost nothing?{where}",
        *run_head(record, [one_step]),
        "\n".join(skip_cost_tables(record)),
        MACS_NOTE,
        skip_reading(record),
    ]


def _compare(measured: list[float], reference: list[float]) -> str:
    pairs = list(zip(measured, reference, strict=True))
    if all(m < r for m, r in pairs):
        return "below"
    return "above" if all(m > r for m, r in pairs) else "against"


def skip_reading(record: Record) -> str:
    """How to read a skip-cost run: closed, drawn and expected step times, computed."""
    rows, s = record["results"], record["settings"]
    names = [model_title(r["model"]) for r in rows]
    drawn = [skip_ratio(r, "drawn") for r in rows]
    proportional = [skip_predicted(r, r["variants"]["drawn"]["macs_kept"]) for r in rows]
    expected = [skip_predicted(r, r["expected_macs_kept"]) for r in rows]
    closed_pct = [100 * skip_ratio(r, "closed") for r in rows]
    closed = _span(closed_pct, "{:.0f}")
    cheap = ", so a dropped block costs next to nothing" if max(closed_pct) < 10 else ""
    took = _and([f"{d:.2f} ({n})" for d, n in zip(drawn, names, strict=True)])
    text = (
        f"Reading the skip-cost numbers (run of {record['machine']['date']} above): with every "
        f"gate closed a step costs {closed} % of a full one (stem, shortcuts, head and loss are "
        f"all that is left){cheap}. With gates drawn from the "
        f"p_L = {s['p_last']:g} schedule the step took {took} of the full step, "
        f"{_compare(drawn, proportional)} the {_and([f'{p:.2f}' for p in proportional])} that a "
        f"cost proportional to the work would give, and {_compare(drawn, expected)} the "
        f"{_span(expected)} expected on average."
    )
    if _compare(drawn, proportional) == "below":
        text += (
            " That the drawn steps come out *cheaper* than proportional suggests that the step "
            "time grows faster than linearly with the work (a drawn step also keeps fewer "
            "activations for the backward pass: a dropped block saves none)."
        )
    text += (
        f" With {s['steps']} steps per variant the realised fraction of blocks kept varies "
        f"({rows[0]['variants']['drawn']['blocks_kept']:.2f} for {names[0]} here against "
        f"{rows[0]['mean_survival']:.2f} expected), hence the column with the gates actually drawn."
    )
    return prose(text)


def render(records: list[Record]) -> str:
    """The whole page, from the records."""
    parts = [*intro(records), THREADS, *kernels_section(records)]
    for r in of_kind(records, "speed", "cpu"):
        parts += speed_section(r)
    parts += verdict_section(records) + gpu_section(records) + profile_section(records)
    for r in of_kind(records, "skip_cost"):
        parts += skip_cost_section(r)
    return "\n\n".join(parts).rstrip() + "\n"


def publish(record: dict[str, Any], args: Any) -> None:
    """With ``--write`` (and never with ``--smoke``): record the run and rewrite the page."""
    if args.write and not args.smoke:
        add_record(record, args.records)
        write_page(args.records)


def write_page(path: Path = RECORDS) -> Path:
    """Rewrite the page beside ``path`` (same name, ``.md``) from the records in ``path``."""
    page = path.with_suffix(".md")
    page.write_text(render(load_records(path)))
    print(f"wrote {page.name} from {path.name}", file=sys.stderr)
    return page


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=Path, default=RECORDS, help="the records (page: .md beside)")
    p.add_argument("--check", action="store_true", help="only check that the page is up to date")
    args = p.parse_args(argv)
    if not args.check:
        write_page(args.records)
        return 0
    page = args.records.with_suffix(".md")
    if page.exists() and page.read_text() == render(load_records(args.records)):
        return 0
    print(f"{page.name} differs from what {args.records.name} renders", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
