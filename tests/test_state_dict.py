"""State dicts follow PyTorch's names and shapes; the model registry."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch_reference import TorchResNet, TorchSeedNet, load_numpy_state, numpy_state

import sdnet


def _resnet(depth=8, **kw):
    return sdnet.build_model(f"resnet{depth}", **({"in_channels": 3, "num_classes": 10} | kw))


# -- names and shapes ---------------------------------------------------------------------------
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnet_state_names_and_shapes(shortcut):
    model = _resnet(14, shortcut=shortcut, width=2, in_channels=1, num_classes=7)
    sd = model.state_dict()
    assert sd["conv1.weight"].shape == (32, 1, 3, 3)
    assert sd["layer1.0.conv1.weight"].shape == (32, 32, 3, 3)
    assert sd["layer1.1.conv2.weight"].shape == (32, 32, 3, 3)
    assert sd["layer2.0.conv1.weight"].shape == (64, 32, 3, 3)
    assert sd["layer2.0.conv2.weight"].shape == (64, 64, 3, 3)
    assert sd["layer3.1.conv2.weight"].shape == (128, 128, 3, 3)
    assert sd["fc.weight"].shape == (7, 128)
    assert sd["fc.bias"].shape == (7,)
    for bn in ("bn1", "layer1.0.bn1", "layer2.1.bn2", "layer3.0.bn2"):
        c = sd[f"{bn}.weight"].shape[0]
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            assert sd[f"{bn}.{suffix}"].shape == (c,), (bn, suffix)
        assert sd[f"{bn}.num_batches_tracked"].shape == ()
        assert np.issubdtype(sd[f"{bn}.num_batches_tracked"].dtype, np.integer)
        np.testing.assert_array_equal(sd[f"{bn}.weight"], 1)
        np.testing.assert_array_equal(sd[f"{bn}.bias"], 0)
        np.testing.assert_array_equal(sd[f"{bn}.running_mean"], 0)
        np.testing.assert_array_equal(sd[f"{bn}.running_var"], 1)
    has_b = any(".shortcut." in k for k in sd)
    assert has_b == (shortcut == "B")
    if shortcut == "B":
        assert sd["layer2.0.shortcut.0.weight"].shape == (64, 32, 1, 1)
        assert sd["layer3.0.shortcut.1.running_var"].shape == (128,)
        assert "layer1.0.shortcut.0.weight" not in sd  # identity shortcut
    # parameters and buffers are disjoint, together the state dict
    params = {n for n, _ in model.named_parameters()}
    buffers = {n for n, _ in model.named_buffers()}
    assert not params & buffers
    assert params | buffers == set(sd)
    assert all(
        k.split(".")[-1] in ("running_mean", "running_var", "num_batches_tracked") for k in buffers
    )


def test_seednet_state_names():
    sd = sdnet.SeedNet().state_dict()
    assert list(sd) == [f"block{i}.{w}.weight" for i in (1, 2, 3) for w in ("wa", "wb", "wh")]
    assert sd["block1.wa.weight"].shape == (1024, 784)
    assert sd["block1.wb.weight"].shape == (824, 1024)
    assert sd["block1.wh.weight"].shape == (824, 784)
    assert sd["block3.wb.weight"].shape == (10, 128)
    bound = 1 / np.sqrt(784)
    w = sd["block1.wa.weight"]
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound  # U(-1/sqrt(in), ..)


def test_state_dict_is_a_host_copy():
    model = _resnet(in_channels=1)
    sd = model.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    sd["conv1.weight"][...] = 0.0
    assert np.any(model.state_dict()["conv1.weight"] != 0)


def test_init_statistics():
    """Kaiming-normal convolutions: std sqrt(2 / fan_in)."""
    sd = _resnet(20).state_dict()
    w = sd["layer3.2.conv2.weight"]  # 64*64*9 values, fan_in 576
    np.testing.assert_allclose(w.std(), np.sqrt(2 / 576), rtol=0.05)
    assert abs(w.mean()) < 0.01


# -- round trips with the PyTorch reference -------------------------------------------------------
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_torch_reference_loads_strictly_and_back(shortcut, rng):
    model = _resnet(8, shortcut=shortcut, dtype="float64", seed=3)
    x = rng.standard_normal((3, 3, 8, 8))
    model(x, train=True, gates=[True, True, True])  # non-trivial buffers
    ref = TorchResNet(8, shortcut=shortcut).double()
    load_numpy_state(ref, model.state_dict())  # strict=True
    ref_keys = set(ref.state_dict())
    assert ref_keys == set(model.state_dict())

    other = _resnet(8, shortcut=shortcut, dtype="float64", seed=4)
    assert not np.array_equal(other.state_dict()["fc.weight"], model.state_dict()["fc.weight"])
    other.load_state_dict({k: v for k, v in ref.state_dict().items()})  # torch tensors
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k], v, err_msg=k)
    y1, _ = model(x, train=False)
    y2, _ = other(x, train=False)
    np.testing.assert_array_equal(y1, y2)


def test_torch_seednet_loads_strictly():
    model = sdnet.SeedNet(widths=[(6, 5, 4), (4, 3, 2)], in_features=6, num_classes=2)
    ref = TorchSeedNet([(6, 5, 4), (4, 3, 2)])
    load_numpy_state(ref, model.state_dict())
    back = numpy_state(ref)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(back[k], v)


def test_torch_reference_rejects_a_wrong_state():
    """The strict load used above is able to fail."""
    model = _resnet(8, shortcut="A")
    ref = TorchResNet(8, shortcut="B")
    with pytest.raises(RuntimeError):
        load_numpy_state(ref, model.state_dict())


# -- load_state_dict errors leave the model unchanged --------------------------------------------
def _assert_same(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_load_missing_key_raises_and_changes_nothing():
    model = _resnet(8, seed=1)
    before = model.state_dict()
    new = _resnet(8, seed=2).state_dict()
    del new["layer2.0.bn1.running_var"]
    with pytest.raises(KeyError, match="layer2.0.bn1.running_var"):
        model.load_state_dict(new)
    _assert_same(model.state_dict(), before)


def test_load_unexpected_key_raises_and_changes_nothing():
    model = _resnet(8, seed=1)
    before = model.state_dict()
    new = _resnet(8, seed=2).state_dict()
    new["layer9.0.conv1.weight"] = np.zeros((1,))
    with pytest.raises(KeyError, match="layer9"):
        model.load_state_dict(new)
    _assert_same(model.state_dict(), before)


def test_load_wrong_shape_raises_and_changes_nothing():
    model = _resnet(8, seed=1)
    before = model.state_dict()
    new = _resnet(8, seed=2).state_dict()
    # the bad entry sorts late, so a partial load would already have changed earlier ones
    new["fc.weight"] = new["fc.weight"].T.copy()
    with pytest.raises(ValueError, match="fc.weight"):
        model.load_state_dict(new)
    _assert_same(model.state_dict(), before)
    new = _resnet(8, seed=2).state_dict()
    new["bn1.num_batches_tracked"] = np.zeros((1,), dtype=np.int64)
    with pytest.raises(ValueError):
        model.load_state_dict(new)
    _assert_same(model.state_dict(), before)


def test_load_non_strict_subset():
    model = _resnet(8, seed=1)
    before = model.state_dict()
    src = _resnet(8, seed=2).state_dict()
    model.load_state_dict({"fc.weight": src["fc.weight"]}, strict=False)
    after = model.state_dict()
    np.testing.assert_array_equal(after["fc.weight"], src["fc.weight"])
    np.testing.assert_array_equal(after["conv1.weight"], before["conv1.weight"])


def test_load_keeps_dtype():
    model = _resnet(8, dtype="float32")
    src = {
        k: v.astype(np.float64) if v.dtype.kind == "f" else v
        for k, v in _resnet(8, dtype="float64", seed=9).state_dict().items()
    }
    model.load_state_dict(src)
    for _, p in model.named_parameters():
        assert p.value.dtype == np.float32


# -- the registry -------------------------------------------------------------------------------
def _count(model) -> int:
    return sum(int(np.prod(p.value.shape)) for p in model.parameters())


def _count_torch(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("depth", [8, 20, 32, 44, 56, 110])
def test_build_resnet_by_name(depth):
    model = sdnet.build_model(f"resnet{depth}", num_classes=10, in_channels=3)
    n = (depth - 2) // 6
    assert len(model.blocks) == 3 * n
    assert model.config["name"] == f"resnet{depth}"
    ref = TorchResNet(depth, num_classes=10, in_channels=3)
    assert _count(model) == _count_torch(ref)
    assert set(model.state_dict()) == set(ref.state_dict())
    convs = [
        k for k in model.state_dict() if k.endswith("conv1.weight") or k.endswith("conv2.weight")
    ]
    assert len(convs) == depth - 1  # 6n in the blocks, the stem; the fc makes depth layers


def test_resnet20_parameter_count():
    """He et al.'s CIFAR ResNet-20 (option A): 0.27M parameters, 269,722 exactly."""
    model = sdnet.build_model("resnet20", num_classes=10, in_channels=3)
    ref = TorchResNet(20, num_classes=10, in_channels=3, shortcut="A")
    assert _count_torch(ref) == 269_722
    assert _count(model) == 269_722
    b = sdnet.build_model("resnet20", num_classes=10, in_channels=3, shortcut="B")
    assert _count(b) == _count_torch(TorchResNet(20, shortcut="B")) > 269_722


def test_build_model_aliases_and_seednet():
    assert len(sdnet.build_model("ResNet-20").blocks) == 9
    s = sdnet.build_model("seednet", in_channels=1)  # in_channels is ignored for SeedNet
    assert isinstance(s, sdnet.SeedNet)
    assert _count(s) == _count_torch(TorchSeedNet())
    names = sdnet.model_names()
    assert "resnet20" in names and "resnet110" in names and "seednet" in names
    for name in names:
        if name not in ("resnet1202", "resnet164"):
            assert sdnet.build_model(name).config["name"] == name


def test_build_resnet1202():
    t = time.perf_counter()
    model = sdnet.build_model("resnet1202", num_classes=10, in_channels=3)
    elapsed = time.perf_counter() - t
    assert len(model.blocks) == 600
    assert _count(model) == 19_421_274  # He et al.: 19.4M
    assert elapsed < 30


@pytest.mark.parametrize("name", ["resnet21", "resnet2", "resnet7", "vgg", "resnet", "seednet2"])
def test_unknown_model_names_raise(name):
    with pytest.raises(ValueError):
        sdnet.build_model(name)


@pytest.mark.parametrize(
    "kw",
    [dict(shortcut="C"), dict(width=0), dict(num_classes=0), dict(in_channels=0), dict(seed=-1)],
)
def test_bad_resnet_arguments_raise(kw):
    with pytest.raises(ValueError):
        sdnet.build_model("resnet8", **kw)


def test_seednet_bad_widths_raise():
    with pytest.raises(ValueError):
        sdnet.SeedNet(widths=[(784, 10, 20), (21, 5, 10)])  # do not chain
    with pytest.raises(ValueError):
        sdnet.SeedNet(num_classes=5)  # default widths end in 10
