"""The stages of ``gpu_check.py`` that train: host syncs, GPU against NumPy, resume across
devices, a two-worker sweep (see ``gpu_stages.py`` for the protocol).

They run :func:`sdnet.train` itself and watch it from outside, through three public seams:
``Loader.batches`` (each training batch, to open a window around a step or to stop a run),
``Model.draw_gates`` (the gates of each step) and the run directory's ``metrics.jsonl`` (each
step's loss, with ``log_every=1``). Nothing in sdnet knows it is being checked.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gpu_stages import Checks, Ctx, Fail, Result, Skip, device_backend, dry_run, on_cuda

LOSS_RTOL = 1e-3  # float32 on two BLAS libraries after a few SGD steps differs by about 1e-5
WARM_STEPS = 3  # the first steps compile kernels and grow memory pools: not steady


def sizes(ctx: Ctx) -> dict[str, Any]:
    """The network and batch: ResNet-20 at batch 128 (the paper's), tiny with ``--smoke``."""
    if ctx.smoke:
        return dict(model="resnet8", batch_size=16, eval_batch_size=64, limit_test=64)
    return dict(model="resnet20", batch_size=128, eval_batch_size=500, limit_test=500)


def options(ctx: Ctx, steps: int, **more: Any) -> dict[str, Any]:
    """Options of :func:`sdnet.train`: MNIST from the bundle, ``steps`` steps per epoch."""
    base = sizes(ctx)
    opts = dict(base, dataset="mnist", data_dir=ctx.data, download=False, progress=False, seed=0)
    opts.update(epochs=1, log_every=1, limit_train=steps * base["batch_size"])
    return dict(opts, **more)


@contextlib.contextmanager
def around_training_batches(hook: Callable[[int, Any], Any]) -> Iterator[None]:
    """Enter ``hook(step, loader)`` (a context manager; ``step`` counts from 1) before the
    training loader makes each batch, and leave it when the loop asks for the next one: the
    window holds the batch's making and the whole step that uses it. Steps are counted across
    epochs."""
    from sdnet.data import Loader

    real, made, count = Loader.batches, [], [0]  # count: training batches asked for so far

    def batches(self: Any, plan: Any, start: int = 0) -> Iterator[Any]:
        inner = real(self, plan, start)
        if not self.shuffle:  # evaluation batches are not watched
            yield from inner
            return
        while True:
            count[0] += 1
            with hook(count[0], self):
                try:
                    batch = next(inner)
                except StopIteration:
                    count[0] -= 1
                    return
                yield batch

    def tracked(self: Any, plan: Any, start: int = 0) -> Iterator[Any]:
        gen = batches(self, plan, start)
        made.append(gen)
        return gen

    Loader.batches = tracked  # type: ignore[method-assign]
    try:
        yield
    finally:
        Loader.batches = real  # type: ignore[method-assign]
        for gen in made:  # leave any window a failed run left open
            gen.close()


@contextlib.contextmanager
def recorded_gates() -> Iterator[list[list[bool]]]:
    """The gates of every training pass, as drawn (``Model.draw_gates``)."""
    from sdnet.models.base import Model

    real, seen = Model.draw_gates, []

    def draw(self: Any, batch_size: int) -> list[Any]:
        gates = real(self, batch_size)
        seen.append([bool(g) for g in gates])
        return gates

    Model.draw_gates = draw  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        Model.draw_gates = real  # type: ignore[method-assign]


def step_losses(run_dir: Path) -> list[float]:
    """Each step's loss from ``metrics.jsonl`` (written with ``log_every=1``)."""
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if r.get("type") == "step"]


def rel_diff(a: list[float], b: list[float]) -> float:
    if len(a) != len(b) or not a:
        return float("inf")
    return max(abs(u - v) / max(abs(v), 1e-12) for u, v in zip(a, b, strict=True))


def weight_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest difference of the float arrays of two state dicts, relative to the largest
    weight (host NumPy arrays)."""
    import numpy as np

    floats = [k for k in a if np.asarray(a[k]).dtype.kind == "f"]
    scale = max(float(np.max(np.abs(np.asarray(b[k])))) for k in floats)
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - b[k]))) for k in floats) / scale


# -- 3. no host syncs in steady steps --------------------------------------------------------
def stage_syncs(ctx: Ctx) -> Result:
    """Steady training steps under ``cupyx.allow_synchronize(False)``, crop+flip on."""
    backend = device_backend(ctx)
    if backend.name != "cupy":
        raise Skip(f"needs CuPy (cupyx.allow_synchronize); the device is {backend}")
    import cupy
    import cupyx

    if not hasattr(cupyx, "allow_synchronize"):  # deprecated since CuPy 10; counted only
        reason, details = steady_syncs(ctx, backend, None, RuntimeError)
        details["note"] = "this CuPy has no allow_synchronize: the backend's transfers counted"
        return reason, details
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # allow_synchronize is deprecated, still there
        try:
            with cupyx.allow_synchronize(False):
                float(cupy.ones(2).sum())
            raise Fail("cupyx.allow_synchronize(False) let a sync through: it cannot check")
        except cupyx.DeviceSynchronized:
            pass
    forbid = lambda: cupyx.allow_synchronize(False)  # noqa: E731
    return steady_syncs(ctx, backend, forbid, cupyx.DeviceSynchronized)


def steady_step_numbers(steps: int, every: int) -> list[int]:
    """Steps that neither warm up nor read the deferred flags (every ``every`` steps)."""
    return [s for s in range(WARM_STEPS + 1, steps + 1) if s % every != 0]


def steady_syncs(
    ctx: Ctx, backend: Any, forbid: Callable[[], Any] | None, synced: type[BaseException]
) -> Result:
    """Train with crop and flip, counting the transfers each steady step makes (and, on CuPy,
    failing at the first sync: ``forbid()`` raises ``synced``). No sync, no copy to the host,
    no wait may happen in a steady step."""
    import sdnet
    import sdnet.training.data as data_mod
    from sdnet.training.guard import CHECK_EVERY_ON_DEVICE

    steps = 2 * CHECK_EVERY_ON_DEVICE + 4
    steady = set(steady_step_numbers(steps, CHECK_EVERY_ON_DEVICE))
    counts = {"syncs": 0, "host->device copies": 0, "steps": 0}
    seen: dict[str, Any] = {}

    def window(step: int, loader: Any) -> Any:
        seen.update(crop=loader.crop_pad, flip=loader.hflip, resident=loader.resident)
        if step not in steady:
            return contextlib.nullcontext()
        counts["steps"] += 1
        stack = contextlib.ExitStack()
        stack.enter_context(counting(counts))
        if forbid is not None:
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
            stack.enter_context(forbid())
        return stack

    real_aug = data_mod.augmentation
    data_mod.augmentation = lambda cfg: dict(real_aug(cfg), hflip=True)  # flips on MNIST too
    opts = options(ctx, steps, device=ctx.device, augment=True, log_every=10**6)
    try:
        with tempfile.TemporaryDirectory() as tmp, around_training_batches(window):
            sdnet.train(**opts, run_dir=f"{tmp}/run")
    except synced as exc:
        raise Fail(f"a host sync in a steady step: {where_synced(exc)}") from exc
    finally:
        data_mod.augmentation = real_aug
    return syncs_result(counts, seen, backend)


def syncs_result(counts: dict[str, int], seen: dict[str, Any], backend: Any) -> Result:
    checks = Checks()
    checks.add("crop and flip were on", bool(seen.get("crop")) and bool(seen.get("flip")))
    checks.add("steady steps were watched", counts["steps"] > 0, str(counts["steps"]))
    checks.add("no sync and no copy to the host in them", counts["syncs"] == 0,
               f"{counts['syncs']} in {counts['steps']} steps")  # fmt: skip
    details = dict(counts, **{"data on the device": seen.get("resident")}, **dry_run(backend))
    return checks.done(f"{counts['steps']} steady steps with crop+flip: no host sync", details)


@contextlib.contextmanager
def counting(counts: dict[str, int]) -> Iterator[None]:
    """Count the backend's device-to-host copies and waits (syncs) and its host-to-device
    copies while the window is open."""
    from sdnet.backends import Backend

    real = {k: getattr(Backend, k) for k in ("to_numpy", "synchronize", "asarray")}

    def counted(key: str, name: str) -> Callable[..., Any]:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            counts[key] += 1
            return real[name](self, *args, **kwargs)

        return call

    Backend.to_numpy = counted("syncs", "to_numpy")  # type: ignore[method-assign]
    Backend.synchronize = counted("syncs", "synchronize")  # type: ignore[method-assign]
    Backend.asarray = counted("host->device copies", "asarray")  # type: ignore[method-assign]
    try:
        yield
    finally:
        for name, fn in real.items():
            setattr(Backend, name, fn)


def where_synced(exc: BaseException) -> str:
    """The innermost sdnet frame of the traceback, and the exception."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "sdnet" in f.filename]
    at = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} ({frames[-1].name})"
    return f"{type(exc).__name__}{at if frames else ''}: {exc}"


# -- 4. the GPU against NumPy ------------------------------------------------------------------
def recorded_run(opts: dict[str, Any], device: str, run_dir: Path) -> dict[str, Any]:
    """:func:`sdnet.train` on ``device``: each step's loss and gates, the final weights."""
    import sdnet

    with recorded_gates() as gates:
        result = sdnet.train(**opts, device=device, run_dir=str(run_dir))
    return {
        "losses": step_losses(run_dir),
        "gates": gates,
        "state": result.model.state_dict(),
        "accuracy": result.test_accuracy,
        "model": result.model,
    }


def stage_compare(ctx: Ctx) -> Result:
    """The same seed on the device and on NumPy: the same gates, the same losses (float32)."""
    backend = device_backend(ctx)
    steps = 3 if ctx.smoke else 10
    opts = options(ctx, steps)
    with tempfile.TemporaryDirectory() as tmp:
        dev = recorded_run(opts, ctx.device, Path(tmp) / "device")
        ref = recorded_run(opts, "cpu", Path(tmp) / "numpy")
    checks = Checks()
    checks.add("the same gates at every step", dev["gates"] == ref["gates"],
               f"{len(dev['gates'])} steps")  # fmt: skip
    rel = rel_diff(dev["losses"], ref["losses"])
    checks.add(f"each step's loss within {LOSS_RTOL:g} (relative)", rel <= LOSS_RTOL, f"{rel:.2e}")
    details = {
        "steps": steps,
        "largest relative loss difference": rel,
        "largest weight difference (relative to the largest weight)": weight_diff(
            dev["state"], ref["state"]
        ),  # noqa: E501
        "test accuracy (device, numpy)": [dev["accuracy"], ref["accuracy"]],
        "losses on the device": dev["losses"],
        **dry_run(backend),
    }
    return checks.done(f"{steps} steps on {backend} agree with NumPy ({rel:.1e})", details)


# -- 5. resume on the other device ---------------------------------------------------------------
class Crash(RuntimeError):
    """Stops a run on purpose (after its checkpoint), as a crash would."""


def crashing_at(step: int) -> Any:
    """A window hook that crashes the run as it asks for batch ``step``."""

    def hook(n: int, loader: Any) -> Any:
        if n == step:
            raise Crash(f"stopped at step {step} on purpose")
        return contextlib.nullcontext()

    return hook


def interrupted(
    opts: dict[str, Any], first: str, then: str, crash: int, run_dir: Path
) -> list[float]:  # noqa: E501
    """Train on ``first`` until a crash at step ``crash``, resume on ``then``; the losses."""
    import sdnet

    with around_training_batches(crashing_at(crash)):
        try:
            sdnet.train(**opts, device=first, run_dir=str(run_dir))
        except Crash:
            pass
        else:
            raise Fail(f"the run on {first} was not stopped at step {crash}")
    sdnet.train(resume=run_dir, device=then, progress=False)
    return step_losses(run_dir)


def stage_resume(ctx: Ctx) -> Result:
    """Saved on the device, resumed on the CPU (and the reverse) against an unbroken run."""
    import numpy as np

    import sdnet

    backend = device_backend(ctx)
    per_epoch, every = (3, 2) if ctx.smoke else (6, 4)
    opts = options(ctx, per_epoch, epochs=2, checkpoint_every=every)
    checks = Checks()
    details: dict[str, Any] = dry_run(backend)
    with tempfile.TemporaryDirectory() as tmp:
        whole = recorded_run(opts, ctx.device, Path(tmp) / "whole")
        for first, then in ((ctx.device, "cpu"), ("cpu", ctx.device)):
            losses = interrupted(opts, first, then, every + 2, Path(tmp) / f"{first}-{then}")
            rel = rel_diff(losses, whole["losses"])
            checks.add(f"saved on {first}, resumed on {then}: losses as unbroken", rel <= LOSS_RTOL,
                       f"{rel:.2e} over {len(losses)} steps")  # fmt: skip
            details[f"{first} -> {then}, largest relative loss difference"] = rel
        cpu = sdnet.load(Path(tmp) / "whole" / "model.npz", device="cpu")
    x = np.random.default_rng(1).standard_normal((8, 1, 28, 28)).astype(np.float32)
    mine, _ = whole["model"](backend.asarray(x, "float32"), train=False)
    theirs, _ = cpu(x, train=False)
    diff = float(np.max(np.abs(backend.to_numpy(mine) - theirs)))
    checks.add("the device's model.npz loads on the CPU: same logits", diff <= 1e-3, f"{diff:.1e}")
    return checks.done(f"resumed across {backend} and the CPU, both ways", details)


# -- 6. two sweep workers on one GPU -------------------------------------------------------------
def stage_sweep(ctx: Ctx) -> Result:
    """``sdnet.sweep`` with two local workers on one device, two tiny trials."""
    import sdnet

    backend = device_backend(ctx)
    cuda = on_cuda(backend) and backend.name == "cupy"
    devices: Any = [f"cuda:{backend.dlpack_device[1]}"] * 2 if cuda else "cpu"
    base = dict(sizes(ctx), epochs=1, limit_train=8 * sizes(ctx)["batch_size"], download=False,
                data_dir=ctx.data, dataset="mnist", model="resnet8")  # fmt: skip
    log = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp:
        result = sdnet.sweep(base=base, grid={"p_last": [0.5, 1.0]}, seeds=[0],
                             out_dir=Path(tmp) / "sweep", devices=devices, max_concurrent=2,
                             heartbeat=0, stream=log)  # fmt: skip
        rows = (Path(tmp) / "sweep" / "results.csv").read_text()
    text = log.getvalue()
    print(text)
    checks = Checks()
    states = ", ".join(f"{k}: {v.get('error', v['state'])}" for k, v in result.status.items())
    checks.add("both trials done", len(result.done) == 2 and not result.failed, states)
    order = [line for line in text.splitlines() if "] start " in line or "] done " in line]
    both = len(order) >= 2 and all("] start " in line for line in order[:2])
    checks.add("the two workers ran at once", both, f"{len(order)} start/done lines")
    if cuda:
        checks.add("both on the one GPU", rows.count(devices[0]) == 2, devices[0])
    return checks.done(f"two workers on {devices[0] if cuda else 'the CPU'}", dry_run(backend))


if __name__ == "__main__":  # a stage is run through gpu_stages
    sys.exit("run a stage with: python -m gpu_stages NAME CONTEXT_JSON")
