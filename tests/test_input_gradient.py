"""The first layer skips the input gradient when nobody wants it (training on data).

``model(x, need_dx=False)`` tells the first layer (the stem convolution, or SeedNet's first
block) not to compute the gradient with respect to ``x``; ``backprop`` then returns ``None``
and every parameter gradient is unchanged. ``sdnet.train`` always asks for that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sdnet
import sdnet.functional as F
from sdnet.layers import conv as conv_layer
from sdnet.layers import linear as linear_layer


def _grads(model: sdnet.Model, x: Any, y: Any, need_dx: bool) -> tuple[Any, dict[str, Any]]:
    model.zero_grad()
    logits, back = model(x, train=True, gates=[True] * len(model.blocks), need_dx=need_dx)
    loss, saved = F.softmax_cross_entropy(logits, y)
    dx = back(F.softmax_cross_entropy_backward(saved))
    return dx, {n: model.backend.to_numpy(p.grad) for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", ["resnet8", "seednet"])
def test_no_input_gradient_and_the_same_parameter_gradients(
    name: str, backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    kw = {"in_channels": 1} if name != "seednet" else {}
    model = sdnet.build_model(name, device=backend, dtype="float64", p_last=1.0, **kw)
    x = backend.asarray(rng.standard_normal((4, 1, 28, 28)), "float64")
    y = backend.asarray(np.array([0, 1, 2, 3]))
    dx, full = _grads(model, x, y, need_dx=True)
    assert tuple(dx.shape) == (4, 1, 28, 28)
    none, skipped = _grads(model, x, y, need_dx=False)
    assert none is None
    for k in full:  # the same operations on the parameter paths: identical
        np.testing.assert_array_equal(skipped[k], full[k], err_msg=k)


def _record(monkeypatch: pytest.MonkeyPatch, module: Any, fn: str) -> list[bool]:
    real, asked = getattr(module.F, fn), []

    def recorded(dy: Any, saved: Any, *, need_dx: bool = True) -> Any:
        asked.append(need_dx)
        return real(dy, saved, need_dx=need_dx)

    monkeypatch.setattr(module.F, fn, recorded)
    return asked


def test_only_the_stem_convolution_skips_it(
    monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator
) -> None:
    asked = _record(monkeypatch, conv_layer, "conv2d_backward")
    model = sdnet.build_model("resnet8", in_channels=1, p_last=1.0)
    x = model.backend.asarray(rng.standard_normal((2, 1, 16, 16)), "float32")
    y = model.backend.asarray(np.array([0, 1]))
    _grads(model, x, y, need_dx=False)
    assert asked == [True] * 6 + [False]  # the backward runs last to first: the stem is last


def test_seednet_first_block_skips_it_on_both_paths(
    monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator
) -> None:
    asked = _record(monkeypatch, linear_layer, "linear_backward")
    model = sdnet.build_model("seednet")
    x = model.backend.asarray(rng.standard_normal((2, 784)), "float32")
    _grads(model, x, model.backend.asarray(np.array([0, 1])), need_dx=False)
    # block 1 runs its shortcut backward (wh), then its branch (wb, wa): both inputs are x
    assert asked.count(False) == 2 and asked[-3:] == [False, True, False]


def test_training_never_computes_the_input_gradient(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mnist_dir: Path
) -> None:
    asked = _record(monkeypatch, conv_layer, "conv2d_backward")
    sdnet.train(
        model="resnet8", epochs=1, limit_train=64, limit_test=32, batch_size=32, device="cpu",
        progress=False, download=False, data_dir=str(mnist_dir), run_dir=str(tmp_path / "r"),
    )  # fmt: skip
    assert asked.count(False) == 2  # one stem convolution per step, two steps
