"""SeedNet as the blog built it: N(0, 1) weights (the last block's x0.01) and pixels in [0, 1],
both options stored with the weights so that evaluation, prediction and export agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import sdnet
from sdnet.checkpoint import read_checkpoint
from sdnet.cli import main
from sdnet.config import ConfigError
from sdnet.data import Loader, input_statistics, load_dataset
from sdnet.models.seednet import BLOG_LAST_BLOCK_SCALE


def _stds(model: sdnet.Model) -> dict[str, float]:
    return {n: float(np.std(p.value)) for n, p in model.named_parameters()}


def test_blog_init_is_standard_normal_with_the_last_block_scaled() -> None:
    stds = _stds(sdnet.build_model("seednet", init="blog", seed=3))
    for name, std in stds.items():
        expected = BLOG_LAST_BLOCK_SCALE if name.startswith("block3.") else 1.0
        assert std == pytest.approx(expected, rel=0.05), name
    default = _stds(sdnet.build_model("seednet", seed=3))
    assert default["block1.wa.weight"] == pytest.approx(1 / np.sqrt(784) / np.sqrt(3), rel=0.05)


def test_blog_init_is_seeded_and_stored_in_the_model_config(tmp_path: Path) -> None:
    a = sdnet.build_model("seednet", init="blog", seed=1)
    b = sdnet.build_model("seednet", init="blog", seed=1)
    c = sdnet.build_model("seednet", init="blog", seed=2)
    for (name, p), (_, q), (_, r) in zip(
        a.named_parameters(), b.named_parameters(), c.named_parameters(), strict=True
    ):
        np.testing.assert_array_equal(p.value, q.value, err_msg=name)
        assert not np.array_equal(p.value, r.value), name
    assert a.config["init"] == "blog"
    assert sdnet.load(sdnet.save(a, tmp_path / "m.npz")).config["init"] == "blog"


def test_init_is_refused_for_resnets_and_unknown_values() -> None:
    with pytest.raises(ConfigError, match="init applies to SeedNets only"):
        sdnet.TrainConfig(model="resnet20", init="blog").validate()
    with pytest.raises(ConfigError, match="init='normal'"):
        sdnet.TrainConfig(model="seednet", init="normal").validate()
    with pytest.raises(ValueError, match="unknown SeedNet init"):
        sdnet.build_model("seednet", init="normal")


def test_unit_scaling_feeds_pixels_over_255(mnist_dir: Path) -> None:
    ds = load_dataset("mnist", "test", data_dir=mnist_dir, download=False).subset(np.arange(8))
    assert input_statistics("mnist", "unit") == ((0.0,), (1.0,))
    loader = Loader(ds.scaled("unit"), batch_size=8, shuffle=False)
    ((x, _),) = list(loader.batches(loader.plan_epoch(None)))
    np.testing.assert_allclose(x, ds.images / np.float32(255), rtol=0, atol=0)
    assert ds.scaled("dataset") is ds


@pytest.fixture(scope="module")
def blog_run(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few steps of the blog's recipe (its init and [0, 1] inputs) on MNIST."""
    run = tmp_path_factory.mktemp("blog") / "run"
    sdnet.train(
        recipe="seednet-blog", batch_size=16, limit_train=160, limit_test=100, device="cpu",
        data_dir=str(mnist_dir), download=False, progress=False, run_dir=str(run),
    )  # fmt: skip
    return run


def test_the_scaling_is_stored_and_used_by_eval_predict_and_export(
    blog_run: Path, mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, meta = read_checkpoint(blog_run / "model.npz")
    assert meta["extra"] == {"dataset": "mnist", "mean": [0.0], "std": [1.0], "normalize": "unit"}
    assert meta["model"]["init"] == "blog"
    model = sdnet.load(blog_run / "model.npz")
    kw = dict(data_dir=mnist_dir, limit=100, download=False)
    unit = sdnet.evaluate(model, "mnist", normalize="unit", **kw)
    standard = sdnet.evaluate(model, "mnist", **kw)
    assert unit["loss"] != pytest.approx(standard["loss"])  # the scaling matters
    argv = ["eval", str(blog_run / "model.npz"), "--data-dir", str(mnist_dir), "--limit", "100"]
    assert main(argv + ["--device", "cpu", "--no-download"]) == 0
    assert f"loss {unit['loss']:.4f}" in capsys.readouterr().out
    pytest.importorskip("onnx")
    assert main(["export", str(blog_run / "model.npz"), str(tmp_path / "m.onnx")]) == 0
    import onnx

    props = {p.key: json.loads(p.value) for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert props["normalize"] == "unit" and props["mean"] == [0.0] and props["std"] == [1.0]


def test_predict_applies_the_stored_scaling(
    blog_run: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    image_mod = pytest.importorskip("PIL.Image")
    from sdnet.predict import predict, predict_files

    ds = load_dataset("mnist", "test", data_dir=mnist_dir, download=False)
    path = tmp_path / "digit.png"
    image_mod.fromarray(ds.images[0, 0]).save(path)
    (got,) = predict_files(blog_run / "model.npz", [path], top=10, device="cpu")
    model = sdnet.load(blog_run / "model.npz")
    (want,) = predict(model, ds.images[:1] / np.float32(255), top=10)
    assert [k for k, _, _ in got.top] == [k for k, _, _ in want]
    np.testing.assert_allclose([p for *_, p in got.top], [p for *_, p in want], rtol=1e-5)
