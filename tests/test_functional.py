"""Every pure kernel of ``sdnet.functional`` against independent references, on every backend.

One declarative table, ``CASES``: each entry builds float64 host inputs from a seeded generator,
runs the sdnet forward/backward pair, and names an independent NumPy reference (explicit loops,
``np.einsum``, direct formulas, computed on the host in float64) and, optionally, the matching
``torch.nn.functional`` call. Each case is checked for

* forward == the NumPy reference (and the output stays float64 on the backend's device),
* backward == float64 central finite differences (:func:`sdnet.gradcheck.gradcheck`),
* forward and backward == PyTorch autograd, where torch is importable,
* float32 in, float32 out (forward and every gradient).

A few kernel-specific properties (cross-entropy stability, batch statistics) follow the table.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from array_api_compat import device as array_device

import sdnet
import sdnet.functional as F
from sdnet.gradcheck import gradcheck

Array = Any
Backward = Callable[[Array], tuple[Array | None, ...]]

HAS_TORCH = importlib.util.find_spec("torch") is not None
EPS_BN = 1e-5


@dataclass(frozen=True)
class Case:
    """One kernel configuration.

    ``make(rng)`` returns the host inputs by name (float64, or int64 for labels);
    ``run(**inputs)`` calls sdnet and returns ``(y, backward)`` with ``backward(dy)`` giving one
    gradient per name in ``wrt``; ``reference(**host_inputs)`` is the independent float64 forward;
    ``torch_ref(**tensors)``, if given, the same forward in PyTorch.
    """

    name: str
    make: Callable[[np.random.Generator], dict[str, np.ndarray]]
    run: Callable[..., tuple[Array, Backward]]
    reference: Callable[..., np.ndarray]
    wrt: tuple[str, ...]
    torch_ref: Callable[..., Any] | None = None
    gradcheck_kw: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


# -- sdnet adaptors: (y, backward) with backward(dy) -> gradients in `wrt` order -----------------


def _conv_run(stride: int, padding: int) -> Callable[..., tuple[Array, Backward]]:
    def run(x: Array, w: Array) -> tuple[Array, Backward]:
        y, saved = F.conv2d(x, w, stride=stride, padding=padding)
        return y, lambda dy: F.conv2d_backward(dy, saved)

    return run


def _bn_train_run(x: Array, gamma: Array, beta: Array) -> tuple[Array, Backward]:
    y, saved = F.batch_norm_train(x, gamma, beta, eps=EPS_BN)
    return y, lambda dy: F.batch_norm_backward(dy, saved)


def _bn_eval_run(
    x: Array, gamma: Array, beta: Array, running_mean: Array, running_var: Array
) -> tuple[Array, Backward]:
    y, saved = F.batch_norm_eval(x, gamma, beta, running_mean, running_var, eps=EPS_BN)
    return y, lambda dy: F.batch_norm_backward(dy, saved)


def _linear_bias_run(x: Array, w: Array, b: Array) -> tuple[Array, Backward]:
    y, saved = F.linear(x, w, b)
    return y, lambda dy: F.linear_backward(dy, saved)


def _linear_nobias_run(x: Array, w: Array) -> tuple[Array, Backward]:
    y, saved = F.linear(x, w)

    def backward(dy: Array) -> tuple[Array | None, ...]:
        dx, dw, db = F.linear_backward(dy, saved)
        assert db is None, "linear without bias must not return a bias gradient"
        return dx, dw

    return y, backward


def _elementwise_run(fwd: Callable, bwd: Callable) -> Callable[..., tuple[Array, Backward]]:
    def run(x: Array) -> tuple[Array, Backward]:
        y, saved = fwd(x)
        return y, lambda dy: (bwd(dy, saved),)

    return run


def _gap_run(x: Array) -> tuple[Array, Backward]:
    y, shape = F.global_avg_pool(x)
    return y, lambda dy: (F.global_avg_pool_backward(dy, shape),)


def _avg_pool_run(kernel: int, ceil_mode: bool = False) -> Callable[..., tuple[Array, Backward]]:
    def run(x: Array) -> tuple[Array, Backward]:
        y, saved = F.avg_pool2d(x, kernel, ceil_mode=ceil_mode)
        return y, lambda dy: (F.avg_pool2d_backward(dy, saved),)

    return run


def _pad_run(channels: int) -> Callable[..., tuple[Array, Backward]]:
    def run(x: Array) -> tuple[Array, Backward]:
        y, c_in = F.pad_channels(x, channels)
        return y, lambda dy: (F.pad_channels_backward(dy, c_in),)

    return run


def _ce_run(logits: Array, labels: Array) -> tuple[Array, Backward]:
    loss, saved = F.softmax_cross_entropy(logits, labels)
    return loss, lambda dloss: (F.softmax_cross_entropy_backward(saved, dloss),)


# -- independent host references (float64 NumPy, written differently from sdnet) ----------------


def ref_conv(stride: int, padding: int) -> Callable[..., np.ndarray]:
    """Direct definition: one einsum over (c, a, b) per output position."""

    def ref(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        n, _, h, wd = x.shape
        o, _, kh, kw = w.shape
        xp_ = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        ho = (h + 2 * padding - kh) // stride + 1
        wo = (wd + 2 * padding - kw) // stride + 1
        y = np.zeros((n, o, ho, wo))
        for i in range(ho):
            for j in range(wo):
                patch = xp_[:, :, stride * i : stride * i + kh, stride * j : stride * j + kw]
                y[:, :, i, j] = np.einsum("ncab,ocab->no", patch, w)
        return y

    return ref


def _per_channel(x: np.ndarray) -> np.ndarray:
    """(N, C[, H, W]) -> (C, M): every value of one channel in one row."""
    return np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)


def _channel_shape(x: np.ndarray) -> tuple[int, ...]:
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def ref_bn_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    rows = _per_channel(x)
    m = rows.shape[1]
    mu = np.array([r.sum() / m for r in rows])
    var = np.array([((r - mu_c) ** 2).sum() / m for r, mu_c in zip(rows, mu, strict=True)])
    shp = _channel_shape(x)
    return gamma.reshape(shp) * (x - mu.reshape(shp)) / np.sqrt(var.reshape(shp) + EPS_BN) + (
        beta.reshape(shp)
    )


def ref_bn_eval(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
) -> np.ndarray:
    y = np.empty_like(x)
    for c in range(x.shape[1]):
        a = gamma[c] / np.sqrt(running_var[c] + EPS_BN)
        y[:, c] = a * x[:, c] + (beta[c] - a * running_mean[c])
    return y


def ref_linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    y = np.einsum("ni,oi->no", x, w)
    return y if b is None else y + b[None, :]


def ref_avg_pool(k: int, ceil_mode: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """Loop over output windows; with ``ceil_mode`` a partial edge window averages what it holds
    (NumPy slicing clips it)."""

    def ref(x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        ho, wo = (-(-h // k), -(-w // k)) if ceil_mode else (h // k, w // k)
        y = np.zeros((n, c, ho, wo))
        for i in range(ho):
            for j in range(wo):
                y[:, :, i, j] = x[:, :, k * i : k * i + k, k * j : k * j + k].mean(axis=(2, 3))
        return y

    return ref


def ref_pad(channels: int) -> Callable[[np.ndarray], np.ndarray]:
    def ref(x: np.ndarray) -> np.ndarray:
        return np.pad(x, ((0, 0), (0, channels - x.shape[1]), (0, 0), (0, 0)))

    return ref


def ref_ce(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """-mean(logit_true - logsumexp(logits)), log-sum-exp by ``np.logaddexp.reduce``."""
    lse = np.logaddexp.reduce(logits, axis=1)
    true = logits[np.arange(logits.shape[0]), labels]
    return np.asarray(np.mean(lse - true))


# -- input builders ------------------------------------------------------------------------------


def conv_inputs(n: int, c: int, o: int, h: int, w: int, k: int) -> Callable:
    return lambda rng: {
        "x": rng.standard_normal((n, c, h, w)),
        "w": rng.standard_normal((o, c, k, k)) / np.sqrt(c * k * k),
    }


def bn_inputs(shape: tuple[int, ...]) -> Callable:
    def make(rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = shape[1]
        return {
            "x": rng.standard_normal(shape) * 2.0 + 0.5,
            "gamma": rng.uniform(0.5, 1.5, c),
            "beta": rng.standard_normal(c),
        }

    return make


def bn_eval_inputs(shape: tuple[int, ...]) -> Callable:
    def make(rng: np.random.Generator) -> dict[str, np.ndarray]:
        d = bn_inputs(shape)(rng)
        d["running_mean"] = rng.standard_normal(shape[1])
        d["running_var"] = rng.uniform(0.5, 2.0, shape[1])
        return d

    return make


def away_from_zero(shape: tuple[int, ...]) -> Callable:
    """Values in +-[0.1, 2]: no ReLU kink within the finite-difference step."""
    return lambda rng: {"x": rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 2.0, shape)}


def normal(shape: tuple[int, ...], scale: float = 1.0) -> Callable:
    return lambda rng: {"x": rng.standard_normal(shape) * scale}


def ce_inputs(n: int, k: int) -> Callable:
    return lambda rng: {
        "logits": rng.standard_normal((n, k)) * 3.0,
        "labels": rng.integers(0, k, n),
    }


def ce_huge_inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Logits around +-1000: exp overflows unless the max is subtracted first."""
    logits = rng.standard_normal((3, 5)) * 2.0
    logits[0] += 1000.0
    logits[1, 2] = 1000.0
    logits[1, 4] = -1000.0
    logits[2] -= 1000.0
    return {"logits": logits, "labels": np.array([1, 4, 0])}


# -- torch forwards (imported lazily so the table builds without torch) ------------------------


def _tf() -> Any:
    import torch.nn.functional as tf

    return tf


def torch_conv(stride: int, padding: int) -> Callable:
    return lambda x, w: _tf().conv2d(x, w, stride=stride, padding=padding)


def torch_bn_train(x: Any, gamma: Any, beta: Any) -> Any:
    return _tf().batch_norm(x, None, None, gamma, beta, training=True, eps=EPS_BN)


def torch_bn_eval(x: Any, gamma: Any, beta: Any, running_mean: Any, running_var: Any) -> Any:
    return _tf().batch_norm(x, running_mean, running_var, gamma, beta, training=False, eps=EPS_BN)


def _torch_fn(name: str) -> Callable:
    def fn(x: Any) -> Any:
        import torch

        return getattr(torch, name)(x)

    return fn


# -- the table -----------------------------------------------------------------------------------


def conv_case(n: int, c: int, o: int, h: int, w: int, k: int, stride: int, padding: int) -> Case:
    return Case(
        f"conv2d_k{k}_s{stride}_p{padding}_{c}to{o}_{h}x{w}",
        conv_inputs(n, c, o, h, w, k),
        _conv_run(stride, padding),
        ref_conv(stride, padding),
        ("x", "w"),
        torch_conv(stride, padding),
    )


CASES: list[Case] = [
    # conv2d: kernels 1/3/5, strides 1/2, padding 0/1/2, odd/even/non-square sizes, C_in != C_out
    conv_case(2, 3, 2, 5, 5, k=1, stride=1, padding=0),
    conv_case(2, 2, 4, 6, 6, k=1, stride=2, padding=0),
    conv_case(2, 3, 4, 5, 5, k=3, stride=1, padding=1),
    conv_case(2, 3, 2, 6, 5, k=3, stride=1, padding=0),
    conv_case(2, 2, 3, 6, 6, k=3, stride=2, padding=1),
    conv_case(2, 3, 2, 7, 7, k=3, stride=2, padding=0),
    conv_case(2, 2, 3, 5, 5, k=3, stride=2, padding=2),
    conv_case(2, 2, 3, 5, 5, k=5, stride=1, padding=2),
    conv_case(2, 3, 2, 7, 6, k=5, stride=1, padding=0),
    conv_case(2, 2, 3, 7, 7, k=5, stride=2, padding=2),
    conv_case(2, 2, 3, 6, 6, k=5, stride=2, padding=1),
    # batch norm
    Case(
        "batch_norm_train_2d",
        bn_inputs((4, 3)),
        _bn_train_run,
        ref_bn_train,
        ("x", "gamma", "beta"),
        torch_bn_train,
    ),
    Case(
        "batch_norm_train_4d",
        bn_inputs((2, 3, 5, 4)),
        _bn_train_run,
        ref_bn_train,
        ("x", "gamma", "beta"),
        torch_bn_train,
    ),
    Case(
        "batch_norm_eval_2d",
        bn_eval_inputs((4, 3)),
        _bn_eval_run,
        ref_bn_eval,
        ("x", "gamma", "beta"),
        torch_bn_eval,
    ),
    Case(
        "batch_norm_eval_4d",
        bn_eval_inputs((2, 3, 5, 5)),
        _bn_eval_run,
        ref_bn_eval,
        ("x", "gamma", "beta"),
        torch_bn_eval,
    ),
    # linear
    Case(
        "linear_bias",
        lambda rng: {
            "x": rng.standard_normal((3, 5)),
            "w": rng.standard_normal((4, 5)),
            "b": rng.standard_normal(4),
        },
        _linear_bias_run,
        ref_linear,
        ("x", "w", "b"),
        lambda x, w, b: _tf().linear(x, w, b),
    ),
    Case(
        "linear_nobias",
        lambda rng: {"x": rng.standard_normal((3, 5)), "w": rng.standard_normal((2, 5))},
        _linear_nobias_run,
        ref_linear,
        ("x", "w"),
        lambda x, w: _tf().linear(x, w),
    ),
    # activations
    Case(
        "relu",
        away_from_zero((2, 3, 4, 4)),
        _elementwise_run(F.relu, F.relu_backward),
        lambda x: np.where(x > 0, x, 0.0),
        ("x",),
        _torch_fn("relu"),
    ),
    Case(
        "relu_small",
        away_from_zero((3, 4)),
        _elementwise_run(F.relu, F.relu_backward),
        lambda x: (x + np.abs(x)) / 2,
        ("x",),
        _torch_fn("relu"),
    ),
    Case(
        "arctan",
        normal((2, 3, 4, 4), 2.0),
        _elementwise_run(F.arctan, F.arctan_backward),
        lambda x: np.arcsin(x / np.sqrt(1 + x * x)),
        ("x",),
        _torch_fn("atan"),
    ),
    Case(
        "tanh",
        normal((2, 3, 4, 4), 1.5),
        _elementwise_run(F.tanh, F.tanh_backward),
        lambda x: (np.exp(2 * x) - 1) / (np.exp(2 * x) + 1),
        ("x",),
        _torch_fn("tanh"),
    ),
    # pooling and channel padding
    Case(
        "global_avg_pool",
        normal((2, 3, 5, 4)),
        _gap_run,
        lambda x: np.einsum("nchw->nc", x) / (x.shape[2] * x.shape[3]),
        ("x",),
        lambda x: _tf().adaptive_avg_pool2d(x, 1).flatten(1),
    ),
    Case(
        "avg_pool2d_k2_even",
        normal((2, 3, 6, 6)),
        _avg_pool_run(2),
        ref_avg_pool(2),
        ("x",),
        lambda x: _tf().avg_pool2d(x, 2),
    ),
    Case(
        "avg_pool2d_k2_odd",
        normal((2, 2, 5, 7)),
        _avg_pool_run(2),
        ref_avg_pool(2),
        ("x",),
        lambda x: _tf().avg_pool2d(x, 2),
    ),
    Case(
        "avg_pool2d_k2_odd_ceil",
        normal((2, 2, 5, 7)),
        _avg_pool_run(2, ceil_mode=True),
        ref_avg_pool(2, ceil_mode=True),
        ("x",),
        lambda x: _tf().avg_pool2d(x, 2, ceil_mode=True),
    ),
    Case(
        "avg_pool2d_k2_even_ceil",
        normal((2, 2, 6, 4)),
        _avg_pool_run(2, ceil_mode=True),
        ref_avg_pool(2, ceil_mode=True),
        ("x",),
        lambda x: _tf().avg_pool2d(x, 2, ceil_mode=True),
    ),
    Case(
        "avg_pool2d_k3_ceil",
        normal((2, 2, 7, 5)),
        _avg_pool_run(3, ceil_mode=True),
        ref_avg_pool(3, ceil_mode=True),
        ("x",),
        lambda x: _tf().avg_pool2d(x, 3, ceil_mode=True),
    ),
    Case(
        "avg_pool2d_k1",
        normal((2, 2, 3, 3)),
        _avg_pool_run(1),
        ref_avg_pool(1),
        ("x",),
        lambda x: _tf().avg_pool2d(x, 1),
    ),
    Case(
        "pad_channels_3to5",
        normal((2, 3, 4, 4)),
        _pad_run(5),
        ref_pad(5),
        ("x",),
        lambda x: _tf().pad(x, (0, 0, 0, 0, 0, 2)),
    ),
    Case(
        "pad_channels_same",
        normal((2, 3, 3, 3)),
        _pad_run(3),
        ref_pad(3),
        ("x",),
        lambda x: x * 1.0,
    ),
    # loss
    Case(
        "softmax_cross_entropy",
        ce_inputs(4, 5),
        _ce_run,
        ref_ce,
        ("logits",),
        lambda logits, labels: _tf().cross_entropy(logits, labels),
    ),
    Case(
        "softmax_cross_entropy_huge_logits",
        ce_huge_inputs,
        _ce_run,
        ref_ce,
        ("logits",),
        lambda logits, labels: _tf().cross_entropy(logits, labels),
    ),
]

IDS = [c.name for c in CASES]
assert len(set(IDS)) == len(IDS), "case names must be unique"


# -- helpers -------------------------------------------------------------------------------------


def to_backend(backend: sdnet.Backend, host: dict[str, np.ndarray], dtype: str) -> dict[str, Array]:
    """Floats in ``dtype``, integers (labels) as int64, all on the backend's device."""
    out = {}
    for k, v in host.items():
        if np.issubdtype(v.dtype, np.integer):
            out[k] = backend.asarray(v, backend.xp.int64)
        else:
            out[k] = backend.asarray(v, dtype)
    return out


def host_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in case.make(rng).items()}


# -- the tests over the table ---------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_reference(
    case: Case, backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    host = host_inputs(case, rng)
    y, _ = case.run(**to_backend(backend, host, "float64"))
    assert y.dtype == backend.xp.float64
    assert array_device(y) == backend.device
    expected = case.reference(**host)
    got = backend.to_numpy(y)
    assert got.shape == expected.shape
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward_matches_finite_differences(
    case: Case, backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    arrays = to_backend(backend, host_inputs(case, rng), "float64")

    def f(*diff: Array) -> tuple[Array, Backward]:
        return case.run(**(arrays | dict(zip(case.wrt, diff, strict=True))))

    worst = gradcheck(f, *(arrays[k] for k in case.wrt), names=case.wrt, **case.gradcheck_kw)
    assert set(worst) == set(case.wrt)


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
@pytest.mark.parametrize("case", [c for c in CASES if c.torch_ref], ids=lambda c: c.name)
def test_matches_torch_autograd(
    case: Case, backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    import torch

    host = host_inputs(case, rng)
    y, backward = case.run(**to_backend(backend, host, "float64"))
    dy_host = np.asarray(rng.standard_normal(tuple(y.shape)))
    grads = backward(backend.asarray(dy_host, "float64"))

    tensors = {k: torch.tensor(v, requires_grad=k in case.wrt) for k, v in host.items()}
    yt = case.torch_ref(**tensors)
    yt.backward(torch.tensor(dy_host))
    np.testing.assert_allclose(backend.to_numpy(y), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    for name, g in zip(case.wrt, grads, strict=True):
        np.testing.assert_allclose(
            backend.to_numpy(g), tensors[name].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name
        )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float32_stays_float32(
    case: Case, backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    host = host_inputs(case, rng)
    y, backward = case.run(**to_backend(backend, host, "float32"))
    assert y.dtype == backend.xp.float32
    grads = backward(backend.asarray(np.ones(tuple(y.shape)), "float32"))
    assert len(grads) == len(case.wrt)
    for name, g in zip(case.wrt, grads, strict=True):
        assert g.dtype == backend.xp.float32, name
        assert tuple(g.shape) == host[name].shape, name
        assert array_device(g) == backend.device, name
    # float32 is close to the float64 reference too
    np.testing.assert_allclose(backend.to_numpy(y), case.reference(**host), rtol=2e-4, atol=2e-4)


# -- kernel-specific properties -------------------------------------------------------------------


def test_cross_entropy_huge_logits_is_stable(backend: sdnet.Backend) -> None:
    logits = np.array([[1000.0, 0.0, -1000.0], [1000.0, 1000.0, 999.0], [-1000.0, -1001.0, 0.0]])
    labels = np.array([2, 0, 1])
    loss, saved = F.softmax_cross_entropy(
        backend.asarray(logits, "float64"), backend.asarray(labels, backend.xp.int64)
    )
    value = float(backend.to_numpy(loss))
    assert np.isfinite(value)
    # row 0: lse = 1000, true = -1000 -> 2000; row 1: lse = 1000 + log(2 + e^-1), true = 1000;
    # row 2: lse ~ 0, true = -1001 -> 1001 (+ tiny)
    expected = float(ref_ce(logits, labels))
    by_hand = (2000.0 + np.log(2.0 + np.exp(-1.0)) + 1001.0 + np.log1p(np.exp(-1000.0))) / 3
    assert expected == pytest.approx(by_hand, rel=1e-14)
    assert value == pytest.approx(expected, rel=1e-12)
    dlogits = backend.to_numpy(F.softmax_cross_entropy_backward(saved))
    assert np.all(np.isfinite(dlogits))
    np.testing.assert_allclose(dlogits.sum(axis=1), 0.0, atol=1e-15)
    # softmax of row 0 is one-hot at 0; label 2 -> gradient (1, 0, -1) / N
    np.testing.assert_allclose(dlogits[0], np.array([1.0, 0.0, -1.0]) / 3, atol=1e-15)


def test_cross_entropy_gradient_rows_sum_to_zero(
    backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    host = ce_inputs(6, 7)(rng)
    _, saved = F.softmax_cross_entropy(
        backend.asarray(host["logits"], "float64"),
        backend.asarray(host["labels"], backend.xp.int64),
    )
    d = backend.to_numpy(F.softmax_cross_entropy_backward(saved, 2.0))
    np.testing.assert_allclose(d.sum(axis=1), 0.0, atol=1e-14)
    # the label column is the only negative entry, -(1 - p) * dloss / N
    rows = np.arange(6)
    assert np.all(d[rows, host["labels"]] < 0)
    mask = np.ones_like(d, dtype=bool)
    mask[rows, host["labels"]] = False
    assert np.all(d[mask] > 0)


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4, 5)])
def test_batch_norm_train_saves_batch_statistics(
    shape: tuple[int, ...], backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    x = rng.standard_normal(shape) * 3.0 + 1.0
    c = shape[1]
    _, saved = F.batch_norm_train(
        backend.asarray(x, "float64"),
        backend.asarray(np.ones(c), "float64"),
        backend.asarray(np.zeros(c), "float64"),
    )
    rows = _per_channel(x)
    np.testing.assert_allclose(backend.to_numpy(saved.mean), rows.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(saved.var), rows.var(axis=1, ddof=0), rtol=1e-12)
    assert tuple(saved.mean.shape) == (c,) and tuple(saved.var.shape) == (c,)


def test_conv2d_rejects_bad_shapes(backend: sdnet.Backend) -> None:
    x = backend.asarray(np.zeros((1, 3, 4, 4)), "float64")
    with pytest.raises(ValueError, match="channels"):
        F.conv2d(x, backend.asarray(np.zeros((2, 2, 3, 3)), "float64"))
    with pytest.raises(ValueError, match="too small"):
        F.conv2d(x, backend.asarray(np.zeros((2, 3, 5, 5)), "float64"))
