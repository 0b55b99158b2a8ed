"""One training process per run directory: ``RUN_DIR/.lock``.

A second process is refused with a message naming the holder; a lock whose process is gone
does not stay stuck; processes racing for a new directory cannot both get it; the
exclusive-file fallback (no ``flock``) behaves the same way.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability_cases import LOCK_SECOND_ATTEMPTS, RACERS

import sdnet
from sdnet.checkpoint import read_checkpoint
from sdnet.rundir import LOCK, RunDirError, RunLock

rundir_mod = importlib.import_module("sdnet.rundir")

ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")


def _sdnet(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sdnet", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)


def test_a_second_process_is_refused_while_the_first_trains(tmp_path, mnist_dir):
    run = tmp_path / "run"
    flags = ["--epochs", "1", "--batch-size", "16", "--limit-train", "256", "--limit-test", "32",
             "--device", "cpu", "--no-progress", "--no-download", "--log-every", "2",
             "--data-dir", str(mnist_dir)]  # fmt: skip
    first = subprocess.Popen(
        [sys.executable, "-m", "sdnet", "train", *flags, "--run-dir", str(run)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=ENV,
    )
    assert first.stderr is not None
    for line in first.stderr:  # training (a step line): the lock is held
        if "step 2/" in line:
            break
    first.send_signal(signal.SIGSTOP)  # alive, holding the lock, not progressing
    try:
        holder = f"in use by process {first.pid} on {socket.gethostname()} since "
        attempts = (["train", "--resume", str(run)], ["train", *flags, "--run-dir", str(run)])
        assert len(attempts) == LOCK_SECOND_ATTEMPTS
        for args in attempts:
            second = _sdnet(*args)
            assert second.returncode == 1, second.stderr
            err = second.stderr.strip().splitlines()
            assert len(err) == 1 and holder in err[0], err
            assert f"lock file {run / LOCK}" in err[0] and "choose another run_dir" in err[0]
        info = json.loads((run / LOCK).read_text())
        assert info["pid"] == first.pid and info["host"] == socket.gethostname()
    finally:
        first.send_signal(signal.SIGCONT)
    _, rest = first.communicate(timeout=300)
    assert first.returncode == 0, rest
    assert not (run / LOCK).exists()
    assert read_checkpoint(run / "model.npz")  # the first run finished untouched


KEEPER = """
import sys, time
from sdnet.rundir import RunLock
RunLock.acquire(sys.argv[1])
print("LOCKED", flush=True)
time.sleep(600)
"""


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    keeper = subprocess.Popen(
        [sys.executable, "-c", KEEPER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    assert keeper.stdout is not None and keeper.stdout.readline().strip() == "LOCKED"
    tmp_path.joinpath(".checkpoint.npz.abc123.tmp").write_bytes(b"PK half a file")  # its write
    with pytest.raises(RunDirError, match=f"in use by process {keeper.pid}"):
        RunLock.acquire(tmp_path)
    keeper.kill()  # SIGKILL: no chance to clean up
    keeper.wait()
    keeper.stdout.close()
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == keeper.pid  # left behind
    with RunLock.acquire(tmp_path) as lock:
        assert lock.note is not None
        assert f"took over {tmp_path / LOCK} from process {keeper.pid}" in lock.note
        assert "which is no longer running" in lock.note
        assert "removed 1 temporary file(s) left by an interrupted write" in lock.note
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK).exists() and not list(tmp_path.iterdir())


def test_the_same_process_cannot_train_twice_in_one_directory(tmp_path):
    with RunLock.acquire(tmp_path):
        with pytest.raises(RunDirError, match=f"in use by this process {os.getpid()}"):
            RunLock.acquire(tmp_path)
        with pytest.raises(RunDirError, match="in use by this process"):
            sdnet.train(run_dir=str(tmp_path), download=False)
    with RunLock.acquire(tmp_path) as lock:  # released: free again, nothing to report
        assert lock.note is None


RACER = """
import os, sys, time
from pathlib import Path
from sdnet.rundir import RunDirError, claim_new_run_dir
run, flags = Path(sys.argv[1]), Path(sys.argv[2])
(flags / f"ready-{os.getpid()}").touch()
while not (flags / "go").exists():
    time.sleep(0.001)
try:
    path, lock = claim_new_run_dir(run, "mnist", "resnet8")
except RunDirError as exc:
    print("REFUSED", exc, flush=True)
    sys.exit(0)
print("WON", flush=True)
while not (flags / "done").exists():
    time.sleep(0.01)
lock.release()
"""


def test_processes_racing_for_one_directory_one_wins(tmp_path):
    run, flags, n = tmp_path / "run", tmp_path / "flags", RACERS
    flags.mkdir()
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(run), str(flags)],
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for _ in range(n)
    ]
    deadline = time.monotonic() + 120
    while len(list(flags.glob("ready-*"))) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    (flags / "go").touch()  # all at once
    said = {p.pid: p.stdout.readline().strip() for p in racers if p.stdout is not None}
    (flags / "done").touch()
    for p in racers:
        assert p.wait(timeout=60) == 0
        p.stdout.close()
    winners = [pid for pid, line in said.items() if line == "WON"]
    assert len(winners) == 1, said
    for pid, line in said.items():
        if pid != winners[0]:
            assert line.startswith("REFUSED") and "is in use by" in line, line
            assert "process" in line and str(pid) not in line.split("in use by")[1]
    assert not (run / LOCK).exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _stale(run: Path, **info: object) -> None:
    (run / LOCK).write_text(json.dumps(dict({"host": socket.gethostname()}, **info)))


def _live(run: Path) -> RunLock:
    return RunLock.acquire(run)  # this process holds it


def _dead(run: Path) -> int:
    dead = _dead_pid()
    _stale(run, pid=dead, started=time.time())
    return dead


def _reused(run: Path) -> int:
    _stale(run, pid=os.getppid(), proc_start="1")  # alive, but not the process that locked
    return os.getppid()


def _other_host(run: Path) -> int:
    (run / LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    return 1


# (make the holder, taken over?, what the note or the error says)
FALLBACK = [
    pytest.param(_live, False, f"this process {os.getpid()} on .*delete", id="live-holder"),
    pytest.param(_dead, True, "from process {pid} on", id="dead-pid"),
    pytest.param(_reused, True, "from process {pid} on", id="reused-pid"),
    pytest.param(_other_host, False, "process 1 on elsewhere.example.*delete", id="other-host"),
]


@pytest.mark.parametrize("holder, taken, says", FALLBACK)
def test_the_exclusive_file_fallback(holder, taken, says, tmp_path, monkeypatch):
    """Where flock is unavailable the lock is an exclusively created file, judged by its pid
    and, on Linux, the kernel start time of that pid."""
    monkeypatch.setattr(rundir_mod, "fcntl", None)
    made = holder(tmp_path)
    pid = made if isinstance(made, int) else os.getpid()
    if taken:
        with RunLock.acquire(tmp_path) as lock:
            assert lock.note is not None and says.format(pid=pid) in lock.note, lock.note
            assert "no longer running" in lock.note
        assert not (tmp_path / LOCK).exists()
    else:
        with pytest.raises(RunDirError, match=says):
            RunLock.acquire(tmp_path)
        assert (tmp_path / LOCK).exists()  # left as it was
    if isinstance(made, RunLock):
        made.release()
        assert not (tmp_path / LOCK).exists()
