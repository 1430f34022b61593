"""OSV-5M: ``{train,test}.csv`` and zipped (or extracted) JPEGs."""

from __future__ import annotations

import os
import zipfile
from typing import Any, Sequence, SupportsIndex

import numpy as np

from geojax import fileio
from geojax.data.sources.common import (
    DEFAULT_MAX_BAD_FRACTION,
    ReadReport,
    _IMAGE_SUFFIXES,
    _OSV5M_COLUMNS,
    _OpenFiles,
    _Source,
    _Strings,
    _check_fraction,
    _check_index,
    _read_file,
    _read_metadata,
)
from geojax.data.sources.mp16 import _natural_key

# ----------------------------------------------------------------------------------
# 3. OSV-5M
# ----------------------------------------------------------------------------------


def _walk_files(root: str):
    """Every file under ``root`` (local or ``gs://``), folders in sorted order, the files of a
    folder in natural order (``img_2`` before ``img_10``)."""
    if fileio.is_local(root):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for filename in sorted(filenames, key=_natural_key):
                yield os.path.join(dirpath, filename)
        return
    for rel in sorted(fileio.files_under(root),
                      key=lambda r: (os.path.dirname(r), _natural_key(os.path.basename(r)))):
        yield fileio.join(root, rel)


def _open_zip(path: str) -> zipfile.ZipFile:
    """A zip file, local or on an object store (read with ranged reads through epath)."""
    return zipfile.ZipFile(path if fileio.is_local(path) else fileio.open_file(path, "rb"))


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
                 max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION, partial: bool = False):
        _check_fraction(max_bad_fraction)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
        self.root, self.split = os.fspath(root), split
        self.csv_path = os.path.join(self.root, f"{split}.csv")
        self.image_root = os.path.join(self.root, "images", split)
        if not fileio.isdir(self.image_root):
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
        self._files = _OpenFiles(_open_zip)

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
        for path in _walk_files(self.image_root):
            filename = os.path.basename(path)
            if filename.lower().endswith(".zip"):
                try:
                    with _open_zip(path) as zf:
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
