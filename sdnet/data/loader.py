"""Mini-batches on the device: a host-drawn epoch plan, one array-API gather + augment.

Randomness: :meth:`Loader.plan_epoch` draws the whole epoch on the host from the run's data
stream (a ``numpy.random.Generator``), in a fixed order: the permutation (if ``shuffle``), then
the crop offsets of every sample (if ``crop_pad``), then the flips (if ``hflip``). The same seed
therefore gives the same batches on every backend, and resuming at batch ``k`` needs no rng.

Augmentation, as in the CIFAR ResNet recipe (He et al. 2016; the stochastic-depth paper):
padding by ``crop_pad`` pixels on each side, a random ``H x W`` crop, then a horizontal flip
with probability 1/2. The padding is applied *after* normalization. By default padded pixels
are 0 there (the dataset mean), as in the reference code that pads the normalized CIFAR
tensor; ``pad_pixel`` pads with a raw pixel value instead (0 for the digit datasets, whose
background is black: a gray border would be a pattern no test image has).

Residency: with ``resident=True`` (or ``"auto"`` and the normalized dataset under half the
device's free memory; on a host backend, up to :data:`HOST_RESIDENT_MAX_BYTES`, which every
dataset but SVHN's train + extra is) the normalized dataset is copied to the device once and
each batch is gathered there; otherwise each batch is gathered and normalized
on the host with NumPy and copied once. Both paths call the same two functions,
:func:`normalize` and :func:`gather_augment`, written once against the array API, so they give
identical batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from sdnet._array_api import device as _device
from sdnet._array_api import namespace
from sdnet.backends import Backend, get_backend
from sdnet.data.datasets import ArrayDataset, check_labels

__all__ = ["EpochPlan", "Loader", "normalize", "gather_augment", "HOST_RESIDENT_MAX_BYTES"]

# the largest normalized dataset kept whole in host memory ("auto"); CIFAR's 50,000 images are
# 0.6 GB in float32, SVHN's train + extra would be 7.4 GB: its batches are normalized one by one
HOST_RESIDENT_MAX_BYTES = 2 << 30

Array = Any


def normalize(x: Array, mean: Array, std: Array, dtype: Any) -> Array:
    """``(x / 255 - mean) / std`` per channel, as ``dtype``.

    ``x``: uint8 (N, C, H, W); ``mean``, ``std``: (C, 1, 1) arrays of ``dtype`` beside ``x``.
    The same three elementwise operations on every namespace, so host and device agree.
    """
    xp = namespace(x)
    y = xp.astype(x, dtype)  # (N, C, H, W)
    return (y / 255 - mean) / std


def gather_augment(
    x: Array,
    rows: Array,
    dy: Array | None,
    dx: Array | None,
    flip: Array | None,
    pad: int,
    fill: Array | None = None,
) -> Array:
    """Rows ``rows`` of ``x``, each randomly cropped from its padded image and flipped.

    Parameters
    ----------
    x : array (N, C, H, W)
        Normalized images.
    rows : int64 array (B,)
        Which images, on ``x``'s device.
    dy, dx : int64 arrays (B,) or None
        Top-left corner of each crop in the padded image, in ``0 .. 2*pad`` (None: ``pad``,
        i.e. no shift).
    flip : bool array (B,) or None
        Mirror the crop left-right.
    pad : int
        Padding on each side.
    fill : array (1, C, 1, 1) or None
        The value of a padded pixel, per channel, beside ``x`` (None: 0).

    Returns
    -------
    array (B, C, H, W)
        ``out[b, c, i, j] = padded[rows[b], c, i + dy[b], j' + dx[b]]`` with
        ``j' = W - 1 - j`` when ``flip[b]`` else ``j``; padded pixels are ``fill``.
    """
    xp = namespace(x, rows)
    dev = _device(x)
    if dy is None and dx is None and flip is None:
        return xp.take(x, rows, axis=0)  # (B, C, H, W)
    n, c, h, w = x.shape
    b = rows.shape[0]
    i = xp.arange(h, dtype=xp.int64, device=dev)  # (H,)
    j = xp.arange(w, dtype=xp.int64, device=dev)  # (W,)
    shift_y = dy - pad if dy is not None else xp.zeros((b,), dtype=xp.int64, device=dev)
    shift_x = dx - pad if dx is not None else xp.zeros((b,), dtype=xp.int64, device=dev)
    cols = j[None, :]  # (1, W)
    if flip is not None:
        cols = xp.where(flip[:, None], (w - 1) - j[None, :], j[None, :])  # (B, W)
    src_r = i[None, :] + shift_y[:, None]  # (B, H)
    src_c = cols + shift_x[:, None]  # (B, W)
    valid = ((src_r >= 0) & (src_r < h))[:, :, None] & ((src_c >= 0) & (src_c < w))[:, None, :]
    # clamped with minimum/maximum, not clip: array-api-compat's CuPy clip indexes with
    # boolean masks, and every such index costs a device-to-host sync
    src_r = xp.minimum(xp.maximum(src_r, 0), h - 1)  # (B, H)
    src_c = xp.minimum(xp.maximum(src_c, 0), w - 1)  # (B, W)
    ch = xp.arange(c, dtype=xp.int64, device=dev)  # (C,)
    flat = (rows[:, None, None, None] * c + ch[None, :, None, None]) * h  # (B, C, 1, 1)
    flat = (flat + src_r[:, None, :, None]) * w + src_c[:, None, None, :]  # (B, C, H, W)
    out = xp.take(xp.reshape(x, (n * c * h * w,)), xp.reshape(flat, (b * c * h * w,)), axis=0)
    out = xp.reshape(out, (b, c, h, w))  # (B, C, H, W)
    if fill is None:
        fill = xp.zeros((), dtype=x.dtype, device=dev)
    return xp.where(valid[:, None, :, :], out, fill)


@dataclass(frozen=True)
class EpochPlan:
    """One epoch's host-side randomness.

    ``order`` (N,) int64: sample indices in visiting order. ``dy``, ``dx`` (N,) int64 or None:
    crop corners of the k-th visited sample. ``flip`` (N,) bool or None.
    """

    order: np.ndarray
    dy: np.ndarray | None
    dx: np.ndarray | None
    flip: np.ndarray | None


class Loader:
    """Mini-batches of an :class:`ArrayDataset` on a backend's device.

    Parameters
    ----------
    dataset : ArrayDataset
    batch_size : int
    backend : Backend or device string, optional
        Where the batches go (default: NumPy on the CPU).
    dtype : {"float32", "float64"}
    shuffle : bool
        A new permutation each epoch (drawn by :meth:`plan_epoch`).
    crop_pad : int
        Random crops from the image zero-padded by this many pixels (0: off).
    hflip : bool
        Random horizontal flips.
    drop_last : bool
        Drop the last, smaller batch.
    resident : bool or "auto"
        Keep the normalized dataset on the device (see the module docstring).
    pad_pixel : int, optional
        The raw pixel value (0..255) the crop padding stands for; ``None`` (default): the
        dataset mean (0 after normalization).

    Examples
    --------
    >>> import numpy as np
    >>> from sdnet.data import ArrayDataset, Loader
    >>> images = np.zeros((300, 3, 32, 32), dtype=np.uint8)
    >>> labels = np.zeros(300, dtype=np.int64)
    >>> ds = ArrayDataset(images, labels, "toy", "train", 10, (0.5,) * 3, (0.25,) * 3)
    >>> loader = Loader(ds, 128, "cpu", shuffle=True, crop_pad=4, hflip=True)
    >>> plan = loader.plan_epoch(np.random.default_rng(0))
    >>> for x, y in loader.batches(plan, start=0):  # x (B, C, H, W), y (B,) int64
    ...     print(tuple(x.shape), tuple(y.shape))
    (128, 3, 32, 32) (128,)
    (128, 3, 32, 32) (128,)
    (44, 3, 32, 32) (44,)
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int = 128,
        backend: Backend | str | None = None,
        dtype: str = "float32",
        shuffle: bool = True,
        crop_pad: int = 0,
        hflip: bool = False,
        drop_last: bool = False,
        resident: bool | str = "auto",
        pad_pixel: int | None = None,
    ) -> None:
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(crop_pad, (int, np.integer)) or crop_pad < 0:
            raise ValueError(f"crop_pad must be a non-negative integer, got {crop_pad!r}")
        if resident not in (True, False, "auto"):
            raise ValueError(f"resident must be True, False or 'auto', got {resident!r}")
        if pad_pixel is not None and (
            isinstance(pad_pixel, bool)
            or not isinstance(pad_pixel, (int, np.integer))
            or not 0 <= pad_pixel <= 255
        ):
            raise ValueError(f"pad_pixel must be a pixel value 0..255 or None, got {pad_pixel!r}")
        if len(dataset) == 0:
            raise ValueError("cannot load batches from an empty dataset")
        # again here: a dataset that is not an ArrayDataset, or whose labels changed in place
        check_labels(dataset.labels, dataset.num_classes, f"{dataset.name} {dataset.split}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.backend = get_backend(backend if backend is not None else "cpu")
        self.dtype = self.backend.dtype(dtype)
        self._np_dtype = np.dtype(dtype)
        self.shuffle = bool(shuffle)
        self.crop_pad = int(crop_pad)
        self.hflip = bool(hflip)
        self.drop_last = bool(drop_last)
        c = dataset.shape[0]
        self._host_mean = np.asarray(dataset.mean, dtype=self._np_dtype).reshape(c, 1, 1)
        self._host_std = np.asarray(dataset.std, dtype=self._np_dtype).reshape(c, 1, 1)
        self._host_fill = None  # (1, C, 1, 1): a padded pixel's normalized value
        if pad_pixel is not None:
            fill = normalize(np.full((1, c, 1, 1), pad_pixel, dtype=np.uint8), self._host_mean,
                             self._host_std, self._np_dtype)  # fmt: skip
            self._host_fill = fill
        self.resident = self._decide_resident(resident)
        self._x: Array = None  # the normalized dataset on the device, made on first use
        self._y: Array = None

    @property
    def nbytes(self) -> int:
        """Bytes of the normalized dataset in ``dtype``."""
        return int(self.dataset.images.size) * self._np_dtype.itemsize

    def _decide_resident(self, resident: bool | str) -> bool:
        if resident != "auto":
            return bool(resident)
        free = self.backend.memory_available()
        if free is None:  # host memory: no float copy of a large set (SVHN train + extra)
            return self.nbytes <= HOST_RESIDENT_MAX_BYTES
        return self.nbytes < free // 2

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def plan_epoch(self, rng: np.random.Generator | None) -> EpochPlan:
        """Draw one epoch's permutation, crop offsets and flips on the host from ``rng``."""
        n = len(self.dataset)
        if rng is None:
            if self.shuffle or self.crop_pad or self.hflip:
                raise ValueError("plan_epoch needs an rng when shuffling or augmenting")
            return EpochPlan(np.arange(n, dtype=np.int64), None, None, None)
        order = rng.permutation(n).astype(np.int64) if self.shuffle else np.arange(n)
        dy = dx = flip = None
        if self.crop_pad:
            offsets = rng.integers(0, 2 * self.crop_pad + 1, size=(2, n), dtype=np.int64)
            dy, dx = offsets[0], offsets[1]  # (N,) each
        if self.hflip:
            flip = rng.random(n) < 0.5  # (N,)
        return EpochPlan(order.astype(np.int64), dy, dx, flip)

    def _device_dataset(self) -> tuple[Array, Array]:
        if self._x is None:
            be = self.backend
            x = be.asarray(self.dataset.images)  # (N, C, H, W) uint8 on the device
            mean = be.asarray(self._host_mean, self.dtype)
            std = be.asarray(self._host_std, self.dtype)
            self._x = normalize(x, mean, std, self.dtype)
            self._y = be.asarray(self.dataset.labels)
        return self._x, self._y

    def batches(self, plan: EpochPlan, start: int = 0) -> Iterator[tuple[Array, Array]]:
        """Yield ``(x, y)`` for batches ``start, start + 1, ...`` of ``plan``.

        ``x``: (B, C, H, W) ``dtype`` normalized on the backend's device; ``y``: (B,) int64.
        """
        nb = len(self)
        if not isinstance(start, (int, np.integer)) or not 0 <= start <= nb:
            raise ValueError(f"start must be a batch index in 0..{nb}, got {start!r}")
        if plan.order.shape != (len(self.dataset),):
            raise ValueError("this plan was drawn for a dataset of another size")
        if self.resident:
            yield from self._resident_batches(plan, start)
        else:
            yield from self._host_batches(plan, start)

    def _resident_batches(self, plan: EpochPlan, start: int) -> Iterator[tuple[Array, Array]]:
        """Gather each batch on the device from the resident dataset (one host-to-device copy
        of the epoch's plan). The device is made current for each batch's work only, never
        across a ``yield``: the caller's code runs with whatever device it had."""
        be, pad = self.backend, self.crop_pad
        with be.activate():
            x, y = self._device_dataset()
            fill = None if self._host_fill is None else be.asarray(self._host_fill, self.dtype)
            order = be.asarray(plan.order)  # the epoch's plan crosses to the device once
            aug = [be.asarray(a) if a is not None else None for a in (plan.dy, plan.dx, plan.flip)]
        for k in range(start, len(self)):
            with be.activate():
                sl = slice(k * self.batch_size, min((k + 1) * self.batch_size, order.shape[0]))
                rows = order[sl]  # (B,)
                dy, dx, flip = (a[sl] if a is not None else None for a in aug)
                batch = (
                    gather_augment(x, rows, dy, dx, flip, pad, fill),
                    be.xp.take(y, rows, axis=0),
                )
            yield batch

    def _host_batches(self, plan: EpochPlan, start: int) -> Iterator[tuple[Array, Array]]:
        """Gather and normalize each batch on the host, then copy it to the device once."""
        pad, aug = self.crop_pad, (plan.dy, plan.dx, plan.flip)
        images, labels = self.dataset.images, self.dataset.labels
        for k in range(start, len(self)):
            sl = slice(k * self.batch_size, min((k + 1) * self.batch_size, plan.order.shape[0]))
            rows = plan.order[sl]  # (B,)
            batch = normalize(np.take(images, rows, axis=0), self._host_mean, self._host_std,
                              self._np_dtype)  # fmt: skip
            local = np.arange(rows.shape[0], dtype=np.int64)  # (B,)
            dy, dx, flip = (a[sl] if a is not None else None for a in aug)
            out = gather_augment(batch, local, dy, dx, flip, pad, self._host_fill)  # (B, C, H, W)
            yield self.backend.asarray(out, self.dtype), self.backend.asarray(labels[rows])
