"""The datasets sdnet knows, loaded into host arrays and checked against their official shape.

``load_dataset(name, split)`` finds the files (:func:`sdnet.data.sources.locate`), reads them
(IDX or CIFAR batches), checks the official count, image shape and label range, and returns an
:class:`ArrayDataset`: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,), and the dataset's
standard per-channel normalization statistics.

Normalization statistics (``mean``, ``std``: of pixel/255, per channel, over the *training*
split, every pixel of every image pooled; the values in common use):

* MNIST: 0.1307 / 0.3081
* Fashion-MNIST: 0.2860 / 0.3530
* CIFAR-10: (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616)
* CIFAR-100: (0.5071, 0.4865, 0.4409) / (0.2673, 0.2564, 0.2762)
* SVHN: (0.4377, 0.4438, 0.4728) / (0.1980, 0.2010, 0.1970), over the ``train`` split only
  (73,257 images), the values in common use (docs/data.md says where they come from; a test
  recomputes them when the files are present). A run on train + extra keeps them.

The CIFAR-10 std often quoted as (0.2023, 0.1994, 0.2010) is the mean of per-image stds, not
the dataset's pixel std; sdnet uses the pooled value, as it does for every dataset.

Input scaling (``normalize``, :data:`NORMALIZATIONS`): ``"dataset"`` standardises with these
statistics; ``"unit"`` feeds x / 255 in [0, 1] (mean 0, std 1 per channel), as the blog that
SeedNet comes from. :func:`input_statistics` gives the (mean, std) of either, and
:meth:`ArrayDataset.scaled` a dataset carrying them, which the loader then applies.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdnet.data.cifar import load_cifar
from sdnet.data.errors import DataError
from sdnet.data.idx import load_mnist
from sdnet.data.sources import locate
from sdnet.data.svhn import load_svhn

__all__ = [
    "DatasetInfo",
    "DATASETS",
    "ArrayDataset",
    "load_dataset",
    "split_train_val",
    "check_labels",
    "NORMALIZATIONS",
    "input_statistics",
    "split_per_class",
    "gather_rows",
]

NORMALIZATIONS = ("dataset", "unit")


@dataclass(frozen=True)
class DatasetInfo:
    """What sdnet knows about one dataset (its files come from ``sources.SOURCES``)."""

    name: str
    num_classes: int
    shape: tuple[int, int, int]  # (C, H, W)
    counts: dict[str, int]  # official images per split
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_augment: dict[str, Any] = field(default_factory=dict)  # crop_pad, hflip by default
    augment_crop_pad: int = 4  # crop padding when augmentation is asked for
    hflip_allowed: bool = True  # a mirrored image is an image of the same class
    pad_pixel: int | None = None  # raw value of a crop's padding (None: the dataset mean)


_OFF = {"crop_pad": 0, "hflip": False}
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", 10, (1, 28, 28), {"train": 60000, "test": 10000}, (0.1307,), (0.3081,),
        dict(_OFF), augment_crop_pad=2, hflip_allowed=False, pad_pixel=0,
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", 10, (1, 28, 28), {"train": 60000, "test": 10000}, (0.2860,), (0.3530,),
        dict(_OFF), augment_crop_pad=2, hflip_allowed=True, pad_pixel=0,
    ),
    "cifar10": DatasetInfo(
        "cifar10", 10, (3, 32, 32), {"train": 50000, "test": 10000},
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        {"crop_pad": 4, "hflip": True},
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, (3, 32, 32), {"train": 50000, "test": 10000},
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
        {"crop_pad": 4, "hflip": True},
    ),
    "svhn": DatasetInfo(
        "svhn", 10, (3, 32, 32), {"train": 73257, "test": 26032, "extra": 531131},
        (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
        dict(_OFF), augment_crop_pad=4, hflip_allowed=False,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class ArrayDataset:
    """Images and labels of one split, on the host.

    Attributes
    ----------
    images : numpy.ndarray
        uint8 (N, C, H, W).
    labels : numpy.ndarray
        Integers (N,) in ``0 .. num_classes - 1`` (int64 when read by :func:`load_dataset`);
        anything else is refused with a ``ValueError`` (:func:`check_labels`).
    name, split : str
    num_classes : int
    mean, std : tuple of float
        Per-channel normalization statistics of the dataset's training split (pixel / 255).
    source : pathlib.Path or None
        The directory the files were read from.
    """

    images: np.ndarray
    labels: np.ndarray
    name: str
    split: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: Path | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{self.images.shape}")  # fmt: skip
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels {self.labels.shape} do not match {self.images.shape[0]} images"
            )
        if len(self.mean) != self.images.shape[1] or len(self.std) != self.images.shape[1]:
            raise ValueError(f"mean/std need one value per channel ({self.images.shape[1]})")
        check_labels(self.labels, self.num_classes, f"{self.name} {self.split}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def scaled(self, normalize: str) -> ArrayDataset:
        """The same images and labels (not copied) with the statistics of ``normalize``
        (:func:`input_statistics`; ``"dataset"`` keeps this dataset's own)."""
        if normalize == "dataset":
            return self
        mean, std = input_statistics(self.name, normalize, channels=self.shape[0])
        return dataclasses.replace(self, mean=mean, std=std)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ArrayDataset:
        """The samples at ``indices`` (copies), same name, statistics and source."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)  # (M,)
        return ArrayDataset(
            self.images[idx], self.labels[idx], self.name, self.split, self.num_classes,
            self.mean, self.std, self.source,
        )  # fmt: skip


def input_statistics(
    name: str, normalize: str = "dataset", channels: int | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per channel that batches of dataset ``name`` are normalized with.

    ``normalize="dataset"``: the dataset's published training statistics (:data:`DATASETS`);
    ``"unit"``: zeros and ones, so a batch holds x / 255. ``channels`` is needed for a
    dataset sdnet does not know (``"unit"`` only).
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    if normalize == "dataset":
        if name not in DATASETS:
            raise ValueError(
                f"no statistics for dataset {name!r}: use one of {', '.join(DATASETS)}"
            )
        return DATASETS[name].mean, DATASETS[name].std
    c = DATASETS[name].shape[0] if channels is None else channels
    return (0.0,) * c, (1.0,) * c


def check_labels(labels: Any, num_classes: int, what: str = "dataset") -> None:
    """Refuse labels that are not integer class indices in ``0 .. num_classes - 1``.

    Raises
    ------
    ValueError
        A non-integer dtype, or values out of range; the message says which and how many.
    """
    labels = np.asarray(labels)
    if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{what}: labels must be integer class indices, got dtype {labels.dtype} "
            f"(convert them with labels.astype(np.int64) if they are whole numbers)"
        )
    if not labels.size:
        return
    low, high = labels.min(), labels.max()
    if low < 0 or high >= num_classes:
        bad = int(np.count_nonzero((labels < 0) | (labels >= num_classes)))
        raise ValueError(
            f"{what}: {bad} label(s) outside 0..{num_classes - 1} (they span {low}..{high}); "
            f"fix the labels or give the right number of classes"
        )


def _check(info: DatasetInfo, split: str, where: Path, images: np.ndarray, labels: np.ndarray,
           expected: int) -> None:  # fmt: skip
    if images.shape[1:] != info.shape or images.shape[0] != expected:
        raise DataError(
            f"{where}: {info.name} {split} has images {images.shape}, expected "
            f"({expected}, {', '.join(map(str, info.shape))}) (wrong or incomplete files)"
        )
    if labels.shape != (expected,):
        raise DataError(f"{where}: {info.name} {split} has {labels.shape[0]} labels, "
                        f"expected {expected}")  # fmt: skip
    if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise DataError(f"{where}: labels outside 0..{info.num_classes - 1}")


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: bool = False,
    mirrors: Sequence[str] | str | None = None,
) -> ArrayDataset:
    """Find, read and validate one split of a dataset.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"}
    split : {"train", "test"}, or "extra" (SVHN)
    data_dir : path, optional
        A directory holding the files directly; searched first.
    download : bool
        Download into the cache when no searched place holds the files.
    progress : bool
        A tqdm progress bar while downloading.
    mirrors : list of base URLs or space-separated str, optional
        Overrides ``$SDNET_MIRRORS`` and the built-in mirrors.

    Raises
    ------
    DataNotFound
        Nowhere to be found and no download possible; the message lists every place and mirror.
    DataError
        Files found but truncated, corrupt or not the official dataset (names the file).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    info = DATASETS[name]
    if split not in info.counts:
        raise ValueError(f"split must be one of {list(info.counts)}, got {split!r}")
    where = locate(name, split, data_dir=data_dir, download=download, mirrors=mirrors,
                   progress=progress)  # fmt: skip
    expected = info.counts[split]
    if name.startswith("cifar"):
        images, labels = load_cifar(where, name, split, expected=expected)
    elif name == "svhn":
        images, labels = load_svhn(where, split, expected=expected)
    else:
        images, labels = load_mnist(where, split)
        images = images[:, None, :, :]  # (N, 1, 28, 28)
    _check(info, split, where, images, labels, expected)
    return ArrayDataset(
        images, labels, name, split, info.num_classes, info.mean, info.std, Path(where)
    )


def split_train_val(
    n: int, val_size: int | float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into disjoint, sorted train and validation index arrays.

    ``val_size`` is a count (int, ``0 <= val_size <= n``) or a fraction in (0, 1) (rounded to
    the nearest count). The validation indices are a uniformly random subset drawn from ``rng``
    (one permutation of ``n``), so the same seed gives the same split.
    """
    if isinstance(val_size, bool) or not isinstance(
        val_size, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"val_size must be an int count or a float fraction, got {val_size!r}")
    if isinstance(val_size, (float, np.floating)):
        if not 0.0 < float(val_size) < 1.0:
            raise ValueError(f"a fractional val_size must be in (0, 1), got {val_size}")
        k = int(round(float(val_size) * n))
    else:
        k = int(val_size)
        if not 0 <= k <= n:
            raise ValueError(f"val_size {k} must be between 0 and n={n}")
    perm = rng.permutation(n)  # (n,)
    return np.sort(perm[k:]).astype(np.int64), np.sort(perm[:k]).astype(np.int64)


def split_per_class(
    labels: np.ndarray,
    part: np.ndarray,
    counts: Sequence[int],
    num_classes: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into sorted train and validation indices, the validation set made of
    ``counts[p]`` images of every class drawn from the rows of part ``p``.

    ``labels`` (n,) are the rows' classes and ``part`` (n,) which part (training split) each
    row comes from. For each part in order, then each class in order, the validation rows are
    the first ``counts[p]`` of one permutation drawn from ``rng`` (SVHN's paper protocol: 400
    per class from ``train``, 200 per class from ``extra``).

    Raises
    ------
    ValueError
        A class of a part has fewer rows than its count.
    """
    chosen = []
    for p, k in enumerate(counts):
        for c in range(num_classes):
            rows = np.flatnonzero((part == p) & (labels == c))  # (m,)
            if rows.size < k:
                raise ValueError(f"class {c} of part {p} has {rows.size} images, fewer than {k}")
            chosen.append(rng.permutation(rows)[:k])
    val = np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, np.int64)
    keep = np.ones(labels.shape[0], dtype=bool)
    keep[val] = False
    return np.flatnonzero(keep).astype(np.int64), val


def gather_rows(parts: Sequence[ArrayDataset], rows: np.ndarray, split: str) -> ArrayDataset:
    """Rows ``rows`` (sorted) of the concatenation of ``parts``, as one new dataset.

    The images are copied once, straight into one array allocated for them (``np.take`` with
    ``out=``, part by part): no temporary copy of a part, so joining SVHN's train and extra
    needs the parts plus the result, never more. A single part with every row is returned as
    it is. ``split`` names the result (``"train+extra"``).
    """
    first = parts[0]
    sizes = np.array([len(p) for p in parts], dtype=np.int64)
    if len(parts) == 1 and rows.shape[0] == sizes[0]:
        return first
    if rows.size and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= sizes.sum()):
        raise ValueError("rows must be increasing indices into the parts' concatenation")
    starts = np.concatenate([[0], np.cumsum(sizes)])  # (P + 1,)
    images = np.empty((rows.shape[0], *first.shape), dtype=np.uint8)  # (M, C, H, W)
    labels = np.empty(rows.shape[0], dtype=np.int64)  # (M,)
    bounds = np.searchsorted(rows, starts)  # rows of part p are rows[bounds[p]:bounds[p + 1]]
    for p, part in enumerate(parts):
        a, b = int(bounds[p]), int(bounds[p + 1])
        local = rows[a:b] - starts[p]  # (m,)
        np.take(part.images, local, axis=0, out=images[a:b], mode="clip")  # checked above
        labels[a:b] = part.labels[local]
    return ArrayDataset(images, labels, first.name, split, first.num_classes, first.mean,
                        first.std, first.source)  # fmt: skip
