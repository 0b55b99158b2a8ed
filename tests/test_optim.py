"""sdnet.SGD: PyTorch's update rule, dropped-parameter policy, and models that move devices."""

from __future__ import annotations

import numpy as np
import pytest

import sdnet
from sdnet.layers import Param

torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    "momentum, nesterov, weight_decay", [(0.0, False, 0.0), (0.9, False, 5e-4), (0.9, True, 1e-4)]
)
def test_sgd_matches_torch(backend, rng, momentum, nesterov, weight_decay):
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(4)]
    p = Param(backend.asarray(w0, "float64"))
    opt = sdnet.SGD([p], lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    t = torch.tensor(w0, requires_grad=True)
    topt = torch.optim.SGD(
        [t], lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
    )
    for g in grads:
        p.grad = backend.asarray(g, "float64")
        opt.step()
        t.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(backend.to_numpy(p.value), t.detach().numpy(), rtol=1e-12)


def test_missing_gradient_policy(rng):
    w0 = rng.standard_normal(5)
    be = sdnet.get_backend("cpu")
    kept, frozen = Param(be.asarray(w0, "float64")), Param(be.asarray(w0, "float64"))
    decay = sdnet.SGD([kept], lr=0.1, momentum=0.9, weight_decay=0.1)
    freeze = sdnet.SGD([frozen], lr=0.1, momentum=0.9, weight_decay=0.1, skip_missing=True)
    for opt, p in ((decay, kept), (freeze, frozen)):
        p.grad = be.asarray(np.ones(5), "float64")
        opt.step()
        p.grad = None  # the block was dropped in this step
        opt.step()
    after_one = w0 - 0.1 * (1 + 0.1 * w0)
    np.testing.assert_allclose(frozen.value, after_one)  # untouched by the second step
    assert not np.allclose(kept.value, after_one)  # momentum and decay still moved it


def test_optimizer_follows_model_to_another_device(rng):
    model = sdnet.build_model("resnet8", in_channels=1, num_classes=3, seed=0, p_last=1.0)
    opt = sdnet.SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    from sdnet.functional import softmax_cross_entropy, softmax_cross_entropy_backward

    def step(m):
        x = m.backend.asarray(rng.standard_normal((2, 1, 8, 8)), "float32")
        y = m.backend.asarray(np.array([0, 2]))
        logits, back = m(x)
        _, saved = softmax_cross_entropy(logits, y)
        m.zero_grad()
        back(softmax_cross_entropy_backward(saved))
        opt.step()

    step(model)
    model.to_device("array_api_strict")
    step(model)  # momentum buffers from the numpy step are moved, not combined across devices
    for _, p in model.named_parameters():
        assert "device1" in str(p.value.device)
    assert all(np.isfinite(v).all() for v in model.state_dict().values())


def test_state_dict_values_are_arrays_after_training(rng):
    model = sdnet.build_model("resnet8", in_channels=1, num_classes=3, seed=0)
    model(model.backend.asarray(rng.standard_normal((2, 1, 8, 8)), "float32"))
    state = model.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert int(state["bn1.num_batches_tracked"]) == 1
    torch.from_numpy(state["bn1.num_batches_tracked"])  # a 0-d array, not a NumPy scalar
