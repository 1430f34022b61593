"""geojax: worldwide image geolocalization in JAX/Flax.

Layers (each importable on its own): ``geo`` (spherical geometry, S2) →
``partitions`` / ``data`` → ``models`` → ``training`` → ``inference`` → ``evaluation``.
"""

__version__ = "0.1.0"
