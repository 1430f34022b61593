"""XLA:CPU settings geojax applies before JAX starts its CPU backend.

jaxlib 0.10 hands convolutions and matrix products (with the elementwise ops around them) on
the CPU to YNNPACK "fusions" by default. On a train step their convolution kernel gradients are slow
(~16 GFLOP/s at GeoWorld's first layer on the 2-core machine); keeping YNNPACK for single
matrix products and reductions only
(``--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce``) made the train step of the
GeoWorld default model ~2x and of ResNet-50 1.1-1.2x faster (``benchmarks/train_throughput.py``
runs both settings side by side; README, "Train step throughput").

:func:`apply_cpu_defaults` appends these flags to ``XLA_FLAGS`` when ``geojax`` is imported,
with three guards:

- a flag already present in ``XLA_FLAGS`` is left as the user set it;
- ``GEOJAX_XLA_CPU_DEFAULTS=0`` in the environment turns the whole thing off;
- nothing is added for a jaxlib outside the versions the settings were measured on (XLA aborts
  on an unknown flag, and experimental flags come and go), or once a JAX backend is already
  running (XLA reads ``XLA_FLAGS`` only when it starts; import geojax before the first JAX
  computation).

The flags only concern the CPU backend; GPU and TPU compilation is unaffected.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import MutableMapping

# flag -> value, measured on jaxlib 0.10.x (see the module docstring).
CPU_DEFAULTS = {"--xla_cpu_experimental_ynn_fusion_type": "individual_dot,reduce"}
SUPPORTED_JAXLIB = ((0, 10),)  # (major, minor) versions the flags exist in and were measured on
OPT_OUT = "GEOJAX_XLA_CPU_DEFAULTS"


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


def flags_to_add(xla_flags: str, environ: MutableMapping[str, str] | None = None,
                 jaxlib_version: tuple[int, ...] | None = None) -> list[str]:
    """The ``--flag=value`` entries of :data:`CPU_DEFAULTS` that ``xla_flags`` lacks (empty
    when opted out or on an unsupported jaxlib)."""
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
        return []
    if jaxlib_version is None or tuple(jaxlib_version[:2]) not in SUPPORTED_JAXLIB:
        return []
    present = {token.split("=", 1)[0] for token in xla_flags.split()}
    return [f"{flag}={value}" for flag, value in CPU_DEFAULTS.items() if flag not in present]


def apply_cpu_defaults(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Appends the missing :data:`CPU_DEFAULTS` to ``environ["XLA_FLAGS"]``; returns them."""
    environ = os.environ if environ is None else environ
    if _backend_started():
        return []
    current = environ.get("XLA_FLAGS", "")
    added = flags_to_add(current, environ, _jaxlib_version())
    if added:
        environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added
