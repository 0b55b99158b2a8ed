"""Fuzzing the three readers of outside files with hypothesis: only documented errors come out.

* ``sdnet.data.read_idx``: ``IDXError`` naming the file, or exactly the declared array;
* ``sdnet.data.cifar.read_cifar_batch``: ``DataError`` naming the file, or a well-formed batch;
* ``sdnet.checkpoint.read_checkpoint`` / ``sdnet.load``: ``CheckpointError`` naming the file,
  or exactly the arrays that were saved.

Runs are derandomized (the same inputs every time, no example database); the counts are in
``reliability_cases.py`` (``SDNET_RELIABILITY_FULL=1`` for ten times as many).
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import pickle
import struct
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("hypothesis", reason="hypothesis is not installed: pip install 'sdnet[test]'")

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from reliability_cases import (  # noqa: E402
    FUZZ_CHECKPOINT_ENTRIES,
    FUZZ_CHECKPOINT_MUTATED,
    FUZZ_CIFAR_MUTATED,
    FUZZ_CIFAR_OBJECTS,
    FUZZ_IDX_HEADERS,
    FUZZ_IDX_MUTATED,
    count,
)

import sdnet
from sdnet.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from sdnet.data import DataError, IDXError, read_idx
from sdnet.data.cifar import read_cifar_batch


def _settings(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


_names = itertools.count()


def _write(work: Path, data: bytes, suffix: str = "") -> Path:
    path = work / f"f{next(_names)}{suffix}"
    path.write_bytes(data)
    return path


# -- mutations of a valid file --------------------------------------------------------------
@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` after 1 to 4 bit flips, byte overwrites, cuts or insertions."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            data = data[:at] if draw(st.booleans()) else data[:at] + data[at + 1 :]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


# -- IDX ------------------------------------------------------------------------------------
def _idx(dims: tuple[int, ...], payload: bytes, code: int = 8, magic: bytes = b"\0\0") -> bytes:
    return magic + bytes([code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


_IDX_RAW = _idx((3, 4, 5), bytes(range(60)))
_IDX_GZ = gzip.compress(_IDX_RAW, mtime=0)


def _check_idx(path: Path, content: bytes, seen: Counter[str]) -> None:
    try:
        got = read_idx(path)
    except IDXError as exc:
        assert str(path) in str(exc)
        seen["IDXError"] += 1
        return
    decoded = gzip.decompress(content) if content[:2] == b"\x1f\x8b" else content
    assert got.dtype == np.uint8
    assert _idx(got.shape, got.tobytes()) == decoded  # exactly the declared array
    seen["loaded"] += 1


def test_fuzz_idx_mutations(work):
    seen: Counter[str] = Counter()

    @_settings(count(*FUZZ_IDX_MUTATED))
    @given(st.one_of(mutated(_IDX_RAW), mutated(_IDX_GZ)))
    def check(content: bytes) -> None:
        _check_idx(_write(work, content), content, seen)

    check()
    assert sum(seen.values()) >= count(*FUZZ_IDX_MUTATED), seen
    assert seen["IDXError"] and seen["loaded"], seen


def test_fuzz_idx_headers(work):
    seen: Counter[str] = Counter()
    dim = st.one_of(st.integers(0, 6), st.integers(0, 2**32 - 1))

    @_settings(count(*FUZZ_IDX_HEADERS))
    @given(
        magic=st.one_of(st.just(b"\0\0"), st.binary(min_size=2, max_size=2)),
        code=st.one_of(st.just(8), st.integers(0, 255)),
        dims=st.lists(dim, min_size=0, max_size=6),
        length=st.integers(0, 300),
        gz=st.booleans(),
    )
    def check(magic: bytes, code: int, dims: list[int], length: int, gz: bool) -> None:
        raw = _idx(tuple(dims), bytes(length), code, magic)
        content = gzip.compress(raw, mtime=0) if gz else raw
        _check_idx(_write(work, content), content, seen)

    check()
    assert sum(seen.values()) >= count(*FUZZ_IDX_HEADERS), seen
    assert seen["IDXError"] and seen["loaded"], seen


# -- CIFAR ----------------------------------------------------------------------------------
def _batch(protocol: int) -> bytes:
    rng = np.random.default_rng(protocol)
    data = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    return pickle.dumps({b"data": data, b"labels": [1, 0, 9], b"batch_label": b"b"}, protocol)


def _check_cifar(path: Path, seen: Counter[str]) -> None:
    try:
        images, labels = read_cifar_batch(path)
    except DataError as exc:
        assert str(path) in str(exc)
        seen["DataError"] += 1
        return
    n = images.shape[0]
    assert images.shape == (n, 3, 32, 32) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert n == 0 or 0 <= labels.min() <= labels.max() <= 9
    seen["loaded"] += 1


def test_fuzz_cifar_mutations(work):
    seen: Counter[str] = Counter()

    @_settings(count(*FUZZ_CIFAR_MUTATED))
    @given(st.one_of(mutated(_batch(2)), mutated(_batch(5))))
    def check(content: bytes) -> None:
        _check_cifar(_write(work, content), seen)

    check()
    assert sum(seen.values()) >= count(*FUZZ_CIFAR_MUTATED), seen
    assert seen["DataError"] and seen["loaded"], seen


_arrays = st.builds(
    lambda dtype, shape, seed: np.random.default_rng(seed).integers(0, 256, shape).astype(dtype),
    st.sampled_from(["uint8", "int64", "float32", "bool", "<U2", ">i4"]),
    st.sampled_from([(0,), (3,), (2, 3072), (1, 3072), (2, 2, 2)]),
    st.integers(0, 2**16),
)
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.binary(max_size=16),
    st.text(max_size=8),
    _arrays,
)
_objects = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.binary(max_size=12), st.text(max_size=4)), inner, max_size=4),
    ),
    max_leaves=12,
)
_batches = st.fixed_dictionaries(
    {
        b"data": st.one_of(_arrays, _objects),
        b"labels": st.one_of(_objects, st.lists(st.integers(-2, 12), max_size=3)),
    }
)


def test_fuzz_cifar_objects(work):
    seen: Counter[str] = Counter()

    @_settings(count(*FUZZ_CIFAR_OBJECTS))
    @given(obj=st.one_of(_batches, _objects), protocol=st.integers(2, 5))
    # one well-formed batch always: what Hypothesis draws depends on the constants it collects
    # from the project's code, so the random ones alone may all be refused
    @example(obj={b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 9]}, protocol=2)
    def check(obj: Any, protocol: int) -> None:
        _check_cifar(_write(work, pickle.dumps(obj, protocol=protocol)), seen)

    check()
    assert sum(seen.values()) >= count(*FUZZ_CIFAR_OBJECTS), seen
    assert seen["DataError"] and seen["loaded"], seen


# -- checkpoints ----------------------------------------------------------------------------
_ARRAYS = {
    "model/w": np.arange(12, dtype=np.float32).reshape(3, 4),
    "model/n": np.arange(5, dtype=np.int64),
    "optim/m": np.full((2, 2), 0.5),
    "model/flag": np.array([True, False]),
}
_META = {"kind": "training", "step": 4, "model": {"name": "resnet8"}}


def _checkpoint_bytes(tmp: Path) -> bytes:
    return write_checkpoint(tmp / "base.npz", _ARRAYS, _META).read_bytes()


def _check_checkpoint(path: Path, seen: Counter[str], exact: bool) -> None:
    try:
        arrays, meta = read_checkpoint(path)
    except CheckpointError as exc:
        assert str(path) in str(exc)
        seen["CheckpointError"] += 1
    else:
        assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays.values())
        if exact:  # a mutated file that still loads holds exactly what was saved
            assert arrays.keys() == _ARRAYS.keys()
            for k, a in _ARRAYS.items():
                assert arrays[k].dtype == a.dtype and np.array_equal(arrays[k], a), k
            assert {k: meta[k] for k in _META} == _META
        seen["read"] += 1
    try:
        sdnet.load(path)
    except CheckpointError as exc:
        assert str(path) in str(exc)
    else:
        seen["model"] += 1


def test_fuzz_checkpoint_mutations(work):
    seen: Counter[str] = Counter()
    base = _checkpoint_bytes(work)

    @_settings(count(*FUZZ_CHECKPOINT_MUTATED))
    @given(mutated(base))
    def check(content: bytes) -> None:
        _check_checkpoint(_write(work, content, ".npz"), seen, exact=True)

    check()
    assert seen["CheckpointError"] + seen["read"] >= count(*FUZZ_CHECKPOINT_MUTATED), seen
    assert seen["CheckpointError"], seen


def _npy(dtype: str, shape: tuple[int, ...], payload: bytes, version: int) -> bytes:
    header = f"{{'descr': {dtype!r}, 'fortran_order': False, 'shape': {shape!r}, }}".encode()
    pad = 64 - (6 + 2 + (2 if version == 1 else 4) + len(header) + 1) % 64
    header += b" " * pad + b"\n"
    size = struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + size + header + payload


_entry = st.builds(
    _npy,
    dtype=st.sampled_from(["<f4", "<f8", ">f4", "|u1", "<i8", "|b1", "|O", "<U3", "|V4", "<c8"]),
    shape=st.one_of(
        st.lists(st.integers(0, 4), max_size=3).map(tuple),
        st.lists(st.integers(0, 2**40), min_size=1, max_size=2).map(tuple),
    ),
    payload=st.binary(max_size=64),
    version=st.sampled_from([1, 2, 3]),
)
_names_st = st.sampled_from(["__meta__.npy", "model/w.npy", "optim/w.npy", "model/w", "x.txt"])


@st.composite
def archives(draw: st.DrawFn) -> bytes:
    """A zip of random entries: .npy files with any header, raw bytes, a metadata entry that
    lists (or not) the other entries' checksums."""
    buf = io.BytesIO()
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        names = draw(st.lists(_names_st, max_size=4, unique=True))
        for name in names:
            z.writestr(name, draw(st.one_of(_entry, st.binary(max_size=64))))
        if draw(st.booleans()) and "__meta__.npy" not in names:
            meta = {"format": "sdnet-checkpoint", "version": draw(st.sampled_from([1, 2]))}
            meta["sha256"] = {n.removesuffix(".npy"): "0" * 64 for n in names}
            meta["model"] = draw(
                st.sampled_from([{"name": "resnet8"}, {"name": "seednet", "widths": [[1, 2, 3]]}])
            )
            blob = io.BytesIO()
            np.save(blob, np.frombuffer(json.dumps(meta).encode(), np.uint8))
            z.writestr("__meta__.npy", blob.getvalue())
    return buf.getvalue()


def test_fuzz_checkpoint_archives(work):
    seen: Counter[str] = Counter()

    @_settings(count(*FUZZ_CHECKPOINT_ENTRIES))
    @given(archives())
    def check(content: bytes) -> None:
        _check_checkpoint(_write(work, content, ".npz"), seen, exact=False)

    check()
    n = count(*FUZZ_CHECKPOINT_ENTRIES)
    assert seen["CheckpointError"] + seen["read"] >= n, seen
    assert seen["CheckpointError"] > 0.9 * n, seen  # only near-empty archives can pass
