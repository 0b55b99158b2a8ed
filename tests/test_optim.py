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


# -- decoupled weight decay, dropped parameters ---------------------------------------------


@pytest.mark.parametrize("nesterov", [False, True])
def test_decoupled_weight_decay_matches_formula(backend, rng, nesterov):
    lr, m, wd = 0.05, 0.9, 0.1
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)), None, rng.standard_normal((3, 4))]  # None: dropped
    p = Param(backend.asarray(w0, "float64"))
    opt = sdnet.SGD(
        [p], lr=lr, momentum=m, nesterov=nesterov, weight_decay=wd, decoupled_weight_decay=True
    )
    w, buf = w0.copy(), None
    for g in grads:
        p.grad = None if g is None else backend.asarray(g, "float64")
        opt.step()
        g = np.zeros_like(w) if g is None else g  # the default policy: a zero gradient
        w = w * (1 - lr * wd)  # decoupled: shrink by the current lr, before momentum
        buf = g if buf is None else m * buf + g
        w = w - lr * (g + m * buf if nesterov else buf)
    np.testing.assert_allclose(backend.to_numpy(p.value), w, rtol=1e-14, atol=1e-15)


def test_dropped_parameter_policies_match_torch(backend, rng):
    """Default: a dropped parameter steps as if its gradient were zero (torch with a zero
    grad); skip_missing: as torch, which skips parameters whose grad is None."""
    w0 = rng.standard_normal(6)
    grads = [rng.standard_normal(6), None, None, rng.standard_normal(6)]
    for skip in (False, True):
        p = Param(backend.asarray(w0, "float64"))
        kw = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
        opt = sdnet.SGD([("w", p)], skip_missing=skip, **kw)
        t = torch.tensor(w0, requires_grad=True)
        topt = torch.optim.SGD([t], **kw)
        for g in grads:
            p.grad = None if g is None else backend.asarray(g, "float64")
            opt.step()
            zero = None if skip else torch.zeros(6, dtype=torch.float64)
            t.grad = zero if g is None else torch.tensor(g)
            topt.step()
        np.testing.assert_allclose(backend.to_numpy(p.value), t.detach().numpy(), rtol=1e-12)


# -- parameter groups -------------------------------------------------------------------------


def test_param_groups_match_torch(backend, rng):
    shapes = {"a.weight": (3, 4), "a.bias": (3,), "b.weight": (2, 3)}
    w0 = {n: rng.standard_normal(s) for n, s in shapes.items()}
    params = {n: Param(backend.asarray(w, "float64")) for n, w in w0.items()}
    opt = sdnet.SGD(
        [
            {"params": [("a.weight", params["a.weight"])], "name": "a"},
            {"params": [("a.bias", params["a.bias"])], "weight_decay": 0.0},
            {"params": [("b.weight", params["b.weight"])], "lr_mult": 0.1, "weight_decay": 1e-2},
        ],
        lr=0.05,
        momentum=0.9,
        weight_decay=5e-4,
    )
    assert [g.name for g in opt.groups] == ["a", "group1", "group2"]
    assert [g.weight_decay for g in opt.groups] == [5e-4, 0.0, 1e-2]
    ts = {n: torch.tensor(w, requires_grad=True) for n, w in w0.items()}
    topt = torch.optim.SGD(
        [
            {"params": [ts["a.weight"]]},
            {"params": [ts["a.bias"]], "weight_decay": 0.0},
            {"params": [ts["b.weight"]], "lr": 0.005, "weight_decay": 1e-2},
        ],
        lr=0.05,
        momentum=0.9,
        weight_decay=5e-4,
    )
    for base_lr in [0.05, 0.05, 0.02, 0.01]:  # a schedule sets opt.lr
        opt.lr = base_lr
        for tg, mult in zip(topt.param_groups, (1.0, 1.0, 0.1), strict=True):
            tg["lr"] = base_lr * mult
        assert opt.group_lrs() == {"a": base_lr, "group1": base_lr, "group2": base_lr * 0.1}
        for n in shapes:
            g = rng.standard_normal(shapes[n])
            params[n].grad = backend.asarray(g, "float64")
            ts[n].grad = torch.tensor(g)
        opt.step()
        topt.step()
    for n in shapes:
        got = backend.to_numpy(params[n].value)
        np.testing.assert_allclose(got, ts[n].detach().numpy(), rtol=1e-12, err_msg=n)


def test_group_errors():
    p, q = Param(np.ones(2)), Param(np.ones(3))
    with pytest.raises(ValueError, match="one group only"):
        sdnet.SGD([{"params": [("p", p)]}, {"params": [("p2", p), ("q", q)]}])
    with pytest.raises(ValueError, match="named 'x'"):
        sdnet.SGD([("x", p), ("x", q)])
    with pytest.raises(ValueError, match="keys must be"):
        sdnet.SGD([{"params": [p], "lr": 0.1}])
    with pytest.raises(ValueError, match="no parameters"):
        sdnet.SGD([{"params": [p]}, {"params": [], "name": "empty"}])
    with pytest.raises(ValueError, match="no parameters"):
        sdnet.SGD([])
    with pytest.raises(TypeError, match="not a mix"):
        sdnet.SGD([{"params": [p]}, ("q", q)])
    with pytest.raises(ValueError, match="lr_mult"):
        sdnet.SGD([{"params": [p], "lr_mult": -1.0}])
    with pytest.raises(ValueError, match="nesterov"):
        sdnet.SGD([p], momentum=0.0, nesterov=True)
    with pytest.raises(ValueError, match="lr must be > 0"):
        sdnet.SGD([p], lr=0.0)
    assert [g.names for g in sdnet.SGD([p, q]).groups] == [["param0", "param1"]]


def test_param_groups_helper_no_decay_and_patterns():
    from sdnet.optim import param_groups

    model = sdnet.build_model("resnet8", in_channels=1, num_classes=3, seed=0)
    named = dict(model.named_parameters())
    groups = param_groups(model.named_parameters(), weight_decay=1e-4, decay_bn_and_bias=False)
    assert [g["name"] for g in groups] == ["default", "no_decay"]
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0]
    no_decay = [n for n, _ in groups[1]["params"]]
    assert no_decay == [n for n, p in named.items() if p.value.ndim == 1]
    assert "fc.bias" in no_decay and "bn1.weight" in no_decay and "fc.weight" not in no_decay

    groups = param_groups(
        model.named_parameters(), decay_bn_and_bias=False, lr_mult={"layer3.*": 0.5, "fc.*": 2}
    )
    by_name = {g["name"]: g for g in groups}
    assert list(by_name) == [
        "default", "no_decay", "layer3.*", "layer3.* no_decay", "fc.*", "fc.* no_decay"
    ]  # fmt: skip
    assert "weight_decay" not in by_name["default"]  # inherits SGD's weight_decay
    assert by_name["fc.*"]["params"] == [("fc.weight", named["fc.weight"])]
    assert by_name["layer3.* no_decay"]["lr_mult"] == 0.5
    opt = sdnet.SGD(groups, lr=0.1, weight_decay=3e-4)
    assert sum(len(g.params) for g in opt.groups) == len(named)
    assert opt.group_lrs()["fc.* no_decay"] == pytest.approx(0.2)
    assert [g.weight_decay for g in opt.groups] == [3e-4, 0.0, 3e-4, 0.0, 3e-4, 0.0]

    # everything decayed: no empty groups come back
    assert [g["name"] for g in param_groups(model.named_parameters())] == ["default"]


def test_param_groups_bad_pattern_names_it():
    from sdnet.optim import param_groups

    model = sdnet.build_model("resnet8", in_channels=1, num_classes=3, seed=0)
    with pytest.raises(ValueError, match=r"'\*\.wh\.weigth' matches no parameter.*conv1\.weight"):
        param_groups(model.named_parameters(), lr_mult={"*.wh.weigth": 0.01})
    with pytest.raises(ValueError, match=r"'fc\.weight' only matches parameters an earlier"):
        param_groups(model.named_parameters(), lr_mult={"fc.*": 0.1, "fc.weight": 0.01})
    with pytest.raises(TypeError, match="named_parameters"):
        param_groups(model.parameters())


def test_seednet_shortcut_learning_rate_one_liner():
    from sdnet.optim import param_groups

    model = sdnet.build_model("seednet", num_classes=10, seed=0, dtype="float64")
    opt = sdnet.SGD(
        param_groups(model.named_parameters(), lr_mult={"*.wh.weight": 0.01}), lr=1e-3, momentum=0
    )
    assert opt.group_lrs() == {"default": 1e-3, "*.wh.weight": pytest.approx(1e-5, rel=1e-15)}
    assert opt.groups[1].names == ["block1.wh.weight", "block2.wh.weight", "block3.wh.weight"]
    before = {n: p.value.copy() for n, p in model.named_parameters()}
    for _, p in model.named_parameters():
        p.grad = np.ones_like(p.value)
    opt.step()
    for n, p in model.named_parameters():
        step = 1e-5 if n.endswith(".wh.weight") else 1e-3
        np.testing.assert_allclose(before[n] - p.value, step, rtol=1e-9, err_msg=n)


# -- state ---------------------------------------------------------------------------------


def _make_opt(model):
    from sdnet.optim import param_groups

    groups = param_groups(
        model.named_parameters(),
        weight_decay=5e-4,
        decay_bn_and_bias=False,
        lr_mult={"layer3.*": 0.5},
    )
    return sdnet.SGD(groups, lr=0.1, momentum=0.9, nesterov=True)


def _train(model, opt, rng, steps, start):
    """``steps`` steps with host-drawn inputs and gates; a schedule sets the lr."""
    from sdnet.functional import softmax_cross_entropy, softmax_cross_entropy_backward
    from sdnet.optim import make_schedule

    sched = make_schedule("cosine", base_lr=0.1, total_steps=8, warmup_steps=2)
    for step in range(start, start + steps):
        x = model.backend.asarray(rng.standard_normal((2, 1, 8, 8)), "float32")
        y = model.backend.asarray(rng.integers(0, 3, 2))
        gates = [bool(g) for g in rng.random(len(model.blocks)) < 0.5]
        logits, back = model(x, gates=gates)
        _, saved = softmax_cross_entropy(logits, y)
        model.zero_grad()
        back(softmax_cross_entropy_backward(saved))
        opt.lr = sched(step)
        opt.step()


def test_state_round_trip_is_bit_identical(tmp_path):
    import json

    build = dict(in_channels=1, num_classes=3, seed=0, p_last=0.5)
    model = sdnet.build_model("resnet8", **build)
    opt = _make_opt(model)
    _train(model, opt, np.random.default_rng(0), 3, start=0)

    state = opt.state_dict()
    hyper = {k: v for k, v in state.items() if k != "buffers"}
    hyper = json.loads(json.dumps(hyper))  # JSON-able, and survives the trip
    np.savez(tmp_path / "buffers.npz", **state["buffers"])  # names are valid npz keys
    with np.load(tmp_path / "buffers.npz") as f:
        buffers = {k: f[k] for k in f.files}
    assert set(buffers) == {n for n, _ in model.named_parameters()}  # dropped ones too
    assert hyper["groups"][2]["name"] == "layer3.*" and hyper["groups"][2]["lr_mult"] == 0.5
    model_state = model.state_dict()

    fresh = sdnet.build_model("resnet8", **{**build, "seed": 1})
    fresh.load_state_dict(model_state)
    fresh_opt = _make_opt(fresh)
    fresh_opt.lr = 123.0  # restored from the state
    fresh_opt.load_state_dict({**hyper, "buffers": buffers})
    assert fresh_opt.lr == opt.lr

    _train(model, opt, np.random.default_rng(1), 4, start=3)  # uninterrupted
    _train(fresh, fresh_opt, np.random.default_rng(1), 4, start=3)  # resumed
    got = fresh.state_dict()
    for name, value in model.state_dict().items():
        assert np.array_equal(got[name], value), name
    for name, buf in opt.buffers.items():
        assert np.array_equal(fresh_opt.buffers[name], buf), name


def test_load_state_dict_puts_buffers_on_each_parameter_device(backend, rng):
    w = rng.standard_normal((2, 3))
    src = sdnet.SGD([("w", Param(np.asarray(w, np.float64)))], lr=0.1, momentum=0.9)
    src.params[0].grad = np.ones((2, 3))
    src.step()
    p = Param(backend.asarray(w, "float32"))
    dst = sdnet.SGD([("w", p)], lr=0.1, momentum=0.9)
    dst.load_state_dict(src.state_dict())
    buf = dst.buffers["w"]
    assert buf.dtype == p.value.dtype and buf.device == p.value.device
    p.grad = backend.asarray(np.ones((2, 3)), "float32")
    dst.step()  # combines with the parameter: same namespace and device
    assert p.value.device == backend.asarray(w, "float32").device


def test_load_state_dict_mismatch_errors():
    def opt_for(shapes, **kw):
        params = [(n, Param(np.zeros(s))) for n, s in shapes.items()]
        opt = sdnet.SGD(params, lr=0.1, momentum=0.9, **kw)
        for p in opt.params:
            p.grad = np.ones(p.value.shape)
        opt.step()
        return opt

    state = opt_for({"a": (2,), "b": (3,)}).state_dict()
    other = opt_for({"a": (2,), "c": (3,)})
    kept = {n: b.copy() for n, b in other.buffers.items()}
    with pytest.raises(ValueError, match=r"missing \['c'\], unexpected \['b'\]"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="order differs"):
        opt_for({"b": (3,), "a": (2,)}).load_state_dict(state)
    with pytest.raises(ValueError, match=r"'b': shape \(3,\) does not match the parameter's"):
        opt_for({"a": (2,), "b": (4,)}).load_state_dict(state)
    with pytest.raises(ValueError, match="2 parameter groups"):
        grouped = {**state, "groups": state["groups"] * 2}
        opt_for({"a": (2,), "b": (3,)}).load_state_dict(grouped)
    with pytest.raises(ValueError, match="lacks"):
        other.load_state_dict({k: v for k, v in state.items() if k != "momentum"})
    with pytest.raises(ValueError, match="unknown parameters"):
        opt_for({"a": (2,), "b": (3,)}).load_state_dict(
            {**state, "buffers": {**state["buffers"], "z": np.zeros(1)}}
        )
    # nothing was modified by the failed loads
    assert all(np.array_equal(other.buffers[n], b) for n, b in kept.items())
    assert other.lr == 0.1
