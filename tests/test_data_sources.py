"""Search order and downloads against a real HTTP server on 127.0.0.1 (no mocked client).

The server serves the real MNIST test files from $SDNET_DATA/mnist (good/), copies with flipped
bytes (corrupt/), cut short (truncated/), nothing (missing/ -> 404), and fake CIFAR archives.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import pickle
import socket
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from sdnet.data import (
    DATASETS,
    ChecksumError,
    DataError,
    DataNotFound,
    load_dataset,
    locate,
    sources,
)

TEST_FILES = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def _mnist_dir() -> Path:
    root = os.environ.get("SDNET_DATA")
    base = Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data"
    d = base / "mnist"
    if not all((d / f).is_file() for f in TEST_FILES):
        pytest.skip(f"MNIST not found in {d} (set SDNET_DATA)")
    return d


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, served root) of a threaded HTTP server on an ephemeral port."""
    real = _mnist_dir()
    root = tmp_path_factory.mktemp("www")
    for sub in ("good", "corrupt", "truncated", "missing", "cifar", "cifar-link"):
        (root / sub).mkdir()
    for f in TEST_FILES:
        data = (real / f).read_bytes()
        (root / "good" / f).write_bytes(data)
        flipped, mid = bytearray(data), len(data) // 2
        flipped[mid : mid + 8] = bytes(b ^ 0xFF for b in data[mid : mid + 8])
        (root / "corrupt" / f).write_bytes(bytes(flipped))
        (root / "truncated" / f).write_bytes(data[: len(data) // 2])
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Empty cache, home and system roots; no $SDNET_DATA or $SDNET_MIRRORS."""
    p = {k: tmp_path / k for k in ("cache", "home", "system", "sdnet_data", "data_dir")}
    for d in p.values():
        d.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(p["cache"]))
    monkeypatch.setenv("HOME", str(p["home"]))
    monkeypatch.delenv("SDNET_DATA", raising=False)
    monkeypatch.delenv("SDNET_MIRRORS", raising=False)
    monkeypatch.setattr(sources, "SYSTEM_DATA_ROOT", p["system"])
    return p


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*")) if directory.exists() else []


def test_download_into_the_cache(server: tuple[str, Path], places: dict[str, Path]) -> None:
    url, _ = server
    where = locate("mnist", "test", mirrors=[url + "/good"], progress=True)
    cache = places["cache"] / "sdnet" / "mnist"
    assert where == cache
    assert _leftovers(cache) == TEST_FILES  # no temporary files left behind
    for f in TEST_FILES:
        assert (cache / f).read_bytes() == (_mnist_dir() / f).read_bytes()
    ds = load_dataset("mnist", "test", download=False)  # now found in the cache
    assert ds.source == cache and ds.labels[:3].tolist() == [7, 2, 1]


def test_home_cache_without_xdg(
    server: tuple[str, Path], places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("SDNET_MIRRORS", f"{_closed_port_url()} {server[0]}/good/")
    assert locate("mnist", "test") == places["home"] / ".cache" / "sdnet" / "mnist"


@pytest.mark.parametrize("kind", ["corrupt", "truncated"])
def test_bad_download_is_a_checksum_error(
    server: tuple[str, Path], places: dict[str, Path], kind: str
) -> None:
    with pytest.raises(ChecksumError, match="t10k-images-idx3-ubyte.gz") as info:
        locate("mnist", "test", mirrors=[f"{server[0]}/{kind}"])
    assert "SHA-256" in str(info.value) and isinstance(info.value, DataError)
    assert _leftovers(places["cache"] / "sdnet" / "mnist") == []


def test_second_mirror_after_a_404(server: tuple[str, Path], places: dict[str, Path]) -> None:
    url, _ = server
    where, log = sources.download("mnist", "test", mirrors=[url + "/missing/", url + "/good/"])
    assert where == places["cache"] / "sdnet" / "mnist"
    assert "HTTP 404" in log[0] and "verified" in log[1]
    assert _leftovers(where) == TEST_FILES


def test_corrupt_first_mirror_then_good(server: tuple[str, Path], places: dict[str, Path]) -> None:
    url, _ = server
    where = locate("mnist", "test", mirrors=f"{url}/corrupt {url}/good")
    assert _leftovers(where) == TEST_FILES


def test_nothing_anywhere_lists_every_place(
    server: tuple[str, Path], places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDNET_DATA", str(places["sdnet_data"]))
    missing, closed = server[0] + "/missing/", _closed_port_url()
    with pytest.raises(DataNotFound) as info:
        locate("mnist", "test", data_dir=places["data_dir"], mirrors=[missing, closed])
    msg = str(info.value)
    for where in (
        places["data_dir"],
        places["sdnet_data"] / "mnist",
        places["cache"] / "sdnet" / "mnist",
        places["system"] / "mnist",
    ):
        assert str(where) in msg
    assert missing + "t10k-images-idx3-ubyte.gz: HTTP 404" in msg
    assert closed + "t10k-images-idx3-ubyte.gz: unreachable" in msg
    assert "data_dir=" in msg and "SDNET_DATA=" in msg and "copy them to" in msg
    assert isinstance(info.value, FileNotFoundError)
    assert _leftovers(places["cache"] / "sdnet" / "mnist") == []


def test_download_false(places: dict[str, Path]) -> None:
    with pytest.raises(DataNotFound, match="download=False"):
        load_dataset("mnist", "test", download=False)
    assert not (places["cache"] / "sdnet").exists()


def test_search_order(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDNET_DATA", str(places["sdnet_data"]))
    monkeypatch.setenv("SDNET_MIRRORS", _closed_port_url())
    dirs = [
        places["data_dir"],
        places["sdnet_data"] / "mnist",
        places["cache"] / "sdnet" / "mnist",
        places["system"] / "mnist",
    ]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        for f in TEST_FILES:
            (d / f).touch()  # presence is what the search looks at
    assert locate("mnist", "test", data_dir=dirs[0]) == dirs[0]
    assert locate("mnist", "test") == dirs[1]
    monkeypatch.delenv("SDNET_DATA")
    assert locate("mnist", "test", data_dir=places["home"]) == dirs[2]  # data_dir lacks them
    (dirs[2] / TEST_FILES[1]).unlink()
    assert locate("mnist", "test") == dirs[3]
    (dirs[3] / TEST_FILES[0]).unlink()
    with pytest.raises(DataNotFound, match="missing t10k-images-idx3-ubyte"):
        locate("mnist", "test")
    # the train split is not there at all
    monkeypatch.setenv("SDNET_DATA", str(places["sdnet_data"]))
    with pytest.raises(DataNotFound, match="missing train-images-idx3-ubyte"):
        locate("mnist", "train", download=False)


# ---------------------------------------------------------------- CIFAR archives


def _batch(n: int, rng: np.random.Generator) -> bytes:
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    return pickle.dumps({b"data": data, b"labels": labels}, protocol=2)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _cifar_archive(path: Path, rng: np.random.Generator, link: bool = False) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for i in range(1, 6):
            if link and i == 3:
                info = tarfile.TarInfo(f"cifar-10-batches-py/data_batch_{i}")
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
                continue
            _add(tar, f"cifar-10-batches-py/data_batch_{i}", _batch(4, rng))
        _add(tar, "cifar-10-batches-py/test_batch", _batch(3, rng))
        _add(tar, "cifar-10-batches-py/readme.html", b"<html/>")
        _add(tar, "../escaped", b"outside")
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_cifar(
    server: tuple[str, Path], places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str]:
    """Fake CIFAR-10 archives (a good one, one with a symlink) whose digests are accepted."""
    url, root = server
    rng = np.random.default_rng(0)
    good = _cifar_archive(root / "cifar" / "cifar-10-python.tar.gz", rng)
    linked = _cifar_archive(root / "cifar-link" / "cifar-10-python.tar.gz", rng, link=True)
    src = sources.SOURCES["cifar10"]
    archive = dataclasses.replace(src.remotes["archive"], sha256=(good, linked))
    monkeypatch.setitem(
        sources.SOURCES, "cifar10", dataclasses.replace(src, remotes={"archive": archive})
    )
    info = dataclasses.replace(DATASETS["cifar10"], counts={"train": 20, "test": 3})
    monkeypatch.setitem(DATASETS, "cifar10", info)
    return url + "/cifar/", url + "/cifar-link/"


def test_cifar_archive_download_and_extract(
    fake_cifar: tuple[str, str], places: dict[str, Path], tmp_path: Path
) -> None:
    ds = load_dataset("cifar10", "train", mirrors=[fake_cifar[0]])
    cache = places["cache"] / "sdnet" / "cifar10"
    assert ds.source == cache and ds.images.shape == (20, 3, 32, 32)
    expected = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    assert _leftovers(cache) == sorted(expected)  # no archive, readme, temp or escaped file
    assert not (places["cache"] / "sdnet" / "escaped").exists()
    assert load_dataset("cifar10", "test", download=False).labels.shape == (3,)


def test_cifar_archive_with_a_link_is_refused(
    fake_cifar: tuple[str, str], places: dict[str, Path]
) -> None:
    with pytest.raises(DataError, match="data_batch_3 is not a regular file"):
        load_dataset("cifar10", "train", mirrors=[fake_cifar[1]])
    assert _leftovers(places["cache"] / "sdnet" / "cifar10") == []  # nothing half-extracted


def test_cifar_archive_with_a_wrong_digest(
    fake_cifar: tuple[str, str], places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = sources.SOURCES["cifar10"]
    archive = dataclasses.replace(src.remotes["archive"], sha256=("0" * 64,))
    monkeypatch.setitem(
        sources.SOURCES, "cifar10", dataclasses.replace(src, remotes={"archive": archive})
    )
    with pytest.raises(ChecksumError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", "train", mirrors=[fake_cifar[0]])
    assert _leftovers(places["cache"] / "sdnet" / "cifar10") == []


def test_published_digests_are_well_formed() -> None:
    for src in sources.SOURCES.values():
        for remote in src.remotes.values():
            for digest in remote.sha256 + ((remote.raw_sha256,) if remote.raw_sha256 else ()):
                assert len(digest) == 64 and int(digest, 16) >= 0
