"""Pieces shared by every geojax config (the files in configs/).

A config is a Python file with ``get_config(arg=None) -> ml_collections.ConfigDict``;
``arg`` is what follows the colon in ``--config=configs/x.py:arg`` — ``runlocal``
shrinks everything to a seconds-long run (what the tests use).
"""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None) -> dict[str, str | bool]:
    """``"runlocal,size=1000"`` → ``{"runlocal": True, "size": "1000"}``."""
    out: dict[str, str | bool] = {}
    for item in filter(None, (arg or "").split(",")):
        key, eq, value = item.partition("=")
        out[key.strip()] = value.strip() if eq else True
    return out


def data_config(*, runlocal: bool) -> ml_collections.ConfigDict:
    """Where training and evaluation coordinates come from.

    ``source="geoworld"`` (default): the embedded GeoWorld dataset
    (``geojax.data.geoworld``; MP-16-like ``train`` split and Im2GPS3k-,
    YFCC4k- and GWS15k-like evaluation splits; ``eval_size=0`` takes each
    split's paper size).  ``source="places"``: the bare location samplers of
    ``geojax.data.places``.  ``source="csv"``: ``train_csv`` / ``eval_csv``
    metadata files with LAT/LON columns.
    """
    return ml_collections.ConfigDict(dict(
        source="geoworld",
        seed=0,
        train_size=20_000 if runlocal else 400_000,
        eval_splits=("im2gps3k", "yfcc4k", "gws15k"),
        eval_size=500 if runlocal else 0,  # 0: each split's paper size
        train_csv="",
        eval_csv="",
    ))
