"""Host threads over the convolution's image blocks: same bits as one thread, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import sdnet
import sdnet.functional as F
import sdnet.functional.conv as conv_module
from sdnet import _threads


@pytest.fixture(autouse=True)
def _restore_threads() -> None:
    before = _threads._chosen
    yield
    _threads._chosen = before


def _conv_step(threads: int) -> list[np.ndarray]:
    sdnet.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 3, 10, 10)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y, saved = F.conv2d(x, w, stride=1, padding=1)
    dx, dw = F.conv2d_backward(np.sin(y), saved)
    y2, saved2 = F.conv2d(x, w, stride=2, padding=1)
    dx2, dw2 = F.conv2d_backward(np.cos(y2), saved2)
    return [np.asarray(v) for v in (y, dx, dw, y2, dx2, dw2)]


def test_threads_give_the_same_bits_as_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conv_module, "CHUNK_BYTES", 1)  # one image per block: 9 blocks
    one = _conv_step(1)
    for threads in (2, 3):
        for a, b in zip(one, _conv_step(threads), strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_training_step_is_identical_with_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conv_module, "CHUNK_BYTES", 64 << 10)
    grads = []
    for threads in (1, 2):
        sdnet.set_num_threads(threads)
        model = sdnet.build_model("resnet8", num_classes=10, in_channels=1, seed=3)
        x = model.backend.asarray(
            np.random.default_rng(1).standard_normal((16, 1, 12, 12)), "float32"
        )
        logits, backprop = model(x, train=True, gates=[True] * 3)
        backprop(np.ones_like(logits))
        grads.append({n: np.array(p.grad) for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        np.testing.assert_array_equal(g, grads[1][name], err_msg=name)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_thread_counts_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        sdnet.set_num_threads(bad)  # type: ignore[arg-type]


def test_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    sdnet.set_num_threads(None)
    monkeypatch.setenv("SDNET_NUM_THREADS", "3")
    assert sdnet.get_num_threads() == 3
    monkeypatch.setenv("SDNET_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="SDNET_NUM_THREADS"):
        sdnet.get_num_threads()
    monkeypatch.delenv("SDNET_NUM_THREADS")
    assert 1 <= sdnet.get_num_threads() <= 8


def test_map_blocks_keeps_order_and_runs_serially_off_numpy() -> None:
    sdnet.set_num_threads(4)
    assert _threads.map_blocks(lambda i: i * i, range(10), np.zeros(1)) == [
        i * i for i in range(10)
    ]
    assert _threads.map_blocks(lambda i: i, range(3), [0.0]) == [0, 1, 2]  # not NumPy: serial
