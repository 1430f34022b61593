"""geojax: worldwide image geolocalization in JAX/Flax.

Layers (each importable on its own): ``geo`` (spherical geometry, S2) →
``partitions`` / ``data`` → ``models`` → ``training`` → ``inference`` → ``evaluation``.
"""

from geojax import xla_flags as _xla_flags

__version__ = "0.1.0"

# Tuned XLA:CPU flags, added to XLA_FLAGS before JAX starts (see geojax/xla_flags.py; opt out
# with GEOJAX_XLA_CPU_DEFAULTS=0; flags already in XLA_FLAGS win).
_xla_flags.apply_cpu_defaults()
