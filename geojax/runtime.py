"""CPU process tuning for JAX: one XLA:CPU flag and three glibc ``malloc`` options.

Nothing here runs on import: ``import geojax`` leaves the environment and the allocator as they
are. ``python -m geojax.main`` calls :func:`configure_cpu` before JAX starts a backend; a
notebook, script or benchmark that wants the same CPU speed calls it first thing::

    from geojax import runtime
    runtime.configure_cpu()  # before the first JAX computation

It applies (``benchmarks/README.md``, "CPU runtime settings", has the measurements):

- ``--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce`` appended to ``XLA_FLAGS``:
  jaxlib 0.10 hands convolutions to YNNPACK fusions whose kernel gradients are slow in a train
  step; this keeps YNNPACK for single matrix products and reductions only. It concerns the CPU
  backend alone; GPU and TPU compilation is unaffected.
- ``mallopt(M_ARENA_MAX, 1)``, ``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, -1)``:
  XLA:CPU allocates the buffers of every execution from its worker threads, and with glibc's
  defaults every large one is a fresh ``mmap`` that is page-faulted and zeroed again at each
  step; with one arena, no per-buffer ``mmap`` and no trimming, the freed heap is reused. The
  cost: the process keeps its peak heap, and threads share one arena lock.

Guards and opt-outs:

- a flag already in ``XLA_FLAGS`` is left as the user set it;
- ``GEOJAX_XLA_CPU_DEFAULTS=0`` (or false/no/off) leaves ``XLA_FLAGS`` alone, and
  ``GEOJAX_MALLOC_DEFAULTS=0`` the allocator;
- the flag is only added on the jaxlib versions of :data:`SUPPORTED_JAXLIB` (XLA aborts on an
  unknown flag, and experimental flags come and go); the malloc options only with glibc;
- nothing is changed once a JAX backend is running (XLA reads ``XLA_FLAGS`` when it starts, and
  threads that already allocated keep their arenas): such a late call warns once and says so in
  its result.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import sys
import warnings
from collections.abc import MutableMapping
from typing import Any

XLA_CPU_FLAGS = {"--xla_cpu_experimental_ynn_fusion_type": "individual_dot,reduce"}
SUPPORTED_JAXLIB = ((0, 10),)  # (major, minor) versions the flag exists in and was measured on
XLA_OPT_OUT = "GEOJAX_XLA_CPU_DEFAULTS"

# mallopt parameters (glibc <malloc.h>), and the values configure_cpu sets.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
MALLOC_OPTIONS = (("M_ARENA_MAX", M_ARENA_MAX, 1), ("M_MMAP_MAX", M_MMAP_MAX, 0),
                  ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, -1))
MALLOC_OPT_OUT = "GEOJAX_MALLOC_DEFAULTS"

# What configure_cpu has changed in this process: XLA flags added, malloc options set.
APPLIED: dict[str, list[str]] = {"xla_flags": [], "malloc": []}
_warned_late = False


def _opted_out(environ: MutableMapping[str, str], name: str) -> bool:
    return environ.get(name, "1").strip().lower() in ("0", "false", "no", "off")


def _jaxlib_version() -> tuple[int, ...] | None:
    try:
        version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return None
    parts = []
    for part in version.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            return None
        parts.append(int(digits))
    return tuple(parts)


def _backend_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))


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


def flags_to_add(xla_flags: str, environ: MutableMapping[str, str] | None = None,
                 jaxlib_version: tuple[int, ...] | None = None) -> list[str]:
    """The ``--flag=value`` entries of :data:`XLA_CPU_FLAGS` that ``xla_flags`` lacks (empty
    when opted out or on an unsupported jaxlib)."""
    environ = os.environ if environ is None else environ
    if _opted_out(environ, XLA_OPT_OUT):
        return []
    if jaxlib_version is None or tuple(jaxlib_version[:2]) not in SUPPORTED_JAXLIB:
        return []
    present = {token.split("=", 1)[0] for token in xla_flags.split()}
    return [f"{flag}={value}" for flag, value in XLA_CPU_FLAGS.items() if flag not in present]


def _configure_xla(environ: MutableMapping[str, str]) -> tuple[list[str], str | None]:
    if _opted_out(environ, XLA_OPT_OUT):
        return [], f"{XLA_OPT_OUT}={environ[XLA_OPT_OUT]}"
    version = _jaxlib_version()
    if version is None or tuple(version[:2]) not in SUPPORTED_JAXLIB:
        return [], f"jaxlib {version} is not one of {SUPPORTED_JAXLIB} the flag was measured on"
    current = environ.get("XLA_FLAGS", "")
    added = flags_to_add(current, environ, version)
    if not added:
        return [], "already set in XLA_FLAGS (the value there is kept)"
    environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    APPLIED["xla_flags"].extend(added)
    return added, None


def _configure_malloc(environ: MutableMapping[str, str]) -> tuple[list[str], str | None]:
    if _opted_out(environ, MALLOC_OPT_OUT):
        return [], f"{MALLOC_OPT_OUT}={environ[MALLOC_OPT_OUT]}"
    if APPLIED["malloc"]:
        return [], "already set in this process"
    mallopt = _mallopt()
    if mallopt is None:
        return [], "no glibc mallopt in this process"
    applied = []
    for name, param, value in MALLOC_OPTIONS:
        if mallopt(param, value) != 1:
            APPLIED["malloc"].extend(applied)
            return applied, f"glibc refused mallopt({name}, {value})"
        applied.append(f"{name}={value}")
    APPLIED["malloc"].extend(applied)
    return applied, None


def configure_cpu(environ: MutableMapping[str, str] | None = None) -> dict[str, Any]:
    """Applies the XLA:CPU flag (to ``environ["XLA_FLAGS"]``, default ``os.environ``) and the
    glibc malloc options, within the guards of the module docstring.

    Returns ``{"xla_flags": [flags added], "malloc": ["M_ARENA_MAX=1", ...] set, "skipped":
    {"xla_flags" or "malloc": why it was not applied}}``. Call it before JAX starts a backend;
    after that it changes nothing and warns once.
    """
    global _warned_late
    environ = os.environ if environ is None else environ
    if _backend_started():
        why = "a JAX backend is already running (call configure_cpu before the first computation)"
        if not _warned_late:
            _warned_late = True
            warnings.warn(f"geojax.runtime.configure_cpu changed nothing: {why}", RuntimeWarning,
                          stacklevel=2)
        return {"xla_flags": [], "malloc": [], "skipped": {"xla_flags": why, "malloc": why}}
    result: dict[str, Any] = {"xla_flags": [], "malloc": [], "skipped": {}}
    for key, configure in (("xla_flags", _configure_xla), ("malloc", _configure_malloc)):
        result[key], why = configure(environ)
        if why is not None:
            result["skipped"][key] = why
    return result
