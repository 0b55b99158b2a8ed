"""SVHN's format-2 ("cropped digits") ``.mat`` files, read with SciPy after a structural check.

Each file (``train_32x32.mat``, ``test_32x32.mat``, ``extra_32x32.mat``) is a MATLAB 5 file
holding two variables: ``X``, uint8 (32, 32, 3, N), MATLAB's column-major (height, width,
channel, image), and ``y``, (N, 1) labels 1..10, where 10 stands for the digit 0. sdnet returns
images (N, 3, 32, 32) uint8 and labels (N,) int64 in 0..9 (10 -> 0).

SciPy (``pip install 'sdnet[svhn]'``) reads the arrays. Before it is called, the file's
structure is walked without reading any array (:func:`mat_variables`): the 128-byte MATLAB 5
header, then every top-level element's tag, each of which must fit in the file; a compressed
element has only its first bytes inflated, enough to read the variable's header (class,
dimensions, name). ``X`` must then be uint8 with exactly the split's official shape and ``y``
numeric with one label per image, each declaring no more bytes than that shape needs, so a
truncated, padded, corrupt or forged file (a header claiming terabytes, a zlib bomb, a
MATLAB 7.3/HDF5 file, anything that is not a ``.mat`` file) is a
:class:`~sdnet.data.errors.DataError` naming the file before SciPy allocates anything of a
size the file does not justify. After reading, the arrays are checked again (dtype, shape,
whole-number labels in 1..10).

Memory: SciPy inflates a compressed ``X`` into one buffer; the (N, 3, 32, 32) copy is made
once from it, so reading ``extra`` (531,131 images, 1.6 GB as uint8) needs about twice that
for a moment, and never a floating-point copy.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdnet.data.errors import DataError

__all__ = ["SVHN_FILES", "MatVariable", "mat_variables", "read_svhn_mat", "load_svhn"]

SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}
_IMAGE = (32, 32, 3)  # MATLAB's (height, width, channel)
_MAX_BYTES = 4 << 30  # the largest official file (extra) is 1.33 GB
_HEADER = 128
_MI_MATRIX, _MI_COMPRESSED, _MI_INT8, _MI_INT32, _MI_UINT32 = 14, 15, 1, 5, 6
_MX_UINT8 = 9
_MX_NUMERIC = range(6, 16)  # double, single, int8 .. uint64
_SLACK = 256  # bytes of a variable's header and padding beyond its data


def _scipy_io() -> Any:
    try:
        import scipy.io
    except ImportError:
        raise ImportError("reading SVHN needs SciPy: pip install 'sdnet[svhn]'") from None
    return scipy.io


@dataclass(frozen=True)
class MatVariable:
    """A top-level variable's header: ``name``, MATLAB class number (``mclass``, 9 = uint8),
    ``dims`` and the bytes its element declares (``nbytes``, uncompressed)."""

    name: str
    mclass: int
    dims: tuple[int, ...]
    nbytes: int


def _unpack(fmt: str, buf: bytes, at: int, path: Path) -> tuple[int, ...]:
    if at + struct.calcsize(fmt) > len(buf):
        raise DataError(f"{path}: a variable's header is cut short (truncated or corrupt)")
    return struct.unpack_from(fmt, buf, at)


def _matrix_header(buf: bytes, order: str, path: Path) -> MatVariable:
    """Parse the start of a miMATRIX element (tag, array flags, dimensions, name)."""
    mdtype, nbytes = _unpack(order + "II", buf, 0, path)
    flag_type, flag_len, flags = _unpack(order + "III", buf, 8, path)
    dim_type, dim_len = _unpack(order + "II", buf, 24, path)
    if mdtype != _MI_MATRIX or flag_type != _MI_UINT32 or flag_len != 8 or dim_type != _MI_INT32:
        raise DataError(f"{path}: a variable's header is not a MATLAB array's (corrupt)")
    if dim_len % 4 or not 8 <= dim_len <= 32:
        raise DataError(f"{path}: a variable declares {dim_len // 4} dimensions (corrupt)")
    dims = _unpack(f"{order}{dim_len // 4}i", buf, 32, path)
    at = 32 + dim_len + (-dim_len % 8)
    (first,) = _unpack(order + "I", buf, at, path)
    if first >> 16:  # small data element: length in the upper half, data in the next 4 bytes
        length, start = first >> 16, at + 4
    else:
        (_, length), start = _unpack(order + "II", buf, at, path), at + 8
    name = buf[start : start + length]
    if len(name) != length or length > 63:
        raise DataError(f"{path}: a variable's name is cut short or too long (corrupt)")
    return MatVariable(name.decode("latin-1"), flags & 0xFF, tuple(dims), nbytes)


def _check_header(path: Path, head: bytes) -> str:
    """The byte order of a MATLAB 5 file, from its 128-byte header."""
    if head.startswith(b"MATLAB 7.3"):
        raise DataError(
            f"{path}: a MATLAB 7.3 (HDF5) file; SVHN's format-2 files are MATLAB 5 files: "
            "use the official ones"
        )
    if len(head) < _HEADER or not head.startswith(b"MATLAB 5.0 MAT-file"):
        raise DataError(f"{path}: not a MATLAB 5 .mat file (no MATLAB 5 header)")
    order = {b"IM": "<", b"MI": ">"}.get(head[126:128])
    if order is None:
        raise DataError(f"{path}: bad byte-order mark in the .mat header (corrupt)")
    return order


def _element_start(fh: Any, mdtype: int, nbytes: int, tag: bytes, path: Path) -> bytes:
    """The first bytes of a top-level element's variable: a compressed element is inflated
    only that far (a zlib bomb is never inflated whole)."""
    if mdtype == _MI_MATRIX:
        return tag + fh.read(min(nbytes, 512))
    if mdtype != _MI_COMPRESSED:
        raise DataError(f"{path}: an element of type {mdtype} is not a MATLAB variable (corrupt)")
    try:
        return zlib.decompressobj().decompress(fh.read(min(nbytes, 4096)), 512)
    except zlib.error as exc:
        raise DataError(f"{path}: corrupt compressed variable ({exc})") from exc


def mat_variables(path: str | os.PathLike[str]) -> dict[str, MatVariable]:
    """The top-level variables of a MATLAB 5 file, found by walking its element tags.

    Nothing but tags and variable headers is read. Raises :class:`DataError` naming ``path``
    for a file that is not a MATLAB 5 file, or whose elements do not fit in it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    size = path.stat().st_size
    if size > _MAX_BYTES:
        raise DataError(f"{path}: {size} bytes, larger than any SVHN file ({_MAX_BYTES})")
    found: dict[str, MatVariable] = {}
    with path.open("rb") as fh:
        order, pos = _check_header(path, fh.read(_HEADER)), _HEADER
        while pos < size:
            fh.seek(pos)
            tag = fh.read(8)
            if len(tag) < 8:
                raise DataError(f"{path}: ends inside an element's tag (truncated)")
            mdtype, nbytes = struct.unpack(order + "II", tag)
            if pos + 8 + nbytes > size:
                raise DataError(
                    f"{path}: an element at byte {pos} declares {nbytes} bytes, past the end "
                    f"of the file ({size} bytes; truncated or corrupt)"
                )
            var = _matrix_header(_element_start(fh, mdtype, nbytes, tag, path), order, path)
            if var.name in found:
                raise DataError(f"{path}: variable {var.name!r} appears twice (corrupt)")
            found[var.name] = var
            pos += 8 + nbytes
    return found


def _check_variables(path: Path, found: dict[str, MatVariable], expected: int | None) -> int:
    """Refuse ``X`` and ``y`` headers that are not SVHN's; the image count."""
    if "X" not in found or "y" not in found:
        raise DataError(f"{path}: holds {sorted(found)}, not SVHN's variables X and y")
    x, y = found["X"], found["y"]
    n = x.dims[-1] if len(x.dims) == 4 else -1
    if x.mclass != _MX_UINT8 or x.dims[:3] != _IMAGE or n < 1:
        raise DataError(f"{path}: X is class {x.mclass} {x.dims}, expected uint8 (32, 32, 3, N)")
    if expected is not None and n != expected:
        raise DataError(f"{path}: X holds {n} images, expected {expected} (wrong or damaged file)")
    if y.mclass not in _MX_NUMERIC or sorted(y.dims) != [1, n]:
        raise DataError(f"{path}: y is class {y.mclass} {y.dims}, expected ({n}, 1) numbers")
    if x.nbytes > n * 3072 + _SLACK or y.nbytes > n * 8 + _SLACK:
        raise DataError(f"{path}: X or y declares more bytes than its shape holds (corrupt)")
    return n


def _labels(path: Path, y: Any, n: int) -> np.ndarray:
    """SVHN's labels 1..10 as 0..9 (10 is the digit 0)."""
    if not isinstance(y, np.ndarray) or y.size != n or not np.issubdtype(y.dtype, np.number):
        raise DataError(f"{path}: y is not {n} numbers")
    y = y.reshape(-1)  # (N,)
    if not np.all(np.isfinite(y)) or np.any(y != np.floor(y)):
        raise DataError(f"{path}: y holds values that are not whole numbers")
    if y.min() < 1 or y.max() > 10:
        raise DataError(f"{path}: labels span {y.min()}..{y.max()}, expected 1..10 (10 = digit 0)")
    return (y.astype(np.int64) % 10).astype(np.int64)


def read_svhn_mat(
    path: str | os.PathLike[str], expected: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 in 0..9 of one SVHN ``.mat`` file.

    ``expected``: the number of images the file must hold. Raises :class:`DataError` naming
    ``path`` for anything but a well-formed SVHN file (see the module docstring), and
    ``ImportError`` saying how to install SciPy when it is missing.
    """
    path = Path(path)
    io = _scipy_io()
    n = _check_variables(path, mat_variables(path), expected)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # SciPy's warnings about a damaged file: refuse it
            mat = io.loadmat(str(path), variable_names=("X", "y"), mat_dtype=False)
    except Exception as exc:  # a damaged stream raises many types inside SciPy
        raise DataError(f"{path}: not a readable SVHN file ({type(exc).__name__}: {exc})") from exc
    x = mat.get("X")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.shape != (*_IMAGE, n):
        raise DataError(f"{path}: X did not read as uint8 (32, 32, 3, {n})")
    labels = _labels(path, mat.get("y"), n)
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # (N, 3, 32, 32)
    return images, labels


def load_svhn(
    directory: str | os.PathLike[str], split: str = "train", expected: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of SVHN ``split`` ("train", "test" or "extra") in ``directory``."""
    if split not in SVHN_FILES:
        raise ValueError(f"split must be one of {', '.join(SVHN_FILES)}, got {split!r}")
    return read_svhn_mat(Path(directory) / SVHN_FILES[split], expected)
