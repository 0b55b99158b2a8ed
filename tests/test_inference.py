"""``model(x, train=False, grad=False)``: same logits, far less memory, no backward."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import sdnet


def _peak(fn) -> int:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_grad_false_matches_and_frees_memory_as_it_goes(backend: sdnet.Backend) -> None:
    model = sdnet.build_model("resnet20", num_classes=10, in_channels=1, device=backend, seed=0)
    x = backend.asarray(np.random.default_rng(0).standard_normal((32, 1, 16, 16)), "float32")
    kept, _ = model(x, train=False)
    freed, backprop = model(x, train=False, grad=False)
    np.testing.assert_array_equal(backend.to_numpy(freed), backend.to_numpy(kept))
    with pytest.raises(RuntimeError, match="grad=False"):
        backprop(kept)


def test_grad_false_peak_memory_is_a_fraction() -> None:
    model = sdnet.build_model("resnet20", num_classes=10, in_channels=1, seed=0)
    x = model.backend.asarray(np.random.default_rng(0).standard_normal((64, 1, 28, 28)), "float32")
    with_grad = _peak(lambda: model(x, train=False))
    without = _peak(lambda: model(x, train=False, grad=False))
    assert without < 0.5 * with_grad, (without, with_grad)  # one block alive, not all nine
