"""The benchmark scripts run end to end (tiny sizes), so they are ready when a machine is."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench(name: str) -> ModuleType:
    """A module of ``benchmarks/`` (they import each other by name: the folder is on the path
    while they load)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def _run(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def test_skip_cost_smoke_is_never_recorded(tmp_path: Path) -> None:
    records = tmp_path / "benchmarks.json"
    out = _run("benchmarks/skip_cost.py", "--smoke", "--write", "--records", str(records))
    assert "| ResNet-8 | all closed |" in out and "| ResNet-8 | drawn, p_L = 0.5 |" in out
    assert not records.exists() and not records.with_suffix(".md").exists()


def test_profile_step_smoke_is_never_recorded(tmp_path: Path) -> None:
    records = tmp_path / "benchmarks.json"
    out = _run("benchmarks/profile_step.py", "--smoke", "--write", "--records", str(records))
    assert "| conv backward |" in out and "| **step (wall, under the profiler)** |" in out
    assert not records.exists() and not records.with_suffix(".md").exists()


def test_scripts_record_their_runs_and_render_the_page(tmp_path: Path) -> None:
    """Tiny runs with --write: each replaces its record (kind and key) and rewrites the page."""
    records = tmp_path / "benchmarks.json"
    tiny = {
        "skip_cost.py": ["--depth", "8", "--steps", "1", "--warmup", "0", "--batch", "8"],
        "profile_step.py": ["--steps", "1", "--batch", "8", "--label", "before"],
        "speed.py": ["--models", "resnet8", "--shapes", "mnist", "--batch", "8", "--eval-batch",
                     "8", "--steps", "1", "--warmup", "0", "--eval-steps", "1", "--threads", "1",
                     "--no-memory"],
    }  # fmt: skip
    for script, args in tiny.items():
        _run(f"benchmarks/{script}", *args, "--write", "--records", str(records))
    _run("benchmarks/skip_cost.py", *tiny["skip_cost.py"], "--write", "--records", str(records))
    torch_profile = ["--steps", "1", "--batch", "8", "--library", "torch", "--write"]
    _run("benchmarks/profile_step.py", *torch_profile, "--records", str(records))
    rendering = _bench("render_benchmarks")
    recs = _bench("_records").load_records(records)
    assert [(r["kind"], r["key"]) for r in recs] == [
        ("skip_cost", "cpu"), ("profile", "before"), ("speed", "cpu, 1 thread"),
        ("profile", "pytorch"),
    ]  # fmt: skip
    sd, pt = recs[1], recs[3]
    assert sd["settings"]["step"] == (  # the training loop's calls, which this sdnet has
        "model.zero_grad(); model(x, train=True, need_dx=False); loss; backprop; "
        "opt.step(opt.flat_grads())"
    )
    assert pt["settings"]["library"] == "torch" and pt["machine"]["torch_threads"] == "1"
    assert "sdnet_threads" not in pt["machine"] and "--library torch" in pt["command"]
    assert [k["kernel"] for k in pt["results"]["kernels"]] == [
        *_bench("_tables").KERNEL_ROWS, "everything else",
    ]  # fmt: skip
    assert records.with_suffix(".md").read_text() == rendering.render(recs)
    scripts = {"skip_cost": "skip_cost.py", "profile": "profile_step.py", "speed": "speed.py"}
    assert "| PyTorch ms | PyTorch share |" in records.with_suffix(".md").read_text()
    for r in recs:
        assert f" python benchmarks/{scripts[r['kind']]} " in f" {r['command']}", r["command"]
        assert "--records" not in r["command"] and "--write" in r["command"]
    assert _bench("_records").machine_paths(records.read_text()) == []


def test_profile_step_torch_smoke_is_never_recorded(tmp_path: Path) -> None:
    records = tmp_path / "benchmarks.json"
    out = _run(
        "benchmarks/profile_step.py", "--library", "torch", "--smoke", "--write", "--records",
        str(records),
    )  # fmt: skip
    assert "| conv backward |" in out and "| **step (wall, under the profiler)** |" in out
    assert "of which" not in out  # PyTorch's convolution is not split
    assert not records.exists() and not records.with_suffix(".md").exists()


def test_profile_step_records_pytorch_under_its_own_key() -> None:
    profile_step = _bench("profile_step")
    assert profile_step.parse_args(["--library", "torch"]).key == "pytorch"
    assert profile_step.parse_args([]).key == "after"
    assert profile_step.parse_args(["--label", "before"]).key == "before"
    with pytest.raises(SystemExit):
        profile_step.parse_args(["--library", "torch", "--label", "after"])


# PyTorch op stacks (outermost first) and self ms over two steps, as torch.profiler gives them
TORCH_OPS = [
    (("aten::conv2d",), 1.0),
    (("aten::conv2d", "aten::convolution", "aten::_convolution", "aten::mkldnn_convolution"), 10.0),
    (("aten::conv2d", "aten::convolution", "aten::_convolution", "aten::mkldnn_convolution",
      "aten::empty"), 0.5),
    (("autograd::engine::evaluate_function: ConvolutionBackward0", "ConvolutionBackward0",
      "aten::convolution_backward"), 20.0),
    (("autograd::engine::evaluate_function: ConvolutionBackward0",), 0.7),  # the engine's work
    (("autograd::engine::evaluate_function: ConvolutionBackward0", "aten::add_"), 0.3),  # a sum
    (("aten::batch_norm", "aten::_batch_norm_impl_index", "aten::native_batch_norm"), 4.0),
    (("autograd::engine::evaluate_function: NativeBatchNormBackward0", "NativeBatchNormBackward0",
      "aten::native_batch_norm_backward"), 3.0),
    (("aten::relu", "aten::clamp_min"), 1.0),
    (("aten::add",), 0.5),  # the block's residual sum, called from the model's code
    (("autograd::engine::evaluate_function: ReluBackward0", "ReluBackward0",
      "aten::threshold_backward"), 1.5),
    (("aten::avg_pool2d",), 0.2),
    (("aten::new_zeros", "aten::zero_", "aten::fill_"), 0.1),
    (("aten::cat",), 0.1),
    (("aten::mean", "aten::sum"), 0.1),
    (("aten::cross_entropy_loss", "aten::log_softmax", "aten::_log_softmax"), 0.2),
    (("Optimizer.step#SGD.step", "aten::add"), 0.4),  # an add inside the optimizer is its own
    (("Optimizer.step#SGD.step", "aten::mul_"), 0.3),
    (("Optimizer.step#SGD.step",), 0.3),
    (("Optimizer.zero_grad#SGD.zero_grad",), 0.2),
    (("aten::mul",), 0.6),  # the peer model's multiply by the gate coefficient
    (("aten::linear", "aten::addmm"), 0.1),
    ((), 2.0),  # the profiler's step marker itself
]  # fmt: skip


def test_torch_ops_map_onto_the_rows_of_sdnets_profile() -> None:
    profile_step = _bench("profile_step")
    res = profile_step.torch_kernel_times(TORCH_OPS, steps=2, wall=0.030)  # 30 ms a step
    rows = {k["kernel"]: k for k in res["kernels"]}
    assert list(rows) == [*_bench("_tables").KERNEL_ROWS, "everything else"]
    expected = {
        "conv forward": 5.75, "conv backward": 10.0, "batch norm forward": 2.0,
        "batch norm backward": 1.5, "ReLU forward": 0.75, "ReLU backward": 0.75,
        "pooling, shortcuts": 0.25, "loss": 0.1, "optimizer step": 0.5, "zero_grad": 0.1,
    }  # fmt: skip
    for name, ms in expected.items():
        assert rows[name]["ms"] == pytest.approx(ms), name
    other = 30.0 - sum(expected.values())
    assert rows["everything else"]["ms"] == pytest.approx(other)
    assert res["step_ms"] == pytest.approx(30.0)
    assert rows["conv backward"]["share"] == pytest.approx(10.0 / 30.0)
    assert not any(k.get("part") for k in res["kernels"])


def test_an_op_belongs_to_the_outermost_op_the_mapping_names() -> None:
    row = _bench("profile_step").torch_row
    assert row(("aten::add",)) == "ReLU forward"  # the residual sum
    assert row(("Optimizer.step#SGD.step", "aten::add")) == "optimizer step"
    assert row(("autograd::engine::evaluate_function: AddBackward0", "aten::add")) == (
        "everything else"  # a gradient sum of the autograd engine
    )
    assert row(("aten::cross_entropy_loss", "aten::mean")) == "loss"  # not pooling's mean
    assert row(("aten::mean",)) == "pooling, shortcuts"
    assert row(("aten::unknown_op", "aten::relu")) == "ReLU forward"
    assert row(()) == "everything else"


def test_an_op_stack_leaves_out_the_profilers_step_marker() -> None:
    stack = _bench("profile_step").op_stack
    marker = SimpleNamespace(name="ProfilerStep#3", cpu_parent=None)
    conv = SimpleNamespace(name="aten::conv2d", cpu_parent=marker)
    inner = SimpleNamespace(name="aten::convolution", cpu_parent=conv)
    assert stack(inner) == ("aten::conv2d", "aten::convolution")
    assert stack(marker) == ()


def _key(path: str, name: str) -> tuple[str, int, str]:
    return (f"/src/sdnet/{path}", 1, name)


def test_a_call_from_one_function_of_a_row_to_another_counts_once() -> None:
    """Synthetic cProfile statistics: ``(calls, calls, self s, cumulative s, callers)``; a
    caller's entry gives the cumulative seconds of the calls it made."""
    ps = _bench("profile_step")
    add, relu = (
        _key("functional/activation.py", "add_relu"),
        _key("functional/activation.py", "relu"),
    )
    run, block = _key("_array_api.py", "run"), _key("models/stochastic_depth.py", "forward")
    ce, hot = (
        _key("functional/loss.py", "softmax_cross_entropy"),
        _key("functional/loss.py", "one_hot"),
    )
    stats = {
        add: (9, 9, 1.0, 10.0, {run: (9, 9, 1.0, 10.0)}),  # 6 s of it in relu, through run
        relu: (19, 19, 9.0, 9.0, {run: (19, 19, 9.0, 9.0)}),  # 3 s called from the block
        run: (28, 28, 0.0, 19.0, {block: (19, 19, 0.0, 13.0), add: (9, 9, 0.0, 6.0)}),
        block: (9, 9, 2.0, 15.0, {}),
        ce: (1, 1, 4.0, 5.0, {block: (1, 1, 4.0, 5.0)}),
        hot: (1, 1, 1.0, 1.0, {ce: (1, 1, 1.0, 1.0)}),  # called directly
    }  # fmt: skip
    members = ps._members(stats)
    assert members["ReLU forward"] == {add, relu} and members["loss"] == {ce, hot}
    assert ps._row_time(stats, members["ReLU forward"]) == pytest.approx(13.0)  # 10 + 3
    assert ps._row_time(stats, members["loss"]) == pytest.approx(5.0)


def test_the_reference_add_relu_is_not_counted_twice_in_a_real_profile() -> None:
    """The reference ``add_relu`` calls ``relu``: the row holds add_relu's time, once."""
    import cProfile
    import pstats

    import numpy as np
    from sdnet.backends.kernels import reference_kernels

    from sdnet.functional import add_relu

    ps = _bench("profile_step")
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((16, 16, 32, 32)).astype(np.float32) for _ in range(2))
    prof = cProfile.Profile()
    with reference_kernels():
        prof.enable()
        for _ in range(20):
            add_relu(a, b)
        prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    members = ps._members(stats)["ReLU forward"]
    assert {k[2] for k in members} == {"add_relu", "relu"}  # relu runs inside add_relu
    outer = next(stats[k][3] for k in members if k[2] == "add_relu")
    assert 0.8 * outer <= ps._row_time(stats, members) <= outer


def test_a_recorded_command_states_the_blas_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenBLAS's kernel choice as the run had it: unset (``env -u``) or set, then threads."""
    machine = _bench("_machine")
    for var in machine.THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "512")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    blas = ["env", "-u OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE=512"]
    assert machine.command_env() == [*blas, "OPENBLAS_NUM_THREADS=1"]
    assert machine.command_env(threads=False) == blas
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert machine.command_env(threads=False) == [
        "OPENBLAS_CORETYPE=Haswell", "OPENBLAS_L2_SIZE=512",
    ]  # fmt: skip


def test_accuracy_smoke(mnist_dir: Path) -> None:
    out = _run(
        "benchmarks/accuracy.py", "default", "seednet-sound", "--smoke", "--data-dir",
        str(mnist_dir),
    )  # fmt: skip
    assert "default seed 0: test accuracy" in out and "seednet-sound seed 0" in out


def test_results_page_is_exactly_what_the_records_render() -> None:
    """docs/results.md is generated from docs/results.json, never edited by hand."""
    accuracy = _bench("accuracy")
    records = accuracy.load_records()
    assert records, "docs/results.json holds no measured runs"
    assert (ROOT / "docs" / "results.md").read_text() == accuracy.render(records)


def test_speed_smoke_measures_every_variant_and_memory(tmp_path: Path) -> None:
    records = tmp_path / "benchmarks.json"
    out = _run(
        "benchmarks/speed.py", "--smoke", "--threads", "1", "--write", "--records", str(records)
    )
    for row in ("train, constant depth", "train, p_L = 0.5", "eval, batch 16"):
        assert f"| resnet8 | 1x28x28 | {row}" in out
    assert "Stochastic-depth saving" in out
    memory = out.split("Peak memory", 1)[1].splitlines()[-1]  # | resnet8 | 1x28x28 | a | b | r |
    sdnet_mib, torch_mib = (float(v) for v in memory.split("|")[3:5])
    assert sdnet_mib >= 0 and torch_mib >= 0
    assert not records.exists() and not records.with_suffix(".md").exists()  # smoke: no record


@pytest.mark.parametrize("device", ["torch", "array_api_strict"])
def test_speed_gpu_code_path_runs_on_other_backends(device: str) -> None:
    """The path a GPU run takes (another namespace, a device to synchronize) runs on the CPU."""
    out = _run("benchmarks/speed.py", "--smoke", "--device", device, "--no-memory")
    assert "| resnet8 | 1x28x28 | train, constant depth" in out and "Peak memory" not in out


def test_speed_block_work_matches_the_flop_count() -> None:
    """ResNet-20's expected kept work at p_L = 0.5 is 72.4% of the blocks' multiply-adds."""
    speed = _bench("speed")
    import sdnet

    model = sdnet.build_model("resnet20", num_classes=10, in_channels=1, p_last=0.5)
    work = speed._block_work(model)
    assert len(work) == 9 and work[0] == work[1] == work[2]  # equal work per full block
    assert work[3] == pytest.approx(0.75 * work[0])  # first block of a stage: conv1 has C/2 in
    kept = sum(w * p for w, p in zip(work, model.survival, strict=True)) / sum(work)
    assert kept == pytest.approx(0.724, abs=1e-3)


def test_launches_smoke_is_never_recorded(tmp_path: Path) -> None:
    records = tmp_path / "benchmarks.json"
    out = _run("benchmarks/launches.py", "--smoke", "--write", "before", "--records", str(records))
    assert "| part of the step | per step |" in out and "| operation | per step |" in out
    assert "| resnet8 | optimizer |" in out and "| resnet8 | **total** |" in out
    assert not records.exists() and not records.with_suffix(".md").exists()


def test_launches_records_its_run_under_its_label_and_renders_the_page(tmp_path: Path) -> None:
    records = tmp_path / "benchmarks.json"
    tiny = ["--models", "resnet8", "--batch", "4", "--steps", "3"]
    _run("benchmarks/launches.py", *tiny, "--write", "before", "--records", str(records))
    recs = _bench("_records").load_records(records)
    assert [(r["kind"], r["key"]) for r in recs] == [("launches", "before")]
    (row,) = recs[0]["results"]
    assert row["model"] == "resnet8" and row["steps"] == [3]
    assert row["total"] == sum(row["by_kind"].values()) == sum(row["by_op"].values()) > 0
    assert row["syncs"] == sum(row["sync_sources"].values())
    assert (
        recs[0]["command"] == "python benchmarks/launches.py " + " ".join(tiny) + " --write before"
    )
    page = records.with_suffix(".md").read_text()
    assert page == _bench("render_benchmarks").render(recs)
    assert "| resnet8 | **total** |" in page and "simulated CUDA device" in page
    assert _bench("_records").machine_paths(records.read_text()) == []
