"""Labels are checked where data enters: datasets, loaders, evaluation, the loss, the guard.

A label outside ``0 .. K-1`` used to give a zero one-hot row: a finite loss that ignored the
sample while the gradient disagreed, and ``sdnet.evaluate`` reporting accuracy 0 instead of an
error. Each test below fails on that behaviour.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sdnet
import sdnet.functional as F
from sdnet.data import ArrayDataset, Loader

guard_mod = importlib.import_module("sdnet.training.guard")

BAD = np.array([0, 1, 99, -5])


def _images(n: int) -> np.ndarray:
    return np.zeros((n, 1, 28, 28), dtype=np.uint8)


def _dataset(labels: np.ndarray, classes: int = 10) -> ArrayDataset:
    return ArrayDataset(_images(len(labels)), labels, "toy", "test", classes, (0.5,), (0.25,))


# -- the loss ---------------------------------------------------------------------------------


def test_out_of_range_labels_make_the_loss_and_their_gradient_rows_nan(
    backend: sdnet.Backend,
) -> None:
    logits = backend.asarray(np.zeros((4, 10)), "float32")
    loss, saved = F.softmax_cross_entropy(logits, backend.asarray(BAD, backend.xp.int64))
    assert np.isnan(float(backend.to_numpy(loss)))
    d = backend.to_numpy(F.softmax_cross_entropy_backward(saved))
    assert np.isfinite(d[:2]).all() and np.isnan(d[2:]).all()  # loss and gradient agree
    good, _ = F.softmax_cross_entropy(logits, backend.asarray(BAD % 10, backend.xp.int64))
    assert float(backend.to_numpy(good)) == pytest.approx(np.log(10.0))


def test_float_labels_are_refused_by_the_loss() -> None:
    with pytest.raises(TypeError, match="integer class indices"):
        F.softmax_cross_entropy(np.zeros((2, 3)), np.array([0.0, 2.5]))


# -- datasets, loaders, evaluation --------------------------------------------------------------


@pytest.mark.parametrize(
    "labels, match",
    [
        (BAD, r"2 label\(s\) outside 0..9 \(they span -5..99\)"),
        (np.array([0.0, 1.0]), "integer class indices"),
        (np.array([True, False]), "integer class indices"),
    ],
)
def test_array_dataset_refuses_labels_that_are_not_class_indices(
    labels: np.ndarray, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        _dataset(labels)


def test_the_loader_checks_labels_changed_after_the_dataset_was_made() -> None:
    ds = _dataset(np.array([0, 1, 2, 3]))
    ds.labels[2] = 42  # the arrays of a frozen dataset are still writable
    with pytest.raises(ValueError, match="outside 0..9"):
        Loader(ds, batch_size=2, shuffle=False)


def test_evaluate_refuses_labels_beyond_the_models_classes() -> None:
    model = sdnet.build_model("resnet8", num_classes=10, in_channels=1, seed=0)
    ds = _dataset(np.array([0, 1, 50, 3]), classes=100)
    with pytest.raises(ValueError, match="predicts 10 classes .* go up to 50"):
        sdnet.evaluate(model, ds)
    with pytest.raises(ValueError, match="outside 0..9"):
        sdnet.evaluate(model, _dataset(BAD))


# -- the finiteness guard names the labels ------------------------------------------------------


def _corrupt_labels_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Training batch ``step`` (1-based) gets a label of 99, after every check of the data."""
    real, calls = Loader.batches, {"n": 0}

    def batches(self: Loader, plan: Any, start: int = 0) -> Any:
        for x, y in real(self, plan, start):
            if self.shuffle:
                calls["n"] += 1
                if calls["n"] == step:
                    y = self.backend.asarray(np.r_[99, np.asarray(y)[1:]])
            yield x, y

    monkeypatch.setattr(Loader, "batches", batches)


@pytest.mark.parametrize("deferred", [False, True], ids=["host", "deferred"])
def test_a_bad_label_stops_training_at_its_step_naming_the_labels(
    deferred: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mnist_dir: Path
) -> None:
    if deferred:
        monkeypatch.setattr(guard_mod, "defers_checks", lambda backend: True)
    _corrupt_labels_at(monkeypatch, 3)
    with pytest.raises(sdnet.NonFiniteError) as info:
        sdnet.train(
            model="resnet8", epochs=1, batch_size=16, limit_train=96, limit_test=32,
            device="cpu", progress=False, download=False, data_dir=str(mnist_dir),
            run_dir=str(tmp_path / "run"),
        )  # fmt: skip
    msg = str(info.value)
    assert "non-finite at step 3" in msg
    assert "1 value(s) outside 0..9 (e.g. 99)" in msg and "The data, not the training" in msg
