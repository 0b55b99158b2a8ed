"""Datasets (host side) and mini-batches (device side).

``load_dataset(name, split)`` finds, downloads (with SHA-256 checks) and validates MNIST,
Fashion-MNIST, CIFAR-10, CIFAR-100 and SVHN (with SciPy); ``split_train_val`` and
``split_per_class`` make seeded validation splits, ``gather_rows`` joins splits;
``Loader`` turns a dataset into normalized, optionally augmented batches on a backend's device.
See docs/data.md.
"""

from sdnet.data.cifar import load_cifar, read_cifar_batch
from sdnet.data.datasets import (
    DATASETS,
    NORMALIZATIONS,
    ArrayDataset,
    DatasetInfo,
    check_labels,
    gather_rows,
    input_statistics,
    load_dataset,
    split_per_class,
    split_train_val,
)
from sdnet.data.errors import ChecksumError, DataError, DataNotFound
from sdnet.data.idx import IDXError, load_mnist, read_idx
from sdnet.data.loader import EpochPlan, Loader, gather_augment, normalize
from sdnet.data.sources import cache_dir, locate
from sdnet.data.svhn import load_svhn, read_svhn_mat

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DatasetInfo",
    "check_labels",
    "NORMALIZATIONS",
    "input_statistics",
    "load_dataset",
    "split_train_val",
    "split_per_class",
    "gather_rows",
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
    "load_svhn",
    "read_svhn_mat",
    "Loader",
    "EpochPlan",
    "gather_augment",
    "normalize",
]
