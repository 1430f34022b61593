"""Database features for retrieval (001 §3.2): L2-normalised backbone embeddings on disk.

001 retrieves a query's nearest neighbours among the features of a database of geotagged
photos (MP-16: 4.7 M images; 4.7 M × 2048 float32 is 38 GB), so the features are computed
once, streamed to disk shard by shard and read back memory-mapped — the whole ``N × D``
array is never in host memory.

    store = build_store(config, mesh, weights, source, "<workdir>/features/train",
                        meta={"database": "mp16", ...})
    for start, block in store.chunks(65536):      # float32 (rows, D) blocks, in row order
        ...
    store.lat, store.lng, store.valid, store.ids  # per row, in source order

**What is stored.** Row ``i`` is record ``i`` of the source: the backbone output of the eval
pipeline's centre crop (GeoModel's ``outputs["features"]``), divided by its L2 norm in float32
on the device and stored as ``float16`` (default: half the disk and I/O; every component is
rounded to 2⁻¹¹ relative, so a cosine similarity between two rows moves by at most ≈ 2⁻¹⁰) or
``float32``; with its ``lat``, ``lng`` (float64 degrees, the source's),
``id`` (the record's, or its row number when it has none) and ``valid``. A record the pipeline
cannot read (undecodable or missing image, bad coordinates) is kept as a row with
``valid=False`` and a zero vector, counted in the manifest and the log.

**Layout** of a store directory::

    manifest.json           format, version, spec (the caller's meta, the backbone's
                            weights_digest, num, dtype, shard_size, image_size), dim,
                            per shard: rows, unreadable count, sha256 of both files; complete
    shard-00000.npy         (rows, D) features
    shard-00000.rows.npy    structured (rows,): lat, lng (float64), valid (bool), id (str)
    ...

Every file is written atomically (:func:`geojax.fileio.atomic_write`); the manifest is
rewritten after each shard, so a shard is *finished* once its checksums are in the manifest.

**Resume.** :func:`build_store` on a directory holding an unfinished store with the same spec
computes only the shards the manifest does not record (a run killed mid-way continues from
its last finished shard); a finished one is verified and reused; a different spec (another
backbone, database, dtype, ...) is refused, naming what differs. Shards are written by a
background thread while the device computes the next one.

**Opening** (:func:`open_store`) checks the manifest, every shard's row count, shape and dtype,
and (``verify=True``, the default) every file's sha256; a missing, truncated or corrupted
file raises :class:`FeatureStoreError` naming it and saying what to do. Shards are
memory-mapped from a local disk and read into memory from an object store (``gs://``).

Multi-process: every process runs the backbone (the batches are split over the mesh), only
process 0 writes; the directory must be on a file system all processes see.
"""

from __future__ import annotations

import concurrent.futures
import glob
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from geojax import fileio
from geojax.training import backbone_features

FORMAT = "geojax.feature_store"
VERSION = 1
MANIFEST = "manifest.json"
DTYPES = ("float16", "float32")
DEFAULT_SHARD_SIZE = 32768  # rows: 128 MiB of float16 2048-d features per shard
DEFAULT_CHUNK_ROWS = 65536
_FILE_RE = re.compile(r"^(manifest\.json|shard-\d{5}(\.rows)?\.npy|\..*\.tmp)$")
_EXAMPLE_IDS = 5
_DIGEST_KEYS = ("features_sha256", "rows_sha256")  # of a shard's two files, in the manifest


class FeatureStoreError(RuntimeError):
    """A feature store that cannot be used as it is; the message says which file and what to do."""


# ---------------------------------------------------------------------------- names and hashes
def shard_files(k: int) -> tuple[str, str]:
    """File names of shard ``k``: features, rows."""
    return f"shard-{k:05d}.npy", f"shard-{k:05d}.rows.npy"


def weights_digest(weights: Mapping[str, Any]) -> str:
    """A short (16 hex digits) content hash of a GeoModel's backbone: the paths, dtypes,
    shapes and bytes of ``weights["params"]["backbone"]`` and of its batch statistics.
    The same weights give the same digest in any process; heads do not count."""
    tree = {"params": weights["params"]["backbone"],
            "batch_stats": (weights.get("batch_stats") or {}).get("backbone", {})}
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        arr = np.ascontiguousarray(jax.device_get(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


def _sha256_file(path: str) -> str:
    with fileio.open_file(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _npy_bytes(array: np.ndarray) -> memoryview:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getbuffer()


def _jsonable(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples → lists, numpy scalars → Python), sorted keys."""
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    return json.loads(json.dumps(value, sort_keys=True, default=lambda o: np.asarray(o).tolist()))


def _differences(stored: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(stored, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(stored) | set(current)):
            out += _differences(stored.get(key), current.get(key), f"{prefix}{key}.")
        return out
    return [] if stored == current else [f"{prefix[:-1]}: stored {stored!r}, now {current!r}"]


# ---------------------------------------------------------------------------- reading
class FeatureStore:
    """A finished, checked store (from :func:`open_store` or :func:`build_store`).

    Attributes:
      directory: the store's folder.
      meta: what a retrieval index records about its database: the store's ``weights_digest``,
        ``backbone``, ``image_size``, ``num``, ``dim`` and ``dtype``, and the caller's ``meta``
        given to :func:`build_store` (whose keys take precedence).
      spec: what a resumed or reused store must match: the caller's ``meta`` (under
        ``"meta"``), ``weights_digest``, ``num``, ``dtype``, ``shard_size``, ``image_size``,
        ``backbone``.
      num, dim, dtype: rows, feature dimension, stored dtype (``np.float16`` / ``np.float32``).
      shard_size: rows per shard (the last shard may hold fewer).
      shards: the features of each shard, ``np.memmap`` ``(rows, dim)`` (read-only).
      lat, lng: float64 ``(num,)`` degrees; valid: bool ``(num,)`` (in memory: 17 bytes a
        row); ids: str ``(num,)`` (read from the memory-mapped rows files on first use).
      num_invalid: rows with ``valid`` False (unreadable records: zero features).
    """

    def __init__(self, directory: str, manifest: Mapping[str, Any], shards: list[np.memmap],
                 columns: list[np.ndarray]):
        self.directory = directory
        self.manifest = manifest
        self.spec = manifest["spec"]
        self.num = int(self.spec["num"])
        self.dim = int(manifest["dim"])
        self.meta = {**{key: self.spec[key] for key in ("weights_digest", "backbone",
                                                        "image_size", "num", "dtype")},
                     "dim": self.dim, **self.spec["meta"]}
        self.dtype = np.dtype(self.spec["dtype"])
        self.shard_size = int(self.spec["shard_size"])
        self.weights_digest = self.spec["weights_digest"]
        self.shards = tuple(shards)
        self._columns = columns
        self.lat = np.concatenate([c["lat"] for c in columns])
        self.lng = np.concatenate([c["lng"] for c in columns])
        self.valid = np.concatenate([c["valid"] for c in columns])
        self.num_invalid = int(self.num - np.count_nonzero(self.valid))
        self._ids: np.ndarray | None = None

    @property
    def ids(self) -> np.ndarray:
        if self._ids is None:
            self._ids = np.concatenate([c["id"] for c in self._columns])
        return self._ids

    def __len__(self) -> int:
        return self.num

    def __repr__(self) -> str:
        return (f"FeatureStore({self.directory!r}, num={self.num}, dim={self.dim}, "
                f"dtype={self.dtype.name}, shards={len(self.shards)})")

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as float32 ``(stop - start, dim)``."""
        if not 0 <= start <= stop <= self.num:
            raise IndexError(f"rows [{start}, {stop}) of a store of {self.num}")
        out = np.empty((stop - start, self.dim), np.float32)
        row = start
        while row < stop:
            k, offset = divmod(row, self.shard_size)
            take = min(stop - row, self.shard_size - offset)
            out[row - start:row - start + take] = self.shards[k][offset:offset + take]
            row += take
        return out

    def chunks(self, rows_per_chunk: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """``(start_row, float32 (rows, dim))`` blocks of at most ``rows_per_chunk`` rows, in
        row order, covering every row (unreadable ones are zero: mask them with ``valid``)."""
        if rows_per_chunk < 1:
            raise ValueError(f"rows_per_chunk must be >= 1, got {rows_per_chunk}.")
        for start in range(0, self.num, rows_per_chunk):
            yield start, self.block(start, min(start + rows_per_chunk, self.num))

    def rows(self, idx: Any) -> np.ndarray:
        """The features of rows ``idx`` (any order, repeats allowed) as float32 ``(len, dim)``."""
        idx = np.asarray(idx, np.int64)
        if idx.ndim != 1:
            raise ValueError(f"rows() takes a 1-d array of row numbers, got shape {idx.shape}.")
        if idx.size and (idx.min() < 0 or idx.max() >= self.num):
            raise IndexError(f"row numbers must be in [0, {self.num}); got "
                             f"{int(idx.min())}..{int(idx.max())}.")
        out = np.empty((idx.size, self.dim), np.float32)
        shard, offset = np.divmod(idx, self.shard_size)
        for k in np.unique(shard):  # one fancy-indexed read per shard touched
            sel = shard == k
            out[sel] = self.shards[k][offset[sel]]
        return out


def _read_manifest(directory: str) -> dict[str, Any] | None:
    path = os.path.join(directory, MANIFEST)
    if not fileio.exists(path):
        return None
    try:
        manifest = json.loads(fileio.read_text(path))
    except (OSError, ValueError) as e:
        raise FeatureStoreError(f"feature store manifest {path} cannot be read ({e}); delete the "
                                f"folder {directory} and build the store again.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise FeatureStoreError(f"{path} is not a geojax feature store manifest; choose another "
                                "directory for the store.")
    if manifest.get("version") != VERSION:
        raise FeatureStoreError(f"{path} is a feature store of version {manifest.get('version')}; "
                                f"this geojax reads version {VERSION}: delete the folder "
                                f"{directory} and build the store again.")
    return manifest


def _corrupt(directory: str, path: str, what: str) -> FeatureStoreError:
    return FeatureStoreError(
        f"feature store {directory}: {path} {what}. Delete that file and run build_store again "
        f"to recompute its shard (or delete the folder {directory} to rebuild the whole store).")


def _check_shard(directory: str, k: int, entry: Mapping[str, Any], dim: int, dtype: np.dtype,
                 verify: bool) -> tuple[np.memmap, np.ndarray]:
    """Shard ``k``'s features (memmap) and rows, checked against its manifest entry."""
    rows = int(entry["rows"])
    paths = [os.path.join(directory, name) for name in shard_files(k)]
    for path in paths:
        if not fileio.exists(path):
            raise _corrupt(directory, path, "is missing")
    if verify:
        for path, key in zip(paths, _DIGEST_KEYS):
            digest = _sha256_file(path)
            if digest != entry[key]:
                raise _corrupt(directory, path, f"is corrupted (sha256 {digest[:12]}…, the manifest "
                               f"records {entry[key][:12]}…)")
    try:
        feats = _load_npy(paths[0])
    except (OSError, ValueError, EOFError) as e:
        raise _corrupt(directory, paths[0], f"cannot be read ({e})") from None
    if feats.shape != (rows, dim) or feats.dtype != dtype:
        raise _corrupt(directory, paths[0], f"holds {feats.dtype} {feats.shape}, the manifest "
                       f"records {dtype} {(rows, dim)}")
    try:
        columns = _load_npy(paths[1])
    except (OSError, ValueError, EOFError) as e:
        raise _corrupt(directory, paths[1], f"cannot be read ({e})") from None
    if (columns.shape != (rows,) or columns.dtype.names is None
            or set(columns.dtype.names) != {"lat", "lng", "valid", "id"}):
        raise _corrupt(directory, paths[1], f"holds {columns.dtype} {columns.shape}, not the "
                       f"{rows} rows of lat, lng, valid, id the manifest records")
    return feats, columns


def _load_npy(path: str) -> np.ndarray:
    """A shard file: memory-mapped on a local disk, read into memory from an object store
    (which cannot be mapped)."""
    if fileio.is_local(path):
        return np.load(path, mmap_mode="r", allow_pickle=False)
    return np.load(io.BytesIO(fileio.read_bytes(path)), allow_pickle=False)


def open_store(directory: str, *, verify: bool = True,
               meta: Mapping[str, Any] | None = None) -> FeatureStore:
    """The finished store in ``directory``, checked: manifest, every shard's row count, shape
    and dtype, and with ``verify`` every file's sha256 (a full read of the store; without it
    the counts are still checked). ``meta``: refuse a store built with another meta.

    Raises:
      FeatureStoreError: no store, an unfinished one, another ``meta``, or a missing,
        truncated or corrupted file (named, with what to do).
    """
    directory = fileio.absolute(directory)
    manifest = _read_manifest(directory)
    if manifest is None:
        raise FeatureStoreError(f"no feature store in {directory} (no {MANIFEST}); build it "
                                "with geojax.inference.features.build_store.")
    entries = manifest["shards"]
    if not manifest.get("complete") or any(e is None for e in entries):
        done = sum(e is not None for e in entries)
        raise FeatureStoreError(f"feature store {directory} is unfinished ({done} of "
                                f"{len(entries)} shards); run build_store again to finish it.")
    if meta is not None:
        diff = _differences(manifest["spec"]["meta"], _jsonable(dict(meta)), "meta.")
        if diff:
            raise FeatureStoreError(f"feature store {directory} was built for another "
                                    f"database or backbone ({'; '.join(diff)}).")
    spec = manifest["spec"]
    size, num = int(spec["shard_size"]), int(spec["num"])
    expected = [min(size, num - k * size) for k in range(len(entries))]
    if len(entries) != -(-num // size) or [int(e["rows"]) for e in entries] != expected:
        raise FeatureStoreError(f"feature store {directory}: the manifest's shard row counts "
                                f"do not add up to its {num} rows in shards of {size}; delete "
                                "the folder and build the store again.")
    shards, columns = [], []
    for k, entry in enumerate(entries):
        feats, cols = _check_shard(directory, k, entry, int(manifest["dim"]),
                                   np.dtype(spec["dtype"]), verify)
        shards.append(feats)
        columns.append(cols)
    return FeatureStore(directory, manifest, shards, columns)


# ---------------------------------------------------------------------------- writing
class _ShardWriter:
    """Writes finished shards (files, then the manifest) in a background thread, one at a
    time and in order; ``submit`` waits for the previous shard before queueing the next."""

    def __init__(self, directory: str, manifest: dict[str, Any], write: bool,
                 on_shard: Callable[[int], None] | None):
        self.directory, self.manifest, self.write = directory, manifest, write
        self.on_shard = on_shard
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="feature-store")
        self._pending: tuple[int, concurrent.futures.Future] | None = None

    def _save(self, k: int, feats: np.ndarray, columns: np.ndarray) -> None:
        digests = {}
        for key, name, array in zip(_DIGEST_KEYS, shard_files(k), (feats, columns)):
            payload = _npy_bytes(array)
            fileio.atomic_write(os.path.join(self.directory, name), payload)
            digests[key] = hashlib.sha256(payload).hexdigest()
        bad = columns["id"][~columns["valid"]]
        self.manifest["shards"][k] = {"rows": len(columns), "num_invalid": int(bad.size),
                                      "invalid_ids": bad[:_EXAMPLE_IDS].tolist(), **digests}
        _write_manifest(self.directory, self.manifest)

    def wait(self) -> None:
        if self._pending is not None:
            k, future = self._pending
            self._pending = None
            future.result()
            if self.on_shard is not None:
                self.on_shard(k)

    def submit(self, k: int, feats: np.ndarray, columns: np.ndarray) -> None:
        self.wait()
        if self.write:
            self._pending = (k, self._pool.submit(self._save, k, feats, columns))
        elif self.on_shard is not None:
            self.on_shard(k)

    def close(self) -> None:
        """Lets a shard being written finish (so it counts as done), then stops the thread."""
        self._pool.shutdown(wait=True)


def _write_manifest(directory: str, manifest: Mapping[str, Any]) -> None:
    """Writes ``<directory>/manifest.json`` atomically."""
    fileio.atomic_write(os.path.join(directory, MANIFEST), json.dumps(manifest, indent=1))


class _ShardBuffer:
    """One shard's rows while they arrive from the backbone, batch by batch."""

    def __init__(self, rows: int, dim: int, dtype: str):
        self.fill = 0
        self.features = np.empty((rows, dim), dtype)
        self.valid = np.empty(rows, bool)
        self.row_numbers = np.empty(rows, np.int64)
        self.ids: list[np.ndarray] = []

    @property
    def full(self) -> bool:
        return self.fill == len(self.features)

    def add(self, part: backbone_features.FeatureBatch, pos: int) -> int:
        """Takes rows of ``part`` from ``pos`` on, as many as fit; returns how many."""
        take = min(len(self.features) - self.fill, len(part.rows) - pos)
        src, dst = slice(pos, pos + take), slice(self.fill, self.fill + take)
        self.features[dst] = part.features[src]
        self.valid[dst] = part.valid[src]
        self.row_numbers[dst] = part.rows[src]
        self.ids.append(part.ids[src])
        self.fill += take
        return take

    def columns(self, lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
        """The rows file's structured array (coordinates from the source's arrays)."""
        ids = np.concatenate(self.ids)
        out = np.empty(len(ids), _row_dtype(ids))
        out["lat"], out["lng"] = lat[self.row_numbers], lng[self.row_numbers]
        out["valid"], out["id"] = self.valid, ids
        return out


def _row_dtype(ids: np.ndarray) -> np.dtype:
    """The rows file's record: lat, lng, valid and ``ids``' longest string."""
    width = int(np.char.str_len(ids).max()) if ids.size else 1
    return np.dtype([("lat", "<f8"), ("lng", "<f8"), ("valid", "?"), ("id", f"<U{max(1, width)}")])


def _prepare_directory(directory: str, spec: Mapping[str, Any],
                       log: Callable[[str], None]) -> dict[str, Any]:
    """The manifest to continue: the directory's (same spec), or a new one."""
    manifest = _read_manifest(directory)
    if manifest is not None:
        diff = _differences(manifest["spec"], spec)
        if diff:
            raise FeatureStoreError(
                f"the feature store in {directory} was built with other settings ("
                + "; ".join(diff) + "): delete that folder or give build_store another "
                "directory.")
        return manifest
    if fileio.isdir(directory):
        others = sorted(n for n in fileio.listdir(directory) if not _FILE_RE.match(n))
        if others:
            raise FeatureStoreError(f"{directory} holds files that are not a feature store's "
                                    f"(e.g. {others[0]}) and no {MANIFEST}; give build_store an "
                                    "empty or new directory.")
    num_shards = -(-int(spec["num"]) // int(spec["shard_size"]))
    log(f"[features] new store in {directory}: {spec['num']} records in {num_shards} shards "
        f"of {spec['shard_size']}, {spec['dtype']}")
    return {"format": FORMAT, "version": VERSION, "spec": dict(spec), "dim": None,
            "shards": [None] * num_shards, "complete": False}


def _pending_shards(directory: str, manifest: Mapping[str, Any]) -> list[int]:
    """Shards not recorded in the manifest, or recorded but with a file gone."""
    return [k for k, entry in enumerate(manifest["shards"])
            if entry is None or not all(fileio.exists(os.path.join(directory, name))
                                        for name in shard_files(k))]


def _runs(shards: list[int]) -> list[tuple[int, int]]:
    """Consecutive shard numbers as ``[first, last + 1)`` runs."""
    runs: list[tuple[int, int]] = []
    for k in shards:
        if runs and runs[-1][1] == k:
            runs[-1] = (runs[-1][0], k + 1)
        else:
            runs.append((k, k + 1))
    return runs


def build_store(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                weights: Mapping[str, Any], source: Any, directory: str, *,
                meta: Mapping[str, Any], shard_size: int = DEFAULT_SHARD_SIZE,
                dtype: str = "float16", batch_size: int | None = None,
                log: Callable[[str], None] = print,
                on_shard: Callable[[int], None] | None = None) -> FeatureStore:
    """Writes (or finishes, or reuses) the feature store of ``source`` in ``directory``.

    Args:
      config: the run's config (``config.model`` backbone, ``config.data`` pipeline,
        ``config.eval.batch_size``).
      mesh: the device mesh the batches are split over.
      weights: ``{"params", "batch_stats"}`` of a GeoModel (host or device arrays).
      source: the database split (``__len__``, ``__getitem__``, ``lat``, ``lng``).
      directory: the store's folder (created).
      meta: JSON-able description of the database and model given by the caller (e.g. the
        database's name, size and digest); part of the store's spec with the backbone's
        :func:`weights_digest`, the record count, ``dtype``, ``shard_size`` and the image
        size. An existing store with another spec is refused.
      shard_size: rows per shard. Shard boundaries that are multiples of the batch size make
        a resumed store bit-identical to an uninterrupted one (the same batches).
      dtype: ``"float16"`` or ``"float32"``.
      batch_size: global eval batch (default ``config.eval.batch_size``).
      log: process 0's log lines.
      on_shard: called with ``k`` once shard ``k`` is recorded in the manifest.

    Returns:
      the finished store, checked with checksums (:func:`open_store`).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}.")
    if int(shard_size) < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
    num = len(source)
    if num < 1:
        raise ValueError("the database source holds no records.")
    directory = fileio.absolute(directory)
    write = jax.process_index() == 0
    log = log if write else (lambda _msg: None)
    spec = _jsonable({"meta": dict(meta), "weights_digest": weights_digest(weights), "num": num,
                      "dtype": dtype, "shard_size": int(shard_size),
                      "image_size": int(config.data.image_size),
                      "backbone": str(config.model.backbone)})
    manifest = _prepare_directory(directory, spec, log)
    pending = _pending_shards(directory, manifest)
    if not pending:
        log(f"[features] {directory}: finished store ({num} rows), checking it")
        return open_store(directory, verify=True)
    if write:
        fileio.makedirs(directory)
        if fileio.is_local(directory):  # an object store keeps no temporary file
            for stale in glob.glob(os.path.join(directory, ".*.tmp")):  # from a killed write
                os.unlink(stale)
        manifest["complete"] = False  # until every pending shard is back
        _write_manifest(directory, manifest)
    done = len(manifest["shards"]) - len(pending)
    if done:
        log(f"[features] {directory}: resuming, {done} of {len(manifest['shards'])} shards "
            "finished")
    size = int(shard_size)
    lat, lng = (np.asarray(source.lat, np.float64), np.asarray(source.lng, np.float64))
    writer = _ShardWriter(directory, manifest, write, on_shard)
    try:
        for first, last in _runs(pending):
            stop = min(last * size, num)
            k, shard = first, None
            for part in backbone_features.iter_backbone_features(
                    config, mesh, weights, source, batch_size=batch_size, start=first * size,
                    stop=stop, normalize=True, dtype=np.dtype(dtype),
                    desc=f"[features] shards {first}-{last - 1}"):
                if manifest["dim"] is None:
                    manifest["dim"] = int(part.features.shape[1])
                elif part.features.shape[1] != manifest["dim"]:
                    raise FeatureStoreError(
                        f"the backbone gives {part.features.shape[1]}-d features but the store "
                        f"in {directory} holds {manifest['dim']}-d ones; delete that folder or "
                        "give build_store another directory.")
                pos = 0
                while pos < len(part.rows):
                    if shard is None:
                        shard = _ShardBuffer(min(size, num - k * size), manifest["dim"], dtype)
                    pos += shard.add(part, pos)
                    if shard.full:
                        writer.submit(k, shard.features, shard.columns(lat, lng))
                        k, shard = k + 1, None
        writer.wait()
    finally:
        writer.close()
    if write:
        manifest["complete"] = True
        _write_manifest(directory, manifest)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"geojax feature store {directory}")
    store = open_store(directory, verify=write)
    if store.num_invalid:
        examples = [i for e in store.manifest["shards"] for i in e["invalid_ids"]][:_EXAMPLE_IDS]
        log(f"[features] {store.num_invalid} of {num} records unreadable: stored with "
            f"valid=False and zero features (e.g. {', '.join(examples)})")
    log(f"[features] {directory}: {num} rows × {store.dim} {dtype} in {len(store.shards)} shards")
    return store
