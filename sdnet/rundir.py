"""A run directory: ``config.json``, ``metrics.jsonl``, ``checkpoint.npz``, ``model.npz``.

* ``config.json``     the :class:`~sdnet.config.TrainConfig` of the run (written once, atomically);
* ``metrics.jsonl``   one JSON object per line: ``{"type": "step", ...}`` every ``log_every``
  steps, ``{"type": "epoch", ...}`` per epoch (the history), ``{"type": "event", ...}`` for
  interruptions and failures;
* ``checkpoint.npz``  the latest training checkpoint (model, optimizer, schedule position,
  every RNG stream): what ``resume`` continues from;
* ``model.npz``       the final weights (:func:`sdnet.load` reads it); ``best.npz`` the weights
  at the best validation accuracy when a validation split is used;
* ``run.json``        what makes the folder an sdnet run: the format, the run's id (a random
  token written when the run is created and stored in every training checkpoint, so that a
  checkpoint copied from another run is refused) and when it was created;
* ``.lock``           present while a process trains in the directory (:class:`RunLock`).

A new run goes only into an absent or empty folder (sdnet's own lock and temporary files
aside), never into ``/`` or the home folder, so it cannot take over, append to or replace a
user's files; a folder holding a run is continued with ``resume``.

One process at a time: training takes ``.lock`` with an exclusive ``flock`` (released by the
operating system when the process ends, however it ends) and writes its pid, host and start
time into it, so a second process pointed at the same directory is refused with a message that
names the holder. Where ``flock`` is unavailable (Windows, some network filesystems) the file
is created exclusively instead, and one whose process is gone from this host is taken over.
A killed writer can leave a hidden temporary file (``.checkpoint.npz.<random>.tmp``); the next
process to take the lock deletes it.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sdnet._io import atomic_write_bytes, check_target

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "RunDirError",
    "RunWriteError",
    "RunLock",
    "new_run_dir",
    "claim_new_run_dir",
    "read_marker",
    "write_marker",
    "MetricsLog",
    "CONFIG",
    "METRICS",
    "CHECKPOINT",
    "LOCK",
    "MARKER",
]

CONFIG, METRICS, CHECKPOINT = "config.json", "metrics.jsonl", "checkpoint.npz"
MODEL, BEST = "model.npz", "best.npz"
MARKER, RUN_FORMAT = "run.json", "sdnet-run"
LOCK = ".lock"
_PROBE = ".sdnet-write-test."
_WRITTEN = (CONFIG, METRICS, CHECKPOINT, MODEL, BEST, MARKER)  # files a run writes


class RunDirError(ValueError):
    """A run directory cannot be used (exists already, in use, unreadable, not a run)."""


class RunWriteError(OSError):
    """A file of the run directory could not be written (disk full, I/O error, permissions).

    Training stops; the previous checkpoint is left as it was.

    Attributes
    ----------
    errno : int or None
        The operating system's error number (``errno.ENOSPC``, ``errno.EIO``, ...).
    path : Path
        The file that could not be written.
    """

    def __init__(self, message: str, path: Path, cause: OSError) -> None:
        super().__init__(message)
        self.errno = cause.errno
        self.path = path


def new_run_dir(run_dir: str | os.PathLike[str] | None, dataset: str, model: str) -> Path:
    """Create the directory of a new run (default ``runs/<time>-<dataset>-<model>``).

    Only an absent or empty folder is taken (see the module docstring), so nothing is
    overwritten or mixed with a user's files.
    """
    if run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path("runs") / f"{stamp}-{dataset}-{model}"
        path, i = base, 1
        while path.exists():
            i += 1
            path = base.with_name(f"{base.name}-{i}")
    else:
        path = Path(run_dir)
    _refuse_used(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=_PROBE, dir=path)  # a name of its own
        os.close(fd)
        Path(probe).unlink(missing_ok=True)  # the lock holder may have cleaned it up
    except OSError as exc:
        raise RunDirError(f"cannot write to run directory {path}: {exc.strerror or exc}") from exc
    return path


def _ours(name: str) -> bool:
    """sdnet's housekeeping files: the lock, the write probe, temporaries of its writes."""
    if name == LOCK or name.startswith(_PROBE):
        return True
    return name.endswith(".tmp") and any(name.startswith(f".{n}.") for n in _WRITTEN)


def _forbidden(path: Path) -> str | None:
    """Why ``path`` can never hold a new run (the root or the home folder), or ``None``."""
    try:
        real = path.resolve()
        home = Path.home().resolve()
    except (OSError, RuntimeError):  # no home folder known
        real, home = path.resolve(), None
    if real == Path(real.anchor):
        return "the root of the filesystem"
    if real == home:
        return "your home folder"
    return None


def _refuse_used(path: Path) -> None:
    """Refuse a folder that holds a run, a file, something else, or that is ``/`` or home."""
    where = _forbidden(path)
    if where:
        raise RunDirError(
            f"{path} is {where}: a run directory is a folder of its own; give a new folder "
            "(run_dir, --run-dir), e.g. runs/first, or leave it unset for runs/<time>-..."
        )
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path} exists and is not a folder: choose a new folder for the run")
    if any((path / n).exists() for n in (CONFIG, CHECKPOINT, MARKER)):
        raise RunDirError(
            f"{path} already holds a run; continue it with resume={str(path)!r} "
            "(sdnet train --resume DIR) or choose another run_dir"
        )
    try:
        foreign = (
            sorted(p.name for p in path.iterdir() if not _ours(p.name)) if path.exists() else []
        )
    except OSError as exc:
        raise RunDirError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if foreign:
        shown = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise RunDirError(
            f"{path} is not empty ({shown}) and is not an sdnet run directory: a new run goes "
            "into an empty or new folder, so that no file of yours is replaced; choose another "
            "run_dir (--run-dir)"
        )


def claim_new_run_dir(
    run_dir: str | os.PathLike[str] | None, dataset: str, model: str
) -> tuple[Path, RunLock]:
    """:func:`new_run_dir`, locked for this process.

    Checked again under the lock, so two processes starting a run in the same directory at
    once cannot both write there.

    Parameters
    ----------
    run_dir : path-like or None
        The directory (``None``: ``runs/<time>-<dataset>-<model>``).
    dataset, model : str
        Used in the default name.

    Returns
    -------
    (Path, RunLock)
        The directory and its lock (release it when the run ends).

    Raises
    ------
    RunDirError
        The directory holds a run, is in use by another process, or cannot be written.
    """
    if run_dir is not None and (Path(run_dir) / LOCK).exists():
        with RunLock.acquire(run_dir):  # in use by a live process: say so, not "holds a run"
            pass
    path = new_run_dir(run_dir, dataset, model)
    lock = RunLock.acquire(path)
    try:
        _refuse_used(path)
    except BaseException:
        lock.release()
        raise
    return path, lock


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (Linux), which tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the parenthesised name: field 3 onwards
    return fields[19] if len(fields) > 19 else None  # field 22, starttime


def _holder_alive(info: dict[str, Any]) -> bool | None:
    """Whether the process named by a lock file still runs: ``None`` when it cannot be told
    (another host, or no pid)."""
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:
        return None
    started = info.get("proc_start")
    return not (started is not None and _proc_start(pid) not in (None, started))


def _describe(info: dict[str, Any]) -> str:
    if not info:
        return "another process"
    own = info.get("pid") == os.getpid() and info.get("host") == socket.gethostname()
    who = "this process" if own else "process"
    started = info.get("started")
    since = f" since {_utc(started)}" if isinstance(started, (int, float)) else ""
    return f"{who} {info.get('pid')} on {info.get('host')}{since}"


class RunLock:
    """Exclusive use of a run directory by one process, through ``RUN_DIR/.lock``.

    Take it with :meth:`acquire`, give it back with :meth:`release` (or use it as a context
    manager). The file holds the holder's pid, host name and start time as JSON; a second
    process (or a second run in the same process) gets :class:`RunDirError` naming the holder.
    A lock left by a process that is no longer running is taken over, and :attr:`note` says so.

    Attributes
    ----------
    path : Path
        The lock file.
    note : str or None
        A message when the lock of a process that is gone was taken over (else ``None``);
        also set when stale temporary files of a killed writer were removed.
    """

    def __init__(self, path: Path, fd: int, note: str | None) -> None:
        self.path, self._fd, self.note = path, fd, note

    @classmethod
    def acquire(cls, run_dir: str | os.PathLike[str]) -> RunLock:
        """Lock ``run_dir`` (which must exist) for this process.

        Raises
        ------
        RunDirError
            Another live process (or another run of this process) holds the directory.
        """
        path = Path(run_dir) / LOCK
        try:
            for _ in range(100):  # retried only when a holder released it in between
                taken = _take_flock(path) if fcntl is not None else None
                if taken is None:  # no kernel locks here: create the file exclusively
                    taken = _take_exclusive(path)
                if taken is not None:
                    fd, old = taken
                    break
            else:
                raise RunDirError(f"could not lock {path}: it keeps changing; try again")
        except OSError as exc:  # e.g. a missing or read-only directory
            raise RunDirError(f"cannot lock {path}: {exc.strerror or exc}") from exc
        note = None
        if old:
            note = f"took over {path} from {_describe(old)}, which is no longer running"
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "proc_start": _proc_start(os.getpid()),
        }
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(info) + "\n").encode())
            removed = _remove_temporaries(path.parent)
        except OSError as exc:
            os.close(fd)
            raise RunDirError(f"cannot write {path}: {exc.strerror or exc}") from exc
        if removed:
            what = f"removed {len(removed)} temporary file(s) left by an interrupted write"
            note = f"{note}; {what}" if note else what
        return cls(path, fd, note)

    def release(self) -> None:
        """Delete the lock file and give up the lock (no-op when already released)."""
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        try:
            if _same_file(fd, self.path):
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._fd >= 0

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_info(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {"pid": "?", "host": "?"}
    return data if isinstance(data, dict) else {"pid": "?", "host": "?"}


def _busy(path: Path, info: dict[str, Any], hint: str = "") -> RunDirError:
    run = path.parent
    return RunDirError(
        f"run directory {run} is in use by {_describe(info)} (lock file {path}); wait for that "
        f"run to end, or stop it (Ctrl-C saves a checkpoint) and resume with "
        f"resume={str(run)!r} (sdnet train --resume {run}), or choose another run_dir{hint}"
    )


def _open_lock(path: Path, flags: int) -> int:
    """Open the lock file without following a symbolic link, and only a regular file (a link
    or a device planted as ``.lock`` is never truncated or written)."""
    fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0), 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file (remove it)", str(path))
    return fd


def _take_flock(path: Path) -> tuple[int, dict[str, Any]] | None:
    """``(fd, previous content)`` once locked with ``flock``; ``None`` where the filesystem has
    no such locks. Raises RunDirError when another open file holds the lock. The retry loop
    reruns it when the file was deleted by its holder between our open and our lock."""
    fd = _open_lock(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        info = _read_info(fd)
        os.close(fd)
        raise _busy(path, info) from None
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        raise RunDirError(f"cannot lock {path}: {exc.strerror or exc}") from exc
    if not _same_file(fd, path):  # released and deleted meanwhile: lock the new file
        os.close(fd)
        return _take_flock(path)
    return fd, _read_info(fd)


def _take_exclusive(path: Path) -> tuple[int, dict[str, Any]] | None:
    """Create the lock file exclusively: ``(fd, content of a stale file it replaced)``. A file
    left by a process that is gone from this host is replaced; ``None`` when another process
    replaced it first (to try again). Best effort: two processes replacing the same stale file
    at the same instant cannot be ruled out without kernel locks."""
    try:
        return _open_lock(path, os.O_RDWR | os.O_CREAT | os.O_EXCL), {}
    except FileExistsError:
        pass
    try:
        fd = _open_lock(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    info = _read_info(fd)
    os.close(fd)
    if _holder_alive(info) is not False:
        hint = f"; if no run is using it any more, delete {path}"
        raise _busy(path, info, hint)
    try:
        fd = _open_lock(path, os.O_RDONLY)
        same = _read_info(fd) == info  # still that stale file? (narrows the race window)
        os.close(fd)
        if not same:
            return None
        os.unlink(path)
        return _open_lock(path, os.O_RDWR | os.O_CREAT | os.O_EXCL), info
    except (FileNotFoundError, FileExistsError):  # another process got there first
        return None


def _remove_temporaries(run_dir: Path) -> list[Path]:
    """Delete the hidden temporary files of writes that a killed process left behind (only the
    lock holder writes in a run directory, so none of them is in use)."""
    names = (CONFIG, METRICS, CHECKPOINT, MODEL, BEST)
    found = [p for n in names for p in run_dir.glob(f".{n}.*.tmp")]
    found += list(run_dir.glob(f"{_PROBE}*"))
    for p in found:
        p.unlink(missing_ok=True)
    return found


def write_marker(run_dir: Path) -> str:
    """Write ``RUN_DIR/run.json`` for a new run (or one starting over); returns its run id."""
    import sdnet

    run_id = uuid.uuid4().hex
    write_json(
        run_dir / MARKER,
        {
            "format": RUN_FORMAT,
            "version": 1,
            "run_id": run_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "sdnet_version": sdnet.__version__,
        },
    )
    return run_id


def read_marker(run_dir: Path) -> str | None:
    """The run id in ``RUN_DIR/run.json``; ``None`` when there is no such file (a run made by
    an sdnet before run ids, or one stopped before its first checkpoint)."""
    path = run_dir / MARKER
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path} is unreadable: {exc}") from exc
    run_id = data.get("run_id") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("format") != RUN_FORMAT
        or not isinstance(run_id, str)
    ):
        raise RunDirError(f"{path} is not an sdnet run file: {run_dir} is not a run sdnet made")
    return run_id


def write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(path, lambda fh: fh.write(text.encode()))


def read_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The saved configuration of the run in ``run_dir``."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"run directory {path} does not exist")
    try:
        data = json.loads((path / CONFIG).read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path} is not an sdnet run directory (no {CONFIG})") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path / CONFIG} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise RunDirError(f"{path / CONFIG} does not hold a configuration")
    return data


class MetricsLog:
    """Append-only JSON lines, flushed after every record."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        """Append one record; a failed write raises :class:`RunWriteError` naming the file
        (a path that is not a regular file is refused, as by every write of sdnet)."""
        try:
            check_target(self.path)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
        except OSError as exc:
            raise RunWriteError(
                f"cannot append to {self.path}: {exc.strerror or exc}", self.path, exc
            ) from exc

    def read(self) -> list[dict[str, Any]]:
        """Every record; a torn last line (crash mid-write) is skipped."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def keep_until(self, step: int) -> None:
        """Drop records written after ``step`` (the resumed checkpoint's step): on resume the
        steps after the checkpoint are trained again and logged again."""
        kept = [r for r in self.read() if r.get("step", 0) <= step or r.get("type") == "event"]
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
        atomic_write_bytes(self.path, lambda fh: fh.write(text.encode()))
