"""IDX files (MNIST, Fashion-MNIST), gzip or raw, validated before anything is allocated.

Header: two zero bytes, a type code (0x08 = unsigned byte, the only one these datasets use),
the number of dimensions, then one big-endian uint32 per dimension. The payload must hold
exactly prod(dims) bytes: a truncated, padded or corrupt file is an :class:`IDXError` that names
the file, never a crash inside NumPy.

The header is read and checked first. A header declaring more than 2 GiB is refused before the
payload is read; a raw file's size is compared with the declared size before it is read; a gzip
stream is decompressed in 1 MiB pieces and never past the declared size (plus one byte, to
tell a longer stream), so a file whose header lies, or a gzip bomb, cannot make sdnet allocate
more than the data it really holds. Gzip's CRC-32 and length are checked at the end of the stream.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, NoReturn

import numpy as np

from sdnet.data.errors import DataError

__all__ = ["IDXError", "read_idx", "load_mnist", "find_idx", "MNIST_FILES"]

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MAX_BYTES = 1 << 31  # no IDX dataset sdnet reads is anywhere near 2 GiB
_CHUNK = 1 << 20


class IDXError(DataError):
    """An IDX file is missing, truncated or not what it claims to be."""


def _read_upto(fh: BinaryIO, n: int) -> bytes:
    """At most ``n`` bytes, read in pieces (a short stream never costs ``n`` bytes of memory)."""
    parts, got = [], 0
    while got < n:
        part = fh.read(min(_CHUNK, n - got))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _parse(path: Path, fh: BinaryIO, size: int | None) -> np.ndarray:
    """The array in stream ``fh``; ``size`` is the stream's length when known (raw files)."""
    head = _read_upto(fh, 4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise IDXError(f"{path}: not an IDX file (bad magic number)")
    dtype_code, ndim = head[2], head[3]
    if dtype_code != 0x08:
        raise IDXError(f"{path}: IDX type 0x{dtype_code:02x} unsupported (expected 0x08, uint8)")
    raw_dims = _read_upto(fh, 4 * ndim) if 1 <= ndim <= 4 else b""
    if not 1 <= ndim <= 4 or len(raw_dims) < 4 * ndim:
        raise IDXError(f"{path}: bad IDX header ({ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    count = math.prod(dims)
    if count > _MAX_BYTES:
        raise IDXError(
            f"{path}: header declares {dims} = {count} bytes, more than sdnet reads "
            f"({_MAX_BYTES}); refused before reading (truncated, corrupt or not a dataset)"
        )
    if size is not None and size - 4 - 4 * ndim != count:  # raw file: known before reading
        _mismatch(path, dims, count, str(size - 4 - 4 * ndim))
    data = _read_upto(fh, count + 1)
    if size is None and len(data) == count:
        data += fh.read(1)  # reach the end: gzip checks its CRC-32 and length there
    if len(data) != count:
        _mismatch(path, dims, count, f"more than {count}" if len(data) > count else str(len(data)))
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _mismatch(path: Path, dims: tuple[int, ...], count: int, held: str) -> NoReturn:
    raise IDXError(
        f"{path}: header declares {dims} = {count} bytes of data but the file holds {held} "
        "(truncated or corrupt)"
    )


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a ``uint8`` array of its declared shape.

    Raises
    ------
    IDXError
        A missing, truncated, padded, corrupt or oversized file (checked from its header,
        before the payload is read), naming ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise IDXError(f"{path}: no such file")
    try:
        with path.open("rb") as raw:
            if raw.read(2) != b"\x1f\x8b":
                raw.seek(0)
                return _parse(path, raw, os.fstat(raw.fileno()).st_size)
            raw.seek(0)
            try:
                with gzip.GzipFile(fileobj=raw) as fh:
                    return _parse(path, fh, None)  # type: ignore[arg-type]
            except (OSError, EOFError, zlib.error) as exc:
                raise IDXError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    except OSError as exc:
        raise IDXError(f"{path}: cannot read ({exc.strerror or exc})") from exc


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
