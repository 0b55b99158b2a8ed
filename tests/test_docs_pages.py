"""Generated pages: ``docs/benchmarks.md`` is exactly what its records render, its verdicts
are computed from the declared targets, and no page records a path of the machine it was
made on."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _bench(name: str) -> ModuleType:
    """A module of ``benchmarks/`` (they import each other by name, so the folder is on the
    path while they load)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


render_benchmarks = _bench("render_benchmarks")
records_mod = _bench("_records")
targets_mod = _bench("_targets")


# -- the page and its records ----------------------------------------------------------------


def test_benchmarks_page_is_exactly_what_the_records_render() -> None:
    """docs/benchmarks.md is generated from docs/benchmarks.json, never edited by hand."""
    records = records_mod.load_records()
    kinds = {r["kind"] for r in records}
    assert {"speed", "profile", "skip_cost"} <= kinds, "docs/benchmarks.json lacks measurements"
    page = (DOCS / "benchmarks.md").read_text()
    assert page == render_benchmarks.render(records), (
        "docs/benchmarks.md differs from its records: run python benchmarks/render_benchmarks.py"
    )
    assert render_benchmarks.main(["--check"]) == 0


def test_every_record_has_the_shared_fields_and_a_unique_key() -> None:
    records = records_mod.load_records()
    for r in records:
        assert r["kind"] in records_mod.KINDS
        assert {"key", "command", "commit", "machine", "settings", "results"} <= set(r), r["kind"]
        assert " python benchmarks/" in f" {r['command']}", r["command"]
        assert "date" in r["machine"]
    keys = [(r["kind"], r["key"]) for r in records]
    assert len(keys) == len(set(keys)), "two records of one kind share a key"


# -- no path of a machine on a page ----------------------------------------------------------

PAGES = sorted(DOCS.rglob("*.md")) + sorted(DOCS.rglob("*.json")) + [ROOT / "README.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_records_a_path_of_the_machine(page: Path) -> None:
    found = records_mod.machine_paths(page.read_text())
    assert not found, f"{page.relative_to(ROOT)} records paths of a machine: {found}"


@pytest.mark.parametrize(
    "text",
    [
        "Profiled: sdnet 50c6f2a (/tmp/sdnet-old), ResNet-20",
        "Profiled: sdnet 43a514b (/work/main), ResNet-20",
        "MNIST from /work/shared/data/mnist; 30 steps",
        "cache in /root/.cache/sdnet",
        "see /home/alice/runs/3",
        "`--records=/Users/bob/b.json`",
        "file:///tmp/report.html",
        r"C:\Users\carol\sdnet",
    ],
)
def test_the_path_check_finds_machine_paths(text: str) -> None:
    assert records_mod.machine_paths(text)


@pytest.mark.parametrize(
    "text",
    [
        "https://example.org/home/work/tmp/page",
        "SDNET_DATA=../shared/data and ./tmp/x",
        "docs/tmp/page.md and ~/work/runs",
        "sweep /home/me/sweeps/tiny: 4 trials",  # the made-up user of the docs' examples
        "PYTHONPATH=<checkout of sdnet 50c6f2a> python benchmarks/profile_step.py",
    ],
)
def test_the_path_check_lets_relative_and_made_up_paths_pass(text: str) -> None:
    assert records_mod.machine_paths(text) == []


def test_the_path_check_finds_the_repository_wherever_it_is() -> None:
    repo = Path("/opt/build/sdnet")
    assert records_mod.machine_paths("ran in /opt/build/sdnet/docs", repo=repo)
    assert records_mod.machine_paths("ran in /opt/build/other", repo=repo) == []


def test_a_record_with_a_machine_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    record = {"kind": "profile", "key": "after", "command": f"cd {ROOT} && python x.py"}
    with pytest.raises(ValueError, match="paths of this machine"):
        records_mod.add_record(record, path)
    assert not path.exists()


# -- records: replaced by kind and key -------------------------------------------------------


def test_a_new_record_replaces_the_one_of_its_kind_and_key(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    for key, n in (("before", 1), ("after", 2), ("before", 3)):
        records_mod.add_record({"kind": "profile", "key": key, "n": n}, path)
    records_mod.add_record({"kind": "launches", "key": "before", "n": 4}, path)
    assert [(r["kind"], r["key"], r["n"]) for r in json.loads(path.read_text())] == [
        ("profile", "before", 3),
        ("profile", "after", 2),
        ("launches", "before", 4),
    ]
    with pytest.raises(ValueError, match="kind"):
        records_mod.add_record({"kind": "speeed", "key": "cpu"}, path)


def test_the_recorded_command_leaves_out_where_the_record_went() -> None:
    cmd = records_mod.recorded_command(
        "benchmarks/speed.py", ["--threads", "2", "--records", "/tmp/x.json", "--write"], ["A=1"]
    )
    assert cmd == "A=1 python benchmarks/speed.py --threads 2 --write"
    cmd = records_mod.recorded_command("benchmarks/skip_cost.py", ["--records=/tmp/x", "--smoke"])
    assert cmd == "python benchmarks/skip_cost.py --smoke"


# -- verdicts from synthetic records ---------------------------------------------------------


def _row(model: str, shape: str, train: float, evals: float) -> dict[str, Any]:
    """A speed result row whose sdnet/PyTorch ratios are ``train`` and ``evals``; saving 0.7,
    memory 0.5x PyTorch's."""
    torch = {"train_ms": 100.0, "train_sd_ms": 80.0, "eval_ms": 1000.0, "sd_saving": 0.75,
             "peak_mib": 200.0}  # fmt: skip
    sdnet = {"train_ms": 100.0 * train, "train_sd_ms": 80.0 * train, "eval_ms": 1000.0 * evals,
             "sd_saving": 0.7, "peak_mib": 100.0}  # fmt: skip
    return {"model": model, "input": shape, "rounds": 3, "sdnet": sdnet, "torch": torch,
            "work_kept": 0.7, "work_expected": 0.72}  # fmt: skip


def _speed(rows: list[dict[str, Any]], threads: int | None, card: str | None = None) -> dict:
    machine = {"date": "2030-01-02 03:04 UTC", "sdnet": "9.9.9", "backend": "numpy on cpu"}
    if card:
        machine["gpu"] = card
    return {
        "kind": "speed",
        "key": f"gpu: {card}" if card else f"cpu, {threads} threads",
        "device": "gpu" if card else "cpu",
        "commit": "abc1234",
        "command": "python benchmarks/speed.py --write",
        "machine": machine,
        "settings": {
            "batch": 128,
            "eval_batch": 1000,
            "p_last": 0.5,
            "steps": 3,
            "warmup": 1,
            "eval_steps": 1,
            "threads": threads,
        },  # fmt: skip
        "results": rows,
    }


def _verdict_rows(page: str) -> dict[str, str]:
    """The verdict table of a rendered page: target text -> the rest of its row."""
    table = page.split("| target | measured | verdict |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split(" | ", 1) for line in table.splitlines()[2:]]
    return {target.lstrip("| "): rest for target, rest in rows}


def test_met_unmet_and_unmeasured_targets_render_as_such() -> None:
    two = _speed(
        [_row("resnet20", "1x28x28", 1.2, 0.9), _row("resnet110", "3x32x32", 1.8, 0.95)], 2
    )
    rows = _verdict_rows(render_benchmarks.render([two]))
    t = {f"{tg.quantity} {tg.models} {tg.threads}": tg.text for tg in targets_mod.TARGETS}
    one_thread = rows[t["train ('resnet20',) 1"]]
    assert one_thread == "- | not measured yet |"  # no 1-thread run: never "met"
    assert rows[t["train ('resnet20',) 2"]] == (
        "2 threads: 1.20x (constant depth), 1.20x (p_L = 0.5) | met |"
    )
    assert rows[t["train ('resnet110',) 2"]] == (
        "2 threads: **1.80x** (constant depth), **1.80x** (p_L = 0.5) | **not met** |"
    )
    assert rows[t["eval () None"]].endswith("| met |")  # 0.90x and 0.95x, limit 1.0x
    statuses = [v.status for v in targets_mod.verdicts([two])]
    assert statuses == ["not measured yet", "met", "not met", "met", "met", "met"]


def test_a_verdict_names_the_thread_count_of_each_number_when_runs_differ() -> None:
    one = _speed([_row("resnet20", "1x28x28", 1.25, 1.1)], 1)
    two = _speed([_row("resnet20", "1x28x28", 1.4, 0.9)], 2)
    rows = _verdict_rows(render_benchmarks.render([two, one]))
    eval_target = next(tg for tg in targets_mod.TARGETS if tg.quantity == "eval")
    assert rows[eval_target.text] == (
        "**1.10x** (resnet20 1x28x28; 1 thread), 0.90x (resnet20 1x28x28; 2 threads) | "
        "**not met** (1 of 2 within) |"
    )
    first = targets_mod.TARGETS[0]  # ResNet-20 on 1 thread: now measured, and met
    assert rows[first.text] == "1 thread: 1.25x (constant depth), 1.25x (p_L = 0.5) | met |"


def test_a_run_with_other_settings_does_not_test_a_target() -> None:
    small = _speed([_row("resnet20", "1x28x28", 1.0, 0.5)], 2)
    small["settings"]["batch"] = small["settings"]["eval_batch"] = 8
    assert all(v.status == "not measured yet" for v in targets_mod.verdicts([small]))


def test_without_records_every_section_says_it_is_still_to_be_measured() -> None:
    page = render_benchmarks.render([])
    rows = _verdict_rows(page)
    assert len(rows) == len(targets_mod.TARGETS)
    assert all(r == "- | not measured yet |" for r in rows.values())
    assert "GPU figures are still to be measured" in page
    assert "Still to be measured: no GPU machine has run" in page
    assert "### Kernel launches per training step\n\nNot measured yet." in page


def test_a_gpu_run_renders_in_its_own_section_naming_the_card() -> None:
    cpu = _speed([_row("resnet20", "1x28x28", 1.2, 0.9)], 2)
    gpu = _speed([_row("resnet20", "1x28x28", 3.0, 4.0)], None, card="NVIDIA H200")
    page = render_benchmarks.render([cpu, gpu])
    section = page.split("## Speed against PyTorch on a GPU", 1)[1].split("\n## ", 1)[0]
    assert "### NVIDIA H200" in section and "* GPU: NVIDIA H200" in section
    assert "| resnet20 | 1x28x28 | train, constant depth, batch 128 | 300.0 | 100.0 | 3.00 |" in (
        section
    )
    assert "GPU figures are still to be measured" not in page
    assert "3.00x" not in page.split("## Against the targets", 1)[1].split("\n## ", 1)[0]


def test_page_faults_of_an_evaluation_pass_render_when_a_record_counts_them() -> None:
    row = _row("resnet20", "1x28x28", 1.2, 0.9)
    assert "page faults" not in render_benchmarks.render([_speed([row], 2)])  # older records
    row["sdnet"]["eval_faults"], row["torch"]["eval_faults"] = 9500, 441230
    page = render_benchmarks.render([_speed([row], 2)])
    assert "Minor page faults of one evaluation pass at batch 1000" in page
    assert "| resnet20 | 1x28x28 | 9,500 | 441,230 |" in page


def test_launch_records_render_against_their_budgets() -> None:
    """A later script records kernel launches per training step; the page reads them."""

    def launches(key: str, commit: str, rows: list[tuple[str, int, dict[str, int]]]) -> dict:
        return {
            "kind": "launches", "key": key, "commit": commit,
            "command": "python benchmarks/launches.py --write",
            "machine": {"date": "2030-01-02 03:04 UTC", "gpu": "NVIDIA H200"},
            "settings": {"batch": 128, "input": "3x32x32"},
            "results": [{"model": m, "total": t, "by_kind": k} for m, t, k in rows],
        }  # fmt: skip

    after = launches(
        "after",
        "bbb2222",
        [
            ("resnet110", 2900, {"matmul": 700, "elementwise": 2200}),
            ("resnet20", 650, {"matmul": 150, "elementwise": 500}),
        ],
    )
    before = launches("before", "aaa1111", [("resnet110", 5400, {"matmul": 700, "copy": 4700})])
    page = render_benchmarks.render([after, before])
    table = page.split("| model | launches | before (sdnet aaa1111) | after (sdnet bbb2222) |")[1]
    for line in (
        "| resnet110 | copy | 4,700 | - |",
        "| resnet110 | elementwise | - | 2,200 |",
        "| resnet110 | **total** | **5,400** | **2,900** |",
        "| resnet110 | budget: at most 3,000 | **not met** | met |",
        "| resnet20 | **total** | - | **650** |",
        "| resnet20 | budget: at most 700 | - | met |",
    ):
        assert line in table
    assert "Not measured yet. Budgets" not in page


# -- profiles: before, after and PyTorch in one table ----------------------------------------

tables_mod = _bench("_tables")
KERNEL_ROWS = tables_mod.KERNEL_ROWS


def _profile(key: str, rows: list[float], other: float, parts: tuple[float, float] | None = None,
             torch: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A profile record with ``rows`` (ms per step, in the order of KERNEL_ROWS), everything
    else ``other`` and, for sdnet, the convolution's ``parts`` (matrix products, the rest)."""
    step = sum(rows) + other

    def row(name: str, ms: float, part: bool = False) -> dict[str, Any]:
        return {"kernel": name, "ms": ms, "share": ms / step} | ({"part": True} if part else {})

    kernels = [row(n, ms) for n, ms in zip(KERNEL_ROWS, rows, strict=True)]
    if parts:
        kernels[2:2] = [row(tables_mod.MATMUL_ROW, parts[0], True),
                        row(tables_mod.REST_ROW, parts[1], True)]  # fmt: skip
    machine = {"date": "2030-01-02 03:04 UTC", "sdnet": "9.9.9"} | (
        {"torch": torch} if torch else {}
    )
    settings = {"model": "resnet20", "input": "1x28x28", "batch": 128, "steps": 5, "threads": 1}
    return {
        "kind": "profile", "key": key, "commit": f"{key[:3]}1234",
        "command": f"python benchmarks/profile_step.py --write --label {key}",
        "machine": machine, "settings": settings,
        "results": {"step_ms": step, "kernels": kernels + [row("everything else", other)]},
    }  # fmt: skip


AFTER = [300, 500, 50, 50, 20, 20, 10, 1, 4, 1]  # 956 ms, + 44 ms everything else: 1000 ms
TORCH = [100, 200, 20, 25, 10, 10, 5, 1, 3, 1]  # 375 ms, + 25 ms: 400 ms
BEFORE = [400, 700, 130, 70, 20, 110, 10, 1, 4, 1]  # 1446 ms, + 54 ms: 1500 ms


def _section(page: str, head: str) -> str:
    return page.split(f"## {head}", 1)[1].split("\n## ", 1)[0]


def test_the_profile_table_reads_the_gap_to_pytorch_kernel_by_kernel() -> None:
    records = [
        _profile("pytorch", TORCH, 25, torch="2.13.0+cpu"),
        _profile("after", AFTER, 44, parts=(400, 400)),
        _profile("before", BEFORE, 54, parts=(700, 400)),
    ]
    page = render_benchmarks.render(records)
    profile = _section(page, "Profile of a ResNet-20 training step")
    lines = profile.splitlines()
    assert "| kernel | Before ms | Before share | After ms | After share | PyTorch ms | " \
        "PyTorch share | after - PyTorch ms |" in lines  # fmt: skip
    for line in (
        "| conv forward | 400 | 27% | 300 | 30% | 100 | 25% | +200 |",
        "| conv backward | 700 | 47% | 500 | 50% | 200 | 50% | +300 |",
        f"|   of which {tables_mod.MATMUL_ROW} | 700 | 47% | 400 | 40% | - | - | - |",
        f"|   of which {tables_mod.REST_ROW} | 400 | 27% | 400 | 40% | - | - | - |",
        "| loss | 1 | 0% | 1 | 0% | 1 | 0% | +0 |",
        "| everything else | 54 | 4% | 44 | 4% | 25 | 6% | +19 |",
        "| **step (wall, under the profiler)** | **1500** | 100% | **1000** | 100% | **400** | "
        "100% | **+600** |",
    ):
        assert line in lines, line
    assert lines.index("| conv forward | 400 | 27% | 300 | 30% | 100 | 25% | +200 |") < lines.index(
        "| everything else | 54 | 4% | 44 | 4% | 25 | 6% | +19 |"
    )
    assert "PyTorch 2.13.0+cpu: ResNet-20, 1x28x28 inputs, batch 128" in profile
    assert "torch.profiler with CPU activities" in profile
    parity = " ".join(_section(page, "Against the targets").split())
    assert "matrix products (float32, BLAS) take 40% (400 ms) of sdnet's step" in parity
    assert "the rest of the convolution another 40% (400 ms)" in parity
    assert "sdnet's step took 1000 ms, PyTorch's 400 ms." in parity
    assert (
        "Row by row, sdnet less PyTorch: conv backward +300 ms; conv forward +200 ms; batch norm "
        "forward +30 ms; batch norm backward +25 ms; everything else +19 ms; ReLU forward +10 ms "
        "and ReLU backward +10 ms (the other rows +6 ms together)." in parity
    )
    assert "The two convolution rows account for 500 ms of the 600 ms difference (83%)." in parity
    faster = " ".join(_section(page, "What made the kernels faster").split())
    assert "took 1500 ms on 1 thread under the profiler, after (sdnet 9.9.9 at aft1234) 1000 ms, " \
        "0.67 of the time" in faster  # fmt: skip
    assert "The rows that shrank most: conv backward (700 to 500 ms); conv forward (400 to 300 " \
        "ms) and ReLU backward (110 to 20 ms)." in faster  # fmt: skip


def test_without_a_pytorch_profile_the_table_has_no_pytorch_columns() -> None:
    records = [_profile("after", AFTER, 44, parts=(400, 400))]
    page = render_benchmarks.render(records)
    profile = _section(page, "Profile of a ResNet-20 training step")
    assert "| kernel | After ms | After share |\n|---|---:|---:|\n" in profile
    assert "| **step (wall, under the profiler)** | **1000** | 100% |" in profile
    assert "PyTorch" not in profile and "torch.profiler" not in profile
    parity = " ".join(_section(page, "Against the targets").split())
    assert "matrix products (float32, BLAS) take 40% (400 ms) of sdnet's step" in parity
    assert "Row by row" not in parity and "torch.profiler" not in parity
    assert "rows that shrank most" not in page  # no before profile


def test_the_profiles_are_read_against_the_speed_run_of_their_thread_count() -> None:
    one = _speed([_row("resnet20", "1x28x28", 1.25, 1.0)], 1)  # sdnet 125 ms, PyTorch 100 ms
    two = _speed([_row("resnet20", "1x28x28", 2.0, 1.0)], 2)
    records = [two, one, _profile("after", AFTER, 44, parts=(400, 400))]
    parity = " ".join(_section(render_benchmarks.render(records), "Against the targets").split())
    assert "In the speed run (1 thread, 2030-01-02 03:04 UTC) PyTorch does a whole ResNet-20 " \
        "training step (1x28x28, constant depth) in 0.80 of sdnet's time." in parity  # fmt: skip
    records.append(_profile("pytorch", TORCH, 25, torch="2.13.0+cpu"))
    parity = " ".join(_section(render_benchmarks.render(records), "Against the targets").split())
    assert "under their profilers the steps took 8.00 (sdnet) and 4.00 (PyTorch) times as long " \
        "as there." in parity  # fmt: skip


def test_a_row_an_older_record_named_otherwise_reads_under_its_present_name() -> None:
    old = _profile("before", BEFORE, 54, parts=(700, 400))
    (rest,) = [k for k in old["results"]["kernels"] if k["kernel"] == tables_mod.REST_ROW]
    old_name = next(n for n, new in tables_mod.ROW_ALIASES.items() if new == tables_mod.REST_ROW)
    rest["kernel"] = old_name
    table = "\n".join(
        tables_mod.profile_comparison([_profile("after", AFTER, 44, (400, 400)), old])
    )
    assert f"|   of which {tables_mod.REST_ROW} | 400 | 27% | 400 | 40% |" in table
    assert old_name not in table
