"""sdnet's GPU path, measured on the simulated CUDA device (``sdnet.testing.simdevice``).

CI has no GPU; the simulated device behaves like CuPy through array-api-compat where it
matters (a current device, creation functions that ignore ``device=``) and records what a GPU
would pay for. These tests hold the library to what a GPU needs:

* a steady training step reads nothing back from the device (a sync stalls the queue);
* a model on ``sim:1`` never has work done on ``sim:0``, the current device outside sdnet's
  calls (CuPy runs kernels on the current device: another device's arrays are read through
  peer access, or not at all);
* a float32 run does no float64 work on the device;
* a steady training step stays within its kernel-launch budget
  (``benchmarks/_targets.LAUNCH_BUDGETS``).

They also show that everything a user does runs on the simulated device: ``sdnet.train``,
``sdnet.evaluate``, ``sdnet.save``/``sdnet.load`` onto another device, a sweep trial, and the
README's hand-written loop.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import sdnet
from sdnet.data import ArrayDataset, Loader, load_dataset
from sdnet.testing.simdevice import Event
from sdnet.testing.steps import (
    GATE_CYCLE,
    WARMUP_STEPS,
    MeasuredRun,
    group_of,
    steady_cost,
    synthetic_datasets,
    train_steps,
)

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12  # with the flags read every 10 steps: steps 3-9, 11 and 12 are steady
MIN_STEADY = 8
SMALL = dict(model="resnet8", batch_size=16, p_last=0.5)  # stochastic depth on: p_L = 0.5
RUNS: dict[str, dict[str, Any]] = {
    "mnist": dict(dataset="mnist"),  # digits: no augmentation by default
    "mnist-crop": dict(dataset="mnist", crop_pad=2),
    "cifar-crop-flip": dict(dataset="cifar10"),  # crops and flips by default (synthetic images)
    "mnist-row": dict(dataset="mnist", drop_mode="row"),
    "cifar-crop-flip-row": dict(dataset="cifar10", drop_mode="row"),
    "cifar-crop-flip-subset": dict(dataset="cifar10", drop_mode="subset"),
}


def _targets() -> ModuleType:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module("_targets")
    finally:
        sys.path.pop(0)


def _listing(events: list[Event], limit: int = 12) -> str:
    """Events grouped by kind and source, most frequent first."""
    counts = Counter(f"{e.kind} ({e.detail}) at {e.where}" if e.detail else f"{e.kind} at {e.where}"
                     for e in events)  # fmt: skip
    return "\n".join(f"  {n} x {what}" for what, n in counts.most_common(limit))


def _all_events(run: MeasuredRun, kind: str) -> list[Event]:
    return [e for r in [*run.steps, run.rest] for e in getattr(r, kind)]


@pytest.fixture(scope="module")
def runs(mnist_dir: Path) -> Iterator[Callable[[str], MeasuredRun]]:
    """``runs(name)``: ``sdnet.train`` of RUNS[name] on sim:1 for STEPS steps, recorded step by
    step (made once per module); sim:0 stays the current device outside sdnet's calls."""
    made: dict[str, MeasuredRun] = {}

    def get(name: str) -> MeasuredRun:
        if name not in made:
            with synthetic_datasets(["cifar10"], STEPS * SMALL["batch_size"]):
                made[name] = train_steps(STEPS, device="sim:1", data_dir=str(mnist_dir),
                                         **SMALL, **RUNS[name])  # fmt: skip
        return made[name]

    yield get


# -- syncs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RUNS))
def test_steady_training_steps_never_sync(sim: ModuleType, runs: Any, name: str) -> None:
    """Whole steps (the loader's gather, forward, loss, backward, finiteness flag, update,
    metric sums) after the first two, leaving out the steps that read the deferred flags."""
    run = runs(name)
    steady = run.steady()
    assert len(steady) >= MIN_STEADY, f"steady steps {steady}; flags read at {run.flushed}"
    groups = {group_of(e) for k in steady for e in run.steps[k - 1].launch_events}
    assert {"loader", "optimizer", "metrics"} <= groups, "the steps are not whole steps"
    syncs = [e for k in steady for e in run.steps[k - 1].syncs]
    per_step = len(syncs) / len(steady)
    assert not syncs, f"{name}: {per_step:g} host syncs per steady step:\n{_listing(syncs)}"


@pytest.mark.parametrize("name", ["mnist", "mnist-row"])
def test_the_deferred_finiteness_flags_are_read_in_one_sync(
    sim: ModuleType, runs: Any, name: str
) -> None:
    """The steps that read the deferred flags (every ``CHECK_EVERY_ON_DEVICE``) read them all
    at once: one sync from the guard."""
    run = runs(name)
    flushed = sorted(k for k in run.flushed if k <= len(run.steps))
    assert flushed, "no step read the deferred flags"
    for k in flushed:
        reads = [e for e in run.steps[k - 1].syncs if e.file == "sdnet/training/guard.py"]
        assert len(reads) == 1, f"step {k}:\n{_listing(reads)}"


# -- devices ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RUNS))
def test_training_on_sim1_does_nothing_on_sim0(sim: ModuleType, runs: Any, name: str) -> None:
    """The whole of ``sdnet.train(device="sim:1")``: setup, steps, evaluation, checkpoint."""
    wrong = _all_events(runs(name), "wrong_device")
    assert not wrong, f"{name}: {len(wrong)} wrong-device events:\n{_listing(wrong)}"


def test_evaluate_on_sim1_does_nothing_on_sim0(sim: ModuleType, mnist_dir: Path) -> None:
    model = sdnet.build_model("resnet8", in_channels=1, p_last=0.5, device="sim:1", seed=0)
    with sim.record() as rec:
        res = sdnet.evaluate(model, "mnist", data_dir=mnist_dir, limit=64, batch_size=32,
                             download=False)  # fmt: skip
    assert res["count"] == 64
    assert not rec.wrong_device, _listing(rec.wrong_device)


def _readme_loop() -> str:
    text = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "build_model" in b]
    assert block.count('device="cpu"') == 1
    return block.replace('device="cpu"', 'device="sim:1"')


def test_the_readme_loop_on_sim1_does_nothing_on_sim0(sim: ModuleType) -> None:
    """The README's hand-written loop, as written, with the model on sim:1."""
    ns: dict[str, Any] = {}
    with sim.record() as rec:
        exec(compile(_readme_loop(), "README.md", "exec"), ns)
    assert ns["model"].backend.device == sim.device(1)
    assert all(p.value.device == sim.device(1) for p in ns["model"].parameters())
    assert not rec.wrong_device, _listing(rec.wrong_device)


def _cifar_like(n: int) -> ArrayDataset:
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    return ArrayDataset(images, labels, "cifar-like", "train", 10, (0.5,) * 3, (0.25,) * 3)


@pytest.mark.parametrize("augment", ["none", "crop", "crop-flip"])
def test_a_loader_on_sim1_does_nothing_on_sim0(
    sim: ModuleType, mnist_dir: Path, augment: str
) -> None:
    """A ``Loader`` used on its own (outside ``sdnet.train``, which makes sim:1 current)."""
    if augment == "crop-flip":
        ds, options = _cifar_like(64), dict(crop_pad=4, hflip=True)
    else:
        ds = load_dataset("mnist", "test", data_dir=mnist_dir, download=False).subset(range(64))
        options = dict(crop_pad=2) if augment == "crop" else {}
    loader = Loader(ds, 32, "sim:1", **options)
    with sim.record() as rec:
        batches = list(loader.batches(loader.plan_epoch(np.random.default_rng(0))))
    assert len(batches) == 2
    assert not rec.wrong_device, _listing(rec.wrong_device)
    assert all(a.device == sim.device(1) for batch in batches for a in batch)


# -- float64 ---------------------------------------------------------------------------------

# Device work a float32 run may do in float64. Host-side scalars (learning rates, metric
# totals once read back) are Python floats and never reach the device: the list is empty.
ALLOWED_FLOAT64: frozenset[str] = frozenset()


@pytest.mark.parametrize("name", ["mnist", "cifar-crop-flip"])
def test_a_float32_run_does_no_float64_work(sim: ModuleType, runs: Any, name: str) -> None:
    """Every operation of a whole float32 run (steps, evaluation, checkpoint)."""
    found = [e for e in _all_events(runs(name), "float64") if e.file not in ALLOWED_FLOAT64]
    assert not found, f"{name}: {len(found)} float64 operations:\n{_listing(found)}"


# -- launch budgets --------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["resnet20", pytest.param("resnet110", marks=pytest.mark.slow)])
def test_a_steady_training_step_stays_within_its_launch_budget(sim: ModuleType, model: str) -> None:
    """Kernel launches per steady training step, against ``LAUNCH_BUDGETS``.

    Method: ``sdnet.train`` on sim:1, batch 128, CIFAR-shaped input (3x32x32, random images,
    the CIFAR default crops and flips), stochastic depth with the paper's linear rule and
    p_L = 0.5, one gate per block per batch. The gates are not drawn but fixed
    (``sdnet.testing.steps.fixed_gates``): systematic sampling of the survival probabilities,
    whose number of kept blocks averages to the expected number over any GATE_CYCLE
    consecutive steps. Steps 3 to 2 + GATE_CYCLE are measured whole (the loader's gather,
    forward, loss, backward, finiteness flag, update, metric sums: see
    ``sdnet.testing.steps``), and their mean, the expected launches of a step, is held to the
    budget.
    """
    budget = _targets().LAUNCH_BUDGETS[model]
    steps = WARMUP_STEPS + GATE_CYCLE
    with synthetic_datasets(["cifar10"], steps * 128):
        run = train_steps(steps, model=model, dataset="cifar10", batch_size=128, p_last=0.5,
                          fixed=True)  # fmt: skip
    cost = steady_cost(run)
    expected = sum(sdnet.ResNet(int(model[6:]), p_last=0.5).survival)
    assert cost.steps == list(range(WARMUP_STEPS + 1, steps + 1))
    assert cost.kept is not None and abs(cost.kept - expected) <= 1 / (2 * GATE_CYCLE)
    groups = ", ".join(f"{g} {n:.0f}" for g, n in cost.by_group.items())
    assert cost.launches <= budget, f"{model}: {cost.launches:.0f} launches per step ({groups})"


# -- everything runs on the simulated devices --------------------------------------------------


def test_train_save_load_onto_another_device_and_evaluate(
    sim: ModuleType, tmp_path: Path, mnist_dir: Path
) -> None:
    """Train on sim:2, save, load onto sim:1: same weights there, same accuracy."""
    data = dict(data_dir=str(mnist_dir), download=False)
    result = sdnet.train(epochs=1, limit_train=64, limit_test=64, eval_batch_size=32,
                         device="sim:2", progress=False, run_dir=str(tmp_path / "run"),
                         **SMALL, **data)  # fmt: skip
    trained = result.model
    path = sdnet.save(trained, tmp_path / "resnet8.npz")
    loaded = sdnet.load(path, device="sim:1")
    assert {p.value.device for p in trained.parameters()} == {sim.device(2)}
    assert {p.value.device for p in loaded.parameters()} == {sim.device(1)}
    for name, value in trained.state_dict().items():
        assert np.array_equal(value, loaded.state_dict()[name]), name
    scores = [
        sdnet.evaluate(m, "mnist", limit=64, batch_size=32, **data) for m in (trained, loaded)
    ]
    assert scores[0] == scores[1] and scores[0]["accuracy"] == result.test_accuracy


def test_a_sweep_trial_runs_on_sim1(sim: ModuleType, tmp_path: Path, mnist_dir: Path) -> None:
    """In process: the local executor starts each worker as ``python -m sdnet.sweep.trial
    ... DEVICE``, and a new process has no simulated device (it is registered by the process
    that installs it), so the trial runs here through ``run_trial``, as a worker runs it."""
    from sdnet.sweep.trial import run_trial

    options = dict(epochs=1, limit_train=64, limit_test=32, eval_batch_size=32,
                   data_dir=str(mnist_dir), download=False, **SMALL)  # fmt: skip
    with sim.record() as rec:
        summary = run_trial("t0", options, tmp_path / "sweep", "sim:1")
    assert summary["epochs"] == 1 and 0.0 <= summary["final_accuracy"] <= 1.0
    assert (tmp_path / "sweep" / "trials" / "t0" / "model.npz").is_file()
    assert not rec.wrong_device, _listing(rec.wrong_device)
