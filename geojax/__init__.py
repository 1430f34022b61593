"""geojax: worldwide image geolocalization in JAX/Flax.

Layers (each importable on its own): ``geo`` (spherical geometry, S2) →
``partitions`` / ``data`` → ``models`` → ``training`` → ``inference`` → ``evaluation``.

Importing geojax changes nothing outside it. ``geojax.runtime.configure_cpu()`` applies the
CPU tuning (an XLA:CPU flag and glibc malloc options) that ``python -m geojax.main`` uses.
"""

__version__ = "0.1.0"
