"""IDX reader: real MNIST from $SDNET_DATA, and corrupt, truncated and hostile files."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from sdnet.data import IDXError, load_mnist, read_idx


def _mnist_dir() -> Path:
    root = os.environ.get("SDNET_DATA")
    base = Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data"
    d = base / "mnist"
    if not (d / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip(f"MNIST not found in {d} (set SDNET_DATA)")
    return d


def _idx(dims: tuple[int, ...], payload: bytes, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


def test_real_mnist_test_split() -> None:
    images, labels = load_mnist(_mnist_dir(), "test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(10))
    # the well-known first test labels of MNIST
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_raw_and_gzip_agree(tmp_path: Path) -> None:
    data = _idx((2, 3), bytes(range(6)))
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "b.gz").write_bytes(gzip.compress(data))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), read_idx(tmp_path / "b.gz"))
    assert read_idx(tmp_path / "a").tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "bad magic"),
        (b"\x01\x00\x08\x01", "bad magic"),
        (_idx((4,), b"\x00\x01\x02"), "truncated"),
        (_idx((4,), b"\x00" * 5), "truncated"),
        (_idx((4,), b"\x00" * 16, code=0x0D), "unsupported"),
        (bytes([0, 0, 8, 9]), "bad IDX header"),
        # a header claiming 4G x 4G bytes: rejected from the header, nothing allocated
        (_idx((0xFFFFFFFF, 0xFFFFFFFF), b"\x00" * 8), "truncated"),
    ],
)
def test_bad_files_are_named_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(IDXError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(_idx((100,), bytes(100)))[:-12])
    with pytest.raises(IDXError, match=str(path)):
        read_idx(path)


def test_label_out_of_range_and_mismatch(tmp_path: Path) -> None:
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx((2, 2, 2), bytes(8)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx((2,), bytes([3, 12])))
    with pytest.raises(IDXError, match="out of range"):
        load_mnist(tmp_path, "test")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx((3,), bytes([3, 1, 2])))
    with pytest.raises(IDXError, match="do not match"):
        load_mnist(tmp_path, "test")


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(IDXError, match="neither"):
        load_mnist(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        load_mnist(tmp_path, "valid")
