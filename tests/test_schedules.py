"""Learning-rate schedules: hand-computed values, torch.optim.lr_scheduler, warmup, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sdnet.optim import SCHEDULES, make_schedule


def _torch_lrs(make, steps):
    """The lr torch uses at each of ``steps`` steps, the scheduler stepped after each."""
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_names():
    assert SCHEDULES == ("constant", "step", "multistep", "cosine")


def test_constant_and_past_the_end():
    sched = make_schedule("constant", base_lr=0.1, total_steps=10)
    assert [sched(s) for s in (0, 9, 10, 1000)] == [0.1] * 4
    cos = make_schedule("cosine", base_lr=0.1, total_steps=10)
    assert cos(10) == cos(99) == cos(9) > 0  # later steps keep the last step's value


def test_step_is_the_papers_schedule():
    # 500 epochs of 391 steps (CIFAR-10, batch 128): /10 at epoch 250 and 375
    sched = make_schedule("step", base_lr=0.1, total_steps=500 * 391)
    half, three_quarters = int(0.5 * 500 * 391), int(0.75 * 500 * 391)
    assert sched(0) == sched(half - 1) == 0.1
    assert sched(half) == pytest.approx(0.01, rel=1e-15)
    assert sched(three_quarters - 1) == pytest.approx(0.01, rel=1e-15)
    assert sched(three_quarters) == pytest.approx(0.001, rel=1e-15)
    assert sched.milestones == (97750, 146625)


def test_multistep_epochs_match_torch():
    sched = make_schedule(
        "multistep", base_lr=0.1, total_steps=40, steps_per_epoch=4, milestones=[3, 7], gamma=0.2
    )
    assert sched.milestones == (12, 28)
    assert [sched(s) for s in (0, 11, 12, 27, 28, 39)] == pytest.approx(
        [0.1, 0.1, 0.02, 0.02, 0.004, 0.004], rel=1e-15
    )
    torch = pytest.importorskip("torch")
    want = _torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [12, 28], gamma=0.2), 40)
    np.testing.assert_allclose([sched(s) for s in range(40)], want, rtol=1e-12)


def test_cosine_matches_hand_values_and_torch():
    sched = make_schedule("cosine", base_lr=0.1, total_steps=20, min_lr=0.001)
    assert sched(0) == 0.1
    assert sched(10) == pytest.approx(0.001 + 0.099 * 0.5, rel=1e-14)  # halfway
    assert sched(19) == pytest.approx(0.001 + 0.099 * (1 + math.cos(math.pi * 19 / 20)) / 2)
    torch = pytest.importorskip("torch")
    want = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=0.001), 20
    )
    np.testing.assert_allclose([sched(s) for s in range(20)], want, rtol=1e-12)


def test_warmup_ramp_then_schedule():
    sched = make_schedule("cosine", base_lr=0.4, total_steps=14, warmup_steps=4)
    assert [sched(s) for s in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.4], rel=1e-15)
    plain = make_schedule("cosine", base_lr=0.4, total_steps=10)  # the remaining 10 steps
    assert [sched(s) for s in range(4, 14)] == [plain(s) for s in range(10)]

    step = make_schedule("step", base_lr=0.1, total_steps=100, warmup_steps=10)
    assert step(0) == pytest.approx(0.01) and step(9) == 0.1 and step(10) == 0.1
    assert step(49) == 0.1 and step(50) == pytest.approx(0.01)  # milestones stay in place
    const = make_schedule("constant", base_lr=1.0, total_steps=5, warmup_steps=2)
    assert [const(s) for s in range(5)] == [0.5, 1.0, 1.0, 1.0, 1.0]


def test_schedules_are_pure_functions_of_the_step():
    sched = make_schedule("cosine", base_lr=0.1, total_steps=50, warmup_steps=5)
    forward = [sched(s) for s in range(50)]
    assert [sched(s) for s in reversed(range(50))] == forward[::-1]
    assert sched(np.int64(7)) == forward[7]


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("linear", {}, "choose one of constant, step, multistep, cosine"),
        ("constant", {"total_steps": 0}, "total_steps must be >= 1"),
        ("constant", {"base_lr": 0.0}, "base_lr must be > 0"),
        ("cosine", {"warmup_steps": 10}, "warmup_steps must be >= 0 and < total_steps=10"),
        ("step", {"milestones": [2]}, "'multistep' schedule only.*fixed at 50% and 75%"),
        ("step", {"min_lr": 0.01}, "cosine schedule only"),
        ("cosine", {"min_lr": 0.5}, r"min_lr must be in \[0, base_lr"),
        ("step", {"gamma": 0.0}, "gamma must be > 0"),
        ("multistep", {"milestones": [2]}, "needs milestones .* and steps_per_epoch"),
        ("multistep", {"milestones": [], "steps_per_epoch": 2}, "milestones is empty"),
        ("multistep", {"milestones": [3, 2], "steps_per_epoch": 1}, "strictly increasing"),
        ("multistep", {"milestones": [0, 2], "steps_per_epoch": 1}, "positive"),
        ("multistep", {"milestones": [2, 5], "steps_per_epoch": 2}, "milestones are in epochs"),
    ],
)
def test_errors_say_what_to_do(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_schedule(name, **{"base_lr": 0.1, "total_steps": 10, **kwargs})


def test_negative_step_is_an_error():
    with pytest.raises(ValueError, match="step must be >= 0"):
        make_schedule("constant", total_steps=3)(-1)
