"""Stochastic depth: survival schedules, gates, dropped blocks, evaluation scaling."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sdnet
from sdnet.layers import Linear, ReLU, Sequential
from sdnet.models import ResidualBlock, survival_probabilities


# -- schedules ----------------------------------------------------------------------------------
def test_linear_schedule_paper_values():
    np.testing.assert_allclose(survival_probabilities(3, 0.5, "linear"), [5 / 6, 2 / 3, 1 / 2])
    # the paper's ResNet-110: L = 54, p_L = 0.5
    p = survival_probabilities(54, 0.5)
    assert len(p) == 54
    np.testing.assert_allclose(p[0], 1 - 0.5 / 54)
    np.testing.assert_allclose(p[-1], 0.5)
    np.testing.assert_allclose(np.diff(p), -0.5 / 54)


def test_uniform_and_timm_schedules():
    np.testing.assert_allclose(survival_probabilities(4, 0.7, "uniform"), [0.7] * 4)
    np.testing.assert_allclose(survival_probabilities(5, 0.6, "timm"), [1.0, 0.9, 0.8, 0.7, 0.6])
    np.testing.assert_allclose(survival_probabilities(1, 0.6, "timm"), [0.6])
    t = survival_probabilities(9, 0.2, "timm")
    assert t[0] == 1.0 and math.isclose(t[-1], 0.2)


@pytest.mark.parametrize("rule", ["linear", "uniform", "timm"])
def test_p_last_one_is_constant_depth(rule):
    assert survival_probabilities(7, 1.0, rule) == [1.0] * 7
    model = sdnet.build_model("resnet20", p_last=1.0, rule=rule, in_channels=1)
    assert model.survival == [1.0] * 9
    gates = [model.draw_gates(2) for _ in range(20)]
    assert all(all(g) for g in gates)


@pytest.mark.parametrize("p_last", [0.0, -0.1, 1.0001, 2.0, float("nan")])
def test_p_last_out_of_range_raises(p_last):
    with pytest.raises(ValueError):
        survival_probabilities(3, p_last)
    with pytest.raises(ValueError):
        sdnet.build_model("resnet8", p_last=p_last)


def test_bad_rule_mode_scaling_raise():
    with pytest.raises(ValueError):
        survival_probabilities(3, 0.5, "exponential")
    with pytest.raises(ValueError):
        sdnet.build_model("resnet8", mode="channel")
    with pytest.raises(ValueError):
        sdnet.build_model("resnet8", scaling="none")


def test_model_survival_follows_rule():
    model = sdnet.build_model("resnet20", p_last=0.5, in_channels=1)
    np.testing.assert_allclose(model.survival, [1 - l / 9 * 0.5 for l in range(1, 10)])
    seed = sdnet.SeedNet(p_last=0.4, rule="timm")
    np.testing.assert_allclose(seed.survival, [1.0, 0.7, 0.4])
    assert sdnet.SeedNet().survival == [1.0, 1.0, 1.0]  # the blog's network: no dropping


# -- dropped blocks -----------------------------------------------------------------------------
def _resnet(**kw):
    return sdnet.build_model("resnet8", dtype="float64", in_channels=2, num_classes=3, **kw)


def _x(rng, n=3, c=2, hw=8):
    return rng.standard_normal((n, c, hw, hw))


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_dropped_block_has_no_grad_and_keeps_bn_stats(shortcut, rng):
    model = _resnet(shortcut=shortcut)
    model(_x(rng), train=True, gates=[True, True, True])  # stats no longer at init
    before = model.state_dict()
    model.zero_grad()
    logits, back = model(_x(rng), train=True, gates=[True, False, True])
    back(np.ones_like(logits))
    after = model.state_dict()
    grads = dict(model.named_parameters())
    branch = ("conv1", "bn1", "conv2", "bn2")
    for name, p in grads.items():
        if name.startswith("layer2.0.") and name.split(".")[2] in branch:
            assert p.grad is None or not np.any(p.grad), name
        else:
            assert p.grad is not None and np.any(p.grad), name
    for key in before:
        in_dropped_branch = key.startswith("layer2.0.") and key.split(".")[2] in branch
        if "running" in key or "num_batches" in key:
            if in_dropped_branch:
                np.testing.assert_array_equal(after[key], before[key], err_msg=key)
            else:
                assert not np.array_equal(after[key], before[key]), key
    assert int(after["layer2.0.bn1.num_batches_tracked"]) == 1
    assert int(after["layer1.0.bn1.num_batches_tracked"]) == 2
    if shortcut == "B":  # the shortcut still runs: its BN counts the batch
        assert int(after["layer2.0.shortcut.1.num_batches_tracked"]) == 2


def test_dropped_identity_block_outputs_relu_of_input(rng):
    model = _resnet()
    block = model.blocks[0]  # layer1.0: identity shortcut
    assert block.shortcut is None
    x = rng.standard_normal((3, 16, 4, 4))
    y, back = block(x, train=True, gate=False)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    dy = rng.standard_normal(y.shape)
    np.testing.assert_array_equal(back(dy), dy * (x > 0))
    # an open gate computes something else
    y_open, _ = block(x, train=True, gate=True)
    assert not np.allclose(y_open, y)


def test_dropped_downsampling_block_outputs_relu_of_shortcut(rng):
    model = _resnet(shortcut="A")
    block = model.blocks[1]  # layer2.0: 16 -> 32 channels, stride 2
    x = rng.standard_normal((3, 16, 4, 4))
    y, _ = block(x, train=True, gate=False)
    pooled = x.reshape(3, 16, 2, 2, 2, 2).mean(axis=(3, 5))
    expected = np.concatenate([np.maximum(pooled, 0), np.zeros((3, 16, 2, 2))], axis=1)
    np.testing.assert_allclose(y, expected, rtol=1e-14, atol=1e-15)


def test_dropped_block_does_not_call_its_branch(monkeypatch, rng):
    model = _resnet()

    def boom(*args, **kwargs):
        raise AssertionError("the branch of a dropped block ran")

    for block in model.blocks:
        monkeypatch.setattr(block.branch, "forward", boom)
    logits, back = model(_x(rng), train=True, gates=[False, False, False])
    back(np.ones_like(logits))
    with pytest.raises(AssertionError, match="dropped block ran"):
        model(_x(rng), train=True, gates=[False, True, False])


def test_row_mode_with_no_surviving_row_skips_branch(monkeypatch, rng):
    model = _resnet(mode="row")

    def boom(*args, **kwargs):
        raise AssertionError("branch ran")

    monkeypatch.setattr(model.blocks[2].branch, "forward", boom)
    none = np.zeros(3, dtype=bool)
    model(_x(rng), train=True, gates=[np.array([True, False, True]), True, none])


def test_row_mode_masks_rows(rng):
    """Row gates: dropped rows are the shortcut only, kept rows the full block."""
    p = 0.5
    block = ResidualBlock(
        Sequential(
            ("fc", Linear(5, 5, backend=sdnet.get_backend("cpu"), dtype="float64", rng=rng))
        ),
        survival=p,
        mode="row",
        post_relu=False,
    )
    x = rng.standard_normal((4, 5))
    f = block.branch(x, train=True)[0]
    mask = np.array([True, False, False, True])
    y, back = block(x, train=True, gate=mask)
    np.testing.assert_allclose(y, np.where(mask[:, None], x + f, x), rtol=1e-14)
    dy = rng.standard_normal(y.shape)
    block.zero_grad()
    back(dy)
    w = block.branch.layers[0].weight
    np.testing.assert_allclose(w.grad, (dy * mask[:, None]).T @ x, rtol=1e-12)


# -- evaluation = expectation over the gates (linear block) --------------------------------------
def _linear_block(rng, p: float, scaling: str, d: int = 6) -> ResidualBlock:
    fc = Linear(d, d, backend=sdnet.get_backend("cpu"), dtype="float64", rng=rng)
    return ResidualBlock(
        Sequential(("fc", fc)), survival=p, scaling=scaling, post_relu=False, mode="batch"
    )


@pytest.mark.parametrize("scaling", ["paper", "inverted"])
def test_eval_is_expectation_of_training_for_linear_block(scaling, rng):
    p = 0.3
    block = _linear_block(rng, p, scaling)
    x = rng.standard_normal((4, 6))
    fc = block.branch.layers[0]
    f = x @ fc.weight.value.T + fc.bias.value
    y_eval, _ = block(x, train=False)
    y_on, _ = block(x, train=True, gate=True)
    y_off, _ = block(x, train=True, gate=False)
    expectation = p * y_on + (1 - p) * y_off
    np.testing.assert_allclose(y_eval, expectation, rtol=1e-12, atol=1e-14)
    if scaling == "paper":
        np.testing.assert_allclose(y_on, x + f, rtol=1e-12)
        np.testing.assert_allclose(y_eval, p * (x + f) + (1 - p) * x, rtol=1e-12)
    else:
        np.testing.assert_allclose(y_on, x + f / p, rtol=1e-12)
        np.testing.assert_allclose(y_eval, x + f, rtol=1e-12)
    np.testing.assert_array_equal(y_off, x)


def test_eval_matches_monte_carlo_of_drawn_gates(rng):
    """The ResNet's eval output is the training output averaged over drawn gates when the
    network is linear in each gate: one block, BN in eval is affine, so check it on a block."""
    p = 0.4
    block = _linear_block(rng, p, "paper")
    x = rng.standard_normal((2, 6))
    gen = np.random.default_rng(0)
    n = 4000
    draws = gen.random(n) < p
    acc = sum(block(x, train=True, gate=bool(g))[0] for g in draws) / n
    y_eval, _ = block(x, train=False)
    f = block.branch(x, train=True)[0]
    tol = 5 * math.sqrt(p * (1 - p) / n) * np.abs(f) + 1e-12
    assert np.all(np.abs(acc - y_eval) <= tol)


# -- gate statistics and reproducibility ----------------------------------------------------------
def test_batch_gate_frequencies_match_survival():
    model = sdnet.build_model("resnet14", p_last=0.2, in_channels=1, seed=3)
    n = 4000
    draws = np.array([model.draw_gates(8) for _ in range(n)])  # (n, L)
    assert draws.dtype == bool and draws.shape == (n, 6)
    freq = draws.mean(axis=0)
    p = np.array(model.survival)
    bound = 5 * np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) < bound), (freq, p)
    # blocks are drawn independently: block 0 and 5 are uncorrelated
    both = np.mean(draws[:, 0] & draws[:, 5])
    assert abs(both - p[0] * p[5]) < 5 * math.sqrt(p[0] * p[5] / n)


def test_row_gate_frequencies_match_survival():
    model = sdnet.build_model("resnet14", p_last=0.3, mode="row", in_channels=1, seed=4)
    batch, reps = 10, 400
    draws = [model.draw_gates(batch) for _ in range(reps)]
    assert all(len(d) == 6 and all(np.asarray(g).shape == (batch,) for g in d) for d in draws)
    arr = np.array([[np.asarray(g) for g in d] for d in draws])  # (reps, L, batch)
    n = reps * batch
    freq = arr.mean(axis=(0, 2))
    p = np.array(model.survival)
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n)), (freq, p)
    # rows are not all equal (per-sample gates, not per batch)
    assert np.any(arr.min(axis=2) != arr.max(axis=2))


def test_training_passes_use_drawn_gates_with_expected_frequency(rng):
    model = sdnet.SeedNet(
        widths=[(4, 3, 4), (4, 3, 4), (4, 3, 2)], in_features=4, num_classes=2, p_last=0.5
    )
    x = rng.standard_normal((2, 4)).astype(np.float32)
    n = 600
    used = []
    for _ in range(n):
        model(x, train=True)
        used.append(list(model.last_gates))
    freq = np.mean(used, axis=0)
    p = np.array(model.survival)
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n)), (freq, p)


def test_same_seed_same_gates_different_seed_different_gates():
    def gates(seed):
        m = sdnet.build_model("resnet14", p_last=0.5, in_channels=1, seed=seed)
        return [m.draw_gates(4) for _ in range(30)]

    assert gates(5) == gates(5)
    assert gates(5) != gates(6)


def test_gate_stream_independent_of_init():
    """Drawing gates does not depend on how many weights were initialised (separate streams)."""
    a = sdnet.build_model("resnet14", p_last=0.5, in_channels=1, seed=5, width=1)
    b = sdnet.build_model("resnet14", p_last=0.5, in_channels=3, seed=5, width=2)
    assert [a.draw_gates(4) for _ in range(20)] == [b.draw_gates(4) for _ in range(20)]


def test_forced_gates_reported_in_last_gates(rng):
    model = _resnet(p_last=0.5)
    x = _x(rng)
    model(x, train=True, gates=[False, True, False])
    assert model.last_gates == [False, True, False]
    assert model.kept_fraction() == pytest.approx(1 / 3)
    model(x, train=False)
    assert model.last_gates is None
    model(x, train=True)
    assert len(model.last_gates) == 3


@pytest.mark.parametrize("mode", ["batch", "row"])
def test_numpy_bool_gates_are_whole_batch_gates(mode, rng):
    """NumPy booleans (``np.array([...])`` of gates, or ``model.draw_gates`` output passed
    through numpy) are one gate per block, as Python bools are."""
    model = _resnet(mode=mode)
    x = _x(rng)
    model(x, train=True, gates=np.array([True, True, False]))
    assert model.last_gates == [True, True, False]
    assert all(type(g) is bool for g in model.last_gates)
    model(x, train=True, gates=[np.True_, True, np.False_])
    assert model.last_gates == [True, True, False]


def test_forced_row_gates_reported(rng):
    model = _resnet(mode="row")
    g = [np.array([True, False, True]), True, np.array([False, False, True])]
    model(_x(rng), train=True, gates=g)
    assert model.last_gates[1] is True
    np.testing.assert_array_equal(model.last_gates[0], g[0])
    np.testing.assert_array_equal(model.last_gates[2], g[2])
    assert model.kept_fraction() == pytest.approx((2 / 3 + 1 + 1 / 3) / 3)


def test_bad_gates_raise(rng):
    model = _resnet()
    x = _x(rng)
    with pytest.raises(ValueError):
        model(x, train=True, gates=[True, True])
    with pytest.raises(ValueError):
        model(x, train=True, gates=[True, True, True, True])
    with pytest.raises(ValueError, match="row"):
        model(x, train=True, gates=[np.array([True, False, True]), True, True])
    row = _resnet(mode="row")
    with pytest.raises(ValueError):  # wrong number of rows
        row(x, train=True, gates=[np.array([True, False]), True, True])


def test_eval_with_gates_raises(rng):
    model = _resnet()
    with pytest.raises(ValueError):
        model(_x(rng), train=False, gates=[True, True, True])


def test_bad_block_construction_raises(rng):
    fc = Linear(3, 3, backend=sdnet.get_backend("cpu"), rng=rng)
    with pytest.raises(ValueError):
        ResidualBlock(fc, survival=0.0)
    with pytest.raises(ValueError):
        ResidualBlock(fc, survival=1.5)
    with pytest.raises(ValueError):
        ResidualBlock(fc, mode="sample")
    with pytest.raises(ValueError):
        ResidualBlock(fc, scaling="both")


def test_block_with_shortcut_layer_and_relu(rng):
    """A block with an explicit shortcut layer: y = relu(shortcut(x) + branch(x))."""
    be = sdnet.get_backend("cpu")
    fc = Linear(4, 3, backend=be, dtype="float64", rng=rng)
    sc = Sequential(("wh", Linear(4, 3, backend=be, dtype="float64", rng=rng)), ("r", ReLU()))
    block = ResidualBlock(fc, sc, survival=0.5)
    x = rng.standard_normal((5, 4))
    s = np.maximum(x @ sc.layers[0].weight.value.T + sc.layers[0].bias.value, 0)
    b = x @ fc.weight.value.T + fc.bias.value
    np.testing.assert_allclose(block(x, train=True, gate=True)[0], np.maximum(s + b, 0))
    np.testing.assert_allclose(block(x, train=True, gate=False)[0], np.maximum(s, 0))
    np.testing.assert_allclose(block(x, train=False)[0], np.maximum(s + 0.5 * b, 0))
    names = [n for n, _ in block.named_parameters()]
    assert names == ["weight", "bias", "shortcut.wh.weight", "shortcut.wh.bias"]
