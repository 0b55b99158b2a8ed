"""The device path computes what the host path computes.

On a device sdnet takes other roads to the same numbers, each chosen for fewer kernel launches:
the convolution gathers ``cols`` with one ``take`` instead of stacking shifted views, and keeps
its padded input; ReLU's backward uses ``where``; batch norm's running statistics are updated
for all layers at once; row- and subset-mode gates reach the device in one copy. Run on the
simulated CUDA device (NumPy underneath), a few training steps in float64 must give the
weights, running statistics and losses of the same steps on NumPy, exactly (NumPy's own
registered kernels, which sum in another order, are compared with the reference in
``tests/test_kernels.py``; here both sides run the array-API reference).
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
from sdnet.backends.kernels import reference_kernels

import sdnet
import sdnet.functional as F


def _train(device: str, mode: str, steps: int = 3) -> tuple[list[float], dict[str, np.ndarray]]:
    model = sdnet.build_model(
        "resnet14", in_channels=3, num_classes=5, p_last=0.5, mode=mode, shortcut="B",
        device=device, dtype="float64", seed=3,
    )  # fmt: skip
    opt = sdnet.SGD(model.named_parameters(), lr=0.05, momentum=0.9, nesterov=True,
                    weight_decay=1e-3)  # fmt: skip
    rng = np.random.default_rng(0)
    losses = []
    be = model.backend
    with be.activate():
        for _ in range(steps):
            x = be.asarray(rng.standard_normal((6, 3, 12, 12)), "float64")
            y = be.asarray(rng.integers(0, 5, size=6))
            model.zero_grad()
            logits, back = model(x, train=True, need_dx=False)
            loss, saved = F.softmax_cross_entropy(logits, y)
            back(F.softmax_cross_entropy_backward(saved))
            opt.step()
            losses.append(float(be.to_numpy(loss)))
    return losses, model.state_dict()


@pytest.mark.parametrize("mode", ["batch", "row", "subset"])
def test_device_path_gives_the_host_path_numbers(sim: ModuleType, mode: str) -> None:
    with reference_kernels():
        host_losses, host_state = _train("cpu", mode)
    with sim.record() as rec:
        dev_losses, dev_state = _train("sim:0", mode)
    assert rec.launches > 0 and "take" in rec.by_op  # the device roads were taken
    assert dev_losses == host_losses
    for k, v in host_state.items():
        np.testing.assert_array_equal(dev_state[k], v, err_msg=k)
