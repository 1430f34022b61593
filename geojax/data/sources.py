"""Readers for the real on-disk dataset formats, each yielding geojax Example records.

Every reader is a grain ``RandomAccessDataSource`` (``__len__``, ``__getitem__``), so
the pipeline wraps it in ``grain.MapDataset.source(...)``. A record is a dict::

    image_bytes  the encoded JPEG/PNG bytes, NOT decoded (decoding is the pipeline's
                 job, where failures are counted; see :func:`decode_image`)
    lat, lng     numpy float64 degrees (lng wrapped into [-180, 180))
    id           str
    user         str, from an ``AUTHOR`` column (optional)
    scene3, scene16, scene365            numpy int64, from ``S3_Label`` ... (-1: unparsable)
    prob_indoor, prob_natural, prob_urban numpy float64, from ``Prob_*`` (NaN: unparsable)
    ...          OSV-5M: its string columns (``country``, ``region``, ``city``, ...)

Formats:

* :class:`CsvImageFolderSource` — Im2GPS / Im2GPS3k / YFCC4k / GWS15k: a metadata CSV
  (``IMG_ID`` or ``IMG_FILE``, ``LAT``, ``LON``, optional ``AUTHOR`` and scene columns)
  and a folder of images.
* :class:`Mp16MsgpackSource` — MP-16 / yfcc25600: msgpack shards of ``{id, image}``
  records joined by id to a metadata CSV.
* :class:`Osv5mSource` — OSV-5M: ``{train,test}.csv`` and zipped (or extracted) JPEGs.
* :func:`convert_to_array_record` / :class:`ArrayRecordSource` — any source into
  ArrayRecord shards (msgpack records, no pickle, no TensorFlow) and back, for fast
  random access. Command line: ``python -m geojax.data.sources convert --format=csv ...``.

Bad input is never fatal alone and never silent. At construction, rows with missing,
non-numeric, non-finite or out-of-range coordinates (|LAT| > 90 — some published Im2GPS
files have LAT and LON swapped, which is reported, never silently swapped), duplicate
ids, missing images and truncated or corrupt shard records are skipped, counted and
listed by id in ``source.report`` (a :class:`ReadReport`); more than
``max_bad_fraction`` of bad rows is a ``ValueError`` carrying the report's summary.
Undecodable images are returned as they are (their bytes) and fail in
:func:`decode_image` with an :class:`ImageDecodeError`.

Memory: the per-record index lives in numpy arrays (strings in one UTF-8 buffer), not in
millions of Python objects, so forked grain workers share it copy-on-write.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import glob
import io
import json
import logging
import math
import operator
import os
import re
import shutil
import sys
import threading
import time
import uuid
import zipfile
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, SupportsIndex

import msgpack
import numpy as np
from PIL import Image, ImageFile

from geojax.geo import sphere

_log = logging.getLogger(__name__)

_LAT_COLUMNS = ("lat", "latitude")
_LNG_COLUMNS = ("lon", "lng", "longitude")
_SCENE_INT_COLUMNS = {"s3_label": "scene3", "s16_label": "scene16", "s365_label": "scene365"}
_SCENE_FLOAT_COLUMNS = {"prob_indoor": "prob_indoor", "prob_natural": "prob_natural",
                        "prob_urban": "prob_urban"}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_OSV5M_COLUMNS = ("country", "region", "sub-region", "city")


# ----------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------


@dataclasses.dataclass
class ReadReport:
    """What a reader skipped, by reason, with the ids of the skipped rows.

    ``skipped`` rows count towards the bad fraction; ``notes`` are facts worth
    reporting that lose no example (an image without a metadata row, a row kept with an
    unparsable scene label, a metadata row whose shard was not given with ``partial``).
    """

    path: str
    rows: int = 0
    kept: int = 0
    skipped: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    notes: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def skip(self, reason: str, row_id: str) -> None:
        self.skipped.setdefault(reason, []).append(row_id)

    def note(self, reason: str, row_id: str) -> None:
        self.notes.setdefault(reason, []).append(row_id)

    @property
    def num_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    @property
    def bad_fraction(self) -> float:
        return self.num_skipped / self.rows if self.rows else 0.0

    def summary(self, max_ids: int = 5) -> str:
        def listing(groups: dict[str, list[str]]) -> str:
            return "; ".join(f"{len(ids)} {reason} (e.g. {', '.join(ids[:max_ids])})"
                             for reason, ids in groups.items())

        if not self.skipped:
            text = f"{self.path}: {self.kept} rows read, none skipped."
        else:
            text = f"{self.path}: {self.kept} of {self.rows} rows read; skipped {listing(self.skipped)}."
        if self.notes:
            text += f" Noted: {listing(self.notes)}."
        return text

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self, max_bad_fraction: float) -> None:
        """Raises ``ValueError`` if more than ``max_bad_fraction`` of the rows were skipped."""
        if self.rows and self.bad_fraction > max_bad_fraction:
            raise ValueError(f"too many bad rows ({self.num_skipped} of {self.rows}, more than "
                             f"{max_bad_fraction:.1%}): {self.summary()} Fix the data or raise "
                             "max_bad_fraction.")


def _check_fraction(max_bad_fraction: float) -> None:
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}.")


# ----------------------------------------------------------------------------------
# Image bytes
# ----------------------------------------------------------------------------------


class ImageDecodeError(ValueError):
    """Bytes that are not a complete image PIL can decode (corrupt, truncated, empty)."""


def decode_image(image_bytes: bytes, *, record_id: str | None = None) -> np.ndarray:
    """Decodes JPEG/PNG/... bytes into a writable uint8 ``(H, W, 3)`` RGB array.

    Truncated images are errors, never partial images: this resets PIL's process-wide
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` to False (geojax never wants it on) and forces
    the full decode with ``Image.load()``. No EXIF rotation is applied (as the published
    pipelines of these datasets did).

    Raises:
      ImageDecodeError: the bytes are empty, not an image, truncated or corrupt; the
        message names ``record_id`` and PIL's reason.
    """
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    what = f"image {record_id!r}" if record_id is not None else "image"
    if not image_bytes:
        raise ImageDecodeError(f"{what}: no bytes (empty file or record).")
    try:
        with Image.open(io.BytesIO(image_bytes)) as img:
            img.load()
            rgb = img.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"{what} ({len(image_bytes)} bytes) cannot be decoded: {e}") from e
    return np.array(rgb, dtype=np.uint8)


def encode_image(image: np.ndarray, image_format: str = "png") -> bytes:
    """Encodes a uint8 ``(H, W, 3)`` (or ``(H, W)``) array as PNG (lossless) or JPEG quality 95."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}.")
    buf = io.BytesIO()
    if image_format == "png":
        Image.fromarray(image).save(buf, format="PNG")
    elif image_format == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=95)
    else:
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}.")
    return buf.getvalue()


# ----------------------------------------------------------------------------------
# Metadata CSVs
# ----------------------------------------------------------------------------------


def _column(header: list[str], names: tuple[str, ...], path: str, required: bool = True) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for n in names:
        if n in lowered:
            return lowered.index(n)
    if required:
        raise ValueError(f"{path}: no {names[0].upper()} column (looked for {', '.join(names)}); header is {header}.")
    return None


def _parse_latlng(row: list[str], c_lat: int, c_lng: int) -> tuple[float, float] | str:
    """``(lat, lng)`` of a CSV row, or the reason the row is bad."""
    try:
        lat, lng = float(row[c_lat]), float(row[c_lng])
    except (IndexError, ValueError):
        return "rows with missing or non-numeric coordinates"
    if not (math.isfinite(lat) and math.isfinite(lng)):
        return "rows with NaN/infinite coordinates"
    if abs(lat) > 90:
        return "rows with |LAT| > 90 (LAT/LON swapped?)" if abs(lng) <= 90 else "rows with |LAT| > 90"
    return lat, lng


def read_coordinates_csv(path: str | os.PathLike, *, max_bad_fraction: float = 0.01,
                         return_report: bool = False):
    """(lat, lng) float64 arrays from a metadata CSV; see the module docstring for bad rows.

    Returns ``(lat, lng)``, or ``(lat, lng, ids, report)`` with ``return_report=True``.
    """
    path = os.fspath(path)
    report = ReadReport(path)
    lats, lngs, ids = [], [], []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty file, expected a header with LAT and LON columns.") from None
        c_lat = _column(header, _LAT_COLUMNS, path)
        c_lng = _column(header, _LNG_COLUMNS, path)
        c_id = _column(header, ("img_id", "img_file", "id"), path, required=False)
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            report.rows += 1
            row_id = row[c_id] if c_id is not None and c_id < len(row) else f"line {line_no}"
            parsed = _parse_latlng(row, c_lat, c_lng)
            if isinstance(parsed, str):
                report.skip(parsed, row_id)
                continue
            lats.append(parsed[0])
            lngs.append(parsed[1])
            ids.append(row_id)
    report.kept = len(lats)
    report.check(max_bad_fraction)
    if not lats:
        raise ValueError(f"{path}: no usable coordinates. {report.summary()}")
    if report.num_skipped:
        print(report.summary())
    lat, lng = sphere.validate_latlng(lats, lngs, name=path)
    if return_report:
        return lat, lng, ids, report
    return lat, lng


@dataclasses.dataclass
class _Metadata:
    """The good rows of a metadata CSV, in file order."""

    ids: list[str]
    lat: np.ndarray
    lng: np.ndarray
    columns: dict[str, np.ndarray | list[str]]  # record key -> values per good row
    rejected: set[str]  # ids of rows skipped for their coordinates


def _read_metadata(path: str | os.PathLike, report: ReadReport, *, id_columns: tuple[str, ...],
                   string_columns: Sequence[str] | None = ()) -> _Metadata:
    """Reads a metadata CSV, skipping (and reporting) rows without id, duplicates, bad coordinates.

    Scene columns and ``AUTHOR`` (-> ``user``) are picked up automatically;
    ``string_columns`` names further columns kept verbatim as strings (None: all of them).
    """
    path = os.fspath(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file, expected a header with id, LAT and LON columns.")
        c_id = _column(header, id_columns, path)
        c_lat = _column(header, _LAT_COLUMNS, path)
        c_lng = _column(header, _LNG_COLUMNS, path)
        lowered = [h.strip().lower() for h in header]
        ints = {lowered.index(c): key for c, key in _SCENE_INT_COLUMNS.items() if c in lowered}
        floats = {lowered.index(c): key for c, key in _SCENE_FLOAT_COLUMNS.items() if c in lowered}
        strings = {lowered.index("author"): "user"} if "author" in lowered else {}
        used = {c_id, c_lat, c_lng, *ints, *floats, *strings}
        if string_columns is None:
            strings.update({c: header[c].strip() for c in range(len(header)) if c not in used})
        else:
            strings.update({lowered.index(n.lower()): n for n in string_columns if n.lower() in lowered})
        ids, lats, lngs, rejected, seen = [], [], [], set(), set()
        values: dict[str, list] = {key: [] for key in (*ints.values(), *floats.values(), *strings.values())}
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            report.rows += 1
            row_id = row[c_id].strip() if c_id < len(row) else ""
            if not row_id:
                report.skip("rows without an id", f"line {line_no}")
                continue
            if row_id in seen:
                report.skip("rows with a duplicate id", row_id)
                continue
            seen.add(row_id)
            parsed = _parse_latlng(row, c_lat, c_lng)
            if isinstance(parsed, str):
                report.skip(parsed, row_id)
                rejected.add(row_id)
                continue
            ids.append(row_id)
            lats.append(parsed[0])
            lngs.append(parsed[1])
            bad_scene = False
            for c, key in ints.items():
                try:
                    values[key].append(int(float(row[c])))
                except (IndexError, ValueError, OverflowError):
                    values[key].append(-1)
                    bad_scene = True
            for c, key in floats.items():
                try:
                    values[key].append(float(row[c]))
                except (IndexError, ValueError):
                    values[key].append(math.nan)
                    bad_scene = True
            for c, key in strings.items():
                values[key].append(row[c] if c < len(row) else "")
            if bad_scene:
                report.note("rows with unparsable scene columns (kept as -1 / NaN)", row_id)
    columns: dict[str, np.ndarray | list[str]] = dict(values)
    for key in ints.values():
        columns[key] = np.array(values[key], np.int64)
    for key in floats.values():
        columns[key] = np.array(values[key], np.float64)
    lat, lng = sphere.validate_latlng(np.array(lats, np.float64), np.array(lngs, np.float64), name=path)
    return _Metadata(ids, lat, lng, columns, rejected)


# ----------------------------------------------------------------------------------
# Shared machinery of the sources
# ----------------------------------------------------------------------------------


class _Strings:
    """An immutable column of str stored as one UTF-8 buffer plus offsets.

    Millions of Python str objects would be copied page by page into every forked
    worker as their reference counts change; two numpy arrays are shared.
    """

    def __init__(self, values: Iterable[str]):
        encoded = [v.encode("utf-8", "surrogateescape") for v in values]
        self._offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(e) for e in encoded], out=self._offsets[1:])
        self._data = np.frombuffer(b"".join(encoded), np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self._data[self._offsets[i]:self._offsets[i + 1]].tobytes().decode("utf-8", "surrogateescape")


class _OpenFiles:
    """Per-process cache of open files, reopened after ``fork`` (checked with ``os.getpid``).

    ``opener`` must be picklable (a class or a module-level function): sources travel to
    grain worker processes by pickling, and only the opener travels, not the handles.
    """

    def __init__(self, opener: Callable[[str], Any]):
        self._opener = opener
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._files: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, path: str) -> Any:
        if os.getpid() != self._pid:  # a forked child: never share the parent's handles
            self._reset()
        handle = self._files.get(path)
        if handle is None:
            with self._lock:
                handle = self._files.get(path)
                if handle is None:
                    handle = self._files[path] = self._opener(path)
        return handle

    def close(self) -> None:
        if os.getpid() == self._pid:
            for handle in self._files.values():
                if isinstance(handle, int):
                    os.close(handle)
                else:
                    handle.close()
        self._reset()

    def __getstate__(self) -> dict[str, Any]:
        return {"_opener": self._opener}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._opener = state["_opener"]
        self._reset()


def _check_index(i: SupportsIndex, n: int) -> int:
    """``i`` as a non-negative int in ``[0, n)`` (negative counts from the end), else IndexError."""
    i = operator.index(i)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"record {i} out of range for {n} records.")
    return i


def _open_fd(path: str) -> int:
    return os.open(path, os.O_RDONLY)


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class _Source:
    """Index columns of the kept rows and record assembly, shared by the readers."""

    report: ReadReport

    def _init_rows(self, meta: _Metadata, keep: Sequence[int] | np.ndarray, max_bad_fraction: float) -> None:
        """Keeps rows ``keep`` of ``meta`` (in that order) after the bad-fraction check."""
        keep = np.asarray(keep, np.int64)
        self.report.kept = len(keep)
        self.report.check(max_bad_fraction)
        if not len(keep):
            raise ValueError(f"no usable records: {self.report.summary()}")
        if self.report.skipped or self.report.notes:
            _log.warning("%s", self.report.summary())
        self._ids = _Strings(meta.ids[k] for k in keep)
        self._lat, self._lng = meta.lat[keep], meta.lng[keep]
        self._columns = {key: v[keep] if isinstance(v, np.ndarray) else _Strings(v[k] for k in keep)
                         for key, v in meta.columns.items()}

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]


    def _record(self, i: int, image_bytes: bytes) -> dict[str, Any]:
        record = {"image_bytes": image_bytes, "lat": self._lat[i], "lng": self._lng[i], "id": self._ids[i]}
        for key, column in self._columns.items():
            record[key] = column[i]
        return record

    def __getitem__(self, i: SupportsIndex) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        """Closes the files this process opened (reads reopen them)."""
        files = getattr(self, "_files", None)
        if files is not None:
            files.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------
# 1. CSV + image folder (Im2GPS, Im2GPS3k, YFCC4k/26k, GWS15k)
# ----------------------------------------------------------------------------------


class CsvImageFolderSource(_Source):
    """Metadata CSV (``IMG_ID``/``IMG_FILE``, ``LAT``, ``LON``, ...) + a folder of images.

    The id column holds the file name relative to ``image_dir`` (sub-folders allowed).
    Rows with bad coordinates or a missing image file (Flickr ids go dead) are skipped
    and reported; images are read lazily in ``__getitem__``.
    """

    def __init__(self, csv_path: str | os.PathLike, image_dir: str | os.PathLike, *,
                 max_bad_fraction: float = 0.01):
        _check_fraction(max_bad_fraction)
        self.csv_path, self.image_dir = os.fspath(csv_path), os.fspath(image_dir)
        if not os.path.isdir(self.image_dir):
            raise FileNotFoundError(f"image folder {self.image_dir} does not exist.")
        self.report = ReadReport(self.csv_path)
        meta = _read_metadata(self.csv_path, self.report, id_columns=("img_id", "img_file"))
        keep = []
        for k, row_id in enumerate(meta.ids):
            if os.path.isfile(os.path.join(self.image_dir, row_id)):
                keep.append(k)
            else:
                self.report.skip("rows whose image file is missing", row_id)
        self._init_rows(meta, keep, max_bad_fraction)

    def __getitem__(self, i: SupportsIndex) -> dict[str, Any]:
        i = _check_index(i, len(self))
        return self._record(i, _read_file(os.path.join(self.image_dir, self._ids[i])))

    def __repr__(self) -> str:
        return f"CsvImageFolderSource(csv_path={self.csv_path!r}, image_dir={self.image_dir!r}, {len(self)} records)"


# ----------------------------------------------------------------------------------
# 2. MP-16 / yfcc25600 msgpack shards
# ----------------------------------------------------------------------------------


def _natural_key(path: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def _expand_shards(shards: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """A glob, a folder (all ``*.msg`` in it), one file, or a list of files -> shard paths."""
    if isinstance(shards, (str, os.PathLike)):
        pattern = os.fspath(shards)
        if os.path.isdir(pattern):
            pattern = os.path.join(pattern, "*.msg")
        paths = sorted(glob.glob(pattern), key=_natural_key)
        if not paths:
            raise FileNotFoundError(f"no msgpack shards match {pattern!r}.")
        return paths
    paths = [os.fspath(p) for p in shards]
    missing = [p for p in paths if not os.path.isfile(p)]
    if not paths or missing:
        raise FileNotFoundError(f"msgpack shards not found: {missing or 'empty list'}.")
    return paths


def _unpack_image_record(obj: Any) -> tuple[str, bytes] | None:
    """``(id, image bytes)`` of an unpacked shard record; accepts str or bytes keys and values."""
    if not isinstance(obj, dict):
        return None
    rid, image = obj.get("id", obj.get(b"id")), obj.get("image", obj.get(b"image"))
    if isinstance(rid, bytes):
        rid = rid.decode("utf-8", "surrogateescape")
    if isinstance(image, str):  # packed without use_bin_type: bytes came back as str
        image = image.encode("utf-8", "surrogateescape")
    if isinstance(rid, int):
        rid = str(rid)
    if not isinstance(rid, str) or not isinstance(image, bytes):
        return None
    return rid, image


def _unpacker_kwargs() -> dict[str, Any]:
    # surrogateescape: shards written without use_bin_type hold the JPEG as a "str";
    # it round-trips losslessly back to bytes in _unpack_image_record.
    return {"raw": False, "unicode_errors": "surrogateescape"}


def _scan_shard(path: str, report: ReadReport) -> Iterator[tuple[str, int, int]]:
    """Yields ``(id, byte offset, byte length)`` of each complete record of a shard."""
    name = os.path.basename(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        unpacker = msgpack.Unpacker(f, **_unpacker_kwargs())
        offset = 0
        while True:
            try:
                obj = unpacker.unpack()
            except msgpack.OutOfData:
                if offset < size:
                    report.rows += 1
                    report.skip("truncated records at the end of a shard", f"{name}@{offset}")
                return
            except (ValueError, msgpack.UnpackException) as e:
                report.rows += 1
                report.skip("corrupt shard records (rest of the shard unreadable)", f"{name}@{offset} ({e})")
                return
            end = unpacker.tell()
            if not isinstance(obj, dict):  # garbage that happens to parse: no way to resync
                report.rows += 1
                report.skip("corrupt shard records (rest of the shard unreadable)",
                            f"{name}@{offset} (a {type(obj).__name__}, not a record)")
                return
            parsed = _unpack_image_record(obj)
            if parsed is None:
                report.rows += 1
                report.skip("shard records without an id or image", f"{name}@{offset}")
            else:
                yield parsed[0], offset, end - offset
            offset = end


class Mp16MsgpackSource(_Source):
    """MP-16 / yfcc25600 as distributed: msgpack shards joined by id to a metadata CSV.

    Each shard (``shard_N.msg``) is a stream of ``{"id": str, "image": bytes}`` maps.
    Construction reads every shard once to index ``(shard, byte offset)`` per record;
    ``__getitem__`` reads and unpacks one record with ``os.pread`` (thread-safe). Records
    are in shard order. For repeated training runs convert once to ArrayRecord.

    Args:
      shards: a glob (``"mp16/shard_*.msg"``), a folder (its ``*.msg``), or a list.
      metadata_csv: ``IMG_ID, LAT, LON, ...`` (``key_column`` holds the shard ids).
      key_column: the CSV column matched exactly against the records' ``id``.
      max_bad_fraction: most bad rows (bad coordinates, duplicates, metadata rows without
        an image, truncated or corrupt records) allowed, as a fraction of metadata rows
        plus faulty records.
      partial: only some of the dataset's shards are given: metadata rows without an
        image are then noted, not counted as bad. Images without a metadata row are
        always noted, not bad (the CSV defines the dataset).
    """

    def __init__(self, shards: str | os.PathLike | Sequence[str | os.PathLike],
                 metadata_csv: str | os.PathLike, *, key_column: str = "IMG_ID",
                 max_bad_fraction: float = 0.01, partial: bool = False):
        _check_fraction(max_bad_fraction)
        self.shard_paths = _expand_shards(shards)
        self.metadata_csv = os.fspath(metadata_csv)
        self.report = ReadReport(f"{self.metadata_csv} + {len(self.shard_paths)} shards")
        meta = _read_metadata(self.metadata_csv, self.report, id_columns=(key_column.lower(),))
        row_of = {rid: k for k, rid in enumerate(meta.ids)}
        found = np.full(len(meta.ids), -1, np.int64)  # index into the lists below
        keep, shard_of, offsets, lengths = [], [], [], []
        for s, path in enumerate(self.shard_paths):
            for rid, offset, length in _scan_shard(path, self.report):
                k = row_of.get(rid)
                if k is None:
                    if rid not in meta.rejected:  # rows with bad coordinates are reported already
                        self.report.note("image records without a metadata row", rid)
                elif found[k] >= 0:
                    self.report.note("duplicate image records (first kept)", rid)
                else:
                    found[k] = len(keep)
                    keep.append(k)
                    shard_of.append(s)
                    offsets.append(offset)
                    lengths.append(length)
        for k in np.flatnonzero(found < 0):
            if partial:
                self.report.note("metadata rows without an image (partial shards)", meta.ids[k])
            else:
                self.report.skip("metadata rows without an image", meta.ids[k])
        self._init_rows(meta, keep, max_bad_fraction)
        self._shard = np.array(shard_of, np.int32)
        self._offset = np.array(offsets, np.int64)
        self._length = np.array(lengths, np.int64)
        self._files = _OpenFiles(_open_fd)

    def __getitem__(self, i: SupportsIndex) -> dict[str, Any]:
        i = _check_index(i, len(self))
        path = self.shard_paths[self._shard[i]]
        length = int(self._length[i])
        data = os.pread(self._files.get(path), length, int(self._offset[i]))
        parsed = None
        if len(data) == length:
            try:
                parsed = _unpack_image_record(msgpack.unpackb(data, **_unpacker_kwargs()))
            except (ValueError, msgpack.UnpackException):
                pass
        if parsed is None or parsed[0] != self._ids[i]:
            raise OSError(f"{path} changed since it was indexed: record {self._ids[i]!r} is no longer "
                          f"at byte {self._offset[i]}. Rebuild the source.")
        return self._record(i, parsed[1])

    def __repr__(self) -> str:
        return (f"Mp16MsgpackSource({len(self.shard_paths)} shards from {self.shard_paths[0]!r}, "
                f"metadata_csv={self.metadata_csv!r}, {len(self)} records)")


# ----------------------------------------------------------------------------------
# 3. OSV-5M
# ----------------------------------------------------------------------------------


class Osv5mSource(_Source):
    """OSV-5M: ``root/{split}.csv`` and JPEGs in ``root/images/{split}/*.zip``.

    Zip members ``<id>.jpg`` may sit in sub-folders of the zip; images already
    extracted under ``root/images/{split}/`` (what the official download script leaves)
    are found too. Members are indexed at construction (``ZipFile.namelist``) and read
    lazily through one open ``ZipFile`` per file per process (reopened after fork).

    Args:
      root: the dataset folder.
      split: ``"train"`` or ``"test"``.
      extra_columns: CSV columns kept as strings in each record (absent ones are
        ignored); None keeps every column (memory grows with them on 5M rows).
      max_bad_fraction: as for the other readers.
      partial: only some zips are present: rows without an image are noted, not bad.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", *,
                 extra_columns: Sequence[str] | None = _OSV5M_COLUMNS,
                 max_bad_fraction: float = 0.01, partial: bool = False):
        _check_fraction(max_bad_fraction)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
        self.root, self.split = os.fspath(root), split
        self.csv_path = os.path.join(self.root, f"{split}.csv")
        self.image_root = os.path.join(self.root, "images", split)
        if not os.path.isdir(self.image_root):
            raise FileNotFoundError(f"OSV-5M image folder {self.image_root} does not exist.")
        self.report = ReadReport(self.csv_path)
        meta = _read_metadata(self.csv_path, self.report, id_columns=("id",), string_columns=extra_columns)
        images = self._index_images()
        keep, container, members = [], [], []
        for k, rid in enumerate(meta.ids):
            where = images.get(rid)
            if where is None:
                if partial:
                    self.report.note("rows without an image (partial zips)", rid)
                else:
                    self.report.skip("rows without an image", rid)
                continue
            keep.append(k)
            container.append(where[0])
            members.append(where[1])
        known = set(meta.ids) | meta.rejected
        for rid in images:
            if rid not in known:
                self.report.note("images without a metadata row", rid)
        self._init_rows(meta, keep, max_bad_fraction)
        self._container = np.array(container, np.int32)  # index into zip_paths; -1: extracted file
        self._member = _Strings(members)
        self._files = _OpenFiles(zipfile.ZipFile)

    def _index_images(self) -> dict[str, tuple[int, str]]:
        """id -> (zip index or -1, member name or path relative to image_root)."""
        images: dict[str, tuple[int, str]] = {}

        def add(name: str, where: tuple[int, str]) -> None:
            stem, ext = os.path.splitext(os.path.basename(name))
            if ext.lower() in _IMAGE_SUFFIXES:
                if stem in images:
                    self.report.note("duplicate images (first kept)", stem)
                else:
                    images[stem] = where

        self.zip_paths = []
        for dirpath, dirnames, filenames in os.walk(self.image_root):
            dirnames.sort()
            for filename in sorted(filenames, key=_natural_key):
                path = os.path.join(dirpath, filename)
                if filename.lower().endswith(".zip"):
                    try:
                        with zipfile.ZipFile(path) as zf:
                            names = [n for n in zf.namelist() if not n.endswith("/")]
                    except (zipfile.BadZipFile, OSError) as e:
                        self.report.rows += 1
                        self.report.skip("unreadable zip files", f"{filename} ({e})")
                        continue
                    self.zip_paths.append(path)
                    for name in names:
                        add(name, (len(self.zip_paths) - 1, name))
                else:
                    add(filename, (-1, os.path.relpath(path, self.image_root)))
        return images

    def __getitem__(self, i: SupportsIndex) -> dict[str, Any]:
        i = _check_index(i, len(self))
        container = int(self._container[i])
        if container < 0:
            return self._record(i, _read_file(os.path.join(self.image_root, self._member[i])))
        return self._record(i, self._files.get(self.zip_paths[container]).read(self._member[i]))

    def __repr__(self) -> str:
        return f"Osv5mSource(root={self.root!r}, split={self.split!r}, {len(self)} records)"


# ----------------------------------------------------------------------------------
# 4. ArrayRecord
# ----------------------------------------------------------------------------------

_DATASET_FORMAT = "geojax.array_record"
_DATASET_VERSION = 1
_NDARRAY_EXT = 1  # msgpack ext type of a numeric numpy array: [dtype.str, shape, raw bytes]
_WRITER_OPTIONS = "group_size:1,uncompressed"  # one record per chunk; JPEG/PNG do not compress


def _plain(value: Any, field: str) -> Any:
    """A record value as a msgpack-native value (or an ndarray ext); never pickle."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        payload = msgpack.packb([value.dtype.str, list(value.shape), np.ascontiguousarray(value).tobytes()])
        return msgpack.ExtType(_NDARRAY_EXT, payload)
    if isinstance(value, (list, tuple)):
        return [_plain(v, field) for v in value]
    raise TypeError(f"field {field!r}: a {type(value).__name__} cannot be stored; records hold "
                    "bytes, str, int, float, bool, None, lists of them and numeric numpy arrays.")


def _serialize_record(record: Mapping[str, Any], image_format: str) -> tuple[bytes, dict[str, str]]:
    """msgpack bytes of one record and its field types.

    A decoded ``image`` is encoded into ``image_bytes`` when the record has none, and
    dropped when it has (the encoded bytes are the original).
    """
    record = dict(record)
    image = record.pop("image", None)
    if "image_bytes" not in record and image is not None:
        record["image_bytes"] = encode_image(image, image_format)
    missing = [k for k in ("image_bytes", "lat", "lng", "id") if k not in record]
    if missing:
        raise ValueError(f"record {record.get('id')!r} lacks {missing}; an Example needs image_bytes "
                         "(or image), lat, lng and id.")
    plain = {str(k): _plain(v, k) for k, v in record.items()}
    plain["id"] = str(plain["id"])
    lat, lng = sphere.validate_latlng(plain["lat"], plain["lng"], name=f"record {plain['id']!r}")
    plain["lat"], plain["lng"] = float(lat), float(lng)
    types = {k: "ndarray" if isinstance(v, msgpack.ExtType) else type(v).__name__ for k, v in plain.items()}
    return msgpack.packb(plain, use_bin_type=True), types


def _ext_hook(code: int, data: bytes) -> Any:
    if code != _NDARRAY_EXT:
        raise ValueError(f"unknown msgpack ext type {code} in a geojax record.")
    dtype, shape, raw = msgpack.unpackb(data, raw=False)
    return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()


def _deserialize_record(payload: bytes) -> dict[str, Any]:
    record = msgpack.unpackb(payload, raw=False, ext_hook=_ext_hook)
    for key, value in record.items():  # the same scalar types the readers return
        if isinstance(value, float):
            record[key] = np.float64(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            record[key] = np.int64(value)
    return record


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def convert_to_array_record(source: Any, out_dir: str | os.PathLike, *, num_shards: int | None = None,
                            name: str = "geojax", overwrite: bool = False, image_format: str = "png",
                            check_images: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Writes every record of ``source`` into ArrayRecord shards under ``out_dir``.

    Records keep their order (global index i of the dataset is ``source[i]``), split into
    contiguous shards ``{name}-00000-of-0000N.array_record`` written with
    ``group_size:1`` for random access. Each record is a msgpack map of plain values (no
    pickle); a decoded ``image`` array (a GeoWorld split) is stored as PNG by default
    (lossless: decoding gives back the exact pixels) or JPEG quality 95
    (``image_format="jpeg"``, ~5x smaller, not exact). ``metadata.json`` holds the count,
    shards, field types and the source's description and report summary;
    ``report.json`` the full list of skipped ids.

    Crash safety: everything is written and fsynced under a hidden temporary folder next
    to ``out_dir``, which is renamed to ``out_dir`` only when complete, so ``out_dir``
    either does not exist or is a complete dataset. An existing ``out_dir`` is refused
    unless ``overwrite=True``, in which case it is replaced only after the new one is
    complete.

    Args:
      check_images: decode each image and drop undecodable ones (counted in the report).

    Returns:
      The metadata written to ``metadata.json``.
    """
    from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=import-outside-toplevel

    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir} already exists; pass overwrite=True (--overwrite) to replace it.")
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}.")
    n = len(source)
    if n == 0:
        raise ValueError(f"{source!r} has no records to convert.")
    num_shards = max(1, math.ceil(n / 10_000)) if num_shards is None else num_shards
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
    num_shards = min(num_shards, n)
    parent, base = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{base}.tmp-{uuid.uuid4().hex[:12]}")
    os.makedirs(tmp)
    report = ReadReport(f"conversion of {source!r}")
    fields: dict[str, str] = {}
    shards = []
    try:
        for s in range(num_shards):
            filename = f"{name}-{s:05d}-of-{num_shards:05d}.array_record"
            writer = ArrayRecordWriter(os.path.join(tmp, filename), _WRITER_OPTIONS)
            count = 0
            try:
                for i in range(s * n // num_shards, (s + 1) * n // num_shards):
                    record = source[i]
                    report.rows += 1
                    if check_images and "image_bytes" in record:
                        try:
                            decode_image(record["image_bytes"], record_id=str(record.get("id")))
                        except ImageDecodeError:
                            report.skip("undecodable images", str(record.get("id")))
                            continue
                    payload, types = _serialize_record(record, image_format)
                    writer.write(payload)
                    fields.update(types)
                    count += 1
            finally:
                writer.close()
            _fsync_path(os.path.join(tmp, filename))
            shards.append({"file": filename, "count": count})
        report.kept = sum(s["count"] for s in shards)
        if report.kept == 0:
            raise ValueError(f"no record left to write: {report.summary()}")
        source_report = getattr(source, "report", None)
        metadata = {
            "format": _DATASET_FORMAT, "version": _DATASET_VERSION, "name": name,
            "count": report.kept, "num_shards": num_shards, "shards": shards,
            "fields": dict(sorted(fields.items())), "writer_options": _WRITER_OPTIONS,
            "decoded_images_encoded_as": image_format, "source": repr(source),
            "source_report": source_report.summary() if isinstance(source_report, ReadReport) else None,
            "conversion_report": report.summary(), "created_unix_s": time.time(),
        }
        full_report = {"source": source_report.to_json() if isinstance(source_report, ReadReport) else None,
                       "conversion": report.to_json()}
        for filename, content in (("report.json", full_report), ("metadata.json", metadata)):
            with open(os.path.join(tmp, filename), "w", encoding="utf-8") as f:
                json.dump(content, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
        _fsync_path(tmp)
        if os.path.exists(out_dir):  # overwrite: swap in the complete new dataset, then drop the old
            old = os.path.join(parent, f".{base}.old-{uuid.uuid4().hex[:12]}")
            os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
        _fsync_path(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {report.kept} records in {num_shards} shards to {out_dir}. {report.summary()}")
    return metadata


class ArrayRecordSource:
    """Random-access reader of a dataset written by :func:`convert_to_array_record`.

    Reads with array_record's ``ArrayRecordDataSource`` (no TensorFlow, no TFDS) and
    returns the same record dicts as the source it was converted from (numbers as numpy
    float64 / int64). ``metadata`` holds ``metadata.json``.
    """

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = os.fspath(out_dir)
        meta_path = os.path.join(self.out_dir, "metadata.json")
        if not os.path.isfile(meta_path):
            raise FileNotFoundError(f"{self.out_dir} is not a complete geojax ArrayRecord dataset "
                                    "(no metadata.json); convert it again with convert_to_array_record.")
        with open(meta_path, encoding="utf-8") as f:
            self.metadata = json.load(f)
        if self.metadata.get("format") != _DATASET_FORMAT or self.metadata.get("version") != _DATASET_VERSION:
            raise ValueError(f"{meta_path}: format {self.metadata.get('format')!r} version "
                             f"{self.metadata.get('version')!r}, expected {_DATASET_FORMAT!r} {_DATASET_VERSION}.")
        paths = [os.path.join(self.out_dir, s["file"]) for s in self.metadata["shards"]]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{self.out_dir}: shard files missing: {missing}.")
        self._paths = paths
        self._pid, self._data = None, None
        if len(self._reader()) != self.metadata["count"]:
            raise ValueError(f"{self.out_dir}: shards hold {len(self._data)} records, metadata.json "
                             f"says {self.metadata['count']}; the dataset is damaged, convert it again.")

    def _reader(self) -> Any:
        """This process's ArrayRecordDataSource; a forked child opens its own readers."""
        if self._data is None or os.getpid() != self._pid:
            from array_record.python import array_record_data_source  # pylint: disable=import-outside-toplevel

            self._data = array_record_data_source.ArrayRecordDataSource(self._paths)
            self._pid = os.getpid()
        return self._data

    def __len__(self) -> int:
        return self.metadata["count"]

    def __getitem__(self, i: SupportsIndex) -> dict[str, Any]:
        return _deserialize_record(self._reader()[_check_index(i, len(self))])

    def __getitems__(self, indices: Sequence[SupportsIndex]) -> list[dict[str, Any]]:
        keys = [_check_index(i, len(self)) for i in indices]
        return [_deserialize_record(p) for p in self._reader().__getitems__(keys)]

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__, _pid=None, _data=None)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"ArrayRecordSource({self.out_dir!r}, {len(self)} records)"


# ----------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m geojax.data.sources",
                                     description="Convert geolocation datasets to ArrayRecord.")
    commands = parser.add_subparsers(dest="command", required=True)
    conv = commands.add_parser("convert", help="read a dataset, print its report, write ArrayRecord")
    conv.add_argument("--format", required=True, choices=("csv", "mp16", "osv5m"))
    conv.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    conv.add_argument("--csv", help="csv/mp16: the metadata CSV")
    conv.add_argument("--images", help="csv: the image folder")
    conv.add_argument("--shards", help="mp16: glob or folder of shard_N.msg")
    conv.add_argument("--key-column", default="IMG_ID", help="mp16: CSV column holding the shard ids")
    conv.add_argument("--root", help="osv5m: dataset folder")
    conv.add_argument("--split", default="train", choices=("train", "test"), help="osv5m: split")
    conv.add_argument("--max-bad-fraction", type=float, default=0.01)
    conv.add_argument("--partial", action="store_true", help="mp16/osv5m: only some shards/zips present")
    conv.add_argument("--num-shards", type=int, default=None)
    conv.add_argument("--name", default="geojax")
    conv.add_argument("--image-format", default="png", choices=("png", "jpeg"),
                      help="encoding of decoded images (GeoWorld); encoded bytes are copied as they are")
    conv.add_argument("--check-images", action="store_true", help="drop undecodable images")
    conv.add_argument("--overwrite", action="store_true")
    info = commands.add_parser("info", help="print the metadata of a converted dataset")
    info.add_argument("dir")
    return parser


def _require(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is None]
    if missing:
        raise ValueError(f"--format={args.format} needs {' '.join(missing)}.")


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "info":
            print(json.dumps(ArrayRecordSource(args.dir).metadata, indent=1))
            return 0
        if args.format == "csv":
            _require(args, "csv", "images")
            source = CsvImageFolderSource(args.csv, args.images, max_bad_fraction=args.max_bad_fraction)
        elif args.format == "mp16":
            _require(args, "shards", "csv")
            source = Mp16MsgpackSource(args.shards, args.csv, key_column=args.key_column,
                                       max_bad_fraction=args.max_bad_fraction, partial=args.partial)
        else:
            _require(args, "root")
            source = Osv5mSource(args.root, args.split, max_bad_fraction=args.max_bad_fraction,
                                 partial=args.partial)
        print(source.report.summary())
        convert_to_array_record(source, args.out, num_shards=args.num_shards, name=args.name,
                                overwrite=args.overwrite, image_format=args.image_format,
                                check_images=args.check_images)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
