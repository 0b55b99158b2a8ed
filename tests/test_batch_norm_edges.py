"""Batch norm refuses the training batches whose statistics mean nothing, before it updates
anything: an empty batch (NaN statistics) and one value per channel (output = beta, input
gradient 0, running variance decaying towards 0), as PyTorch does."""

from __future__ import annotations

import numpy as np
import pytest

import sdnet
from sdnet.layers import BatchNorm


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (1, 3, 1, 1), (1, 3), (0, 3)])
def test_batch_norm_refuses_degenerate_training_batches(
    shape: tuple[int, ...], backend: sdnet.Backend
) -> None:
    bn = BatchNorm(3, backend=backend, dtype="float64")
    before = bn.state_dict()
    x = backend.asarray(np.ones(shape), "float64")
    with pytest.raises(ValueError, match="more than one value per channel"):
        bn(x, train=True)
    after = bn.state_dict()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    if shape[0]:  # evaluation of one sample is fine: it uses the running statistics
        y, _ = bn(x, train=False)
        assert tuple(y.shape) == shape


def test_a_model_refuses_an_empty_training_batch_before_any_statistic_moves() -> None:
    model = sdnet.build_model("resnet8", in_channels=1, num_classes=3)
    before = model.state_dict()
    x = model.backend.asarray(np.zeros((0, 1, 8, 8)), "float32")
    with pytest.raises(ValueError, match="the batch is empty"):
        model(x, train=True)
    after = model.state_dict()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    assert all(np.isfinite(v).all() for v in after.values())
