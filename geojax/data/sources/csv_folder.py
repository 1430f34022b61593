"""Im2GPS / Im2GPS3k / YFCC4k / GWS15k: a metadata CSV and a folder of images."""

from __future__ import annotations

import os
from typing import Any, SupportsIndex

from geojax import fileio
from geojax.data.sources.common import (
    DEFAULT_MAX_BAD_FRACTION,
    ReadReport,
    _Source,
    _check_fraction,
    _check_index,
    _existing_files,
    _read_file,
    _read_metadata,
)

# ----------------------------------------------------------------------------------
# 1. CSV + image folder (Im2GPS, Im2GPS3k, YFCC4k/26k, GWS15k)
# ----------------------------------------------------------------------------------


class CsvImageFolderSource(_Source):
    """Metadata CSV (``IMG_ID``/``IMG_FILE``, ``LAT``, ``LON``, ...) + a folder of images.

    The id column holds the file name relative to ``image_dir`` (sub-folders allowed).
    Rows with bad coordinates or a missing image file (Flickr ids go dead) are skipped
    and reported; images are read lazily in ``__getitem__``. A posting-time column is read as
    ``timestamp`` (text without an offset on the clock ``default_utc_offset_hours`` ahead of
    UTC; see ``geojax.data.metadata_features``).
    """

    def __init__(self, csv_path: str | os.PathLike, image_dir: str | os.PathLike, *,
                 max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
                 default_utc_offset_hours: float = 0.0):
        _check_fraction(max_bad_fraction)
        self.csv_path, self.image_dir = os.fspath(csv_path), os.fspath(image_dir)
        if not fileio.isdir(self.image_dir):
            raise FileNotFoundError(f"image folder {self.image_dir} does not exist.")
        self.report = ReadReport(self.csv_path)
        meta = _read_metadata(self.csv_path, self.report, id_columns=("img_id", "img_file"),
                              default_utc_offset_hours=default_utc_offset_hours)
        keep = []
        present = _existing_files(self.image_dir, meta.ids)
        for k, row_id in enumerate(meta.ids):
            if row_id in present:
                keep.append(k)
            else:
                self.report.skip("rows whose image file is missing", row_id)
        self._init_rows(meta, keep, max_bad_fraction)

    def __getitem__(self, i: SupportsIndex) -> dict[str, Any]:
        i = _check_index(i, len(self))
        return self._record(i, _read_file(os.path.join(self.image_dir, self._ids[i])))

    def __repr__(self) -> str:
        return f"CsvImageFolderSource(csv_path={self.csv_path!r}, image_dir={self.image_dir!r}, {len(self)} records)"
