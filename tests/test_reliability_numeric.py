"""NaN and Inf in the input batch, the gradients or the loss: caught at the step they appear.

Every step checks the loss and every gradient (one scalar) before the update, so the failing
step's update is never applied, never saved; the message names the step and what went bad, an
event goes to ``metrics.jsonl`` and the last good checkpoint stays.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sdnet
from sdnet.checkpoint import read_checkpoint
from sdnet.cli import main
from sdnet.data import Loader
from sdnet.rundir import LOCK

train_mod = importlib.import_module("sdnet.training.run")
guard_mod = importlib.import_module("sdnet.training.guard")

BAD_STEP = 5
TINY = dict(
    model="resnet8",
    epochs=1,
    batch_size=16,
    limit_train=128,
    limit_test=32,
    eval_batch_size=32,
    p_last=0.5,
    device="cpu",
    progress=False,
    download=False,
    log_every=2,
    checkpoint_every=1,
)


def _train(run: Path, mnist_dir: Path) -> sdnet.NonFiniteError:
    with pytest.raises(sdnet.NonFiniteError) as info:
        sdnet.train(**TINY, data_dir=str(mnist_dir), run_dir=str(run))
    return info.value


def _kept_good_checkpoint(run: Path, msg: str) -> dict[str, np.ndarray]:
    """The step-4 checkpoint is intact, finite and named; the event is logged; no lock."""
    arrays, meta = read_checkpoint(run / "checkpoint.npz")
    assert meta["step"] == BAD_STEP - 1
    assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")
    assert f"the last good checkpoint, {run / 'checkpoint.npz'}, is kept" in msg
    records = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["type"] == "event" and records[-1]["event"] == "non-finite"
    assert records[-1]["message"] == msg and records[-1]["step"] == BAD_STEP - 1
    assert not (run / LOCK).exists()
    return arrays


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_input_stops_at_its_step(value, monkeypatch, tmp_path, mnist_dir):
    real, calls = Loader.batches, {"n": 0}

    def batches(self: Loader, plan: Any, start: int = 0) -> Any:
        for x, y in real(self, plan, start):
            if self.shuffle:  # the training loader (evaluation does not shuffle)
                calls["n"] += 1
                if calls["n"] == BAD_STEP:
                    x = np.array(x)  # (N, 1, 28, 28) on the host
                    x[3, 0, 10:12, 10:13] = value  # 6 bad values in one image
            yield x, y

    monkeypatch.setattr(Loader, "batches", batches)
    run = tmp_path / "run"
    msg = str(_train(run, mnist_dir))
    assert f"at step {BAD_STEP} (epoch 1, learning rate" in msg
    assert "its input batch holds 6 NaN or infinite values" in msg
    assert "check the dataset files" in msg
    _kept_good_checkpoint(run, msg)


def test_non_finite_gradient_stops_at_its_step(monkeypatch, tmp_path, mnist_dir):
    """NaN in the loss's gradient (the loss itself finite): every gradient goes bad."""
    real, calls = train_mod.softmax_cross_entropy_backward, {"n": 0}

    def backward(saved: Any, scale: float = 1.0) -> Any:
        calls["n"] += 1
        d = real(saved, scale)
        return d * float("nan") if calls["n"] == BAD_STEP else d

    monkeypatch.setattr(train_mod, "softmax_cross_entropy_backward", backward)
    run = tmp_path / "run"
    msg = str(_train(run, mnist_dir))
    first = next(iter(dict(sdnet.build_model("resnet8", in_channels=1).named_parameters())))
    assert f"the gradient of {first} became non-finite at step {BAD_STEP}" in msg
    assert "Lower the learning rate" in msg
    _kept_good_checkpoint(run, msg)


def test_one_infinite_gradient_is_named_and_never_applied(monkeypatch, tmp_path, mnist_dir):
    """+Inf in one parameter's gradient only: that parameter is named, and the parameters in
    memory are still those of the last good step (the update was not applied)."""
    real = sdnet.SGD.flat_grads
    seen: dict[str, Any] = {"calls": 0}

    def flat_grads(self: Any) -> Any:  # the step's gradients, gathered for the check
        seen["calls"] += 1
        if seen["calls"] == BAD_STEP:
            name, p = self.groups[-1].names[-1], self.groups[-1].params[-1]
            seen["name"] = name
            seen["params"] = [
                pair for g in self.groups for pair in zip(g.names, g.params, strict=True)
            ]
            p.grad = p.grad.copy()
            p.grad[0] = float("inf")
        return real(self)

    monkeypatch.setattr(sdnet.SGD, "flat_grads", flat_grads)
    run = tmp_path / "run"
    msg = str(_train(run, mnist_dir))
    assert f"the gradient of {seen['name']} became non-finite at step {BAD_STEP}" in msg
    arrays = _kept_good_checkpoint(run, msg)
    # the parameters (not the batch-norm statistics, which the step's forward pass moved)
    for k, p in seen["params"]:
        np.testing.assert_array_equal(p.value, arrays[f"model/{k}"], err_msg=k)


def test_infinite_loss_stops_at_its_step(monkeypatch, tmp_path, mnist_dir):
    real, calls = train_mod.softmax_cross_entropy, {"n": 0}

    def loss_fn(logits: Any, y: Any) -> Any:
        calls["n"] += 1
        loss, saved = real(logits, y)
        return (loss + float("inf") if calls["n"] == BAD_STEP else loss), saved

    monkeypatch.setattr(train_mod, "softmax_cross_entropy", loss_fn)
    run = tmp_path / "run"
    msg = str(_train(run, mnist_dir))
    assert f"the loss became inf at step {BAD_STEP} (epoch 1" in msg
    assert "input batch" not in msg  # the data was fine
    _kept_good_checkpoint(run, msg)


def test_the_cli_reports_non_finite_values_in_one_line(monkeypatch, tmp_path, capsys, mnist_dir):
    real, calls = train_mod.softmax_cross_entropy_backward, {"n": 0}

    def backward(saved: Any, scale: float = 1.0) -> Any:
        calls["n"] += 1
        d = real(saved, scale)
        return d * float("nan") if calls["n"] == 2 else d

    monkeypatch.setattr(train_mod, "softmax_cross_entropy_backward", backward)
    run = tmp_path / "run"
    argv = ["train", "--epochs", "1", "--batch-size", "16", "--limit-train", "64",
            "--limit-test", "32", "--device", "cpu", "--no-progress", "--no-download",
            "--checkpoint-every", "1", "--data-dir", str(mnist_dir),
            "--run-dir", str(run)]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "became non-finite at step 2" in err[0]
    assert read_checkpoint(run / "checkpoint.npz")[1]["step"] == 1
