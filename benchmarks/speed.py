"""sdnet against PyTorch on the same network, the same machine and the same threads.

For each model (ResNet-20, ResNet-110: the paper's 6n+2 design, option-A shortcuts) and input
shape (MNIST 1x28x28, CIFAR 3x32x32) it builds the network in sdnet and in PyTorch (a test
peer: ``tests/torch_reference.py``, never a dependency of sdnet), copies sdnet's initial
weights into PyTorch, and times:

* **train**: one SGD step (forward, softmax cross-entropy, backward, momentum update) at batch
  ``--batch``, at constant depth (every block computed) and with stochastic depth (linear rule,
  p_L = 0.5, dropped blocks skipped). Both libraries get the same gates, drawn on the host from
  one seeded stream, so their step times compare like for like.
* **eval**: one forward pass in evaluation mode at batch ``--eval-batch``.
* **memory**: the peak memory a training step adds, measured in a fresh process per library:
  on the CPU the rise of the peak resident set size (``ru_maxrss``) over the state after the
  model and a batch exist; on a GPU the bytes each library's memory pool holds.

The four training variants (sdnet/PyTorch x constant/stochastic depth) run interleaved, step by
step, with the order rotated every round, so slow drift of a shared machine hits all alike.
Times are medians per step; the stochastic-depth saving uses means (the gates make the step time
vary by design) and is shown next to the fraction of convolution work the gates kept.

Examples
--------
Smoke run of every code path (seconds)::

    python benchmarks/speed.py --smoke

The run recorded in ``docs/benchmarks.json`` and shown in ``docs/benchmarks.md`` (OpenBLAS
picks its own kernel; two threads for both); ``--write`` replaces the record of the same device
and thread count and rewrites the page (``--smoke`` runs are never recorded)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/speed.py --threads 2 --write

On a GPU machine, against PyTorch CUDA (eager)::

    python benchmarks/speed.py --device gpu --write

TF32 (float32 matrix products on tensor cores) is set alike for both libraries and stated in
the output and the record of a GPU run: off by default (``--tf32 on`` allows it for sdnet's
CuPy products and PyTorch's matrix products and cuDNN convolutions; PyTorch's own default
allows it in convolutions).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _records import RECORDS, recorded_command
from _tables import speed_tables
from _targets import threads_text
from render_benchmarks import publish

REPO = Path(__file__).resolve().parent.parent
SHAPES = {"mnist": (1, 28, 28), "cifar": (3, 32, 32)}
VARIANTS = ("sdnet const", "torch const", "sdnet sd", "torch sd")
P_SD = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="sdnet device: cpu, gpu, cuda:N, torch, ...")
    p.add_argument(
        "--torch-device", default=None, help="PyTorch's device (default: cuda on a GPU, else cpu)"
    )
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet110"])
    p.add_argument("--shapes", nargs="+", default=["mnist", "cifar"], choices=sorted(SHAPES))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--eval-batch", type=int, default=1000)
    p.add_argument("--steps", type=int, default=12, help="timed rounds (each runs every variant)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--eval-steps", type=int, default=3)
    p.add_argument(
        "--threads", type=int, default=None, help="cores for each library (see _set_threads)"
    )
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument(
        "--tf32", choices=("off", "on"), default="off", help="TF32 on CUDA, both libraries alike"
    )
    p.add_argument(
        "--write", action="store_true", help=f"record the run in {RECORDS.name}, rewrite the page"
    )
    p.add_argument("--records", type=Path, default=RECORDS, help="the records file (page beside)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check that it all runs")
    p.add_argument("--memory-child", nargs=3, metavar=("LIB", "MODEL", "SHAPE"), help="internal")
    args = p.parse_args(argv)
    if args.smoke:
        args.models, args.shapes = ["resnet8"], ["mnist"]
        args.batch, args.eval_batch, args.steps, args.warmup, args.eval_steps = 8, 16, 2, 1, 1
    return args


def _set_threads(threads: int | None) -> None:
    """``threads`` cores for each library, set before NumPy loads (OpenBLAS reads its variables
    once, at import): sdnet runs its image blocks in ``threads`` host threads, each calling a
    one-thread BLAS; PyTorch gets ``threads`` intra-op threads (``torch.set_num_threads``)."""
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = "1"
        os.environ["SDNET_NUM_THREADS"] = str(threads)


def _tf32(on: bool) -> dict[str, bool]:
    """Allow TF32 in float32 products (``on``) or not, alike for sdnet's CuPy backend
    (:func:`sdnet.set_tf32`) and PyTorch (matrix products and cuDNN convolutions); returns
    what each side now uses, as the output and the record state it."""
    import torch

    import sdnet

    sdnet.set_tf32(on)
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    return {
        "sdnet": sdnet.backends.tf32_enabled(),
        "torch_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "torch_cudnn": bool(torch.backends.cudnn.allow_tf32),
    }


def tf32_text(tf32: dict[str, bool]) -> str:
    """``TF32: sdnet off; PyTorch matrix products off, cuDNN convolutions off``."""
    word = {True: "on", False: "off"}
    return (
        f"TF32: sdnet {word[tf32['sdnet']]}; PyTorch matrix products "
        f"{word[tf32['torch_matmul']]}, cuDNN convolutions {word[tf32['torch_cudnn']]}"
    )


# -- the two networks ------------------------------------------------------------------------


@dataclass
class Pair:
    """The same ResNet in sdnet and in PyTorch, with one batch on each side."""

    name: str
    shape: str
    sd: Any  # sdnet model, constant depth
    sd_drop: Any  # sdnet model, p_L = 0.5, same weights
    tm: Any  # torch model, constant depth
    tm_drop: Any
    x: Any
    y: Any
    tx: Any
    ty: Any
    opt: dict[str, Any] = field(default_factory=dict)


def _torch_device(args: argparse.Namespace, backend: Any) -> str:
    if args.torch_device:
        return args.torch_device
    return "cuda" if "cupy" in str(backend) or "cuda" in str(args.device) else "cpu"


def build_pair(name: str, shape: str, args: argparse.Namespace, tdev: str) -> Pair:
    import numpy as np
    import torch
    from torch_reference import TorchResNet, load_numpy_state

    import sdnet
    from sdnet.optim import SGD

    c, h, w = SHAPES[shape]
    depth = int(name.removeprefix("resnet"))
    models = [
        sdnet.build_model(name, num_classes=10, in_channels=c, p_last=p, device=args.device)
        for p in (1.0, P_SD)
    ]
    state = {k: models[0].backend.to_numpy(v) for k, v in models[0].state_dict().items()}
    models[1].load_state_dict(state)
    tms = []
    for p in (1.0, P_SD):
        tm = TorchResNet(depth, in_channels=c, p_last=p)
        load_numpy_state(tm, state)
        tms.append(tm.to(tdev).train())
    rng = np.random.default_rng(0)
    x_host = rng.standard_normal((args.batch, c, h, w)).astype(np.float32)
    y_host = rng.integers(0, 10, args.batch)
    be = models[0].backend
    pair = Pair(
        name,
        shape,
        *models,
        *tms,
        be.asarray(x_host, "float32"),
        y_host,
        torch.from_numpy(x_host).to(tdev),
        torch.from_numpy(y_host).to(tdev),
    )
    hyper = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)
    for key, m in (("sdnet const", models[0]), ("sdnet sd", models[1])):
        pair.opt[key] = SGD(m.named_parameters(), **hyper)
    for key, m in (("torch const", tms[0]), ("torch sd", tms[1])):
        pair.opt[key] = torch.optim.SGD(m.parameters(), **hyper)
    return pair


def sdnet_step(model: Any, opt: Any, x: Any, y: Any, gates: list[bool] | None) -> None:
    from sdnet.functional import softmax_cross_entropy, softmax_cross_entropy_backward

    model.zero_grad()
    logits, backprop = model(x, train=True, gates=gates)
    _, saved = softmax_cross_entropy(logits, y)
    backprop(softmax_cross_entropy_backward(saved))
    opt.step()
    model.backend.synchronize()


def torch_step(model: Any, opt: Any, x: Any, y: Any, gates: list[bool] | None) -> None:
    import torch

    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x, gates), y)
    loss.backward()
    opt.step()
    if x.is_cuda:
        torch.cuda.synchronize()


# -- measurements ----------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    shape: str
    train: dict[str, list[float]]
    kept: list[float]  # fraction of convolution work the drawn gates kept, per SD step
    expected_kept: float
    eval: dict[str, list[float]]
    eval_faults: dict[str, list[int]]  # minor page faults of each evaluation pass
    memory: dict[str, float | None]


def _labels(pair: Pair) -> Any:
    """The labels on sdnet's device (int64, like the training loop's batches)."""
    be = pair.sd.backend
    return be.xp.asarray(pair.y, dtype=be.xp.int64, device=be.device)


def measure(name: str, shape: str, args: argparse.Namespace, tdev: str) -> Result:
    import numpy as np

    pair = build_pair(name, shape, args, tdev)
    y_dev = _labels(pair)
    work = _block_work(pair.sd)
    expected = float(np.dot(work, pair.sd_drop.survival) / np.sum(work))
    gate_rng = np.random.default_rng(1)  # one host stream: the same gates for both libraries

    def run(variant: str, gates: list[bool] | None) -> float:
        t0 = time.perf_counter()
        if variant == "sdnet const":
            sdnet_step(pair.sd, pair.opt[variant], pair.x, y_dev, None)
        elif variant == "sdnet sd":
            sdnet_step(pair.sd_drop, pair.opt[variant], pair.x, y_dev, gates)
        elif variant == "torch const":
            torch_step(pair.tm, pair.opt[variant], pair.tx, pair.ty, None)
        else:
            torch_step(pair.tm_drop, pair.opt[variant], pair.tx, pair.ty, gates)
        return time.perf_counter() - t0

    train: dict[str, list[float]] = {v: [] for v in VARIANTS}
    kept: list[float] = []
    for i in range(args.warmup + rounds(name, args)):
        gates = [bool(g) for g in gate_rng.random(len(work)) < pair.sd_drop.survival]
        order = VARIANTS[i % 4 :] + VARIANTS[: i % 4]
        times = {v: run(v, gates if v.endswith("sd") else None) for v in order}
        if i >= args.warmup:
            for v, t in times.items():
                train[v].append(t)
            kept.append(float(np.dot(work, gates) / np.sum(work)))

    evals, faults = eval_passes(pair, shape, args, tdev)
    memory = {
        lib: (_memory(lib, name, shape, args) if args.memory else None)
        for lib in ("sdnet", "torch")
    }
    return Result(name, shape, train, kept, expected, evals, faults, memory)


def eval_passes(
    pair: Pair, shape: str, args: argparse.Namespace, tdev: str
) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Seconds and minor page faults of each timed evaluation pass, per library.

    A minor fault is a page the process touches for the first time (a fresh page from the
    kernel): a library that allocates its large activations anew on every pass pays for them
    here, at a cost that grows with the machine's load.
    """
    import numpy as np
    import torch

    c, h, w = SHAPES[shape]
    xe = np.random.default_rng(2).standard_normal((args.eval_batch, c, h, w)).astype(np.float32)
    xe_sd, xe_t = pair.sd.backend.asarray(xe, "float32"), torch.from_numpy(xe).to(tdev)
    pair.tm.eval()
    evals: dict[str, list[float]] = {"sdnet": [], "torch": []}
    faults: dict[str, list[int]] = {"sdnet": [], "torch": []}
    for i in range(1 + args.eval_steps):
        for lib in ("sdnet", "torch") if i % 2 == 0 else ("torch", "sdnet"):
            f0, t0 = _minor_faults(), time.perf_counter()
            if lib == "sdnet":
                pair.sd(xe_sd, train=False, grad=False)
                pair.sd.backend.synchronize()
            else:
                with torch.inference_mode():
                    pair.tm(xe_t)
                if xe_t.is_cuda:
                    torch.cuda.synchronize()
            if i:  # the first pass of each library is a warm-up
                evals[lib].append(time.perf_counter() - t0)
                faults[lib].append(_minor_faults() - f0)
    return evals, faults


def _minor_faults() -> int:
    """Minor page faults of this process so far (all threads)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def rounds(name: str, args: argparse.Namespace) -> int:
    """Timed rounds for a model: ``--steps`` up to ResNet-20, fewer (same total work) deeper."""
    depth = int(name.removeprefix("resnet"))
    return args.steps if depth <= 20 else max(5, -(-args.steps * 20 // depth))


def _block_work(model: Any) -> list[float]:
    """Multiply-adds of each residual block's branch, up to one common factor.

    A 3x3 convolution costs O*C*9 per output pixel; a stage with 2^s times the first stage's
    channels works on maps 2^s times smaller each way, so its pixel count scales as 1/4^s.
    """
    shapes = [
        [p.value.shape for _, p in b.named_parameters() if p.value.ndim == 4] for b in model.blocks
    ]
    base = min(s[0] for block in shapes for s in block)
    return [sum(o * c * kh * kw / (o / base) ** 2 for o, c, kh, kw in block) for block in shapes]


def _memory(lib: str, name: str, shape: str, args: argparse.Namespace) -> float | None:
    """Peak bytes a training step adds, measured in a fresh process (see ``memory_child``)."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--memory-child",
        lib,
        name,
        shape,
        "--device",
        args.device,
        "--batch",
        str(args.batch),
    ]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    if args.torch_device:
        cmd += ["--torch-device", args.torch_device]
    cmd += ["--tf32", args.tf32]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        print(f"memory probe failed: {out.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"])


def memory_child(args: argparse.Namespace) -> int:
    import sdnet

    lib, name, shape = args.memory_child
    _tf32(args.tf32 == "on")
    backend = sdnet.get_backend(args.device)
    tdev = _torch_device(args, backend)
    pair = build_pair(name, shape, args, tdev)
    y_dev = _labels(pair)
    on_gpu = tdev.startswith("cuda") if lib == "torch" else "cupy" in str(backend)
    base = _gpu_pool_bytes(lib) if on_gpu else _reset_peak_rss()
    for _ in range(3):
        if lib == "sdnet":
            sdnet_step(pair.sd, pair.opt["sdnet const"], pair.x, y_dev, None)
        else:
            torch_step(pair.tm, pair.opt["torch const"], pair.tx, pair.ty, None)
    peak = (_gpu_pool_bytes(lib) if on_gpu else _proc_status_bytes("VmHWM")) - base
    print(json.dumps({"peak_bytes": peak}))
    return 0


def _proc_status_bytes(key: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from ``/proc/self/status``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise OSError(f"{key} not in /proc/self/status")


def _reset_peak_rss() -> int:
    """Reset this process's peak RSS (a fresh process inherits its parent's) and return RSS."""
    Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM := VmRSS
    return _proc_status_bytes("VmRSS")


def _gpu_pool_bytes(lib: str) -> int:
    """Bytes held by the library's GPU memory pool (its high-water mark: pools keep blocks)."""
    if lib == "torch":
        import torch

        return int(torch.cuda.max_memory_reserved())
    import cupy

    return int(cupy.get_default_memory_pool().total_bytes())


# -- record --------------------------------------------------------------------------------


def _ms(v: list[float], stat: str = "median") -> float:
    return 1e3 * (statistics.median(v) if stat == "median" else statistics.fmean(v))


def result_row(r: Result) -> dict[str, Any]:
    """One model and input of a speed record (the layout: ``_tables.speed_tables``)."""

    def lib(name: str) -> dict[str, Any]:
        const, sd, peak = r.train[f"{name} const"], r.train[f"{name} sd"], r.memory[name]
        return {
            "train_ms": _ms(const),
            "train_sd_ms": _ms(sd),
            "eval_ms": _ms(r.eval[name]),
            "eval_faults": int(statistics.median(r.eval_faults[name])),
            "sd_saving": _ms(sd, "mean") / _ms(const, "mean"),
            "peak_mib": None if peak is None else peak / 2**20,
        }

    return {
        "model": r.name,
        "input": "x".join(map(str, SHAPES[r.shape])),
        "rounds": len(r.kept),
        "sdnet": lib("sdnet"),
        "torch": lib("torch"),
        "work_kept": statistics.fmean(r.kept),
        "work_expected": r.expected_kept,
    }


def speed_record(
    results: list[Result],
    args: argparse.Namespace,
    info: dict[str, str],
    card: str | None,
    argv: list[str],
) -> dict[str, Any]:
    """The record of this run: one per device (the card on a GPU) and thread count."""
    from _machine import command_env, sdnet_commit

    prefix = command_env(threads=False)  # the run sets the thread variables itself
    machine = dict(info, gpu=card) if card else info
    return {
        "kind": "speed",
        "key": f"gpu: {card}" if card else f"cpu, {threads_text(args.threads)}",
        "device": "gpu" if card else "cpu",
        "commit": sdnet_commit(),
        "command": recorded_command("benchmarks/speed.py", argv, prefix),
        "machine": machine,
        "settings": {
            "models": args.models,
            "inputs": ["x".join(map(str, SHAPES[s])) for s in args.shapes],
            "batch": args.batch,
            "eval_batch": args.eval_batch,
            "p_last": P_SD,
            "steps": args.steps,
            "warmup": args.warmup,
            "eval_steps": args.eval_steps,
            "threads": args.threads,
        },
        "results": [result_row(r) for r in results],
    }


def _card(backend: Any, tdev: str) -> str | None:
    """The GPU of this run (sdnet's, else PyTorch's), ``None`` on the CPU."""
    import torch
    from _machine import gpu_name

    from_torch = torch.cuda.get_device_name(tdev) if tdev.startswith("cuda") else None
    return gpu_name(backend) or from_torch


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _set_threads(args.threads)
    sys.path.insert(0, str(REPO / "tests"))  # the PyTorch peer lives with the tests
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args)
    from _machine import load_average, machine_info

    import sdnet

    backend = sdnet.get_backend(args.device)
    tf32 = _tf32(args.tf32 == "on")
    tdev = _torch_device(args, backend)
    info = machine_info(backend)
    info.update(
        torch=torch.__version__,
        torch_device=tdev,
        torch_threads=str(torch.get_num_threads()),
        sdnet_threads=str(sdnet.get_num_threads()),
    )
    print(
        f"sdnet {info['sdnet']} on {info['backend']}, PyTorch {info['torch']} on {tdev}; "
        f"{info['cpu']}; {info['threads']}",
        file=sys.stderr,
    )
    results = []
    for name in args.models:
        for shape in args.shapes:
            print(f"measuring {name} {shape} ...", file=sys.stderr, flush=True)
            results.append(measure(name, shape, args, tdev))
    info["load"] = f"{info['load']} at the start, {load_average()} at the end"
    argv = argv if argv is not None else sys.argv[1:]
    card = _card(backend, tdev)
    record = speed_record(results, args, info, card, argv)
    if card:  # TF32 changes float32 products on a GPU only: stated for both libraries
        record["settings"]["tf32"] = tf32
        print(tf32_text(tf32))
    print("\n".join(speed_tables(record)))
    publish(record, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
