"""The wheel installs `backends/` as `sdnet.backends` and nothing named `backends` at top level."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_layout(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("sdnet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"sdnet", next(t for t in tops if t.endswith(".dist-info"))}
    assert "sdnet/backends/__init__.py" in names
    assert "sdnet/data/idx.py" in names
    assert not any(n.startswith("backends/") for n in names)
    # every module of the source tree is in the wheel (a package missing from pyproject's
    # list would go unnoticed in an editable install)
    source = {
        f"sdnet/{p.relative_to(ROOT / 'sdnet').as_posix()}" for p in (ROOT / "sdnet").rglob("*.py")
    }
    source |= {f"sdnet/backends/{p.name}" for p in (ROOT / "backends").glob("*.py")}
    assert source <= set(names), sorted(source - set(names))


def test_installed_backends_subpackage() -> None:
    import sdnet.backends

    assert Path(sdnet.backends.__file__).resolve() == ROOT / "backends" / "__init__.py"
