"""Datasets: real MNIST, normalization constants, damaged files, CIFAR batches (fake, in the real
pickle format), hostile pickles, the validation split and the batch loader on every backend."""

from __future__ import annotations

import builtins
import dataclasses
import gzip
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

import sdnet
from sdnet.data import (
    DATASETS,
    ArrayDataset,
    DataError,
    IDXError,
    Loader,
    load_dataset,
    read_cifar_batch,
    split_train_val,
)
from sdnet.data.idx import read_idx

MNIST_FILES = [
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
]


def _data_root() -> Path:
    root = os.environ.get("SDNET_DATA")
    return Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data"


def _mnist_dir() -> Path:
    d = _data_root() / "mnist"
    if not all((d / f).is_file() for f in MNIST_FILES):
        pytest.skip(f"MNIST not found in {d} (set SDNET_DATA)")
    return d


def _stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and std of pixel/255 over all pixels, exactly, from a 256-bin histogram."""
    counts = np.bincount(images.reshape(-1), minlength=256).astype(np.float64)  # (256,)
    v = np.arange(256) / 255.0
    mean = (counts * v).sum() / counts.sum()
    return float(mean), float(np.sqrt((counts * (v - mean) ** 2).sum() / counts.sum()))


# ---------------------------------------------------------------- real MNIST and constants


def test_real_mnist_test_split() -> None:
    d = _mnist_dir()
    ds = load_dataset("mnist", "test", data_dir=d, download=False)
    assert isinstance(ds, ArrayDataset) and len(ds) == 10000
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (10000,) and ds.labels.dtype == np.int64
    assert ds.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert set(np.unique(ds.labels)) == set(range(10))
    assert (ds.name, ds.split, ds.num_classes, ds.shape) == ("mnist", "test", 10, (1, 28, 28))
    assert ds.source == d and ds.mean == DATASETS["mnist"].mean


def test_mnist_train_from_sdnet_data_and_its_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDNET_DATA", str(_mnist_dir().parent))
    ds = load_dataset("mnist", "train", download=False)
    assert ds.images.shape == (60000, 1, 28, 28) and ds.labels.max() == 9
    mean, std = _stats(ds.images)
    assert abs(mean - ds.mean[0]) < 1e-3 and abs(std - ds.std[0]) < 1e-3
    # the published constants, to the digits they are quoted with
    assert (round(mean, 4), round(std, 4)) == (0.1307, 0.3081)


def test_fashion_mnist_statistics_when_installed() -> None:
    d = Path("/usr/share/datasets/fashion-mnist")
    if not (d / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    ds = load_dataset("fashion-mnist", "train", data_dir=d, download=False)
    mean, std = _stats(ds.images)
    assert abs(mean - ds.mean[0]) < 1e-3 and abs(std - ds.std[0]) < 1e-3


def test_registry() -> None:
    assert set(DATASETS) == {"mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"}
    assert DATASETS["svhn"].default_augment == {"crop_pad": 0, "hflip": False}  # the paper's
    assert DATASETS["svhn"].counts == {"train": 73257, "test": 26032, "extra": 531131}
    assert DATASETS["cifar10"].default_augment == {"crop_pad": 4, "hflip": True}
    assert DATASETS["cifar100"].default_augment == {"crop_pad": 4, "hflip": True}
    for digits in ("mnist", "fashion-mnist"):
        info = DATASETS[digits]
        assert info.default_augment == {"crop_pad": 0, "hflip": False}
        assert info.augment_crop_pad == 2 and info.pad_pixel == 0  # black background
    assert not DATASETS["mnist"].hflip_allowed  # a mirrored digit is another sign
    assert DATASETS["fashion-mnist"].hflip_allowed  # a mirrored shirt is a shirt
    for info in DATASETS.values():
        assert len(info.mean) == len(info.std) == info.shape[0]
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="split"):
        load_dataset("mnist", "valid")


# ---------------------------------------------------------------- damaged IDX files


def _copy_test_split(tmp_path: Path) -> Path:
    for f in MNIST_FILES[:2]:
        shutil.copy(_mnist_dir() / f, tmp_path / f)
    return tmp_path


def test_truncated_real_file_names_it(tmp_path: Path) -> None:
    d = _copy_test_split(tmp_path)
    path = d / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(IDXError, match="truncated") as info:
        load_dataset("mnist", "test", data_dir=d, download=False)
    assert str(path) in str(info.value)


def test_corrupt_real_file_names_it(tmp_path: Path) -> None:
    d = _copy_test_split(tmp_path)
    path = d / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[2000:2010] = bytes(b ^ 0xFF for b in raw[2000:2010])
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "test", data_dir=d, download=False)
    assert str(path) in str(info.value)


def _idx(dims: tuple[int, ...], payload: bytes) -> bytes:
    header = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + payload


@pytest.mark.parametrize("n, hw", [(100, 28), (10000, 27)])
def test_wrong_count_or_shape_is_an_error(tmp_path: Path, n: int, hw: int) -> None:
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx((n, hw, hw), bytes(n * hw * hw)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx((n,), bytes(n)))
    with pytest.raises(DataError, match="expected") as info:
        load_dataset("mnist", "test", data_dir=tmp_path, download=False)
    assert str(tmp_path) in str(info.value)


def test_idx_error_is_a_data_error() -> None:
    assert issubclass(IDXError, DataError) and issubclass(DataError, ValueError)
    with pytest.raises(IDXError, match="no such file"):
        read_idx("/nonexistent/file")


# ---------------------------------------------------------------- CIFAR


def _write_batch(path: Path, n: int, rng: np.random.Generator, key: bytes = b"labels",
                 k: int = 10, **override: object) -> dict:  # fmt: skip
    """A CIFAR batch in the real format: a protocol-2 pickle of a dict with bytes keys."""
    batch = {
        b"batch_label": b"fake batch",
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        key: [int(v) for v in rng.integers(0, k, size=n)],
        b"filenames": [b"img%d.png" % i for i in range(n)],
    }
    batch.update({bytes(name, "ascii"): v for name, v in override.items()})
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return batch


@pytest.fixture
def small_cifar(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("cifar10", "cifar100"):
        info = dataclasses.replace(DATASETS[name], counts={"train": 20, "test": 3})
        monkeypatch.setitem(DATASETS, name, info)


def test_cifar10_fake_batches(tmp_path: Path, rng: np.random.Generator, small_cifar: None) -> None:
    sub = tmp_path / "cifar-10-batches-py"  # the archive's folder is accepted too
    sub.mkdir()
    train = [_write_batch(sub / f"data_batch_{i}", 4, rng) for i in range(1, 6)]
    test = _write_batch(sub / "test_batch", 3, rng)
    ds = load_dataset("cifar10", "train", data_dir=tmp_path, download=False)
    assert ds.images.shape == (20, 3, 32, 32) and ds.shape == (3, 32, 32)
    want = np.concatenate([b[b"data"] for b in train]).reshape(20, 3, 32, 32)
    np.testing.assert_array_equal(ds.images, want)
    assert ds.labels.tolist() == sum((b[b"labels"] for b in train), [])
    assert ds.source == sub and ds.mean == DATASETS["cifar10"].mean
    ts = load_dataset("cifar10", "test", data_dir=sub, download=False)
    assert ts.labels.tolist() == test[b"labels"] and ts.labels.dtype == np.int64


def test_cifar100_fine_labels(tmp_path: Path, rng: np.random.Generator, small_cifar: None) -> None:
    b = _write_batch(tmp_path / "train", 20, rng, key=b"fine_labels", k=100)
    _write_batch(tmp_path / "test", 3, rng, key=b"fine_labels", k=100)
    ds = load_dataset("cifar100", "train", data_dir=tmp_path, download=False)
    assert ds.labels.tolist() == b[b"fine_labels"] and ds.num_classes == 100


def test_cifar_wrong_count(tmp_path: Path, rng: np.random.Generator, small_cifar: None) -> None:
    _write_batch(tmp_path / "train", 19, rng, key=b"fine_labels", k=100)
    with pytest.raises(DataError, match="expected 20"):
        load_dataset("cifar100", "train", data_dir=tmp_path, download=False)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"data": np.zeros((4, 3072), dtype=np.int16)}, "uint8"),
        ({"data": np.zeros((4, 1024), dtype=np.uint8)}, "rows of 1024"),
        ({"data": [1, 2, 3]}, "uint8"),
        ({"labels": [0, 1, 2]}, "4 images but 3 labels"),
        ({"labels": [0, 1, 2, 10]}, "expected 0..9"),
        ({"labels": [0, 1, 2, -1]}, "expected 0..9"),
        ({"labels": [0, 1, 2, b"x"]}, "list of integers"),
    ],
)
def test_cifar_batch_validation(
    tmp_path: Path, rng: np.random.Generator, override: dict, message: str
) -> None:
    path = tmp_path / "data_batch_1"
    _write_batch(path, 4, rng, **override)
    with pytest.raises(DataError, match=message) as info:
        read_cifar_batch(path, "cifar10")
    assert str(path) in str(info.value)


def test_cifar_batch_not_a_dict_or_truncated(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(DataError, match="expected a dict"):
        read_cifar_batch(path)
    _write_batch(path, 4, rng)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="not a readable CIFAR batch") as info:
        read_cifar_batch(path)
    assert str(path) in str(info.value)
    # a CIFAR-100 file read as CIFAR-10 lacks b"labels"
    _write_batch(path, 4, rng, key=b"fine_labels", k=100)
    with pytest.raises(DataError, match="b'labels'"):
        read_cifar_batch(path, "cifar10")


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_System, _Eval])
def test_hostile_pickle_is_refused_without_running(tmp_path: Path, payload: type) -> None:
    marker = tmp_path / "pwned"
    hostile = pickle.dumps({b"data": payload(marker), b"labels": [0]}, protocol=2)
    path = tmp_path / "data_batch_1"
    path.write_bytes(hostile)
    with pytest.raises(DataError, match="refusing") as info:
        read_cifar_batch(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    # the payload is real: plain pickle would have run it
    pickle.loads(hostile)
    assert marker.exists()


def test_codecs_only_for_latin1(tmp_path: Path) -> None:
    # Python 3 stores bytes at protocol 2 as _codecs.encode(text, "latin1"); no other codec
    path = tmp_path / "test_batch"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(DataError, match="latin-1"):
        read_cifar_batch(path)


def test_numpy2_pickles_also_load(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [1, 2]}, protocol=5))
    images, labels = read_cifar_batch(path)
    np.testing.assert_array_equal(images.reshape(2, 3072), data)


# ---------------------------------------------------------------- validation split


@pytest.mark.parametrize("val_size, k", [(100, 100), (0.1, 100), (0.25, 250), (0, 0)])
def test_split_train_val(val_size: int | float, k: int) -> None:
    tr, va = split_train_val(1000, val_size, np.random.default_rng(7))
    assert va.shape == (k,) and tr.shape == (1000 - k,)
    assert tr.dtype == va.dtype == np.int64
    assert np.intersect1d(tr, va).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(1000))
    tr2, va2 = split_train_val(1000, val_size, np.random.default_rng(7))
    np.testing.assert_array_equal(tr, tr2)
    np.testing.assert_array_equal(va, va2)
    if k:
        _, va3 = split_train_val(1000, val_size, np.random.default_rng(8))
        assert not np.array_equal(va, va3)


@pytest.mark.parametrize("val_size", [1.0, 0.0, -1, 1001, "10", True])
def test_split_train_val_rejects(val_size: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        split_train_val(1000, val_size, np.random.default_rng(0))  # type: ignore[arg-type]


def test_subset_keeps_metadata(rng: np.random.Generator) -> None:
    ds = _toy(rng)
    sub = ds.subset([3, 1])
    assert sub.labels.tolist() == [ds.labels[3], ds.labels[1]]
    assert (sub.name, sub.mean, sub.source, len(sub)) == (ds.name, ds.mean, ds.source, 2)


# ---------------------------------------------------------------- loader


def _toy(rng: np.random.Generator, n: int = 23, c: int = 3, h: int = 5, w: int = 6) -> ArrayDataset:
    images = rng.integers(0, 256, size=(n, c, h, w), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64)  # label = index: batches show which samples they hold
    mean, std = tuple(np.linspace(0.3, 0.5, c)), tuple(np.linspace(0.2, 0.3, c))
    return ArrayDataset(images, labels, "toy", "train", n, mean, std, None)


def _epoch(loader: Loader, plan, start: int = 0) -> tuple[list, list]:
    xs, ys = [], []
    for x, y in loader.batches(plan, start=start):
        xs.append(loader.backend.to_numpy(x))
        ys.append(loader.backend.to_numpy(y))
    return xs, ys


def _reference(
    ds: ArrayDataset, plan, pad: int, pad_pixel: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Straightforward per-sample NumPy: pad with ``pad_pixel`` (or, normalized, with zeros),
    normalize, crop, flip."""
    mean = np.asarray(ds.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(ds.std, dtype=np.float32)[:, None, None]
    _, h, w = ds.shape
    out = []
    for k, i in enumerate(plan.order):
        if pad_pixel is None:
            x = (ds.images[i].astype(np.float32) / 255 - mean) / std
            x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
        else:
            x = np.pad(ds.images[i], ((0, 0), (pad, pad), (pad, pad)), constant_values=pad_pixel)
            x = (x.astype(np.float32) / 255 - mean) / std
        if plan.dy is not None:
            x = x[:, plan.dy[k] : plan.dy[k] + h, plan.dx[k] : plan.dx[k] + w]
        if plan.flip is not None and plan.flip[k]:
            x = x[:, :, ::-1]
        out.append(x)
    return np.stack(out), ds.labels[plan.order]


def test_unshuffled_epoch_covers_each_sample_once(rng: np.random.Generator) -> None:
    ds = _toy(rng)
    loader = Loader(ds, batch_size=5, shuffle=False)
    assert len(loader) == 5
    xs, ys = _epoch(loader, loader.plan_epoch(None))
    assert [len(y) for y in ys] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate(ys), np.arange(23))
    x_ref, _ = _reference(ds, loader.plan_epoch(None), 0)
    np.testing.assert_array_equal(np.concatenate(xs), x_ref)
    assert xs[0].dtype == np.float32 and xs[0].shape == (5, 3, 5, 6)
    dropped = Loader(ds, batch_size=5, shuffle=False, drop_last=True)
    assert len(dropped) == 4
    assert [len(y) for y in _epoch(dropped, dropped.plan_epoch(None))[1]] == [5] * 4


def test_shuffle_is_a_permutation_and_seeded(rng: np.random.Generator) -> None:
    loader = Loader(_toy(rng), batch_size=4, shuffle=True)
    _, ys = _epoch(loader, loader.plan_epoch(np.random.default_rng(1)))
    order = np.concatenate(ys)
    assert sorted(order.tolist()) == list(range(23)) and order.tolist() != list(range(23))
    _, again = _epoch(loader, loader.plan_epoch(np.random.default_rng(1)))
    np.testing.assert_array_equal(np.concatenate(again), order)
    with pytest.raises(ValueError, match="rng"):
        loader.plan_epoch(None)


@pytest.mark.parametrize("pad, hflip", [(2, True), (2, False), (0, True), (7, True)])
def test_crop_and_flip_match_reference(rng: np.random.Generator, pad: int, hflip: bool) -> None:
    ds = _toy(rng)
    loader = Loader(ds, batch_size=8, shuffle=True, crop_pad=pad, hflip=hflip)
    plan = loader.plan_epoch(np.random.default_rng(3))
    xs, ys = _epoch(loader, plan)
    x_ref, y_ref = _reference(ds, plan, pad)
    np.testing.assert_array_equal(np.concatenate(ys), y_ref)
    np.testing.assert_array_equal(np.concatenate(xs), x_ref)
    if hflip:
        assert 0 < plan.flip.sum() < 23
    if pad:
        assert plan.dy.min() >= 0 and plan.dx.max() <= 2 * pad


@pytest.mark.parametrize("resident", [True, False])
@pytest.mark.parametrize("pad_pixel", [0, 255])
def test_crop_padding_is_the_raw_pad_pixel(
    rng: np.random.Generator, resident: bool, pad_pixel: int
) -> None:
    ds = _toy(rng)
    kw = dict(batch_size=8, shuffle=True, crop_pad=3, hflip=True, resident=resident)
    loader = Loader(ds, pad_pixel=pad_pixel, **kw)  # type: ignore[arg-type]
    plan = loader.plan_epoch(np.random.default_rng(3))
    xs, _ = _epoch(loader, plan)
    np.testing.assert_allclose(np.concatenate(xs), _reference(ds, plan, 3, pad_pixel)[0], atol=1e-6)
    # images of pure background stay pure background however they are cropped
    blank = dataclasses.replace(ds, images=np.full_like(ds.images, pad_pixel))
    out = np.concatenate(_epoch(Loader(blank, pad_pixel=pad_pixel, **kw), plan)[0])  # type: ignore[arg-type]
    mean, std = (np.asarray(v, dtype=np.float32)[:, None, None] for v in (ds.mean, ds.std))
    background = (np.float32(pad_pixel) / 255 - mean) / std  # (C, 1, 1)
    np.testing.assert_allclose(out, np.broadcast_to(background, out.shape), atol=1e-6)


@pytest.mark.parametrize("bad", [-1, 256, 0.5, True, "0"])
def test_pad_pixel_outside_a_pixel_value_is_one_clear_error(
    rng: np.random.Generator, bad: object
) -> None:
    with pytest.raises(ValueError, match="pad_pixel must be a pixel value 0..255"):
        Loader(_toy(rng), batch_size=4, crop_pad=1, pad_pixel=bad)  # type: ignore[arg-type]


def test_resume_yields_the_tail(rng: np.random.Generator) -> None:
    loader = Loader(_toy(rng), batch_size=4, crop_pad=1, hflip=True)
    plan = loader.plan_epoch(np.random.default_rng(5))
    xs, ys = _epoch(loader, plan)
    for k in (0, 2, 5, 6):
        tx, ty = _epoch(loader, plan, start=k)
        assert len(tx) == len(xs) - k
        for a, b in zip(tx + ty, xs[k:] + ys[k:], strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="start"):
        next(loader.batches(plan, start=7))


def test_resident_and_streamed_batches_are_identical(rng: np.random.Generator) -> None:
    ds = _toy(rng)
    kw = dict(batch_size=6, crop_pad=2, hflip=True, dtype="float64")
    resident, streamed = Loader(ds, resident=True, **kw), Loader(ds, resident=False, **kw)
    assert resident.resident and not streamed.resident
    plan = resident.plan_epoch(np.random.default_rng(9))
    a, b = _epoch(resident, plan), _epoch(streamed, plan)
    for u, v in zip(a[0] + a[1], b[0] + b[1], strict=True):
        np.testing.assert_array_equal(u, v)
    assert a[0][0].dtype == np.float64


@dataclasses.dataclass(frozen=True)
class _SmallDevice(sdnet.Backend):
    free: int = 0

    def memory_available(self) -> int | None:
        return self.free


def test_resident_auto_follows_free_memory(rng: np.random.Generator) -> None:
    ds = _toy(rng)  # 23 * 90 * 4 = 8280 bytes in float32
    host = sdnet.get_backend("cpu")
    assert host.memory_available() is None and Loader(ds, backend=host).resident
    small = _SmallDevice(host.name, host.xp, host.device, free=16000)
    big = _SmallDevice(host.name, host.xp, host.device, free=17000)
    assert not Loader(ds, backend=small).resident and Loader(ds, backend=big).resident


@pytest.mark.parametrize("resident", [True, False])
def test_loader_on_every_backend(
    backend: sdnet.Backend, rng: np.random.Generator, resident: bool
) -> None:
    ds = _toy(rng)
    kw = dict(batch_size=7, crop_pad=2, hflip=True)
    reference = Loader(ds, backend="cpu", **kw)
    loader = Loader(ds, backend=backend, resident=resident, **kw)
    plan = reference.plan_epoch(np.random.default_rng(11))
    for (x, y), (xr, yr) in zip(loader.batches(plan), reference.batches(plan), strict=True):
        assert x.shape == xr.shape and y.shape == yr.shape
        assert x.dtype == backend.dtype("float32") and y.dtype == backend.xp.int64
        np.testing.assert_allclose(backend.to_numpy(x), xr, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(backend.to_numpy(y), yr)
        if backend.name == "array_api_strict":
            assert x.device == backend.device and y.device == backend.device


def test_loader_on_real_mnist(rng: np.random.Generator) -> None:
    ds = load_dataset("mnist", "test", data_dir=_mnist_dir(), download=False).subset(range(300))
    loader = Loader(ds, batch_size=128, crop_pad=2)
    x, y = next(loader.batches(loader.plan_epoch(np.random.default_rng(0))))
    assert x.shape == (128, 1, 28, 28) and y.shape == (128,)
    # normalized: the background (pixel 0) maps to -mean/std, padding to exactly 0
    assert np.isclose(x.min(), -0.1307 / 0.3081, atol=1e-5)
    assert len(loader) == 3


def test_loader_rejects_bad_arguments(rng: np.random.Generator) -> None:
    ds = _toy(rng)
    for kw in ({"batch_size": 0}, {"crop_pad": -1}, {"resident": "yes"}, {"dtype": "int8"}):
        with pytest.raises(ValueError):
            Loader(ds, **kw)  # type: ignore[arg-type]
    other = Loader(ds.subset(range(5)), batch_size=2)
    with pytest.raises(ValueError, match="another size"):
        next(Loader(ds, batch_size=2).batches(other.plan_epoch(np.random.default_rng(0))))


def test_gzip_idx_roundtrip_through_load_dataset(tmp_path: Path) -> None:
    """Raw (uncompressed) IDX files are accepted like the .gz ones."""
    d = _mnist_dir()
    for f in MNIST_FILES[:2]:
        (tmp_path / f.removesuffix(".gz")).write_bytes(gzip.decompress((d / f).read_bytes()))
    raw = load_dataset("mnist", "test", data_dir=tmp_path, download=False)
    gz = load_dataset("mnist", "test", data_dir=d, download=False)
    np.testing.assert_array_equal(raw.images, gz.images)
