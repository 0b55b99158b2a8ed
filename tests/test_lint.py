"""Conventions CI enforces: ``ruff check`` and ``ruff format --check`` on the Python code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if exe is None:
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    return subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_check() -> None:
    out = _ruff("check", "--output-format", "concise", ".")
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]


def test_ruff_format() -> None:
    # Python files only: code blocks inside Markdown are the docs' own layout
    out = _ruff("format", "--check", "--exclude", "*.md", ".")
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
