"""Shared test fixtures."""

import os

import numpy as np
import pytest

from geojax import runtime

# The CPU tuning `python -m geojax.main` applies (geojax.runtime), here before any test imports
# JAX: the suite runs as fast as the real entry point. Subprocesses inherit the XLA flag.
runtime.configure_cpu()

# A fresh seed every run (printed on failure by pytest's -ra summary via the fixture name).
_SEED = int.from_bytes(os.urandom(4), "little")


@pytest.fixture
def rng(request):
    """A numpy Generator with a fresh seed per run; the seed is shown if the test fails."""
    request.node.user_properties.append(("seed", _SEED))
    print(f"random seed: {_SEED}")
    return np.random.default_rng(_SEED)
