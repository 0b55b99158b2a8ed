"""Classify your own images with a trained model: ``sdnet predict CHECKPOINT IMAGE...``.

An image file (PNG, JPEG, anything Pillow reads) goes through the same preprocessing as the
dataset the model was trained on:

1. the orientation a camera recorded (EXIF) is applied, 16-bit images are scaled to 8 bits,
   and transparency is flattened onto white (drawn digits often have a transparent
   background);
2. converted to grayscale (MNIST, Fashion-MNIST) or RGB (CIFAR);
3. colour inversion, for the one-channel datasets: MNIST and Fashion-MNIST are light
   strokes on a **black** background, while a digit written on paper or drawn in an editor is
   dark on white. With ``invert="auto"`` (default) the image is inverted when its border (the
   outer 1/14 of each side) is brighter than mid-grey; ``invert=True`` / ``False`` forces it.
   RGB datasets are never inverted;
4. padded to the dataset's aspect ratio with the border's colour (so a digit is not
   stretched), then resized to the dataset's size (28x28, 32x32) with a Lanczos filter;
5. normalized exactly as the training batches are: ``(pixel / 255 - mean) / std`` per channel
   (:func:`sdnet.data.normalize`), with the statistics stored in the checkpoint; a model
   trained with ``normalize="unit"`` (SeedNet's blog recipe) gets x / 255.

MNIST digits fill about the central 20x20 pixels of their 28x28 image: crop your image so
the digit fills most of it, with a small margin, for the best results.

Needs Pillow (``pip install 'sdnet[predict]'``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["CLASS_NAMES", "Prediction", "load_image", "preprocess", "predict", "predict_files"]

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    "cifar10": (
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ),
}  # fmt: skip

Invert = bool | Literal["auto"]


@dataclass(frozen=True)
class Prediction:
    """The top classes for one image.

    Attributes
    ----------
    source : str
        The file (or ``"image <i>"`` for arrays).
    top : list of (int, str, float)
        ``(class index, class name, probability)``, most probable first.
    inverted : bool
        Whether the image's colours were inverted before classification.
    """

    source: str
    top: list[tuple[int, str, float]]
    inverted: bool = False

    def __str__(self) -> str:
        classes = ", ".join(f"{name} ({100 * p:.1f}%)" for _, name, p in self.top)
        return f"{self.source}: {classes}" + (" [inverted]" if self.inverted else "")


def _pil() -> tuple[Any, Any]:
    try:
        from PIL import Image, ImageOps
    except ImportError as exc:
        raise ImportError("reading images needs Pillow: pip install 'sdnet[predict]'") from exc
    return Image, ImageOps


def load_image(
    path: str | os.PathLike[str],
    shape: tuple[int, int, int] = (1, 28, 28),
    *,
    invert: Invert = "auto",
) -> tuple[np.ndarray, bool]:
    """Read an image file as uint8 ``shape`` (C, H, W), ready for :func:`preprocess`.

    Parameters
    ----------
    path : path-like
        PNG, JPEG or any format Pillow reads.
    shape : (C, H, W)
        The dataset's image shape: C = 1 (grayscale) or 3 (RGB).
    invert : bool or "auto"
        See the module docstring (step 3).

    Returns
    -------
    image : numpy.ndarray
        uint8 (C, H, W).
    inverted : bool
        Whether it was inverted.

    Raises
    ------
    OSError
        The file is missing or is not an image Pillow can read (the message names it).
    """
    Image, ImageOps = _pil()
    c, h, w = shape
    if c not in (1, 3):
        raise ValueError(f"image shape must have 1 or 3 channels, got {shape}")
    try:
        with Image.open(path) as img:
            img.load()
    except (OSError, ValueError) as exc:  # Pillow's UnidentifiedImageError is an OSError
        raise OSError(f"{path}: cannot read the image ({exc})") from exc
    img = ImageOps.exif_transpose(img)  # phone photos: the orientation their camera recorded
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):  # 16-bit or float grayscale
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            top = 1.0 if a.max() <= 1.0 else 255.0
        else:
            top = 255.0 if a.max() <= 255 else 65535.0
        img = Image.fromarray(np.clip(a * (255.0 / top), 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    img = img.convert("L" if c == 1 else "RGB")
    pixels = np.asarray(img)  # (h0, w0) or (h0, w0, 3)
    b = max(1, min(pixels.shape[:2]) // 14)
    border = np.concatenate(
        [pixels[:b].reshape(-1, c), pixels[-b:].reshape(-1, c),
         pixels[:, :b].reshape(-1, c), pixels[:, -b:].reshape(-1, c)]
    )  # fmt: skip
    if invert == "auto":
        inverted = c == 1 and float(border.mean()) > 127.5
    else:
        inverted = bool(invert)
    # pad to the target aspect ratio with the border's colour, then resize
    h0, w0 = pixels.shape[:2]
    th, tw = max(h0, round(w0 * h / w)), max(w0, round(h0 * w / h))
    fill = tuple(int(v) for v in np.median(border, axis=0))
    canvas = Image.new(img.mode, (tw, th), fill[0] if c == 1 else fill)
    canvas.paste(img, ((tw - w0) // 2, (th - h0) // 2))
    out = np.asarray(canvas.resize((w, h), Image.Resampling.LANCZOS), dtype=np.uint8)
    out = out.reshape(h, w, c).transpose(2, 0, 1)  # (C, H, W)
    if inverted:
        out = 255 - out
    return np.ascontiguousarray(out), inverted


def preprocess(images: np.ndarray, mean: Any, std: Any, dtype: str = "float32") -> np.ndarray:
    """Normalize uint8 images (N, C, H, W) as the training batches are:
    ``(x / 255 - mean) / std`` per channel, with :func:`sdnet.data.normalize`."""
    from sdnet.data import normalize

    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {images.shape}")
    c = images.shape[1]
    m = np.asarray(mean, dtype=dtype).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=dtype).reshape(-1, 1, 1)
    if m.shape[0] != c or s.shape[0] != c:
        raise ValueError(f"mean/std need one value per channel ({c}), got {mean} / {std}")
    return np.asarray(normalize(images, m, s, np.dtype(dtype)))


def predict(model: Any, x: np.ndarray, *, top: int = 3, names: Any = None) -> list[list[Any]]:
    """Top classes of normalized images ``x`` (N, C, H, W) under ``model`` (evaluation mode).

    Parameters
    ----------
    model : sdnet.Model
    x : numpy.ndarray
        Normalized images (see :func:`preprocess`); copied to the model's device.
    top : int
        How many classes to return per image.
    names : sequence of str, optional
        Class names; the class index as text when omitted.

    Returns
    -------
    list of list of (int, str, float)
        Per image, ``(class, name, probability)`` most probable first; probabilities are the
        softmax of the logits.
    """
    from sdnet._array_api import to_numpy

    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    xd = model.backend.asarray(x, model.dtype)
    logits, _ = model(xd, train=False)
    z = np.asarray(to_numpy(logits), dtype=np.float64)  # (N, K)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    order = np.argsort(-p, axis=1, kind="stable")[:, :top]
    out = []
    for row, idx in zip(p, order, strict=True):
        out.append([(int(k), names[k] if names else str(int(k)), float(row[k])) for k in idx])
    return out


def predict_files(
    checkpoint: str | os.PathLike[str],
    paths: list[str | os.PathLike[str]],
    *,
    dataset: str | None = None,
    top: int = 3,
    invert: Invert = "auto",
    device: Any = "auto",
) -> list[Prediction]:
    """Classify image files with a saved model (``model.npz``, ``best.npz``, ``checkpoint.npz``).

    Parameters
    ----------
    checkpoint : path-like
        Written by training or :func:`sdnet.save`.
    paths : list of path-like
        Image files.
    dataset : str, optional
        The dataset whose preprocessing to apply; default: the one stored in the checkpoint.
    top : int
    invert : bool or "auto"
    device : str

    Returns
    -------
    list of Prediction
        One per file, in order.
    """
    import sdnet
    from sdnet.checkpoint import read_checkpoint
    from sdnet.config import ConfigError
    from sdnet.data import DATASETS, input_statistics

    _, meta = read_checkpoint(checkpoint)
    extra = meta.get("extra") or {}
    name = dataset or extra.get("dataset")
    if not name:
        raise ConfigError(f"{checkpoint} does not say its dataset; pass --dataset (e.g. mnist)")
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}: use one of {sorted(DATASETS)}")
    info = DATASETS[name]
    mean, std = input_statistics(name, extra.get("normalize", "dataset"))
    if extra.get("dataset") == name:  # the statistics the weights were trained with
        mean, std = extra.get("mean") or mean, extra.get("std") or std
    model = sdnet.load(checkpoint, device=device)
    loaded = [load_image(p, info.shape, invert=invert) for p in paths]
    images = np.stack([img for img, _ in loaded])  # (N, C, H, W) uint8
    x = preprocess(images, mean, std, model.dtype)
    tops = predict(model, x, top=min(top, info.num_classes), names=CLASS_NAMES.get(name))
    return [Prediction(str(p), t, inv) for p, t, (_, inv) in zip(paths, tops, loaded, strict=True)]
