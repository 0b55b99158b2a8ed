"""The package is type-checked: mypy on ``sdnet/`` and ``backends/`` (configured in
pyproject.toml), and the wheel ships ``py.typed`` so that users' checkers read the hints."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_errors() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--hide-error-context"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def test_wheel_ships_py_typed(tmp_path: Path) -> None:
    assert (ROOT / "sdnet" / "py.typed").is_file()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("sdnet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sdnet/py.typed" in names
    assert "sdnet/interop/onnx.py" in names and "sdnet/predict.py" in names
