"""The per-backend kernel registry: faster forms of a few of sdnet's kernels, for one library.

Where a library can do better than the array API standard allows (NumPy: products written
straight into a strided output with ``out=``, per-thread workspaces that are filled without a
padded copy and never reallocated), the faster form is registered here under the kernel's
name and the library's. The array-API code in ``sdnet/functional`` stays the reference: it
runs on every backend, and ``tests/test_kernels.py`` proves each registered kernel equal to it.

A kernel asks :func:`lookup` with its first array and falls back to its own array-API code
when nothing is registered. ``SDNET_KERNELS=reference`` in the environment, or the
:func:`reference_kernels` context, turns every registered kernel off.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from array_api_compat import is_numpy_array

__all__ = ["register", "lookup", "reference_kernels", "registered"]

_REGISTRY: dict[str, dict[str, Callable[..., Any]]] = {}  # library -> kernel name -> function
_local = threading.local()


def register(library: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``fn`` is kernel ``name``'s form for arrays of ``library`` (``"numpy"``)."""

    def add(fn: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY.setdefault(library, {})[name] = fn
        return fn

    return add


def _reference_only() -> bool:
    return bool(getattr(_local, "reference", False)) or (
        os.environ.get("SDNET_KERNELS", "").strip().lower() == "reference"
    )


def lookup(name: str, x: Any) -> Callable[..., Any] | None:
    """The registered form of kernel ``name`` for ``x``'s library, or ``None`` (use the
    array-API reference)."""
    if not is_numpy_array(x) or _reference_only():
        return None
    return _REGISTRY.get("numpy", {}).get(name)


def registered() -> dict[str, list[str]]:
    """Which kernels have a registered form, by library (what ``sdnet info`` reports)."""
    return {lib: sorted(kernels) for lib, kernels in _REGISTRY.items()}


@contextmanager
def reference_kernels() -> Iterator[None]:
    """Run the array-API reference of every kernel inside (in this thread)."""
    old = getattr(_local, "reference", False)
    _local.reference = True
    try:
        yield
    finally:
        _local.reference = old
