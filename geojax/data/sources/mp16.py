"""MP-16 / yfcc25600: msgpack shards of ``{id, image}`` joined to a metadata CSV."""

from __future__ import annotations

import glob
import os
import re
from typing import Any, Iterator, Sequence, SupportsIndex

import msgpack
import numpy as np

from geojax import fileio
from geojax.data.sources.common import (
    DEFAULT_MAX_BAD_FRACTION,
    ReadReport,
    _OpenFiles,
    _Source,
    _check_fraction,
    _check_index,
    _open_fd,
    _read_metadata,
)

# ----------------------------------------------------------------------------------
# 2. MP-16 / yfcc25600 msgpack shards
# ----------------------------------------------------------------------------------


def _natural_key(path: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def _expand_shards(shards: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """A glob, a folder (all ``*.msg`` in it), one file, or a list of files -> shard paths."""
    if isinstance(shards, (str, os.PathLike)):
        pattern = os.fspath(shards)
        if fileio.isdir(pattern):
            pattern = os.path.join(pattern, "*.msg")
        if fileio.is_local(pattern):
            paths = sorted(glob.glob(pattern), key=_natural_key)
        else:  # gs://bucket/mp16/shard_*.msg: a pattern on the file names of one folder
            folder, names = os.path.split(pattern)
            paths = sorted((os.fspath(p) for p in fileio.path(folder).glob(names)), key=_natural_key)
        if not paths:
            raise FileNotFoundError(f"no msgpack shards match {pattern!r}.")
        return paths
    paths = [os.fspath(p) for p in shards]
    missing = [p for p in paths if not fileio.isfile(p)]
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
    with fileio.open_file(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
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
                 max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION, partial: bool = False):
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
        if fileio.is_local(path):
            data = os.pread(self._files.get(path), length, int(self._offset[i]))
        else:  # one ranged read of the object
            with fileio.open_file(path, "rb") as f:
                f.seek(int(self._offset[i]))
                data = f.read(length)
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
