"""DLPack: PyTorch CPU tensors into a CPU model and logits back out, sharing memory."""

from __future__ import annotations

import numpy as np
import pytest

import sdnet
from sdnet.interop import apply_model, from_dlpack, shares_memory, to_library

torch = pytest.importorskip("torch")


def test_torch_tensor_in_without_a_copy() -> None:
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    a = from_dlpack(t, "cpu")
    assert isinstance(a, np.ndarray) and shares_memory(a, t)
    t[0, 0] = 42.0  # a write through torch is seen by sdnet's array
    assert a[0, 0] == 42.0


def test_output_out_to_torch_without_a_copy() -> None:
    y = np.linspace(0.0, 1.0, 6, dtype=np.float32).reshape(2, 3)
    t = to_library(y, "torch")
    assert isinstance(t, torch.Tensor) and shares_memory(y, t)
    y[1, 2] = -5.0  # and the other way round
    assert float(t[1, 2]) == -5.0


def test_requires_grad_tensor_is_detached_and_shared() -> None:
    t = torch.ones(2, 2, requires_grad=True)
    a = from_dlpack(t, "cpu")
    assert shares_memory(a, t)


def test_cast_copies_and_copy_false_refuses() -> None:
    t = torch.ones(2, 2, dtype=torch.float64)
    a = from_dlpack(t, "cpu", dtype="float32")
    assert a.dtype == np.float32 and not shares_memory(a, t)
    with pytest.raises(BufferError, match="needs a copy"):
        from_dlpack(t, "cpu", dtype="float32", copy=False)
    b = from_dlpack(t, "cpu", copy=True)
    assert not shares_memory(b, t)


def test_other_backends_receive_dlpack_tensors() -> None:
    t = torch.arange(4, dtype=torch.float32)
    strict = from_dlpack(t, "array_api_strict")
    assert sdnet.get_backend("array_api_strict").device == strict.device
    assert np.array_equal(np.asarray(sdnet.get_backend("cpu").to_numpy(strict)), t.numpy())
    as_torch = from_dlpack(np.arange(3.0), "torch")
    assert isinstance(as_torch, torch.Tensor)


def test_not_a_dlpack_object_says_what_to_do() -> None:
    with pytest.raises(TypeError, match="does not implement DLPack"):
        from_dlpack([1.0, 2.0], "cpu")


def test_apply_model_round_trips_through_torch() -> None:
    model = sdnet.build_model("resnet8", in_channels=1, device="cpu", seed=3)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    out = apply_model(model, x)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 10)
    ref, _ = model(x.numpy(), train=False)
    np.testing.assert_array_equal(out.numpy(), ref)
