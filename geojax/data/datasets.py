"""The one dispatcher on ``config.data.source``: images and coordinates of a config's splits.

Every mode goes through here — training and evaluation read :func:`train_source` /
:func:`eval_sources` (records with images), partition building and oracle reports read
:func:`train_coordinates` / :func:`eval_coordinates` (only ``lat``, ``lng``, never an image):

=================  ==========================================  ===========================
``source``         training split                              evaluation splits
=================  ==========================================  ===========================
``"geoworld"``     the embedded GeoWorld MP-16-like ``train``  ``eval_splits`` (Im2GPS3k-,
(default)          split, ``train_size`` photos, seed ``seed``  YFCC4k-, GWS15k-like), seed
                                                               :func:`eval_seed`
``"csv"``          ``train_csv`` + ``train_images`` (metadata   ``eval_csv`` + ``eval_images``
                   CSV and image folder)                       as split ``"eval"``
``"array_record"`` ``train_dir`` from ``convert_to_array_record``  ``eval_dir`` as ``"eval"``
``"tfds"``         split ``tfds_train_split`` of the TFDS     splits ``tfds_eval_splits``
                   ArrayRecord dataset in ``tfds_dir``        of the same dataset
                   (features named by ``tfds_features``)
``"places"``       coordinates only: ``places.sample_mp16_like``  the ``sample_*_like``
                                                               samplers (no images: partition
                                                               mode only)
=================  ==========================================  ===========================

The CSV readers refuse a file with more than ``config.data.max_bad_fraction`` (default 1 %)
of bad rows (:func:`max_bad_fraction`; the pipeline applies the same limit to undecodable
images) and a file whose LAT and LON columns look swapped as a whole.

Every image source is a grain random-access source of Example records (``image`` or
``image_bytes``, ``lat``, ``lng``, ``id``, extras) for :func:`geojax.data.pipeline.make_dataset`,
and exposes ``lat`` / ``lng`` arrays of its records in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from geojax.data import geoworld, places, sources
from geojax.data.sources import tfds_format

SOURCES = ("geoworld", "csv", "array_record", "tfds", "places")
IMAGE_SOURCES = ("geoworld", "csv", "array_record", "tfds")

Coordinates = tuple[np.ndarray, np.ndarray]


class RecordSource(Protocol):
    """A random-access source of Example records with its records' coordinates."""

    lat: np.ndarray  # (len,) degrees, record order
    lng: np.ndarray

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...

_PLACES_SAMPLERS: dict[str, Callable[[int, int], dict[str, np.ndarray]]] = {
    "mp16": places.sample_mp16_like, "train": places.sample_mp16_like,
    "im2gps3k": places.sample_im2gps_like, "yfcc4k": places.sample_yfcc_like,
    "gws15k": places.sample_gws_like,
}


class DataConfigError(ValueError):
    """``config.data`` names a source or split that does not exist or lacks a path."""


def eval_seed(data_config: Any, k: int) -> int:
    """Seed of the ``k``-th evaluation split of a generated source (GeoWorld, places):
    ``seed + 1 + k``, so the training split (``seed``) and each eval split differ."""
    return int(data_config.seed) + 1 + k


def _source(data_config: Any) -> str:
    source = data_config.source
    if source not in SOURCES:
        raise DataConfigError(f"config.data.source={source!r}; use one of {SOURCES}.")
    return source


def _image_source(data_config: Any) -> str:
    source = _source(data_config)
    if source not in IMAGE_SOURCES:
        raise DataConfigError(f"config.data.source={source!r} has coordinates but no images to "
                              f"train or evaluate on (it serves --mode=partition); use one of "
                              f"{IMAGE_SOURCES}.")
    return source


def _need(data_config: Any, *keys: str) -> None:
    missing = [k for k in keys if not data_config.get(k)]
    if missing:
        raise DataConfigError(f"config.data.source={data_config.source!r} needs "
                              + " and ".join(f"config.data.{k}" for k in missing) + ".")


def max_bad_fraction(data_config: Any) -> float:
    """``config.data.max_bad_fraction``: the share of bad rows a metadata reader, and of bad
    records the input pipeline, accepts (default 1 %)."""
    return float(data_config.get("max_bad_fraction", sources.DEFAULT_MAX_BAD_FRACTION))


def _csv_source(data_config: Any, csv_path: str, images: str) -> sources.CsvImageFolderSource:
    return sources.CsvImageFolderSource(csv_path, images,
                                        max_bad_fraction=max_bad_fraction(data_config))


def _csv_coordinates(data_config: Any, csv_path: str) -> Coordinates:
    return sources.read_coordinates_csv(csv_path, max_bad_fraction=max_bad_fraction(data_config))


def _tfds(data_config: Any, split: str) -> tfds_format.TfdsSource:
    _need(data_config, "tfds_dir")
    return tfds_format.TfdsSource(data_config.tfds_dir, split, dict(data_config.tfds_features))


def _geoworld(data_config: Any, split: str, size: int, seed: int) -> geoworld.GeoWorld:
    return geoworld.GeoWorld(split, size or None, seed, image_size=int(data_config.image_size))


def train_source(data_config: Any) -> Any:
    """The training source (images) of ``config.data``."""
    source = _image_source(data_config)
    if source == "geoworld":
        return _geoworld(data_config, "train", data_config.train_size, int(data_config.seed))
    if source == "csv":
        _need(data_config, "train_csv", "train_images")
        return _csv_source(data_config, data_config.train_csv, data_config.train_images)
    if source == "tfds":
        return _tfds(data_config, data_config.tfds_train_split)
    _need(data_config, "train_dir")
    return sources.ArrayRecordSource(data_config.train_dir)


def eval_sources(data_config: Any) -> dict[str, Any]:
    """Evaluation split name → source (images), in the config's order."""
    source = _image_source(data_config)
    if source == "geoworld":
        return {split: _geoworld(data_config, split, data_config.eval_size,
                                 eval_seed(data_config, k))
                for k, split in enumerate(data_config.eval_splits)}
    if source == "csv":
        if not data_config.get("eval_csv"):
            return {}
        _need(data_config, "eval_images")
        return {"eval": _csv_source(data_config, data_config.eval_csv, data_config.eval_images)}
    if source == "tfds":
        return {split: _tfds(data_config, split) for split in data_config.tfds_eval_splits}
    if not data_config.get("eval_dir"):
        return {}
    return {"eval": sources.ArrayRecordSource(data_config.eval_dir)}


def coordinates_of(source: RecordSource) -> Coordinates:
    """``(lat, lng)`` float64 of an image source's records, in record order."""
    return np.asarray(source.lat, np.float64), np.asarray(source.lng, np.float64)


def _places(data_config: Any, split: str, size: int, seed: int) -> Coordinates:
    if split not in _PLACES_SAMPLERS:
        raise DataConfigError(f"unknown eval split {split!r} for config.data.source='places'; "
                              f"choose from {sorted(set(_PLACES_SAMPLERS) - {'train'})}.")
    size = size or geoworld.DEFAULT_SIZES.get(split, 0)
    points = _PLACES_SAMPLERS[split](size, seed)
    return points["lat"], points["lng"]


def train_coordinates(data_config: Any) -> Coordinates:
    """Training ``(lat, lng)`` (float64 degrees) of ``config.data``, without reading images."""
    source = _source(data_config)
    if source == "geoworld":  # metadata only: nothing is rendered
        return coordinates_of(geoworld.GeoWorld("train", data_config.train_size or None,
                                            int(data_config.seed)))
    if source == "places":
        return _places(data_config, "train", data_config.train_size, int(data_config.seed))
    if source == "csv":
        _need(data_config, "train_csv")
        if not data_config.get("train_images"):  # coordinates only (--mode=partition)
            return _csv_coordinates(data_config, data_config.train_csv)
    return coordinates_of(train_source(data_config))


def eval_coordinates(data_config: Any) -> dict[str, Coordinates]:
    """Evaluation split name → ``(lat, lng)``, in the config's order, without reading images."""
    source = _source(data_config)
    if source == "geoworld":
        return {split: coordinates_of(geoworld.GeoWorld(split, data_config.eval_size or None,
                                                    eval_seed(data_config, k)))
                for k, split in enumerate(data_config.eval_splits)}
    if source == "places":
        return {split: _places(data_config, split, data_config.eval_size,
                               eval_seed(data_config, k))
                for k, split in enumerate(data_config.eval_splits)}
    if source == "csv" and data_config.get("eval_csv") and not data_config.get("eval_images"):
        return {"eval": _csv_coordinates(data_config, data_config.eval_csv)}
    return {name: coordinates_of(src) for name, src in eval_sources(data_config).items()}
