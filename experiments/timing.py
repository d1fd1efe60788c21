"""Timing helpers shared by the benchmark scripts in this folder.

The scripts run as ``python experiments/<name>.py``, so this module is importable
as ``timing`` from them.
"""

from __future__ import annotations

import ctypes
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def timed(
    fn: Callable[[], object], repeats: int, warmup: bool = True, device: str = "cpu"
) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls of ``fn`` (after one untimed call when
    ``warmup``: allocator, thread pool, caches), and the last call's result. On an
    accelerator ``device`` each call is timed up to the end of its queued kernels."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, found {repeats}")
    result = fn() if warmup else None
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
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


class Table:
    """A markdown table under a ``###`` title; ``add`` also prints the row as it comes."""

    def __init__(self, title: str, columns: list[str]) -> None:
        self.title, self.columns, self.rows = title, columns, []

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])
        print(" | ".join(self.rows[-1]), flush=True)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |"]
        lines.append("|" + "---|" * len(self.columns))
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"


def ms(seconds: float | None) -> str:
    """Seconds as "12 ms" below 10 s, "12.3 s" above; "-" for None."""
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def synchronize(device: str) -> None:
    """Wait for the device's queued kernels (timings on CUDA/MPS are asynchronous)."""
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def _resident_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


# glibc's mallopt parameter for the size from which malloc maps memory of its own.
M_MMAP_THRESHOLD = -3


def _glibc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


class PeakMemory:
    """Peak memory above the start while the ``with`` block runs, in bytes (``.peak``).

    cuda: ``torch.cuda.max_memory_allocated`` over what was allocated at the start
    (tensors only, not the caching allocator's reserve). cpu (Linux): the process's
    peak resident set (VmHWM, reset at the start through /proc/self/clear_refs) over
    its resident set at the start. So that this is the block's live memory and not
    what the heap kept from earlier blocks, glibc maps every allocation from 128 KiB
    on by itself inside the block (returned to the system when freed) and trims the
    heap at the start; afterwards the threshold is 32 MiB, where glibc's own dynamic
    threshold settles. Elsewhere ``.peak`` stays None.
    """

    def __init__(self, device: str) -> None:
        self.device, self.peak, self._start = device, None, 0
        self._libc = _glibc() if device == "cpu" else None
        self._proc = device == "cpu" and Path("/proc/self/clear_refs").exists()

    def __enter__(self) -> PeakMemory:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
        elif self._proc:
            if self._libc is not None:
                self._libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
                self._libc.malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            self._start = _resident_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._start
        elif self._proc:
            self.peak = _resident_kib("VmHWM") * 1024 - self._start
            if self._libc is not None:
                self._libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)
