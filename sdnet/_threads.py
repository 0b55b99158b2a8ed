"""Host threads for independent blocks of one kernel (the convolution's image blocks).

NumPy releases the GIL while it copies and while BLAS multiplies, so the blocks of a batch run
in parallel on several CPU cores from plain Python threads. Results do not depend on the thread
count: blocks write disjoint parts of the output, and partial sums are added in block order.
Only NumPy arrays are split over threads; GPU and PyTorch arrays have their own parallelism.

The count comes from :func:`set_num_threads`, else ``SDNET_NUM_THREADS``, else the CPUs this
process may use (at most 8). With several threads here, keep BLAS at one thread per call
(``OPENBLAS_NUM_THREADS=1``), or the two kinds of thread compete for the same cores.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from array_api_compat import is_numpy_array

__all__ = ["get_num_threads", "set_num_threads", "map_blocks"]

T = TypeVar("T")
_MAX_DEFAULT = 8
_lock = threading.Lock()
_chosen: int | None = None
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, threads, executor)


def set_num_threads(n: int | None) -> None:
    """Use ``n`` host threads for sdnet's kernels on NumPy arrays (``None``: the default).

    Raises
    ------
    ValueError
        If ``n`` is not a positive integer.
    """
    global _chosen
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"the number of threads must be a positive integer, got {n!r}")
    _chosen = n


def get_num_threads() -> int:
    """The number of host threads sdnet's kernels use on NumPy arrays."""
    if _chosen is not None:
        return _chosen
    env = os.environ.get("SDNET_NUM_THREADS", "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"SDNET_NUM_THREADS must be a positive integer, got {env!r}")
        return value
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(_MAX_DEFAULT, cpus))


def _executor(threads: int) -> ThreadPoolExecutor:
    global _pool
    with _lock:
        pid = os.getpid()
        if _pool is None or _pool[0] != pid or _pool[1] != threads:
            # a forked child cannot use its parent's threads: start its own pool
            _pool = (pid, threads, ThreadPoolExecutor(threads, thread_name_prefix="sdnet"))
        return _pool[2]


def map_blocks(fn: Callable[[Any], T], items: Sequence[Any], like: Any) -> list[T]:
    """``[fn(i) for i in items]``, in parallel host threads when ``like`` is a NumPy array."""
    threads = get_num_threads()
    if threads <= 1 or len(items) <= 1 or not is_numpy_array(like):
        return [fn(i) for i in items]
    if threading.current_thread().name.startswith("sdnet"):
        return [fn(i) for i in items]  # already inside a block: no nested waiting on the pool
    # one task per thread, each a contiguous run of items (a task costs tens of microseconds
    # to hand over; a run keeps neighbouring blocks on one core); results in item order
    k = min(threads, len(items))
    bounds = [len(items) * j // k for j in range(k + 1)]
    runs = [items[bounds[j] : bounds[j + 1]] for j in range(k)]
    pool = _executor(threads)

    def run_of(run: Sequence[Any]) -> list[T]:
        return [fn(i) for i in run]

    futures = [pool.submit(run_of, run) for run in runs[1:]]
    first = run_of(runs[0])  # the calling thread takes the first run itself
    return first + [r for f in futures for r in f.result()]
