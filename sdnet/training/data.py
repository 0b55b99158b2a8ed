"""The data of a training run: splits, the validation hold-out, augmentation and loaders.

The augmentation policy: each dataset has its own default (:attr:`DatasetInfo.default_augment`:
crops and flips for CIFAR, none for digits); ``augment=True`` turns on random crops padded by
the dataset's :attr:`~DatasetInfo.augment_crop_pad` (with the dataset's background,
:attr:`~DatasetInfo.pad_pixel`: black for the digit datasets, the mean for CIFAR) and, where
mirror images are still images of the same class (:attr:`~DatasetInfo.hflip_allowed`:
clothes, not digits), flips; ``augment=False`` turns both off;
``crop_pad`` sets the padding (0 turns crops off) unless augmentation is off.

The training set is the concatenation of ``train_splits`` (SVHN's ``train`` and ``extra``),
cut to its first ``limit_train`` images. The validation split is carved from it: ``val_split``
images at random, or ``val_per_class`` images of every class from each training split (the
paper's SVHN protocol); both are drawn from a stream of their own (the seed's 4th child), so
they never move when other options change. Each set is copied once into its own array
(:func:`~sdnet.data.gather_rows`), never as floating point.

Every split is scaled as ``normalize`` says (:meth:`~sdnet.data.ArrayDataset.scaled`): the
statistics travel with the datasets into the loaders and, through the run, into the saved
weights' ``extra`` (``mean``, ``std``, ``normalize``), where evaluation and prediction find them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sdnet.config import ConfigError
from sdnet.data import (
    DATASETS,
    ArrayDataset,
    Loader,
    gather_rows,
    load_dataset,
    split_per_class,
    split_train_val,
)

__all__ = ["TrainData", "load_training_data", "augmentation"]


@dataclass
class TrainData:
    """The splits of one run and their loaders (``eval_loaders``: ``"test"`` and ``"val"``)."""

    train: ArrayDataset
    test: ArrayDataset
    val: ArrayDataset | None
    loader: Loader
    eval_loaders: dict[str, Loader]
    augment: dict[str, Any]


def augmentation(cfg: Any) -> dict[str, Any]:
    """``{"crop_pad": int, "hflip": bool}`` for the run (see the module docstring)."""
    info = DATASETS[cfg.dataset]
    aug = dict(info.default_augment)
    if cfg.augment is not None:
        on = bool(cfg.augment)
        aug = {"crop_pad": info.augment_crop_pad if on else 0, "hflip": on and info.hflip_allowed}
    if cfg.crop_pad is not None:
        aug["crop_pad"] = cfg.crop_pad if cfg.augment is not False else 0
    return aug


def _splits(cfg: Any, bars: bool) -> tuple[ArrayDataset, ArrayDataset, ArrayDataset | None]:
    kw: dict[str, Any] = dict(data_dir=cfg.data_dir, download=cfg.download, progress=bars)
    parts = [load_dataset(cfg.dataset, split=s, **kw) for s in cfg.train_splits]
    test = load_dataset(cfg.dataset, split="test", **kw)
    if cfg.limit_test:
        test = test.subset(np.arange(min(cfg.limit_test, len(test))))
    name = "+".join(cfg.train_splits)
    total = sum(len(p) for p in parts)
    n = min(cfg.limit_train, total) if cfg.limit_train else total  # the first n rows
    if not cfg.val_split and not cfg.val_per_class:
        return gather_rows(parts, np.arange(n), name), test, None
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(3,)))
    if cfg.val_per_class:
        labels = np.concatenate([p.labels for p in parts])[:n]  # (n,)
        which = np.repeat(np.arange(len(parts)), [len(p) for p in parts])[:n]  # (n,)
        try:
            tr, va = split_per_class(labels, which, cfg.val_per_class, parts[0].num_classes, rng)
        except ValueError as exc:
            raise ConfigError(f"val_per_class={cfg.val_per_class} does not fit: {exc}") from None
    else:
        size = int(cfg.val_split) if cfg.val_split >= 1 else cfg.val_split
        tr, va = split_train_val(n, size, rng)
    return gather_rows(parts, tr, name), test, gather_rows(parts, va, name)


def load_training_data(cfg: Any, backend: Any, bars: bool) -> TrainData:
    """Find and read the dataset of ``cfg``, hold out the validation split, make the loaders."""
    train, test, val = (
        None if ds is None else ds.scaled(cfg.normalize) for ds in _splits(cfg, bars)
    )
    assert train is not None and test is not None
    aug = augmentation(cfg)
    common: dict[str, Any] = dict(backend=backend, dtype=cfg.dtype)
    pad_pixel = DATASETS[cfg.dataset].pad_pixel  # what a crop's padding looks like
    loader = Loader(
        train, batch_size=cfg.batch_size, shuffle=True, pad_pixel=pad_pixel, **common, **aug
    )
    evals = {"test": Loader(test, batch_size=cfg.eval_batch_size, shuffle=False, **common)}
    if val is not None:
        evals["val"] = Loader(val, batch_size=cfg.eval_batch_size, shuffle=False, **common)
    return TrainData(train, test, val, loader, evals, aug)
