"""Datasets (host side) and mini-batches (device side).

``load_dataset(name, split)`` finds, downloads (with SHA-256 checks) and validates MNIST,
Fashion-MNIST, CIFAR-10 and CIFAR-100; ``split_train_val`` makes a seeded validation split;
``Loader`` turns a dataset into normalized, optionally augmented batches on a backend's device.
See docs/data.md.
"""

from sdnet.data.cifar import load_cifar, read_cifar_batch
from sdnet.data.datasets import (
    DATASETS,
    ArrayDataset,
    DatasetInfo,
    check_labels,
    load_dataset,
    split_train_val,
)
from sdnet.data.errors import ChecksumError, DataError, DataNotFound
from sdnet.data.idx import IDXError, load_mnist, read_idx
from sdnet.data.loader import EpochPlan, Loader, gather_augment, normalize
from sdnet.data.sources import cache_dir, locate

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DatasetInfo",
    "check_labels",
    "load_dataset",
    "split_train_val",
    "locate",
    "cache_dir",
    "DataError",
    "DataNotFound",
    "ChecksumError",
    "IDXError",
    "load_mnist",
    "read_idx",
    "load_cifar",
    "read_cifar_batch",
    "Loader",
    "EpochPlan",
    "gather_augment",
    "normalize",
]
