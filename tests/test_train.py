"""sdnet.train on real MNIST subsets: results, run directory, resume, Ctrl-C, NaN, bad options."""

from __future__ import annotations

import importlib
import json
import pathlib
import signal

import numpy as np
import pytest

import sdnet
from sdnet.checkpoint import read_checkpoint
from sdnet.config import ConfigError, TrainConfig
from sdnet.rundir import RunDirError

train_mod = importlib.import_module("sdnet.training.run")  # the training loop

# a tiny, fast run: 1024 images, batches of 32, 2 epochs, gates on (p_last 0.5)
TINY = dict(
    model="resnet8",
    epochs=2,
    batch_size=32,
    limit_train=1024,
    limit_test=200,
    eval_batch_size=200,
    device="cpu",
    progress=False,
    download=False,
    log_every=16,
    p_last=0.5,
)


def _at_step(monkeypatch: pytest.MonkeyPatch, step: int, action) -> None:
    """Run ``action(logits) -> logits`` inside training step ``step`` (1-based), just before
    its loss; it may also raise or send a signal. Undo with ``monkeypatch.undo()``."""
    real = train_mod.softmax_cross_entropy
    calls = {"n": 0}

    def patched(logits, y):
        calls["n"] += 1
        if calls["n"] == step:
            logits = action(logits)
        return real(logits, y)

    monkeypatch.setattr(train_mod, "softmax_cross_entropy", patched)


def _crash(logits):
    raise RuntimeError("simulated crash")


def _ctrl_c(logits):
    signal.raise_signal(signal.SIGINT)
    return logits


def _weights(model: sdnet.Model) -> dict[str, np.ndarray]:
    return model.state_dict()


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, mnist_dir):
    """One uninterrupted tiny run, shared by the resume tests."""
    run = tmp_path_factory.mktemp("base") / "run"
    return sdnet.train(**TINY, data_dir=str(mnist_dir), run_dir=str(run), checkpoint_every=3)


def test_short_real_run_learns_and_writes_its_run_directory(baseline, mnist_dir):
    r = baseline
    assert len(r.history) == 2
    first, last = r.history
    for key in (
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
        "lr",
        "seconds",
        "images_per_second",
        "blocks_kept",
        "kept_fraction",
        "step",
    ):
        assert key in last
    assert last["step"] == 64  # 1024 / 32 * 2
    assert last["train_loss"] < first["train_loss"]
    assert r.test_accuracy == last["test_accuracy"] > 0.3  # 3x chance after 64 small steps
    assert 0 < last["blocks_kept"] <= 3
    files = {p.name for p in r.run_dir.iterdir()}
    assert {"config.json", "metrics.jsonl", "checkpoint.npz", "model.npz"} <= files
    assert not [f for f in files if f.endswith(".tmp")]
    cfg = json.loads((r.run_dir / "config.json").read_text())
    assert TrainConfig.from_dict(cfg) == r.config
    lines = [json.loads(s) for s in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["type"] == "step"] == [16, 32, 48, 64]
    assert [x["epoch"] for x in lines if x["type"] == "epoch"] == [1, 2]
    # the saved weights reproduce the reported accuracy through sdnet.load + sdnet.evaluate
    model = sdnet.load(r.run_dir / "model.npz")
    res = sdnet.evaluate(model, "mnist", data_dir=mnist_dir, limit=200, download=False)
    assert res["count"] == 200
    assert res["accuracy"] == pytest.approx(r.test_accuracy)


def test_crash_then_resume_gives_the_same_weights(baseline, tmp_path, monkeypatch, mnist_dir):
    """A crash at step 8 (after the step-6 checkpoint): resume redoes steps 7.. exactly."""
    run = tmp_path / "run"
    _at_step(monkeypatch, 8, _crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sdnet.train(**TINY, data_dir=str(mnist_dir), run_dir=str(run), checkpoint_every=3)
    monkeypatch.undo()
    _, meta = read_checkpoint(run / "checkpoint.npz")
    assert meta["step"] == 6 and meta["step_in_epoch"] == 6
    resumed = sdnet.train(resume=run, progress=False)
    _same(_weights(resumed.model), _weights(baseline.model))
    assert resumed.test_accuracy == baseline.test_accuracy
    for a, b in zip(resumed.history, baseline.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-12)
        assert a["blocks_kept"] == b["blocks_kept"]
    # metrics.jsonl holds each step line once, as if never interrupted
    steps = [
        json.loads(s)["step"]
        for s in (run / "metrics.jsonl").read_text().splitlines()
        if json.loads(s)["type"] == "step"
    ]
    assert steps == [16, 32, 48, 64]


def test_ctrl_c_saves_a_checkpoint_and_resume_matches(
    baseline, tmp_path, monkeypatch, mnist_dir, sigint_handled
):
    run = tmp_path / "run"
    _at_step(monkeypatch, 11, _ctrl_c)  # Ctrl-C arrives in the middle of step 11
    with pytest.raises(KeyboardInterrupt, match="Resume with"):
        sdnet.train(**TINY, data_dir=str(mnist_dir), run_dir=str(run))
    monkeypatch.undo()
    _, meta = read_checkpoint(run / "checkpoint.npz")
    assert meta["step"] == 11  # step 11 completed, then saved
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the one it found
    resumed = sdnet.train(resume=run, progress=False)
    _same(_weights(resumed.model), _weights(baseline.model))


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch, mnist_dir
):
    run = tmp_path / "run"
    _at_step(monkeypatch, 5, lambda logits: logits * float("nan"))
    with pytest.raises(sdnet.NonFiniteError, match=r"nan at step 5 \(epoch 1, learning rate"):
        sdnet.train(**TINY, data_dir=str(mnist_dir), run_dir=str(run), checkpoint_every=2)
    arrays, meta = read_checkpoint(run / "checkpoint.npz")  # intact and readable
    assert meta["step"] == 4
    assert all(np.isfinite(a).all() for k, a in arrays.items() if a.dtype.kind == "f")
    events = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["type"] == "event" and events[-1]["event"] == "non-finite"


def test_validation_split_records_test_accuracy_at_best_validation(tmp_path, mnist_dir):
    r = sdnet.train(
        **dict(TINY, epochs=2), val_split=0.25, data_dir=str(mnist_dir), run_dir=str(tmp_path / "r")
    )
    assert all("val_accuracy" in h for h in r.history)
    best = max(r.history, key=lambda h: h["val_accuracy"])
    assert r.best is not None and r.best["epoch"] == best["epoch"]
    assert r.best["test_accuracy"] == best["test_accuracy"]
    assert (r.run_dir / "best.npz").is_file()


def test_seednet_with_its_own_shortcut_learning_rate(tmp_path, mnist_dir):
    r = sdnet.train(
        model="seednet",
        epochs=1,
        batch_size=32,
        lr=0.01,
        momentum=0.0,
        nesterov=False,
        weight_decay=0.0,
        lr_mult={"*.wh.weight": 0.01},
        limit_train=256,
        limit_test=100,
        p_last=1.0,
        device="cpu",
        progress=False,
        download=False,
        data_dir=str(mnist_dir),
        run_dir=str(tmp_path / "r"),
    )
    assert np.isfinite(r.history[0]["train_loss"])
    assert r.model.config["name"] == "seednet"


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(batch_size=0), "batch_size=0"),
        (dict(p_last=1.5), "p_last=1.5"),
        (dict(p_last=0.0), "p_last=0.0"),
        (dict(model="resnet7"), "6n\\+2"),
        (dict(model="vgg"), "model='vgg'"),
        (dict(dataset="imagenet"), "dataset='imagenet'"),
        (dict(schedule="multistep"), "milestones"),
        (dict(warmup_epochs=5, epochs=2), "warmup"),
        (dict(momentum=0.0), "Nesterov"),
    ],
)
def test_bad_options_fail_before_any_work(bad, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        sdnet.train(run_dir=str(tmp_path / "r"), **bad)
    assert not (tmp_path / "r").exists()


def test_unknown_option_suggests_the_right_name():
    with pytest.raises(TypeError, match="did you mean p_last"):
        sdnet.train(plast=0.5)


def test_a_used_run_directory_is_not_overwritten(baseline):
    with pytest.raises(RunDirError, match="already holds a run"):
        sdnet.train(**TINY, run_dir=str(baseline.run_dir))


def test_resume_refuses_changed_options_and_missing_dirs(baseline, tmp_path):
    with pytest.raises(ConfigError, match="only device"):
        sdnet.train(resume=baseline.run_dir, lr=0.5)
    with pytest.raises(RunDirError, match="does not exist"):
        sdnet.train(resume=tmp_path / "nowhere")


def test_gpu_request_without_a_gpu_is_a_clear_error(tmp_path):
    try:
        sdnet.get_backend("gpu")
    except sdnet.BackendUnavailable:
        with pytest.raises(sdnet.BackendUnavailable):
            sdnet.train(device="gpu", run_dir=str(tmp_path / "r"), download=False)
    else:
        pytest.skip("a GPU is available here")


def test_the_training_loop_is_the_same_on_every_backend(backend, tmp_path, mnist_dir):
    """Same seed => same gates, data order and init: the losses agree across libraries."""
    opts = dict(TINY, epochs=1, limit_train=96, limit_test=50, batch_size=32, log_every=1)
    opts.update(device="cpu", data_dir=str(mnist_dir))
    ref = sdnet.train(**opts, run_dir=str(tmp_path / "ref"))
    other = sdnet.train(**dict(opts, device=backend.name), run_dir=str(tmp_path / "other"))
    assert other.model.backend.name == backend.name
    steps = [
        [json.loads(s) for s in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
        for r in (ref, other)
    ]
    a = [x["loss"] for x in steps[0] if x["type"] == "step"]
    b = [x["loss"] for x in steps[1] if x["type"] == "step"]
    assert len(a) == len(b) == 3
    np.testing.assert_allclose(b, a, rtol=2e-4)
    assert other.history[0]["blocks_kept"] == ref.history[0]["blocks_kept"]
    assert other.test_accuracy == pytest.approx(ref.test_accuracy, abs=0.021)


@pytest.mark.parametrize(
    "model, stem, p_last",
    [("resnet8", 2, 1.0), ("resnet14", 2, 1.0), ("resnet20", 1, 0.5), ("resnet110", 1, 0.5),
     ("seednet", 2, 1.0)],
)  # fmt: skip
def test_size_dependent_defaults_follow_one_rule(model, stem, p_last):
    cfg = TrainConfig(model=model)
    assert (cfg.stem(), cfg.survival_last()) == (stem, p_last)
    given = TrainConfig(model=model, p_last=0.8, stem_stride=1 if model != "seednet" else None)
    assert given.survival_last() == 0.8
    assert given.stem() == (1 if model != "seednet" else 2)


def test_seednet_refuses_resnet_only_options(tmp_path):
    with pytest.raises(ConfigError, match="ResNets only"):
        sdnet.train(model="seednet", stem_stride=1, run_dir=str(tmp_path / "r"))


def test_progress_bars_show_live_loss_accuracy_and_speed(tmp_path, capsys, mnist_dir):
    opts = dict(TINY, epochs=1, limit_train=320, limit_test=50, progress=True, log_every=100)
    sdnet.train(**opts, data_dir=str(mnist_dir), run_dir=str(tmp_path / "r"))
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "10/10" in err  # a tqdm bar over the epoch's 10 steps
    assert "loss=" in err and "acc=" in err and "img/s=" in err


def test_weights_gone_non_finite_are_never_checkpointed(tmp_path, monkeypatch, mnist_dir):
    """A finite loss but a NaN weight after step 3: the step-3 checkpoint is refused."""
    run = tmp_path / "run"
    real_step = sdnet.SGD.step
    calls = {"n": 0}

    def poisoning_step(self, grads=None):
        real_step(self, grads)
        calls["n"] += 1
        if calls["n"] == 3:
            p = self.params[0]
            p.value = p.value * float("nan")

    monkeypatch.setattr(sdnet.SGD, "step", poisoning_step)
    with pytest.raises(sdnet.NonFiniteError, match=r"conv1.weight became non-finite after step 3"):
        sdnet.train(**TINY, data_dir=str(mnist_dir), run_dir=str(run), checkpoint_every=3)
    assert not (run / "checkpoint.npz").exists()


def test_paths_may_be_pathlib_paths(tmp_path: pathlib.Path) -> None:
    cfg = sdnet.TrainConfig(data_dir=tmp_path / "data", run_dir=tmp_path / "run").validate()
    assert cfg.data_dir == str(tmp_path / "data") and cfg.run_dir == str(tmp_path / "run")
    with pytest.raises(sdnet.ConfigError, match="run_dir"):
        sdnet.TrainConfig(run_dir=3).validate()
