"""Array-namespace dispatch: one implementation serves numpy and jax.numpy.

Functions in ``geojax.geo`` take ``xp=None`` and infer the namespace from their
inputs: any ``jax.Array`` (or tracer, inside ``jax.jit``) selects ``jax.numpy``;
everything else (numpy arrays, Python scalars, lists) selects ``numpy``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def is_jax_array(x: Any) -> bool:
    """True for concrete jax arrays and for tracers under a jax transformation."""
    # Imported lazily so that numpy-only users never pay for importing jax.
    mod = type(x).__module__
    if not (mod.startswith("jax") or mod.startswith("jaxlib")):
        return False
    import jax  # pylint: disable=g-import-not-at-top

    return isinstance(x, jax.Array)


def array_namespace(*arrays: Any):
    """Returns ``jax.numpy`` if any argument is a jax array, else ``numpy``."""
    for a in arrays:
        if is_jax_array(a):
            import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

            return jnp
    return np
