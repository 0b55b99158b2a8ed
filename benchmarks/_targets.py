"""The targets the benchmarks page reads its measurements against, declared once.

:data:`TARGETS` are the speed targets: a quantity of the speed records (``speed.py``) against a
limit, for the models, inputs, thread count and settings a target names. :func:`verdicts` reads
the records against them. A target that no record measures (no run with its thread count, its
model or its batch) is "not measured yet", never met; a target whose numbers come from runs
with different thread counts says which number is from which. :data:`LAUNCH_BUDGETS` are the
kernel launches a steady training step may take on a GPU (records of kind ``"launches"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]
Reader = Callable[[Record, Record], list[tuple[str, float, str]]]


def _ratio(row: Record, field: str) -> float | None:
    a, b = row["sdnet"].get(field), row["torch"].get(field)
    return None if a is None or not b else a / b


def _train(record: Record, row: Record) -> list[tuple[str, float, str]]:
    p = record["settings"]["p_last"]
    pairs = (
        ("constant depth", _ratio(row, "train_ms")),
        (f"p_L = {p:g}", _ratio(row, "train_sd_ms")),
    )
    return [(label, v, "") for label, v in pairs if v is not None]


def _eval(record: Record, row: Record) -> list[tuple[str, float, str]]:
    v = _ratio(row, "eval_ms")
    return [] if v is None else [("", v, "")]


def _saving(record: Record, row: Record) -> list[tuple[str, float, str]]:
    detail = (
        f"PyTorch {row['torch']['sd_saving']:.2f}; work kept {row['work_kept']:.3f}, "
        f"expected {row['work_expected']:.3f}"
    )
    return [("", row["sdnet"]["sd_saving"], detail)]


def _memory(record: Record, row: Record) -> list[tuple[str, float, str]]:
    v = _ratio(row, "peak_mib")
    return [] if v is None else [("", v, "")]


@dataclass(frozen=True)
class Quantity:
    """A number each result row of a speed record gives (``read``: labelled values)."""

    text: str
    relative: bool  # a ratio to PyTorch's number (shown with an "x"), else a plain ratio
    read: Reader


QUANTITIES = {
    "train": Quantity("training step", True, _train),
    "eval": Quantity("evaluation", True, _eval),
    "saving": Quantity("stochastic-depth saving, mean step over constant depth", False, _saving),
    "memory": Quantity("peak memory of a training step", True, _memory),
}
SETTING_TEXT = {"batch": "batch {:g}", "eval_batch": "batch {:g}", "p_last": "p_L = {:g}"}


@dataclass(frozen=True)
class Target:
    """At most ``limit`` of a quantity, for the named models, inputs, threads and settings."""

    quantity: str  # a key of QUANTITIES
    limit: float
    models: tuple[str, ...] = ()  # empty: every model measured
    inputs: tuple[str, ...] = ()  # empty: every input shape measured
    threads: int | None = None  # only runs with this many threads each; None: any run
    settings: tuple[tuple[str, float], ...] = ()  # settings the run must have had
    device: str = "cpu"

    @property
    def text(self) -> str:
        """What the page calls the target, limit included."""
        q = QUANTITIES[self.quantity]
        head = " ".join([*(model_title(m) for m in self.models), q.text])
        extra = [*self.inputs, *(SETTING_TEXT[k].format(v) for k, v in self.settings)]
        text = head + (f" ({', '.join(extra)})" if extra else "")
        if self.threads is not None:
            text += f", {threads_text(self.threads)}"
        limit = f"{self.limit:.1f}x PyTorch's" if q.relative else f"{self.limit:.2f}"
        return f"{text}: at most {limit}"


TARGETS = (
    Target("train", 1.3, ("resnet20",), ("1x28x28",), threads=1, settings=(("batch", 128),)),
    Target("train", 1.5, ("resnet20",), ("1x28x28",), threads=2, settings=(("batch", 128),)),
    Target("train", 1.5, ("resnet110",), ("3x32x32",), threads=2, settings=(("batch", 128),)),
    Target("eval", 1.0, settings=(("eval_batch", 1000),)),
    Target("saving", 0.80, settings=(("p_last", 0.5), ("batch", 128))),
    Target("memory", 1.5, settings=(("batch", 128),)),
)
LAUNCH_BUDGETS = {"resnet110": 3000, "resnet20": 700}  # kernel launches per training step


def model_title(name: str) -> str:
    """``"resnet20"`` -> ``"ResNet-20"``; other names unchanged."""
    depth = name.removeprefix("resnet")
    return f"ResNet-{depth}" if depth.isdigit() else name


def threads_text(n: int | None) -> str:
    """``1 thread``, ``2 threads``; ``default threads`` when the run did not choose."""
    return "default threads" if n is None else f"{n} thread{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class Measurement:
    """One number a target is read against, with where it comes from."""

    value: float
    what: str  # model, input, variant: what the target does not already name
    source: str  # the run: its thread count on a CPU, its card on a GPU
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    """A target and the measurements that test it."""

    target: Target
    measured: tuple[Measurement, ...]

    @property
    def within(self) -> int:
        """How many measurements are within the limit."""
        return sum(m.value <= self.target.limit for m in self.measured)

    @property
    def status(self) -> str:
        """``met``, ``not met`` or ``not measured yet``."""
        if not self.measured:
            return "not measured yet"
        return "met" if self.within == len(self.measured) else "not met"


def run_order(record: Record) -> tuple[int, str]:
    """Runs in order of their thread count, then key (CPU runs before GPU runs)."""
    return record.get("settings", {}).get("threads") or 0, record["key"]


def _source(record: Record) -> str:
    if record["device"] == "cpu":
        return threads_text(record["settings"].get("threads"))
    return record["machine"].get("gpu", record["key"])


def _tests(target: Target, record: Record) -> bool:
    """Whether a speed record is a run that ``target`` is read against."""
    settings = record["settings"]
    return (
        record["kind"] == "speed"
        and record["device"] == target.device
        and (target.threads is None or settings.get("threads") == target.threads)
        and all(settings.get(k) == v for k, v in target.settings)
    )


def measure(target: Target, records: list[Record]) -> Verdict:
    """The measurements of ``target`` in ``records`` (speed records; others are ignored)."""
    found = []
    for record in sorted((r for r in records if _tests(target, r)), key=run_order):
        for row in record["results"]:
            if (target.models and row["model"] not in target.models) or (
                target.inputs and row["input"] not in target.inputs
            ):
                continue
            place = [row["model"]] if len(target.models) != 1 else []
            place += [row["input"]] if len(target.inputs) != 1 else []
            for label, value, detail in QUANTITIES[target.quantity].read(record, row):
                what = ", ".join(p for p in (" ".join(place), label) if p)
                found.append(Measurement(value, what, _source(record), detail))
    return Verdict(target, tuple(found))


def verdicts(records: list[Record], device: str = "cpu") -> list[Verdict]:
    """Every target declared for ``device``, read against the records."""
    return [measure(t, records) for t in TARGETS if t.device == device]


def verdict_table(records: list[Record], device: str = "cpu") -> list[str]:
    """The markdown table of the targets for ``device``: target, measured, verdict."""
    out = ["| target | measured | verdict |", "|---|---|---|"]
    for v in verdicts(records, device):
        out.append(f"| {v.target.text} | {_measured_text(v)} | {_status_text(v)} |")
    return out


def _measured_text(v: Verdict) -> str:
    if not v.measured:
        return "-"
    relative = QUANTITIES[v.target.quantity].relative
    sources = {m.source for m in v.measured}
    items = []
    for m in v.measured:
        number = f"{m.value:.2f}{'x' if relative else ''}"
        number = f"**{number}**" if m.value > v.target.limit else number
        notes = [m.what] + [m.source] * (len(sources) > 1) + [m.detail]
        shown = "; ".join(n for n in notes if n)
        items.append(f"{number} ({shown})" if shown else number)
    prefix = f"{sources.pop()}: " if len(sources) == 1 else ""
    return prefix + ", ".join(items)


def _status_text(v: Verdict) -> str:
    if v.status == "not met":
        within = f" ({v.within} of {len(v.measured)} within)" if v.within else ""
        return f"**not met**{within}"
    return v.status


def launch_verdict(model: str, total: float) -> str:
    """A training step's kernel launches against the model's budget."""
    budget = LAUNCH_BUDGETS.get(model)
    if budget is None:
        return "no budget"
    return "met" if total <= budget else "**not met**"
