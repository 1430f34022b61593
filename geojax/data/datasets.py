"""The image sources a config's ``data`` section names: one training source, named eval splits.

``config.data.source`` (see ``geojax.configlib.data_config``):

* ``"geoworld"`` (default) — the embedded GeoWorld dataset: its MP-16-like ``train`` split
  of ``train_size`` photos (seed ``seed``) and the evaluation splits ``eval_splits``
  (``eval_size`` photos each, 0 = the split's paper size; split ``k`` uses seed
  ``seed + 1 + k``, as the partition job does), rendered at ``image_size``.
* ``"csv"`` — ``train_csv`` + ``train_images`` and ``eval_csv`` + ``eval_images``: metadata
  CSVs with an image folder each (:class:`~geojax.data.sources.CsvImageFolderSource`).
* ``"array_record"`` — ``train_dir`` / ``eval_dir`` written by
  :func:`~geojax.data.sources.convert_to_array_record`.

Every source is a grain random-access source of Example records (``image`` or
``image_bytes``, ``lat``, ``lng``, ``id``, extras) for :func:`geojax.data.pipeline.make_dataset`.
"""

from __future__ import annotations

from typing import Any

SOURCES = ("geoworld", "csv", "array_record")


def _geoworld(data_config: Any, split: str, size: int, seed: int) -> Any:
    from geojax.data import geoworld  # pylint: disable=import-outside-toplevel

    return geoworld.GeoWorld(split, size or None, seed, image_size=int(data_config.image_size))


def _check(data_config: Any) -> str:
    source = data_config.source
    if source not in SOURCES:
        raise ValueError(f"config.data.source={source!r} has no images to train on; use one of "
                         f"{SOURCES} ('places' only provides coordinates, for --mode=partition).")
    return source


def train_source(data_config: Any) -> Any:
    """The training source of ``config.data``."""
    source = _check(data_config)
    if source == "geoworld":
        return _geoworld(data_config, "train", data_config.train_size, data_config.seed)
    from geojax.data import sources  # pylint: disable=import-outside-toplevel

    if source == "csv":
        if not data_config.train_csv or not data_config.get("train_images"):
            raise ValueError("config.data.source='csv' needs config.data.train_csv and "
                             "config.data.train_images (the image folder).")
        return sources.CsvImageFolderSource(data_config.train_csv, data_config.train_images)
    if not data_config.get("train_dir"):
        raise ValueError("config.data.source='array_record' needs config.data.train_dir.")
    return sources.ArrayRecordSource(data_config.train_dir)


def eval_sources(data_config: Any) -> dict[str, Any]:
    """Evaluation split name → source, in the config's order."""
    source = _check(data_config)
    if source == "geoworld":
        return {split: _geoworld(data_config, split, data_config.eval_size, data_config.seed + 1 + k)
                for k, split in enumerate(data_config.eval_splits)}
    from geojax.data import sources  # pylint: disable=import-outside-toplevel

    if source == "csv":
        if not data_config.eval_csv:
            return {}
        if not data_config.get("eval_images"):
            raise ValueError("config.data.eval_csv needs config.data.eval_images (the image folder).")
        return {"eval": sources.CsvImageFolderSource(data_config.eval_csv, data_config.eval_images)}
    return {"eval": sources.ArrayRecordSource(data_config.eval_dir)} if data_config.get("eval_dir") else {}
