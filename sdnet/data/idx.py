"""IDX files (MNIST, Fashion-MNIST), gzip or raw, validated before anything is allocated.

Header: two zero bytes, a type code (0x08 = unsigned byte, the only one these datasets use),
the number of dimensions, then one big-endian uint32 per dimension. The payload must hold
exactly prod(dims) bytes: a truncated, padded or corrupt file is an :class:`IDXError` that names
the file, never a crash inside NumPy.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from sdnet.data.errors import DataError

__all__ = ["IDXError", "read_idx", "load_mnist", "find_idx", "MNIST_FILES"]

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MAX_BYTES = 1 << 31  # no IDX dataset sdnet reads is anywhere near 2 GiB


class IDXError(DataError):
    """An IDX file is missing, truncated or not what it claims to be."""


def _open(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=_Limited(raw)) as fh:
                return fh.read(_MAX_BYTES + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise IDXError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    return raw


class _Limited:
    """A minimal read-only file object over bytes (keeps gzip off the filesystem twice)."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else min(len(self._data), self._pos + n)
        out = self._data[self._pos : end]
        self._pos = end
        return out


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a ``uint8`` array of its declared shape."""
    path = Path(path)
    if not path.is_file():
        raise IDXError(f"{path}: no such file")
    data = _open(path)
    if len(data) > _MAX_BYTES:
        raise IDXError(f"{path}: larger than {_MAX_BYTES} bytes, refusing to read")
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IDXError(f"{path}: not an IDX file (bad magic number)")
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        raise IDXError(f"{path}: IDX type 0x{dtype_code:02x} unsupported (expected 0x08, uint8)")
    if not 1 <= ndim <= 4 or len(data) < 4 + 4 * ndim:
        raise IDXError(f"{path}: bad IDX header ({ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    count = math.prod(dims)
    payload = len(data) - 4 - 4 * ndim
    if count != payload:
        raise IDXError(
            f"{path}: header declares {dims} = {count} bytes of data but the file holds {payload} "
            "(truncated or corrupt)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find_idx(directory: str | os.PathLike[str], stem: str) -> Path | None:
    """The file holding IDX ``stem`` in ``directory`` (``stem.gz``, ``stem`` or ``stem`` with
    ``.idx``), or ``None``."""
    directory = Path(directory)
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (directory / name).is_file():
            return directory / name
    return None


def _find(directory: Path, stem: str) -> Path:
    path = find_idx(directory, stem)
    if path is None:
        raise IDXError(f"{directory}: neither {stem}.gz nor {stem} found")
    return path


def load_mnist(
    directory: str | os.PathLike[str], split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of an MNIST-format directory."""
    if split not in MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = Path(directory)
    img_stem, lbl_stem = MNIST_FILES[split]
    images = read_idx(_find(directory, img_stem))
    labels = read_idx(_find(directory, lbl_stem))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise IDXError(
            f"{directory}: {split} images {images.shape} and labels {labels.shape} do not match"
        )
    if labels.size and labels.max() > 9:
        raise IDXError(f"{directory}: label {labels.max()} out of range 0..9")
    return images, labels.astype(np.int64)
