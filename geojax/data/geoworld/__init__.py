"""GeoWorld: the embedded default dataset (see :mod:`geojax.data.geoworld.dataset`)."""

from geojax.data.geoworld.dataset import *  # noqa: F401,F403
from geojax.data.geoworld.dataset import __all__  # noqa: F401
