"""Datasets (host side): IDX readers for MNIST-style files."""

from sdnet.data.idx import IDXError, load_mnist, read_idx

__all__ = ["IDXError", "load_mnist", "read_idx"]
