"""The benchmark scripts run end to end (tiny sizes), so they are ready when a machine is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def test_skip_cost_smoke() -> None:
    out = _run("benchmarks/skip_cost.py", "--depth", "8", "--steps", "2", "--batch", "8")
    assert "closed" in out and "drawn" in out


def test_gpu_check_dry_run_on_strict_device() -> None:
    data = Path(os.environ.get("SDNET_DATA", ROOT.parent / "shared" / "data")) / "mnist"
    if not data.is_dir():
        pytest.skip(f"MNIST not found in {data}")
    out = _run(
        "benchmarks/gpu_check.py", "--device", "array_api_strict", "--steps", "2",
        "--batch", "16", "--skip-pytest", "--test-limit", "100", "--data", str(data),
        "--train-images", "256",
    )  # fmt: skip
    assert "all checks passed" in out


def test_accuracy_smoke(mnist_dir: Path) -> None:
    out = _run(
        "benchmarks/accuracy.py", "default", "seednet-sound", "--smoke", "--data-dir",
        str(mnist_dir),
    )  # fmt: skip
    assert "default seed 0: test accuracy" in out and "seednet-sound seed 0" in out


def test_results_page_is_exactly_what_the_records_render() -> None:
    """docs/results.md is generated from docs/results.json, never edited by hand."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import accuracy
    finally:
        sys.path.pop(0)
    records = accuracy.load_records()
    assert records, "docs/results.json holds no measured runs"
    assert (ROOT / "docs" / "results.md").read_text() == accuracy.render(records)


def test_speed_smoke_measures_every_variant_and_memory() -> None:
    out = _run("benchmarks/speed.py", "--smoke", "--threads", "1")
    for row in ("train, constant depth", "train, p_L = 0.5", "eval, batch 16"):
        assert f"| resnet8 | 1x28x28 | {row}" in out
    assert "Stochastic-depth saving" in out
    memory = out.split("Peak memory", 1)[1].splitlines()[-1]  # | resnet8 | 1x28x28 | a | b | r |
    sdnet_mib, torch_mib = (float(v) for v in memory.split("|")[3:5])
    assert sdnet_mib >= 0 and torch_mib >= 0


@pytest.mark.parametrize("device", ["torch", "array_api_strict"])
def test_speed_gpu_code_path_runs_on_other_backends(device: str) -> None:
    """The path a GPU run takes (another namespace, a device to synchronize) runs on the CPU."""
    out = _run("benchmarks/speed.py", "--smoke", "--device", device, "--no-memory")
    assert "| resnet8 | 1x28x28 | train, constant depth" in out and "Peak memory" not in out


def test_speed_block_work_matches_the_flop_count() -> None:
    """ResNet-20's expected kept work at p_L = 0.5 is 72.4% of the blocks' multiply-adds."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import speed
    finally:
        sys.path.pop(0)
    import sdnet

    model = sdnet.build_model("resnet20", num_classes=10, in_channels=1, p_last=0.5)
    work = speed._block_work(model)
    assert len(work) == 9 and work[0] == work[1] == work[2]  # equal work per full block
    assert work[3] == pytest.approx(0.75 * work[0])  # first block of a stage: conv1 has C/2 in
    kept = sum(w * p for w, p in zip(work, model.survival, strict=True)) / sum(work)
    assert kept == pytest.approx(0.724, abs=1e-3)
