"""The common ``Partition`` type: coordinates → class ids, with per-class statistics.

Every scheme of the papers (adaptive S2, lat/lon boxes, Delaunay triangles,
CPlaNet geoclass sets) is a subclass.  A partition knows, for each class:

* ``counts`` — training points in the class;
* ``cell_latlng`` — the centre of the class's region (cell centroid);
* ``imagery_latlng`` — the spherical mean of its training points, the
  "imagery centroid" of 002 §3.1.2 (mean of unit vectors in 3D, renormalised).

and implements ``assign(lat, lng) -> class_id`` vectorised over arrays, with
−1 where a point falls in no class (e.g. a dropped, too-sparse region).

Saved form (a directory, one per partition)::

    partition.json      human-readable metadata: format version, scheme, name,
                        parameters, input size, class count, the arrays file
                        name and its SHA-256
    arrays-<sha>.npz    every array (no pickles)

``save`` writes the arrays file first and then replaces ``partition.json``
atomically, so a crash at any moment leaves either the previous partition or
the new one loadable — never a half-written one; ``load`` verifies the
checksum, so a truncated or altered file is reported, not half-loaded: every
failed load check raises :class:`SavedFileError` naming the file and the check
(missing, unreadable, version, scheme, checksum).
"""

from __future__ import annotations

import abc
import hashlib
import importlib
import io
import json
import os
from typing import Any, ClassVar

import numpy as np

from geojax import fileio
from geojax.geo import sphere

FORMAT_VERSION = 1
METADATA_FILE = "partition.json"

_SCHEMES: dict[str, type["Partition"]] = {}


class PartitionError(ValueError):
    """Raised for an invalid partition build request or an unreadable saved partition."""


class SavedFileError(PartitionError):
    """A saved partition or combinatorial-index file that fails a load check.

    ``path``: the file; ``check``: the check it failed — ``"missing"``, ``"unreadable"`` (cannot
    be read, or not the JSON / arrays expected), ``"version"`` (written by a newer geojax),
    ``"scheme"`` (an unknown partition scheme) or ``"checksum"`` (truncated or altered since it
    was written: its SHA-256 differs from the one recorded next to it); ``reason``: details.
    """

    def __init__(self, path: str, check: str, reason: str, advice: str = "Rebuild it."):
        self.path, self.check, self.reason = path, check, reason
        super().__init__(f"{path}: {reason} ({check} check failed). {advice}")


def register(cls: type["Partition"]) -> type["Partition"]:
    """Class decorator: makes a scheme loadable by ``Partition.load``."""
    _SCHEMES[cls.scheme] = cls
    return cls


class Partition(abc.ABC):
    """Classes over the sphere built from training coordinates."""

    scheme: ClassVar[str] = ""

    def __init__(self, *, name: str, params: dict[str, Any], counts: np.ndarray,
                 cell_latlng: np.ndarray, imagery_latlng: np.ndarray,
                 num_input_points: int, num_dropped_points: int):
        self.name = name
        self.params = dict(params)
        self.counts = np.asarray(counts, np.int64)
        self.cell_latlng = np.asarray(cell_latlng, np.float64).reshape(-1, 2)
        self.imagery_latlng = np.asarray(imagery_latlng, np.float64).reshape(-1, 2)
        self.num_input_points = int(num_input_points)
        self.num_dropped_points = int(num_dropped_points)
        c = self.num_classes
        if self.cell_latlng.shape[0] != c or self.imagery_latlng.shape[0] != c:
            raise PartitionError(f"per-class arrays disagree on the class count: counts {c}, "
                                 f"cell centroids {self.cell_latlng.shape[0]}, "
                                 f"imagery centroids {self.imagery_latlng.shape[0]}.")

    # ------------------------------------------------------------------ queries
    @property
    def num_classes(self) -> int:
        return int(self.counts.shape[0])

    @abc.abstractmethod
    def assign(self, lat: Any, lng: Any) -> np.ndarray:
        """Class id (int32) of each point, −1 where it falls in no class."""

    def centroids(self, kind: str = "imagery") -> np.ndarray:
        """(num_classes, 2) lat/lng of each class: ``"imagery"`` or ``"cell"`` centroids."""
        if kind == "imagery":
            return self.imagery_latlng
        if kind == "cell":
            return self.cell_latlng
        raise ValueError(f"centroid kind must be 'imagery' or 'cell', got {kind!r}.")

    @abc.abstractmethod
    def geometry(self) -> list[list[np.ndarray]]:
        """Per class, a list of polygons, each an (n, 2) array of (lat, lng) vertices.

        For plotting only; a polygon's edges are great-circle arcs.
        """

    def summary(self) -> str:
        occupied = self.counts[self.counts > 0]
        return (f"{self.name} ({self.scheme}): {self.num_classes} classes from "
                f"{self.num_input_points} points, {self.num_dropped_points} dropped; "
                f"points per class min {occupied.min() if occupied.size else 0}, "
                f"median {int(np.median(occupied)) if occupied.size else 0}, "
                f"max {occupied.max() if occupied.size else 0}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.summary()}>"

    # ------------------------------------------------------------ persistence
    @abc.abstractmethod
    def _scheme_arrays(self) -> dict[str, np.ndarray]:
        """The scheme-specific arrays ``assign`` needs."""

    @classmethod
    @abc.abstractmethod
    def _from_saved(cls, common: dict[str, Any], arrays: dict[str, np.ndarray]) -> "Partition":
        """Rebuilds a partition from ``common`` constructor kwargs and scheme arrays."""

    def save(self, directory: str | os.PathLike) -> str:
        """Saves into ``directory`` (created if needed); returns the metadata path."""
        directory = os.fspath(directory)
        fileio.makedirs(directory)
        arrays = {"counts": self.counts, "cell_latlng": self.cell_latlng,
                  "imagery_latlng": self.imagery_latlng}
        for key, value in self._scheme_arrays().items():
            arrays["scheme/" + key] = np.asarray(value)
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **arrays)
        payload = buf.getvalue()
        digest = hashlib.sha256(payload).hexdigest()
        arrays_name = f"arrays-{digest[:16]}.npz"
        fileio.atomic_write(os.path.join(directory, arrays_name), payload)
        meta = {
            "format_version": FORMAT_VERSION,
            "scheme": self.scheme,
            "name": self.name,
            "params": self.params,
            "num_classes": self.num_classes,
            "num_input_points": self.num_input_points,
            "num_dropped_points": self.num_dropped_points,
            "arrays_file": arrays_name,
            "arrays_sha256": digest,
        }
        meta_path = os.path.join(directory, METADATA_FILE)
        old = _read_json(meta_path) if fileio.exists(meta_path) else None
        fileio.atomic_write(meta_path, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
        # Only now is the previous arrays file unreferenced.
        if old and old.get("arrays_file") not in (None, arrays_name):
            try:
                fileio.remove(os.path.join(directory, old["arrays_file"]))
            except OSError:
                pass
        return meta_path

    @staticmethod
    def load(directory: str | os.PathLike) -> "Partition":
        """Loads a partition saved by :meth:`save`; bit-identical to the saved one."""
        directory = os.fspath(directory)
        meta_path = os.path.join(directory, METADATA_FILE)
        if not fileio.exists(meta_path):
            raise SavedFileError(meta_path, "missing",
                                 f"no saved partition in {directory!r} (missing {METADATA_FILE})",
                                 "Build the partition first.")
        meta = _read_json(meta_path)
        version = meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise SavedFileError(
                meta_path, "version", f"format version {version!r}; this geojax reads versions up "
                f"to {FORMAT_VERSION}", "Upgrade geojax or rebuild the partition.")
        scheme = meta.get("scheme")
        if scheme not in _SCHEMES:
            _import_schemes()
        if scheme not in _SCHEMES:
            raise SavedFileError(meta_path, "scheme", f"unknown partition scheme {scheme!r}; "
                                 f"known: {sorted(_SCHEMES)}", "Rebuild the partition.")
        arrays_path, payload = read_checked_arrays(directory, meta_path, meta)
        try:
            with np.load(io.BytesIO(payload), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            common = dict(name=meta["name"], params=meta["params"], counts=arrays["counts"],
                          cell_latlng=arrays["cell_latlng"], imagery_latlng=arrays["imagery_latlng"],
                          num_input_points=meta["num_input_points"],
                          num_dropped_points=meta["num_dropped_points"])
        except (OSError, ValueError, KeyError) as e:
            raise SavedFileError(arrays_path, "unreadable", f"not the arrays of a partition ({e})",
                                 "Rebuild the partition.") from e
        scheme_arrays = {k[len("scheme/"):]: v for k, v in arrays.items() if k.startswith("scheme/")}
        return _SCHEMES[scheme]._from_saved(common, scheme_arrays)


def _import_schemes() -> None:
    """Imports the built-in scheme modules so that they register themselves."""
    for module in ("s2_cells", "latlon_split", "delaunay", "cplanet"):
        try:
            importlib.import_module(f"geojax.partitions.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"geojax.partitions.{module}":
                raise


def _read_json(path: str) -> dict[str, Any]:
    try:
        meta = json.loads(fileio.read_text(path))
    except FileNotFoundError as e:
        raise SavedFileError(path, "missing", "no such file") from e
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8
        raise SavedFileError(path, "unreadable", f"cannot read the metadata ({e})") from e
    if not isinstance(meta, dict):
        raise SavedFileError(path, "unreadable", f"a JSON {type(meta).__name__}, not an object")
    return meta


def read_checked_arrays(directory: str, meta_path: str, meta: dict[str, Any]) -> tuple[str, bytes]:
    """``(path, bytes)`` of the arrays file that ``meta`` (read from ``meta_path``) names,
    after checking them against the SHA-256 recorded in ``meta``.

    Raises:
      SavedFileError: ``meta`` names no arrays file or checksum (``"unreadable"``), the file is
        missing (``"missing"``) or cannot be read (``"unreadable"``), or its SHA-256 differs
        (``"checksum"``: truncated or corrupted).
    """
    name, digest = meta.get("arrays_file"), meta.get("arrays_sha256")
    if not isinstance(name, str) or not isinstance(digest, str):
        raise SavedFileError(meta_path, "unreadable", "no arrays_file / arrays_sha256 entry")
    arrays_path = os.path.join(directory, name)
    try:
        payload = fileio.read_bytes(arrays_path)
    except FileNotFoundError as e:
        raise SavedFileError(arrays_path, "missing", f"named by {meta_path} but absent") from e
    except OSError as e:
        raise SavedFileError(arrays_path, "unreadable", f"cannot read it ({e})") from e
    if hashlib.sha256(payload).hexdigest() != digest:
        raise SavedFileError(arrays_path, "checksum",
                             f"truncated or corrupted: its SHA-256 is not the {digest[:16]}... "
                             f"recorded in {os.path.basename(meta_path)}")
    return arrays_path, payload


# ---------------------------------------------------------------------------- helpers
def validated_points(lat: Any, lng: Any, what: str = "training coordinates") -> tuple[np.ndarray, np.ndarray]:
    """Flat float64 lat/lng after :func:`geojax.geo.sphere.validate_latlng`; rejects empty input."""
    lat, lng = sphere.validate_latlng(lat, lng, name=what)
    lat, lng = np.ravel(lat), np.ravel(lng)
    if lat.size == 0:
        raise PartitionError(f"no {what}: a partition needs at least one point.")
    return lat, lng


def class_statistics(lat: np.ndarray, lng: np.ndarray, class_id: np.ndarray,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class counts and imagery centroids (002 §3.1.2), vectorised.

    Points with ``class_id == -1`` are ignored.  A class with no points gets a
    NaN imagery centroid (callers substitute the cell centroid).
    """
    keep = class_id >= 0
    cid = class_id[keep]
    counts = np.bincount(cid, minlength=num_classes).astype(np.int64)
    xyz = sphere.latlng_to_xyz(lat[keep], lng[keep])
    sums = np.stack([np.bincount(cid, weights=xyz[:, k], minlength=num_classes) for k in range(3)], -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        c_lat, c_lng = sphere.xyz_to_latlng(sums)
    centroid = np.stack([c_lat, c_lng], -1)
    centroid[counts == 0] = np.nan
    return counts, centroid
