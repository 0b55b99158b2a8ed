"""Where dataset files are found, and how they are downloaded and verified.

Search order (the first place holding the split's files wins):

1. the ``data_dir`` argument (the directory holding the files directly);
2. ``$SDNET_DATA/<dataset>/``;
3. the cache, ``$XDG_CACHE_HOME/sdnet/<dataset>/`` (default ``~/.cache/sdnet/<dataset>/``);
4. ``/usr/share/datasets/<dataset>/`` (:data:`SYSTEM_DATA_ROOT`; Debian's
   ``dataset-fashion-mnist`` package installs there);
5. a download into the cache from the dataset's mirrors (``mirrors=``, else ``$SDNET_MIRRORS``,
   a space-separated list of base URLs, else the defaults below), tried in order.

A download streams to a hidden temporary file in the cache directory, is checked against the
published SHA-256, ``fsync``-ed and only then renamed into place (``os.replace``, through
:func:`sdnet._io.publish`: only over a regular file, with the umask's mode): an
interrupted or corrupt download never leaves a file that a later search would pick up. For
gzip IDX files whose compressed bytes differ between mirrors (re-compressed copies of the same
data), the SHA-256 of the *decompressed* file is accepted too. CIFAR mirrors serve one tar.gz:
it is verified, then only the expected member names, regular files only, are extracted. SVHN
mirrors serve one ``.mat`` file per split, verified and renamed into place like an IDX file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sdnet._io import fsync_dir, publish
from sdnet.data.cifar import CIFAR_FILES, CIFAR_SUBDIRS, batch_dir
from sdnet.data.errors import ChecksumError, DataError, DataNotFound
from sdnet.data.idx import MNIST_FILES, find_idx
from sdnet.data.svhn import SVHN_FILES

__all__ = [
    "SYSTEM_DATA_ROOT",
    "Remote",
    "Source",
    "SOURCES",
    "cache_dir",
    "search_dirs",
    "locate",
    "download",
    "sha256_file",
]

SYSTEM_DATA_ROOT = Path("/usr/share/datasets")
TIMEOUT_S = 30.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Remote:
    """One file on a mirror: its name and the SHA-256 digests it may have.

    ``sha256`` lists the accepted digests of the file as served; ``raw_sha256`` (gzip files
    only) is the digest of its decompressed content, accepted for re-compressed copies.
    """

    filename: str
    sha256: tuple[str, ...]
    raw_sha256: str | None = None
    max_bytes: int = 256 << 20


@dataclass(frozen=True)
class Source:
    """Where one dataset's files come from.

    ``kind`` is ``"idx"`` (one gzip file per IDX stem, ``remotes`` keyed by stem),
    ``"cifar"`` (one archive, ``remotes`` holds it under the key ``"archive"``) or ``"mat"``
    (one ``.mat`` file per split, ``remotes`` keyed by split: SVHN).
    """

    name: str
    kind: str
    mirrors: tuple[str, ...]
    remotes: dict[str, Remote] = field(default_factory=dict)


def _idx_remotes(table: dict[str, tuple[tuple[str, ...], str]]) -> dict[str, Remote]:
    return {stem: Remote(stem + ".gz", digests, raw) for stem, (digests, raw) in table.items()}


# SHA-256 digests and where each came from: docs/data.md has the table.
SOURCES: dict[str, Source] = {
    "mnist": Source(
        "mnist",
        "idx",
        (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        _idx_remotes(
            {
                "train-images-idx3-ubyte": (
                    (
                        "d2cebd02927d553943b2679536bf602ec0cdcb6555ad87dda5d640e1d425faaf",
                        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    ),
                    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                ),
                "train-labels-idx1-ubyte": (
                    (
                        "2a107763ddf1eef92815bfbb1b855b662a7228add9dfab29de697c644d666cda",
                        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    ),
                    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                ),
                "t10k-images-idx3-ubyte": (
                    (
                        "4e612d6003de73386763f2c35c044ab376e830da80adb2347651a1f182f103a1",
                        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    ),
                    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                ),
                "t10k-labels-idx1-ubyte": (
                    (
                        "909a5aeb9fcec3f171b427c45622a55f69dc15dd80bd0624413cbfbe12553c1c",
                        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                    ),
                    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                ),
            }
        ),
    ),
    "fashion-mnist": Source(
        "fashion-mnist",
        "idx",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        _idx_remotes(
            {
                "train-images-idx3-ubyte": (
                    (
                        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
                    ),
                    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                ),
                "train-labels-idx1-ubyte": (
                    (
                        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
                    ),
                    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                ),
                "t10k-images-idx3-ubyte": (
                    (
                        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
                    ),
                    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                ),
                "t10k-labels-idx1-ubyte": (
                    (
                        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
                    ),
                    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                ),
            }
        ),
    ),
    "cifar10": Source(
        "cifar10",
        "cifar",
        ("https://www.cs.toronto.edu/~kriz/",),
        {
            "archive": Remote(
                "cifar-10-python.tar.gz",
                ("6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",),
                max_bytes=512 << 20,
            )
        },
    ),
    "cifar100": Source(
        "cifar100",
        "cifar",
        ("https://www.cs.toronto.edu/~kriz/",),
        {
            "archive": Remote(
                "cifar-100-python.tar.gz",
                ("85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",),
                max_bytes=512 << 20,
            )
        },
    ),
    "svhn": Source(
        "svhn",
        "mat",
        ("http://ufldl.stanford.edu/housenumbers/",),
        {
            "train": Remote(
                SVHN_FILES["train"],
                ("435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",),
            ),
            "test": Remote(
                SVHN_FILES["test"],
                ("cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",),
            ),
            "extra": Remote(
                SVHN_FILES["extra"],
                ("a133a4beb38a00fcdda90c9489e0c04f900b660ce8a316a5e854838379a71eb3",),
                max_bytes=2 << 30,
            ),
        },
    ),
}


def _source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(SOURCES)}")
    return SOURCES[name]


def _splits(src: Source, split: str | None) -> list[str]:
    by_kind = {"idx": list(MNIST_FILES), "mat": list(SVHN_FILES)}
    known = by_kind[src.kind] if src.kind in by_kind else list(CIFAR_FILES[src.name])
    if split is None:
        return known
    if split not in known:
        raise ValueError(f"split must be one of {known}, got {split!r}")
    return [split]


def cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/sdnet/<name>`` (``~/.cache/sdnet/<name>`` when unset)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "sdnet" / name


def search_dirs(
    name: str, data_dir: str | os.PathLike[str] | None = None
) -> list[tuple[str, Path | None]]:
    """The places searched for ``name``, in order, as ``(label, directory or None if unset)``."""
    sdnet_data = os.environ.get("SDNET_DATA", "")
    return [
        ("data_dir argument", Path(data_dir) if data_dir is not None else None),
        ("$SDNET_DATA/<dataset>", Path(sdnet_data) / name if sdnet_data else None),
        ("cache", cache_dir(name)),
        ("system datasets", SYSTEM_DATA_ROOT / name),
    ]


def _holds(src: Source, directory: Path, splits: list[str]) -> tuple[Path | None, str]:
    """The directory within ``directory`` holding every file of ``splits``, or why not."""
    if not directory.is_dir():
        return None, "no such directory"
    if src.kind == "cifar":
        found = batch_dir(directory, src.name, splits[0] if len(splits) == 1 else None)
        if found is not None:
            return found, "found"
        files = [f for s in splits for f in CIFAR_FILES[src.name][s]]
        return None, f"missing {', '.join(files)} (also looked in {CIFAR_SUBDIRS[src.name]}/)"
    if src.kind == "mat":
        absent = [SVHN_FILES[s] for s in splits if not (directory / SVHN_FILES[s]).is_file()]
        return (None, "missing " + ", ".join(absent)) if absent else (directory, "found")
    stems = [stem for s in splits for stem in MNIST_FILES[s]]
    missing = [stem for stem in stems if find_idx(directory, stem) is None]
    if missing:
        return None, "missing " + ", ".join(f"{m}[.gz]" for m in missing)
    return directory, "found"


def _mirrors(src: Source, mirrors: Sequence[str] | str | None) -> list[str]:
    if mirrors is None:
        env = os.environ.get("SDNET_MIRRORS", "").split()
        mirrors = env or list(src.mirrors)
    elif isinstance(mirrors, str):
        mirrors = mirrors.split()
    return [m if m.endswith("/") else m + "/" for m in mirrors]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _raw_sha256(path: Path, limit: int) -> str | None:
    """SHA-256 of a gzip file's decompressed content; None if it does not decompress."""
    digest, total = hashlib.sha256(), 0
    try:
        with gzip.open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                total += len(chunk)
                if total > limit:
                    return None
                digest.update(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return digest.hexdigest()


def _fetch(url: str, remote: Remote, target: Path, progress: bool) -> Path:
    """Download ``url`` into a temporary file in ``target`` and verify it.

    Returns the temporary path (fsync-ed, verified); the caller renames it. Raises
    ``ChecksumError`` for a wrong digest and ``OSError`` (``URLError``, ...) for transport
    failures; the temporary file is removed on any failure.
    """
    fd, tmp_name = tempfile.mkstemp(dir=target, prefix=f".{remote.filename}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "sdnet"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=TIMEOUT_S) as r:
            length = r.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            if expected is not None and expected > remote.max_bytes:
                raise OSError(f"server announces {expected} bytes, more than {remote.max_bytes}")
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=expected, unit="B", unit_scale=True, desc=remote.filename)
            digest, total = hashlib.sha256(), 0
            try:
                for chunk in iter(lambda: r.read(_CHUNK), b""):
                    total += len(chunk)
                    if total > remote.max_bytes:
                        raise OSError(f"more than {remote.max_bytes} bytes, aborted")
                    digest.update(chunk)
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
            if expected is not None and total != expected:
                raise OSError(f"incomplete transfer: {total} of {expected} bytes")
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got not in remote.sha256:
            raw = _raw_sha256(tmp, 1 << 30) if remote.raw_sha256 else None
            if raw is None or raw != remote.raw_sha256:
                raise ChecksumError(
                    f"{remote.filename} from {url}: SHA-256 {got} is not the published "
                    f"{' or '.join(remote.sha256)} (corrupt, truncated or tampered; discarded)"
                )
        return tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _extract_cifar(archive: Path, name: str, target: Path) -> None:
    """Extract the expected batch files of a verified CIFAR archive into ``target``.

    Only the known member names are read, only as regular files (no links, devices or paths of
    the archive's choosing); each goes to a temporary file and all are renamed into place only
    once every one of them has been read.
    """
    subdir = CIFAR_SUBDIRS[name]
    wanted = {f"{subdir}/{f}": f for s in CIFAR_FILES[name].values() for f in s}
    staged: dict[str, Path] = {}  # base name -> temporary file
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    base = wanted.get(member.name.removeprefix("./"))
                    if base is None or base in staged:
                        continue
                    if not member.isreg():
                        raise DataError(f"{archive}: member {member.name} is not a regular file")
                    fd, tmp_name = tempfile.mkstemp(dir=target, prefix=f".{base}.", suffix=".part")
                    staged[base] = Path(tmp_name)
                    src = tar.extractfile(member)
                    assert src is not None  # regular members always have data
                    with os.fdopen(fd, "wb") as out, src:
                        for chunk in iter(lambda: src.read(_CHUNK), b""):  # noqa: B023
                            out.write(chunk)
                        out.flush()
                        os.fsync(out.fileno())
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{archive}: cannot extract ({exc})") from exc
        missing = sorted(k for k, base in wanted.items() if base not in staged)
        if missing:
            raise DataError(f"{archive}: archive lacks {', '.join(missing)}")
        for base, tmp in staged.items():
            publish(tmp, target / base)
        fsync_dir(target)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)


def download(
    name: str,
    split: str | None = None,
    mirrors: Sequence[str] | str | None = None,
    progress: bool = False,
) -> tuple[Path | None, list[str]]:
    """Download ``split``'s files (all splits when None) of ``name`` into its cache directory.

    Returns ``(directory, log)``: the directory now holding the files, or ``None`` when every
    mirror failed for some file, and one line per attempt saying what happened. Raises
    :class:`ChecksumError` when a file could not be had and at least one mirror served it
    with a wrong digest (a corrupt or tampered copy is worth more than "not found").
    """
    src = _source(name)
    splits = _splits(src, split)
    target = cache_dir(name)
    log: list[str] = []
    remotes = _missing_remotes(src, splits, target)
    urls = _mirrors(src, mirrors)
    if not urls:
        return None, ["no mirrors configured (mirrors=[] or an empty $SDNET_MIRRORS)"]
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return None, [f"cannot create the cache directory {target}: {exc}"]
    for remote in remotes:
        got = _fetch_from_mirrors(remote, urls, target, progress, log)
        if got is None:
            return None, log
        if src.kind == "cifar":
            try:
                _extract_cifar(got, name, target)
            finally:
                got.unlink(missing_ok=True)
        else:
            try:
                publish(got, target / remote.filename)
            except BaseException:
                got.unlink(missing_ok=True)
                raise
            fsync_dir(target)
    return target, log


def _missing_remotes(src: Source, splits: list[str], target: Path) -> list[Remote]:
    """The files to download: the IDX files of ``splits`` not yet in ``target``, the SVHN
    ``.mat`` files of ``splits`` not yet there, or the CIFAR archive."""
    if src.kind == "idx":
        needed = [stem for s in splits for stem in MNIST_FILES[s]]
        needed = [stem for stem in needed if find_idx(target, stem) is None]
        return [src.remotes[stem] for stem in needed]
    if src.kind == "mat":
        return [src.remotes[s] for s in splits if not (target / SVHN_FILES[s]).is_file()]
    return [src.remotes["archive"]]


def _fetch_from_mirrors(
    remote: Remote, urls: list[str], target: Path, progress: bool, log: list[str]
) -> Path | None:
    """Try each mirror in turn for ``remote`` (one ``log`` line per attempt); the verified
    temporary file, or None when all failed, ChecksumError when one served a wrong digest."""
    bad_digest: list[str] = []
    for base in urls:
        url = base + remote.filename
        try:
            got = _fetch(url, remote, target, progress)
        except ChecksumError as exc:
            bad_digest.append(str(exc))
            log.append(f"{url}: checksum mismatch ({exc})")
            continue
        except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts, bad URLs
            log.append(f"{url}: {_reason(exc)}")
            continue
        log.append(f"{url}: downloaded and verified")
        return got
    if bad_digest:
        raise ChecksumError(
            f"{remote.filename}: no mirror served a file with the published SHA-256; "
            "nothing was kept in the cache. Attempts:\n  " + "\n  ".join(log)
        )
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"unreachable ({exc.reason})"
    return f"{type(exc).__name__}: {exc}"


def locate(
    name: str,
    split: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    mirrors: Sequence[str] | str | None = None,
    progress: bool = False,
) -> Path:
    """The directory holding ``name``'s files for ``split`` (every split when None).

    Searches the places listed in the module docstring in order, then downloads into the cache
    unless ``download=False``. Raises :class:`DataNotFound` naming every place searched, every
    mirror tried and why it failed, and how to provide the files; :class:`ChecksumError` when
    a mirror served a corrupt copy and no mirror a good one.
    """
    src = _source(name)
    splits = _splits(src, split)
    if data_dir is not None and not Path(data_dir).is_dir():
        # an explicit folder that is not there is a mistake to report, not a place to skip
        raise DataNotFound(
            f"data_dir {data_dir}: no such directory; pass the folder holding the {name} files"
        )
    report: list[str] = []
    for label, directory in search_dirs(name, data_dir):
        if directory is None:
            report.append(f"{label}: not set")
            continue
        found, why = _holds(src, directory, splits)
        if found is not None:
            return found
        report.append(f"{label}: {directory}: {why}")
    if download:
        target, log = _download(name, split, mirrors, progress)
        if target is not None:
            found, why = _holds(src, target, splits)
            if found is not None:
                return found
            log.append(f"after download, {target}: {why}")
        attempts = "\n  ".join(log)
    else:
        attempts = "download=False: no download attempted"
    what = f"{name} ({', '.join(splits)})"
    raise DataNotFound(
        f"{what} not found. Searched, in order:\n  "
        + "\n  ".join(report)
        + f"\nDownload:\n  {attempts}\n"
        f"To use local files: pass data_dir=<directory holding the files>, or set "
        f"SDNET_DATA=<root> with the files in <root>/{name}/, or copy them to {cache_dir(name)}/ "
        f"(mirror file names: {', '.join(r.filename for r in src.remotes.values())})."
    )


_download = download  # `locate`'s parameter named `download` shadows the function
