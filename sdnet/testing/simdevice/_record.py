"""What the simulated device records: events, where they came from, and the recordings.

Every event names the code that caused it (``where``): the innermost frames of sdnet's own code
(``sdnet/functional/conv.py:80 _im2col < ...``), found by walking the Python stack past the
simulator, array-api-compat and NumPy; when no sdnet frame is on the stack, the innermost other
frame (a test, a benchmark). Paths are relative to the package or the repository, never
absolute, so recordings may go into documents.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import CodeType, FrameType
from typing import NamedTuple

import array_api_compat
import numpy as np

import sdnet

__all__ = [
    "Event",
    "Recording",
    "SimDeviceError",
    "KINDS",
    "record",
    "strict",
    "emit",
    "active",
    "attach",
    "detach",
]

# the lists a recording keeps, one per kind of event
KINDS = ("launches", "syncs", "h2d", "d2h", "wrong_device", "float64")
FRAMES_SHOWN = 3  # sdnet frames named in ``where``, innermost first
# frames of code that serves many callers: an event's ``file`` is its caller's
HELPERS = ("backends/", "sdnet/_array_api.py", "sdnet/_threads.py", "sdnet/layers/sequential.py")

_PKG = Path(sdnet.__file__).resolve().parent
_REPO = _PKG.parent
_SKIP = tuple(
    str(p) + "/"
    for p in (
        Path(__file__).resolve().parent,  # the simulator itself
        Path(array_api_compat.__file__).resolve().parent,
        Path(np.__file__).resolve().parent,
        Path(sys.modules["contextlib"].__file__ or "contextlib").resolve().parent,
    )
)


class SimDeviceError(RuntimeError):
    """An event that :func:`strict` was asked to refuse (wrong-device work, a sync ...)."""


class Event(NamedTuple):
    """One thing a GPU would pay for.

    ``kind`` is the operation (``"multiply"``, ``"__bool__"``, ``"asarray"`` ...), ``where``
    the code that caused it, ``file`` the innermost file of ``where`` that is not a shared
    helper (:data:`HELPERS`; for attribution),
    ``device`` the current device, ``nbytes`` the bytes moved (copies), ``detail`` a note
    (which devices were mixed, which ``device=`` was ignored).
    """

    kind: str
    where: str
    file: str
    device: str
    nbytes: int = 0
    detail: str = ""

    def __str__(self) -> str:
        size = f" {self.nbytes} B" if self.nbytes else ""
        note = f" ({self.detail})" if self.detail else ""
        return f"{self.kind}{size} on {self.device}{note} at {self.where}"


class Recording:
    """Events recorded while a :func:`record` context was open, one list per kind."""

    def __init__(self) -> None:
        self.launch_events: list[Event] = []
        self.syncs: list[Event] = []
        self.h2d: list[Event] = []
        self.d2h: list[Event] = []
        self.wrong_device: list[Event] = []
        self.float64: list[Event] = []

    def _list(self, kind: str) -> list[Event]:
        return self.launch_events if kind == "launches" else getattr(self, kind)

    @property
    def launches(self) -> int:
        """Kernel launches (memsets included)."""
        return len(self.launch_events)

    @property
    def by_op(self) -> Counter[str]:
        """Launches per operation."""
        return Counter(e.kind for e in self.launch_events)

    @property
    def by_file(self) -> Counter[str]:
        """Launches per source file (the innermost that is not a shared helper)."""
        return Counter(e.file for e in self.launch_events)

    @property
    def h2d_bytes(self) -> int:
        return sum(e.nbytes for e in self.h2d)

    def extend(self, other: Recording) -> None:
        """Append every event of ``other``."""
        for kind in KINDS:
            self._list(kind).extend(other._list(kind))

    def summary(self, limit: int = 12) -> str:
        """A few lines for an assertion message: counts, then the first events of each kind."""
        counts = ", ".join(f"{len(self._list(k))} {k}" for k in KINDS[1:])
        lines = [f"{self.launches} launches, {counts}"]
        for kind in KINDS[1:]:
            for e in self._list(kind)[:limit]:
                lines.append(f"  {kind}: {e}")
        return "\n".join(lines)


class _Bus:
    """Where events go: the open recordings, and the kinds that raise (strict mode)."""

    def __init__(self) -> None:
        self.recordings: list[Recording] = []
        self.refuse: list[frozenset[str]] = []

    def busy(self) -> bool:
        return bool(self.recordings or self.refuse)


_BUS = _Bus()


def active() -> bool:
    """Whether anything listens (recording or strict mode): the simulator skips the
    bookkeeping, stack walks included, when nothing does."""
    return _BUS.busy()


def emit(kind: str, op: str, device: str, nbytes: int = 0, detail: str = "") -> None:
    """Record an event of ``kind`` (one of :data:`KINDS`) in every open recording."""
    if not _BUS.busy():
        return
    where, file = _where(sys._getframe(1))
    event = Event(op, where, file, device, nbytes, detail)
    if any(kind in refused for refused in _BUS.refuse):
        raise SimDeviceError(f"{kind}: {event}")
    for rec in _BUS.recordings:
        rec._list(kind).append(event)


def attach(rec: Recording) -> None:
    """Start sending events to ``rec`` (:func:`record` is the usual way)."""
    _BUS.recordings.append(rec)


def detach(rec: Recording) -> None:
    """Stop sending events to ``rec``."""
    _BUS.recordings.remove(rec)


@contextmanager
def record() -> Iterator[Recording]:
    """Record every event of the simulated devices while the block runs.

    Examples
    --------
    >>> from sdnet.testing import simdevice as sim
    >>> x = sim.xp.ones((3,), dtype=sim.xp.float32)
    >>> with sim.record() as rec:
    ...     y = x * 2
    ...     s = float(sim.xp.sum(y))
    >>> rec.launches, sorted(rec.by_op), [e.kind for e in rec.syncs]
    (2, ['multiply', 'sum'], ['__float__'])
    """
    rec = Recording()
    attach(rec)
    try:
        yield rec
    finally:
        detach(rec)


@contextmanager
def strict(*kinds: str) -> Iterator[None]:
    """Raise :class:`SimDeviceError` at the first event of ``kinds`` (default: wrong-device
    work), naming where it came from: for debugging what a recording lists."""
    refused = frozenset(kinds or ("wrong_device",))
    unknown = refused - set(KINDS)
    if unknown:
        raise ValueError(f"unknown event kinds {sorted(unknown)}: use some of {KINDS}")
    _BUS.refuse.append(refused)
    try:
        yield
    finally:
        _BUS.refuse.remove(refused)


# -- where an event comes from ----------------------------------------------------------------

_code_paths: dict[CodeType, tuple[bool, str]] = {}  # code -> (skipped, shown path)


def _classify(code: CodeType) -> tuple[bool, str]:
    """Whether frames of ``code`` are skipped, and the path to show for them."""
    found = _code_paths.get(code)
    if found is None:
        name = str(Path(code.co_filename).resolve())
        skipped = name.startswith(_SKIP)
        if name.startswith(str(_PKG) + "/"):
            shown = "sdnet/" + name[len(str(_PKG)) + 1 :]
        elif name.startswith(str(_REPO) + "/"):
            shown = name[len(str(_REPO)) + 1 :]
        else:
            shown = Path(name).name
        found = _code_paths[code] = (skipped, shown)
    return found


def _where(frame: FrameType | None) -> tuple[str, str]:
    """``(where, file)``: the innermost sdnet frames (else the innermost other frame), and the
    file of the first of them that is not a shared helper (:data:`HELPERS`)."""
    ours: list[str] = []
    files: list[str] = []
    first = ""
    while frame is not None and len(ours) < FRAMES_SHOWN:
        skipped, shown = _classify(frame.f_code)
        if not skipped:
            text = f"{shown}:{frame.f_lineno} {frame.f_code.co_name}"
            if shown.startswith(("sdnet/", "backends/")) and "sdnet/testing/" not in shown:
                ours.append(text)
                files.append(shown)
            elif not first:
                first = text
        frame = frame.f_back
    if not ours:
        return first, first.split(":", 1)[0]
    file = next((f for f in files if not f.startswith(HELPERS)), files[0])
    return " < ".join(ours), file
