"""Predictions on image files: real MNIST test digits written as PNG/JPEG, in MNIST's colours
and as a dark digit on white paper, through the same preprocessing as the training batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sdnet
from sdnet.cli import main
from sdnet.data import Loader, load_dataset
from sdnet.predict import CLASS_NAMES, load_image, predict, predict_files, preprocess

Image = pytest.importorskip("PIL.Image")

N = 10  # test images used


@pytest.fixture(scope="module")
def trained(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ResNet-8 briefly trained on 4000 MNIST images (about 88% test accuracy, seconds)."""
    run = tmp_path_factory.mktemp("run")
    sdnet.train(
        limit_train=4000, epochs=1, batch_size=32, lr=0.05, limit_test=N, device="cpu",
        data_dir=str(mnist_dir), download=False, progress=False, run_dir=str(run),
    )  # fmt: skip
    return run / "model.npz"


@pytest.fixture(scope="module")
def digits(mnist_dir: Path):
    return load_dataset("mnist", "test", data_dir=mnist_dir, download=False).subset(np.arange(N))


def _loader_probabilities(model: sdnet.Model, ds) -> np.ndarray:
    """Class probabilities of the images as the evaluation loader feeds them."""
    loader = Loader(ds, batch_size=N, backend=model.backend, dtype=model.dtype, shuffle=False)
    ((x, _),) = list(loader.batches(loader.plan_epoch(None)))
    logits, _ = model(x, train=False)
    z = np.asarray(logits, dtype=np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def test_mnist_png_gets_the_loaders_preprocessing(trained: Path, digits, tmp_path: Path) -> None:
    paths = []
    for i in range(N):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(digits.images[i, 0]).save(paths[-1])
    image, inverted = load_image(paths[0])
    assert not inverted  # white on black: MNIST's own colours
    np.testing.assert_array_equal(image, digits.images[0])
    preds = predict_files(trained, paths, top=10, device="cpu")
    expected = _loader_probabilities(sdnet.load(trained), digits)
    for pred, probs in zip(preds, expected, strict=True):
        got = np.zeros(10)
        for k, name, p in pred.top:
            assert name == CLASS_NAMES["mnist"][k]
            got[k] = p
        np.testing.assert_allclose(got, probs, rtol=1e-6, atol=1e-7)
    correct = sum(p.top[0][0] == label for p, label in zip(preds, digits.labels, strict=True))
    assert correct >= 8, [p.top[0] for p in preds]  # the model is trained, not random


@pytest.mark.parametrize("fmt", ["png", "jpeg", "rgba"])
def test_dark_digit_on_white_is_inverted(trained: Path, digits, tmp_path: Path, fmt: str) -> None:
    """A 'paper' digit: black ink on white, 84x84 pixels, RGB, JPEG or with a transparent
    background; auto-inversion recovers MNIST's top class."""
    paths = []
    for i in range(N):
        ink = digits.images[i, 0]
        big = Image.fromarray(ink).resize((84, 84), Image.Resampling.BICUBIC)
        paper = Image.fromarray(255 - np.asarray(big))
        if fmt == "rgba":  # dark strokes on a transparent background
            rgba = Image.new("RGBA", (84, 84), (0, 0, 0, 0))
            rgba.putalpha(Image.fromarray(255 - np.asarray(paper)))
            paper = rgba
        path = tmp_path / f"paper{i}.{'png' if fmt == 'rgba' else fmt}"
        (paper if fmt == "rgba" else paper.convert("RGB")).save(path)
        paths.append(path)
    auto = predict_files(trained, paths, top=1, device="cpu")
    assert all(p.inverted for p in auto)
    direct = _loader_probabilities(sdnet.load(trained), digits).argmax(axis=1)
    agree = sum(p.top[0][0] == d for p, d in zip(auto, direct, strict=True))
    assert agree >= N - 1
    kept = predict_files(trained, paths, top=1, invert=False, device="cpu")
    assert not any(p.inverted for p in kept)
    assert sum(p.top[0][0] == d for p, d in zip(kept, direct, strict=True)) < agree


def test_cli_predict_prints_top_classes(trained: Path, digits, tmp_path: Path, capsys) -> None:
    path = tmp_path / "seven.png"
    Image.fromarray(digits.images[0, 0]).save(path)
    assert main(["predict", str(trained), str(path), "--top", "2", "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{path}: ") and line.count("%)") == 2
    assert main(["predict", str(trained), str(path), "--top", "0"]) == 2
    assert "--top" in capsys.readouterr().err


def test_cli_predict_errors(trained: Path, tmp_path: Path, capsys) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert main(["predict", str(trained), str(text)]) == 1
    assert "notes.png: cannot read the image" in capsys.readouterr().err
    assert main(["predict", str(trained), str(tmp_path / "missing.png")]) == 1
    bare = sdnet.save(sdnet.load(trained), tmp_path / "bare.npz")  # no dataset recorded
    Image.new("L", (28, 28)).save(tmp_path / "black.png")
    assert main(["predict", str(bare), str(tmp_path / "black.png")]) == 2
    assert "--dataset" in capsys.readouterr().err
    assert main(["predict", str(bare), str(tmp_path / "black.png"), "--dataset", "mnist"]) == 0


def test_sixteen_bit_png_is_scaled_to_eight_bits(digits, tmp_path: Path) -> None:
    deep = digits.images[0, 0].astype(np.uint16) * 257  # 0..65535
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    image, inverted = load_image(tmp_path / "deep.png")
    assert not inverted
    np.testing.assert_array_equal(image, digits.images[0])


def test_tall_image_is_padded_not_stretched(digits, tmp_path: Path) -> None:
    """A 28x56 image (the digit above a black band) becomes 28x28 with the digit at half size
    in the middle: padded with the border colour to a square, then resized."""
    tall = np.zeros((56, 28), np.uint8)
    tall[:28] = digits.images[0, 0]
    Image.fromarray(tall).save(tmp_path / "tall.png")
    image, inverted = load_image(tmp_path / "tall.png")
    assert image.shape == (1, 28, 28) and not inverted
    assert image[0, :, :7].max() < 16 and image[0, :, 21:].max() < 16  # side margins added
    assert image[0, :14, 7:21].max() > 128  # the digit, at half size, in the top half


def test_rgb_dataset_shape_and_no_auto_inversion(tmp_path: Path) -> None:
    path = tmp_path / "white.png"
    Image.new("RGB", (40, 20), (250, 250, 250)).save(path)
    image, inverted = load_image(path, (3, 32, 32))
    assert image.shape == (3, 32, 32) and image.dtype == np.uint8 and not inverted
    assert image.min() >= 245  # padded with the border's colour, not black


def test_predict_on_arrays_and_bad_input() -> None:
    model = sdnet.build_model("resnet8", in_channels=1, device="cpu")
    x = preprocess(np.zeros((2, 1, 28, 28), np.uint8), [0.1307], [0.3081])
    out = predict(model, x, top=3)
    assert len(out) == 2 and [len(r) for r in out] == [3, 3]
    assert abs(sum(p for _, _, p in predict(model, x, top=10)[0]) - 1.0) < 1e-9
    with pytest.raises(ValueError, match="uint8 images"):
        preprocess(np.zeros((1, 28, 28), np.uint8), [0.1], [0.3])
    with pytest.raises(ValueError, match="one value per channel"):
        preprocess(np.zeros((1, 1, 28, 28), np.uint8), [0.1, 0.2], [0.3])
