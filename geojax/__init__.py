"""geojax: worldwide image geolocalization in JAX/Flax.

Layers (each importable on its own): ``geo`` (spherical geometry, S2) →
``partitions`` / ``data`` → ``models`` → ``training`` → ``inference`` → ``evaluation``.
"""

from geojax import malloc as _malloc
from geojax import xla_flags as _xla_flags

__version__ = "0.1.0"

# Tuned XLA:CPU flags, added to XLA_FLAGS before JAX starts (see geojax/xla_flags.py; opt out
# with GEOJAX_XLA_CPU_DEFAULTS=0; flags already in XLA_FLAGS win).
_xla_flags.apply_cpu_defaults()

# glibc malloc settings that let XLA:CPU reuse its per-step buffers instead of mapping them fresh
# every step (see geojax/malloc.py; opt out with GEOJAX_MALLOC_DEFAULTS=0).
_malloc.apply()
