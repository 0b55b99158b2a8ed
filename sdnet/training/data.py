"""The data of a training run: splits, the validation hold-out, augmentation and loaders.

The augmentation policy: each dataset has its own default (:attr:`DatasetInfo.default_augment`:
crops and flips for CIFAR, none for digits); ``augment=True`` turns on random crops padded by
the dataset's :attr:`~DatasetInfo.augment_crop_pad` and, where mirror images are still images of
the same class (:attr:`~DatasetInfo.hflip_allowed`), flips; ``augment=False`` turns both off;
``crop_pad`` sets the padding (0 turns crops off) unless augmentation is off.

The validation split is drawn from a stream of its own (the seed's 4th child), so it never moves
when other options change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sdnet.data import DATASETS, ArrayDataset, Loader, load_dataset, split_train_val

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
    train = load_dataset(cfg.dataset, split="train", **kw)
    test = load_dataset(cfg.dataset, split="test", **kw)
    if cfg.limit_train:
        train = train.subset(np.arange(min(cfg.limit_train, len(train))))
    if cfg.limit_test:
        test = test.subset(np.arange(min(cfg.limit_test, len(test))))
    if not cfg.val_split:
        return train, test, None
    size = int(cfg.val_split) if cfg.val_split >= 1 else cfg.val_split
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(3,)))
    tr, va = split_train_val(len(train), size, rng)
    return train.subset(tr), test, train.subset(va)


def load_training_data(cfg: Any, backend: Any, bars: bool) -> TrainData:
    """Find and read the dataset of ``cfg``, hold out the validation split, make the loaders."""
    train, test, val = _splits(cfg, bars)
    aug = augmentation(cfg)
    common: dict[str, Any] = dict(backend=backend, dtype=cfg.dtype)
    loader = Loader(train, batch_size=cfg.batch_size, shuffle=True, **common, **aug)
    evals = {"test": Loader(test, batch_size=cfg.eval_batch_size, shuffle=False, **common)}
    if val is not None:
        evals["val"] = Loader(val, batch_size=cfg.eval_batch_size, shuffle=False, **common)
    return TrainData(train, test, val, loader, evals, aug)
