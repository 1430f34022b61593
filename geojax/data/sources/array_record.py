"""Any source into ArrayRecord shards (msgpack records, no pickle, no TensorFlow) and back."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
import time
import uuid
from typing import Any, Callable, Iterator, Mapping, Sequence, SupportsIndex

import msgpack
import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

from geojax import fileio
from geojax.geo import sphere
from geojax.data.sources.common import (
    ImageDecodeError,
    ReadReport,
    _check_index,
    decode_image,
    encode_image,
)

# ----------------------------------------------------------------------------------
# 4. ArrayRecord
# ----------------------------------------------------------------------------------

_DATASET_FORMAT = "geojax.array_record"
_DATASET_VERSION = 1
COORDINATES_FILE = "coordinates.npy"
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
                            check_images: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Writes every record of ``source`` into ArrayRecord shards under ``out_dir``.

    Records keep their order (global index i of the dataset is ``source[i]``), split into
    contiguous shards ``{name}-00000-of-0000N.array_record`` written with
    ``group_size:1`` for random access. Each record is a msgpack map of plain values (no
    pickle); a decoded ``image`` array (a GeoWorld split) is stored as PNG by default
    (lossless: decoding gives back the exact pixels) or JPEG quality 95
    (``image_format="jpeg"``, ~5x smaller, not exact). ``metadata.json`` holds the count,
    shards, field types and the source's description and report summary;
    ``report.json`` the full list of skipped ids; ``coordinates.npy`` the ``(count, 2)``
    float64 (lat, lng) of every record, so that partitions can be built without reading
    the images.

    Crash safety: everything is written and fsynced under a hidden temporary folder next
    to ``out_dir``, which is renamed to ``out_dir`` only when complete, so ``out_dir``
    either does not exist or is a complete dataset. An existing ``out_dir`` is refused
    unless ``overwrite=True``, in which case it is replaced only after the new one is
    complete. On an object store (``out_dir`` a ``gs://`` URL), where a rename is a copy,
    the dataset is written into a local temporary folder, then (after removing an existing
    ``out_dir`` when overwriting) uploaded file by file with ``metadata.json`` last
    (:func:`geojax.fileio.upload_tree`): a folder without it is refused by
    :class:`ArrayRecordSource` as incomplete.

    The conversion's one summary (passed once to ``log``, and ``summary`` in
    ``metadata.json``) counts the rows the source skipped and the records the conversion
    dropped together, e.g. ``meta.csv: 45 of 47 rows read; skipped 2 undecodable images
    (e.g. a.jpg, b.jpg).``

    Args:
      check_images: decode each record's ``image_bytes`` (one full PIL decode) and drop the
        undecodable ones, counted in the summary and ``report.json``. False stores the bytes
        unchecked (the pipeline then skips, and counts, what fails to decode).

    Returns:
      The metadata written to ``metadata.json``.
    """

    out_dir = fileio.absolute(out_dir)
    local = fileio.is_local(out_dir)
    if fileio.exists(out_dir) and not overwrite:
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
    if local:
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{base}.tmp-{uuid.uuid4().hex[:12]}")
        os.makedirs(tmp)
    else:
        tmp = tempfile.mkdtemp(prefix=f"geojax-{base}.tmp-")
    report = ReadReport(f"conversion of {source!r}")
    fields: dict[str, str] = {}
    shards = []
    coords: list[tuple[float, float]] = []  # (lat, lng) of every written record, in order
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
                    coords.append((float(record["lat"]), float(record["lng"])))
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
        if not isinstance(source_report, ReadReport):
            source_report = None
        summary = _conversion_summary(source_report, report)
        metadata = {
            "format": _DATASET_FORMAT, "version": _DATASET_VERSION, "name": name,
            "count": report.kept, "num_shards": num_shards, "shards": shards,
            "fields": dict(sorted(fields.items())), "writer_options": _WRITER_OPTIONS,
            "decoded_images_encoded_as": image_format, "source": repr(source),
            "source_report": source_report.summary() if source_report is not None else None,
            "conversion_report": report.summary(), "summary": summary,
            "checked_images": bool(check_images), "created_unix_s": time.time(),
        }
        full_report = {"source": source_report.to_json() if source_report is not None else None,
                       "conversion": report.to_json()}
        with open(os.path.join(tmp, COORDINATES_FILE), "wb") as f:
            np.save(f, np.asarray(coords, np.float64).reshape(-1, 2))
            f.flush()
            os.fsync(f.fileno())
        for filename, content in (("report.json", full_report), ("metadata.json", metadata)):
            with open(os.path.join(tmp, filename), "w", encoding="utf-8") as f:
                json.dump(content, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
        _fsync_path(tmp)
        if not local:
            fileio.rmtree(out_dir)  # overwrite: a store cannot swap folders
            fileio.upload_tree(tmp, out_dir, last="metadata.json")
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(out_dir):  # overwrite: swap in the complete new dataset, then drop the old
            old = os.path.join(parent, f".{base}.old-{uuid.uuid4().hex[:12]}")
            os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
        if local:
            _fsync_path(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {report.kept} records in {num_shards} shard(s) to {out_dir}. {summary}")
    return metadata


def _conversion_summary(source_report: ReadReport | None, conversion: ReadReport) -> str:
    """One summary of a conversion: the source's skipped rows and notes plus the records the
    conversion dropped, over the source's rows (the conversion's records without a report)."""
    if source_report is None:
        return conversion.summary()
    merged = ReadReport(source_report.path, rows=source_report.rows, kept=conversion.kept,
                        skipped={k: list(v) for k, v in source_report.skipped.items()},
                        notes={k: list(v) for k, v in source_report.notes.items()})
    for reason, ids in conversion.skipped.items():
        merged.skipped.setdefault(reason, []).extend(ids)
    return merged.summary()


class ArrayRecordSource:
    """Random-access reader of a dataset written by :func:`convert_to_array_record`.

    Reads with array_record's ``ArrayRecordDataSource`` (no TensorFlow, no TFDS) and
    returns the same record dicts as the source it was converted from (numbers as numpy
    float64 / int64). ``metadata`` holds ``metadata.json``. In a ``gs://`` folder,
    ``metadata.json`` and ``coordinates.npy`` are read through epath and the shards by
    array_record's own reader, which opens ``gs://`` paths itself; it reads no other
    object store.
    """

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = os.fspath(out_dir)
        if not fileio.is_local(self.out_dir) and not self.out_dir.startswith("gs://"):
            raise ValueError(f"{self.out_dir}: array_record reads shards from local folders and "
                             "gs:// only; copy the dataset to one of them.")
        meta_path = os.path.join(self.out_dir, "metadata.json")
        if not fileio.isfile(meta_path):
            raise FileNotFoundError(f"{self.out_dir} is not a complete geojax ArrayRecord dataset "
                                    "(no metadata.json); convert it again with convert_to_array_record.")
        self.metadata = json.loads(fileio.read_text(meta_path))
        if self.metadata.get("format") != _DATASET_FORMAT or self.metadata.get("version") != _DATASET_VERSION:
            raise ValueError(f"{meta_path}: format {self.metadata.get('format')!r} version "
                             f"{self.metadata.get('version')!r}, expected {_DATASET_FORMAT!r} {_DATASET_VERSION}.")
        paths = [os.path.join(self.out_dir, s["file"]) for s in self.metadata["shards"]]
        missing = [p for p in paths if not fileio.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{self.out_dir}: shard files missing: {missing}.")
        self._paths = paths
        self._pid, self._data, self._coords = None, None, None
        if len(self._reader()) != self.metadata["count"]:
            raise ValueError(f"{self.out_dir}: shards hold {len(self._data)} records, metadata.json "
                             f"says {self.metadata['count']}; the dataset is damaged, convert it again.")

    def _reader(self) -> Any:
        """This process's ArrayRecordDataSource; a forked child opens its own readers."""
        if self._data is None or os.getpid() != self._pid:
            # Loaded on first read (the data source module takes about 0.5 s to import).
            from array_record.python import array_record_data_source  # pylint: disable=import-outside-toplevel

            self._data = array_record_data_source.ArrayRecordDataSource(self._paths)
            self._pid = os.getpid()
        return self._data

    def __len__(self) -> int:
        return self.metadata["count"]

    def coordinates(self) -> np.ndarray:
        """``(len, 2)`` float64 (lat, lng) of every record, from ``coordinates.npy``
        (memory-mapped); a dataset converted without that file is read record by record."""
        if self._coords is None:
            path = os.path.join(self.out_dir, COORDINATES_FILE)
            if fileio.is_local(path) and os.path.isfile(path):
                coords = np.load(path, mmap_mode="r")
            elif not fileio.is_local(path) and fileio.isfile(path):
                coords = np.load(io.BytesIO(fileio.read_bytes(path)), allow_pickle=False)
            else:
                coords = np.asarray([(r["lat"], r["lng"]) for r in self], np.float64).reshape(-1, 2)
            if coords.shape != (len(self), 2):
                raise ValueError(f"{path}: coordinates of shape {coords.shape}, expected "
                                 f"({len(self)}, 2); the dataset is damaged, convert it again.")
            self._coords = coords
        return self._coords

    @property
    def lat(self) -> np.ndarray:
        return np.asarray(self.coordinates()[:, 0])

    @property
    def lng(self) -> np.ndarray:
        return np.asarray(self.coordinates()[:, 1])

    def __getitem__(self, i: SupportsIndex) -> dict[str, Any]:
        return _deserialize_record(self._reader()[_check_index(i, len(self))])

    def __getitems__(self, indices: Sequence[SupportsIndex]) -> list[dict[str, Any]]:
        keys = [_check_index(i, len(self)) for i in indices]
        return [_deserialize_record(p) for p in self._reader().__getitems__(keys)]

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__, _pid=None, _data=None, _coords=None)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"ArrayRecordSource({self.out_dir!r}, {len(self)} records)"
