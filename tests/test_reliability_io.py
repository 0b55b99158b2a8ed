"""Full disks and I/O errors during training: the run stops, says which file and why, and the
previous checkpoint stays whole and resumable.

What sdnet does (docs/reliability.md): a checkpoint, weights or metrics file that cannot be
written stops the run with ``RunWriteError`` (an ``OSError`` carrying the errno), whose message
names the file, the error and the step of the checkpoint that is still intact, and says how to
resume; a ``write-failed`` event goes to ``metrics.jsonl`` when the disk still takes it; the
command line exits with status 1.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sdnet
from sdnet.checkpoint import read_checkpoint
from sdnet.cli import main
from sdnet.rundir import LOCK, RunWriteError

# the injections tell a checkpoint's file descriptor from others through /proc (Linux)
pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")

ckpt_mod = importlib.import_module("sdnet.checkpoint")
rundir_mod = importlib.import_module("sdnet.rundir")
train_mod = importlib.import_module("sdnet.training.run")

# 128 images in batches of 16, 2 epochs: 16 steps; checkpoints at steps 2, 4, 6, ...
TINY = dict(
    model="resnet8",
    epochs=2,
    batch_size=16,
    limit_train=128,
    limit_test=64,
    eval_batch_size=64,
    p_last=0.5,
    device="cpu",
    progress=False,
    download=False,
    log_every=4,
    checkpoint_every=2,
)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """An uninterrupted run's directory."""
    run = tmp_path_factory.mktemp("io") / "base"
    sdnet.train(**TINY, data_dir=str(mnist_dir), run_dir=str(run))
    return run


def _same_weights(run: Path, base: Path) -> None:
    got, want = read_checkpoint(run / "model.npz")[0], read_checkpoint(base / "model.npz")[0]
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def _events(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    out = []
    for s in lines:
        try:
            out.append(json.loads(s))
        except json.JSONDecodeError:  # the torn line of a failed append
            continue
    return [r for r in out if r["type"] == "event"]


ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _name(fd: int) -> str:
    """The path of an open file (Linux: read from /proc; the writer only has a descriptor)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _fail_checkpoint_savez(monkeypatch: pytest.MonkeyPatch, nth: int) -> None:
    """The ``nth`` checkpoint write fills the disk after 4 KiB of the file."""
    real, calls = ckpt_mod.np.savez, {"n": 0}

    def savez(fh: Any, *args: Any, **kwds: Any) -> None:
        if ".checkpoint.npz." in _name(fh.fileno()):
            calls["n"] += 1
            if calls["n"] == nth:
                fh.write(b"PK\x03\x04" + b"\0" * 4096)
                raise ENOSPC
        real(fh, *args, **kwds)

    monkeypatch.setattr(ckpt_mod.np, "savez", savez)


def _fail_checkpoint_fsync(monkeypatch: pytest.MonkeyPatch, nth: int) -> None:
    """``fsync`` of the ``nth`` checkpoint's temporary file fails with EIO (Linux: the file's
    name is read from /proc)."""
    real, calls = os.fsync, {"n": 0}

    def fsync(fd: int) -> None:
        if ".checkpoint.npz." in _name(fd):
            calls["n"] += 1
            if calls["n"] == nth:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _fail_metrics_append(monkeypatch: pytest.MonkeyPatch, nth: int) -> None:
    """The ``nth`` append to metrics.jsonl writes half its line, then the disk is full."""
    calls = {"n": 0}

    class Full:
        def __init__(self, fh: Any) -> None:
            self.fh = fh

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.fh.close()

        def write(self, text: str) -> int:
            self.fh.write(text[: len(text) // 2])
            raise ENOSPC

    def fake_open(path: Any, mode: str = "r", *args: Any, **kwds: Any) -> Any:
        fh = open(path, mode, *args, **kwds)
        if mode == "a" and str(path).endswith("metrics.jsonl"):
            calls["n"] += 1
            if calls["n"] == nth:
                return Full(fh)
        return fh

    monkeypatch.setattr(rundir_mod, "open", fake_open, raising=False)


def _fail_model_save(monkeypatch: pytest.MonkeyPatch, nth: int) -> None:
    """The final weights file (``nth`` is 1: a run writes one) fills the disk."""
    real = ckpt_mod.np.savez

    def savez(fh: Any, *args: Any, **kwds: Any) -> None:
        if ".model.npz." in _name(fh.fileno()):
            raise ENOSPC
        real(fh, *args, **kwds)

    monkeypatch.setattr(ckpt_mod.np, "savez", savez)


# (inject, nth, file named, errno, the step of the checkpoint left intact)
FAILURES = [
    pytest.param(_fail_checkpoint_savez, 3, "checkpoint.npz", errno.ENOSPC, 4, id="ckpt-ENOSPC"),
    pytest.param(_fail_checkpoint_fsync, 3, "checkpoint.npz", errno.EIO, 4, id="ckpt-fsync-EIO"),
    pytest.param(_fail_metrics_append, 2, "metrics.jsonl", errno.ENOSPC, 6, id="metrics-ENOSPC"),
    pytest.param(_fail_model_save, 1, "model.npz", errno.ENOSPC, 16, id="model-ENOSPC"),
]


@pytest.mark.parametrize("inject, nth, name, code, kept", FAILURES)
def test_a_failed_write_stops_the_run_and_keeps_the_checkpoint(
    inject, nth, name, code, kept, baseline, monkeypatch, tmp_path, mnist_dir
):
    run = tmp_path / "run"
    inject(monkeypatch, nth)
    with pytest.raises(RunWriteError) as info:
        sdnet.train(**TINY, data_dir=str(mnist_dir), run_dir=str(run))
    monkeypatch.undo()
    exc = info.value
    assert isinstance(exc, OSError) and exc.errno == code
    msg = str(exc)
    assert f"cannot write {run / name}" in msg
    assert f"{os.strerror(code)} ({errno.errorcode[code]})" in msg
    assert f"the previous checkpoint, {run / 'checkpoint.npz'} (step {kept}), is intact" in msg
    assert f"--resume {run}" in msg
    _, meta = read_checkpoint(run / "checkpoint.npz")  # loads, and is the one named
    assert meta["step"] == kept
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp") or p.name == LOCK]
    if name != "metrics.jsonl":  # the event line fits while the disk takes appends
        assert _events(run)[-1]["event"] == "write-failed"
        assert _events(run)[-1]["message"] == msg
    resumed = sdnet.train(resume=run, progress=False)
    assert resumed.history[-1]["step"] == 16
    _same_weights(run, baseline)


def test_the_cli_reports_a_full_disk_in_one_line(monkeypatch, tmp_path, capsys, mnist_dir):
    run = tmp_path / "run"
    _fail_checkpoint_savez(monkeypatch, 2)
    argv = ["train", "--epochs", "1", "--batch-size", "16", "--limit-train", "64",
            "--limit-test", "32", "--device", "cpu", "--no-progress", "--no-download",
            "--checkpoint-every", "2", "--data-dir", str(mnist_dir),
            "--run-dir", str(run)]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sdnet: error: training stopped: cannot write")
    assert str(run / "checkpoint.npz") in err[0] and "No space left on device" in err[0]
    assert read_checkpoint(run / "checkpoint.npz")[1]["step"] == 2


FULL_DISK = """
import os, shutil, subprocess, sys
size, mnt, out = sys.argv[1:4]
subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mnt], check=True)
run = os.path.join(mnt, "run")
proc = subprocess.run([sys.executable, "-m", "sdnet", "train", *sys.argv[4:], "--run-dir", run],
                      capture_output=True, text=True)
sys.stderr.write(proc.stderr)
shutil.copytree(run, out)  # the tmpfs goes with this process's mount namespace
sys.exit(proc.returncode)
"""


def _unshare(probe: Path) -> str | None:
    """``unshare`` when this machine lets us mount a tmpfs in a private mount namespace (root,
    or unprivileged user namespaces), else ``None``."""
    exe = shutil.which("unshare")
    if exe is None or shutil.which("mount") is None:
        return None
    probe.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)]
    ok = subprocess.run([exe, "-rm", *mount], capture_output=True, timeout=30)
    return exe if ok.returncode == 0 else None


def test_a_real_full_disk_stops_the_cli_with_status_1(baseline, tmp_path, mnist_dir):
    """A tmpfs with room for one checkpoint but not for the next one's temporary copy: the
    kernel says ENOSPC in the middle of a real checkpoint write."""
    unshare = _unshare(tmp_path / "probe")
    if unshare is None:
        pytest.skip("no private mount namespace here (unshare -rm); the RLIMIT test still runs")
    size = (baseline / "checkpoint.npz").stat().st_size
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    flags = ["--model", "resnet8", "--epochs", "2", "--batch-size", "16", "--limit-train", "128",
             "--limit-test", "64", "--eval-batch-size", "64", "--p-last", "0.5", "--device",
             "cpu", "--no-progress", "--no-download", "--log-every", "4",
             "--checkpoint-every", "2", "--data-dir", str(mnist_dir)]  # fmt: skip
    args = [unshare, "-rm", sys.executable, "-c", FULL_DISK, str(size * 3 // 2), str(mnt), str(out)]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(args + flags, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr
    assert f"cannot write {mnt / 'run' / 'checkpoint.npz'} at step 4" in last, last
    assert "No space left on device (ENOSPC)" in last and "(step 2), is intact" in last, last
    assert read_checkpoint(out / "checkpoint.npz")[1]["step"] == 2
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp") or p.name == LOCK]
    assert _events(out)[-1]["event"] == "write-failed"
    sdnet.train(resume=out, progress=False)  # on a disk with room: ends as if never stopped
    _same_weights(out, baseline)


LIMITED = """
import resource, runpy, sys
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv[0] = "sdnet"
runpy.run_module("sdnet", run_name="__main__")
"""


def test_a_real_file_size_limit_stops_the_cli_with_status_1(
    baseline, monkeypatch, tmp_path, mnist_dir
):
    """The kernel refuses the write (RLIMIT_FSIZE -> EFBIG): nothing is mocked in the
    process that fails."""
    run = tmp_path / "run"
    real, calls = train_mod.softmax_cross_entropy, {"n": 0}

    def crash_at_step_7(logits: Any, y: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 7:
            raise RuntimeError("simulated crash")
        return real(logits, y)

    monkeypatch.setattr(train_mod, "softmax_cross_entropy", crash_at_step_7)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sdnet.train(**TINY, data_dir=str(mnist_dir), run_dir=str(run))
    monkeypatch.undo()
    size = (run / "checkpoint.npz").stat().st_size
    before = (run / "checkpoint.npz").read_bytes()
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    args = [sys.executable, "-c", LIMITED, str(size // 2), "train", "--resume", str(run)]
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "Traceback" not in out.stderr
    assert last.startswith(f"sdnet: error: training stopped: cannot write {run / 'checkpoint.npz'}")
    assert "File too large (EFBIG)" in last and "(step 6), is intact" in last
    assert (run / "checkpoint.npz").read_bytes() == before
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp") or p.name == LOCK]
    assert _events(run)[-1]["event"] == "write-failed"
    sdnet.train(resume=run, progress=False)
    _same_weights(run, baseline)
