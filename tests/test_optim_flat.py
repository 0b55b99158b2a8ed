"""The optimizer's flat buffers: views on every backend, packing again when a value is
replaced, and updates equal to the per-tensor formulas (PyTorch's SGD) in every mode."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import sdnet
from sdnet.layers import Param


def test_a_reshaped_slice_is_a_view_on_every_backend(backend: sdnet.Backend) -> None:
    """What the flat buffers rely on: writes through ``reshape(flat[a:b], shape)`` reach the
    flat array, and in-place operators on it too."""
    xp = backend.xp
    flat = xp.zeros((10,), dtype=xp.float64, device=backend.device)
    view = xp.reshape(flat[2:8], (2, 3))
    view[...] = backend.asarray(np.arange(6.0).reshape(2, 3), "float64")
    view -= 1.0
    assert backend.to_numpy(flat).tolist() == [0, 0, -1, 0, 1, 2, 3, 4, 0, 0]


def _reference(w: np.ndarray, grads: list[Any], kw: dict[str, Any], skip: bool) -> np.ndarray:
    """The per-tensor update rule, written out (PyTorch's convention)."""
    lr, m, wd, nesterov = kw["lr"], kw["momentum"], kw["weight_decay"], kw["nesterov"]
    buf = None
    for g in grads:
        if g is None and skip:
            continue
        g = np.zeros_like(w) if g is None else g
        g = g + wd * w
        buf = g if buf is None else m * buf + g
        w = w - lr * (g + m * buf if nesterov else buf)
    return w


@pytest.mark.parametrize("skip", [False, True], ids=["update", "freeze"])
def test_dropped_parameters_in_one_segment(backend: sdnet.Backend, skip: bool) -> None:
    """Two parameters in one flat segment, one of them dropped in some steps: each follows
    its own per-tensor rule exactly (``freeze`` masks its segment, buffer kept)."""
    rng = np.random.default_rng(3)
    w0 = {"a": rng.standard_normal((3, 2)), "b": rng.standard_normal(4)}
    steps = [{"a": True, "b": True}, {"a": True, "b": False}, {"a": False, "b": True}] * 2
    grads = {n: [rng.standard_normal(w.shape) if s[n] else None for s in steps] for n, w in
             w0.items()}  # fmt: skip
    kw = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    params = {n: Param(backend.asarray(w, "float64")) for n, w in w0.items()}
    opt = sdnet.SGD(list(params.items()), skip_missing=skip, **kw)
    assert len(opt.segments) == 1
    for k in range(len(steps)):
        for n, p in params.items():
            g = grads[n][k]
            p.grad = None if g is None else backend.asarray(g, "float64")
        opt.step()
    for n, p in params.items():
        want = _reference(w0[n], grads[n], kw, skip)
        np.testing.assert_allclose(backend.to_numpy(p.value), want, rtol=1e-13, err_msg=n)


def test_values_are_views_and_a_replaced_value_is_packed_again(rng: np.random.Generator) -> None:
    model = sdnet.build_model("resnet8", in_channels=1, num_classes=3, dtype="float64")
    opt = sdnet.SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    seg = opt.segments[0]
    assert all(p.value is v for p, v in zip(seg.params, seg.views, strict=True))
    for p in seg.params:
        p.grad = np.ones(p.value.shape)
    opt.step()
    flat_before = seg.values
    state = model.state_dict()
    model.load_state_dict(state)  # new arrays: the parameters leave the flat buffer
    assert any(p.value is not v for p, v in zip(seg.params, seg.views, strict=True))
    opt.step()
    assert seg.values is not flat_before  # packed again
    assert all(p.value is v for p, v in zip(seg.params, seg.views, strict=True))
    buf = opt.buffers["conv1.weight"]
    assert buf is not None and np.allclose(buf, 0.9 * 1 + 1)  # the buffer came along


def test_only_updated_parameters_have_momentum_buffers() -> None:
    a, b = Param(np.zeros(2)), Param(np.zeros(3))
    opt = sdnet.SGD([("a", a), ("b", b)], lr=0.1, momentum=0.9, skip_missing=True)
    a.grad = np.ones(2)
    opt.step()
    assert set(opt.state_dict()["buffers"]) == {"a"}
    assert opt.buffers["b"] is None


def test_one_segment_per_dtype_in_a_group() -> None:
    a, b, c = Param(np.zeros(2)), Param(np.zeros(3, np.float32)), Param(np.ones(1))
    opt = sdnet.SGD([("a", a), ("b", b), ("c", c)], lr=0.5, momentum=0.0)
    assert [s.names for s in opt.segments] == [["a", "c"], ["b"]]
    for p in (a, b, c):
        p.grad = np.ones(p.value.shape, p.value.dtype)
    opt.step()
    assert b.value.dtype == np.float32 and np.all(b.value == -0.5) and np.all(c.value == 0.5)
