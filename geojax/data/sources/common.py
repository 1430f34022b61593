"""Shared pieces of the readers: reports, metadata CSVs, the source base (image bytes:
:mod:`geojax.data.sources.images`)."""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import operator
import os
import threading
from typing import Any, Callable, Iterable, Iterator, Sequence, SupportsIndex

import numpy as np

from geojax import fileio
from geojax.data import metadata_features
from geojax.geo import great_circle, sphere
from geojax.geo.gazetteer import Gazetteer

_log = logging.getLogger(__name__)

DEFAULT_MAX_BAD_FRACTION = 0.01  # the readers' and the pipeline's default (config.data.max_bad_fraction)

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
            raise ValueError(f"too many bad rows ({self.num_skipped} of {self.rows}, "
                             f"{self.bad_fraction:.1%}; at most {max_bad_fraction:.1%} allowed): "
                             f"{self.summary()} {bad_fraction_fix(self.bad_fraction)}")


def bad_fraction_fix(fraction: float) -> str:
    """The advice that ends every "too many bad ..." message: fix the data, or raise the limit
    to the next whole percent above the ``fraction`` of bad rows or records seen."""
    suggested = min(1.0, math.ceil(fraction * 100 + 1e-9) / 100)
    return (f"Fix the data, or allow more bad input with --config.data.max_bad_fraction={suggested:g} "
            "(the max_bad_fraction argument of the readers and of pipeline.make_dataset, "
            "--max-bad-fraction of the convert command).")


def _check_fraction(max_bad_fraction: float) -> None:
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}.")


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


# A whole file with LAT and LON swapped, every row in range (e.g. Europe, LAT 40-60 and LON 2-30,
# written as LAT 2-30 and LON 40-60), passes the row checks; it is caught by comparing how near
# the two readings lie to GeoNames places (populated places of >= 500 people).
SWAP_CHECK_SAMPLE = 1000  # rows compared, evenly spaced through the file
SWAP_CHECK_MIN_ROWS = 10  # fewer usable rows: no file-level verdict
SWAP_CHECK_MIN_SWAPPABLE = 0.95  # share of rows whose swapped reading is valid (|LON| <= 90)
SWAP_CHECK_GIVEN_KM = 50.0  # the given reading's median must be farther than this ...
SWAP_CHECK_SWAPPED_KM = 25.0  # ... and the swapped one's nearer than this
SWAP_CHECK_RATIO = 0.25  # ... and than this share of the given one


class SwappedCoordinatesError(ValueError):
    """A metadata file whose LAT and LON columns look swapped as a whole."""


def swap_check_distances(lat: np.ndarray, lng: np.ndarray) -> tuple[float, float, int] | None:
    """``(given_km, swapped_km, rows)``: median great-circle distance from the points to their
    nearest GeoNames place (>= 500 people) as given and with LAT and LON swapped, over an evenly
    spaced sample of at most :data:`SWAP_CHECK_SAMPLE` rows whose swapped reading is valid.

    None when the swapped reading is not a valid one for the file: fewer than
    :data:`SWAP_CHECK_MIN_ROWS` rows, or more than 5 % of the sample with |LON| > 90.
    """
    lat, lng = np.ravel(np.asarray(lat, np.float64)), np.ravel(np.asarray(lng, np.float64))
    if lat.size < SWAP_CHECK_MIN_ROWS:
        return None
    rows = np.unique(np.linspace(0, lat.size - 1, min(lat.size, SWAP_CHECK_SAMPLE)).astype(np.int64))
    lat, lng = lat[rows], lng[rows]
    swappable = np.abs(lng) <= 90.0
    if swappable.sum() < max(SWAP_CHECK_MIN_ROWS, SWAP_CHECK_MIN_SWAPPABLE * rows.size):
        return None
    lat, lng = lat[swappable], lng[swappable]
    places = Gazetteer.load(500)

    def median_km(a: np.ndarray, b: np.ndarray) -> float:
        nearest = places.nearest_place(a, b)
        return float(np.median(great_circle.distance_km(a, b, places.lat[nearest],
                                                        places.lng[nearest])))

    return median_km(lat, lng), median_km(lng, lat), int(lat.size)


def check_not_swapped(lat: np.ndarray, lng: np.ndarray, path: str) -> None:
    """Refuses a file whose LAT and LON columns look swapped as a whole.

    With :func:`swap_check_distances`' medians, the file is refused when the given reading lies
    far from inhabited places (median > 50 km) and the swapped one near them (median < 25 km
    and < a quarter of the given median). Photos lie near places: 1,000 points of each of the
    MP-16-, Im2GPS-, YFCC- and GWS-like samplers of :mod:`geojax.data.places` have medians of
    0.5-3.2 km as given and 150-290 km swapped. Points uniform on the globe, over the Atlantic,
    the Sahara or Antarctica are not refused: both readings are far from places (the
    Antarctic one's swapped median is about 240 km).

    Raises:
      SwappedCoordinatesError: naming the file and both medians.
    """
    found = swap_check_distances(lat, lng)
    if found is None:
        return
    given_km, swapped_km, rows = found
    if (given_km > SWAP_CHECK_GIVEN_KM and swapped_km < SWAP_CHECK_SWAPPED_KM
            and swapped_km < SWAP_CHECK_RATIO * given_km):
        raise SwappedCoordinatesError(
            f"{path}: LAT and LON look swapped: over {rows} rows the median distance to the "
            f"nearest GeoNames place is {given_km:.1f} km as given and {swapped_km:.1f} km with "
            "LAT and LON swapped. Swap the two columns (or their names in the header).")


def read_coordinates_csv(path: str | os.PathLike, *,
                         max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
                         return_report: bool = False):
    """(lat, lng) float64 arrays from a metadata CSV; see the module docstring for bad rows.

    A file whose LAT and LON columns look swapped as a whole raises
    :class:`SwappedCoordinatesError` (:func:`check_not_swapped`).

    Returns ``(lat, lng)``, or ``(lat, lng, ids, report)`` with ``return_report=True``.
    """
    _check_fraction(max_bad_fraction)
    path = os.fspath(path)
    report = ReadReport(path)
    lats, lngs, ids = [], [], []
    with _open_csv(path) as f:
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
    check_not_swapped(lat, lng, path)
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
    rejected: set[str]  # ids of rows skipped for their coordinates or posting time


def _read_metadata(path: str | os.PathLike, report: ReadReport, *, id_columns: tuple[str, ...],
                   string_columns: Sequence[str] | None = (),
                   default_utc_offset_hours: float = 0.0) -> _Metadata:
    """Reads a metadata CSV, skipping (and reporting) rows without id, duplicates, bad
    coordinates, unreadable posting times.

    Scene columns, ``AUTHOR`` (-> ``user``) and the first posting-time column of
    ``metadata_features.POSTING_TIME_COLUMNS`` (-> ``timestamp``, int64 Unix seconds UTC, by
    ``metadata_features.posting_time``; text without an offset read on the clock
    ``default_utc_offset_hours`` ahead of UTC) are picked up automatically;
    ``string_columns`` names further columns kept verbatim as strings (None: all of them).
    """
    path = os.fspath(path)
    with _open_csv(path) as f:
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
        c_time = next((lowered.index(c) for c in metadata_features.POSTING_TIME_COLUMNS
                       if c in lowered), None)
        times: list[int] = []
        used = {c_id, c_lat, c_lng, c_time, *ints, *floats, *strings}
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
            if c_time is not None:
                try:
                    times.append(metadata_features.posting_time(
                        row[c_time] if c_time < len(row) else "", default_utc_offset_hours))
                except ValueError:
                    report.skip(f"rows with an unreadable posting time ({header[c_time].strip()})",
                                row_id)
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
    if c_time is not None:
        columns["timestamp"] = np.array(times, np.int64)
    lat, lng = sphere.validate_latlng(np.array(lats, np.float64), np.array(lngs, np.float64), name=path)
    check_not_swapped(lat, lng, path)
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
    """The bytes of a local file or an object (``gs://``, ``s3://``), through epath."""
    return fileio.read_bytes(path)


def _open_csv(path: str) -> io.TextIOWrapper:
    """A CSV file (local or on an object store) opened for ``csv.reader``: streamed, UTF-8
    with an optional BOM, ``newline=""``."""
    return io.TextIOWrapper(fileio.open_file(path, "rb"), encoding="utf-8-sig", newline="")


def _existing_files(folder: str, names: Sequence[str]) -> set[str]:
    """The ``names`` (paths relative to ``folder``) that are files: checked one by one on a
    local disk, from one listing of the folder on an object store (one request per name
    would be one round trip per image)."""
    if fileio.is_local(folder):
        return {n for n in names if os.path.isfile(os.path.join(folder, n))}
    return set(fileio.files_under(folder)).intersection(names)


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

    @property
    def lat(self) -> np.ndarray:
        """Latitudes (degrees) of the kept records, in record order."""
        return self._lat

    @property
    def lng(self) -> np.ndarray:
        """Longitudes (degrees) of the kept records, in record order."""
        return self._lng

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def column(self, key: str) -> np.ndarray | None:
        """Record field ``key`` of every kept record, in record order, without reading an
        image (numbers as their numpy array, text as an object array), or None when the
        records have no such field."""
        values = self._columns.get(key)
        if values is None or isinstance(values, np.ndarray):
            return values
        return np.array([values[i] for i in range(len(values))], object)

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
