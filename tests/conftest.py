"""Shared test fixtures."""

import os

import numpy as np
import pytest

from geojax import runtime

# The CPU tuning `python -m geojax.main` applies (geojax.runtime), here before any test imports
# JAX: the suite runs as fast as the real entry point. Subprocesses inherit the XLA flag.
runtime.configure_cpu()

# Property-style tests draw from numpy generators seeded by SEED: a fixed seed by default, so
# every run draws the same sample; GEOJAX_TEST_SEED=<integer> picks another one and
# GEOJAX_TEST_SEED=random a fresh one. The seed is in the report header and in the report of
# every failing test that draws from it (the `seed` or `rng` fixture).
DEFAULT_SEED = 20240229
SEED_VARIABLE = "GEOJAX_TEST_SEED"


def _seed_from_environment() -> tuple[int, str]:
    """(seed, where it comes from). A fresh seed is written back into the environment, so that
    pytest-xdist workers and subprocesses draw with the same one."""
    value = os.environ.get(SEED_VARIABLE, "").strip()
    if not value:
        return DEFAULT_SEED, "the default"
    if value == "random":
        fresh = int.from_bytes(os.urandom(4), "little")
        os.environ[SEED_VARIABLE] = str(fresh)
        return fresh, f"{SEED_VARIABLE}=random"
    try:
        return int(value), f"{SEED_VARIABLE}={value}"
    except ValueError:
        raise pytest.UsageError(f"{SEED_VARIABLE}={value!r}: expected an integer or "
                                "'random'.") from None


SEED, _SEED_ORIGIN = _seed_from_environment()


def pytest_report_header(config):
    return (f"random seed: {SEED} ({_SEED_ORIGIN}; {SEED_VARIABLE}=<integer> or "
            f"{SEED_VARIABLE}=random to change it)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and {"seed", "rng"} & set(getattr(item, "fixturenames", ())):
        report.sections.append(("random seed", f"{SEED_VARIABLE}={SEED} reproduces this draw"))
    return report


@pytest.fixture(scope="session")
def seed():
    """The seed of the property-style tests' random samples (see SEED above)."""
    return SEED


@pytest.fixture
def rng(seed, request):
    """A numpy Generator seeded by ``seed``; the seed is reported if the test fails."""
    request.node.user_properties.append(("seed", seed))
    return np.random.default_rng(seed)
