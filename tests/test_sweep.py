"""sdnet.sweep: plans, device slots, tables, and real sweeps on MNIST with the local executor
(a trial killed with SIGKILL, resuming, retrying, the command line, the plot)."""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import default_signals

import sdnet
from sdnet.cli import main as cli_main
from sdnet.config import ConfigError
from sdnet.sweep import SweepError, SweepPlan, read_toml
from sdnet.sweep.devices import local_slots, ray_resources
from sdnet.sweep.plot import choose_x
from sdnet.sweep.results import summarize
from sdnet.sweep.status import SweepLock
from sdnet.sweep.trial import TESTING_KILL_ENV

# a tiny trial: 256 MNIST images, one epoch, on the CPU (about 1.5 s)
TINY = dict(
    model="resnet8",
    epochs=1,
    limit_train=256,
    limit_test=100,
    batch_size=64,
    eval_batch_size=100,
    download=False,
    log_every=2,
)
GRID = {"p_last": [0.5, 1.0]}


# -- plans ----------------------------------------------------------------------------------
def test_grid_is_the_product_seeds_outer() -> None:
    plan = SweepPlan(
        base={"epochs": 1}, grid={"model": ["resnet8", "seednet"], "lr": [0.1, 0.05]}, seeds=[3, 4]
    ).validate()
    trials = plan.trials()
    assert len(trials) == 8
    assert [t.seed for t in trials] == [3] * 4 + [4] * 4
    assert [t.params for t in trials[:4]] == [
        {"model": "resnet8", "lr": 0.1},
        {"model": "resnet8", "lr": 0.05},
        {"model": "seednet", "lr": 0.1},
        {"model": "seednet", "lr": 0.05},
    ]
    assert len({t.id for t in trials}) == 8
    assert trials[5].id == "005-model=resnet8-lr=0.05-seed=4"
    assert trials[5].options(plan.base) == {"epochs": 1, "model": "resnet8", "lr": 0.05, "seed": 4}
    assert plan.swept() == ["model", "lr"]


def test_random_search_is_reproducible_and_in_range() -> None:
    random = {
        "lr": {"low": 1e-3, "high": 0.3, "log": True},
        "p_last": {"low": 0.5, "high": 1.0},
        "batch_size": {"choices": [32, 64]},
        "width": {"low": 1, "high": 3, "integer": True},
    }
    plan = SweepPlan(
        grid={"model": ["resnet8", "resnet14"]}, random=random, samples=5, random_seed=7
    ).validate()
    configs = plan.configurations()
    assert len(configs) == 10 and len(plan.trials()) == 10
    assert configs == SweepPlan.from_dict(plan.to_dict()).configurations()
    for c in configs:
        assert 1e-3 <= c["lr"] <= 0.3 and 0.5 <= c["p_last"] <= 1.0
        assert c["batch_size"] in (32, 64) and c["width"] in (1, 2, 3)
        assert isinstance(c["width"], int)
    assert [c["model"] for c in configs] == ["resnet8"] * 5 + ["resnet14"] * 5
    other = SweepPlan(grid=plan.grid, random=random, samples=5, random_seed=8).configurations()
    assert other != configs


@pytest.mark.parametrize(
    ("plan", "error", "words"),
    [
        (dict(base={"seed": 1}), ConfigError, "seeds"),
        (dict(grid={"device": ["cpu"]}), ConfigError, "devices"),
        (dict(base={"run_dir": "x"}), ConfigError, "trials/"),
        (dict(grid={"plast": [0.5]}), TypeError, "p_last"),
        (dict(grid={"p_last": []}), ConfigError, "non-empty"),
        (dict(grid={"p_last": [0.5, 0.5]}), ConfigError, "twice"),
        (dict(base={"lr": 0.1}, grid={"lr": [0.1]}), ConfigError, "both"),
        (dict(grid={"p_last": [0.5, 1.5]}), ConfigError, "trial 001-p_last=1.5-seed=0: p_last"),
        (dict(seeds=[1, 1]), ConfigError, "twice"),
        (dict(seeds=[]), ConfigError, "seeds"),
        (dict(random={"lr": {"low": 0.1}}, samples=2), ConfigError, "low and high"),
        (dict(random={"lr": {"low": 0.1, "high": 0.2}}), ConfigError, "samples"),
        (
            dict(random={"lr": {"low": 0.0, "high": 0.2, "log": True}}, samples=1),
            ConfigError,
            "low > 0",
        ),
    ],
)
def test_bad_plans_are_refused_with_what_to_do(plan: dict, error: type, words: str) -> None:
    with pytest.raises(error, match=words.replace("(", r"\(")):
        SweepPlan(**plan).validate()


def test_read_toml(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    path = tmp_path / "s.toml"
    path.write_text(
        'seeds = [0, 1]\nout_dir = "sweeps/x"\nexecutor = "ray"\n'
        '[base]\nepochs = 1\ndata_dir = "data"\n'
        "[grid]\np_last = [0.5, 1.0]\n"
        "[random]\nsamples = 2\nseed = 3\nlr = { low = 0.01, high = 0.1, log = true }\n"
    )
    plan, settings = read_toml(path)
    assert plan.base["data_dir"] == str((tmp_path / "data").resolve())
    assert plan.grid == GRID and plan.seeds == [0, 1]
    assert plan.samples == 2 and plan.random_seed == 3 and set(plan.random) == {"lr"}
    assert settings == {"out_dir": "sweeps/x", "executor": "ray"}
    path.write_text("[grids]\np_last = [0.5]\n")
    with pytest.raises(ConfigError, match="did you mean grid"):
        read_toml(path)
    path.write_text("[grid\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_toml(path)


# -- devices --------------------------------------------------------------------------------
def test_cpu_workers_share_the_cores() -> None:
    slots = local_slots("cpu", cores=8, n_trials=3)
    assert [s.label for s in slots] == ["cpu"] * 3
    assert all(s.env["SDNET_NUM_THREADS"] == "2" for s in slots)
    # sdnet's kernel threads use the cores; BLAS keeps to one thread per call
    assert all(s.env["OPENBLAS_NUM_THREADS"] == "1" == s.env["OMP_NUM_THREADS"] for s in slots)
    assert all(s.env["MKL_NUM_THREADS"] == "1" for s in slots)
    slots = local_slots("cpu", cores=8, max_concurrent=2, n_trials=10)
    assert len(slots) == 2 and slots[0].env["SDNET_NUM_THREADS"] == "4"
    slots = local_slots("cpu", cores=2, n_trials=10)
    assert len(slots) == 2 and slots[0].env["SDNET_NUM_THREADS"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in slots[0].env


def test_each_gpu_worker_sees_only_its_gpu() -> None:
    slots = local_slots(["cuda:0", "cuda:1"], cores=16, environ={})
    assert [(s.label, s.device, s.env["CUDA_VISIBLE_DEVICES"]) for s in slots] == [
        ("cuda:0", "cuda:0", "0"),
        ("cuda:1", "cuda:0", "1"),
    ]
    assert slots[0].env["SDNET_NUM_THREADS"] == "8"
    # an existing CUDA_VISIBLE_DEVICES renumbers the GPUs: cuda:1 is physical GPU 3
    slots = local_slots(["cuda:0", "cuda:1"], cores=4, environ={"CUDA_VISIBLE_DEVICES": "2,3"})
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["2", "3"]
    with pytest.raises(ConfigError, match="lists 2 device"):
        local_slots(["cuda:2"], environ={"CUDA_VISIBLE_DEVICES": "2,3"})
    with pytest.raises(ConfigError, match="hides every GPU"):
        local_slots(["cuda:0"], environ={"CUDA_VISIBLE_DEVICES": ""})
    slots = local_slots("gpu", gpus=3, cores=6, environ={})
    assert [s.label for s in slots] == ["cuda:0", "cuda:1", "cuda:2"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1", "2"]
    assert len(local_slots("gpu", gpus=3, max_concurrent=2, environ={})) == 2
    assert [s.label for s in local_slots(["cuda:1", "cuda:1"], environ={})] == ["cuda:1"] * 2
    assert [s.label for s in local_slots("auto", gpus=2, environ={})] == ["cuda:0", "cuda:1"]
    assert {s.label for s in local_slots("auto", gpus=0, cores=2)} == {"cpu"}
    with pytest.raises(ConfigError, match="no CUDA device"):
        local_slots("gpu", gpus=0)
    with pytest.raises(ConfigError, match="cuda:N"):
        local_slots(["cuda:x"])
    with pytest.raises(ConfigError, match="devices="):
        local_slots(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_concurrent"):
        local_slots("cpu", max_concurrent=0)


def test_ray_task_resources() -> None:
    assert ray_resources("cpu", cpus_per_trial=2) == ({"num_cpus": 2, "num_gpus": 0}, "cpu")
    assert ray_resources("gpu") == ({"num_cpus": 1, "num_gpus": 1}, "cuda:0")
    assert ray_resources("auto", cluster_gpus=4)[0]["num_gpus"] == 1
    assert ray_resources("auto", cluster_gpus=0)[0]["num_gpus"] == 0
    assert ray_resources("gpu", gpus_per_trial=0.5)[0]["num_gpus"] == 0.5
    with pytest.raises(ConfigError, match="Ray picks the GPU"):
        ray_resources(["cuda:0"])
    with pytest.raises(ConfigError, match="cpus_per_trial"):
        ray_resources("cpu", cpus_per_trial=0)


# -- tables, plot axis, lock ----------------------------------------------------------------
def test_summary_mean_std_count() -> None:
    plan = SweepPlan(grid=GRID, seeds=[0, 1, 2])
    rows = [
        {"p_last": 0.5, "state": "done", "final_accuracy": 0.90, "best_accuracy": 0.92},
        {"p_last": 0.5, "state": "done", "final_accuracy": 0.94, "best_accuracy": 0.94},
        {"p_last": 0.5, "state": "failed", "final_accuracy": "", "best_accuracy": ""},
        {"p_last": 1.0, "state": "done", "final_accuracy": 0.80, "best_accuracy": 0.81},
    ]
    half, one = summarize(plan, rows)
    assert half["count"] == 2 and half["failed"] == 1
    assert half["final_accuracy_mean"] == pytest.approx(0.92)
    assert half["final_accuracy_std"] == pytest.approx(0.02 * 2**0.5)
    assert half["best_accuracy_mean"] == pytest.approx(0.93)
    assert one["count"] == 1 and one["final_accuracy_std"] is None


def test_plot_axis_choice() -> None:
    assert choose_x({"model": ["a", "b"], "p_last": [0.5, 1.0]}) == "p_last"
    assert choose_x({"model": ["a"], "lr": [0.1, 0.2, 0.3], "width": [1, 2]}) == "lr"
    assert choose_x({"model": ["a", "b"], "drop_rule": ["linear"]}) == "model"
    assert choose_x({"model": ["a"], "lr": [0.1]}, "model") == "model"
    with pytest.raises(ConfigError, match="not a swept option"):
        choose_x({"lr": [0.1]}, "p_last")


def test_one_sweep_at_a_time_per_directory(tmp_path: Path) -> None:
    with SweepLock(tmp_path):
        with pytest.raises(SweepError, match="another sdnet sweep is running"):
            with SweepLock(tmp_path):
                pass
    with SweepLock(tmp_path):  # released
        pass


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (dict(devices=["cuda:x"]), "cuda:N"),
        (dict(executor="ray", devices=["cuda:0"]), "Ray picks the GPU"),
        (dict(executor="spark"), "use 'local' or 'ray'"),
        (dict(address="auto"), "executor='ray'"),
        (dict(devices="cpu", max_concurrent=0), "max_concurrent"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(
    tmp_path: Path, settings: dict, words: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        sdnet.sweep(grid=GRID, out_dir=tmp_path / "s", **settings)
    assert not (tmp_path / "s").exists()


def test_import_sdnet_does_not_import_ray() -> None:
    code = "import sys, sdnet; sdnet.sweep; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- real sweeps ----------------------------------------------------------------------------
def _rows(sweep_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((sweep_dir / "results.csv").open()))


def test_local_sweep_kill_resume_retry_tables_plot(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "sweep"
    base = dict(TINY, data_dir=str(mnist_dir))
    killed = "001-p_last=1-seed=0"
    monkeypatch.setenv(TESTING_KILL_ENV, killed)  # that trial's process SIGKILLs itself
    log = io.StringIO()
    kw = dict(base=base, grid=GRID, seeds=[0, 1], out_dir=out, devices="cpu", max_concurrent=2)
    result = sdnet.sweep(**kw, stream=log)
    threads = local_slots("cpu", max_concurrent=2)[0].env["SDNET_NUM_THREADS"]

    assert result.failed == [killed]
    assert len(result.done) == 3
    assert "SIGKILL" in result.status[killed]["error"]
    status = json.loads((out / "status" / f"{killed}.json").read_text())
    assert status["state"] == "failed" and "SIGKILL" in status["error"]
    text = log.getvalue()
    assert f"FAILED {killed}" in text and "[3/4 done, 1 failed]" in text
    assert text.count("] start ") == 4 and text.count("] done  ") == 3
    rows = _rows(out)
    assert [r["trial"] for r in rows] == [t.id for t in SweepPlan(grid=GRID, seeds=[0, 1]).trials()]
    assert [r["state"] for r in rows] == ["done", "failed", "done", "done"]
    for r in rows:
        if r["state"] == "done":
            assert 0.0 <= float(r["final_accuracy"]) <= 1.0 and r["epochs"] == "1"
            assert float(r["seconds"]) > 0 and r["device"] == "cpu"
            assert (out / "trials" / r["trial"] / "model.npz").is_file()
            log_text = (out / "logs" / f"{r['trial']}.log").read_text()
            # set in the worker's environment before NumPy loads
            assert f"SDNET_NUM_THREADS={threads}, OPENBLAS_NUM_THREADS=1" in log_text

    # the same call again: finished trials are skipped, the failed one is not retried
    done_file = out / "trials" / result.done[0] / "model.npz"
    stamp = done_file.stat().st_mtime_ns
    log = io.StringIO()
    again = sdnet.sweep(**kw, stream=log)
    assert again.failed == [killed] and "0 to run" in log.getvalue()
    assert "1 failed not retried" in log.getvalue()
    assert done_file.stat().st_mtime_ns == stamp

    # asked to retry: only the failed trial runs, and now succeeds; what a crash mid-run
    # would have left in its run directory is kept under attempts/
    leftover = out / "trials" / killed / "metrics.jsonl"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_text('{"type": "step", "step": 1}\n')
    monkeypatch.delenv(TESTING_KILL_ENV)
    log = io.StringIO()
    retried = sdnet.sweep(**kw, retry_failed=True, stream=log)
    assert retried.failed == [] and len(retried.done) == 4
    assert log.getvalue().count("] start ") == 1
    assert retried.status[killed]["attempt"] == 2
    kept = out / "attempts" / f"{killed}.1" / "metrics.jsonl"
    assert kept.read_text() == '{"type": "step", "step": 1}\n'
    assert (out / "trials" / killed / "model.npz").is_file()
    assert done_file.stat().st_mtime_ns == stamp
    rows = _rows(out)
    assert all(r["state"] == "done" for r in rows)
    summary = (out / "summary.md").read_text()
    assert "| p_last | n | failed | final mean |" in summary
    assert "| 0.5 | 2 | 0 |" in summary and "| 1.0 | 2 | 0 |" in summary

    # sdnet plot recognises a sweep directory
    assert cli_main(["plot", str(out)]) == 0
    assert (out / "sweep.png").stat().st_size > 1000

    # another plan in the same directory is refused, saying what changed
    with pytest.raises(SweepError, match=r"p_last: \[0.5, 1.0\] stored, \[0.5, 0.8\] now"):
        sdnet.sweep(**dict(kw, grid={"p_last": [0.5, 0.8]}), stream=io.StringIO())


def test_ctrl_c_checkpoints_running_trials_and_the_rerun_resumes_them(
    tmp_path: Path, mnist_dir: Path
) -> None:
    options = dict(TINY, limit_train=1024, batch_size=16, log_every=1, data_dir=str(mnist_dir))
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in options.items())
    (tmp_path / "s.toml").write_text(f"seeds = [0]\n[base]\n{lines}\n[grid]\np_last = [0.5]\n")
    cmd = [sys.executable, "-m", "sdnet", "sweep", "s.toml", "--devices", "cpu"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals
    )
    out = tmp_path / "sweeps" / "s"
    metrics = out / "trials" / "000-p_last=0.5-seed=0" / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while not (metrics.is_file() and '"step"' in metrics.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "the trial did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted 000-p_last=0.5-seed=0" in err and "Rerun the same command" in err
    status = json.loads((out / "status" / "000-p_last=0.5-seed=0.json").read_text())
    assert status["state"] == "pending" and "checkpoint" in status["note"]
    assert (metrics.parent / "checkpoint.npz").is_file()
    assert not (metrics.parent / "model.npz").exists()

    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    status = json.loads((out / "status" / "000-p_last=0.5-seed=0.json").read_text())
    assert status["state"] == "done" and status["resumed"] is True
    assert (metrics.parent / "model.npz").is_file()
    assert not (out / "attempts").exists()
    # the resumed trial ends where an uninterrupted run with its options ends
    ref = sdnet.train(
        **options, p_last=0.5, seed=0, device="cpu", progress=False, run_dir=str(tmp_path / "ref")
    )
    assert status["final_accuracy"] == pytest.approx(ref.test_accuracy, abs=0.011)
    epochs = [json.loads(line) for line in metrics.read_text().splitlines()]
    last = [r for r in epochs if r.get("type") == "epoch"][-1]
    assert last["test_loss"] == pytest.approx(ref.test_loss, rel=1e-3)


def test_command_line_failure_then_retry_with_the_data(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    monkeypatch.delenv("SDNET_DATA", raising=False)  # so MNIST is nowhere but in mnist_dir
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    options = "\n".join(f"{k} = {json.dumps(v)}" for k, v in TINY.items())
    (tmp_path / "s.toml").write_text(
        f'seeds = [0]\ndevices = "cpu"\n[base]\n{options}\ndata_dir = "empty"\n'
        "[grid]\np_last = [0.5]\n"
    )
    # no MNIST in data_dir: the trial fails with the loader's error; exit status 1
    assert cli_main(["sweep", "s.toml", "--heartbeat", "0"]) == 1
    err = capsys.readouterr().err
    assert "1 of 1 trials failed" in err and "--retry-failed" in err
    (tid,) = [p.stem for p in (tmp_path / "sweeps/s/status").glob("*.json")]
    status = json.loads((tmp_path / "sweeps/s/status" / f"{tid}.json").read_text())
    assert status["state"] == "failed" and "mnist" in status["error"].lower()
    assert "Traceback" in (tmp_path / "sweeps/s/logs" / f"{tid}.log").read_text()
    # where the data lies may change on a rerun; the failed attempt's files are kept
    code = cli_main(["sweep", "s.toml", "--data-dir", str(mnist_dir), "--retry-failed"])
    assert code == 0, capsys.readouterr().err
    assert "summary:" in capsys.readouterr().out
    assert [r["state"] for r in _rows(tmp_path / "sweeps/s")] == ["done"]
    assert cli_main(["sweep", "s.toml", "--address", "auto"]) == 2
    assert cli_main(["sweep", "missing.toml"]) == 2
