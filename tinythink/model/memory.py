"""Memory as the operating system sees it: giving back what tensors freed, and measuring what is resident
now and at its peak.

Loading a model interleaves large short-lived tensors (a weight dequantized to float32) with small
long-lived ones (its quantized form). glibc keeps the freed space in its heap, pinned by the survivors, so
resident memory stays at its peak: ~600 MB more than the model for SmolLM2-135M in int8. `malloc_trim`
hands the free pages back. Where the C library is not glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
from pathlib import Path


def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_free_memory():
    if _TRIM is not None:
        _TRIM(0)


def resident_mb() -> float:
    """This process's resident memory now, in MB (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    """This process's peak resident memory, in MB: Linux's VmHWM, its own memory's high-water mark; elsewhere
    ru_maxrss (which a process started by a larger one inherits from it on Linux: a benchmark child of a
    6 GB parent reports 6 GB)."""
    peak = peak_rss_bytes()
    return peak / 2**20 if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss():
    """Linux lets a process reset its peak RSS (VmHWM), so each model's peak is its own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_bytes() -> int | None:
    """Peak resident memory since the last `reset_peak_rss` (Linux: VmHWM), or None where it cannot be read."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
