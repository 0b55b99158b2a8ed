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
