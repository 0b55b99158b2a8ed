"""Every file sdnet writes goes through here: checked first, then written durably.

:func:`check_target` decides whether a path may be written; :func:`atomic_write_bytes` writes a
whole file (a temporary file in the target's folder, fsync, atomic rename, fsync of the
folder) after that check, :func:`publish` renames a file a writer staged itself (downloads,
archive members) after it, and ``metrics.jsonl`` appends make the same check first. The rules:

* only a regular file is ever replaced: a directory, a device node (``/dev/null``,
  ``/dev/full``), a FIFO or a socket at the path is refused (a rename would replace the node
  itself, even as root);
* a symbolic link at the path is refused, not followed: the rename would replace the link, and
  writing through it would write wherever it points (a link planted in a run directory could
  make a process running as root replace a system file). The message names where the link
  points, so the real path can be given instead. Links in the folders above are followed;
* a file that is an input of the same command (the same inode: the same file, a hard link to
  it, or the file behind a symbolic link) is refused, so ``sdnet export model.npz model.npz``
  cannot destroy its own input;
* ``overwrite=False`` (outputs a user names: ``sdnet export``, :func:`sdnet.save`,
  ``sdnet plot --out``) refuses an existing file; the new file is published with ``link``,
  which fails if the name appeared meanwhile, so even a file created during the write is
  kept;
* the new file gets the mode the umask gives (``0o666 & ~umask``, usually ``0644``), as a
  file created with ``open`` would, not the ``0600`` of a temporary file.

On any error the temporary file is removed and the previous file (if any) is untouched. The
checks run before the write and again just before the rename; a path swapped for something
else in between by another process is the remaining window, which only ``overwrite=False``
closes.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "WriteRefused",
    "atomic_write_bytes",
    "check_target",
    "fsync_dir",
    "new_file_mode",
    "publish",
]

PathLike = str | os.PathLike[str]
_UMASK_LOCK = threading.Lock()
_KINDS = (
    (stat.S_ISDIR, "a directory", errno.EISDIR),
    (stat.S_ISCHR, "a character device", errno.EINVAL),
    (stat.S_ISBLK, "a block device", errno.EINVAL),
    (stat.S_ISFIFO, "a FIFO (named pipe)", errno.EINVAL),
    (stat.S_ISSOCK, "a socket", errno.EINVAL),
)


class WriteRefused(OSError):
    """sdnet will not write a file there: the path is not a regular file, is an input of the
    same command, or exists and may not be replaced. The message says which and what to do.

    Attributes
    ----------
    path : Path
        The path that was refused.
    """

    def __init__(self, code: int, message: str, path: Path) -> None:
        super().__init__(code, message)
        self.path = path

    def __str__(self) -> str:
        return str(self.strerror)


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and put back (other threads wait here)
        old = os.umask(0o022)
        os.umask(old)
    return old


def new_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: ``0o666 & ~umask``."""
    return 0o666 & ~_umask()


def _identity(path: PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def check_target(
    path: PathLike, *, overwrite: bool = True, inputs: Iterable[PathLike] = ()
) -> Path:
    """Refuse to write ``path`` when it is not a regular file (or absent), when it is one of
    ``inputs``, or, with ``overwrite=False``, when it exists (see the module docstring).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    WriteRefused
        An ``OSError`` whose message names the path, what it is and what to do.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError:
        return path  # e.g. a missing folder: the write itself reports it
    if stat.S_ISLNK(st.st_mode):
        where = os.path.realpath(path)
        raise WriteRefused(
            errno.ELOOP,
            f"{path} is a symbolic link (to {where}); sdnet does not write through links: "
            "give the real path, or remove the link",
            path,
        )
    for test, kind, code in _KINDS:
        if test(st.st_mode):
            raise WriteRefused(
                code, f"{path} is {kind}, not a regular file: choose a file name to write", path
            )
    here = (st.st_dev, st.st_ino)
    for source in inputs:
        if _identity(source) == here:
            raise WriteRefused(
                errno.EEXIST,
                f"{path} is the input {source} itself: writing it would destroy the input; "
                "choose another output file",
                path,
            )
    if not overwrite:
        raise WriteRefused(
            errno.EEXIST,
            f"{path} exists; sdnet does not replace it unless asked (--force, or "
            "overwrite=True), or choose another file name",
            path,
        )
    return path


def _temporary(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path`` with the mode a new file gets; a failure names the
    target (not the temporary name)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        why = f"cannot create a file in {path.parent} ({exc.strerror or exc})"
        raise OSError(exc.errno, why, str(path)) from exc
    if hasattr(os, "fchmod"):
        os.fchmod(fd, new_file_mode())
    return fd, tmp


def _publish(tmp: str, path: Path, overwrite: bool, inputs: tuple[PathLike, ...]) -> None:
    """Rename ``tmp`` to ``path`` (checked again first); without ``overwrite`` by a hard link,
    which fails when ``path`` exists, then the temporary name is removed."""
    check_target(path, overwrite=overwrite, inputs=inputs)
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        check_target(path, overwrite=False)  # raises: it appeared meanwhile
        raise
    except OSError:  # no hard links on this filesystem: the check above has to do
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def publish(tmp: PathLike, path: PathLike) -> Path:
    """Rename the finished temporary file ``tmp`` (fsynced by the caller, in ``path``'s
    folder) over ``path``, after :func:`check_target`, with the mode a new file gets: for
    writers that stage several files before renaming them (downloads, archive members)."""
    path = check_target(path)
    if hasattr(os, "chmod"):
        os.chmod(tmp, new_file_mode())
    os.replace(tmp, path)
    return path


def atomic_write_bytes(
    path: PathLike, write: Any, *, overwrite: bool = True, inputs: Iterable[PathLike] = ()
) -> Path:
    """Write a file through ``write(fileobj)`` to a temporary name, fsync, then rename.

    Parameters
    ----------
    path : path-like
        The file to write; its folder is created if missing.
    write : callable
        ``write(fh)`` writes the bytes to the binary file object ``fh``.
    overwrite : bool
        Whether an existing regular file may be replaced.
    inputs : iterable of path-like
        Files the command reads: the target may not be one of them.

    Returns
    -------
    Path

    Raises
    ------
    WriteRefused
        See :func:`check_target`; nothing is written.
    OSError
        The write failed; the temporary file is removed and ``path`` is untouched.
    """
    path, inputs = Path(path), tuple(inputs)
    check_target(path, overwrite=overwrite, inputs=inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        _publish(tmp, path, overwrite, inputs)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
    return path
