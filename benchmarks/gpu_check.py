"""One command that checks sdnet on a GPU machine and prints what to paste into docs/gpu.md.

Steps:

1. Print the machine: card, CUDA runtime and driver, CuPy, NumPy, array-api-compat, sdnet.
2. Run the repository's GPU tests, ``pytest -m gpu -q`` (the ``backend`` fixture's ``"gpu"``
   parameter carries the ``gpu`` marker), in a subprocess.
3. Train a ResNet-20 with stochastic depth (linear rule, p_L = 0.5) on real MNIST for
   ``--steps`` steps (batch 128, SGD lr 0.1, momentum 0.9) on ``--device``; print the loss
   every 50 steps, steps per second, and the accuracy on the 10 000 test images in evaluation
   mode.
4. Repeat the first 5 steps on NumPy (CPU) with the same seed, hence the same initial weights,
   batches and gates, and compare the two loss trajectories (they should agree to float32
   tolerance).
5. Train through ``sdnet.train(device=...)`` (one epoch of ``--train-images`` images: the
   loader keeps the data on the device, checkpoints are written), then load the saved weights
   on the CPU and compare evaluation logits with the device model's.

On a GPU machine::

    pip install -e '.[test,gpu]'          # or '.[test,gpu-cuda13]' for CUDA 13
    python benchmarks/gpu_check.py --write

``--write`` appends the output, dated, to docs/gpu.md. The script also runs on the CPU as a
dry run of its own code (the result is labelled as such, never as a GPU result)::

    python benchmarks/gpu_check.py --device cpu --steps 30 --skip-pytest

``--test-limit N`` evaluates on the first N test images only (quicker dry runs).
MNIST is read from ``--data``, else ``$SDNET_DATA/mnist``, else ``../shared/data/mnist``
relative to the repository root (the four standard ``*-idx?-ubyte.gz`` files).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import sdnet
import sdnet.functional as F
from sdnet.data import load_mnist

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "gpu.md"
MEAN, STD = 0.1307, 0.3081
COMPARE_STEPS = 5
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
LOSS_RTOL = 1e-3  # relative; float32 GPU vs CPU after a few SGD steps is far inside this


class Log:
    """Print lines and keep them for ``--write``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.extend(text.splitlines() or [""])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="gpu", help="sdnet device string (default: gpu)")
    p.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--p-last", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--data", type=Path, default=None, help="directory of the MNIST IDX files")
    p.add_argument(
        "--test-limit", type=int, default=None, help="evaluate on the first N test images only"
    )
    p.add_argument("--skip-pytest", action="store_true", help="do not run pytest -m gpu")
    p.add_argument("--skip-compare", action="store_true", help="no NumPy comparison run")
    p.add_argument("--skip-train-api", action="store_true", help="no sdnet.train check")
    p.add_argument("--train-images", type=int, default=4096, help="sdnet.train check: images")
    p.add_argument("--write", action="store_true", help=f"append the output to {DOC.name}")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or args.log_every < 1:
        p.error("--steps, --batch and --log-every must be >= 1")
    return args


def data_dir(arg: Path | None) -> tuple[Path, str]:
    """The MNIST folder, and how the log names it (never by a path of this machine: the log
    goes onto a docs page with ``--write``)."""
    if arg is not None:
        return arg, "the --data folder"
    if os.environ.get("SDNET_DATA"):
        return Path(os.environ["SDNET_DATA"]) / "mnist", "$SDNET_DATA/mnist"
    return (REPO / ".." / "shared" / "data" / "mnist").resolve(), "../shared/data/mnist"


def load(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Normalised float32 images (N, 1, 28, 28) and int64 labels (N,), on the host."""
    images, labels = load_mnist(directory, split)
    x = (images.astype(np.float32) / 255.0 - MEAN) / STD
    return x[:, None, :, :].astype(np.float32), labels


# -- 1. the machine ------------------------------------------------------------------------
def describe(backend: Any, log: Log) -> None:
    import array_api_compat

    log(f"sdnet {sdnet.__version__}, Python {platform.python_version()}, {platform.platform()}")
    log(f"NumPy {np.__version__}, array-api-compat {array_api_compat.__version__}")
    log(f"backend: {backend}")
    if backend.name == "cupy":
        import cupy

        rt = cupy.cuda.runtime
        idx = backend.device.id
        props = rt.getDeviceProperties(idx)
        log(
            f"card: {props['name'].decode()}, compute capability {props['major']}."
            f"{props['minor']}, {props['totalGlobalMem'] / 2**30:.1f} GiB"
        )
        log(
            f"CuPy {cupy.__version__}, CUDA runtime {_cuda_version(rt.runtimeGetVersion())}, "
            f"driver supports CUDA {_cuda_version(rt.driverGetVersion())}"
        )
    elif backend.name == "torch":
        import torch

        log(f"PyTorch {torch.__version__}, CUDA {torch.version.cuda}")
        if str(backend.device).startswith("cuda"):
            log(f"card: {torch.cuda.get_device_name(backend.device)}")
    else:
        try:
            import cupy

            log(f"CuPy {cupy.__version__} installed, not used (device {backend.device})")
        except ImportError:
            log("CuPy: not installed")
    smi = _nvidia_smi()
    if smi:
        log(f"nvidia-smi: {smi}")
    if backend.name == "numpy":
        log(f"CPU: {_cpu_model()}")


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def _nvidia_smi() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip().replace("\n", "; ") if out.returncode == 0 else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical CPUs"
    except OSError:
        pass
    return f"{platform.processor() or 'unknown'}, {os.cpu_count()} logical CPUs"


# -- 2. the GPU tests ----------------------------------------------------------------------
def run_pytest(log: Log, on_gpu: bool) -> bool:
    """``pytest -m gpu -q``; on a GPU, a run in which no test passed (all skipped) fails."""
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q"]
    log(f"$ {' '.join(cmd[2:])}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    out = (proc.stdout + proc.stderr).strip().splitlines()
    for line in out[-30:]:  # the summary; failures print their tracebacks above it
        log(f"  {line}")
    log(f"pytest exit code {proc.returncode} ({time.perf_counter() - t0:.0f} s)")
    if proc.returncode == 5:
        log("  (no test carries the gpu marker here: nothing was checked)")
    summary = out[-1] if out else ""
    if proc.returncode == 0 and " passed" not in summary:
        log("  (no GPU test ran: every one was skipped; the skip reasons say why)")
        return not on_gpu
    return proc.returncode == 0


# -- 3. training ---------------------------------------------------------------------------
def batch_order(n: int, steps: int, batch: int, seed: int) -> np.ndarray:
    """(steps, batch) sample indices: seeded host permutations, one per epoch."""
    rng = np.random.default_rng(seed)
    need = steps * batch
    perms = [rng.permutation(n) for _ in range(-(-need // n))]
    return np.concatenate(perms)[:need].reshape(steps, batch)


def train(
    device: str,
    steps: int,
    x: np.ndarray,
    y: np.ndarray,
    args: argparse.Namespace,
    log: Log | None,
) -> dict[str, Any]:
    """Train a ResNet-20; returns the model, the first steps' losses, gates and state, and
    timings."""
    model = sdnet.build_model(
        "resnet20",
        num_classes=10,
        in_channels=1,
        p_last=args.p_last,
        device=device,
        seed=args.seed,
    )
    opt = sdnet.SGD(model.named_parameters(), lr=args.lr, momentum=args.momentum)
    be = model.backend
    order = batch_order(x.shape[0], steps, args.batch, args.seed)
    losses: list[Any] = []  # 0-d device arrays; read back once per log interval
    gates: list[list[Any]] = []
    snapshot: dict[str, np.ndarray] = {}
    warm = min(10, steps - 1)  # steps excluded from the steady-state rate (kernel compilation)
    be.synchronize()
    t0 = t_warm = time.perf_counter()
    for step in range(steps):
        if step == warm:
            be.synchronize()
            t_warm = time.perf_counter()
        idx = order[step]
        xb, yb = be.asarray(x[idx]), be.asarray(y[idx])
        model.zero_grad()
        logits, backprop = model(xb, train=True)
        loss, saved = F.softmax_cross_entropy(logits, yb)
        backprop(F.softmax_cross_entropy_backward(saved))
        opt.step()
        losses.append(loss)
        gates.append(list(model.last_gates or []))
        if step + 1 == min(COMPARE_STEPS, steps):
            snapshot = model.state_dict()  # host copy, for the comparison with NumPy
        if log is not None and ((step + 1) % args.log_every == 0 or step + 1 == steps):
            window = losses[-args.log_every :]
            mean = float(be.to_numpy(sum(window[1:], window[0]))) / len(window)
            log(
                f"  step {step + 1:4d}  loss {mean:.4f} (mean of last {len(window)})  "
                f"blocks kept {model.kept_fraction():.2f}"
            )
    be.synchronize()
    t1 = time.perf_counter()
    return {
        "model": model,
        "losses": [float(be.to_numpy(v)) for v in losses[:COMPARE_STEPS]],
        "gates": gates[:COMPARE_STEPS],
        "snapshot": snapshot,
        "seconds": t1 - t0,
        "warm": warm,
        "steady": (steps - warm) / (t1 - t_warm) if warm > 0 and t1 > t_warm else None,
    }


def accuracy(model: Any, x: np.ndarray, y: np.ndarray, batch: int = 1000) -> float:
    """Top-1 accuracy in evaluation mode; the count stays on the device until the end."""
    be = model.backend
    xp = be.xp
    correct = None
    for i in range(0, x.shape[0], batch):
        logits, _ = model(be.asarray(x[i : i + batch]), train=False)
        hit = xp.astype(xp.argmax(logits, axis=1) == be.asarray(y[i : i + batch]), xp.int64)
        n = xp.sum(hit)
        correct = n if correct is None else correct + n
    return float(be.to_numpy(correct)) / x.shape[0]


# -- 4. the comparison -------------------------------------------------------------------------
def compare(run: dict[str, Any], ref: dict[str, Any], log: Log) -> bool:
    a, b = np.array(run["losses"]), np.array(ref["losses"])
    rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-12)
    log(f"  step  {'device loss':>12}  {'numpy loss':>12}  {'rel diff':>9}")
    for i, (u, v, r) in enumerate(zip(a, b, rel, strict=True)):
        log(f"  {i + 1:4d}  {u:12.6f}  {v:12.6f}  {r:9.2e}")
    same_gates = [list(map(bool, g)) for g in run["gates"]] == [
        list(map(bool, g)) for g in ref["gates"]
    ]
    sa, sb = run["snapshot"], ref["snapshot"]
    floats = [k for k in sa if np.asarray(sa[k]).dtype.kind == "f"]
    wdiff = max(float(np.max(np.abs(np.asarray(sa[k], dtype=np.float64) - sb[k]))) for k in floats)
    ok = bool(np.all(rel <= LOSS_RTOL)) and same_gates
    log(
        f"  gates identical: {same_gates}; max |weight diff| after {len(a)} steps: {wdiff:.2e}; "
        f"max relative loss diff {rel.max():.2e} (tolerance {LOSS_RTOL:g}): "
        f"{'OK' if ok else 'MISMATCH'}"
    )
    return ok


def _on_gpu(backend: Any) -> bool:
    return backend.name == "cupy" or str(backend.device).startswith("cuda")


def write_doc(lines: list[str], backend: Any) -> None:
    on_gpu = _on_gpu(backend)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = "GPU check" if on_gpu else "CPU dry run of the script (not a GPU result)"
    env = [f"{k}={os.environ[k]}" for k in THREAD_VARS if k in os.environ]
    argv = [shlex.quote(a) for a in sys.argv[1:]]
    cmd = " ".join(env + ["python benchmarks/gpu_check.py"] + argv)
    block = [f"### {title}, {stamp}", "", f"Command: `{cmd.strip()}`", "", "```text"]
    block += [line.replace(f"{REPO}/", "") for line in lines] + ["```", ""]  # relative paths
    text = DOC.read_text() if DOC.exists() else "# sdnet on the GPU\n"
    DOC.write_text(text.rstrip("\n") + "\n\n" + "\n".join(block))
    print(f"appended to {DOC}", file=sys.stderr)


def check_train_api(args: argparse.Namespace, directory: Path, log: Log) -> bool:
    """``sdnet.train`` on the device (resident data, checkpoints), then the weights it saved
    loaded on the CPU must give the same evaluation logits (a GPU checkpoint loads on a CPU)."""
    import tempfile

    n = args.train_images
    log(f"\n== sdnet.train(device={args.device!r}): 1 epoch of {n} images, then load on cpu")
    with tempfile.TemporaryDirectory() as tmp:
        result = sdnet.train(
            device=args.device, epochs=1, limit_train=n, limit_test=args.test_limit or 1000,
            data_dir=str(directory), download=False, progress=False, run_dir=f"{tmp}/run",
        )  # fmt: skip
        h = result.history[-1]
        log(
            f"  test accuracy {100 * result.test_accuracy:.2f}%, "
            f"{h['images_per_second']:.0f} training images/s"
        )
        cpu = sdnet.load(f"{tmp}/run/model.npz", device="cpu")
    x = load(directory, "test")[0][:256]  # (256, 1, 28, 28) normalized
    mine, _ = result.model(result.model.backend.asarray(x, "float32"), train=False)
    theirs, _ = cpu(cpu.backend.asarray(x, "float32"), train=False)
    diff = float(np.max(np.abs(result.model.backend.to_numpy(mine) - theirs)))
    good = diff < 1e-3
    log(f"  device vs cpu-loaded logits: max |diff| {diff:.2e} ({'ok' if good else 'MISMATCH'})")
    return good


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = Log()
    try:
        backend = sdnet.get_backend(args.device)
    except (sdnet.BackendUnavailable, ValueError) as why:
        print(f"device {args.device!r} unavailable: {why}", file=sys.stderr)
        return 2
    ok = True
    log(f"== machine ({dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')})")
    describe(backend, log)

    if not args.skip_pytest:
        log("\n== tests")
        ok &= run_pytest(log, _on_gpu(backend))

    directory, shown = data_dir(args.data)
    log(f"\n== training ResNet-20, p_L={args.p_last}, linear rule, on {backend}")
    log(
        f"  MNIST from {shown}; {args.steps} steps, batch {args.batch}, SGD lr {args.lr} "
        f"momentum {args.momentum}, seed {args.seed}"
    )
    x_train, y_train = load(directory, "train")
    x_test, y_test = load(directory, "test")
    if args.test_limit is not None:
        x_test, y_test = x_test[: args.test_limit], y_test[: args.test_limit]
    run = train(args.device, args.steps, x_train, y_train, args, log)
    rate = args.steps / run["seconds"]
    steady = run["steady"] and f", {run['steady']:.2f} steps/s after the first {run['warm']}"
    log(f"  {args.steps} steps in {run['seconds']:.1f} s: {rate:.2f} steps/s overall{steady or ''}")
    t0 = time.perf_counter()
    acc = accuracy(run["model"], x_test, y_test)
    log(f"  test accuracy {100 * acc:.2f}% on {x_test.shape[0]} images, eval mode")
    log(f"  ({time.perf_counter() - t0:.1f} s for the test set in batches of 1000)")

    if not args.skip_compare:
        n = min(COMPARE_STEPS, args.steps)
        log(f"\n== first {n} steps again on numpy (cpu), same seed: same weights, batches, gates")
        ref = train("cpu", n, x_train, y_train, args, None)
        ok &= compare(run, ref, log)

    if not args.skip_train_api:
        ok &= check_train_api(args, directory, log)

    log(f"\n== {'all checks passed' if ok else 'SOME CHECKS FAILED'}")
    if args.write:
        write_doc(log.lines, backend)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
