"""Readers for the real on-disk dataset formats, each yielding geojax Example records.

Every reader is a grain ``RandomAccessDataSource`` (``__len__``, ``__getitem__``), so
the pipeline wraps it in ``grain.MapDataset.source(...)``. A record is a dict::

    image_bytes  the encoded JPEG/PNG bytes, NOT decoded (decoding is the pipeline's
                 job, where failures are counted; see :func:`decode_image`)
    lat, lng     numpy float64 degrees (lng wrapped into [-180, 180))
    id           str
    user         str, from an ``AUTHOR`` column (optional)
    timestamp    numpy int64 Unix seconds UTC, from a posting-time column (optional:
                 ``DATE_UPLOADED``, ``POSTED``, ``TIMESTAMP``, ``DATE_TAKEN``, ...; see
                 ``geojax.data.metadata_features.POSTING_TIME_COLUMNS``)
    scene3, scene16, scene365            numpy int64, from ``S3_Label`` ... (-1: unparsable)
    prob_indoor, prob_natural, prob_urban numpy float64, from ``Prob_*`` (NaN: unparsable)
    ...          OSV-5M: its string columns (``country``, ``region``, ``city``, ...)

Formats:

* :class:`CsvImageFolderSource` — Im2GPS / Im2GPS3k / YFCC4k / GWS15k: a metadata CSV
  (``IMG_ID`` or ``IMG_FILE``, ``LAT``, ``LON``, optional ``AUTHOR``, posting-time and scene
  columns)
  and a folder of images.
* :class:`Mp16MsgpackSource` — MP-16 / yfcc25600: msgpack shards of ``{id, image}``
  records joined by id to a metadata CSV.
* :class:`Osv5mSource` — OSV-5M: ``{train,test}.csv`` and zipped (or extracted) JPEGs.
* :func:`convert_to_array_record` / :class:`ArrayRecordSource` — any source into
  ArrayRecord shards (msgpack records, no pickle, no TensorFlow) and back, for fast
  random access, over processes (``workers``) and hosts (``share_index`` / ``num_shares``;
  :func:`finalize_array_record`). Command line: ``python -m geojax.data.sources convert
  --format=csv ... [--workers=W] [--shard_index=I --num_shards=N]``.

Bad input is never fatal alone and never silent. At construction, rows with missing,
non-numeric, non-finite or out-of-range coordinates (|LAT| > 90 — some published Im2GPS
files have LAT and LON swapped, which is reported, never silently swapped), duplicate
ids, missing images and truncated or corrupt shard records are skipped, counted and
listed by id in ``source.report`` (a :class:`ReadReport`); more than
``max_bad_fraction`` (default 1 %, ``--config.data.max_bad_fraction`` in a config) of bad
rows is a ``ValueError`` carrying the report's summary and the flag that raises the limit.
A file whose rows are all in range but whose LAT and LON columns are swapped as a whole
raises :class:`SwappedCoordinatesError` (:func:`check_not_swapped`: the swapped reading lies
much nearer to GeoNames places than the given one).
Undecodable images are returned as they are (their bytes) and fail in
:func:`decode_image` with an :class:`ImageDecodeError`.

Memory: the per-record index lives in numpy arrays (strings in one UTF-8 buffer), not in
millions of Python objects, so forked grain workers share it copy-on-write.
"""

from geojax.data.sources.array_record import (ArrayRecordSource, convert_to_array_record,
                                              finalize_array_record)
from geojax.data.sources.cli import main
from geojax.data.sources.common import (DEFAULT_MAX_BAD_FRACTION, ReadReport,
                                        SwappedCoordinatesError, bad_fraction_fix,
                                        check_not_swapped, read_coordinates_csv)
from geojax.data.sources.images import ImageDecodeError, decode_image, encode_image
from geojax.data.sources.csv_folder import CsvImageFolderSource
from geojax.data.sources.mp16 import Mp16MsgpackSource
from geojax.data.sources.osv5m import Osv5mSource

__all__ = [
    "DEFAULT_MAX_BAD_FRACTION",
    "ArrayRecordSource",
    "CsvImageFolderSource",
    "ImageDecodeError",
    "Mp16MsgpackSource",
    "Osv5mSource",
    "ReadReport",
    "SwappedCoordinatesError",
    "bad_fraction_fix",
    "check_not_swapped",
    "convert_to_array_record",
    "decode_image",
    "encode_image",
    "finalize_array_record",
    "main",
    "read_coordinates_csv",
]
