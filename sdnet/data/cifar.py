"""CIFAR-10 / CIFAR-100 "python version" batches, read without trusting the pickle.

The batches are Python 2 pickles of a dict ``{b"data": uint8 (N, 3072), b"labels": [...],
...}`` (CIFAR-100: ``b"fine_labels"`` and ``b"coarse_labels"``). Loading a pickle runs whatever
callables it names, so :class:`SafeUnpickler` resolves only the NumPy names needed to rebuild an
array (``_reconstruct``, ``ndarray``, ``dtype``, and NumPy 2's ``_frombuffer``) plus
``_codecs.encode`` restricted to latin-1 text (how Python 3 stores bytes at protocol 2, for
batches re-saved by Python 3; the original Python 2 files do not need it), and refuses every
other global with a :class:`~sdnet.data.errors.DataError` naming the file; a
hostile pickle (one whose reduce calls ``os.system`` or ``eval``) fails before anything runs.
The result is then checked: dict keys, ``uint8`` data of shape (N, 3072), one label per row,
labels in range, and the official counts.

Before unpickling, the opcode stream is walked once (:func:`pickletools.genops`, which runs
nothing): every length it declares must fit in the file, since the unpickler allocates a
declared string before reading it, so a small file cannot claim gigabytes.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from sdnet.data.errors import DataError

__all__ = ["SafeUnpickler", "read_cifar_batch", "load_cifar", "CIFAR_FILES", "CIFAR_SUBDIRS"]

CIFAR_FILES: dict[str, dict[str, tuple[str, ...]]] = {
    "cifar10": {
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test": ("test_batch",),
    },
    "cifar100": {"train": ("train",), "test": ("test",)},
}
CIFAR_SUBDIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_LABEL_KEY = {"cifar10": b"labels", "cifar100": b"fine_labels"}
_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
_ROW = 3 * 32 * 32
_MAX_BYTES = 1 << 30  # the largest real batch (cifar-100 train) is about 155 MB


def _allowed() -> dict[tuple[str, str], Any]:
    """(module, name) -> object: the only globals a CIFAR pickle may name."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # NumPy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    out: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core", "numpy._core"):
        out[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        out[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer  # type: ignore[attr-defined]
    out[("numpy", "ndarray")] = np.ndarray
    out[("numpy", "dtype")] = np.dtype
    out[("_codecs", "encode")] = _latin1_bytes
    return out


def _latin1_bytes(text: Any, encoding: str = "latin1") -> bytes:
    """What ``_codecs.encode`` does in protocol-2 pickles written by Python 3 (bytes objects
    are stored as latin-1 text): only that, never another codec."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(
            f"_codecs.encode allowed only for latin-1 text, not {encoding!r}"
        )
    return text.encode("latin1")


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild dicts, lists, bytes and NumPy arrays, and nothing else.

    Parameters
    ----------
    file : binary file object
    path : path used in error messages
    """

    def __init__(self, file: Any, path: str | os.PathLike[str]) -> None:
        super().__init__(file, encoding="bytes")
        self._path = str(path)
        self._allowed = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._path}: refusing to load a pickle that names {module}.{name}; a CIFAR "
                "batch only holds dicts, lists, bytes and NumPy uint8 arrays (file corrupt or "
                "not a CIFAR batch; do not load it with plain pickle)"
            ) from None


def read_cifar_batch(
    path: str | os.PathLike[str], name: str = "cifar10"
) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR batch file into images (N, 3, 32, 32) uint8 and labels (N,) int64.

    Raises :class:`DataError` naming ``path`` for anything but a well-formed batch.
    """
    path = Path(path)
    if name not in _LABEL_KEY:
        raise ValueError(f"name must be 'cifar10' or 'cifar100', got {name!r}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size > _MAX_BYTES:
        raise DataError(f"{path}: larger than {_MAX_BYTES} bytes, not a CIFAR batch")
    try:
        data = path.read_bytes()
        try:  # every declared length fits in the file (nothing is run or allocated here)
            with warnings.catch_warnings():  # a corrupt STRING opcode's bad escapes
                warnings.simplefilter("ignore", DeprecationWarning)
                for _ in pickletools.genops(data):
                    pass
        except ValueError as exc:
            raise DataError(f"{path}: not a readable CIFAR batch (corrupt pickle: {exc})") from exc
        obj = SafeUnpickler(io.BytesIO(data), path).load()
    except DataError:
        raise
    except Exception as exc:  # truncated or garbled pickle streams raise many types
        raise DataError(
            f"{path}: not a readable CIFAR batch ({type(exc).__name__}: {exc})"
        ) from exc
    label_key = _LABEL_KEY[name]
    if not isinstance(obj, dict) or b"data" not in obj or label_key not in obj:
        keys = sorted(obj, key=repr) if isinstance(obj, dict) else type(obj).__name__
        raise DataError(f"{path}: expected a dict with b'data' and {label_key!r}, got {keys}")
    data, labels = obj[b"data"], obj[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data)
        raise DataError(f"{path}: b'data' must be a uint8 (N, {_ROW}) array, got {what}")
    if data.shape[1] != _ROW:
        raise DataError(f"{path}: b'data' has rows of {data.shape[1]} bytes, expected {_ROW}")
    if not isinstance(labels, (list, np.ndarray)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels
    ):
        raise DataError(f"{path}: {label_key!r} must be a list of integers")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)  # (N,)
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    k = _NUM_CLASSES[name]
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise DataError(f"{path}: labels span {labels.min()}..{labels.max()}, expected 0..{k - 1}")
    return data.reshape(-1, 3, 32, 32), labels  # (N, 3, 32, 32), rows are R, G, B planes


def batch_dir(directory: str | os.PathLike[str], name: str, split: str | None) -> Path | None:
    """``directory`` or its ``cifar-*-py*`` subfolder when it holds ``split``'s batch files
    (every split's when ``split`` is None), else ``None``."""
    directory = Path(directory)
    splits = [split] if split is not None else list(CIFAR_FILES[name])
    wanted = [f for s in splits for f in CIFAR_FILES[name][s]]
    for d in (directory, directory / CIFAR_SUBDIRS[name]):
        if all((d / f).is_file() for f in wanted):
            return d
    return None


def load_cifar(
    directory: str | os.PathLike[str],
    name: str = "cifar10",
    split: str = "train",
    expected: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of a CIFAR directory.

    ``directory`` holds the batch files, directly or in the archive's subfolder. ``expected``
    is the number of images the split must hold (the official count by default).
    """
    if name not in CIFAR_FILES:
        raise ValueError(f"name must be 'cifar10' or 'cifar100', got {name!r}")
    if split not in CIFAR_FILES[name]:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    where = batch_dir(directory, name, split)
    if where is None:
        files = ", ".join(CIFAR_FILES[name][split])
        raise DataError(
            f"{directory}: {name} {split} files ({files}) not found there nor in "
            f"{CIFAR_SUBDIRS[name]}/"
        )
    parts = [read_cifar_batch(where / f, name) for f in CIFAR_FILES[name][split]]
    images = np.concatenate([p[0] for p in parts])  # (N, 3, 32, 32)
    labels = np.concatenate([p[1] for p in parts])  # (N,)
    if expected is None:
        expected = 50000 if split == "train" else 10000
    if images.shape[0] != expected:
        raise DataError(
            f"{where}: {name} {split} holds {images.shape[0]} images, expected {expected} "
            "(incomplete or wrong files)"
        )
    return images, labels
