"""The ``sdnet`` command, run as a real subprocess: train, eval, plot, info, Ctrl-C, errors."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import default_signals

from sdnet.cli import build_parser, main
from sdnet.config import TrainConfig

TINY = [
    "--epochs", "1", "--batch-size", "32", "--limit-train", "256", "--limit-test", "100",
    "--device", "cpu", "--no-progress", "--no-download",
]  # fmt: skip


def sdnet_cmd(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    return subprocess.run(
        [sys.executable, "-m", "sdnet", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


def test_train_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in text, f.name
    assert "(default: mnist)" in text and "(default: resnet8)" in text
    assert "--resume" in text


def test_flags_parse_into_the_config_types():
    args = build_parser().parse_args(
        ["train", "--p-last", "0.5", "--milestones", "5", "8", "--lr-mult", "*.wh.weight=0.01",
         "--no-nesterov", "--val-split", "0.1", "--crop-pad", "2"]
    )  # fmt: skip
    assert args.p_last == 0.5 and args.milestones == [5, 8] and args.nesterov is False
    assert args.lr_mult == [("*.wh.weight", 0.01)] and args.crop_pad == 2


@pytest.mark.parametrize(
    "argv, needle, status",
    [
        (["train", "--batch-size", "0"], "batch_size=0", 2),
        (["train", "--p-last", "1.5"], "p_last=1.5", 2),
        (["train", "--model", "resnet7"], "6n+2", 2),
        (["train", "--model", "alexnet"], "model='alexnet'", 2),
        (["train", "--dataset", "imagenet"], "dataset='imagenet'", 2),
        (["eval", "x.npz", "--batch-size", "0"], "--batch-size", 2),
        (["train", "--resume", "/nonexistent/run"], "does not exist", 1),
        (["eval", "/nonexistent/model.npz"], "no such checkpoint", 1),
        (["plot", "/nonexistent/run"], "not a run directory", 1),
    ],
)
def test_bad_arguments_exit_nonzero_with_one_line(argv, needle, status, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == status
    assert needle in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_gpu_without_a_usable_gpu_is_one_line(tmp_path):
    import sdnet

    try:
        sdnet.get_backend("gpu")
        pytest.skip("a GPU is available here")
    except sdnet.BackendUnavailable:
        pass
    out = sdnet_cmd("train", "--device", "gpu", "--run-dir", str(tmp_path / "r"))
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("sdnet: error:") and "GPU" in out.stderr


def test_lr_mult_needs_pattern_equals_number(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--lr-mult", "oops"])
    assert exit_.value.code == 2
    assert "PATTERN=MULT" in capsys.readouterr().err


def test_train_eval_plot_info_end_to_end(tmp_path, mnist_dir):
    run = tmp_path / "run"
    out = sdnet_cmd("train", *TINY, "--data-dir", str(mnist_dir), "--run-dir", str(run))
    assert out.returncode == 0, out.stderr
    assert "test accuracy" in out.stdout and str(run) in out.stdout
    assert "epoch 1/1" in out.stderr  # plain log lines: stderr is not a terminal

    ev = sdnet_cmd("eval", str(run / "model.npz"), "--data-dir", str(mnist_dir), "--limit",
                   "100", "--device", "cpu", "--no-download")  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    assert "mnist test: accuracy" in ev.stdout and "(100 images)" in ev.stdout

    pl = sdnet_cmd("plot", str(run))
    assert pl.returncode == 0, pl.stderr
    png = run / "metrics.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    info = sdnet_cmd("info")
    assert info.returncode == 0, info.stderr
    assert "sdnet" in info.stdout and "cpu" in info.stdout and "mnist" in info.stdout

    version = sdnet_cmd("--version")
    assert version.returncode == 0 and version.stdout.startswith("sdnet ")


def test_ctrl_c_saves_and_resume_finishes(tmp_path, mnist_dir):
    """A real SIGINT to a real training process: checkpoint, exit 130, then --resume."""
    run = tmp_path / "run"
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    args = [
        sys.executable, "-m", "sdnet", "train", "--epochs", "2", "--batch-size", "16",
        "--limit-train", "1024", "--limit-test", "100", "--device", "cpu", "--no-progress",
        "--no-download", "--log-every", "1", "--data-dir", str(mnist_dir), "--run-dir", str(run),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=default_signals)  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # wait until training runs (a step line), then press Ctrl-C
        if "step 3/" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err and "--resume" in err
    assert "Traceback" not in err
    assert (run / "checkpoint.npz").is_file()

    changed = sdnet_cmd("train", "--resume", str(run), "--lr", "0.5")
    assert changed.returncode == 2 and "only device" in changed.stderr

    out = sdnet_cmd("train", "--resume", str(run), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "resuming" in out.stderr
    assert "after 2 epochs" in out.stdout
    assert Path(run / "model.npz").is_file()


def test_unusable_run_directory_is_one_line_and_nothing_is_left(tmp_path, capsys, mnist_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code = main(["train", *TINY, "--data-dir", str(mnist_dir), "--run-dir", str(blocker / "run")])
    err = capsys.readouterr().err
    assert code != 0 and "cannot write to run directory" in err
    assert len(err.strip().splitlines()) == 1
    # a setup failure after the directory was made gives it back empty-handed
    run = tmp_path / "run"
    code = main(["train", *TINY, "--data-dir", str(tmp_path / "empty"), "--run-dir", str(run)])
    assert code != 0 and "mnist" in capsys.readouterr().err
    assert not run.exists()
