"""Make the folder from which ``gpu_check.py`` checks sdnet on a GPU machine that has no network.

::

    python benchmarks/gpu_bundle.py OUT_DIR [--python-version 3.12] [--platform TAG ...]
        [--data DIR] [--with NAME==VERSION ...] [--with-cupy [SPEC]] [--find-links DIR]

The folder holds:

``wheels/``
    sdnet's own wheel, built from this working tree (``pip wheel --no-deps``), and the wheels of
    what the GPU machine's image lacks, fetched with ``pip download --only-binary=:all:
    --no-deps`` for that machine's Python and platforms: array-api-compat (the version
    installed here, which the tests ran with), and whatever ``--with`` / ``--with-cupy`` add.
    CuPy and the CUDA libraries are on the image and are never bundled unless asked for.
``data/mnist/``
    The four MNIST files (``--data``, else ``$SDNET_DATA/mnist``, else ``../shared/data/mnist``
    beside the repository).
``benchmarks/``
    ``gpu_check.py`` (the one command run there), its stages, ``speed.py`` and what it imports.
``tests/``
    ``conftest.py``, the helper modules and the test modules that hold GPU tests (found by
    :func:`gpu_test_modules`), with a ``pytest.ini`` written from ``pyproject.toml``.
``MANIFEST.json``
    Every file with its size and SHA-256, the wheels with their versions and requirements, the
    requirements left to the image, the target, sdnet's version and commit.

The defaults are the GPU machine's image: CPython 3.12 on manylinux x86-64 (pip matches each
``--platform`` tag exactly, so several are tried). ``--find-links DIR`` takes the extra wheels
from a folder instead of the package index (offline). The bundle must fit the device call's
64 MiB (``--max-mib``).
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
IMAGE_PYTHON = "3.12"
IMAGE_PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
MISSING_ON_IMAGE = ("array-api-compat",)  # what sdnet imports and the GPU image lacks
CUPY = "cupy-cuda13x"  # the image's CUDA 13 build; --with-cupy for an image without it
SCRIPTS = (
    "gpu_check.py",
    "gpu_stages.py",
    "gpu_train_stages.py",
    "speed.py",
    "_records.py",
    "_tables.py",
    "_targets.py",
    "_machine.py",
    "render_benchmarks.py",
)
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "sdnet", "backends")
MAX_MIB = 64  # what one device call carries


class BundleError(RuntimeError):
    """The bundle cannot be made; the message says what to do."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the bundle folder to make (new or empty)")
    p.add_argument("--python-version", default=IMAGE_PYTHON, help="the GPU machine's Python")
    p.add_argument(
        "--platform",
        action="append",
        dest="platforms",
        help=f"wheel platform tags to accept (repeat; default: {', '.join(IMAGE_PLATFORMS)})",
    )
    p.add_argument("--data", type=Path, default=None, help="the folder of the MNIST files")
    p.add_argument(
        "--with", action="append", dest="extra", default=[], metavar="NAME==VERSION",
        help="bundle this wheel too (repeat); replaces a default of the same name",
    )  # fmt: skip
    p.add_argument(
        "--with-cupy", nargs="?", const=CUPY, default=None, metavar="SPEC",
        help=f"bundle CuPy too (default {CUPY}), for an image without it",
    )  # fmt: skip
    p.add_argument("--find-links", type=Path, default=None, help="take wheels from this folder")
    p.add_argument("--max-mib", type=float, default=MAX_MIB, help="refuse a larger bundle")
    args = p.parse_args(argv)
    args.platforms = args.platforms or list(IMAGE_PLATFORMS)
    if not re.fullmatch(r"3\.\d+", args.python_version):
        p.error(f"--python-version {args.python_version!r}: give major.minor, e.g. 3.12")
    return args


def run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    """Run ``cmd``; :class:`BundleError` with the end of its output when it fails."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
        raise BundleError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


# -- sdnet's wheel -----------------------------------------------------------------------------
def build_sdnet_wheel(dest: Path) -> Path:
    """Build sdnet's wheel from a clean copy of this working tree's build inputs (a stale
    ``build/`` folder could otherwise add files that no longer exist)."""
    with tempfile.TemporaryDirectory(prefix="sdnet-src-") as tmp:
        src = Path(tmp)
        for name in BUILD_INPUTS:
            item = REPO / name
            if item.is_dir():
                shutil.copytree(item, src / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(item, src / name)
        cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), str(src)]
        if importlib.util.find_spec("setuptools") is not None:
            cmd.insert(5, "--no-build-isolation")  # offline: the setuptools installed here
        run(cmd, "building sdnet's wheel")
    (wheel,) = dest.glob("sdnet-*.whl")
    check_wheel_is_complete(wheel)
    return wheel


def check_wheel_is_complete(wheel: Path) -> None:
    """Every module of ``sdnet/`` and ``backends/`` must be in the wheel: an editable install
    hides a package left out of ``pyproject.toml``, a clean install does not."""
    names = set(zipfile.ZipFile(wheel).namelist())
    want = [f"sdnet/{p.relative_to(REPO / 'sdnet').as_posix()}" for p in _modules("sdnet")]
    want += [
        f"sdnet/backends/{p.relative_to(REPO / 'backends').as_posix()}"
        for p in _modules("backends")
    ]  # noqa: E501
    missing = sorted(w for w in want if w not in names)
    if missing:
        raise BundleError(
            f"the wheel lacks {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}: add "
            "their package to [tool.setuptools] packages in pyproject.toml"
        )


def _modules(top: str) -> list[Path]:
    return [p for p in (REPO / top).rglob("*.py") if "__pycache__" not in p.parts]


# -- the wheels the image lacks ------------------------------------------------------------------
def requirements(args: argparse.Namespace) -> list[str]:
    """What to download: the defaults (pinned to the versions installed here), ``--with-cupy``
    and ``--with`` (one version per name: a later one replaces an earlier one)."""
    specs: dict[str, str] = {}
    for name in MISSING_ON_IMAGE:
        try:
            specs[_norm(name)] = f"{name}=={importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            specs[_norm(name)] = name
    for spec in ([args.with_cupy] if args.with_cupy else []) + args.extra:
        specs[_norm(re.split(r"[<>=!~ \[;]", spec, maxsplit=1)[0])] = spec
    return list(specs.values())


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def download_wheels(specs: list[str], dest: Path, args: argparse.Namespace) -> list[Path]:
    """``pip download`` the wheels of ``specs`` for the target, without their dependencies."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check"]
    cmd += ["--no-deps", "--only-binary=:all:", "--implementation", "cp"]
    cmd += ["--python-version", args.python_version, "-d", str(dest)]
    for tag in args.platforms:
        cmd += ["--platform", tag]
    if args.find_links is not None:
        cmd += ["--no-index", "--find-links", str(args.find_links)]
    before = set(dest.glob("*.whl"))
    hint = "; offline? pass --find-links DIR holding the wheels"
    try:
        run(cmd + specs, f"pip download {' '.join(specs)}")
    except BundleError as why:
        raise BundleError(f"{why}{hint}") from None
    return sorted(set(dest.glob("*.whl")) - before)


def wheel_metadata(wheel: Path) -> dict[str, Any]:
    """Name, version and requirements (no extras) from a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    fields = re.findall(r"^([\w-]+): (.*)$", text.split("\n\n", 1)[0], re.M)
    requires = [v for k, v in fields if k == "Requires-Dist" and "extra ==" not in v]
    first = {k: v for k, v in reversed(fields)}
    return {"name": first["Name"], "version": first["Version"], "requires": requires}


def check_one_version_each(wheels: list[dict[str, Any]]) -> None:
    names = [_norm(w["name"]) for w in wheels]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BundleError(f"two versions of {', '.join(twice)}: keep one (pip refuses both)")


def left_to_image(wheels: list[dict[str, Any]]) -> list[str]:
    """Requirements of the bundled wheels that no bundled wheel provides."""
    have = {_norm(w["name"]) for w in wheels}
    out = []
    for w in wheels:
        for req in w["requires"]:
            name = _norm(re.split(r"[<>=!~ \[;(]", req, maxsplit=1)[0])
            if name not in have and req not in out:
                out.append(req)
    return out


# -- data, scripts, tests ------------------------------------------------------------------------
def mnist_source(arg: Path | None) -> Path:
    """``--data``, else ``$SDNET_DATA/mnist``, else ``../shared/data/mnist``."""
    if arg is not None:
        return arg
    if os.environ.get("SDNET_DATA"):
        return Path(os.environ["SDNET_DATA"]) / "mnist"
    return REPO.parent / "shared" / "data" / "mnist"


def copy_mnist(src: Path, dest: Path) -> None:
    from sdnet.data.idx import MNIST_FILES

    names = [f"{n}.gz" for pair in MNIST_FILES.values() for n in pair]
    missing = [n for n in names if not (src / n).is_file()]
    if missing:
        raise BundleError(f"MNIST not found in {src} (no {missing[0]}): pass --data DIR")
    dest.mkdir(parents=True)
    for n in names:
        shutil.copy2(src / n, dest / n)


def gpu_test_modules(tests: Path) -> list[Path]:
    """The test modules holding GPU tests: a test or fixture taking the ``backend`` fixture
    (whose ``"gpu"`` parameter carries the ``gpu`` marker) or a ``gpu`` mark of their own."""
    found = []
    for path in sorted(tests.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        takes_backend = any(
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and any(a.arg == "backend" for a in node.args.args + node.args.kwonlyargs)
            for node in ast.walk(tree)
        )
        marked = any(
            isinstance(node, ast.Attribute) and node.attr == "gpu" and _is_mark(node.value)
            for node in ast.walk(tree)
        )
        if takes_backend or marked:
            found.append(path)
    return found


def _is_mark(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "mark"


def copy_tests(dest: Path) -> list[str]:
    """conftest, helpers (``tests/*.py`` that are not test modules) and the GPU test modules."""
    tests = REPO / "tests"
    dest.mkdir()
    chosen = [p for p in sorted(tests.glob("*.py")) if not p.name.startswith("test_")]
    chosen += gpu_test_modules(tests)
    for p in chosen:
        shutil.copy2(p, dest / p.name)
    return [f"tests/{p.name}" for p in gpu_test_modules(tests)]


def write_pytest_ini(path: Path) -> None:
    """``pytest.ini`` from ``pyproject.toml``'s ``[tool.pytest.ini_options]`` (markers and the
    default ``-m 'not gpu'``), so that ``pytest -m gpu`` behaves there as it does here."""
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    lines = ["[pytest]"]
    for key, value in options.items():
        if isinstance(value, list):
            lines.append(f"{key} =")
            lines += [f"    {v}" for v in value]
        else:
            lines.append(f"{key} = {value}")
    path.write_text("\n".join(lines) + "\n")


def copy_scripts(dest: Path) -> None:
    dest.mkdir()
    for name in SCRIPTS:
        shutil.copy2(REPO / "benchmarks" / name, dest / name)


# -- manifest ------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def commit() -> str | None:
    """The commit of this working tree, ``-dirty`` when what the wheel is built from differs."""
    try:
        head = run(["git", "-C", str(REPO), "rev-parse", "--short=7", "HEAD"], "git").strip()
        dirty = run(["git", "-C", str(REPO), "status", "--porcelain", "--", *BUILD_INPUTS], "git")
    except (BundleError, OSError):
        return None
    return f"{head}-dirty" if dirty.strip() else head


def write_manifest(out: Path, args: argparse.Namespace, tests: list[str]) -> dict[str, Any]:
    found = sorted((out / "wheels").glob("*.whl"))
    wheels = [dict(wheel_metadata(w), file=f"wheels/{w.name}") for w in found]
    check_one_version_each(wheels)
    files = [p for p in sorted(out.rglob("*")) if p.is_file()]
    sdnet_wheel = next(w for w in wheels if w["name"] == "sdnet")
    manifest = {
        "format": 1,
        "made": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "sdnet": {"version": sdnet_wheel["version"], "commit": commit()},
        "target": {
            "python_version": args.python_version,
            "platforms": args.platforms,
            "implementation": "cp",
        },
        "wheels": wheels,
        "left_to_image": left_to_image(wheels),
        "gpu_tests": tests,
        "files": [
            {"path": p.relative_to(out).as_posix(), "bytes": p.stat().st_size, "sha256": sha256(p)}
            for p in files
        ],
        "total_bytes": sum(p.stat().st_size for p in files),
        "run": "python3 <bundle>/benchmarks/gpu_check.py --out DIR [--pack $OUT]",
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def make_bundle(args: argparse.Namespace) -> dict[str, Any]:
    """Make the bundle folder ``args.out``; returns its manifest."""
    out = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"{out} exists and is not an empty folder: name a new one")
    data = mnist_source(args.data)  # checked before the slow steps
    out.mkdir(parents=True, exist_ok=True)
    try:
        build_sdnet_wheel(out / "wheels")
        download_wheels(requirements(args), out / "wheels", args)
        copy_mnist(data, out / "data" / "mnist")
        copy_scripts(out / "benchmarks")
        tests = copy_tests(out / "tests")
        write_pytest_ini(out / "pytest.ini")
        manifest = write_manifest(out, args, tests)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # no half-made bundle is left to carry
        raise
    if manifest["total_bytes"] > args.max_mib * 2**20:
        mib = manifest["total_bytes"] / 2**20
        raise BundleError(
            f"the bundle holds {mib:.1f} MiB, over the {args.max_mib:g} MiB one device call "
            "carries: bundle fewer wheels (CuPy is on the image)"
        )
    return manifest


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        manifest = make_bundle(args)
    except BundleError as why:
        print(f"gpu_bundle: error: {why}", file=sys.stderr)
        return 2
    wheels = ", ".join(f"{w['name']} {w['version']}" for w in manifest["wheels"])
    print(
        f"made {args.out}: {manifest['total_bytes'] / 2**20:.1f} MiB in "
        f"{len(manifest['files'])} files; wheels: {wheels}; "
        f"{len(manifest['gpu_tests'])} GPU test modules; from the image: "
        f"{', '.join(manifest['left_to_image']) or 'nothing'}"
    )
    print(f"run there: python3 {args.out.name}/benchmarks/gpu_check.py --out DIR --pack $OUT")
    return 0


if __name__ == "__main__":
    sys.exit(main())
