"""SVHN: the format-2 .mat reader against small files made by scipy.io.savemat (good, damaged
and hostile ones), its download from a local HTTP server, train + extra with the per-class
validation set, and the normalization constants against the real files when they are here."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sdnet
from sdnet.config import ConfigError
from sdnet.data import (
    DATASETS,
    ChecksumError,
    DataError,
    gather_rows,
    load_dataset,
    read_svhn_mat,
    sources,
    split_per_class,
)
from sdnet.data.svhn import SVHN_FILES

sio = pytest.importorskip("scipy.io")

COUNTS = {"train": 40, "test": 20, "extra": 60}


def _arrays(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X (32, 32, 3, n) uint8 and y (n, 1) in 1..10, every class present."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)
    return x, y


def _mat(path: Path, n: int, compress: bool = True, seed: int = 0, **override: Any) -> Path:
    x, y = _arrays(n, seed)
    sio.savemat(path, {"X": x, "y": y, **override}, do_compression=compress)
    return path


# -- reading ----------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False], ids=["compressed", "plain"])
def test_reads_images_as_nchw_and_label_10_as_digit_0(tmp_path: Path, compress: bool) -> None:
    x, y = _arrays(12)
    path = _mat(tmp_path / "train_32x32.mat", 12, compress)
    images, labels = read_svhn_mat(path, expected=12)
    assert images.shape == (12, 3, 32, 32) and images.dtype == np.uint8
    assert images.flags.c_contiguous
    np.testing.assert_array_equal(images, x.transpose(3, 2, 0, 1))  # [n, c, h, w] = X[h, w, c, n]
    assert labels.dtype == np.int64 and labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    y64 = _mat(tmp_path / "double.mat", 12, compress, y=y.astype(np.float64))  # MATLAB doubles
    assert read_svhn_mat(y64)[1].tolist() == labels.tolist()


def _rewritten(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _patched(path: Path, at: int, value: bytes) -> Path:
    data = bytearray(path.read_bytes())
    data[at : at + len(value)] = value
    path.write_bytes(bytes(data))
    return path


def _inflated(path: Path, edit: Callable[[bytes], bytes]) -> Path:
    """Rewrite every compressed variable of ``path`` with ``edit`` applied to its inflated
    bytes (a forged file that is still well-formed zlib)."""
    data = path.read_bytes()
    out, pos = bytearray(data[:128]), 128
    while pos < len(data):
        _, nbytes = struct.unpack_from("<II", data, pos)
        body = zlib.compress(edit(zlib.decompress(data[pos + 8 : pos + 8 + nbytes])))
        out += struct.pack("<II", 15, len(body)) + body
        pos += 8 + nbytes
    path.write_bytes(bytes(out))
    return path


def _huge_x(inner: bytes) -> bytes:
    """An X claiming 10**9 images (its dims) in a file holding 12."""
    if b"X" not in inner[40:64]:
        return inner
    return inner[:44] + struct.pack("<i", 10**9) + inner[48:]


def _huge_nbytes(inner: bytes) -> bytes:
    """A variable whose element claims 2 GiB more than it holds."""
    return (
        inner[:4]
        + struct.pack("<I", (2 << 30) + struct.unpack_from("<I", inner, 4)[0])[:4]
        + inner[8:]
    )


DAMAGED: list[tuple[str, Callable[[Path], Path], str]] = [
    ("truncated", lambda p: _rewritten(p, p.read_bytes()[:-5000]), "past the end"),
    ("header-only", lambda p: _rewritten(p, p.read_bytes()[:130]), "truncated"),
    ("empty", lambda p: _rewritten(p, b""), "not a MATLAB 5 .mat file"),
    ("png", lambda p: _rewritten(p, b"\x89PNG\r\n\x1a\n" + bytes(300)), "not a MATLAB 5"),
    ("hdf5", lambda p: _rewritten(p, b"MATLAB 7.3 MAT-file" + bytes(600)), "HDF5"),
    ("byte-order", lambda p: _patched(p, 126, b"XX"), "byte-order"),
    ("corrupt-zlib", lambda p: _patched(p, 400, bytes(64)), "not a readable SVHN file"),
    ("huge-dims", lambda p: _inflated(p, _huge_x), "holds 1000000000 images, expected 12"),
    ("huge-element", lambda p: _inflated(p, _huge_nbytes), "more bytes than its shape"),
]


@pytest.mark.parametrize("name, damage, match", DAMAGED, ids=[d[0] for d in DAMAGED])
def test_damaged_files_are_refused_naming_the_file(
    tmp_path: Path, name: str, damage: Callable[[Path], Path], match: str
) -> None:
    path = damage(_mat(tmp_path / "train_32x32.mat", 12))
    with pytest.raises(DataError, match=match) as info:
        read_svhn_mat(path, expected=12)
    assert str(path) in str(info.value)


WRONG: list[tuple[str, dict[str, Any], str]] = [
    ("float-images", {"X": np.zeros((32, 32, 3, 12))}, "expected uint8 \\(32, 32, 3, N\\)"),
    ("28x28", {"X": np.zeros((28, 28, 3, 12), np.uint8)}, "expected uint8 \\(32, 32, 3, N\\)"),
    ("label-0", {"y": np.zeros((12, 1), np.uint8)}, "labels span 0..0, expected 1..10"),
    ("label-11", {"y": np.full((12, 1), 11.0)}, "labels span 11.0..11.0"),
    ("label-half", {"y": np.full((12, 1), 2.5)}, "not whole numbers"),
    ("label-nan", {"y": np.full((12, 1), np.nan)}, "not whole numbers"),
    ("few-labels", {"y": np.ones((5, 1), np.uint8)}, "expected \\(12, 1\\) numbers"),
    ("text-labels", {"y": "1234"}, "expected \\(12, 1\\) numbers"),
]


@pytest.mark.parametrize("name, override, match", WRONG, ids=[w[0] for w in WRONG])
def test_wrong_shapes_dtypes_and_labels_are_refused(
    tmp_path: Path, name: str, override: dict[str, Any], match: str
) -> None:
    path = _mat(tmp_path / "f.mat", 12, **override)
    with pytest.raises(DataError, match=match):
        read_svhn_mat(path, expected=None if name == "28x28" else 12)


def test_missing_variables_and_wrong_counts_are_refused(tmp_path: Path) -> None:
    only_x = tmp_path / "x.mat"
    sio.savemat(only_x, {"X": _arrays(3)[0]})
    with pytest.raises(DataError, match="not SVHN's variables X and y"):
        read_svhn_mat(only_x)
    with pytest.raises(DataError, match="holds 12 images, expected 73257"):
        read_svhn_mat(_mat(tmp_path / "f.mat", 12), expected=73257)


def test_without_scipy_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _mat(tmp_path / "f.mat", 3)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    monkeypatch.setitem(sys.modules, "scipy", None)
    with pytest.raises(ImportError, match=r"pip install 'sdnet\[svhn\]'"):
        read_svhn_mat(path)


# -- found, downloaded and checked like the other datasets --------------------------------------


@pytest.fixture
def small_svhn(monkeypatch: pytest.MonkeyPatch) -> None:
    """SVHN with the small COUNTS (the real statistics and files are not needed)."""
    monkeypatch.setitem(DATASETS, "svhn", dataclasses.replace(DATASETS["svhn"], counts=COUNTS))


def _write_splits(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for seed, (split, n) in enumerate(COUNTS.items()):
        _mat(directory / SVHN_FILES[split], n, seed=seed)
    return directory


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_svhn: None) -> Iterator[str]:
    """A local HTTP server with small SVHN files whose SHA-256 the sources accept; an empty
    cache and no other place to find SVHN."""
    root = _write_splits(tmp_path / "www" / "svhn")
    src = sources.SOURCES["svhn"]
    remotes = {
        s: dataclasses.replace(
            r, sha256=(hashlib.sha256((root / r.filename).read_bytes()).hexdigest(),)
        )  # fmt: skip
        for s, r in src.remotes.items()
    }
    monkeypatch.setitem(sources.SOURCES, "svhn", dataclasses.replace(src, remotes=remotes))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SDNET_DATA", raising=False)
    monkeypatch.delenv("SDNET_MIRRORS", raising=False)
    monkeypatch.setattr(sources, "SYSTEM_DATA_ROOT", tmp_path / "system")
    handler = functools.partial(_Quiet, directory=str(tmp_path / "www"))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/svhn/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_download_verifies_and_caches_each_split(mirror: str, tmp_path: Path) -> None:
    ds = load_dataset("svhn", "extra", mirrors=[mirror])
    cache = tmp_path / "cache" / "sdnet" / "svhn"
    assert ds.source == cache and ds.images.shape == (60, 3, 32, 32)
    assert sorted(p.name for p in cache.iterdir()) == ["extra_32x32.mat"]  # nothing else, no temp
    assert load_dataset("svhn", "test", mirrors=[mirror]).labels.shape == (20,)
    assert load_dataset("svhn", "extra", download=False).source == cache


def test_a_file_with_another_digest_is_never_kept(
    mirror: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = sources.SOURCES["svhn"]
    bad = dataclasses.replace(src.remotes["train"], sha256=("0" * 64,))
    remotes = {**src.remotes, "train": bad}
    monkeypatch.setitem(sources.SOURCES, "svhn", dataclasses.replace(src, remotes=remotes))
    with pytest.raises(ChecksumError, match="train_32x32.mat"):
        load_dataset("svhn", "train", mirrors=[mirror])
    cache = tmp_path / "cache" / "sdnet" / "svhn"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_the_official_digests_and_sizes_are_declared() -> None:
    remotes = sources.SOURCES["svhn"].remotes
    assert {s: r.filename for s, r in remotes.items()} == SVHN_FILES
    assert remotes["extra"].max_bytes > 1_329_278_602  # the official extra file's size
    assert remotes["train"].max_bytes > 182_040_794 and remotes["test"].max_bytes > 64_275_384


# -- train + extra, and the per-class validation set ---------------------------------------------


def test_split_per_class_takes_k_of_every_class_from_each_part() -> None:
    labels = np.r_[np.arange(40) % 10, np.arange(60) % 10]
    part = np.r_[np.zeros(40, int), np.ones(60, int)]
    tr, va = split_per_class(labels, part, [3, 2], 10, np.random.default_rng(0))
    assert len(va) == 10 * (3 + 2) and len(tr) == 100 - 50 and not set(tr) & set(va)
    for p, k in ((0, 3), (1, 2)):
        assert np.bincount(labels[va][part[va] == p], minlength=10).tolist() == [k] * 10
    again = split_per_class(labels, part, [3, 2], 10, np.random.default_rng(0))
    np.testing.assert_array_equal(va, again[1])
    with pytest.raises(ValueError, match="class 0 of part 0 has 4 images, fewer than 5"):
        split_per_class(labels, part, [5, 0], 10, np.random.default_rng(0))


def test_gather_rows_joins_parts_into_one_new_array(tmp_path: Path, small_svhn: None) -> None:
    root = _write_splits(tmp_path / "svhn")
    train = load_dataset("svhn", "train", data_dir=root, download=False)
    extra = load_dataset("svhn", "extra", data_dir=root, download=False)
    rows = np.array([0, 39, 40, 99])
    joined = gather_rows([train, extra], rows, "train+extra")
    both = np.concatenate([train.images, extra.images])
    np.testing.assert_array_equal(joined.images, both[rows])
    assert joined.split == "train+extra" and joined.labels.tolist() == [1, 10 % 10, 1, 10 % 10]
    assert gather_rows([train], np.arange(40), "train") is train  # nothing to copy


def test_training_on_train_and_extra_with_the_papers_validation_set(
    tmp_path: Path, small_svhn: None
) -> None:
    root = _write_splits(tmp_path / "svhn")
    result = sdnet.train(
        dataset="svhn", train_splits=["train", "extra"], val_per_class=[2, 1], model="resnet8",
        epochs=1, batch_size=16, device="cpu", data_dir=str(root), download=False,
        progress=False, run_dir=str(tmp_path / "run"),
    )  # fmt: skip
    rec = result.history[-1]
    assert rec["step"] == -(-(100 - 30) // 16)  # 70 training images: 30 held out
    assert result.best is not None and result.test_error_at_best is not None
    with pytest.raises(ConfigError, match=r"val_per_class=\[5, 1\] does not fit: class 0"):
        sdnet.train(dataset="svhn", train_splits=["train", "extra"], val_per_class=[5, 1],
                    data_dir=str(root), download=False, run_dir=str(tmp_path / "r2"))  # fmt: skip


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(train_splits=["extra", "test"]), "train_splits=\\['extra', 'test'\\]"),
        (dict(dataset="mnist", train_splits=["train", "extra"]), "give one or more of train"),
        (dict(train_splits=["train", "extra"], val_per_class=[400]), "one count >= 0 per"),
        (dict(val_per_class=[4], val_split=0.1), "not both"),
    ],
)
def test_bad_split_options_are_one_clear_error(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        sdnet.TrainConfig(**{"dataset": "svhn", **options}).validate()


# -- the normalization constants against the real training split ---------------------------------


def _real_svhn_train() -> Path:
    candidates = [Path(os.environ.get("SDNET_DATA", "")) / "svhn", sources.cache_dir("svhn")]
    for d in candidates:
        if (d / SVHN_FILES["train"]).is_file():
            return d
    pytest.skip(
        "the real SVHN train_32x32.mat is not here (checked $SDNET_DATA/svhn and the cache); "
        "the constants are the published ones (docs/data.md)"
    )


def test_normalization_constants_are_the_real_training_statistics() -> None:
    ds = load_dataset("svhn", "train", data_dir=_real_svhn_train(), download=False)
    sums, squares, count = np.zeros(3), np.zeros(3), 0
    for i in range(0, len(ds), 8192):  # float64 in pieces: no float copy of the whole split
        x = ds.images[i : i + 8192].astype(np.float64) / 255  # (B, 3, 32, 32)
        sums += x.sum(axis=(0, 2, 3))
        squares += (x * x).sum(axis=(0, 2, 3))
        count += x.shape[0] * 32 * 32
    mean = sums / count
    std = np.sqrt(squares / count - mean * mean)
    np.testing.assert_allclose(DATASETS["svhn"].mean, mean, atol=6e-5)
    np.testing.assert_allclose(DATASETS["svhn"].std, std, atol=6e-5)
