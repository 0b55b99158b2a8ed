"""The GPU check, proven where no GPU is.

Its bundle is made with no network (sdnet's wheel from this tree, array-api-compat rebuilt from
its installed files), installed offline into a fresh folder and checked from there, with the
packages the GPU image lacks hidden: the stages that need no GPU pass, the GPU stages skip and
say why, a stage made to hang is killed with its processes while the others run, and the
summary files are well formed. The stages' own code runs as a dry run on CPU backends, and the
bundle for the GPU image itself (Python 3.12, manylinux) is made when the package index answers.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import sdnet

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
NOT_ON_IMAGE = ("hypothesis", "ray", "array_api_strict", "mkdocs")  # hidden from the check
HUNG = "syncs"


def _bench(name: str) -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def _gpu_here() -> bool:
    try:
        sdnet.get_backend("gpu")
    except sdnet.BackendUnavailable:
        return False
    return True


pytestmark = pytest.mark.skipif(_gpu_here(), reason="a GPU is here: run the check itself")


def wheel_from_installed(dist_name: str, dest: Path) -> Path:
    """A wheel rebuilt from an installed pure-Python distribution's RECORD (no network)."""
    dist = importlib.metadata.distribution(dist_name)
    skip = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    files = [f for f in dist.files or [] if "__pycache__" not in f.parts and f.name not in skip]
    info = next(f.parts[0] for f in files if f.parts[0].endswith(".dist-info"))
    wheel = dest / f"{info.removesuffix('.dist-info')}-py3-none-any.whl"
    rows = []
    with zipfile.ZipFile(wheel, "w") as z:
        for f in files:
            data = Path(f.locate()).read_bytes()
            z.writestr(f.as_posix(), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            rows.append(f"{f.as_posix()},sha256={digest.decode()},{len(data)}")
        z.writestr(f"{info}/RECORD", "\n".join([*rows, f"{info}/RECORD,,"]) + "\n")
    return wheel


def _run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A bundle for this Python, made offline."""
    tmp = tmp_path_factory.mktemp("bundle")
    (tmp / "wheelhouse").mkdir()
    wheel_from_installed("array-api-compat", tmp / "wheelhouse")
    out = tmp / "sdnet-gpu"
    cmd = [sys.executable, str(BENCH / "gpu_bundle.py"), str(out), "--python-version"]
    cmd += [LOCAL_PYTHON, "--find-links", str(tmp / "wheelhouse"), "--data", str(mnist_dir)]
    made = _run(cmd)
    assert made.returncode == 0, made.stdout + made.stderr
    return out


def _hide_image_gaps(folder: Path) -> Path:
    """A folder that, put on the path, makes the packages the GPU image lacks unimportable."""
    folder.mkdir(exist_ok=True)
    for name in NOT_ON_IMAGE:
        message = f"No module named {name!r}"
        (folder / f"{name}.py").write_text(
            f"raise ModuleNotFoundError({message!r}, name={name!r})\n"
        )
    return folder


def check_from(bundle: Path, out: Path, *args: str, **env: str) -> Any:
    """Run the bundle's gpu_check.py from outside any checkout, the image's gaps hidden."""
    hidden = _hide_image_gaps(out.parent / "hidden")
    # without hypothesis there is no hypothesis plugin either
    full_env = dict(os.environ, PYTHONPATH=str(hidden), PYTEST_ADDOPTS="-p no:hypothesispytest")
    full_env.update(env)
    for name in ("OUT", "SDNET_TF32", "CUPY_TF32"):  # the check's own defaults
        full_env.pop(name, None)
    cmd = [sys.executable, str(bundle / "benchmarks" / "gpu_check.py"), "--out", str(out), *args]
    return _run(cmd, env=full_env, cwd=out.parent)


@pytest.fixture(scope="module")
def checked(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The whole check from the bundle, one stage made to hang under a 4-second limit."""
    tmp = tmp_path_factory.mktemp("checked")
    proc = check_from(bundle, tmp / "results", "--pack", str(tmp / "packed"),
                      "--limit", f"{HUNG}=4", SDNET_GPU_CHECK_HANG=HUNG)  # fmt: skip
    summary = json.loads((tmp / "results" / "summary.json").read_text())
    return {"proc": proc, "summary": summary, "out": tmp / "results", "packed": tmp / "packed"}


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a killed child whose reaper has not yet collected it does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] in "ZX")


# -- the bundle ----------------------------------------------------------------------------------
def test_the_bundle_holds_what_its_manifest_lists(bundle: Path) -> None:
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    assert {w["name"] for w in manifest["wheels"]} == {"sdnet", "array-api-compat"}
    version = importlib.metadata.version("array-api-compat")
    assert any(w["version"] == version for w in manifest["wheels"])  # the version tested here
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert files - {"MANIFEST.json"} == {f["path"] for f in manifest["files"]}
    for f in manifest["files"]:
        data = (bundle / f["path"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (f["bytes"], f["sha256"])
    assert manifest["total_bytes"] == sum(f["bytes"] for f in manifest["files"])
    assert len([f for f in files if f.startswith("data/mnist/")]) == 4
    assert "tests/test_functional.py" in manifest["gpu_tests"]
    assert {"tests/conftest.py", "pytest.ini", "benchmarks/speed.py"} <= files
    assert [r.split(">")[0] for r in manifest["left_to_image"]] == ["numpy", "tqdm"]
    assert manifest["target"]["python_version"] == LOCAL_PYTHON


def test_the_bundled_pytest_ini_registers_the_markers_and_deselects_gpu(bundle: Path) -> None:
    text = (bundle / "pytest.ini").read_text()
    assert "    gpu: " in text and "    slow: " in text and "addopts = -m 'not gpu'" in text


def test_the_gpu_test_modules_are_those_pytest_collects() -> None:
    """The bundle's static choice of test modules against pytest's own collection."""
    proc = _run([sys.executable, "-m", "pytest", "-m", "gpu", "--collect-only", "-q",
                 "-p", "no:cacheprovider"], cwd=ROOT)  # fmt: skip
    collected = {line.split("::")[0] for line in proc.stdout.splitlines() if "::" in line}
    found = {f"tests/{p.name}" for p in _bench("gpu_bundle").gpu_test_modules(ROOT / "tests")}
    assert collected and collected <= found, collected - found
    assert found - collected == set(), found - collected


def test_an_incomplete_wheel_is_refused_naming_the_package(tmp_path: Path) -> None:
    bundler = _bench("gpu_bundle")
    wheel = tmp_path / "sdnet-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for p in bundler._modules("sdnet"):
            if "training" not in p.parts:
                z.writestr(f"sdnet/{p.relative_to(ROOT / 'sdnet').as_posix()}", "")
        for p in bundler._modules("backends"):
            z.writestr(f"sdnet/backends/{p.relative_to(ROOT / 'backends').as_posix()}", "")
    with pytest.raises(bundler.BundleError, match=r"lacks sdnet/training/.*pyproject.toml"):
        bundler.check_wheel_is_complete(wheel)


def test_bad_bundle_requests_get_one_line_saying_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    for args, words in (
        ([str(tmp_path / "full")], "is not an empty folder: name a new one"),
        ([str(tmp_path / "b"), "--data", str(tmp_path)], "MNIST not found in"),
    ):
        proc = _run([sys.executable, str(BENCH / "gpu_bundle.py"), *args])
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_with_replaces_a_default_of_the_same_name() -> None:
    bundler = _bench("gpu_bundle")
    args = bundler.parse_args(["out", "--with", "array_api_compat==1.12", "--with-cupy"])
    assert bundler.requirements(args) == ["array_api_compat==1.12", bundler.CUPY]
    assert args.platforms == list(bundler.IMAGE_PLATFORMS) and args.python_version == "3.12"


# -- the check from the bundle -------------------------------------------------------------------
def test_the_stages_that_need_no_gpu_pass_and_the_others_skip_saying_why(
    checked: dict[str, Any],
) -> None:
    stages = {s["name"]: s for s in checked["summary"]["stages"]}
    assert [s["name"] for s in checked["summary"]["stages"]] == [
        "install", "versions", "pytest", "syncs", "compare", "resume", "sweep", "dlpack", "speed",
    ]  # fmt: skip
    assert stages["install"]["status"] == "pass"
    assert stages["versions"]["status"] == "pass", stages["versions"]["reason"]
    assert stages["versions"]["details"]["checks"] == "4 of 4 passed"  # installed copy, whole
    pytest_stage = stages["pytest"]
    assert (
        pytest_stage["status"] == "skip"
        and "the GPU tests collect and skip" in pytest_stage["reason"]
    )
    assert " skipped" in pytest_stage["reason"] and "error" not in pytest_stage["reason"]
    for name in ("compare", "resume", "sweep", "dlpack", "speed"):
        assert stages[name]["status"] == "skip", stages[name]
        assert stages[name]["reason"].startswith("no GPU here: GPU requested but CuPy")


def test_a_hung_stage_is_killed_with_its_children_and_reported(checked: dict[str, Any]) -> None:
    hung = next(s for s in checked["summary"]["stages"] if s["name"] == HUNG)
    assert hung["status"] == "fail" and hung["reason"].startswith("timed out after 4 s: killed")
    assert 4.0 <= hung["seconds"] < 15.0
    log = (checked["out"] / hung["log"]).read_text()
    pids = [int(p) for p in log.split("(pids ", 1)[1].split(")", 1)[0].split()]
    assert len(pids) == 2 and not any(_running(pid) for pid in pids)  # the stage and its child
    assert checked["proc"].returncode == 1 and checked["summary"]["verdict"] == "FAIL"


def test_the_summary_files_are_well_formed_and_packed(checked: dict[str, Any]) -> None:
    summary, out = checked["summary"], checked["out"]
    assert summary["seconds"] < summary["budget"] == 480
    assert summary["sdnet_from"].startswith("the bundle, installed into a fresh folder")
    for s in summary["stages"]:
        assert s["status"] in ("pass", "fail", "skip") and s["reason"], s
        assert isinstance(s["details"], dict) and s["seconds"] >= 0
        assert (out / s["log"]).is_file(), s
    md = (out / "summary.md").read_text()
    assert md.startswith("# sdnet GPU check: FAIL")
    assert "| 3 | syncs | fail |" in md and "| 1 | versions | pass |" in md
    assert "- tf32: off (default)" in md
    packed = sorted(p.name for p in checked["packed"].iterdir())
    assert packed == ["gpu-check.tar.gz", "summary.json", "summary.md"]  # within 8 files
    with tarfile.open(checked["packed"] / "gpu-check.tar.gz") as tar:
        names = tar.getnames()
    assert {
        f"gpu-check/logs/{n:02d}-{s['name']}.log" for n, s in enumerate(summary["stages"])
    } <= set(names)  # noqa: E501


def test_a_check_with_nothing_failed_exits_0(bundle: Path, tmp_path: Path) -> None:
    proc = check_from(bundle, tmp_path / "r", "--only", "versions")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "# sdnet GPU check: PASS WITH SKIPS" in proc.stdout


def test_the_stages_run_as_a_dry_run_on_a_cpu_backend(bundle: Path, tmp_path: Path) -> None:
    """compare, resume, sweep and dlpack on PyTorch's CPU tensors, tiny, from the bundle."""
    proc = check_from(bundle, tmp_path / "r", "--device", "torch", "--smoke", "--only",
                      "compare", "resume", "sweep", "dlpack")  # fmt: skip
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    ran = {
        s["name"]: s
        for s in summary["stages"]
        if s["name"] in ("compare", "resume", "sweep", "dlpack")
    }  # noqa: E501
    for name, s in ran.items():
        assert s["status"] == "pass", (name, s["reason"], proc.stdout[-3000:])
        assert s["details"]["dry run"] == "on torch on cpu: not a GPU result"
    assert ran["compare"]["details"]["largest relative loss difference"] <= 1e-3


def test_bad_check_options_say_what_to_do(tmp_path: Path) -> None:
    for args, words in ((["--only", "nope"], "the stages are versions, pytest"),
                        (["--limit", "syncs"], "give STAGE=SECONDS")):  # fmt: skip
        proc = _run([sys.executable, str(BENCH / "gpu_check.py"), "--out", str(tmp_path), *args])
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr


# -- the syncs stage's window, on NumPy with the device policy forced -----------------------
def _ctx(tmp_path: Path, mnist_dir: Path, device: str = "cpu") -> Any:
    stages = _bench("gpu_stages")
    return stages.Ctx(device=device, data=str(mnist_dir), root=str(ROOT), out=str(tmp_path),
                      site=None, smoke=True, commit=None, seconds=60.0)  # fmt: skip


def test_steady_steps_make_no_transfer_to_the_host(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deferred finiteness checks (the GPU policy) forced on NumPy: in steady steps no
    copy to the host and no wait; the window covers crop+flip batches."""
    monkeypatch.setattr("sdnet.training.guard.defers_checks", lambda backend: True)
    train = _bench("gpu_train_stages")
    reason, details = train.steady_syncs(_ctx(tmp_path, mnist_dir), sdnet.get_backend("cpu"),
                                         None, RuntimeError)  # fmt: skip
    every = importlib.import_module("sdnet.training.guard").CHECK_EVERY_ON_DEVICE
    assert details["steps"] == len(train.steady_step_numbers(2 * every + 4, every)) > 0
    assert details["syncs"] == 0 and details["checks"] == "3 of 3 passed", reason


def test_a_sync_in_a_steady_step_is_caught(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window is able to fail: a loss read back every step is counted."""
    monkeypatch.setattr("sdnet.training.guard.defers_checks", lambda backend: True)
    meter = importlib.import_module("sdnet.training.metrics").EpochMeter
    real = meter.add

    def add(self: Any, loss: Any, *args: Any) -> None:
        sdnet.get_backend("cpu").to_numpy(loss)  # a read of the device, as a bug would do
        real(self, loss, *args)

    monkeypatch.setattr(meter, "add", add)
    train = _bench("gpu_train_stages")
    stages = _bench("gpu_stages")
    with pytest.raises(stages.Fail, match="no sync and no copy to the host"):
        train.steady_syncs(_ctx(tmp_path, mnist_dir), sdnet.get_backend("cpu"), None, RuntimeError)


# -- the bundle for the GPU image itself ---------------------------------------------------------
def test_the_bundle_for_the_gpu_image(tmp_path: Path, mnist_dir: Path) -> None:
    """Python 3.12, manylinux x86-64 wheels from the package index (skipped offline)."""
    out = tmp_path / "b"
    proc = _run([sys.executable, str(BENCH / "gpu_bundle.py"), str(out), "--data", str(mnist_dir)])
    network = ("connection", "network", "resolve", "timed out", "temporary failure", "proxy")
    if proc.returncode != 0 and any(w in proc.stderr.lower() for w in network):
        pytest.skip(f"the package index cannot be reached: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["target"] == {
        "python_version": "3.12", "platforms": list(_bench("gpu_bundle").IMAGE_PLATFORMS),
        "implementation": "cp",
    }  # fmt: skip
    assert {w["name"] for w in manifest["wheels"]} == {"sdnet", "array-api-compat"}
    assert manifest["total_bytes"] < 64 * 2**20


def test_the_gpu_page_lists_the_stages_as_the_check_declares_them() -> None:
    """docs/gpu.md's stage table is what gpu_check.py prints with --stages (one owner)."""
    table = _bench("gpu_check").stage_table()
    assert table in (ROOT / "docs" / "gpu.md").read_text()
    assert "| | all | 465 s, within the 480 s budget | |" in table


def test_speed_sets_tf32_alike_for_both_libraries_and_states_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch = pytest.importorskip("torch")
    cuda_mod = importlib.import_module("sdnet.backends.cuda")
    monkeypatch.setattr(cuda_mod, "_tf32_choice", [])
    monkeypatch.setenv("SDNET_TF32", "0")  # restored afterwards, whatever set_tf32 writes
    flags = (torch.backends.cuda.matmul, torch.backends.cudnn)
    before = [f.allow_tf32 for f in flags]
    speed = _bench("speed")
    try:
        on = speed._tf32(True)
        off = speed._tf32(False)  # PyTorch's own default allows TF32 in convolutions: now off
    finally:
        for f, value in zip(flags, before, strict=True):
            f.allow_tf32 = value
    assert on == {"sdnet": True, "torch_matmul": True, "torch_cudnn": True}
    assert off == {"sdnet": False, "torch_matmul": False, "torch_cudnn": False}
    assert speed.tf32_text(off) == (
        "TF32: sdnet off; PyTorch matrix products off, cuDNN convolutions off"
    )
    assert speed.parse_args([]).tf32 == "off"
