"""Checkpoints: plain ``.npz`` files (read with ``allow_pickle=False``) plus JSON metadata.

One file holds everything, so one atomic rename publishes it:

* ``model/<name>``  every parameter and buffer (PyTorch key names, host NumPy arrays);
* ``optim/<name>``  the optimizer's momentum buffers (training checkpoints);
* ``__meta__``      UTF-8 JSON as a uint8 array: format and version, the model's config (enough to
  rebuild it with :func:`sdnet.build_model`), the sdnet version, a SHA-256 of every array, and for
  training checkpoints the optimizer hyperparameters, epoch, step, every RNG stream's state and
  the history so far.

Writes go to a temporary file in the same directory, are flushed and fsynced, then renamed over
the target (``os.replace``, atomic on POSIX and Windows): a crash during a save leaves the
previous checkpoint whole. Arrays are host NumPy, so a checkpoint written on a GPU loads on a
CPU and the other way round. Reading checks the format, the keys, dtypes (no object arrays) and
every checksum, and raises :class:`CheckpointError` naming the file.

Before any array is read, every zip entry must be stored uncompressed (as sdnet writes them) and
be a ``.npy`` array of a plain dtype whose header's shape matches the entry's size: a file
cannot make the reader allocate more memory than its own size (no zip bombs, no headers that
claim terabytes), and pickled entries are refused before NumPy looks at them. :func:`load`
also asks the model registry how many values the stored configuration implies (depth, width,
channels, classes, SeedNet widths) before building the model, and refuses a configuration that
asks for far more than the file holds, so a forged configuration cannot make it build a huge
network; the built model's strict state loading then checks every name and shape.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any, cast

import numpy as np

from sdnet._io import atomic_write_bytes

__all__ = [
    "CheckpointError",
    "FORMAT",
    "save",
    "load",
    "write_checkpoint",
    "read_checkpoint",
    "stored_extra",
]

FORMAT = "sdnet-checkpoint"
VERSION = 1
_META = "__meta__"
_META_SHA = "meta_sha256"  # the metadata's own digest (files written before it have none)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip
_DTYPES = {"float32", "float64", "int64", "int32", "uint8", "bool"}
# a stored configuration may ask for at most this many times the file's values (plus the
# slack) before it is refused unbuilt: a bounded amount of memory for a detailed message
_BUILD_FACTOR, _BUILD_SLACK = 4, 1 << 20


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt, or not an sdnet checkpoint."""


def _sha256(a: np.ndarray) -> str:
    """Digest of an array's dtype (with byte order), shape and bytes: a byte-swapped or
    reshaped array does not pass for the original."""
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _meta_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of the metadata's canonical JSON, its own digest left out."""
    text = json.dumps({k: v for k, v in meta.items() if k != _META_SHA}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def write_checkpoint(
    path: str | os.PathLike[str],
    arrays: dict[str, np.ndarray],
    meta: dict[str, Any],
    *,
    overwrite: bool = True,
) -> Path:
    """Atomically write ``arrays`` (host NumPy, plain dtypes) and JSON ``meta`` to ``path``.

    ``overwrite=False`` refuses an existing file; a path that is not a regular file is always
    refused (:func:`sdnet._io.check_target`).
    """
    clean: dict[str, np.ndarray] = {}
    for key, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.name not in _DTYPES:
            raise TypeError(f"checkpoint array {key!r} has dtype {a.dtype}; plain numbers only")
        clean[key] = a
    meta = dict(meta, format=FORMAT, version=VERSION)
    meta["sha256"] = {k: _sha256(a) for k, a in clean.items()}
    meta = json.loads(json.dumps(meta))  # as it reads back (keys as text), then its digest
    meta[_META_SHA] = _meta_digest(meta)
    blob = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)

    def write(fh: Any) -> None:
        np.savez(fh, **clean, **{_META: blob})  # type: ignore[arg-type]

    return atomic_write_bytes(path, write, overwrite=overwrite)


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify a checkpoint: ``(arrays, meta)``.

    Raises
    ------
    CheckpointError
        Missing, truncated, bit-flipped, pickled or foreign files, naming ``path``.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file (a directory or a device): give a checkpoint")
    _check_magic(path)
    arrays = _read_arrays(path)
    meta = _read_meta(path, arrays)
    _verify_arrays(path, arrays, meta)
    return arrays, meta


def _check_magic(path: Path) -> None:
    """Refuse a file that is not a zip archive before NumPy guesses what it is (NumPy takes
    anything that is neither a zip nor a ``.npy`` file for a pickle)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise CheckpointError(f"{path}: unreadable ({exc.strerror or exc})") from exc
    if head not in _ZIP_MAGIC:
        what = "it is empty" if not head else f"it starts with {head!r}"
        if head[:1] == b"\x80":  # pickle protocol 2 and later
            what = "it holds pickled Python objects, which sdnet never loads"
        raise CheckpointError(
            f"{path} is not an sdnet checkpoint: not a NumPy .npz archive ({what}); give a "
            "model.npz, best.npz or checkpoint.npz written by sdnet"
        )


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every entry of the ``.npz`` file (its entries checked first), or CheckpointError."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path}: not an sdnet checkpoint (a single .npy array)")
        with loaded as z:
            _check_entries(z.zip, path)  # type: ignore[arg-type]
            return {k: z[k] for k in z.files}
    except CheckpointError:
        raise
    except ValueError as exc:
        # NumPy says "allow_pickle=False" when an entry would need pickle (object arrays)
        why = "it holds pickled objects" if "pickle" in str(exc) else "not a NumPy archive"
        raise CheckpointError(f"{path}: refused, {why} ({exc})") from exc
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        KeyError,
        NotImplementedError,
        RuntimeError,
    ) as exc:  # zipfile raises the last two for damaged headers (method, flags, encryption)
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({exc})") from exc


def _read_meta(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Pop the ``__meta__`` entry from ``arrays`` and check its JSON's format and version."""
    if _META not in arrays:
        raise CheckpointError(f"{path}: not an sdnet checkpoint (no {_META} entry)")
    try:
        meta = json.loads(arrays.pop(_META).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt metadata ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupt metadata (not a JSON object)")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an sdnet checkpoint (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {meta.get('version')} is not supported by this "
            f"sdnet (reads version {VERSION}); upgrade sdnet"
        )
    if _META_SHA in meta and meta[_META_SHA] != _meta_digest(meta):
        raise CheckpointError(f"{path}: checksum mismatch in its metadata (the file is corrupt)")
    return meta


def _verify_arrays(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Check the arrays are those the metadata lists, of plain dtypes, with their digests."""
    sums = meta.get("sha256", {})
    if not isinstance(sums, dict) or set(sums) != set(arrays):
        raise CheckpointError(f"{path}: the arrays do not match the metadata's list")
    for key, a in arrays.items():
        if a.dtype.name not in _DTYPES:
            raise CheckpointError(f"{path}: array {key!r} has unsupported dtype {a.dtype}")
        if _sha256(a) != sums[key]:
            raise CheckpointError(f"{path}: checksum mismatch in {key!r} (the file is corrupt)")


def _check_entries(zf: zipfile.ZipFile, path: Path) -> None:
    """Refuse, before reading any array, entries that are compressed, not ``.npy``, pickled,
    or whose header's shape and dtype do not account for exactly the entry's bytes."""
    size = path.stat().st_size
    for info in zf.infolist():
        name = info.filename
        if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
            raise CheckpointError(
                f"{path}: entry {name!r} is compressed; sdnet checkpoints are stored "
                "uncompressed (a foreign or tampered file)"
            )
        with zf.open(info) as fh:
            try:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                else:
                    raise ValueError(f".npy format version {version} is not used by sdnet")
            except ValueError as exc:
                msg = f"{path}: entry {name!r} is not a NumPy array ({exc})"
                raise CheckpointError(msg) from exc
            head = fh.tell()
        if dtype.hasobject:
            raise CheckpointError(f"{path}: refused, it holds pickled objects (entry {name!r})")
        declared = math.prod(shape) * dtype.itemsize
        if declared != info.file_size - head:
            raise CheckpointError(
                f"{path}: entry {name!r} declares {shape} {dtype} = {declared} bytes but holds "
                f"{info.file_size - head} (truncated, corrupt or forged)"
            )


def _size_problem(name: str, config: dict[str, Any], state: dict[str, np.ndarray]) -> str | None:
    """What in ``config`` asks for a much larger model than the stored arrays, found without
    building it (``None``: small enough to build; every shape is checked once it is built).

    The model registry counts the values the configuration implies (``state_size``); a file
    holds at most its own size in values, so a forged configuration asking for a huge network
    is refused before anything is allocated. A model up to a few times the file's size is
    built, so that the strict state loading names the first parameter that differs.
    """
    from sdnet.models import registry

    try:
        family, implied = registry.resolve(name)
        wanted = family.state_size({**config, **implied, "name": name})
    except (KeyError, TypeError, ValueError) as exc:
        return f"its configuration is not understood ({exc})"
    held = sum(int(a.size) for a in state.values())
    if wanted > _BUILD_FACTOR * held + _BUILD_SLACK:
        return (
            f"its configuration ({_describe(config, name)}) implies {wanted:,} values, the file "
            f"holds {held:,}"
        )
    return None


def _describe(config: dict[str, Any], name: str) -> str:
    keys = ("width", "in_channels", "num_classes", "widths", "shortcut")
    return ", ".join([name] + [f"{k}={config[k]}" for k in keys if k in config])


def _model_meta(model: Any) -> dict[str, Any]:
    import sdnet

    return {"kind": "weights", "model": dict(model.config), "sdnet_version": sdnet.__version__}


def save(
    model: Any,
    path: str | os.PathLike[str],
    *,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save a model's weights and configuration to ``path`` (an ``.npz`` file), atomically.

    Parameters
    ----------
    model : sdnet.Model
    path : path-like
    extra : dict, optional
        JSON-able information stored with the weights (e.g. the dataset's normalization).
    overwrite : bool
        Replace an existing file (default: refuse it, so that nothing is lost by mistake).
        A path that is not a regular file (a directory, a device, a FIFO, a symbolic link) is
        always refused.

    Returns
    -------
    Path
        Where the file was written.

    Raises
    ------
    sdnet.WriteRefused
        ``path`` exists (without ``overwrite``) or is not a regular file; nothing is written.
    """
    meta = _model_meta(model)
    if extra:
        meta["extra"] = extra
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    return write_checkpoint(path, arrays, meta, overwrite=overwrite)


def stored_extra(meta: dict[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked ``extra`` of a checkpoint's metadata (``{}`` when it has none).

    ``dataset`` must be text, ``normalize`` one of sdnet's scalings, ``mean`` and ``std`` lists
    of finite numbers (``std`` > 0) of the same length; anything else raises
    :class:`CheckpointError` naming ``path``, so a damaged file never yields NaN predictions.
    """
    extra = meta.get("extra")
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path}: its 'extra' metadata is not a table (a damaged file)")
    dataset, normalize = extra.get("dataset"), extra.get("normalize", "dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise CheckpointError(f"{path}: its stored dataset {dataset!r} is not a name")
    if normalize not in ("dataset", "unit"):
        raise CheckpointError(f"{path}: its stored input scaling {normalize!r} is unknown")
    mean, std = extra.get("mean"), extra.get("std")
    if mean is None and std is None:
        return extra
    if not all(isinstance(s, list) and s and all(_number(v) for v in s) for s in (mean, std)):
        raise CheckpointError(
            f"{path}: its stored normalization (mean {mean!r}, std {std!r}) is not two lists of "
            "finite numbers"
        )
    mean, std = cast(list[float], mean), cast(list[float], std)  # checked above
    if len(mean) != len(std) or min(std) <= 0:
        raise CheckpointError(
            f"{path}: its stored normalization is unusable (std {std!r} must be > 0, one value "
            "per channel, as many as mean)"
        )
    return extra


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_finite(path: Any, state: dict[str, np.ndarray]) -> None:
    """Refuse weights or buffers holding NaN or infinity (a diverged model saved anyway)."""
    for key, a in state.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            raise CheckpointError(
                f"{path}: {bad} of the {a.size} values of {key!r} are NaN or infinite (the model "
                "had diverged when it was saved); use an earlier checkpoint"
            )


def _stored_model(meta: dict[str, Any], path: Any) -> tuple[str, dict[str, Any]]:
    """The model's name and options from the metadata, checked to be a table with a name."""
    stored = meta.get("model")
    if not isinstance(stored, dict) or not stored.get("name"):
        raise CheckpointError(f"{path}: no model configuration stored")
    config = dict(stored)
    name = config.pop("name")
    if not isinstance(name, str):
        raise CheckpointError(f"{path}: its stored model name {name!r} is not a name")
    return name, config


def load(path: str | os.PathLike[str], *, device: Any = "cpu") -> Any:
    """Rebuild a model from a file written by :func:`save` or by training, on ``device``.

    Works across devices: a checkpoint written on a GPU loads on a CPU and the other way round.

    Raises
    ------
    CheckpointError
        The file is missing, damaged, foreign or hostile, its stored configuration does not
        fit its arrays (checked before the model is built), or its weights or stored
        normalization are not finite numbers; the message names ``path``.
    sdnet.BackendUnavailable
        ``device`` cannot be used.
    """
    from sdnet.backends import get_backend
    from sdnet.models import build_model

    arrays, meta = read_checkpoint(path)
    name, config = _stored_model(meta, path)
    stored_extra(meta, path)
    backend = get_backend(device)  # a bad device is the caller's error, not the file's
    state = {k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")}
    _check_finite(path, state)
    problem = _size_problem(name, config, state)
    if problem:
        raise CheckpointError(f"{path}: weights do not fit {name} ({problem})")
    try:
        model = build_model(name, device=backend, **config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: model configuration not understood ({exc})") from exc
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: weights do not fit {name} ({exc})") from exc
    return model
