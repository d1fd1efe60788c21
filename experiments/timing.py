"""Timing helpers shared by the benchmark scripts in this folder.

The scripts run as ``python experiments/<name>.py``, so this module is importable
as ``timing`` from them.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable


def timed(fn: Callable[[], object], repeats: int, warmup: bool = True) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls of ``fn`` (after one untimed call when
    ``warmup``: allocator, thread pool, caches), and the last call's result."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, found {repeats}")
    result = fn() if warmup else None
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def median_seconds(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """The median of ``timed`` without the result."""
    return timed(fn, repeats, warmup)[0]


def pin_blas_threads(threads: int) -> None:
    """Give numpy/scipy's BLAS the thread count torch gets.

    BLAS reads these variables only when it is loaded, so the script re-executes
    itself once with them set (a no-op when they already are).
    """
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    if all(os.environ.get(name) == str(threads) for name in names):
        return
    environment = dict(os.environ, **{name: str(threads) for name in names})
    os.execve(sys.executable, [sys.executable, *sys.argv], environment)
