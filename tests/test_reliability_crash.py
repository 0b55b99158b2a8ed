"""Crash safety: a real training process killed with SIGKILL, then resumed, again and again.

Kills land at seeded random moments (data loading, steps, checkpoint writes, evaluation, the
final save) and inside checkpoint writes at each phase of the atomic write. After every kill
each checkpoint present must load, and every chain of kills and resumes must end with exactly
the weights, optimizer state and history of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from reliability_cases import KILL_SEED, KILLS_PER_PHASE, KILLS_RANDOM, WRITE_PHASES, count

from sdnet.checkpoint import read_checkpoint
from sdnet.rundir import LOCK

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks training processes")

CHILD = Path(__file__).with_name("reliability_child.py")
TIMING = ("seconds", "images_per_second")  # the only fields allowed to differ


def tiny(mnist_dir: Path) -> dict[str, Any]:
    """resnet8 with gates on, 192 images in batches of 16, 2 epochs: 24 steps, a checkpoint
    after every one."""
    return dict(
        model="resnet8",
        epochs=2,
        batch_size=16,
        limit_train=192,
        limit_test=64,
        eval_batch_size=64,
        p_last=0.5,
        device="cpu",
        progress=False,
        download=False,
        log_every=4,
        checkpoint_every=1,
        data_dir=str(mnist_dir),
    )


class Server:
    """A warm process (sdnet imported) that forks one training process per life."""

    def __init__(self, log: Path) -> None:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
        self.log = log
        with open(log, "a") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHILD), "--serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
            )

    def _line(self) -> list[str]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the server ended: {self.log.read_text()[-3000:]}"
        return line.split()

    def fork(self, run: Path, options: dict[str, Any], pause: str | None = None) -> int:
        """Start a life: a new run in ``run``, or its resumption; returns its pid."""
        assert self.proc.stdin is not None
        cmd = {"run": str(run), "options": options, "pause": pause}
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        word, pid = self._line()
        assert word == "FORKED"
        return int(pid)

    def until(self, pid: int, *words: str) -> str:
        """Read the life's lines until one of ``words`` (returned)."""
        while True:
            word, who, *_ = self._line()
            if int(who) == pid and word in words:
                return word

    def reap(self, pid: int) -> int:
        """Collect the (ended or killed) life; its exit status (-9: SIGKILL)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("reap\n")
        self.proc.stdin.flush()
        while True:
            word, who, *rest = self._line()
            if word == "EXIT" and int(who) == pid:
                return int(rest[0])

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.proc.stdout.close()


def check_readable(run: Path) -> None:
    """After a kill: every checkpoint file present loads, the config parses."""
    for name in ("checkpoint.npz", "model.npz"):
        if (run / name).exists():
            read_checkpoint(run / name)  # raises CheckpointError if unreadable
    if (run / "config.json").exists():
        json.loads((run / "config.json").read_text())


def _history(meta: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in h.items() if k not in TIMING} for h in meta["history"]]


def _steps(run: Path) -> list[int]:
    records = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if r["type"] == "step"]


def assert_same_run(run: Path, base: Path) -> None:
    """``run`` ended exactly like the uninterrupted ``base``, and left nothing behind."""
    for name in ("model.npz", "checkpoint.npz"):
        got, meta = read_checkpoint(run / name)
        want, base_meta = read_checkpoint(base / name)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{run / name}: {k}")
    assert meta["step"] == base_meta["step"]
    assert _history(meta) == _history(base_meta)
    assert _steps(run) == _steps(base)  # each step line once, as if never interrupted
    left = [p.name for p in run.iterdir() if p.name.endswith(".tmp") or p.name == LOCK]
    assert not left, f"left behind in {run}: {left}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = Server(tmp_path_factory.mktemp("server") / "children.log")
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def baseline(server: Server, tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path):
    """An uninterrupted run in the same kind of process, and its duration."""
    base = tmp_path_factory.mktemp("crash") / "base"
    t0 = time.monotonic()
    pid = server.fork(base, tiny(mnist_dir))
    server.until(pid, "DONE")
    seconds = time.monotonic() - t0
    assert server.reap(pid) == 0
    return base, seconds


def test_sigkill_at_random_moments_then_resume_is_exact(baseline, server, tmp_path, mnist_dir):
    base, seconds = baseline
    rng = np.random.default_rng(KILL_SEED)
    plans = ["random"] * count(*KILLS_RANDOM)
    plans += [p for p in WRITE_PHASES for _ in range(count(*KILLS_PER_PHASE))]
    rng.shuffle(plans)
    opts = tiny(mnist_dir)
    kills: Counter[str] = Counter()
    chains = [tmp_path / "chain-0"]
    for plan in plans:
        while True:  # until this plan's kill lands (a life that ends on its own ends a chain)
            run = chains[-1]
            if plan == "random":
                pid = server.fork(run, opts)
                time.sleep(rng.uniform(0.0, seconds))
                os.kill(pid, signal.SIGKILL)  # harmless if it ended: a zombie until reaped
            else:
                nth = int(rng.integers(1, 4))
                pid = server.fork(run, opts, pause=f"{plan}:{nth}")
                if server.until(pid, "PAUSED", "DONE") == "PAUSED":
                    os.kill(pid, signal.SIGKILL)
            code = server.reap(pid)
            check_readable(run)
            if code == -signal.SIGKILL:
                kills[plan] += 1
                break
            assert code == 0, server.log.read_text()[-3000:]
            assert_same_run(run, base)
            chains.append(tmp_path / f"chain-{len(chains)}")
    # the last chain: resume once more, uninterrupted, to its end
    pid = server.fork(chains[-1], opts)
    assert server.reap(pid) == 0, server.log.read_text()[-3000:]
    assert_same_run(chains[-1], base)
    assert kills["random"] == count(*KILLS_RANDOM)
    for phase in WRITE_PHASES:
        assert kills[phase] == count(*KILLS_PER_PHASE), kills
    assert "took over" in server.log.read_text()  # the killed lives' locks were taken over


def test_resume_before_the_first_checkpoint_starts_over(baseline, server, tmp_path, mnist_dir):
    """A run killed after writing config.json but before any checkpoint (the default
    checkpoints only at epoch ends) is resumed from its first step, not refused."""
    base, _ = baseline
    run = tmp_path / "run"
    pid = server.fork(run, tiny(mnist_dir), pause="partial:1")
    assert server.until(pid, "PAUSED", "DONE") == "PAUSED"  # in the 1st checkpoint write
    os.kill(pid, signal.SIGKILL)
    assert server.reap(pid) == -signal.SIGKILL
    assert not (run / "checkpoint.npz").exists() and (run / "config.json").exists()
    assert list(run.glob(".checkpoint.npz.*.tmp"))  # the half-written temporary file
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"type": "step", "step": 1, "lo')  # and a torn line
    pid = server.fork(run, {})
    assert server.reap(pid) == 0, server.log.read_text()[-3000:]
    assert "no checkpoint.npz yet: from the start" in server.log.read_text()
    assert_same_run(run, base)
