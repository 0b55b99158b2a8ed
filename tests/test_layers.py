"""Every layer of ``sdnet.layers`` on every backend.

* ``check_layer`` (float64 central differences for the input and every parameter), train mode,
  and eval mode for BatchNorm;
* BatchNorm's running statistics follow PyTorch (momentum 0.1, unbiased running variance);
* an evaluation pass between a training forward and its backward changes nothing;
* ``backprop`` *adds* into ``Param.grad`` (twice = double);
* float32 stays float32 through forward, backward, parameter gradients and buffers.

On the ``array_api_strict`` backend (a non-default device) every test also proves that no array
is created on the wrong device.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from array_api_compat import device as array_device

import sdnet
from sdnet.gradcheck import check_layer
from sdnet.layers import (
    Arctan,
    BatchNorm,
    Conv2d,
    GlobalAvgPool,
    Layer,
    Linear,
    ReLU,
    Sequential,
    ShortcutA,
    Tanh,
)

HAS_TORCH = importlib.util.find_spec("torch") is not None


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values in +-[0.1, 2]: no ReLU kink within the finite-difference step."""
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 2.0, shape)


def randomize_bn(bn: BatchNorm, backend: sdnet.Backend, rng: np.random.Generator) -> BatchNorm:
    """Non-trivial affine parameters and running statistics (defaults are 1, 0, 0, 1)."""
    c = bn.weight.value.shape[0]
    dtype = bn.weight.value.dtype
    bn.weight.value = backend.asarray(rng.uniform(0.5, 1.5, c), dtype)
    bn.bias.value = backend.asarray(rng.standard_normal(c), dtype)
    bn.running_mean.value = backend.asarray(rng.standard_normal(c) * 0.5, dtype)
    bn.running_var.value = backend.asarray(rng.uniform(0.5, 2.0, c), dtype)
    return bn


@dataclass(frozen=True)
class LayerCase:
    """``build(backend, dtype, rng) -> layer``; ``x(rng)`` the host input (float64)."""

    name: str
    build: Callable[[sdnet.Backend, str, np.random.Generator], Layer]
    x: Callable[[np.random.Generator], np.ndarray]
    has_params: bool = True


def _seq(b: sdnet.Backend, d: str, rng: np.random.Generator) -> Layer:
    return Sequential(
        ("conv1", Conv2d(2, 3, 3, padding=1, backend=b, dtype=d, rng=rng)),
        ("bn1", randomize_bn(BatchNorm(3, backend=b, dtype=d), b, rng)),
        ("act", Tanh()),
        ("down", ShortcutA(2, 4)),
        ("pool", GlobalAvgPool()),
        ("fc", Linear(4, 3, backend=b, dtype=d, rng=rng)),
    )


def _seq_positional(b: sdnet.Backend, d: str, rng: np.random.Generator) -> Layer:
    return Sequential(
        Linear(5, 4, backend=b, dtype=d, rng=rng),
        ReLU(),
        Linear(4, 3, bias=False, backend=b, dtype=d, rng=rng, init="kaiming"),
        Arctan(),
    )


LAYERS: list[LayerCase] = [
    LayerCase(
        "conv3_s1_p1",
        lambda b, d, rng: Conv2d(2, 3, 3, padding=1, backend=b, dtype=d, rng=rng),
        lambda rng: rng.standard_normal((2, 2, 5, 5)),
    ),
    LayerCase(
        "conv3_s2_p1_bias",
        lambda b, d, rng: Conv2d(
            3, 2, 3, stride=2, padding=1, bias=True, backend=b, dtype=d, rng=rng
        ),
        lambda rng: rng.standard_normal((2, 3, 6, 6)),
    ),
    LayerCase(
        "conv1_s2",
        lambda b, d, rng: Conv2d(2, 4, 1, stride=2, backend=b, dtype=d, rng=rng),
        lambda rng: rng.standard_normal((2, 2, 5, 5)),
    ),
    LayerCase(
        "conv5_s1_p2",
        lambda b, d, rng: Conv2d(2, 2, 5, padding=2, backend=b, dtype=d, rng=rng),
        lambda rng: rng.standard_normal((2, 2, 5, 5)),
    ),
    LayerCase(
        "batchnorm_4d",
        lambda b, d, rng: randomize_bn(BatchNorm(3, backend=b, dtype=d), b, rng),
        lambda rng: rng.standard_normal((2, 3, 4, 5)) * 2.0 + 1.0,
    ),
    LayerCase(
        "batchnorm_2d",
        lambda b, d, rng: randomize_bn(BatchNorm(3, backend=b, dtype=d), b, rng),
        lambda rng: rng.standard_normal((5, 3)) * 2.0 - 1.0,
    ),
    LayerCase(
        "linear",
        lambda b, d, rng: Linear(5, 3, backend=b, dtype=d, rng=rng),
        lambda rng: rng.standard_normal((3, 5)),
    ),
    LayerCase(
        "linear_nobias",
        lambda b, d, rng: Linear(5, 3, bias=False, backend=b, dtype=d, rng=rng),
        lambda rng: rng.standard_normal((3, 5)),
    ),
    LayerCase(
        "linear_flattens_4d",
        lambda b, d, rng: Linear(2 * 3 * 3, 3, backend=b, dtype=d, rng=rng),
        lambda rng: rng.standard_normal((2, 2, 3, 3)),
    ),
    LayerCase(
        "relu", lambda b, d, rng: ReLU(), lambda rng: away_from_zero(rng, (2, 3, 4, 4)), False
    ),
    LayerCase(
        "arctan", lambda b, d, rng: Arctan(), lambda rng: rng.standard_normal((2, 3, 4)) * 2, False
    ),
    LayerCase(
        "tanh", lambda b, d, rng: Tanh(), lambda rng: rng.standard_normal((2, 3, 4, 4)), False
    ),
    LayerCase(
        "global_avg_pool",
        lambda b, d, rng: GlobalAvgPool(),
        lambda rng: rng.standard_normal((2, 3, 5, 4)),
        False,
    ),
    LayerCase(
        "shortcut_a_s2_even",
        lambda b, d, rng: ShortcutA(2, 5),
        lambda rng: rng.standard_normal((2, 3, 6, 6)),
        False,
    ),
    LayerCase(
        "shortcut_a_s2_odd",
        lambda b, d, rng: ShortcutA(2, 4),
        lambda rng: rng.standard_normal((2, 2, 5, 5)),
        False,
    ),
    LayerCase(
        "shortcut_a_s1_identity",
        lambda b, d, rng: ShortcutA(1, 3),
        lambda rng: rng.standard_normal((2, 3, 4, 4)),
        False,
    ),
    LayerCase("sequential_named", _seq, lambda rng: rng.standard_normal((2, 2, 6, 6))),
    LayerCase("sequential_positional", _seq_positional, lambda rng: rng.standard_normal((3, 5))),
]
LAYER_IDS = [c.name for c in LAYERS]
PARAM_LAYERS = [c for c in LAYERS if c.has_params]
BN_LAYERS = [c for c in LAYERS if c.name.startswith(("batchnorm", "sequential_named"))]

ALL_LAYER_CLASSES = {
    Conv2d,
    BatchNorm,
    Linear,
    ReLU,
    Arctan,
    Tanh,
    GlobalAvgPool,
    ShortcutA,
    Sequential,
}


def test_table_covers_every_layer_class(rng: np.random.Generator) -> None:
    backend = sdnet.get_backend("cpu")
    seen: set[type] = set()

    def walk(layer: Layer) -> None:
        seen.add(type(layer))
        for child in layer._children.values():
            walk(child)

    for case in LAYERS:
        walk(case.build(backend, "float64", rng))
    assert ALL_LAYER_CLASSES <= seen


def _build(case: LayerCase, backend: sdnet.Backend, dtype: str, seed: int = 7) -> Layer:
    return case.build(backend, dtype, np.random.default_rng(seed))


@pytest.mark.parametrize("hw", [(6, 6), (5, 7)], ids=["even", "odd"])
def test_shortcut_a_matches_reference(
    hw: tuple[int, int], backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    """Option A: 2x2 average pooling (a partial edge window averages what it holds), then zero
    channels appended; its size matches a stride-2, padding-1, 3x3 convolution's output."""
    h, w = hw
    x = rng.standard_normal((2, 3, h, w))
    y, _ = ShortcutA(2, 5)(backend.asarray(x, "float64"), train=True)
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1  # conv_output_size(h, 3, 2, 1)
    expected = np.zeros((2, 5, ho, wo))
    for i in range(ho):
        for j in range(wo):
            expected[:, :3, i, j] = x[:, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean(axis=(2, 3))
    np.testing.assert_allclose(backend.to_numpy(y), expected, rtol=1e-12, atol=1e-15)


# -- finite differences -----------------------------------------------------------------------


@pytest.mark.parametrize("case", LAYERS, ids=LAYER_IDS)
def test_check_layer_train(
    case: LayerCase, backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    layer = _build(case, backend, "float64")
    x = backend.asarray(case.x(rng), "float64")
    worst = check_layer(layer, x, train=True, directions=3, max_elementwise=24)
    assert set(worst) == {"x"} | {n for n, _ in layer.named_parameters()}
    assert all(p.grad is None for p in layer.parameters())  # check_layer cleans up


@pytest.mark.parametrize("case", BN_LAYERS, ids=lambda c: c.name)
def test_check_layer_eval(
    case: LayerCase, backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    layer = _build(case, backend, "float64")
    x = backend.asarray(case.x(rng), "float64")
    worst = check_layer(layer, x, train=False, directions=3, max_elementwise=24)
    assert "x" in worst


def test_check_layer_restores_running_statistics(
    backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    bn = randomize_bn(BatchNorm(3, backend=backend, dtype="float64"), backend, rng)
    before = bn.state_dict()
    check_layer(bn, backend.asarray(rng.standard_normal((4, 3)), "float64"), train=True)
    after = bn.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


# -- BatchNorm running statistics follow PyTorch ------------------------------------------------


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (6, 3)], ids=["4d", "2d"])
def test_batchnorm_running_stats_match_torch(
    shape: tuple[int, ...], backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    import torch
    import torch.nn.functional as tf

    c = shape[1]
    bn = BatchNorm(c, momentum=0.1, backend=backend, dtype="float64")
    rm = torch.zeros(c, dtype=torch.float64)
    rv = torch.ones(c, dtype=torch.float64)
    xs = [rng.standard_normal(shape) * 3.0 + 2.0, rng.standard_normal(shape) * 0.5 - 1.0]
    for x in xs:
        y, _ = bn(backend.asarray(x, "float64"), train=True)
        yt = tf.batch_norm(
            torch.tensor(x), rm, rv, None, None, training=True, momentum=0.1, eps=bn.eps
        )
        np.testing.assert_allclose(backend.to_numpy(y), yt.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(bn.running_mean.value), rm.numpy(), rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(bn.running_var.value), rv.numpy(), rtol=1e-12)
    assert int(backend.to_numpy(bn.num_batches_tracked.value)) == 2
    # evaluation then uses exactly these statistics
    x = rng.standard_normal(shape)
    y, _ = bn(backend.asarray(x, "float64"), train=False)
    yt = tf.batch_norm(torch.tensor(x), rm, rv, None, None, training=False, eps=bn.eps)
    np.testing.assert_allclose(backend.to_numpy(y), yt.numpy(), rtol=1e-10, atol=1e-12)


def test_batchnorm_running_stats_formula(backend: sdnet.Backend, rng: np.random.Generator) -> None:
    """Independent of torch: running = 0.9 running + 0.1 batch, variance unbiased (M - 1)."""
    x = rng.standard_normal((2, 3, 3, 3)) * 2.0 + 0.5
    bn = BatchNorm(3, backend=backend, dtype="float64")
    bn(backend.asarray(x, "float64"), train=True)
    rows = np.moveaxis(x, 1, 0).reshape(3, -1)  # (C, M)
    np.testing.assert_allclose(
        backend.to_numpy(bn.running_mean.value), 0.1 * rows.mean(axis=1), rtol=1e-12
    )
    np.testing.assert_allclose(
        backend.to_numpy(bn.running_var.value), 0.9 + 0.1 * rows.var(axis=1, ddof=1), rtol=1e-12
    )


def test_batchnorm_eval_does_not_touch_running_stats(
    backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    bn = randomize_bn(BatchNorm(3, backend=backend, dtype="float64"), backend, rng)
    before = bn.state_dict()
    bn(backend.asarray(rng.standard_normal((4, 3)), "float64"), train=False)
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


# -- the backprop closure owns its state --------------------------------------------------------


def _grads(layer: Layer, backend: sdnet.Backend) -> dict[str, np.ndarray]:
    """Host copies of every parameter gradient."""
    return {n: np.array(backend.to_numpy(p.grad)) for n, p in layer.named_parameters()}


@pytest.mark.parametrize("case", PARAM_LAYERS, ids=lambda c: c.name)
def test_eval_pass_between_forward_and_backward(
    case: LayerCase, backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    x_host = case.x(rng)
    x_other = case.x(rng) * 3.0 + 1.0  # a different batch for the eval pass
    plain = _build(case, backend, "float64")
    mixed = _build(case, backend, "float64")
    x = backend.asarray(x_host, "float64")

    y, back = plain(x, train=True)
    dy = backend.asarray(rng.standard_normal(tuple(y.shape)), "float64")
    dx_plain = backend.to_numpy(back(dy))

    _, back_mixed = mixed(x, train=True)
    mixed(backend.asarray(x_other, "float64"), train=False)
    dx_mixed = backend.to_numpy(back_mixed(dy))

    np.testing.assert_array_equal(dx_mixed, dx_plain)
    g_plain, g_mixed = _grads(plain, backend), _grads(mixed, backend)
    for name in g_plain:
        np.testing.assert_array_equal(g_mixed[name], g_plain[name], err_msg=name)


@pytest.mark.parametrize("case", PARAM_LAYERS, ids=lambda c: c.name)
def test_backprop_accumulates_param_grads(
    case: LayerCase, backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    layer = _build(case, backend, "float64")
    y, back = layer(backend.asarray(case.x(rng), "float64"), train=True)
    dy = backend.asarray(rng.standard_normal(tuple(y.shape)), "float64")
    assert all(p.grad is None for p in layer.parameters())
    dx1 = backend.to_numpy(back(dy)).copy()
    once = _grads(layer, backend)
    assert any(np.any(g != 0) for g in once.values())
    dx2 = backend.to_numpy(back(dy))
    twice = _grads(layer, backend)
    np.testing.assert_array_equal(dx2, dx1)  # the input gradient is returned, not accumulated
    for name in once:
        np.testing.assert_allclose(twice[name], 2 * once[name], rtol=1e-14, atol=0, err_msg=name)
    layer.zero_grad()
    assert all(p.grad is None for p in layer.parameters())


# -- dtype and device ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", LAYERS, ids=LAYER_IDS)
def test_float32_stays_float32(
    case: LayerCase, backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    f32 = backend.xp.float32
    layer = _build(case, backend, "float32")
    x = backend.asarray(case.x(rng), "float32")
    for train in (True, False):
        y, back = layer(x, train=train)
        assert y.dtype == f32
        assert array_device(y) == backend.device
        dx = back(backend.asarray(np.ones(tuple(y.shape)), "float32"))
        assert dx.dtype == f32
        assert tuple(dx.shape) == tuple(x.shape)
        assert array_device(dx) == backend.device
        for name, p in layer.named_parameters():
            assert p.value.dtype == f32, name
            assert p.grad is not None and p.grad.dtype == f32, name
            assert tuple(p.grad.shape) == tuple(p.value.shape), name
        for name, b in layer.named_buffers():
            if not name.endswith("num_batches_tracked"):
                assert b.value.dtype == f32, name
        layer.zero_grad()


@pytest.mark.parametrize("case", LAYERS, ids=LAYER_IDS)
def test_float32_close_to_float64(
    case: LayerCase, backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    x_host = case.x(rng)
    outs = {}
    for dtype in ("float32", "float64"):
        layer = _build(case, backend, dtype)
        y, back = layer(backend.asarray(x_host, dtype), train=True)
        dx = back(backend.asarray(np.ones(tuple(y.shape)), dtype))
        outs[dtype] = (
            backend.to_numpy(y).astype(np.float64),
            backend.to_numpy(dx).astype(np.float64),
        )
    for a, b in zip(outs["float32"], outs["float64"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_state_names_follow_pytorch(backend: sdnet.Backend) -> None:
    layer = _seq(backend, "float64", np.random.default_rng(0))
    assert [n for n, _ in layer.named_parameters()] == [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "fc.weight",
        "fc.bias",
    ]
    assert [n for n, _ in layer.named_buffers()] == [
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
    ]
    positional = _seq_positional(backend, "float64", np.random.default_rng(0))
    assert [n for n, _ in positional.named_parameters()] == ["0.weight", "0.bias", "2.weight"]
