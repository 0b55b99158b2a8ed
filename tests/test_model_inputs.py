"""A model refuses inputs that would compute on another library, device or precision."""

from __future__ import annotations

import numpy as np
import pytest

import sdnet


def _model(device: str = "cpu", dtype: str = "float32") -> sdnet.Model:
    return sdnet.build_model("resnet8", in_channels=1, num_classes=3, device=device, dtype=dtype)


def test_host_array_for_a_model_on_another_backend() -> None:
    model = _model("array_api_strict")
    with pytest.raises(ValueError, match=r"model\.backend\.asarray"):
        model(np.zeros((2, 1, 8, 8), dtype=np.float32))


def test_same_library_other_device() -> None:
    import array_api_strict as xp

    model = _model("array_api_strict")
    x = xp.zeros((2, 1, 8, 8), dtype=xp.float32)  # the default device, not the model's
    with pytest.raises(ValueError, match="device1"):
        model(x)


@pytest.mark.parametrize("dtype", [np.float64, np.uint8])
def test_dtype_mismatch_is_an_error_not_a_silent_upcast(dtype) -> None:
    model = _model()
    with pytest.raises(ValueError, match="float32"):
        model(np.zeros((2, 1, 8, 8), dtype=dtype), train=False)


def test_not_an_array() -> None:
    with pytest.raises(TypeError, match="must be an array"):
        _model()([[0.0] * 8] * 8)


def test_matching_input_runs(rng) -> None:
    model = _model("array_api_strict", "float64")
    logits, _ = model(model.backend.asarray(rng.standard_normal((2, 1, 8, 8)), "float64"))
    assert logits.shape == (2, 3)
