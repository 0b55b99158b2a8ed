"""The finite-difference checker itself: it must fail on wrong gradients, not just pass right ones.

* a backward that is wrong by a factor, by one entry, or by a flipped convolution kernel raises
  :class:`sdnet.gradcheck.GradcheckError` naming the wrong input (and only that one);
* big inputs go through random projections (``directions`` evaluations), small ones entry by
  entry, and a single wrong entry of a big input is still caught;
* gradients of the wrong shape or number are reported;
* ``check_layer`` catches a layer with a wrong or missing parameter gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from array_api_compat import array_namespace

import sdnet
import sdnet.functional as F
from sdnet.gradcheck import GradcheckError, check_layer, gradcheck
from sdnet.layers import Layer

Array = Any


def identity_with_backward(scale: float) -> Callable[[Array], tuple[Array, Callable]]:
    """y = x, with a backward that returns ``scale * dy`` (correct only for scale 1)."""

    def f(x: Array) -> tuple[Array, Callable]:
        return x * 1.0, lambda dy: (dy * scale,)

    return f


class CallCounter:
    """Wrap ``f`` and count its calls."""

    def __init__(self, f: Callable) -> None:
        self.f, self.calls = f, 0

    def __call__(self, *args: Array) -> Any:
        self.calls += 1
        return self.f(*args)


# -- failures are raised ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 5, 5)], ids=["elementwise", "projections"])
def test_wrong_scale_is_caught(
    shape: tuple[int, ...], backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    x = backend.asarray(rng.standard_normal(shape), "float64")
    gradcheck(identity_with_backward(1.0), x)  # the control passes
    with pytest.raises(GradcheckError, match="input0"):
        gradcheck(identity_with_backward(2.0), x)


def test_tolerance_is_honoured(backend: sdnet.Backend, rng: np.random.Generator) -> None:
    x = backend.asarray(rng.standard_normal((2, 3)), "float64")
    slightly_off = identity_with_backward(1.0 + 1e-3)
    with pytest.raises(GradcheckError):
        gradcheck(slightly_off, x)  # default rtol 1e-5
    worst = gradcheck(slightly_off, x, rtol=1e-2)
    assert 5e-4 < worst["input0"] < 2e-3  # the relative error is about 1e-3


def _conv_with_flipped_backward(x: Array, w: Array) -> tuple[Array, Callable]:
    """Correct forward; backward correlates with the kernel flipped (the classic bug)."""
    y, saved = F.conv2d(x, w, stride=1, padding=1)
    flipped = saved._replace(w=array_namespace(w).flip(w, axis=(2, 3)))

    def backward(dy: Array) -> tuple[Array, Array]:
        dx, _ = F.conv2d_backward(dy, flipped)
        _, dw = F.conv2d_backward(dy, saved)
        return dx, dw

    return y, backward


def test_flipped_conv_kernel_is_caught(backend: sdnet.Backend, rng: np.random.Generator) -> None:
    x = backend.asarray(rng.standard_normal((2, 2, 5, 5)), "float64")
    w = backend.asarray(rng.standard_normal((3, 2, 3, 3)), "float64")
    with pytest.raises(GradcheckError) as info:
        gradcheck(_conv_with_flipped_backward, x, w, names=["x", "w"])
    message = str(info.value)
    assert "x direction" in message
    assert "w direction" not in message  # the weight gradient is right and must not be blamed


def test_one_wrong_entry_of_a_big_input_is_caught(
    backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    """Random projections see an error in a single entry of a 600-entry input."""
    shape = (2, 3, 10, 10)
    x = backend.asarray(rng.standard_normal(shape), "float64")
    bump = np.zeros(shape)
    bump[1, 2, 7, 3] = 0.5

    def square(bad: bool) -> Callable:
        def f(x_: Array) -> tuple[Array, Callable]:
            err = backend.asarray(bump, "float64")
            return x_ * x_, lambda dy: (2.0 * x_ * dy + (err * dy if bad else 0.0 * err),)

        return f

    counter = CallCounter(square(False))
    gradcheck(counter, x, directions=3)
    assert counter.calls == 1 + 2 * 3  # one forward for y, two per random direction
    with pytest.raises(GradcheckError):
        gradcheck(square(True), x, directions=3)


def test_small_inputs_are_checked_entry_by_entry(
    backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    x = backend.asarray(rng.standard_normal((3, 4)), "float64")
    counter = CallCounter(identity_with_backward(1.0))
    gradcheck(counter, x, max_elementwise=12, directions=2)
    assert counter.calls == 1 + 2 * 12
    counter = CallCounter(identity_with_backward(1.0))
    gradcheck(counter, x, max_elementwise=11, directions=2)
    assert counter.calls == 1 + 2 * 2


def test_only_the_wrong_input_is_named(backend: sdnet.Backend, rng: np.random.Generator) -> None:
    a = backend.asarray(rng.standard_normal((2, 3)), "float64")
    b = backend.asarray(rng.standard_normal((2, 3)), "float64")

    def product(a_: Array, b_: Array) -> tuple[Array, Callable]:
        return a_ * b_, lambda dy: (dy * b_, dy * b_)  # d/db should be dy * a

    with pytest.raises(GradcheckError) as info:
        gradcheck(product, a, b, names=["a", "b"])
    assert "b direction" in str(info.value)
    assert "a direction" not in str(info.value)


# -- malformed gradients --------------------------------------------------------------------------


def test_wrong_shaped_gradient_is_reported(
    backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    x = backend.asarray(rng.standard_normal((2, 3)), "float64")
    xp = backend.xp

    def f(x_: Array) -> tuple[Array, Callable]:
        return x_ * 1.0, lambda dy: (xp.permute_dims(dy, (1, 0)),)

    with pytest.raises(GradcheckError, match=r"x: gradient shape \(3, 2\) != input \(2, 3\)"):
        gradcheck(f, x, names=["x"])


def test_wrong_number_of_gradients_is_reported(
    backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    x = backend.asarray(rng.standard_normal((2, 3)), "float64")

    def f(x_: Array) -> tuple[Array, Callable]:
        return x_ * 1.0, lambda dy: (dy, dy)

    with pytest.raises(ValueError, match="2 gradients for 1 inputs"):
        gradcheck(f, x)
    with pytest.raises(ValueError, match="at least one input"):
        gradcheck(f)


def test_none_gradient_skips_the_input(backend: sdnet.Backend, rng: np.random.Generator) -> None:
    a = backend.asarray(rng.standard_normal((2, 3)), "float64")
    b = backend.asarray(rng.standard_normal((2, 3)), "float64")

    def product(a_: Array, b_: Array) -> tuple[Array, Callable]:
        return a_ * b_, lambda dy: (dy * b_, None)

    assert set(gradcheck(product, a, b, names=["a", "b"])) == {"a"}


def test_result_is_deterministic(backend: sdnet.Backend, rng: np.random.Generator) -> None:
    x = backend.asarray(rng.standard_normal((2, 3, 5, 5)), "float64")

    def f(x_: Array) -> tuple[Array, Callable]:
        y, saved = F.arctan(x_)
        return y, lambda dy: (F.arctan_backward(dy, saved),)

    assert gradcheck(f, x, seed=3) == gradcheck(f, x, seed=3)


# -- check_layer ----------------------------------------------------------------------------------


class Scale(Layer):
    """y = weight * x (per channel), with a selectable bug in the parameter gradient."""

    def __init__(self, backend: sdnet.Backend, bug: str | None) -> None:
        super().__init__()
        self.weight = self.param("weight", backend.asarray([0.5, -1.5, 2.0], "float64"))
        self.bug = bug

    def forward(self, x: Array, *, train: bool) -> tuple[Array, Callable]:
        xp = array_namespace(x)
        w = xp.reshape(self.weight.value, (1, 3))

        def backprop(dy: Array) -> Array:
            if self.bug != "no_param_grad":
                dw = xp.sum(dy * x, axis=0)
                self.weight.accumulate(dw * 3.0 if self.bug == "wrong_param_grad" else dw)
            return dy * w

        return x * w, backprop


@pytest.mark.parametrize("bug", [None, "wrong_param_grad", "no_param_grad"])
def test_check_layer_catches_parameter_bugs(
    bug: str | None, backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    layer = Scale(backend, bug)
    x = backend.asarray(rng.standard_normal((4, 3)), "float64")
    if bug is None:
        assert set(check_layer(layer, x)) == {"x", "weight"}
        return
    with pytest.raises(GradcheckError) as info:
        check_layer(layer, x)
    assert "weight direction" in str(info.value)
    assert "x direction" not in str(info.value)
    assert layer.weight.grad is None  # cleaned up even on failure


def test_gradcheck_error_is_reachable_from_the_package() -> None:
    """``import sdnet`` then ``sdnet.gradcheck`` is the *function* (re-exported by the package,
    hiding the module of the same name), so the error class must be reachable another way."""
    reachable = getattr(sdnet, "GradcheckError", None) or getattr(
        sdnet.gradcheck, "GradcheckError", None
    )
    assert reachable is GradcheckError, "no sdnet.GradcheckError, no sdnet.gradcheck.GradcheckError"
