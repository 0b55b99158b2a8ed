"""On a GPU the per-step finiteness flags stay on the device and are read every few steps.

The policy is forced on here (NumPy) to test it on any machine: a NaN that appears at step 5
stops the run at the next read, naming step 5, and no checkpoint after it is written.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sdnet
from sdnet.checkpoint import read_checkpoint
from sdnet.data import Loader

guard_mod = importlib.import_module("sdnet.training.guard")

BAD_STEP = 5


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("every", [2, 10], ids=["every-2", "every-10"])
def test_deferred_check_names_the_first_bad_step(
    every: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mnist_dir: Path
) -> None:
    monkeypatch.setattr(guard_mod, "defers_checks", lambda backend: True)
    monkeypatch.setattr(guard_mod, "CHECK_EVERY_ON_DEVICE", every)
    reads = {"n": 0}
    real_check = guard_mod.FinitenessGuard.flush

    def counted(self: Any, step: int, lr: float) -> None:
        reads["n"] += bool(self.pending)  # a read of the device: only with flags pending
        real_check(self, step, lr)

    monkeypatch.setattr(guard_mod.FinitenessGuard, "flush", counted)
    real, calls = Loader.batches, {"n": 0}

    def batches(self: Loader, plan: Any, start: int = 0) -> Any:
        for x, y in real(self, plan, start):
            if self.shuffle:
                calls["n"] += 1
                if calls["n"] == BAD_STEP:
                    x = np.array(x)
                    x[0, 0, 5, 5] = np.nan
            yield x, y

    monkeypatch.setattr(Loader, "batches", batches)
    run = tmp_path / "run"
    with pytest.raises(sdnet.NonFiniteError) as info:
        sdnet.train(
            model="resnet8", epochs=1, batch_size=16, limit_train=160, limit_test=32,
            device="cpu", progress=False, download=False, log_every=100,
            checkpoint_every=3, data_dir=str(mnist_dir), run_dir=str(run),
        )  # fmt: skip
    msg = str(info.value)
    assert f"non-finite at step {BAD_STEP}" in msg
    _, meta = read_checkpoint(run / "checkpoint.npz")
    assert meta["step"] == 3  # the checkpoint due at step 6 was never written
    # read after steps 2, 3 (checkpoint), 5 with every=2; after 3 (checkpoint), 6 with every=10
    assert reads["n"] == (3 if every == 2 else 2)


def test_host_backends_check_every_step() -> None:
    assert guard_mod.defers_checks(sdnet.get_backend("cpu")) is False
