"""SIGTERM and SIGHUP stop sdnet as the first Ctrl-C does, with real signals to real processes.

Training finishes the step in progress, saves a checkpoint of it, releases the lock, logs an
``interrupted`` event and exits with 128 + the signal (143, 129; 130 for Ctrl-C); resuming
ends exactly where an uninterrupted run ends. ``sdnet eval`` and ``sdnet sweep`` stop with the
same statuses. A second signal stops at once and is logged too; a signal ignored when sdnet
began stays ignored, and the handlers found are put back.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import default_signals

import sdnet
from sdnet.checkpoint import read_checkpoint
from sdnet.rundir import LOCK

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")

train_mod = importlib.import_module("sdnet.training.run")
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
# 256 images in batches of 16, 2 epochs: 32 steps; a metrics line after every step
FLAGS = ["--epochs", "2", "--batch-size", "16", "--limit-train", "256", "--limit-test", "64",
         "--p-last", "0.5", "--device", "cpu", "--no-progress", "--no-download",
         "--log-every", "1"]  # fmt: skip


def _popen(args: list[str], **kw: Any) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "sdnet", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, preexec_fn=default_signals, **kw)  # fmt: skip


def _catches(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has a handler installed for ``sig`` (Linux: /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def _wait_for_step(proc: subprocess.Popen[str], step: int) -> list[str]:
    """Read training's log lines until ``step`` is done; the lines read."""
    assert proc.stderr is not None
    lines = []
    deadline = time.monotonic() + 180
    for line in proc.stderr:
        lines.append(line)
        if f" step {step}/" in line or time.monotonic() > deadline:
            return lines
    raise AssertionError("".join(lines))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """The same run as a process of its own, left alone: its final weights."""
    run = tmp_path_factory.mktemp("sig") / "base"
    proc = _popen(["train", *FLAGS, "--data-dir", str(mnist_dir), "--run-dir", str(run)])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return run / "model.npz"


def _same_weights(a: Path, b: Path) -> None:
    got, want = read_checkpoint(a)[0], read_checkpoint(b)[0]
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.parametrize(
    "sig, status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"]
)
def test_sigterm_and_sighup_checkpoint_then_resume_is_exact(
    sig, status, uninterrupted, tmp_path, mnist_dir
):
    """SIGTERM at step 150 exited -15: no message, no checkpoint, a stale lock."""
    run = tmp_path / "run"
    proc = _popen(["train", *FLAGS, "--data-dir", str(mnist_dir), "--run-dir", str(run)])
    _wait_for_step(proc, 5)
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == status, rest
    last = rest.strip().splitlines()[-1]
    name = signal.Signals(sig).name
    assert last.startswith(f"sdnet: interrupted ({name}) at step ") and "--resume" in last, rest
    assert "Traceback" not in rest
    step = int(last.split(" at step ")[1].split(";")[0])
    assert step >= 5 and read_checkpoint(run / "checkpoint.npz")[1]["step"] == step
    assert not (run / LOCK).exists()
    records = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    event = records[-1]
    assert event["type"] == "event" and event["event"] == "interrupted"
    assert event["step"] == step and f"({name})" in event["message"]
    again = _popen(["train", "--resume", str(run)])
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    _same_weights(run / "model.npz", uninterrupted)


def test_eval_and_sweep_stop_on_sigterm_with_status_143(uninterrupted, tmp_path, mnist_dir):
    """``sdnet eval`` was killed outright; ``sdnet sweep`` handled SIGTERM but exited 130."""
    ev = _popen(["eval", str(uninterrupted), "--split", "train", "--batch-size", "50",
                 "--device", "cpu", "--no-download", "--data-dir", str(mnist_dir)])  # fmt: skip
    deadline = time.monotonic() + 120
    while not _catches(ev.pid, signal.SIGTERM):  # sdnet's handler is in place
        assert ev.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    ev.send_signal(signal.SIGTERM)
    out, err = ev.communicate(timeout=120)
    assert ev.returncode == 143 and err.strip() == "sdnet: interrupted (SIGTERM)", err
    assert out == ""
    options = dict(epochs=2, batch_size=16, limit_train=512, limit_test=64, log_every=1,
                   data_dir=str(mnist_dir), download=False)  # fmt: skip
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in options.items())
    (tmp_path / "s.toml").write_text(f"seeds = [0]\n[base]\n{lines}\n[grid]\np_last = [0.5]\n")
    sw = _popen(["sweep", "s.toml", "--devices", "cpu"], cwd=tmp_path)
    metrics = tmp_path / "sweeps" / "s" / "trials" / "000-p_last=0.5-seed=0" / "metrics.jsonl"
    while not (metrics.is_file() and '"step"' in metrics.read_text()):
        assert sw.poll() is None and time.monotonic() < deadline + 120, "no trial started"
        time.sleep(0.05)
    sw.send_signal(signal.SIGTERM)
    _, err = sw.communicate(timeout=180)
    assert sw.returncode == 143, err
    assert "interrupted (SIGTERM)" in err and "Rerun the same command" in err
    status_file = tmp_path / "sweeps" / "s" / "status" / "000-p_last=0.5-seed=0.json"
    status = json.loads(status_file.read_text())
    assert status["state"] == "pending" and (metrics.parent / "checkpoint.npz").is_file()


def _signals_at_step(monkeypatch: pytest.MonkeyPatch, step: int, sigs: list[int]) -> None:
    """Raise ``sigs`` (one after the other) inside training step ``step``."""
    real, calls = train_mod.softmax_cross_entropy, {"n": 0}

    def loss(logits: Any, y: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == step:
            for sig in sigs:
                signal.raise_signal(sig)
        return real(logits, y)

    monkeypatch.setattr(train_mod, "softmax_cross_entropy", loss)


TINY = dict(model="resnet8", epochs=1, batch_size=16, limit_train=128, limit_test=32,
            eval_batch_size=32, device="cpu", progress=False, download=False,
            checkpoint_every=2)  # fmt: skip


@pytest.fixture
def sigterm_outside() -> Iterator[Any]:
    """A SIGTERM handler of the test's own (that raises), put back afterwards: a SIGTERM that
    sdnet does not handle fails the test instead of ending the test process."""

    def outside(signum: int, frame: Any) -> None:
        raise RuntimeError("the SIGTERM reached the test's own handler")

    old = signal.signal(signal.SIGTERM, outside)
    try:
        yield outside
    finally:
        signal.signal(signal.SIGTERM, old)


def test_a_second_signal_stops_at_once_and_is_logged(
    tmp_path, monkeypatch, mnist_dir, sigint_handled, sigterm_outside
):
    """A second Ctrl-C during the step the first one asked to finish: no event was logged."""
    run = tmp_path / "run"
    _signals_at_step(monkeypatch, 3, [signal.SIGINT, signal.SIGTERM])
    with pytest.raises(sdnet.Interrupted) as info:
        sdnet.train(**TINY, data_dir=str(mnist_dir), run_dir=str(run))
    assert info.value.signum == signal.SIGTERM and info.value.exit_status == 143
    assert not info.value.checkpointed
    assert "interrupted (SIGTERM) during step 3; the last checkpoint" in str(info.value)
    records = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "interrupted" and records[-1]["message"] == str(info.value)
    assert read_checkpoint(run / "checkpoint.npz")[1]["step"] == 2
    assert not (run / LOCK).exists()
    assert signal.getsignal(signal.SIGTERM) is sigterm_outside


def test_ignored_signals_stay_ignored_and_handlers_are_put_back(
    tmp_path, monkeypatch, mnist_dir, sigint_handled
):
    """SIGHUP ignored (``nohup``) when training begins: a SIGHUP changes nothing. A handler of
    the caller's for SIGTERM is put back afterwards."""
    seen: list[int] = []
    old_term = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        _signals_at_step(monkeypatch, 3, [signal.SIGHUP])
        result = sdnet.train(**TINY, data_dir=str(mnist_dir), run_dir=str(tmp_path / "run"))
        assert result.history[-1]["step"] == 8  # trained to the end
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        signal.raise_signal(signal.SIGTERM)
        assert seen == [signal.SIGTERM]  # the caller's handler is back
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGHUP, old_hup)
