"""glibc ``malloc`` settings geojax applies when it is imported, so that XLA:CPU reuses memory.

XLA:CPU allocates the buffers of every execution (temporaries and outputs) with
``posix_memalign`` from its worker threads. glibc serves a thread from a per-thread arena whose
heaps are at most 64 MiB, so any buffer larger than that, and by default any above the 128 KiB to
32 MiB mmap threshold, is a fresh ``mmap`` that is unmapped again when freed: every train step
then page-faults (and the kernel zeroes) all of its large buffers anew. On the 2-core machine a
``(100352, 64) @ (64, 256)`` product took 52 ms, 33 of them in 25,000 page faults; the SmallCNN
train step went from ~150 to ~125 ms and the ResNet-50 one from ~8.5 to ~6.6 s
(``benchmarks/train_throughput.py --malloc geojax,glibc`` runs both side by side).

:func:`apply` sets, through ``mallopt``:

- ``M_ARENA_MAX=1``: all threads allocate from the main arena, whose heap can grow past 64 MiB;
- ``M_MMAP_MAX=0``: no allocation is served by its own ``mmap``;
- ``M_TRIM_THRESHOLD=-1``: freed memory at the top of the heap is kept for the next step.

The cost: the process keeps its peak heap (memory is reused, not returned to the system), and
threads share one arena lock. PyTorch's CPU allocator is the same ``posix_memalign`` and gains
as much from the same settings; the throughput benchmark gives both frameworks the same ones.

Guards: only on Linux with glibc (``mallopt`` exists); ``GEOJAX_MALLOC_DEFAULTS=0`` in the
environment turns it off. Threads that already allocated keep their arenas: import geojax
before the first JAX computation (the same rule as :mod:`geojax.xla_flags`).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping
from typing import Any

# mallopt parameters (glibc <malloc.h>).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

DEFAULTS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
OPT_OUT = "GEOJAX_MALLOC_DEFAULTS"


def _mallopt() -> Any:
    """glibc's ``mallopt`` (a ctypes function), or None where there is none (macOS, musl,
    Windows). Looked up among the symbols the process already has: no library search."""
    if not sys.platform.startswith("linux"):
        return None
    process = ctypes.CDLL(None)
    if not hasattr(process, "gnu_get_libc_version") or not hasattr(process, "mallopt"):
        return None  # not glibc
    mallopt = process.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def apply(environ: Mapping[str, str] | None = None) -> bool:
    """Sets :data:`DEFAULTS` with ``mallopt``; True if they were set (False when opted out,
    without glibc, or if glibc refused one)."""
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return all([mallopt(param, value) == 1 for param, value in DEFAULTS])
