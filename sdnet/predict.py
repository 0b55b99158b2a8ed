"""Classify your own images with a trained model: ``sdnet predict CHECKPOINT IMAGE...``.

An image file (PNG, JPEG, BMP, GIF, TIFF or WebP: :data:`FORMATS`; Pillow's other readers are
never tried) of at most :data:`MAX_PIXELS` pixels goes through the same preprocessing as the
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
4. resized with a Lanczos filter to fit the dataset's size (28x28, 32x32) with its aspect
   ratio kept (so a digit is not stretched), then padded to that size with the border's
   colour: the work is proportional to the image's own pixels, whatever its shape (a JPEG
   is decoded at a reduced scale first when it is much larger than that);
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

__all__ = [
    "CLASS_NAMES",
    "FORMATS",
    "MAX_PIXELS",
    "Prediction",
    "load_image",
    "preprocess",
    "predict",
    "predict_files",
]

# the raster formats read (Pillow's names); no other of Pillow's readers is ever tried, so an
# untrusted file cannot reach, say, the EPS reader and through it Ghostscript
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
# the most pixels an image may have (after a JPEG's reduced-scale decoding): a 48-megapixel
# photo is read, a file declaring 30000x30000 is refused before it is decoded
MAX_PIXELS = 50_000_000

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
    error : str or None
        Why the file could not be read (``top`` is then empty; see ``skip_unreadable`` of
        :func:`predict_files`).
    """

    source: str
    top: list[tuple[int, str, float]]
    inverted: bool = False
    error: str | None = None

    def __str__(self) -> str:
        if self.error is not None:
            return f"{self.source}: {self.error}"
        classes = ", ".join(f"{name} ({100 * p:.1f}%)" for _, name, p in self.top)
        return f"{self.source}: {classes}" + (" [inverted]" if self.inverted else "")


def _pil() -> tuple[Any, Any]:
    try:
        from PIL import Image, ImageOps
    except ImportError as exc:
        raise ImportError("reading images needs Pillow: pip install 'sdnet[predict]'") from exc
    return Image, ImageOps


def _open(path: str | os.PathLike[str], target: tuple[int, int]) -> Any:
    """Open ``path`` as one of :data:`FORMATS`, decoded (JPEG: at a reduced scale, never below
    four times ``target``), refusing more than :data:`MAX_PIXELS` pixels before decoding."""
    import warnings

    Image, _ = _pil()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path, formats=FORMATS)
            if img.format == "JPEG":  # decode large photos at 1/2, 1/4 or 1/8 scale
                img.draft(img.mode, (4 * target[0], 4 * target[1]))
            w0, h0 = img.size
            if w0 * h0 > MAX_PIXELS:
                img.close()
                raise OSError(
                    f"{path}: the image has {w0}x{h0} pixels, more pixels than sdnet predict "
                    f"reads ({MAX_PIXELS:,} pixels): scale the image down first"
                )
            img.load()
    except FileNotFoundError:
        raise OSError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise OSError(f"{path}: a folder, not an image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise OSError(
            f"{path}: the image declares more pixels than sdnet predict reads "
            f"({MAX_PIXELS:,} pixels): scale the image down first"
        ) from None
    except OSError as exc:
        if str(exc).startswith(f"{path}: "):
            raise
        why = str(exc) if "cannot identify" not in str(exc) else "not an image in a format read"
        raise OSError(
            f"{path}: cannot read the image ({why}; formats read: {', '.join(FORMATS)})"
        ) from None
    except (ValueError, SyntaxError, EOFError) as exc:  # damaged headers in some plugins
        raise OSError(f"{path}: cannot read the image ({exc})") from None
    return img


def _eight_bit(img: Any, channels: int, path: Any) -> Any:
    """``img`` in mode ``L`` (1 channel) or ``RGB`` (3): 16-bit and float images scaled to
    8 bits, transparency flattened onto white. A mode that cannot be converted is an
    ``OSError`` naming the file."""
    Image, ImageOps = _pil()
    img = ImageOps.exif_transpose(img)  # phone photos: the orientation their camera recorded
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):  # 16-bit or float grayscale
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            top = 1.0 if a.max() <= 1.0 else 255.0
        else:
            top = 255.0 if a.max() <= 255 else 65535.0
        img = Image.fromarray(np.clip(a * (255.0 / top), 0, 255).astype(np.uint8))
    try:
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, rgba)
        return img.convert("L" if channels == 1 else "RGB")
    except (ValueError, OSError) as exc:
        raise OSError(
            f"{path}: cannot use its colours (mode {img.mode}: {exc}); save it as an RGB or "
            "grayscale image"
        ) from None


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
        A file in one of :data:`FORMATS` (PNG, JPEG, BMP, GIF, TIFF, WebP), at most
        :data:`MAX_PIXELS` pixels.
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
        The file is missing, is not an image in one of :data:`FORMATS`, is too large, or has
        colours that cannot be converted (the message names it).
    """
    Image, _ = _pil()
    c, h, w = shape
    if c not in (1, 3):
        raise ValueError(f"image shape must have 1 or 3 channels, got {shape}")
    with _open(path, (w, h)) as opened:
        img = _eight_bit(opened, c, path)
    # resize to fit (h, w) with the aspect ratio kept, then pad with the border's colour
    w0, h0 = img.size
    scale = min(w / w0, h / h0)
    size = (min(w, max(1, round(w0 * scale))), min(h, max(1, round(h0 * scale))))
    small = np.asarray(img.resize(size, Image.Resampling.LANCZOS), dtype=np.uint8)
    small = small.reshape(size[1], size[0], c)  # (h1, w1, C)
    b = max(1, min(small.shape[:2]) // 14)
    border = np.concatenate(
        [small[:b].reshape(-1, c), small[-b:].reshape(-1, c),
         small[:, :b].reshape(-1, c), small[:, -b:].reshape(-1, c)]
    )  # fmt: skip
    if invert == "auto":
        inverted = c == 1 and float(border.mean()) > 127.5
    else:
        inverted = bool(invert)
    out = np.empty((h, w, c), np.uint8)
    out[...] = np.median(border, axis=0).astype(np.uint8)  # (C,) broadcast
    top, left = (h - size[1]) // 2, (w - size[0]) // 2
    out[top : top + size[1], left : left + size[0]] = small
    out = out.transpose(2, 0, 1)  # (C, H, W)
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
    skip_unreadable: bool = False,
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
        It must have as many classes as the model predicts.
    top : int
    invert : bool or "auto"
    device : str
    skip_unreadable : bool
        Give a file that cannot be read a :class:`Prediction` with its ``error`` (and no
        classes) instead of raising, so that one bad file does not stop the others.

    Returns
    -------
    list of Prediction
        One per file, in order.

    Raises
    ------
    sdnet.ConfigError
        No dataset known, an unknown one, or one whose class count differs from the model's.
    OSError
        A file cannot be read (unless ``skip_unreadable``).
    """
    import sdnet

    name, info, mean, std = _dataset_of(checkpoint, dataset)
    model = sdnet.load(checkpoint, device=device)
    classes = model.config.get("num_classes")
    if classes != info.num_classes:
        from sdnet.config import ConfigError

        raise ConfigError(
            f"{checkpoint} predicts {classes} classes but {name} has {info.num_classes}: "
            "pass --dataset with the dataset the model was trained on"
        )
    loaded: list[tuple[np.ndarray, bool] | str] = []
    for p in paths:
        try:
            loaded.append(load_image(p, info.shape, invert=invert))
        except OSError as exc:
            if not skip_unreadable:
                raise
            loaded.append(str(exc).removeprefix(f"{p}: "))
    good = [item for item in loaded if not isinstance(item, str)]
    tops: list[Any] = []
    if good:
        images = np.stack([img for img, _ in good])  # (N, C, H, W) uint8
        x = preprocess(images, mean, std, model.dtype)
        tops = predict(model, x, top=min(top, classes), names=CLASS_NAMES.get(name))
    results, it = [], iter(zip(tops, good, strict=True))
    for p, item in zip(paths, loaded, strict=True):
        if isinstance(item, str):
            results.append(Prediction(str(p), [], error=item))
        else:
            t, (_, inv) = next(it)
            results.append(Prediction(str(p), t, inv))
    return results


def _dataset_of(checkpoint: Any, dataset: str | None) -> tuple[str, Any, list[Any], list[Any]]:
    """The dataset whose preprocessing applies (``dataset``, else the checkpoint's), its
    info, and the mean and std to normalize with (the checkpoint's own when stored for it)."""
    from sdnet.checkpoint import read_checkpoint, stored_extra
    from sdnet.config import ConfigError
    from sdnet.data import DATASETS, input_statistics

    _, meta = read_checkpoint(checkpoint)
    extra = stored_extra(meta, checkpoint)
    name = dataset or extra.get("dataset")
    if not name:
        raise ConfigError(f"{checkpoint} does not say its dataset; pass --dataset (e.g. mnist)")
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}: use one of {sorted(DATASETS)}")
    info = DATASETS[name]
    mean, std = input_statistics(name, extra.get("normalize", "dataset"))
    if extra.get("dataset") == name:  # the statistics the weights were trained with
        mean, std = extra.get("mean") or mean, extra.get("std") or std
    if len(mean) != info.shape[0]:
        raise ConfigError(
            f"{checkpoint}: its stored normalization has {len(mean)} channel(s), {name} images "
            f"have {info.shape[0]}: pass --dataset with the dataset it was trained on"
        )
    return name, info, list(mean), list(std)
