"""The same seed gives the same network, gates and training step on every backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sdnet
import sdnet.functional as F
from sdnet.layers.base import Counter

RTOL32, ATOL32 = 1e-4, 1e-6
OTHERS = ["array_api_strict", "torch"]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def build(name: str, device: str, **kw):
    if name == "seednet":
        kw = dict(widths=[(12, 10, 8), (8, 6, 5)], in_features=12, num_classes=5, p_last=0.3) | kw
    else:
        kw = dict(in_channels=3, num_classes=5) | kw
    return sdnet.build_model(name, device=device, seed=kw.pop("seed", 7), **kw)


def batch(name: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = (4, 12) if name == "seednet" else (4, 3, 8, 8)
    return rng.standard_normal(shape).astype(np.float32), rng.integers(0, 5, size=4)


def train_step(model, x, labels, *, steps: int = 1):
    """``steps`` SGD steps (momentum 0.9, lr 0.1) with drawn gates; returns losses and gates."""
    be = model.backend
    opt = sdnet.SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    losses, gates = [], []
    xd, yd = be.asarray(x, model.dtype), be.asarray(labels)
    for _ in range(steps):
        model.zero_grad()
        logits, back = model(xd, train=True)
        loss, saved = F.softmax_cross_entropy(logits, yd)
        back(F.softmax_cross_entropy_backward(saved))
        opt.step()
        losses.append(float(be.to_numpy(loss)))
        gates.append([np.asarray(g).tolist() for g in model.last_gates])
    return losses, gates


def on_backend(a, name: str) -> bool:
    """Whether ``a`` is an array of the backend called ``name`` (on its device)."""
    if name == "torch":
        return isinstance(a, torch.Tensor) and a.device.type == "cpu"
    if name == "array_api_strict":
        from array_api_compat import array_namespace, is_array_api_strict_namespace

        strict = is_array_api_strict_namespace(array_namespace(a))
        return strict and a.device == sdnet.get_backend(name).device
    return isinstance(a, np.ndarray)


def assert_state_close(a: dict, b: dict, rtol: float = RTOL32, atol: float = ATOL32):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


@pytest.mark.parametrize("name", ["resnet8", "seednet"])
@pytest.mark.parametrize("other", OTHERS)
def test_same_seed_same_init(name, other):
    ref = build(name, "cpu").state_dict()
    got = build(name, other).state_dict()
    assert sorted(ref) == sorted(got)
    for k in ref:
        assert ref[k].dtype == got[k].dtype, k
        np.testing.assert_array_equal(ref[k], got[k], err_msg=k)
    # and a different seed gives a different network
    diff = build(name, other, seed=8).state_dict()
    first_weight = next(k for k in ref if k.endswith("weight") and ref[k].ndim > 1)
    assert not np.array_equal(diff[first_weight], ref[first_weight])


@pytest.mark.parametrize("mode", ["batch", "row"])
@pytest.mark.parametrize("other", OTHERS)
def test_same_seed_same_gates(other, mode):
    a = build("resnet14", "cpu", p_last=0.3, mode=mode)
    b = build("resnet14", other, p_last=0.3, mode=mode)
    for _ in range(5):
        ga, gb = a.draw_gates(4), b.draw_gates(4)
        assert [np.asarray(g).tolist() for g in ga] == [np.asarray(g).tolist() for g in gb]


@pytest.mark.parametrize("name", ["resnet8", "seednet"])
@pytest.mark.parametrize("other", OTHERS)
def test_same_training_step(name, other):
    kw = dict(p_last=0.5, rule="uniform") if name == "resnet8" else {}
    x, labels = batch(name)
    a, b = build(name, "cpu", **kw), build(name, other, **kw)
    la, ga = train_step(a, x, labels, steps=3)
    lb, gb = train_step(b, x, labels, steps=3)
    assert ga == gb
    assert not all(all(step) for step in ga), "the seed should drop some block"
    np.testing.assert_allclose(lb, la, rtol=RTOL32)
    sa, sb = a.state_dict(), b.state_dict()
    assert_state_close(sa, sb)
    # the step did move the parameters (the comparison above is not between two inits)
    init = build(name, "cpu", **kw).state_dict()
    moved = [k for k in sa if k.endswith("weight") and not np.allclose(sa[k], init[k])]
    assert moved


def test_same_training_step_backend_fixture(backend):
    """One SGD step of resnet8 with forced mixed gates, on each fixture backend vs NumPy."""
    x, labels = batch("resnet8", seed=1)
    out = {}
    for be in ("cpu", backend):
        model = build("resnet8", be, shortcut="B")
        d = model.backend
        opt = sdnet.SGD(model.parameters(), lr=0.1, momentum=0.9)
        logits, back = model(d.asarray(x, "float32"), train=True, gates=[True, False, True])
        loss, saved = F.softmax_cross_entropy(logits, d.asarray(labels))
        back(F.softmax_cross_entropy_backward(saved))
        opt.step()
        out[str(be)] = (float(d.to_numpy(loss)), model.state_dict())
    (l0, s0), (l1, s1) = out.values()
    np.testing.assert_allclose(l1, l0, rtol=RTOL32)
    assert_state_close(s0, s1)


@pytest.mark.parametrize("other", OTHERS)
def test_to_device_round_trip(other):
    x, labels = batch("resnet8")
    model = build("resnet8", "cpu")
    train_step(model, x, labels)  # non-trivial running stats
    before = model.state_dict()
    logits_cpu = model.backend.to_numpy(model(model.backend.asarray(x), train=False)[0])

    assert model.to_device(other) is model
    assert model.backend.name == sdnet.get_backend(other).name
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if isinstance(p, Counter):  # num_batches_tracked stays on the host by design
            assert isinstance(p.value, int), name
            continue
        assert on_backend(p.value, other), name
        assert p.grad is None, name
    moved = model.state_dict()
    for k in before:
        assert moved[k].dtype == before[k].dtype, k
        np.testing.assert_array_equal(moved[k], before[k], err_msg=k)
    logits_other = model.backend.to_numpy(model(model.backend.asarray(x), train=False)[0])
    np.testing.assert_allclose(logits_other, logits_cpu, rtol=RTOL32, atol=ATOL32)
    # training keeps working on the new device
    train_step(model, x, labels)

    model.to_device("cpu")
    assert model.backend.name == "numpy"
    assert all(on_backend(p.value, "cpu") for p in model.parameters())
    train_step(model, x, labels)


@pytest.mark.parametrize("src,dst", [("cpu", "torch"), ("torch", "array_api_strict")])
def test_load_state_dict_across_backends(src, dst):
    x, labels = batch("resnet8")
    a = build("resnet8", src, seed=1)
    train_step(a, x, labels, steps=2)
    b = build("resnet8", dst, seed=2)
    assert not np.array_equal(b.state_dict()["conv1.weight"], a.state_dict()["conv1.weight"])
    b.load_state_dict(a.state_dict())
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        np.testing.assert_array_equal(sb[k], sa[k], err_msg=k)
    # the loaded values live on b's device with b's dtype
    be = b.backend
    for name, p in list(b.named_parameters()) + list(b.named_buffers()):
        if isinstance(p, Counter):  # num_batches_tracked stays on the host by design
            continue
        assert on_backend(p.value, dst), name
        assert p.value.dtype == be.dtype("float32"), name
    ya = a.backend.to_numpy(a(a.backend.asarray(x), train=False)[0])
    yb = be.to_numpy(b(be.asarray(x), train=False)[0])
    np.testing.assert_allclose(yb, ya, rtol=RTOL32, atol=ATOL32)


def test_load_torch_tensors_into_numpy_model():
    """A state dict of torch tensors (e.g. a PyTorch checkpoint) loads into a NumPy model."""
    a = build("resnet8", "torch", seed=1)
    tensors = {k: torch.as_tensor(v) for k, v in a.state_dict().items()}
    b = build("resnet8", "cpu", seed=2)
    b.load_state_dict(tensors)
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, tensors[k].numpy(), err_msg=k)
        assert isinstance(v, np.ndarray)
