"""Counter-based hashing: GeoWorld's per-image and per-entity random numbers.

DESIGN.md, "The embedded default: GeoWorld": each photo is rendered deterministically
from ``(seed, split, index)``, whatever batch it is rendered in, and each country,
region and city looks the same in every photo and every split of one world. Both follow
from drawing their random numbers from splitmix64 streams (Steele, Lea and Flood,
"Fast splittable pseudorandom number generators", OOPSLA 2014) keyed by the photo or the
entity, vectorised over keys with numpy, instead of from a stateful generator.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)


def _mix64(x: Any) -> np.ndarray:
    """The splitmix64 finaliser: a bijective avalanche of uint64 (vectorised)."""
    with np.errstate(over="ignore"):
        x = np.array(x, dtype=np.uint64, ndmin=1)
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def _uniforms(keys: np.ndarray, num: int) -> np.ndarray:
    """``(len(keys), num)`` float32 uniforms in [0, 1): splitmix64 streams of the keys."""
    with np.errstate(over="ignore"):
        counters = np.arange(1, num + 1, dtype=np.uint64) * _GOLDEN
        bits = _mix64(keys.astype(np.uint64)[:, None] + counters[None, :])
    return ((bits >> _U64(40)).astype(np.float32) * np.float32(2.0**-24))


def _crc_keys(codes: np.ndarray) -> np.ndarray:
    """A stable uint64 key per code string (country "FR", admin-1 "FR.11")."""
    return np.array([zlib.crc32(str(c).encode()) for c in codes], dtype=np.uint64)


# Salts of the entity kinds (so that a country and a place with equal keys differ).
_SALT_COUNTRY, _SALT_ADMIN1, _SALT_PLACE, _SALT_FAKE, _SALT_BUILD = (
    _U64(0xC0C0), _U64(0xAD01), _U64(0x91ACE), _U64(0xFA4E), _U64(0xB111D))
