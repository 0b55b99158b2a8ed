"""The benchmark scripts run end to end (tiny sizes), so they are ready when a machine is."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench(name: str) -> ModuleType:
    """A module of ``benchmarks/`` (they import each other by name: the folder is on the path
    while they load)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def _run(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def test_skip_cost_smoke_is_never_recorded(tmp_path: Path) -> None:
    records = tmp_path / "benchmarks.json"
    out = _run("benchmarks/skip_cost.py", "--smoke", "--write", "--records", str(records))
    assert "| ResNet-8 | all closed |" in out and "| ResNet-8 | drawn, p_L = 0.5 |" in out
    assert not records.exists() and not records.with_suffix(".md").exists()


def test_profile_step_smoke_is_never_recorded(tmp_path: Path) -> None:
    records = tmp_path / "benchmarks.json"
    out = _run("benchmarks/profile_step.py", "--smoke", "--write", "--records", str(records))
    assert "| conv backward |" in out and "| **step (wall, under the profiler)** |" in out
    assert not records.exists() and not records.with_suffix(".md").exists()


def test_scripts_record_their_runs_and_render_the_page(tmp_path: Path) -> None:
    """Tiny runs with --write: each replaces its record (kind and key) and rewrites the page."""
    records = tmp_path / "benchmarks.json"
    tiny = {
        "skip_cost.py": ["--depth", "8", "--steps", "1", "--warmup", "0", "--batch", "8"],
        "profile_step.py": ["--steps", "1", "--batch", "8", "--label", "before"],
        "speed.py": ["--models", "resnet8", "--shapes", "mnist", "--batch", "8", "--eval-batch",
                     "8", "--steps", "1", "--warmup", "0", "--eval-steps", "1", "--threads", "1",
                     "--no-memory"],
    }  # fmt: skip
    for script, args in tiny.items():
        _run(f"benchmarks/{script}", *args, "--write", "--records", str(records))
    _run("benchmarks/skip_cost.py", *tiny["skip_cost.py"], "--write", "--records", str(records))
    rendering = _bench("render_benchmarks")
    recs = _bench("_records").load_records(records)
    assert [(r["kind"], r["key"]) for r in recs] == [
        ("skip_cost", "cpu"), ("profile", "before"), ("speed", "cpu, 1 thread"),
    ]  # fmt: skip
    assert records.with_suffix(".md").read_text() == rendering.render(recs)
    scripts = {"skip_cost": "skip_cost.py", "profile": "profile_step.py", "speed": "speed.py"}
    for r in recs:
        assert f" python benchmarks/{scripts[r['kind']]} " in f" {r['command']}", r["command"]
        assert "--records" not in r["command"] and "--write" in r["command"]
    assert _bench("_records").machine_paths(records.read_text()) == []


def test_a_recorded_command_states_the_blas_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenBLAS's kernel choice as the run had it: unset (``env -u``) or set, then threads."""
    machine = _bench("_machine")
    for var in machine.THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "512")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    blas = ["env", "-u OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE=512"]
    assert machine.command_env() == [*blas, "OPENBLAS_NUM_THREADS=1"]
    assert machine.command_env(threads=False) == blas
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert machine.command_env(threads=False) == [
        "OPENBLAS_CORETYPE=Haswell", "OPENBLAS_L2_SIZE=512",
    ]  # fmt: skip


def test_accuracy_smoke(mnist_dir: Path) -> None:
    out = _run(
        "benchmarks/accuracy.py", "default", "seednet-sound", "--smoke", "--data-dir",
        str(mnist_dir),
    )  # fmt: skip
    assert "default seed 0: test accuracy" in out and "seednet-sound seed 0" in out


def test_results_page_is_exactly_what_the_records_render() -> None:
    """docs/results.md is generated from docs/results.json, never edited by hand."""
    accuracy = _bench("accuracy")
    records = accuracy.load_records()
    assert records, "docs/results.json holds no measured runs"
    assert (ROOT / "docs" / "results.md").read_text() == accuracy.render(records)


def test_speed_smoke_measures_every_variant_and_memory(tmp_path: Path) -> None:
    records = tmp_path / "benchmarks.json"
    out = _run(
        "benchmarks/speed.py", "--smoke", "--threads", "1", "--write", "--records", str(records)
    )
    for row in ("train, constant depth", "train, p_L = 0.5", "eval, batch 16"):
        assert f"| resnet8 | 1x28x28 | {row}" in out
    assert "Stochastic-depth saving" in out
    memory = out.split("Peak memory", 1)[1].splitlines()[-1]  # | resnet8 | 1x28x28 | a | b | r |
    sdnet_mib, torch_mib = (float(v) for v in memory.split("|")[3:5])
    assert sdnet_mib >= 0 and torch_mib >= 0
    assert not records.exists() and not records.with_suffix(".md").exists()  # smoke: no record


@pytest.mark.parametrize("device", ["torch", "array_api_strict"])
def test_speed_gpu_code_path_runs_on_other_backends(device: str) -> None:
    """The path a GPU run takes (another namespace, a device to synchronize) runs on the CPU."""
    out = _run("benchmarks/speed.py", "--smoke", "--device", device, "--no-memory")
    assert "| resnet8 | 1x28x28 | train, constant depth" in out and "Peak memory" not in out


def test_speed_block_work_matches_the_flop_count() -> None:
    """ResNet-20's expected kept work at p_L = 0.5 is 72.4% of the blocks' multiply-adds."""
    speed = _bench("speed")
    import sdnet

    model = sdnet.build_model("resnet20", num_classes=10, in_channels=1, p_last=0.5)
    work = speed._block_work(model)
    assert len(work) == 9 and work[0] == work[1] == work[2]  # equal work per full block
    assert work[3] == pytest.approx(0.75 * work[0])  # first block of a stage: conv1 has C/2 in
    kept = sum(w * p for w, p in zip(work, model.survival, strict=True)) / sum(work)
    assert kept == pytest.approx(0.724, abs=1e-3)


def test_launches_smoke_is_never_recorded(tmp_path: Path) -> None:
    records = tmp_path / "benchmarks.json"
    out = _run("benchmarks/launches.py", "--smoke", "--write", "before", "--records", str(records))
    assert "| part of the step | per step |" in out and "| operation | per step |" in out
    assert "| resnet8 | optimizer |" in out and "| resnet8 | **total** |" in out
    assert not records.exists() and not records.with_suffix(".md").exists()


def test_launches_records_its_run_under_its_label_and_renders_the_page(tmp_path: Path) -> None:
    records = tmp_path / "benchmarks.json"
    tiny = ["--models", "resnet8", "--batch", "4", "--steps", "3"]
    _run("benchmarks/launches.py", *tiny, "--write", "before", "--records", str(records))
    recs = _bench("_records").load_records(records)
    assert [(r["kind"], r["key"]) for r in recs] == [("launches", "before")]
    (row,) = recs[0]["results"]
    assert row["model"] == "resnet8" and row["steps"] == [3]
    assert row["total"] == sum(row["by_kind"].values()) == sum(row["by_op"].values()) > 0
    assert row["syncs"] == sum(row["sync_sources"].values())
    assert (
        recs[0]["command"] == "python benchmarks/launches.py " + " ".join(tiny) + " --write before"
    )
    page = records.with_suffix(".md").read_text()
    assert page == _bench("render_benchmarks").render(recs)
    assert "| resnet8 | **total** |" in page and "simulated CUDA device" in page
    assert _bench("_records").machine_paths(records.read_text()) == []
