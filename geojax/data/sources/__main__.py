"""``python -m geojax.data.sources``: see :mod:`geojax.data.sources.cli`."""

import sys

from geojax.data.sources.cli import main

sys.exit(main())
