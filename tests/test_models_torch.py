"""Whole networks against an independent PyTorch definition (float64, exact to ~1e-8), and
finite-difference checks of whole networks on every backend."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torch_reference import TorchResNet, TorchSeedNet, load_numpy_state, numpy_state

import sdnet
import sdnet.functional as F
from sdnet.gradcheck import check_layer

RTOL, ATOL = 1e-8, 1e-10


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors gain nothing from intra-op threads; on a busy 2-core machine the thread
    pool's spinning costs seconds per test."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- helpers ------------------------------------------------------------------------------------
def make_pair(kind: str, backend: Any = "cpu", **kw: Any) -> tuple[sdnet.Model, torch.nn.Module]:
    """An sdnet model (float64) and the PyTorch reference loaded with its weights."""
    if kind == "seednet":
        model = sdnet.SeedNet(device=backend, dtype="float64", **kw)
        cfg = model.config
        ref = TorchSeedNet(
            cfg["widths"], p_last=cfg["p_last"], rule=cfg["rule"], scaling=cfg["scaling"]
        )
    else:
        model = sdnet.build_model(kind, device=backend, dtype="float64", **kw)
        depth = int(kind.removeprefix("resnet"))
        cfg = model.config
        ref = TorchResNet(
            depth,
            num_classes=cfg["num_classes"],
            in_channels=cfg["in_channels"],
            width=cfg["width"],
            shortcut=cfg["shortcut"],
            p_last=cfg["p_last"],
            rule=cfg["rule"],
            scaling=cfg["scaling"],
        )
    ref = ref.double()
    load_numpy_state(ref, model.state_dict())
    np.testing.assert_allclose(model.survival, [b.survival for b in ref.blocks], rtol=1e-15)
    return model, ref


def run_both(
    model: sdnet.Model,
    ref: torch.nn.Module,
    x: np.ndarray,
    labels: np.ndarray,
    *,
    train: bool = True,
    gates: list[Any] | None = None,
) -> None:
    """One forward + backward in both; compare logits, loss, dx, every grad and the state."""
    be = model.backend
    xd = be.asarray(x, "float64")
    yd = be.asarray(labels)
    model.zero_grad()
    logits, back = model(xd, train=train, gates=gates if train else None)
    loss, saved = F.softmax_cross_entropy(logits, yd)
    dlogits = F.softmax_cross_entropy_backward(saved)
    dx = back(dlogits)

    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ref.train(train)
    ref.zero_grad(set_to_none=True)
    logits_t = ref(xt, gates if train else None)
    loss_t = TF.cross_entropy(logits_t, torch.as_tensor(labels))
    loss_t.backward()

    np.testing.assert_allclose(
        be.to_numpy(logits), logits_t.detach().numpy(), rtol=RTOL, atol=ATOL, err_msg="logits"
    )
    np.testing.assert_allclose(float(be.to_numpy(loss)), loss_t.item(), rtol=RTOL, err_msg="loss")
    np.testing.assert_allclose(be.to_numpy(dx), xt.grad.numpy(), rtol=RTOL, atol=ATOL, err_msg="dx")
    ref_params = dict(ref.named_parameters())
    names = [n for n, _ in model.named_parameters()]
    assert sorted(names) == sorted(ref_params), "parameter names differ"
    for name, p in model.named_parameters():
        g_ref = ref_params[name].grad
        if p.grad is None or g_ref is None:
            assert p.grad is None and g_ref is None, f"{name}: grad presence differs"
            continue
        np.testing.assert_allclose(
            be.to_numpy(p.grad), g_ref.numpy(), rtol=RTOL, atol=ATOL, err_msg=name
        )
    compare_state(model, ref)


def compare_state(model: sdnet.Model, ref: torch.nn.Module) -> None:
    ours, theirs = model.state_dict(), numpy_state(ref)
    assert sorted(ours) == sorted(theirs)
    for k in ours:
        if k.endswith("num_batches_tracked"):
            assert int(ours[k]) == int(theirs[k]), k
        else:
            np.testing.assert_allclose(ours[k], theirs[k], rtol=RTOL, atol=ATOL, err_msg=k)


def data(rng: np.random.Generator, n: int, c: int, hw: int, k: int = 10):
    x = rng.standard_normal((n, c, hw, hw))
    labels = rng.integers(0, k, size=n)
    return x, labels


# -- ResNet vs PyTorch ----------------------------------------------------------------------------
GATES8 = {
    "open": [True, True, True],
    "closed": [False, False, False],
    "mixed": [True, False, True],
    "mixed2": [False, True, False],
}


@pytest.mark.parametrize("gates", list(GATES8), ids=str)
@pytest.mark.parametrize(
    "shortcut,in_channels,hw", [("A", 3, 8), ("B", 1, 8), ("A", 1, 12), ("B", 3, 12)]
)
def test_resnet8_matches_torch(shortcut, in_channels, hw, gates, rng):
    model, ref = make_pair("resnet8", shortcut=shortcut, in_channels=in_channels, seed=3)
    x, labels = data(rng, 3, in_channels, hw)
    run_both(model, ref, x, labels, gates=GATES8[gates])
    # a second pass on new data (running statistics move again, grads are recomputed)
    x, labels = data(rng, 4, in_channels, hw)
    run_both(model, ref, x, labels, gates=GATES8["open"])


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnet8_eval_matches_torch(shortcut, rng):
    model, ref = make_pair("resnet8", shortcut=shortcut, in_channels=3, seed=5)
    for g in (GATES8["open"], GATES8["mixed"]):
        x, labels = data(rng, 4, 3, 8)
        run_both(model, ref, x, labels, gates=g)
    # running stats are non-trivial now
    rm = model.state_dict()["layer1.0.bn1.running_mean"]
    assert np.abs(rm).max() > 1e-3
    x, labels = data(rng, 3, 3, 8)
    run_both(model, ref, x, labels, train=False)
    # eval does not touch the running statistics
    before = model.state_dict()
    run_both(model, ref, x, labels, train=False)
    after = model.state_dict()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)


def test_resnet14_matches_torch(rng):
    model, ref = make_pair("resnet14", shortcut="B", in_channels=3, num_classes=7, seed=1)
    assert len(model.blocks) == 6
    x, labels = data(rng, 3, 3, 8, k=7)
    run_both(model, ref, x, labels, gates=[True, False, True, True, False, True])
    run_both(model, ref, x, labels, train=False)


def test_resnet_width2_matches_torch(rng):
    model, ref = make_pair("resnet8", width=2, in_channels=1, num_classes=5, seed=4)
    x, labels = data(rng, 3, 1, 8, k=5)
    run_both(model, ref, x, labels, gates=[False, True, True])


def test_resnet_row_mode_matches_torch(rng):
    model, ref = make_pair("resnet8", shortcut="B", in_channels=3, mode="row", seed=2)
    x, labels = data(rng, 4, 3, 8)
    gates = [
        np.array([True, False, True, True]),
        np.array([False, False, False, False]),  # no row survives: branch skipped
        np.array([False, True, False, True]),
    ]
    run_both(model, ref, x, labels, gates=gates)
    run_both(model, ref, x, labels, gates=[True, np.array([True, True, False, True]), False])
    run_both(model, ref, x, labels, train=False)


def test_resnet_inverted_scaling_matches_torch(rng):
    model, ref = make_pair("resnet8", shortcut="A", in_channels=3, scaling="inverted", seed=6)
    x, labels = data(rng, 3, 3, 8)
    run_both(model, ref, x, labels, gates=[True, True, False])
    run_both(model, ref, x, labels, gates=[False, True, True])
    run_both(model, ref, x, labels, train=False)


@pytest.mark.parametrize("rule", ["uniform", "timm"])
def test_resnet_rules_eval_matches_torch(rule, rng):
    model, ref = make_pair("resnet8", in_channels=1, rule=rule, p_last=0.3, seed=8)
    x, labels = data(rng, 3, 1, 8)
    run_both(model, ref, x, labels, gates=[True, True, True])
    run_both(model, ref, x, labels, train=False)


def test_resnet_drawn_gates_match_torch(rng):
    """Gates drawn by the model (not forced) are the ones reported and used."""
    model, ref = make_pair("resnet14", in_channels=1, p_last=0.3, seed=11)
    x, labels = data(rng, 3, 1, 8)
    xd = model.backend.asarray(x, "float64")
    for _ in range(3):
        logits, _ = model(xd, train=True)
        gates = list(model.last_gates)
        assert len(gates) == 6 and all(isinstance(g, bool) for g in gates)
        ref.train()
        with torch.no_grad():
            expected = ref(torch.as_tensor(x), gates).numpy()
        np.testing.assert_allclose(model.backend.to_numpy(logits), expected, rtol=RTOL, atol=ATOL)


def test_resnet_matches_torch_every_backend(backend, rng):
    model, ref = make_pair("resnet8", backend, shortcut="B", in_channels=3, seed=9)
    x, labels = data(rng, 3, 3, 8)
    run_both(model, ref, x, labels, gates=[True, False, True])
    run_both(model, ref, x, labels, train=False)


# -- SeedNet vs PyTorch -------------------------------------------------------------------------
SMALL_WIDTHS = [(12, 9, 8), (8, 6, 7), (7, 5, 4)]


@pytest.mark.parametrize(
    "gates", [[True, True, True], [False, False, False], [True, False, True], [False, True, True]]
)
def test_seednet_small_matches_torch(gates, rng):
    model, ref = make_pair(
        "seednet", widths=SMALL_WIDTHS, in_features=12, num_classes=4, p_last=0.5, seed=1
    )
    x = rng.standard_normal((4, 12))
    labels = rng.integers(0, 4, size=4)
    run_both(model, ref, x, labels, gates=gates)
    run_both(model, ref, x, labels, train=False)


def test_seednet_row_inverted_matches_torch(rng):
    model, ref = make_pair(
        "seednet",
        widths=SMALL_WIDTHS,
        in_features=12,
        num_classes=4,
        p_last=0.4,
        mode="row",
        scaling="inverted",
        seed=2,
    )
    x = rng.standard_normal((4, 12))
    labels = rng.integers(0, 4, size=4)
    gates = [np.array([True, False, True, False]), True, np.array([False, False, True, True])]
    run_both(model, ref, x, labels, gates=gates)
    run_both(model, ref, x, labels, train=False)


def test_seednet_default_widths_match_torch(rng):
    model, ref = make_pair("seednet", seed=0)
    assert model.config["widths"] == [[784, 1024, 824], [824, 512, 256], [256, 128, 10]]
    assert model.survival == [1.0, 1.0, 1.0]
    x = rng.standard_normal((3, 1, 28, 28))  # flattened by the model
    labels = rng.integers(0, 10, size=3)
    run_both(model, ref, x, labels, gates=[True, True, True])
    run_both(model, ref, x, labels, train=False)


# -- finite differences of whole networks ---------------------------------------------------------
FD = dict(max_elementwise=0, directions=2)


@pytest.mark.parametrize(
    "train,gates",
    [(True, [True, True, True]), (True, [False, False, False]), (True, [True, False, True])],
    ids=["open", "closed", "mixed"],
)
def test_resnet8_gradcheck(backend, train, gates, rng):
    model = sdnet.build_model(
        "resnet8", device=backend, dtype="float64", in_channels=2, num_classes=4, seed=1
    )
    x = backend.asarray(rng.standard_normal((3, 2, 8, 8)), "float64")
    worst = check_layer(model, x, train=train, gates=gates, **FD)
    assert set(worst) == {"x"} | {n for n, _ in model.named_parameters()}


def test_resnet8_gradcheck_eval(backend, rng):
    model = sdnet.build_model(
        "resnet8", device=backend, dtype="float64", shortcut="B", in_channels=1, num_classes=3
    )
    x = backend.asarray(rng.standard_normal((3, 1, 8, 8)), "float64")
    for _ in range(2):  # non-trivial running statistics
        model(x * 2.0 + 0.5, train=True, gates=[True, True, True])
    before = model.state_dict()
    check_layer(model, x, train=False, **FD)
    after = model.state_dict()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)


def test_seednet_gradcheck(backend, rng):
    model = sdnet.SeedNet(
        widths=SMALL_WIDTHS,
        in_features=12,
        num_classes=4,
        p_last=0.5,
        mode="row",
        device=backend,
        dtype="float64",
    )
    x = backend.asarray(rng.standard_normal((3, 12)), "float64")
    check_layer(model, x, train=True, gates=[True, np.array([True, False, True]), False], **FD)
    check_layer(model, x, train=False, **FD)


def test_gradcheck_catches_a_wrong_gradient(rng):
    """The finite-difference check used above is able to fail on a wrong backward."""
    model = sdnet.build_model("resnet8", dtype="float64", in_channels=1, num_classes=3)
    block = model.blocks[1]
    orig = block.forward

    def scaled(x, *, train, gate=True):
        y, back = orig(x, train=train, gate=gate)
        return y, lambda dy: back(dy) * 1.01  # 1% wrong input gradient

    block.forward = scaled
    x = rng.standard_normal((3, 1, 8, 8))
    with pytest.raises(AssertionError):
        check_layer(model, x, train=True, gates=[True, True, True], **FD)


@pytest.mark.parametrize("hw", [6, 7, 9])
def test_shortcut_a_odd_spatial_size(hw, rng):
    """Option A on odd feature maps (e.g. 6x6 input -> 3x3 before the last stage).

    The branch's stride-2 conv gives ceil(3/2) = 2 rows; the shortcut pools in ceil mode and
    gives the same, so the network works at any image size and matches PyTorch's
    ``avg_pool2d(ceil_mode=True)`` in forward and backward.
    """
    model, ref = make_pair("resnet8", in_channels=1, num_classes=3, seed=5)
    x, labels = data(rng, 3, 1, hw, k=3)
    for gates in ([True, True, True], [False, True, True]):
        run_both(model, ref, x, labels, gates=gates)
    run_both(model, ref, x, labels, train=False)
    check_layer(model, x, train=True, gates=[True, True, True], **FD)
