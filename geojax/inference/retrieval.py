"""Nearest-neighbour retrieval over database features (001 §3.2): one API, two engines.

001 predicts a photo's location from its ``k`` most similar database photos (NN: the first
one; kNN kernel density: all ``k``, weighted by similarity). The features are L2-normalised,
so the similarity is the inner product. :class:`Index` finds, for a batch of query features,
the ``k`` database rows of highest inner product::

    index = Index.build(store, engine="scann", meta={"backbone": "resnet50", ...})
    index.save(directory)
    index = Index.load(directory, expect={"backbone": "resnet50", "dim": 2048, ...})
    scores, rows = index.search(queries, k=100)   # (B, k) float32, (B, k) int64; best first
    lat, lng = index.lat[rows], index.lng[rows]

``rows`` are database row numbers (``0 .. num - 1``); rows marked invalid at build time
(``valid=False``: undecodable images, missing coordinates) are never returned.

**Engines.**

* ``"scann"`` (approximate; the ``retrieval`` extra, ``pip install -e '.[retrieval]'``):
  ScaNN's partitioning tree (spherical k-means leaves; a query scores only the rows of its
  ``leaves_to_search`` nearest leaves), asymmetric hashing of the rows in those leaves (each
  pair of dimensions of a row's residual from its leaf centre quantised to one of 16 codes,
  scored through 16-entry look-up tables), then exact float32 reordering of the best
  ``reorder_factor × k`` candidates, so the returned scores are exact inner products. Runs
  on the host CPUs.
  Parameters from the number ``n`` of valid rows (:func:`scann_params`, every value
  overridable through ``params``, e.g. ``config.retrieval.scann``):

  - ``n < brute_force_below`` (10,000): ScaNN's exact brute-force scorer, no tree;
  - ``num_leaves = round(sqrt(n))`` leaves (``spherical=True``), trained with the hashing on
    ``training_sample_size = min(n, max(100,000, 50 × num_leaves))`` rows;
  - ``leaves_to_search = max(8, ceil(num_leaves / 50))`` leaves per query (2 % of the rows);
  - asymmetric hashing: ``dims_per_block = 2``, plain (``anisotropic_quantization_threshold
    = None``; a number, e.g. ScaNN's customary 0.2, turns the anisotropic loss on);
  - reordering of ``reorder_factor × k`` candidates, ``reorder_factor = 4``.

  On 1,000,000 × 512 clustered unit features (``benchmarks/retrieval.py``; figures in
  ``benchmarks/README.md``) these gave recall@100 = 0.999 against the exact search at about
  1,200 queries/s on 2 shared CPU cores, 100× faiss ``IndexFlatIP`` in the same run; on
  clusters whose members are nearly equidistant, recall drops (0.93 there), and larger
  ``leaves_to_search`` / ``reorder_factor`` buy it back.
  A query whose searched leaves hold fewer than ``k`` rows is searched again with twice the
  leaves until it has ``k`` neighbours. Memory: the build needs the float32 array of valid
  rows in host memory (``n × D × 4`` bytes: 38 GB for 4.7 M × 2048) plus the index itself
  (the float32 rows for reordering, ``D / 4`` bytes of hash codes per row, the leaf
  centres); a loaded index holds the same.

* ``"exact"``: brute force in JAX. The valid rows are split evenly over every device of a
  ``jax.sharding.Mesh`` (default: :func:`geojax.training.sharding.make_mesh`, all
  devices) and padded to a multiple of ``device count × block_rows`` with rows that never
  win. One jitted function (``jax.shard_map``) computes, on each device, the inner products
  of a batch of queries with its rows ``block_rows`` at a time (float32 accumulation, the
  highest matmul precision) and keeps a running top-k (``jax.lax.top_k``); the per-device
  top-k lists are then merged into the global top-k. Ties go to the lower row. Parameters:
  ``dtype`` (``"float32"``, or ``"float16"`` / ``"bfloat16"`` to halve the device memory;
  the scores are then those of the rounded features) and ``block_rows`` (32,768).
  Memory: the features on the devices (``n × D × itemsize`` over all devices together),
  plus ``batch_size × block_rows`` float32 scores per device; the host holds at most one
  device's share while building.

**Saving** (:meth:`Index.save`). An index is a folder::

    index.json        the manifest: engine, num, dim, num_valid, meta, params, and the size
                      and SHA-256 of every file of the data folder
    data-<id>/        rows.npy (the database row of each indexed row), lat.npy, lng.npy,
                      and database-<first row>.npy, one per device share (exact; with
                      several processes each writes its devices' shares), or scann/
                      (ScaNN's serialized searcher)

A save writes a new data folder first, then the manifest (atomically, with
:func:`geojax.fileio.atomic_write`), then removes the previous data folder: an interrupted
save leaves the previous index (or, for a new folder, nothing that loads). :meth:`Index.load`
checks every file against the manifest and, with ``expect``, that the index was built from
the backbone, feature dimension and database the caller is about to query it with
(:class:`IndexMismatchError` otherwise).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from geojax import fileio
from geojax.inference.search_engines import (  # noqa: F401  (the public names, re-exported)
    ENGINES, EXACT_DEFAULTS, EXACT_DTYPES, FORMAT_VERSION, MANIFEST, ROWS_PER_CHUNK,
    SCANN_DEFAULTS, IndexFileError, IndexMismatchError, RetrievalError, _ENGINES, _database,
    _save_array, exact_params, scann_params)


# ------------------------------------------------------------------------ files
def _digest(path: str) -> dict[str, Any]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 22), b""):
            h.update(piece)
    return {"bytes": os.path.getsize(path), "sha256": h.hexdigest()}


def _fsync(folder: str, paths: list[str]) -> None:
    """fsync of the files ``paths`` under ``folder`` and of the folders that hold them."""
    folders = {folder}
    for path in paths:
        with open(os.path.join(folder, path), "rb") as f:
            os.fsync(f.fileno())
        folders.add(os.path.dirname(os.path.join(folder, path)))
    for name in sorted(folders):
        fd = os.open(name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_tree(folder: str) -> None:
    """Removes a data folder (local or on an object store); errors are ignored (a leftover
    ``data-*`` folder is removed by the next save)."""
    try:
        if fileio.is_local(folder):
            shutil.rmtree(folder, ignore_errors=True)
        else:
            fileio.rmtree(folder)
    except OSError:
        pass


def _shared_token() -> str:
    """A random hex token, the same in every process (process 0's)."""
    token = np.frombuffer(uuid.uuid4().bytes[:6], np.uint8)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
        token = np.asarray(multihost_utils.broadcast_one_to_all(token))
    return bytes(token.astype(np.uint8)).hex()


def _read_manifest(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, MANIFEST)
    if not fileio.isdir(directory):
        raise IndexFileError(directory, "no such folder: no retrieval index here; build one "
                             "(Index.build(...).save(folder)).")
    if not fileio.exists(path):
        raise IndexFileError(path, "missing: the folder holds no complete retrieval index (an "
                             "interrupted save leaves it so); build the index again.")
    try:
        manifest = json.loads(fileio.read_text(path))
    except (OSError, ValueError) as e:
        raise IndexFileError(path, f"unreadable ({e}); build the index again.") from e
    if not isinstance(manifest, dict) or manifest.get("format") != "geojax.retrieval":
        raise IndexFileError(path, "not a geojax retrieval index manifest.")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise IndexFileError(path, f"format version {version!r}; this geojax reads versions up "
                             f"to {FORMAT_VERSION}. Upgrade geojax or rebuild the index.")
    return manifest


# ------------------------------------------------------------------------ the index
class Index:
    """``k`` nearest database rows by inner product; see the module docstring.

    Attributes:
      engine: ``"scann"`` or ``"exact"``.
      num: database rows (valid or not); ``dim``: feature dimension.
      num_valid: rows that can be returned.
      meta: what the index was built from (backbone, checkpoint, database split, ...),
        compared by :meth:`load`'s ``expect``.
      params: the engine's parameters as used (the rule's values filled in).
      lat, lng: ``(num,)`` float64 coordinates of the database rows.
    """

    def __init__(self, *, engine: Any, num: int, dim: int, meta: dict[str, Any],
                 lat: np.ndarray, lng: np.ndarray, rows: np.ndarray):
        self._engine = engine
        self.engine: str = engine.name
        self.num, self.dim = int(num), int(dim)
        self.meta = meta
        self.lat, self.lng = lat, lng
        self._rows = rows  # int64 (num_valid,): database row of each indexed row

    @property
    def num_valid(self) -> int:
        return len(self._rows)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._engine.params)

    def __repr__(self) -> str:
        return (f"Index(engine={self.engine!r}, num={self.num}, num_valid={self.num_valid}, "
                f"dim={self.dim}, meta={self.meta})")

    @classmethod
    def build(cls, database: Any, *, lat: Any = None, lng: Any = None, engine: str = "scann",
              meta: Mapping[str, Any] | None = None, valid: Any = None,
              params: Mapping[str, Any] | None = None, mesh: Mesh | None = None,
              log: Callable[[str], Any] = print) -> "Index":
        """Indexes the valid rows of ``database``.

        Args:
          database: an (N, D) float array of L2-normalised features, or a feature store with
            ``num``, ``dim``, ``chunks(rows_per_chunk)`` (yielding ``(start_row, float
            (n, D))``), ``valid`` (bool (N,)), ``lat``, ``lng`` and ``meta``.
          lat, lng: (N,) degrees of the database rows (default: the store's).
          engine: ``"scann"`` or ``"exact"``.
          meta: JSON-serialisable description of what the features are (backbone,
            checkpoint, split, ...), merged over the store's ``meta``; saved with the index
            and checked by :meth:`load`'s ``expect``.
          valid: bool (N,): rows to index (combined with the store's ``valid``).
          params: engine parameters (:func:`scann_params`, :func:`exact_params`).
          mesh: the exact engine's device mesh (default: every device).
          log: where the one-line build summary goes.
        """
        if engine not in _ENGINES:
            raise RetrievalError(f"unknown retrieval engine {engine!r}; choose one of "
                                 f"{list(ENGINES)}.")
        db = _database(database, lat, lng, valid, meta)
        built = _ENGINES[engine].build(db, params, mesh, log)
        return cls(engine=built, num=db.num, dim=db.dim, meta=db.meta, lat=db.lat, lng=db.lng,
                   rows=np.flatnonzero(db.valid).astype(np.int64))

    def search(self, queries: Any, k: int, *,
               batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)``, each (B, k), best first: float32 inner products and int64
        database row numbers of the ``k`` nearest valid rows of each query (B, D).
        ``batch_size`` queries are searched at a time."""
        queries = np.asarray(queries, np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise RetrievalError(f"queries must be a (B, {self.dim}) array of features; got "
                                 f"shape {queries.shape}.")
        if not np.isfinite(queries).all():
            bad = int(np.argmax(~np.isfinite(queries).all(axis=1)))
            raise RetrievalError(f"query {bad} has non-finite features (NaN or inf).")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not (
                1 <= k <= self.num_valid):
            raise RetrievalError(f"k={k!r}: expected an integer from 1 to the {self.num_valid} "
                                 "valid rows of the index.")
        if int(batch_size) < 1:
            raise RetrievalError(f"batch_size={batch_size} must be positive.")
        k = int(k)
        if len(queries) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        scores, found = self._engine.search(queries, k, int(batch_size))
        return scores, self._rows[found]

    # ---------------------------------------------------------------- save / load
    def save(self, directory: str | os.PathLike) -> None:
        """Saves into ``directory`` (created if needed; a previous index there is replaced),
        atomically: see the module docstring. On an object store (``gs://``) the data folder
        is written locally, then each file uploaded (:func:`geojax.fileio.upload_file`), and
        the manifest, written last, makes it the index.

        With several processes (``jax.distributed``) every process calls it, on a folder they
        all see: each writes the exact engine's rows its devices hold (and the size and SHA-256
        of its files, in ``digests-<process>.json``), process 0 the rest and, after every
        process has written, the manifest."""
        directory = fileio.absolute(directory)
        process, main = jax.process_index(), jax.process_index() == 0
        if fileio.exists(directory) and not fileio.isdir(directory):
            raise RetrievalError(f"{directory} exists and is not a folder.")
        if fileio.isdir(directory) and not fileio.exists(os.path.join(directory, MANIFEST)):
            foreign = [n for n in fileio.listdir(directory) if not n.startswith("data-")]
            if foreign:
                raise RetrievalError(f"{directory} holds files that are not a retrieval index "
                                     f"({sorted(foreign)[:5]}); choose an empty or new folder.")
        name = f"data-{_shared_token()}"
        folder = os.path.join(directory, name)
        local = fileio.is_local(directory)
        staging = folder if local else tempfile.mkdtemp(prefix=f"geojax-{name}-")
        if local:
            os.makedirs(folder, exist_ok=True)
        try:
            written = []
            if main:
                for what, array in (("rows", self._rows), ("lat", self.lat), ("lng", self.lng)):
                    written.append(f"{what}.npy")
                    _save_array(os.path.join(staging, written[-1]), array)
            written += self._engine.save(staging)
            files = {path: _digest(os.path.join(staging, path)) for path in written}
            if local:
                _fsync(folder, written)
            else:
                for path in files:
                    fileio.upload_file(os.path.join(staging, path), os.path.join(folder, path))
            if jax.process_count() > 1:
                fileio.atomic_write(os.path.join(folder, f"digests-{process}.json"),
                                    json.dumps(files))
                fileio.sync_processes(f"geojax retrieval save {name}")
            if main:
                for other in range(1, jax.process_count()):
                    path = os.path.join(folder, f"digests-{other}.json")
                    files.update(json.loads(fileio.read_text(path)))
                    fileio.remove(path)
                if jax.process_count() > 1:
                    fileio.remove(os.path.join(folder, "digests-0.json"))
                manifest = {
                    "format": "geojax.retrieval", "format_version": FORMAT_VERSION,
                    "engine": self.engine, "num": self.num, "dim": self.dim,
                    "num_valid": self.num_valid, "meta": self.meta, "params": self.params,
                    "data": name, "files": dict(sorted(files.items())),
                }
                payload = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
                fileio.atomic_write(os.path.join(directory, MANIFEST), payload)
        except BaseException:
            if main:
                _remove_tree(folder)
            raise
        finally:
            if not local:
                shutil.rmtree(staging, ignore_errors=True)
        fileio.sync_processes(f"geojax retrieval saved {name}")
        if main:
            for old in fileio.listdir(directory):  # previous versions, and interrupted saves
                if old.startswith("data-") and old != name:
                    _remove_tree(os.path.join(directory, old))

    @classmethod
    def load(cls, directory: str | os.PathLike, *, expect: Mapping[str, Any] | None = None,
             mesh: Mesh | None = None) -> "Index":
        """Loads an index saved by :meth:`save`, after checking every file's size and SHA-256.

        Args:
          directory: the index folder.
          expect: values the index must have been built with, e.g. ``{"backbone": ...,
            "dim": 2048, "database": ...}``: ``engine``, ``num``, ``dim`` and
            ``num_valid`` compare with the index's own, any other key with its ``meta``.
          mesh: the exact engine's device mesh (default: every device).

        Raises:
          IndexFileError: no complete index, or a file missing, truncated or altered.
          IndexMismatchError: ``expect`` differs; the message names both values of each key.
        """
        directory = fileio.absolute(directory)
        manifest = _read_manifest(directory)
        own = {key: manifest.get(key) for key in ("engine", "num", "dim", "num_valid")}
        meta = manifest.get("meta") or {}
        differences = {}
        for key, want in dict(expect or {}).items():
            have = own[key] if key in own else meta.get(key, "(not recorded)")
            if have != json.loads(json.dumps(want)):
                differences[key] = (have, want)
        if differences:
            raise IndexMismatchError(directory, differences)
        if manifest.get("engine") not in _ENGINES:
            raise IndexFileError(os.path.join(directory, MANIFEST),
                                 f"unknown engine {manifest.get('engine')!r}.")
        folder = os.path.join(directory, str(manifest.get("data")))
        files = manifest.get("files") or {}
        with contextlib.ExitStack() as stack:
            # The engines read local files: from an object store, the files are copied first.
            here = folder if fileio.is_local(folder) else stack.enter_context(
                tempfile.TemporaryDirectory(prefix="geojax-index-"))
            for path, recorded in sorted(files.items()):
                full = os.path.join(folder, path)
                if not fileio.exists(full):
                    raise IndexFileError(full, f"missing (named in {MANIFEST}); build the index "
                                         "again.")
                if here != folder:
                    fileio.download_file(full, os.path.join(here, path))
                if _digest(os.path.join(here, path)) != recorded:
                    raise IndexFileError(full, "truncated or altered since the index was saved "
                                         "(its size or SHA-256 differs from the manifest's); "
                                         "build the index again.")
            engine_cls = _ENGINES[manifest["engine"]]
            engine = engine_cls.load(here, dict(manifest["params"]), mesh)
            rows = np.load(os.path.join(here, "rows.npy"))
            lat = np.load(os.path.join(here, "lat.npy"))
            lng = np.load(os.path.join(here, "lng.npy"))
        return cls(engine=engine, num=manifest["num"], dim=manifest["dim"], meta=meta,
                   lat=lat, lng=lng, rows=rows)
