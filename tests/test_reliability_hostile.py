"""Hostile and damaged files: nothing runs, nothing big is allocated, every error names the file.

* IDX headers that claim huge sizes, and gzip bombs, are refused before the memory is taken;
* CIFAR pickles that name any callable beyond the few needed to rebuild an array are refused
  before anything runs;
* checkpoints with object arrays, pickles, compressed (zip bomb) or lying entries are refused
  before any array is read;
* seeded sweeps: bit flips all over a gzip IDX file, cuts all over a CIFAR batch.
"""

from __future__ import annotations

import builtins
import gzip
import io
import pickle
import re
import shutil
import struct
import subprocess
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from reliability_cases import (
    CIFAR_TRUNCATIONS,
    HOSTILE_PICKLES,
    IDX_GZ_FLIPS,
    PICKLE_PROTOCOLS,
    count,
)

import sdnet
from sdnet.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from sdnet.data import DataError, IDXError, read_idx
from sdnet.data.cifar import read_cifar_batch

PEAK_BYTES = 4 << 20  # what reading a hostile file may allocate at most (tracemalloc)


def _idx(dims: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


def _peak(fn: Callable[[], Any]) -> tuple[BaseException | None, int]:
    """Run ``fn``; the exception it raised and the peak of memory traced meanwhile."""
    tracemalloc.start()
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - returned to the caller, which checks its type
        raised: BaseException | None = exc
    else:
        raised = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return raised, peak


# -- IDX ----------------------------------------------------------------------------------------
def _bomb() -> bytes:
    """A gzip IDX whose header says 1000 bytes, over 64 MiB of zeros (about 64 KiB packed)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        gz.write(_idx((1000,), b""))
        zeros = bytes(1 << 20)
        for _ in range(64):
            gz.write(zeros)
    return out.getvalue()


HUGE_IDX = [
    pytest.param("raw", _idx((0xFFFFFFFF,) * 4, bytes(16)), "more than sdnet reads", id="raw-4d"),
    pytest.param("raw", _idx((1 << 30,), bytes(10)), "file holds 10 ", id="raw-1GiB-claim"),
    pytest.param(
        "gz", gzip.compress(_idx((1 << 30,), bytes(10))), "file holds 10 ", id="gz-1GiB-claim"
    ),
    pytest.param("gz", _bomb(), "holds more than 1000", id="gzip-bomb"),
]


@pytest.mark.parametrize("kind, content, match", HUGE_IDX)
def test_idx_headers_claiming_huge_sizes_allocate_nothing(kind, content, match, tmp_path):
    path = tmp_path / f"x-idx1-ubyte{'.gz' if kind == 'gz' else ''}"
    path.write_bytes(content)
    raised, peak = _peak(lambda: read_idx(path))
    assert isinstance(raised, IDXError), raised
    assert str(path) in str(raised) and match in str(raised), raised
    assert peak < PEAK_BYTES, f"{peak} bytes allocated reading {path}"


# -- CIFAR pickles ------------------------------------------------------------------------------
class _Call:
    """Pickles as a call of ``fn(*args)``: what a hostile batch file does."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple:
        return (self.fn, self.args)


def _memmap_array(marker: Path) -> Any:
    """A ``numpy.memmap``: it pickles as a rebuild of that ndarray subclass, a class the reader
    must refuse although ``_reconstruct`` itself is allowed."""
    return np.memmap(marker.with_suffix(".src"), dtype=np.uint8, mode="w+", shape=(4,))


def _payloads(marker: Path) -> list[tuple[str, Any]]:
    touch = f"open({str(marker)!r}, 'w').close()"
    inner = pickle.dumps(_Call(builtins.exec, touch))
    npy = marker.with_suffix(".npy")
    np.save(npy, np.array([_Call(builtins.exec, touch)], dtype=object), allow_pickle=True)
    return [
        ("builtins.exec", _Call(builtins.exec, touch)),
        ("subprocess.Popen", _Call(subprocess.Popen, ["touch", str(marker)])),
        ("numpy.load", _Call(np.load, str(npy), None, True)),
        ("_pickle.loads", _Call(pickle.loads, inner)),
        ("numpy.memmap", _memmap_array(marker)),
        ("builtins.getattr", _Call(getattr, object, "__subclasses__")),
        ("shutil.rmtree", _Call(shutil.rmtree, str(marker.parent / "victim"))),
    ]


def test_cifar_pickles_that_call_functions_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "victim").mkdir()
    payloads = _payloads(marker)
    assert len(payloads) == HOSTILE_PICKLES
    for name, payload in payloads:
        path = tmp_path / "data_batch_1"
        for protocol in PICKLE_PROTOCOLS:
            path.write_bytes(pickle.dumps({b"data": payload, b"labels": [0]}, protocol=protocol))
            with pytest.raises(DataError, match="refusing to load a pickle that names") as info:
                read_cifar_batch(path)
            assert str(path) in str(info.value)
            assert name.split(".")[-1] in str(info.value), (name, info.value)
            assert not marker.exists() and (tmp_path / "victim").is_dir(), name


# -- checkpoints --------------------------------------------------------------------------------
def _npy(array_header: str, payload: bytes) -> bytes:
    """A ``.npy`` file with this header dict text (format 1.0) and payload."""
    head = array_header.encode()
    pad = 64 - (10 + len(head) + 1) % 64
    head += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head + payload


def _zip(path: Path, entries: dict[str, bytes], compress: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        for name, data in entries.items():
            z.writestr(name, data)


def _valid_meta() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(b'{"format": "sdnet-checkpoint", "version": 1}', np.uint8))
    return buf.getvalue()


def _object_array(path: Path, marker: Path) -> None:
    buf = io.BytesIO()
    touch = f"open({str(marker)!r}, 'w').close()"
    np.save(buf, np.array([_Call(builtins.exec, touch)], dtype=object), allow_pickle=True)
    _zip(path, {"model/w.npy": buf.getvalue(), "__meta__.npy": _valid_meta()})


def _pickled_entry(path: Path, marker: Path) -> None:
    touch = f"open({str(marker)!r}, 'w').close()"
    _zip(path, {"model/w.npy": pickle.dumps(_Call(builtins.exec, touch))})


def _zip_bomb(path: Path, marker: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, np.zeros(1 << 26, np.uint8))  # 64 MiB of zeros, about 64 KiB deflated
    _zip(path, {"model/w.npy": buf.getvalue()}, compress=zipfile.ZIP_DEFLATED)


def _lying_header(path: Path, marker: Path) -> None:
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }"
    _zip(path, {"model/w.npy": _npy(header, bytes(16)), "__meta__.npy": _valid_meta()})


def _not_npy(path: Path, marker: Path) -> None:
    _zip(path, {"model/w.npy": b"just some text", "__meta__.npy": _valid_meta()})


HOSTILE_CKPT = [
    pytest.param(_object_array, "pickled objects", id="object-array"),
    pytest.param(_pickled_entry, "not a NumPy array", id="pickled-entry"),
    pytest.param(_zip_bomb, "is compressed", id="zip-bomb"),
    pytest.param(_lying_header, r"declares \(1000000000000,\) float64", id="1e12-elements"),
    pytest.param(_not_npy, "not a NumPy array", id="not-npy"),
]


@pytest.mark.parametrize("make, match", HOSTILE_CKPT)
def test_hostile_checkpoints_are_refused_before_reading(make, match, tmp_path):
    path, marker = tmp_path / "checkpoint.npz", tmp_path / "pwned"
    make(path, marker)
    for load in (read_checkpoint, sdnet.load):
        raised, peak = _peak(lambda load=load: load(path))
        assert isinstance(raised, CheckpointError), raised
        assert str(path) in str(raised)
        assert re.search(match, str(raised)), raised
        assert peak < PEAK_BYTES, f"{peak} bytes allocated reading {path}"
    assert not marker.exists()


FORGED = [
    pytest.param(
        "resnet8", dict(width=100_000), r"width=100000.* implies [\d,]+ values", id="width-1e5"
    ),
    pytest.param("resnet6000002", {}, r"resnet6000002.* implies [\d,]+ values", id="depth-6e6"),
    pytest.param(
        "resnet8", dict(in_channels=10**9), r"in_channels=1000000000.* implies", id="channels-1e9"
    ),
    pytest.param(
        "resnet8", dict(num_classes=10**9), r"num_classes=1000000000.* implies", id="classes-1e9"
    ),
    pytest.param(
        "seednet",
        dict(widths=[[784, 10**6, 10]]),
        r"implies [\d,]+ values, the file holds",
        id="seednet-widths",
    ),
]


@pytest.mark.parametrize("name, change, match", FORGED)
def test_forged_model_configurations_build_nothing(name, change, match, tmp_path):
    """A valid file whose stored configuration asks for a huge network: refused from the
    stored arrays' shapes, before anything is built."""
    base = "seednet" if name == "seednet" else "resnet8"
    model = sdnet.build_model(base, **({} if base == "seednet" else {"in_channels": 1}))
    path = sdnet.save(model, tmp_path / "model.npz")
    arrays, meta = read_checkpoint(path)
    meta["model"] = dict(meta["model"], name=name, **change)
    write_checkpoint(path, arrays, meta)
    raised, peak = _peak(lambda: sdnet.load(path))
    assert isinstance(raised, CheckpointError), raised
    assert f"{path}: weights do not fit {name}" in str(raised), raised
    assert re.search(match, str(raised)), raised
    assert peak < PEAK_BYTES + 2 * path.stat().st_size


# -- seeded sweeps ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist_gz(mnist_dir: Path) -> tuple[bytes, np.ndarray]:
    """A gzip IDX of the first 64 real MNIST test images, and those images."""
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[:64]
    return gzip.compress(_idx(images.shape, images.tobytes()), mtime=0), images


def test_bit_flips_in_gzip_idx_never_load_other_data(mnist_gz, tmp_path):
    data, images = mnist_gz
    rng = np.random.default_rng(7)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    n, detected, same = count(*IDX_GZ_FLIPS), 0, []
    for bit in rng.choice(len(data) * 8, size=n, replace=False):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(flipped)
        try:
            got = read_idx(path)
        except IDXError as exc:
            assert str(path) in str(exc)
            detected += 1
            continue
        np.testing.assert_array_equal(got, images)  # never other data, silently
        same.append(int(bit // 8))
    # a flip either is caught (CRC-32, lengths, header checks) or changes nothing that is
    # decoded: the gzip header's time/flags bytes, or deflate code bits that decode the same
    assert detected + len(same) == n and detected > 0.9 * n


def test_truncated_cifar_batches_are_named_errors(tmp_path):
    rng = np.random.default_rng(11)
    data = rng.integers(0, 256, size=(16, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=16)]
    blob = pickle.dumps({b"data": data, b"labels": labels, b"batch_label": b"x"}, protocol=2)
    path = tmp_path / "data_batch_1"
    n = count(*CIFAR_TRUNCATIONS)
    for cut in rng.choice(len(blob), size=n, replace=False):
        path.write_bytes(blob[:cut])
        with pytest.raises(DataError) as info:
            read_cifar_batch(path)
        assert str(path) in str(info.value)
