"""``mode="subset"``: per-sample stochastic depth that runs each branch on its kept samples only.

Checked against a reference computed sample subset by sample subset (the branch called on the
kept rows alone, its output added to those rows), in float64 on every backend: outputs, every
gradient, the branch's batch-norm statistics (which see the kept samples only), and by finite
differences; including the cases where no sample and where every sample keeps the branch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import sdnet
import sdnet.functional as F
from sdnet import check_layer

FD = dict(max_elementwise=0, directions=2)


def _model(backend: sdnet.Backend, mode: str, scaling: str = "paper") -> sdnet.Model:
    return sdnet.build_model(
        "resnet8", in_channels=2, num_classes=3, p_last=0.5, mode=mode, scaling=scaling,
        device=backend, dtype="float64", seed=4,
    )  # fmt: skip


def _pass(model: sdnet.Model, x: Any, labels: Any, gates: list[Any]) -> dict[str, np.ndarray]:
    """Logits, loss gradient wrt every parameter, and the state after one training pass."""
    be = model.backend
    model.zero_grad()
    logits, back = model(x, train=True, gates=gates)
    _, saved = F.softmax_cross_entropy(logits, labels)
    dx = back(F.softmax_cross_entropy_backward(saved))
    out = {"logits": be.to_numpy(logits), "dx": be.to_numpy(dx)}
    out |= {
        f"grad {n}": be.to_numpy(p.grad) for n, p in model.named_parameters() if p.grad is not None
    }
    return out | {f"state {k}": v for k, v in model.state_dict().items()}


def _reference(model: sdnet.Model, x: Any, labels: Any, gates: list[Any]) -> dict[str, np.ndarray]:
    """The same pass with each partly kept block computed by hand: the branch on the kept
    rows only (a separate call), added back into those rows."""
    be, xp = model.backend, model.backend.xp
    originals = [b.forward for b in model.blocks]
    for block, g in zip(model.blocks, gates, strict=True):
        if isinstance(g, bool) or all(g) or not any(g):
            continue
        kept = [n for n, k in enumerate(g) if k]

        def forward(x_: Any, *, train: bool, gate: Any = True, need_dx: bool = True,
                    block: Any = block, kept: list[int] = kept) -> Any:  # fmt: skip
            s, s_back = block.shortcut(x_, train=train) if block.shortcut else (x_, None)
            idx = be.asarray(kept)
            b, b_back = block.branch(xp.take(x_, idx, axis=0), train=train)
            rows = [kept.index(n) if n in kept else None for n in range(x_.shape[0])]
            zero = xp.zeros(b.shape[1:], dtype=b.dtype, device=be.device)
            full = xp.stack([b[r, ...] if r is not None else zero for r in rows])
            y, y_saved = F.relu(s + full)

            def backprop(dy: Any) -> Any:
                dz = F.relu_backward(dy, y_saved)
                dxs = b_back(xp.take(dz, idx, axis=0))
                back_rows = [dxs[r, ...] if r is not None else xp.zeros_like(dxs[0, ...])
                             for r in rows]  # fmt: skip
                return (s_back(dz) if s_back else dz) + xp.stack(back_rows)

            return y, backprop

        block.forward = forward  # type: ignore[method-assign]
    try:
        whole = [any(g) if isinstance(g, list) else g for g in gates]  # partly kept: by hand
        return _pass(model, x, labels, whole)
    finally:
        for block, fwd in zip(model.blocks, originals, strict=True):
            block.forward = fwd  # type: ignore[method-assign]


GATES = {
    "mixed": [[True, False, True, True], [False, True, False, False], [True, True, False, True]],
    "none kept": [[False] * 4, [True, False, True, False], [False] * 4],
    "every one kept": [[True] * 4, [True] * 4, [False, True, True, True]],
}


@pytest.mark.parametrize("case", list(GATES))
def test_subset_mode_equals_the_branch_run_on_each_subset(
    case: str, backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    x_host = rng.standard_normal((4, 2, 8, 8))
    labels = backend.asarray(np.array([0, 2, 1, 0]))
    got = _pass(_model(backend, "subset"), backend.asarray(x_host, "float64"), labels,
                GATES[case])  # fmt: skip
    ref_model = _model(backend, "subset")
    want = _reference(ref_model, backend.asarray(x_host, "float64"), labels, GATES[case])
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("scaling", ["paper", "inverted"])
def test_subset_mode_gradients_by_finite_differences(
    scaling: str, backend: sdnet.Backend, rng: np.random.Generator
) -> None:
    model = _model(backend, "subset", scaling)
    x = backend.asarray(rng.standard_normal((4, 2, 6, 6)), "float64")
    check_layer(model, x, train=True, gates=GATES["mixed"], **FD)
    check_layer(model, x, train=True, gates=GATES["none kept"], **FD)


def test_subset_mode_evaluates_like_row_mode(rng: np.random.Generator) -> None:
    """Evaluation does not depend on the per-sample mode: every branch, scaled by p_l."""
    x = rng.standard_normal((3, 2, 8, 8))
    be = sdnet.get_backend("cpu")
    outs = [be.to_numpy(_model(be, mode)(be.asarray(x, "float64"), train=False)[0])
            for mode in ("row", "subset")]  # fmt: skip
    np.testing.assert_array_equal(outs[0], outs[1])


def test_subset_mode_draws_the_row_mode_gates() -> None:
    """The same seed gives the same per-sample gates in row and subset mode."""
    x = np.zeros((5, 2, 8, 8))
    gates = []
    for mode in ("row", "subset"):
        model = _model(sdnet.get_backend("cpu"), mode)
        model(model.backend.asarray(x, "float64"), train=True)
        gates.append([list(map(bool, g)) for g in model.last_gates])
    assert gates[0] == gates[1]
