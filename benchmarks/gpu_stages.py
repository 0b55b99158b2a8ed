"""The stages of ``gpu_check.py``, each run as ``python -m gpu_stages NAME CONTEXT_JSON``.

A stage function takes the :class:`Ctx` and returns ``(reason, details)``: one line saying what
passed, and short facts for the summary. It raises :class:`Skip` where it cannot run here
(without a GPU: the reason says why) and :class:`Fail` when a check fails; any other exception
is a failure too, with its traceback in the stage's log. The last line printed is the result,
``GPU-CHECK-RESULT {...}``, which ``gpu_check.py`` reads.

A device that is not a GPU (``--device cpu``, ``torch``, ``array_api_strict``) runs the stages
that need no CUDA-only feature as a dry run of their own code, labelled as such: not a GPU
result. This module holds the stages that need no training loop (versions, pytest, dlpack,
speed) and the shared helpers; ``gpu_train_stages.py`` holds the others.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import pkgutil
import platform
import re
import signal
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_check import HANG_ENV, RESULT_MARK

Result = tuple[str, dict[str, Any]]


class Skip(Exception):
    """The stage cannot run here; the message says why."""


class Fail(Exception):
    """A check failed: the message says which; ``details`` are kept for the summary."""

    def __init__(self, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.details = details or {}


@dataclass(frozen=True)
class Ctx:
    """What every stage is told (``gpu_check.py`` passes it as JSON)."""

    device: str  # the sdnet device checked, "gpu" by default
    data: str  # the MNIST folder
    root: str  # the bundle (or the repository): benchmarks/, tests/
    out: str  # the results folder: a stage's own files go to a subfolder
    site: str | None  # where the bundle was installed; None for a checkout
    smoke: bool  # tiny sizes, to check the stages' code
    commit: str | None  # sdnet's commit, from the bundle's manifest
    seconds: float  # this stage's time limit


class Checks:
    """The named checks of one stage, printed as they are made."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bool, str]] = []

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        print(f"  {'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
        self.items.append((name, bool(ok), detail))
        return bool(ok)

    def done(self, reason: str, details: dict[str, Any]) -> Result:
        """``(reason, details)`` when every check passed, else :class:`Fail` naming the others."""
        failed = [f"{n} ({d})" if d else n for n, ok, d in self.items if not ok]
        details["checks"] = f"{len(self.items) - len(failed)} of {len(self.items)} passed"
        if failed:
            raise Fail("; ".join(failed), details)
        return reason, details


# -- helpers -------------------------------------------------------------------------------------
def isolate() -> None:
    """Drop the import hooks of editable installs: only the installed copy may answer for
    ``sdnet`` (an editable install would serve any module the wheel lacks from a checkout)."""
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in _module_of(f)]


def _module_of(finder: Any) -> str:
    return getattr(finder, "__module__", "") or type(finder).__module__


def device_backend(ctx: Ctx) -> Any:
    """The backend checked; :class:`Skip` when this machine cannot give it."""
    import sdnet

    try:
        return sdnet.get_backend(ctx.device)
    except sdnet.BackendUnavailable as why:
        raise Skip(f"no GPU here: {why}") from None


def on_cuda(backend: Any) -> bool:
    """Whether ``backend`` computes on a CUDA device (its DLPack device says)."""
    from sdnet.backends.backend import KDL_CUDA

    return bool(backend.dlpack_device[0] == KDL_CUDA)


def dry_run(backend: Any) -> dict[str, Any]:
    return {} if on_cuda(backend) else {"dry run": f"on {backend}: not a GPU result"}


def run_child(cmd: list[str], seconds: float, cwd: str | None = None) -> int | None:
    """Run ``cmd`` with its output in this stage's log; ``None`` when it overran ``seconds``
    (it is killed with its process group)."""
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=cwd, start_new_session=True)
    try:
        return proc.wait(timeout=max(seconds, 1.0))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def _under(path: str | None, folder: str | None) -> bool:
    return bool(path and folder) and Path(path).resolve().is_relative_to(Path(folder).resolve())


# -- 1. versions ---------------------------------------------------------------------------------
def stage_versions(ctx: Ctx) -> Result:
    import array_api_compat
    import numpy as np

    import sdnet

    checks = Checks()
    details: dict[str, Any] = {
        "python": platform.python_version(),
        "sdnet": sdnet.__version__ + (f" (commit {ctx.commit})" if ctx.commit else ""),
        "numpy": np.__version__,
        "array_api_compat": array_api_compat.__version__,
        "tf32": sdnet.backends.tf32_status(),
    }
    if ctx.site:
        check_installed_copy(ctx, checks, details)
    check_requirements(checks)
    details.update(torch_facts())
    card = cupy_facts(details)
    smi = nvidia_smi()
    if smi:
        details["nvidia-smi"] = smi
    where = "the installed copy" if ctx.site else "this checkout"
    gpu = card or "no GPU (CuPy: " + details.get("cupy", "not installed") + ")"
    return checks.done(f"sdnet {sdnet.__version__} from {where}; {gpu}", details)


def check_installed_copy(ctx: Ctx, checks: Checks, details: dict[str, Any]) -> None:
    """Every sdnet module imports, from the install folder; so does array-api-compat."""
    import array_api_compat

    import sdnet

    broken, optional = import_every_module(sdnet)
    modules = {n: m for n, m in sys.modules.items() if n == "sdnet" or n.startswith("sdnet.")}
    outside = sorted(
        n for n, m in modules.items() if not _under(getattr(m, "__file__", None), ctx.site)
    )  # noqa: E501
    checks.add("every sdnet module imports", not broken, "; ".join(broken) or f"{len(modules)}")
    checks.add("sdnet comes from the install folder", not outside, ", ".join(outside[:5]))
    aac = array_api_compat.__file__
    checks.add("array-api-compat comes from the bundle", _under(aac, ctx.site), str(aac))
    if optional:
        details["modules needing what is not installed"] = sorted(optional)


def import_every_module(package: Any) -> tuple[list[str], list[str]]:
    """Import every module of ``package``: (modules that failed, with why; modules that need
    a package that is not installed, such as Ray)."""
    broken, optional = [], []
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        try:
            importlib.import_module(info.name)
        except ImportError as exc:
            missing = exc.name or ""
            if missing and not missing.startswith(package.__name__):
                optional.append(f"{info.name} ({missing})")
            else:
                broken.append(f"{info.name}: {exc}")
    return broken, optional


def check_requirements(checks: Checks) -> None:
    """sdnet's requirements are installed here (from the bundle or the image)."""
    missing = []
    for req in importlib.metadata.requires("sdnet") or []:
        if "extra ==" in req:
            continue
        name = re.split(r"[<>=!~ \[;(]", req, maxsplit=1)[0]
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(req)
    checks.add("sdnet's requirements are installed", not missing, ", ".join(missing))


def torch_facts() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"torch": "not installed"}
    facts = {"torch": f"{torch.__version__} (CUDA {torch.version.cuda})"}
    if torch.cuda.is_available():
        facts["torch sees"] = torch.cuda.get_device_name(0)
    return facts


def cupy_facts(details: dict[str, Any]) -> str:
    """CuPy, the CUDA runtime and driver, the card; returns the card's line ("" without)."""
    try:
        import cupy
    except ImportError:
        return ""
    details["cupy"] = cupy.__version__
    try:
        rt = cupy.cuda.runtime
        props = rt.getDeviceProperties(0)
        cuda = f"runtime {_cuda(rt.runtimeGetVersion())}, driver {_cuda(rt.driverGetVersion())}"
    except Exception as exc:  # CuPy without a usable device: say why
        details["cupy"] += f" (no usable device: {exc})"
        return ""
    card = f"{props['name'].decode()} (compute capability {props['major']}.{props['minor']}, "
    card += f"{props['totalGlobalMem'] / 2**30:.0f} GiB)"
    details.update(card=card, cuda=cuda)
    return card


def _cuda(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def nvidia_smi() -> str:
    query = ["--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        out = subprocess.run(["nvidia-smi", *query], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip().replace("\n", "; ") if out.returncode == 0 else ""


# -- 2. pytest -m gpu ----------------------------------------------------------------------------
def stage_pytest(ctx: Ctx) -> Result:
    """``pytest -m gpu`` over the bundled (or the repository's) tests."""
    import sdnet

    try:
        on_gpu, why = on_cuda(sdnet.get_backend("gpu")), ""
    except sdnet.BackendUnavailable as exc:
        on_gpu, why = False, str(exc)
    report = Path(ctx.out) / "pytest-gpu.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rfE", "-p", "no:cacheprovider"]
    cmd += [f"--junitxml={report}", "--durations=5"]
    if on_gpu and importlib.util.find_spec("xdist") is not None:
        cmd += ["-n", str(min(8, os.cpu_count() or 1))]  # CuPy compiles kernels: in parallel
    rc = run_child(cmd, ctx.seconds - 10, cwd=ctx.root)
    if rc is None:
        raise Fail(f"pytest did not finish within {ctx.seconds - 10:.0f} s")
    counts = junit_counts(report) if report.exists() else {}
    text = ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "nothing ran"
    if rc == 5:
        raise Fail("no test carries the gpu marker: nothing was checked", counts)
    if rc != 0:
        raise Fail(f"pytest exited {rc}: {text}", counts)
    if counts.get("passed", 0) == 0:
        if on_gpu:
            raise Fail(f"every GPU test was skipped on a GPU: {text}", counts)
        raise Skip(f"no GPU here ({why}); the GPU tests collect and skip: {text}")
    return f"pytest -m gpu: {text}", counts


def junit_counts(report: Path) -> dict[str, int]:
    """passed, failed, errors, skipped from pytest's JUnit XML report."""
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    total = {
        k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")
    }  # noqa: E501
    passed = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    return {"passed": passed, "failed": total["failures"], "errors": total["errors"],
            "skipped": total["skipped"]}  # fmt: skip


# -- 7. DLPack -----------------------------------------------------------------------------------
def stage_dlpack(ctx: Ctx) -> Result:
    """Host data and PyTorch tensors into a model on the device and its logits back out."""
    import numpy as np

    import sdnet
    from sdnet.interop import apply_model

    backend = device_backend(ctx)
    checks = Checks()
    model = sdnet.build_model("resnet8", in_channels=1, device=backend, seed=0)
    cpu = sdnet.build_model("resnet8", in_channels=1, device="cpu", seed=0)
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    ref, _ = cpu(x, train=False)  # (4, 10) NumPy logits: the same weights (same seed)
    tol = 1e-4 * max(1.0, float(np.max(np.abs(ref))))
    dlpack_host_checks(model, x, ref, tol, checks)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and on_cuda(backend):
        dlpack_cuda_checks(torch, model, x, ref, tol, checks)
    elif torch is not None:
        out = apply_model(model, torch.from_numpy(x))
        checks.add("apply_model(model, torch CPU tensor)", _close(out.numpy(), ref, tol))
    where = "PyTorch CUDA <-> CuPy shared" if on_cuda(backend) else "host paths only"
    return checks.done(f"DLPack on {backend}: {where}", dry_run(backend))


def _close(a: Any, b: Any, tol: float) -> bool:
    import numpy as np

    return bool(np.asarray(a).shape == np.asarray(b).shape and np.max(np.abs(a - b)) <= tol)


def dlpack_host_checks(model: Any, x: Any, ref: Any, tol: float, checks: Checks) -> None:
    import numpy as np

    from sdnet.interop import apply_model, from_dlpack, to_library

    out = apply_model(model, x)
    checks.add("apply_model(model, numpy_x) gives NumPy logits",
               isinstance(out, np.ndarray) and _close(out, ref, tol))  # fmt: skip
    logits, _ = model(model.backend.asarray(x, "float32"), train=False)
    host = to_library(logits, "numpy")
    checks.add("to_library(logits, 'numpy')",
               isinstance(host, np.ndarray) and _close(host, ref, tol))  # fmt: skip
    if on_cuda(model.backend):
        try:
            from_dlpack(x, model.backend, copy=False)
            refused = False
        except BufferError:
            refused = True
        checks.add("from_dlpack(host array, gpu, copy=False) refuses", refused)


def _pointer(a: Any) -> int:
    """The device address of a CuPy array or a PyTorch tensor."""
    return int(a.data_ptr()) if hasattr(a, "data_ptr") else int(a.data.ptr)


def dlpack_cuda_checks(
    torch: Any, model: Any, x: Any, ref: Any, tol: float, checks: Checks
) -> None:  # noqa: E501
    from sdnet.interop import apply_model, from_dlpack, to_library

    if not checks.add("PyTorch sees a CUDA device", torch.cuda.is_available()):
        return
    index = model.backend.dlpack_device[1]
    t = torch.from_numpy(x).to(f"cuda:{index}")
    a = from_dlpack(t, model.backend)
    checks.add("a PyTorch CUDA tensor enters without a copy", _pointer(a) == _pointer(t))
    out = apply_model(model, t)
    checks.add("apply_model(model, CUDA tensor) gives a CUDA tensor",
               out.is_cuda and _close(out.cpu().numpy(), ref, tol))  # fmt: skip
    logits, _ = model(a, train=False)
    back = to_library(logits, "torch")
    checks.add("logits leave to PyTorch without a copy",
               back.is_cuda and _pointer(back) == _pointer(logits))  # fmt: skip
    cast = from_dlpack(t.double(), model.backend, dtype="float32")
    checks.add("a float64 CUDA tensor is cast on entry", str(cast.dtype) == "float32")


# -- 8. speed ------------------------------------------------------------------------------------
def stage_speed(ctx: Ctx) -> Result:
    """``speed.py --device gpu`` for ResNet-20 and ResNet-110 at batch 128 (dry run: --smoke)."""
    backend = device_backend(ctx)
    folder = Path(ctx.out) / "speed"
    folder.mkdir(parents=True, exist_ok=True)
    records = folder / "benchmarks.json"
    cmd = [sys.executable, str(Path(ctx.root) / "benchmarks" / "speed.py"), "--device", ctx.device]
    if on_cuda(backend) and not ctx.smoke:
        cmd += ["--models", "resnet20", "resnet110", "--batch", "128", "--no-memory"]
        cmd += ["--write", "--records", str(records)]
    else:
        cmd += ["--smoke", "--no-memory"]
    rc = run_child(cmd, ctx.seconds - 5)
    if rc is None:
        raise Fail(f"speed.py did not finish within {ctx.seconds - 5:.0f} s")
    if rc != 0:
        raise Fail(f"speed.py exited {rc}")
    if not records.exists():
        return f"speed.py ran on {backend} (smoke sizes; nothing recorded)", dry_run(backend)
    return speed_result(records, ctx.commit)


def speed_result(records: Path, commit: str | None) -> Result:
    """The speed record: its numbers, its TF32 statement, sdnet's commit written in."""
    from render_benchmarks import write_page

    recs = json.loads(records.read_text())
    record = recs[-1]
    record["commit"] = commit
    records.write_text(json.dumps(recs, indent=1) + "\n")
    write_page(records)
    checks = Checks()
    tf32 = record["settings"].get("tf32", {})
    checks.add("TF32 stated for both libraries", {"sdnet", "torch_matmul"} <= set(tf32), str(tf32))
    models = {r["model"] for r in record["results"]}
    checks.add("ResNet-20 and ResNet-110 measured", {"resnet20", "resnet110"} <= models)
    details: dict[str, Any] = {
        "tf32": ", ".join(f"{k} {'on' if v else 'off'}" for k, v in tf32.items())
    }  # noqa: E501
    for r in record["results"]:
        s, t = r["sdnet"]["train_ms"], r["torch"]["train_ms"]
        details[f"{r['model']} {r['input']} train step"] = (
            f"sdnet {s:.1f} ms, PyTorch {t:.1f} ms ({s / t:.2f}x)"  # noqa: E501
        )
    return checks.done(f"speed recorded for {record['key']}", details)


# -- the stage process ---------------------------------------------------------------------------
def stages() -> dict[str, Callable[[Ctx], Result]]:
    import gpu_train_stages as train

    return {
        "versions": stage_versions,
        "pytest": stage_pytest,
        "syncs": train.stage_syncs,
        "compare": train.stage_compare,
        "resume": train.stage_resume,
        "sweep": train.stage_sweep,
        "dlpack": stage_dlpack,
        "speed": stage_speed,
    }


def run(name: str, ctx: Ctx) -> dict[str, Any]:
    """Run stage ``name``: its result as ``{"status", "reason", "details"}``."""
    try:
        reason, details = stages()[name](ctx)
        return {"status": "pass", "reason": reason, "details": details}
    except Skip as why:
        return {"status": "skip", "reason": str(why), "details": {}}
    except Fail as why:
        return {"status": "fail", "reason": str(why), "details": why.details}
    except Exception as exc:
        traceback.print_exc()
        return {"status": "fail", "reason": f"{type(exc).__name__}: {exc}", "details": {}}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    name, ctx = argv[0], Ctx(**json.loads(argv[1]))
    if ctx.site:  # from a bundle: its installed copy only (a checkout uses what Python finds)
        isolate()
    if os.environ.get(HANG_ENV) == name:  # the time limits' own test: hang, with a child
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(10**6)"])
        print(f"{HANG_ENV}={name}: hanging (pids {os.getpid()} {child.pid})", flush=True)
        time.sleep(10**6)
    result = run(name, ctx)
    print(RESULT_MARK + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":  # run through the module itself: one Skip and Fail for all stages
    import gpu_stages

    sys.exit(gpu_stages.main())
