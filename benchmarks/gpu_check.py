"""Check sdnet on a GPU machine in one call: from a bundle (``gpu_bundle.py``) or a checkout.

::

    python3 benchmarks/gpu_check.py [--out DIR] [--pack DIR] [--device gpu] [--budget 480]

From a bundle (a ``MANIFEST.json`` beside ``benchmarks/``) it first checks every file against
the manifest and installs the bundled wheels with ``pip install --no-index --no-deps --target``
into a fresh folder; from a checkout it uses the sdnet that Python finds. Then each stage runs in
a process of its own, with ``PYTHONSAFEPATH=1`` and the installed copy first on the path, under
its own time limit (:data:`STAGES`; all of them together within ``--budget`` seconds). A stage
that overruns is killed with its whole process group and reported; the next one still runs.

The results go to ``--out`` (default ``$OUT``, else ``gpu-check`` here): ``summary.json``,
``summary.md`` and ``logs/NN-stage.log`` (one per stage, the install's as ``00``), and what a
stage leaves (the speed record under ``speed/``). ``--pack DIR`` also writes ``summary.json``,
``summary.md`` and ``gpu-check.tar.gz`` (everything) to ``DIR``: three files, within what a
device call brings back. Exit status: 0 when no stage failed, 1 when one did, 2 for bad options.

Only the standard library is used here: this script runs before sdnet is installed. The stages
are in ``gpu_stages.py`` and ``gpu_train_stages.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent  # the bundle, or the repository
RESULT_MARK = "GPU-CHECK-RESULT "  # a stage's last line: this, then its result as JSON
HANG_ENV = "SDNET_GPU_CHECK_HANG"  # a stage name: that stage hangs (to test the time limits)
BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
MIN_SECONDS = 5.0  # a stage is not started with less time left in the budget
BUDGET = 480.0  # 8 minutes for everything; the stages' limits add up to 470 s


@dataclass(frozen=True)
class Stage:
    """One stage: its name, its time limit in seconds, and what it proves."""

    name: str
    seconds: float
    proves: str


STAGES = (
    Stage("versions", 20, "what runs: card, CUDA runtime and driver, CuPy, NumPy, "
          "array-api-compat, PyTorch, sdnet (imported from the installed copy, whole)"),
    Stage("pytest", 140, "pytest -m gpu: every backend-parametrised test on CuPy, and the "
          "GPU-marked tests (CuPy and PyTorch CUDA through DLPack, TF32)"),
    Stage("syncs", 40, "no host sync in steady training steps (crop+flip augmentation, data "
          "on the device) under cupyx.allow_synchronize(False)"),
    Stage("compare", 55, "sdnet.train on the GPU and on NumPy from one seed: the same gates, "
          "losses within float32 tolerance"),
    Stage("resume", 45, "a run saved on the GPU resumes on the CPU, and the reverse, matching an "
          "uninterrupted GPU run; the GPU's model.npz loads on the CPU"),
    Stage("sweep", 55, "sdnet.sweep with two local workers on one GPU"),
    Stage("dlpack", 25, "DLPack: PyTorch CUDA tensors into a CuPy model and back, shared; "
          "to_library(x, 'numpy') and apply_model(gpu_model, numpy_x)"),
    Stage("speed", 85, "benchmarks/speed.py --device gpu, ResNet-20 and ResNet-110 at batch "
          "128, against PyTorch CUDA eager, TF32 stated for both"),
)  # fmt: skip
RESERVE = 10.0  # seconds of the budget kept for the install, a last kill and the summary


@dataclass
class Outcome:
    """What became of one stage (or of the install, number 0)."""

    n: int
    name: str
    status: str  # pass, fail, skip
    reason: str
    seconds: float
    limit: float
    log: str
    details: dict[str, Any] = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    out = os.environ.get("OUT") or "gpu-check"
    p.add_argument("--out", type=Path, default=Path(out), help="results folder ($OUT)")
    p.add_argument("--pack", type=Path, default=None, help="also write 3 files here")
    p.add_argument("--device", default="gpu", help="sdnet device checked (default gpu)")
    p.add_argument("--data", type=Path, default=None, help="the MNIST folder")
    p.add_argument("--site", type=Path, default=None, help="install the bundle here (fresh)")
    p.add_argument("--budget", type=float, default=BUDGET, help="seconds for everything")
    p.add_argument("--only", nargs="+", default=None, metavar="STAGE", help="run these only")
    p.add_argument(
        "--limit", action="append", default=[], metavar="STAGE=SECONDS",
        help="another time limit for a stage (repeat)",
    )  # fmt: skip
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check the stages' code")
    p.add_argument("--stages", action="store_true", help="print the stage table and stop")
    args = p.parse_args(argv)
    names = [s.name for s in STAGES]
    for name in args.only or []:
        if name not in names:
            p.error(f"--only {name}: the stages are {', '.join(names)}")
    args.limits = {}
    for item in args.limit:
        name, _, secs = item.partition("=")
        if name not in names or not _is_number(secs):
            p.error(f"--limit {item!r}: give STAGE=SECONDS with a stage of {', '.join(names)}")
        args.limits[name] = float(secs)
    return args


def _is_number(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


def stage_table() -> str:
    """The stages as docs/gpu.md lists them (``--stages`` prints it; a test compares)."""
    rows = ["| # | stage | time limit | what it proves |", "|---|---|---|---|"]
    rows += [
        f"| {n} | `{s.name}` | {s.seconds:.0f} s | {s.proves} |" for n, s in enumerate(STAGES, 1)
    ]  # noqa: E501
    total = sum(s.seconds for s in STAGES)
    rows.append(f"| | all | {total:.0f} s, within the {BUDGET:.0f} s budget | |")
    return "\n".join(rows)


# -- the bundle ----------------------------------------------------------------------------------
def read_manifest() -> dict[str, Any] | None:
    path = ROOT / "MANIFEST.json"
    return json.loads(path.read_text()) if path.is_file() else None


def verify_bundle(manifest: dict[str, Any]) -> list[str]:
    """Files of the manifest that are missing or differ (size or SHA-256)."""
    bad = []
    for entry in manifest["files"]:
        path = ROOT / entry["path"]
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            bad.append(f"{entry['path']} (missing or truncated)")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            bad.append(f"{entry['path']} (SHA-256 differs)")
    return bad


def install(manifest: dict[str, Any], site: Path, log: Path) -> Outcome:
    """Check the bundle's files, then install its wheels into the empty folder ``site``."""
    t0 = time.perf_counter()
    wheels = [str(ROOT / w["file"]) for w in manifest["wheels"]]
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile"]
    cmd += ["--no-cache-dir", "--disable-pip-version-check", "--target", str(site), *wheels]
    bad = verify_bundle(manifest)
    with log.open("w") as fh:
        fh.write(f"bundle made {manifest['made']}, sdnet {manifest['sdnet']}\n")
        if bad:
            fh.write("damaged: " + "; ".join(bad) + "\n")
            return Outcome(0, "install", "fail", f"the bundle is damaged: {bad[0]}",
                           time.perf_counter() - t0, 0, f"logs/{log.name}")  # fmt: skip
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=300).returncode
    status = "pass" if rc == 0 else "fail"
    reason = f"{len(wheels)} wheels installed offline" if rc == 0 else f"pip exited {rc}"
    details = {"wheels": [f"{w['name']} {w['version']}" for w in manifest["wheels"]]}
    return Outcome(
        0, "install", status, reason, time.perf_counter() - t0, 0, f"logs/{log.name}", details
    )


# -- the stages ----------------------------------------------------------------------------------
def stage_env(site: Path | None, data: Path) -> dict[str, str]:
    """The stages' environment: the installed copy first, no script folder or working
    directory on the path (``PYTHONSAFEPATH``), the MNIST folder for the tests, one BLAS
    thread per call unless set (docs/devices.md, CPU threads)."""
    env = dict(os.environ, PYTHONSAFEPATH="1", PYTHONUNBUFFERED="1")
    for var in BLAS_VARS:  # sdnet's own threads on the CPU side, one BLAS thread each
        env.setdefault(var, "1")
    paths = ([str(site)] if site else []) + [str(HERE)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["SDNET_DATA"] = str(data.parent)  # the tests look for $SDNET_DATA/mnist
    return env


def run_stage(n: int, stage: Stage, limit: float, ctx: dict[str, Any], env: dict[str, str],
              logs: Path) -> Outcome:  # fmt: skip
    """Run one stage in its own process group; kill the group when it overruns ``limit``."""
    log = logs / f"{n:02d}-{stage.name}.log"
    cmd = [sys.executable, "-m", "gpu_stages", stage.name, json.dumps(dict(ctx, seconds=limit))]
    t0 = time.perf_counter()
    with log.open("w") as fh:
        fh.write(f"stage {n}: {stage.name} (limit {limit:.0f} s): {stage.proves}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True)  # fmt: skip
        try:
            rc: int | None = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            rc = None
            kill_group(proc)
    seconds = time.perf_counter() - t0
    out = Outcome(n, stage.name, "fail", "", seconds, limit, f"logs/{log.name}")
    if rc is None:
        out.reason = f"timed out after {limit:.0f} s: killed with its processes"
        return out
    result = last_result(log)
    if result is None:
        out.reason = f"exited {rc} without a result: {last_line(log)}"
        return out
    out.status, out.reason, out.details = result["status"], result["reason"], result["details"]
    return out


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the stage's process group, SIGKILL 5 s later if anything is left."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def last_result(log: Path) -> dict[str, Any] | None:
    lines = [s for s in log.read_text(errors="replace").splitlines() if s.startswith(RESULT_MARK)]
    return json.loads(lines[-1][len(RESULT_MARK) :]) if lines else None


def last_line(log: Path) -> str:
    lines = [s.strip() for s in log.read_text(errors="replace").splitlines() if s.strip()]
    return lines[-1][:300] if lines else "no output"


def tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


# -- the summary ---------------------------------------------------------------------------------
def verdict(outcomes: list[Outcome]) -> str:
    if any(o.status == "fail" for o in outcomes):
        return "FAIL"
    return "PASS" if all(o.status == "pass" for o in outcomes) else "PASS WITH SKIPS"


def summary_md(head: dict[str, Any], outcomes: list[Outcome], out: Path) -> str:
    counts = {s: sum(o.status == s for o in outcomes) for s in ("pass", "fail", "skip")}
    lines = [
        f"# sdnet GPU check: {head['verdict']}",
        "",
        f"- {head['started']}, {head['seconds']:.0f} s of the {head['budget']:.0f} s budget; "
        f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped",
        f"- device asked for: `{head['device']}`; sdnet from: {head['sdnet_from']}",
        f"- {head['machine']}",
        "",
        "| # | stage | result | seconds (limit) | reason |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        limit = f" ({o.limit:.0f})" if o.limit else ""
        reason = o.reason.replace("|", "\\|")
        lines.append(f"| {o.n} | {o.name} | {o.status} | {o.seconds:.1f}{limit} | {reason} |")
    for o in outcomes:
        if o.details or o.status == "fail":  # a skip's reason is in the table
            lines += ["", f"## {o.n}. {o.name}: {o.status}", ""]
            lines += [f"- {k}: {_text(v)}" for k, v in o.details.items()]
        if o.status == "fail" and o.log:
            lines += ["", "```text", tail(out / o.log), "```"]
    return "\n".join(lines) + "\n"


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return str(value)


def write_summary(out: Path, head: dict[str, Any], outcomes: list[Outcome]) -> str:
    doc = dict(head, stages=[asdict(o) for o in outcomes])
    (out / "summary.json").write_text(json.dumps(doc, indent=1) + "\n")
    text = summary_md(head, outcomes, out)
    (out / "summary.md").write_text(text)
    return text


def pack(out: Path, dest: Path) -> None:
    """``summary.json``, ``summary.md`` and ``gpu-check.tar.gz`` (all of ``out``) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "gpu-check.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(out, arcname="gpu-check")
        shutil.move(archive, dest / archive.name)
    for name in ("summary.json", "summary.md"):
        if (out / name).resolve() != (dest / name).resolve():
            shutil.copy2(out / name, dest / name)


# -- the run -------------------------------------------------------------------------------------
def data_folder(arg: Path | None, bundled: bool) -> Path:
    if arg is not None:
        return arg.resolve()
    if bundled:
        return ROOT / "data" / "mnist"
    if os.environ.get("SDNET_DATA"):
        return Path(os.environ["SDNET_DATA"]).resolve() / "mnist"
    return ROOT.parent / "shared" / "data" / "mnist"


def prepare_site(args: argparse.Namespace) -> Path:
    if args.site is None:
        return Path(tempfile.mkdtemp(prefix="sdnet-site-"))
    if args.site.exists() and any(args.site.iterdir()):
        raise SystemExit(f"gpu_check: error: --site {args.site} is not empty: name a new folder")
    args.site.mkdir(parents=True, exist_ok=True)
    return args.site.resolve()


def skip_reason(args: argparse.Namespace, stage: Stage, installed: bool, left: float) -> str:
    """Why ``stage`` is not run, or ``""``."""
    if not installed:
        return "the install failed"
    if args.only and stage.name not in args.only:
        return "not in --only"
    return "the budget is spent" if left < MIN_SECONDS else ""


def run_all(
    args: argparse.Namespace, out: Path, deadline: float
) -> tuple[dict[str, Any], list[Outcome]]:
    """Install (from a bundle), then every stage within its limit and before ``deadline``."""
    manifest = read_manifest()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    site = prepare_site(args) if manifest else None
    outcomes = [install(manifest, site, logs / "00-install.log")] if manifest and site else []
    installed = not outcomes or outcomes[0].status == "pass"
    data = data_folder(args.data, manifest is not None)
    env = stage_env(site, data)
    commit = (manifest or {}).get("sdnet", {}).get("commit")
    ctx = dict(device=args.device, data=str(data), root=str(ROOT), out=str(out),
               site=str(site) if site else None, smoke=args.smoke, commit=commit)  # fmt: skip
    for n, stage in enumerate(STAGES, 1):
        left = deadline - time.monotonic()
        limit = min(args.limits.get(stage.name, stage.seconds), left)
        why = skip_reason(args, stage, installed, left)
        if why:
            outcomes.append(Outcome(n, stage.name, "skip", why, 0.0, 0.0, ""))
        else:
            outcomes.append(run_stage(n, stage, limit, ctx, env, logs))
        o = outcomes[-1]
        print(f"[{n}/{len(STAGES)}] {stage.name}: {o.status} ({o.seconds:.1f} s) {o.reason}",
              flush=True)  # fmt: skip
    where = "the bundle, installed into a fresh folder" if site else "this checkout"
    if site and args.site is None:
        shutil.rmtree(site, ignore_errors=True)
    return {"sdnet_from": where, "commit": commit}, outcomes


def machine_line(outcomes: list[Outcome]) -> str:
    versions = next((o.details for o in outcomes if o.name == "versions"), {})
    keys = ("card", "cuda", "cupy", "torch", "numpy", "array_api_compat", "python", "sdnet")
    return "; ".join(f"{k} {versions[k]}" for k in keys if k in versions) or "machine unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stages:
        print(stage_table())
        return 0
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.perf_counter()
    where, outcomes = run_all(args, out, time.monotonic() + args.budget - RESERVE)
    head = dict(where, verdict=verdict(outcomes), started=started, device=args.device,
                seconds=time.perf_counter() - t0, budget=args.budget,
                machine=machine_line(outcomes))  # fmt: skip
    text = write_summary(out, head, outcomes)
    if args.pack is not None:  # before printing: the results survive a closed output
        pack(out, args.pack.resolve())
    print(text)
    return 1 if head["verdict"] == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main())
